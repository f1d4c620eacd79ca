"""Notebook views of kernel records, registered from outside: the one door between kernel/ and
widgets/.

kernel/ never imports widgets/. A record method that shows something (``Pipeline.form()``,
``Run.widget()``, ``Run.record()`` and displaying a run) asks this registry for the view by
name; :mod:`pirus_jupyter.widgets` registers its views when it is imported, and
``import pirus_jupyter as pirus`` (:mod:`pirus_jupyter.notebook`) imports it. Without widgets
(e.g. the CLI) the kernel works the same and only the views are missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FORM", "RECORD", "RUN_WIDGET", "ViewMissing", "has_view", "register", "view"]

#: ``factory(pipeline, inputs=[...], **kwargs)``: the run-configuration form of a pipeline.
FORM = "form"
#: ``factory(run, log_lines=10)``: the live widget of a run.
RUN_WIDGET = "run_widget"
#: ``factory(run)``: the reproducible record of a run (rendered when a run is displayed).
RECORD = "record"

_views: dict[str, Callable[..., Any]] = {}


class ViewMissing(LookupError):
    """No view of that name is registered (pirus_jupyter.widgets was not imported)."""


def register(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory`` the view ``name`` (a later registration replaces an earlier one)."""
    _views[name] = factory


def view(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; :class:`ViewMissing` when there is none."""
    try:
        return _views[name]
    except KeyError:
        raise ViewMissing(
            f"no notebook view {name!r}: import pirus_jupyter.widgets (or use "
            "pirus_jupyter.connect(), which does) to show records in a notebook") from None


def has_view(name: str) -> bool:
    """Whether a view ``name`` is registered."""
    return name in _views
