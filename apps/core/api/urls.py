"""/api/v1/: every app registers its resources on one router."""
from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.accounts.api.views import ApiTokenViewSet, MembershipViewSet, MeView, TeamViewSet, UserViewSet
from apps.audit.api.views import AuditEventViewSet
from apps.deployments.api.views import (
    DeploymentKeyViewSet,
    DeploymentViewSet,
    EnvironmentViewSet,
    ReplicaViewSet,
)
from apps.registry.api.views import (
    ArtifactScanViewSet,
    MlflowWebhookView,
    ModelUploadViewSet,
    ModelVersionViewSet,
    RegisteredModelViewSet,
)

router = DefaultRouter(trailing_slash=True)
router.register("users", UserViewSet, basename="user")
router.register("teams", TeamViewSet, basename="team")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("audit-events", AuditEventViewSet, basename="auditevent")
router.register("models", RegisteredModelViewSet, basename="model")
router.register("versions", ModelVersionViewSet, basename="version")
router.register("scans", ArtifactScanViewSet, basename="scan")
router.register("uploads", ModelUploadViewSet, basename="upload")
router.register("environments", EnvironmentViewSet, basename="environment")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("deployment-keys", DeploymentKeyViewSet, basename="deploymentkey")
router.register("replicas", ReplicaViewSet, basename="replica")

urlpatterns = [path("me/", MeView.as_view(), name="me"), *router.urls]
urlpatterns += [path("hooks/mlflow/", MlflowWebhookView.as_view(), name="mlflow-webhook")]
