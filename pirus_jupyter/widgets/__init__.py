"""Notebook widgets for Pirus: the run-configuration form, the live run widget and the run
record.

* :class:`ConfigForm` (:mod:`.form`): ipywidgets generated from a pipeline's form (JSON Schema
  draft-07, or an original draft-03 Pirus form, normalised and with its placeholders filled by
  :func:`pirus_jupyter.forms.normalize_form`), live per-field validation with
  :func:`pirus_jupyter.forms.field_errors`, an input file picker and a Run button.
* :class:`RunWidget` (:mod:`.run`): status, progress, elapsed time, last log lines and
  pause/resume/cancel, updated by events pushed over the server's websocket.
* :class:`RunRecord` (:mod:`.record`) and :func:`rerun` (:mod:`.rerun`): a run's reproducible
  record, rendered as HTML + text + ``application/vnd.pirus.run+json`` so a saved notebook
  keeps it.

Display only: the widgets import :mod:`pirus_jupyter.kernel`, never the reverse. Importing this
package registers the views the kernel's records show (``Pipeline.form()``, ``Run.widget()``,
``Run.record()``) in :mod:`pirus_jupyter.kernel.views`.

Names are imported lazily: importing :mod:`pirus_jupyter.widgets.record` (or the record alone)
does not import ipywidgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import Any

from ..kernel import views

_EXPORTS = {
    "ConfigForm": ".form",
    "FilePicker": ".picker",
    "RunWidget": ".run",
    "RunRecord": ".record",
    "OutputComparison": ".record",
    "RerunError": ".rerun",
    "RECORD_MIME": ".record",
    "rerun": ".rerun",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# -- the views of kernel records (each imports its module, and ipywidgets, when first shown) --
def _form_view(pipeline: Any, inputs: Iterable[Any] = (), **kwargs: Any) -> Any:
    from .form import ConfigForm

    return ConfigForm(pipeline=pipeline, inputs=list(inputs), **kwargs)


def _run_widget_view(run: Any, log_lines: int = 10) -> Any:
    from .run import RunWidget

    return RunWidget(run, log_lines=log_lines)


def _record_view(run: Any) -> Any:
    from .record import RunRecord

    return RunRecord.from_run(run)


views.register(views.FORM, _form_view)
views.register(views.RUN_WIDGET, _run_widget_view)
views.register(views.RECORD, _record_view)
