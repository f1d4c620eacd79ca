"""Displaying a widget with a static picture of its state that stays current in the notebook.

A widget's output in a saved notebook is ``application/vnd.jupyter.widget-view+json`` plus the
``text/plain`` (and here ``text/html``) given when it was displayed. Without the widget state
(JupyterLab does not save it by default; nbconvert, GitHub and a closed kernel have no live
widgets) the fallback is all a reader sees, so it must be the widget's last state, not its
first. :class:`LiveFallback` displays a bundle under a display id and sends
``update_display_data`` when the state changes.

Who applies an update, and why it is sent twice: JupyterLab routes an iopub message to the
output area of the cell whose request is its parent, and only that area knows the display id;
nbclient (nbconvert's executor) only reads messages whose parent is the cell executing now, and
updates any cell's output by display id. A change made by another cell or by a background
thread (the events websocket) is therefore published once with the parent of the cell that
displayed the widget (JupyterLab, the classic notebook) and once with the current parent
(nbclient); each frontend ignores the copy it cannot place.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LiveFallback"]


def _display_publisher() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "display_pub", None) if shell is not None else None


def _parent_now(publisher: Any) -> dict[str, Any]:
    try:
        return dict(getattr(publisher, "parent_header", None) or {})
    except Exception:  # a publisher without a parent (a terminal IPython)
        return {}


class LiveFallback:
    """The places one widget was displayed in, to bring their static fallback up to date."""

    def __init__(self) -> None:
        self._places: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    @property
    def shown(self) -> bool:
        return bool(self._places)

    def show(self, bundle: dict[str, Any]) -> None:
        """Display ``bundle`` (raw MIME data) under a new display id."""
        from IPython.display import display

        display_id = uuid.uuid4().hex
        with self._lock:
            self._places.append((display_id, _parent_now(_display_publisher())))
        display(bundle, raw=True, display_id=display_id)

    def update(self, bundle: dict[str, Any]) -> None:
        """Replace what every display of the widget shows by ``bundle``."""
        from IPython.display import update_display

        with self._lock:
            places = list(self._places)
        publisher = _display_publisher()
        for display_id, parent in places:
            try:
                current = _parent_now(publisher).get("msg_id")
                setter = getattr(publisher, "set_thread_parent", None)
                if parent.get("msg_id") and parent.get("msg_id") != current and setter:
                    token = setter(parent)  # this thread only (a context variable)
                    try:
                        update_display(bundle, raw=True, display_id=display_id)
                    finally:
                        publisher.reset_thread_parent(token)
                update_display(bundle, raw=True, display_id=display_id)
            except Exception:  # a kernel shutting down: the live widget is all there is
                log.debug("pirus: widget fallback not updated", exc_info=True)
