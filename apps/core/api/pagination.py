"""Cursor pagination for every list endpoint (stable under inserts, no COUNT(*))."""
from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Orders by the view's ``ordering`` (a unique field, or ending in one) or else by newest first."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"

    def get_ordering(self, request, queryset, view):
        ordering = getattr(view, "ordering", None)
        if ordering:
            return (ordering,) if isinstance(ordering, str) else tuple(ordering)
        return super().get_ordering(request, queryset, view)
