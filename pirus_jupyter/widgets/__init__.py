"""Notebook widgets for Pirus: the run-configuration form, the live run widget and the run
record.

* :class:`ConfigForm` (:mod:`.form`): ipywidgets generated from a pipeline's form (JSON Schema
  draft-07, or an original draft-03 Pirus form, normalised and with its placeholders filled by
  :func:`pirus_jupyter.forms.normalize_form`), live per-field validation with
  :func:`pirus_jupyter.forms.field_errors`, an input file picker and a Run button.
* :class:`RunWidget` (:mod:`.run`): status, progress, elapsed time, last log lines and
  pause/resume/cancel, updated by events pushed over the server's websocket.
* :class:`RunRecord` (:mod:`.record`) and :func:`rerun`: a run's reproducible record, rendered
  as HTML + text + ``application/vnd.pirus.run+json`` so a saved notebook keeps it.

Names are imported lazily: importing :mod:`pirus_jupyter.widgets.record` (or the record alone)
does not import ipywidgets.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ConfigForm": ".form",
    "FilePicker": ".form",
    "RunWidget": ".run",
    "RunRecord": ".record",
    "OutputComparison": ".record",
    "RerunError": ".record",
    "RECORD_MIME": ".record",
    "rerun": ".record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
