"""Pirus for Jupyter: pipelines packaged as LXD images, run from JupyterLab and notebooks."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
API_VERSION = "1"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import PirusApp

    return [{"module": "pirus_jupyter", "app": PirusApp}]


# -- the notebook API, imported on first use (the server imports this package: keep it light,
# and never import ipywidgets here) ----------------------------------------------------------
_LAZY_EXPORTS = dict.fromkeys(
    ("connect", "Client", "PirusAPIError", "PirusConnectionError", "rerun", "RunRecord"),
    ".notebook")
_LAZY_EXPORTS["diff"] = ".kernel.lineage"  # no widgets needed


def __getattr__(name: str) -> Any:
    """``pirus_jupyter.connect``, ``.rerun``, ``.Client``, ``.PirusAPIError`` (and
    ``.PirusConnectionError``, ``.RunRecord``, ``.diff``), imported lazily."""
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
