"""The static picture every widget of the toolkit carries next to its live view.

:class:`StaticFallback` is mixed into an ipywidgets container: its MIME bundle holds the widget
view plus ``text/html`` and ``text/plain`` from :meth:`~StaticFallback.static_html` and
:meth:`~StaticFallback.static_text` (instead of ipywidgets' ``VBox(children=(HTML(value=…``
repr), and :meth:`~StaticFallback.refresh_static` brings every place it was displayed up to
date (:class:`pirus_jupyter.kernel.display.LiveFallback`), so that a saved notebook shows the
widget's last state to readers without a kernel.
"""

from __future__ import annotations

import html
import re
from typing import Any

from ..kernel.display import LiveFallback

__all__ = ["StaticFallback", "html_to_text"]

_TAGS = re.compile(r"<[^>]+>")
_BREAKS = re.compile(r"<(br|/div|/h\d|/tr|/p)\b[^>]*>", re.IGNORECASE)


def html_to_text(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded), one line per block."""
    text = html.unescape(_TAGS.sub("", _BREAKS.sub("\n", fragment)))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


class StaticFallback:
    """Mixin for ipywidgets widgets: a readable static fallback kept current."""

    def static_html(self) -> str:
        raise NotImplementedError

    def static_text(self) -> str:
        return html_to_text(self.static_html())

    def _fallback(self) -> LiveFallback:
        fallback = self.__dict__.get("_live_fallback")
        if fallback is None:
            fallback = self.__dict__["_live_fallback"] = LiveFallback()
        return fallback

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if bundle is not None:
            bundle["text/plain"] = self.static_text()
            bundle["text/html"] = self.static_html()
        return bundle

    def _ipython_display_(self) -> None:
        # Displayed under a display id, so that refresh_static can update what is saved.
        bundle = self._repr_mimebundle_()
        if bundle is not None:
            self._fallback().show(bundle)

    def refresh_static(self) -> None:
        """Update every display of this widget with its current static picture."""
        fallback = self.__dict__.get("_live_fallback")
        if fallback is not None and fallback.shown:
            bundle = self._repr_mimebundle_()
            if bundle is not None:
                fallback.update(bundle)
