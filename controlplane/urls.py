from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("", include("apps.core.urls")),
    path("", include("apps.accounts.urls")),
    path("", include("apps.audit.urls")),
    path("", include("apps.registry.urls")),
    path("deployments/", include("apps.deployments.urls")),
    path("api/v1/", include(("apps.core.api.urls", "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler400 = "apps.core.errorviews.bad_request"
handler404 = "apps.core.errorviews.not_found"
handler403 = "apps.core.errorviews.forbidden"
handler500 = "apps.core.errorviews.server_error"
