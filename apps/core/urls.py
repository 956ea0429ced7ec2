from django.urls import path

from apps.core import views

app_name = "core"

urlpatterns = [
    path("", views.home, name="home"),
    path("home/counts/", views.home_counts_json, name="home_counts"),
    path("healthz", views.healthz, name="healthz"),
    path("team/switch/", views.team_switch, name="team_switch"),
    path("approvals/", views.area_not_yet, {"area": "approvals"}, name="area_approvals"),
    path("monitoring/", views.area_not_yet, {"area": "monitoring"}, name="area_monitoring"),
    path("costs/", views.area_not_yet, {"area": "costs"}, name="area_costs"),
]
