"""Serving API: environments, deployments (rollout, rollback, stop, start), keys, replicas, events, metrics and
the "try it" call. Reads go through the selectors (another team's deployment is a 404), changes through the
services (permission, transition, audit in one transaction)."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api.views import ApiViewSet
from apps.core.errors import field_error
from apps.core.permissions import require
from apps.deployments import selectors, services
from apps.deployments.api import serializers as s
from apps.deployments.console import console_invoke


class EnvironmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Where models are served (dev, staging, production) and by which backend. Platform admins change them."""

    serializer_class = s.EnvironmentSerializer
    ordering = "name"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.environment_list(actor=self.actor)

    @extend_schema(request=s.EnvironmentCreateSerializer, responses={201: s.EnvironmentSerializer})
    def create(self, request):
        data = self.validated(s.EnvironmentCreateSerializer)
        env = services.environment_create(actor=self.actor, **data)
        return Response(s.EnvironmentSerializer(selectors.environment_get(actor=self.actor, pk=env.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=s.EnvironmentUpdateSerializer, responses=s.EnvironmentSerializer)
    def partial_update(self, request, pk=None):
        env = self.get_object()
        data = self.validated(s.EnvironmentUpdateSerializer, partial=True)
        services.environment_update(actor=self.actor, environment_id=env.pk, **data)
        return Response(s.EnvironmentSerializer(selectors.environment_get(actor=self.actor, pk=env.pk)).data)


_STATUS_PARAM = OpenApiParameter("status", str, description="Filter by status.")


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Deployments of the caller's teams: a model served in an environment, with variants, replicas, keys and a
    timeline. Filters: q (name or model name), team, environment, model, status."""

    serializer_class = s.DeploymentSerializer
    ordering = "name"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        params = self.request.query_params
        filters = {k: params.get(k) for k in ("q", "team", "environment", "model", "status") if params.get(k)}
        for key in ("team", "environment", "model"):
            if key in filters and not str(filters[key]).isdigit():
                raise field_error(key, "An id (a whole number) is required.")
        return selectors.deployment_list(actor=self.actor, filters=filters)

    def _body(self, pk: int) -> dict:
        return s.DeploymentSerializer(selectors.deployment_get(actor=self.actor, pk=pk)).data

    @extend_schema(parameters=[OpenApiParameter(k, str) for k in ("q", "team", "environment", "model")]
                   + [_STATUS_PARAM])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.DeploymentCreateSerializer, responses={201: s.DeploymentSerializer})
    def create(self, request):
        data = dict(self.validated(s.DeploymentCreateSerializer))
        deployment = services.deployment_create(
            actor=self.actor, name=data.pop("name"), environment_id=data.pop("environment"),
            model_version_id=data.pop("model_version"), strategy=data.pop("strategy"), **data)
        return Response(self._body(deployment.pk), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.DeploymentUpdateSerializer, responses=s.DeploymentSerializer)
    def partial_update(self, request, pk=None):
        deployment = self.get_object()
        data = self.validated(s.DeploymentUpdateSerializer, partial=True)
        services.deployment_update(actor=self.actor, deployment_id=deployment.pk, **data)
        return Response(self._body(deployment.pk))

    @extend_schema(request=s.RolloutSerializer, responses=s.DeploymentSerializer,
                   description="Move the deployment to another ready version of its model. Blue-green: the new "
                               "variant starts with no traffic, is smoke-tested, then takes all traffic at once; "
                               "the old one stays warm for the rollback window. Direct: the old one stops now.")
    @action(detail=True, methods=["post"])
    def rollout(self, request, pk=None):
        deployment = self.get_object()
        data = self.validated(s.RolloutSerializer)
        services.deployment_rollout_start(actor=self.actor, deployment_id=deployment.pk,
                                          model_version_id=data["model_version"], strategy=data.get("strategy"))
        return Response(self._body(deployment.pk))

    @extend_schema(request=s.ReasonSerializer, responses=s.DeploymentSerializer,
                   description="Undo the last rollout (cancel a starting candidate, or switch back to the warm "
                               "standby at once, or start the previous version again).")
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        deployment = self.get_object()
        data = self.validated(s.ReasonSerializer)
        services.deployment_rollback(actor=self.actor, deployment_id=deployment.pk, reason=data["reason"])
        return Response(self._body(deployment.pk))

    @extend_schema(request=s.ReasonSerializer, responses=s.DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        deployment = self.get_object()
        data = self.validated(s.ReasonSerializer)
        services.deployment_stop(actor=self.actor, deployment_id=deployment.pk, reason=data["reason"])
        return Response(self._body(deployment.pk))

    @extend_schema(request=None, responses=s.DeploymentSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        deployment = self.get_object()
        services.deployment_start(actor=self.actor, deployment_id=deployment.pk)
        return Response(self._body(deployment.pk))

    @extend_schema(responses=s.DeploymentEventSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        deployment = self.get_object()
        events = selectors.event_list(deployment=deployment)[:200]
        return Response(s.DeploymentEventSerializer(events, many=True).data)

    @extend_schema(responses=s.VariantSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"])
    def variants(self, request, pk=None):
        deployment = self.get_object()
        return Response(s.VariantSerializer(selectors.variant_list(deployment=deployment), many=True).data)

    @extend_schema(responses=s.ReplicaSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"])
    def replicas(self, request, pk=None):
        deployment = self.get_object()
        return Response(s.ReplicaSerializer(selectors.replica_list(deployment=deployment), many=True).data)

    @extend_schema(methods=["GET"], responses=s.DeploymentKeySerializer(many=True), filters=False)
    @extend_schema(methods=["POST"], request=s.DeploymentKeyCreateSerializer,
                   responses={201: s.DeploymentKeyCreatedSerializer}, filters=False,
                   description="Create a key for calling this deployment through the gateway. The response "
                               "holds the full key this once; only its hash is stored.")
    @action(detail=True, methods=["get", "post"])
    def keys(self, request, pk=None):
        deployment = self.get_object()
        if request.method == "POST":
            data = self.validated(s.DeploymentKeyCreateSerializer)
            record, key = services.deploymentkey_create(actor=self.actor, deployment_id=deployment.pk,
                                                        name=data["name"], expires_at=data.get("expires_at"))
            body = s.DeploymentKeySerializer(record).data
            return Response({**body, "key": key}, status=status.HTTP_201_CREATED)
        require(self.actor, "deployment.view", deployment)
        return Response(s.DeploymentKeySerializer(selectors.key_list(deployment=deployment), many=True).data)

    @extend_schema(parameters=[OpenApiParameter("since", str, description="ISO 8601; default: 1 hour ago."),
                               OpenApiParameter("variant", str)],
                   responses=s.MetricsPointSerializer(many=True), filters=False,
                   description="Per-minute requests, errors and latency quantiles per variant, from the "
                               "prediction log's rollups.")
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        deployment = self.get_object()
        since_raw = request.query_params.get("since")
        since = timezone.now() - timedelta(hours=1)
        if since_raw:
            since = parse_datetime(since_raw)
            if since is None:
                raise field_error("since", "Use an ISO 8601 date and time.")
            if timezone.is_naive(since):
                since = timezone.make_aware(since, timezone.utc)
        from apps.monitoring.selectors import rollup_series

        series = rollup_series(deployment_id=deployment.pk, since=since,
                               variant=request.query_params.get("variant") or None)
        points = [{"variant": variant, **point.as_dict()} for variant, items in sorted(series.items())
                  for point in items]
        return Response(s.MetricsPointSerializer(points, many=True).data)

    @extend_schema(request=s.TrySerializer, responses=dict, filters=False,
                   description="Send one scoring request through the gateway (no key needed: the control plane "
                               "signs it). Answers the gateway's status, body, latency and request id.")
    @action(detail=True, methods=["post"], url_path="try")
    def try_it(self, request, pk=None):
        deployment = self.get_object()
        data = self.validated(s.TrySerializer)
        answer = console_invoke(actor=self.actor, deployment=deployment, payload=data["payload"])
        return Response({"status": answer.status, "body": answer.body, "latency_ms": answer.latency_ms,
                         "request_id": answer.request_id})


class DeploymentKeyViewSet(mixins.RetrieveModelMixin, ApiViewSet):
    """One deployment key (never the key itself, which is shown only when created); revoke it."""

    serializer_class = s.DeploymentKeySerializer
    ordering = "-created_at"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.key_all(actor=self.actor)

    @extend_schema(request=None, responses=s.DeploymentKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = self.get_object()
        record = services.deploymentkey_revoke(actor=self.actor, key_id=key.pk)
        return Response(s.DeploymentKeySerializer(record).data)


class ReplicaViewSet(mixins.RetrieveModelMixin, ApiViewSet):
    """One replica (a model-server process) and its output."""

    serializer_class = s.ReplicaSerializer
    ordering = "pk"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return selectors.replica_all(actor=self.actor)

    @extend_schema(responses=s.ReplicaLogSerializer)
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        from apps.deployments.replicas import replica_log_tail

        replica = self.get_object()
        return Response({"replica": replica.pk, "output": replica_log_tail(replica=replica)})
