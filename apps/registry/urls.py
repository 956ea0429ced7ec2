from django.urls import path

from apps.registry import views

app_name = "registry"

# Everything lives under /models/, so the Models area of the navigation stays marked on every registry page.
urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/register/", views.register, name="register"),
    path("models/upload/", views.upload, name="upload"),
    path("models/uploads/<int:pk>/", views.upload_detail, name="upload_detail"),
    path("models/uploads/<int:pk>/status/", views.upload_status, name="upload_status"),
    path("models/uploads/<int:pk>/retry/", views.upload_retry, name="upload_retry"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("models/<int:pk>/edit/", views.model_edit, name="model_edit"),
    path("models/<int:pk>/aliases/", views.aliases, name="aliases"),
    path("models/<int:pk>/aliases/remove/", views.alias_remove, name="alias_remove"),
    path("models/versions/<int:pk>/", views.version_detail, name="version_detail"),
    path("models/versions/<int:pk>/card/", views.card_edit, name="card_edit"),
    path("models/versions/<int:pk>/card.html", views.card_export, {"fmt": "html"}, name="card_export_html"),
    path("models/versions/<int:pk>/card.json", views.card_export, {"fmt": "json"}, name="card_export_json"),
    path("models/versions/<int:pk>/scan/", views.scan_status, name="scan_status"),
    path("models/versions/<int:pk>/scan/request/", views.scan_request, name="scan_request"),
    path("models/versions/<int:pk>/archive/", views.version_archive, name="version_archive"),
    path("models/scans/<int:pk>/override/", views.scan_override, name="scan_override"),
    path("models/experiments/", views.experiment_list, name="experiment_list"),
    path("models/experiments/<str:experiment_id>/", views.experiment_detail, name="experiment_detail"),
    path("models/runs/compare/", views.run_compare, name="run_compare"),
    path("models/runs/<str:run_id>/", views.run_detail, name="run_detail"),
]
