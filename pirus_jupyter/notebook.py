"""The notebook API (``import pirus_jupyter as pirus``): the kernel client with the widgets'
views registered, so that ``pipeline.form()``, ``run.widget()`` and a displayed run show
widgets and records. The one place that wires :mod:`.kernel` and :mod:`.widgets` together;
importing it does not import ipywidgets (the views import it when first shown)."""

from __future__ import annotations

from . import widgets  # noqa: F401  (registers the notebook views with kernel.views)
from .kernel.client import Client
from .kernel.discovery import connect
from .kernel.errors import PirusAPIError, PirusConnectionError
from .widgets.record import RunRecord
from .widgets.rerun import rerun

__all__ = ["Client", "PirusAPIError", "PirusConnectionError", "RunRecord", "connect", "rerun"]
