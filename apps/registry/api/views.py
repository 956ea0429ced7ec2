"""API for the registry: models, versions, aliases, cards, lineage, scans, uploads, and MLflow's webhook.

Reads go through the registry's selectors (another team's object is a 404), every change through its services,
which check permissions and write the audit event in the same transaction. MLflow down is a 503 with
Retry-After (the one error shape, from apps.core.api.errors).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import StopUpload
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from apps.core.api.views import ApiViewSet
from apps.core.errors import PermissionDenied, ServiceUnavailable, ValidationFailed, field_error
from apps.core.permissions import has_perm, require
from apps.registry import card_export, selectors, services
from apps.registry.api import serializers as s
from apps.registry.filters import ModelVersionFilter, RegisteredModelFilter
from apps.registry.uploads import limited_upload_handlers, too_large_error, upload_too_large

log = logging.getLogger(__name__)

_RETRY_AFTER_503 = OpenApiResponse(description="MLflow is unreachable (Retry-After says when to try again).")


# ---------------------------------------------------------------------------------------------- models

class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Registered models of the caller's teams, with their current aliases; filter by name, tag, team, alias,
    risk tier, version status and archived."""

    serializer_class = s.RegisteredModelSerializer
    filterset_class = RegisteredModelFilter
    ordering = "name"  # unique, so the cursor is stable
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.registeredmodel_list(actor=self.actor)

    def _fresh(self, pk: int):
        return selectors.registeredmodel_list(actor=self.actor).get(pk=pk)

    @extend_schema(request=s.RegisteredModelCreateSerializer, responses={201: s.RegisteredModelSerializer,
                                                                         503: _RETRY_AFTER_503})
    def create(self, request):
        data = self.validated(s.RegisteredModelCreateSerializer)
        model = services.registeredmodel_create(actor=self.actor, team_id=data["team"], name=data["name"],
                                                description=data["description"], risk_tier=data["risk_tier"],
                                                tags=data["tags"])
        return Response(s.RegisteredModelSerializer(self._fresh(model.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.RegisteredModelUpdateSerializer, responses={200: s.RegisteredModelSerializer,
                                                                         503: _RETRY_AFTER_503})
    def partial_update(self, request, pk=None):
        model = self.get_object()
        data = self.validated(s.RegisteredModelUpdateSerializer, partial=True)
        services.registeredmodel_update(actor=self.actor, model_id=model.pk, **data)
        return Response(s.RegisteredModelSerializer(self._fresh(model.pk)).data)

    def _aliases_body(self, model) -> dict:
        history = list(selectors.alias_history(model=model))
        return s.AliasesSerializer({"current": sorted((a for a in history if a.removed_at is None),
                                                      key=lambda a: a.alias),
                                    "history": history}).data

    @extend_schema(methods=["GET"], responses=s.AliasesSerializer, filters=False,
                   description="The aliases held now and every assignment there has been, newest first.")
    @extend_schema(methods=["POST"], request=s.AliasSetSerializer,
                   responses={200: s.AliasesSerializer, 503: _RETRY_AFTER_503}, filters=False,
                   description="Point an alias at a ready version (mirrored to MLflow). A production alias "
                               "(champion, production) is refused with 403 promotion_required: it moves only "
                               "through an approved promotion request.")
    @action(detail=True, methods=["get", "post"])
    def aliases(self, request, pk=None):
        model = self.get_object()
        if request.method == "POST":
            data = self.validated(s.AliasSetSerializer)
            services.alias_set(actor=self.actor, model_id=model.pk, alias=data["alias"], version=data["version"])
        return Response(self._aliases_body(model))

    @extend_schema(request=None, responses={204: None, 503: _RETRY_AFTER_503}, filters=False,
                   parameters=[OpenApiParameter("alias", str, OpenApiParameter.PATH)])
    @action(detail=True, methods=["delete"], url_path=r"aliases/(?P<alias>[^/]+)", url_name="alias-remove")
    def alias_remove(self, request, pk=None, alias=None):
        model = self.get_object()
        services.alias_remove(actor=self.actor, model_id=model.pk, alias=alias)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------------------------------- versions

def _stage_upload(upload) -> tuple[Path, Path | None]:
    """A path on disk for the uploaded file: the handler's temporary file, or (for a small in-memory upload,
    when the session's CSRF check parsed the body with Django's default handlers) a copy in a temp folder."""
    path = getattr(upload, "temporary_file_path", None)
    if path is not None:
        return Path(path()), None
    folder = Path(tempfile.mkdtemp(prefix="mp-api-upload-"))
    target = folder / "upload"
    with target.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return target, folder


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Model versions of the caller's teams: register from a run or by upload, and each version's card,
    lineage, scans and archive."""

    serializer_class = s.ModelVersionSerializer
    filterset_class = ModelVersionFilter
    ordering = "-id"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.modelversion_list(actor=self.actor)

    def get_serializer_class(self):
        return s.ModelVersionDetailSerializer if self.action == "retrieve" else s.ModelVersionSerializer

    def _detail(self, pk: int) -> dict:
        version = selectors.modelversion_list(actor=self.actor).get(pk=pk)
        return s.ModelVersionDetailSerializer(version, context=self.get_serializer_context()).data

    # The upload's size limit must be in force before anything reads the body, and the session's CSRF check
    # (during authentication, before the action runs) reads it: so the handlers go on the request here.
    def initialize_request(self, request, *args, **kwargs):
        drf_request = super().initialize_request(request, *args, **kwargs)
        if self.action in ("upload", "profiles"):
            request.upload_handlers = limited_upload_handlers(request)
        return drf_request

    def handle_exception(self, exc):
        if isinstance(exc, StopUpload) or (self.action in ("upload", "profiles")
                                           and upload_too_large(self.request)):
            exc = too_large_error()
        return super().handle_exception(exc)

    @extend_schema(request=s.RegisterFromRunSerializer,
                   responses={201: s.ModelVersionDetailSerializer, 503: _RETRY_AFTER_503},
                   description="Register the model a run logged (runs:/<run_id>/<artifact_path>) as a new version "
                               "of model_name (created for `team` when new). The version starts pending_scan.")
    @action(detail=False, methods=["post"], url_path="register-from-run")
    def register_from_run(self, request):
        data = self.validated(s.RegisterFromRunSerializer)
        version = services.modelversion_register_from_run(
            actor=self.actor, model_name=data["model_name"], run_id=data["run_id"],
            artifact_path=data["artifact_path"], team_id=data["team"], description=data["description"],
            tags=data["tags"], risk_tier=data["risk_tier"])
        return Response(self._detail(version.pk), status=status.HTTP_201_CREATED)

    @extend_schema(request={"multipart/form-data": s.UploadSerializer},
                   responses={202: s.ModelUploadSerializer,
                              413: OpenApiResponse(description="The file is larger than the upload limit.")},
                   description="Upload a model (multipart/form-data; streamed to disk, refused past "
                               "MODELPLANE_UPLOAD_MAX_BYTES). What is cheap is checked at once (permission, "
                               "fields, the file's kind, a zip's structure and MLmodel); the answer is 202 with "
                               "the upload, whose URL is in Location. A worker then logs the file to MLflow and "
                               "registers the version: poll GET /api/v1/uploads/{id}/ until `status` is "
                               "registered (`version` is then the new version's id) or failed (`error` says "
                               "why; POST .../retry/ queues it again).")
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request):
        # Refuse someone who may register nowhere before a byte of the file is read.
        if not has_perm(self.actor, "model.register"):
            raise PermissionDenied("You do not have permission to do this (model.register).")
        try:
            _ = request.data  # parse now: the file streams to disk, within the limit
        except StopUpload:
            raise too_large_error() from None
        if upload_too_large(request):
            raise too_large_error()
        data = self.validated(s.UploadSerializer)
        upload = data["file"]
        path, folder = _stage_upload(upload)
        try:
            received = services.modelupload_receive(
                actor=self.actor, model_name=data["model_name"], upload_path=path, filename=upload.name or "",
                team_id=data["team"], description=data["description"], tags=data["tags"],
                risk_tier=data["risk_tier"])
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        body = s.ModelUploadSerializer(selectors.modelupload_get(actor=self.actor, pk=received.pk)).data
        return Response(body, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("api:upload-detail", args=[received.pk])})

    @extend_schema(responses=s.LineageSerializer, filters=False)
    @action(detail=True, methods=["get"])
    def lineage(self, request, pk=None):
        version = self.get_object()
        return Response(s.LineageSerializer({"version": version.pk, "graph": selectors.lineage_graph(version=version),
                                             "lineage": version.lineage or {}}).data)

    @extend_schema(methods=["GET"], responses=s.CardStateSerializer, filters=False)
    @extend_schema(methods=["POST"], request=s.CardReviseSerializer, responses={201: s.CardStateSerializer},
                   filters=False, description="Add a revision of the card with the fields sent changed.")
    @action(detail=True, methods=["get", "post"])
    def card(self, request, pk=None):
        version = self.get_object()
        if request.method == "POST":
            changes = self.validated(s.CardReviseSerializer)
            services.modelcard_revise(actor=self.actor, version_id=version.pk, changes=changes)
            return Response(s.card_state(version), status=status.HTTP_201_CREATED)
        return Response(s.card_state(version))

    @extend_schema(
        filters=False,
        parameters=[OpenApiParameter("as", str, enum=["json", "html"], default="json",
                                     description="json: the card as a JSON document; html: one standalone page "
                                                 "rendered from the card's Markdown (raw HTML escaped).")],
        responses={(200, "application/json"): s.CardExportSerializer, (200, "text/html"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="card/export", url_name="card-export")
    def card_export(self, request, pk=None):
        version = self.get_object()
        kind = request.query_params.get("as", "json")
        if kind not in ("json", "html"):
            raise field_error("as", f"{kind!r} is not an export format; use json or html.", code="invalid_choice")
        document = card_export.card_document(version=version, card=selectors.modelcard_current(version=version))
        stem = f"{version.model.name}-v{version.version}-card"
        if kind == "html":
            response = HttpResponse(card_export.card_html(document), content_type="text/html; charset=utf-8")
            response["Content-Security-Policy"] = card_export.CONTENT_SECURITY_POLICY
            response["Content-Disposition"] = f'attachment; filename="{stem}.html"'
            return response
        response = Response(document)
        response["Content-Disposition"] = f'attachment; filename="{stem}.json"'
        return response

    @extend_schema(methods=["GET"], responses=s.ArtifactScanSerializer(many=True), filters=False,
                   description="The version's scans, newest first, each with its findings.")
    @extend_schema(methods=["POST"], request=None, responses={202: s.ArtifactScanSerializer}, filters=False,
                   description="Scan the version again (it goes back to pending_scan until the scan finishes).")
    @action(detail=True, methods=["get", "post"])
    def scans(self, request, pk=None):
        version = self.get_object()
        if request.method == "POST":
            scan = services.artifactscan_request(actor=self.actor, version_id=version.pk)
            return Response(s.ArtifactScanSerializer(scan).data, status=status.HTTP_202_ACCEPTED)
        scans = version.scans.select_related("version", "overridden_by").prefetch_related("findings")
        page = self.paginate_queryset(scans)
        return self.get_paginated_response(s.ArtifactScanSerializer(page, many=True).data)

    @extend_schema(methods=["GET"], responses=s.ReferenceProfileSerializer(many=True), filters=False,
                   description="The version's reference data profiles, newest first.")
    @extend_schema(methods=["POST"], request={"multipart/form-data": s.ProfileCreateSerializer,
                                              "application/json": s.ProfileCreateSerializer},
                   responses={201: s.ReferenceProfileSerializer,
                              413: OpenApiResponse(description="The file is larger than the upload limit."),
                              503: _RETRY_AFTER_503}, filters=False,
                   description="Profile reference data for drift: upload `file` (CSV or Parquet), or name "
                               "`artifact_path`, a CSV or Parquet file the version's run logged.")
    @action(detail=True, methods=["get", "post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def profiles(self, request, pk=None):
        version = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(version.profiles.all())
            return self.get_paginated_response(s.ReferenceProfileSerializer(page, many=True).data)
        require(self.actor, "model.update", version)  # refuse before a byte of the file is read
        try:
            _ = request.data
        except StopUpload:
            raise too_large_error() from None
        if upload_too_large(request):
            raise too_large_error()
        data = self.validated(s.ProfileCreateSerializer)
        if data.get("file") is not None:
            path, folder = _stage_upload(data["file"])
            try:
                profile = services.referenceprofile_create_from_upload(
                    actor=self.actor, version_id=version.pk, upload_path=path, filename=data["file"].name or "")
            finally:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
        else:
            profile = services.referenceprofile_create_from_run(actor=self.actor, version_id=version.pk,
                                                                artifact_path=data["artifact_path"])
        return Response(s.ReferenceProfileSerializer(profile).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ArchiveSerializer, responses={200: s.ModelVersionDetailSerializer,
                                                           503: _RETRY_AFTER_503}, filters=False,
                   description="Archive the version: it keeps its history but takes no alias and no deployment; "
                               "the aliases it holds are removed.")
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        version = self.get_object()
        data = self.validated(s.ArchiveSerializer)
        services.modelversion_archive(actor=self.actor, version_id=version.pk, reason=data["reason"])
        return Response(self._detail(version.pk))


# ---------------------------------------------------------------------------------------------- uploads

class ModelUploadViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Uploads to the caller's teams (POST /api/v1/versions/upload/ makes one): poll one until it is registered
    or failed; a failed one can be retried."""

    serializer_class = s.ModelUploadSerializer
    ordering = "-id"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.modelupload_list(actor=self.actor)

    @extend_schema(request=None, responses={202: s.ModelUploadSerializer}, filters=False,
                   description="Queue a failed upload again (its stored file is reused). 409 when it is not failed "
                               "or its file has been purged (MODELPLANE_UPLOAD_RETENTION_HOURS).")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        upload = self.get_object()
        services.modelupload_retry(actor=self.actor, upload_id=upload.pk)
        return Response(s.ModelUploadSerializer(self.scoped_queryset().get(pk=upload.pk)).data,
                        status=status.HTTP_202_ACCEPTED)


# ---------------------------------------------------------------------------------------------- scans

class ArtifactScanViewSet(mixins.RetrieveModelMixin, ApiViewSet):
    """One artifact scan with its findings; a platform admin may release a blocked version by overriding it."""

    serializer_class = s.ArtifactScanSerializer
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.artifactscan_list(actor=self.actor).prefetch_related("findings")

    @extend_schema(request=s.OverrideSerializer, responses=s.ArtifactScanSerializer)
    @action(detail=True, methods=["post"])
    def override(self, request, pk=None):
        scan = self.get_object()
        data = self.validated(s.OverrideSerializer)
        scan = services.artifactscan_override(actor=self.actor, scan_id=scan.pk, justification=data["justification"])
        return Response(s.ArtifactScanSerializer(self.scoped_queryset().get(pk=scan.pk)).data)


# ---------------------------------------------------------------------------------------------- MLflow webhook

SIGNATURE_HEADER = "X-MLflow-Signature"      # mlflow.webhooks.constants
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_TOLERANCE_SECONDS = 5 * 60         # Standard Webhooks' replay window
REGISTRY_ENTITIES = ("registered_model", "model_version")  # also model_version_tag, model_version_alias


def _expected_signature(secret: str, delivery_id: str, timestamp: str, payload: bytes) -> bytes:
    # MLflow signs "<delivery id>.<timestamp>.<body>" with HMAC-SHA256 and sends "v1,<base64 digest>".
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + payload
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())


class MlflowWebhookThrottle(SimpleRateThrottle):
    """MLflow's calls by address, at MODELPLANE_MLFLOW_WEBHOOK_RATE: not the anonymous rate (60/min), which one
    MLflow server sending a burst of version and alias events would exhaust, nor shared with anonymous callers."""

    scope = "mlflow_webhook"

    def get_rate(self) -> str:
        return settings.MODELPLANE_MLFLOW_WEBHOOK_RATE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class MlflowWebhookView(APIView):
    """MLflow's webhook (model_version.created and the like): a verified call queues a registry sync at once
    instead of waiting for the next periodic one. Authenticated by MLflow's HMAC signature, not a session."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [MlflowWebhookThrottle]

    @extend_schema(
        request=OpenApiTypes.OBJECT, auth=[],
        parameters=[OpenApiParameter(h, str, OpenApiParameter.HEADER, required=True)
                    for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER)],
        responses={202: s.WebhookAcceptedSerializer,
                   403: OpenApiResponse(description="Missing, wrong or stale signature."),
                   503: OpenApiResponse(description="No webhook secret is configured here.")},
        description="Register this URL in MLflow with the secret in MODELPLANE_MLFLOW_WEBHOOK_SECRET.")
    def post(self, request):
        secret = settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET
        if not secret:
            raise ServiceUnavailable("MLflow webhooks are not enabled here: set MODELPLANE_MLFLOW_WEBHOOK_SECRET "
                                     "and register the webhook in MLflow with that secret.",
                                     code="webhook_not_configured")
        delivery_id = request.headers.get(DELIVERY_ID_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        presented = request.headers.get(SIGNATURE_HEADER, "")
        if not (delivery_id and timestamp and presented):
            missing = [h for h, v in ((SIGNATURE_HEADER, presented), (TIMESTAMP_HEADER, timestamp),
                                      (DELIVERY_ID_HEADER, delivery_id)) if not v]
            raise PermissionDenied(f"Unsigned webhook call: {', '.join(missing)} missing.", code="signature_missing",
                                   fields={h: ["missing"] for h in missing})
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise PermissionDenied("The webhook timestamp is not a Unix time.", code="signature_invalid",
                                   fields={TIMESTAMP_HEADER: ["not a Unix time"]}) from None
        if abs(time.time() - sent_at) > SIGNATURE_TOLERANCE_SECONDS:
            raise PermissionDenied("The webhook timestamp is too old or in the future (replay refused).",
                                   code="signature_expired", fields={TIMESTAMP_HEADER: ["outside the 5 minute window"]})
        body = request.body
        expected = _expected_signature(secret, delivery_id, timestamp, body)
        # The header may carry several space-separated signatures (during a secret rotation).
        valid = any(version == "v1" and hmac.compare_digest(sig.encode(), expected)
                    for version, _, sig in (part.partition(",") for part in presented.split()))
        if not valid:
            raise PermissionDenied("The webhook signature does not match.", code="signature_invalid",
                                   fields={SIGNATURE_HEADER: ["does not match"]})
        try:
            payload = json.loads(body)
            event = f"{payload['entity']}.{payload['action']}"
        except (ValueError, KeyError, TypeError):
            raise ValidationFailed("The webhook body is not MLflow's JSON event ({entity, action, data}).",
                                   fields={"body": ["not an MLflow event"]}) from None
        queued = str(payload["entity"]).startswith(REGISTRY_ENTITIES)
        if queued:
            from apps.registry.tasks import sync_registry

            try:
                sync_registry.delay()
            except Exception as exc:  # the broker is down: MLflow retries on a 5xx
                log.warning("MLflow webhook %s: could not queue the sync: %s", delivery_id, exc)
                raise ServiceUnavailable("The task queue is unavailable; the sync was not queued.",
                                         code="queue_unavailable") from exc
        log.info("MLflow webhook %s: %s (sync %s)", delivery_id, event, "queued" if queued else "not needed")
        return Response(s.WebhookAcceptedSerializer({"event": event, "delivery_id": delivery_id,
                                                     "queued": queued}).data, status=status.HTTP_202_ACCEPTED)
