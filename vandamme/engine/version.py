"""The installed version of Vandamme (from the package metadata; the source tree's pyproject
version when running from a checkout that was never installed)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version


def _read() -> str:
    try:
        return _dist_version("vandamme")
    except PackageNotFoundError:  # a checkout run with PYTHONPATH, never pip-installed
        return "0+unknown"


VERSION = _read()
