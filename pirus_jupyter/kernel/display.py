"""Displaying a widget with a static picture of its state that stays current in the notebook.

A widget's output in a saved notebook is ``application/vnd.jupyter.widget-view+json`` plus the
``text/plain`` (and here ``text/html``) given when it was displayed. Without the widget state
(JupyterLab does not save it by default; nbconvert, GitHub and a closed kernel have no live
widgets) the fallback is all a reader sees, so it must be the widget's last state, not its
first. :class:`LiveFallback` displays a bundle under a display id and sends
``update_display_data`` when the state changes.

Both frontends apply an update to every output with that display id, whichever cell sent it:
JupyterLab's kernel connection forwards it to the cells that displayed the id
(``_handleDisplayId`` in @jupyterlab/services), and nbclient (nbconvert's executor) reads the
messages of the cell executing now and updates any cell's output by display id. An update made
by a background thread (the events websocket) carries the parent of the cell executing then
(ipykernel's fallback for threads), so it is applied too; one made while no cell runs reaches
JupyterLab, not an nbclient run, which has ended.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LiveFallback"]


class LiveFallback:
    """The places one widget was displayed in, to bring their static fallback up to date."""

    def __init__(self) -> None:
        self._places: list[str] = []
        self._lock = threading.Lock()

    @property
    def shown(self) -> bool:
        return bool(self._places)

    def show(self, bundle: dict[str, Any]) -> None:
        """Display ``bundle`` (raw MIME data) under a new display id."""
        from IPython.display import display

        display_id = uuid.uuid4().hex
        with self._lock:
            self._places.append(display_id)
        display(bundle, raw=True, display_id=display_id)

    def update(self, bundle: dict[str, Any]) -> None:
        """Replace what every display of the widget shows by ``bundle``."""
        from IPython.display import update_display

        with self._lock:
            places = list(self._places)
        for display_id in places:
            try:
                update_display(bundle, raw=True, display_id=display_id)
            except Exception:  # a kernel shutting down: the live widget is all there is
                log.debug("pirus: widget fallback not updated", exc_info=True)
