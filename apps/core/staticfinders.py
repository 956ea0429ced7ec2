"""Serve plotly.js from the installed ``plotly`` package as ``vendor/plotly.min.js`` (no CDN, nothing pasted)."""
from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PUBLISHED = {"vendor/plotly.min.js": "plotly.min.js"}


class InstalledPackageFinder(BaseFinder):
    """Finds the few front-end files that Python packages ship, under stable names in ``vendor/``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        name = PUBLISHED.get(path)
        if name is None:
            return [] if find_all else None
        found = str(PLOTLY_DIR / name)
        return [found] if find_all else found

    def list(self, ignore_patterns):
        for public, name in PUBLISHED.items():
            yield name, _PrefixedStorage(self.storage, public)


class _PrefixedStorage:
    """Makes collectstatic copy ``plotly.min.js`` to ``vendor/plotly.min.js``."""

    def __init__(self, storage, public_name):
        self._storage = storage
        self.prefix = str(Path(public_name).parent)

    def __getattr__(self, item):
        return getattr(self._storage, item)
