"""The serving pages, under /deployments/ (so the Deployments area of the navigation stays marked on each)."""
from django.urls import path

from apps.deployments import views

app_name = "deployments"

urlpatterns = [
    path("", views.deployment_list, name="deployment_list"),
    path("new/", views.deployment_create, name="deployment_create"),
    path("environments/", views.environment_list, name="environment_list"),
    path("environments/new/", views.environment_create, name="environment_create"),
    path("environments/<int:pk>/edit/", views.environment_edit, name="environment_edit"),
    path("<int:pk>/", views.deployment_detail, name="deployment_detail"),
    path("<int:pk>/status.json", views.deployment_status, name="deployment_status"),
    path("<int:pk>/edit/", views.deployment_edit, name="deployment_edit"),
    path("<int:pk>/rollout/", views.deployment_rollout, name="deployment_rollout"),
    path("<int:pk>/rollback/", views.deployment_rollback, name="deployment_rollback"),
    path("<int:pk>/stop/", views.deployment_stop, name="deployment_stop"),
    path("<int:pk>/start/", views.deployment_start, name="deployment_start"),
    path("<int:pk>/try/", views.deployment_try, name="deployment_try"),
    path("<int:pk>/keys/", views.key_list, name="key_list"),
    path("<int:pk>/keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("<int:pk>/replicas/<int:replica_id>/output/", views.replica_output, name="replica_output"),
]
