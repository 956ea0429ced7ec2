"""Base classes for API views: the actor from the request, selectors for reads, services for writes."""
from __future__ import annotations

from rest_framework import viewsets

from apps.core.actors import Actor


class ApiViewSetMixin:
    """Gives every API view ``self.actor``; views list with selectors and change through services."""

    @property
    def actor(self) -> Actor:
        cached = getattr(self.request, "_modelplane_actor", None)
        if cached is None:
            cached = Actor.from_request(self.request)
            self.request._modelplane_actor = cached
        return cached

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no real user
            return self.get_serializer_class().Meta.model.objects.none()
        return self.scoped_queryset()

    def scoped_queryset(self):
        """The rows this caller may see, from the app's selector."""
        raise NotImplementedError

    def validated(self, serializer_class, data=None, partial: bool = False) -> dict:
        serializer = serializer_class(data=self.request.data if data is None else data, partial=partial,
                                      context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ReadOnlyApiViewSet(ApiViewSetMixin, viewsets.ReadOnlyModelViewSet):
    pass


class ApiViewSet(ApiViewSetMixin, viewsets.GenericViewSet):
    pass
