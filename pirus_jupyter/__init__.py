"""Pirus for Jupyter: pipelines packaged as LXD images, run from JupyterLab and notebooks."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
API_VERSION = "1"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import PirusApp

    return [{"module": "pirus_jupyter", "app": PirusApp}]
