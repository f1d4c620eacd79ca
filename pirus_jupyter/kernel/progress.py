"""Upload progress for people: a text line on stderr, or an ipywidgets bar inside a kernel whose
frontend shows widgets (:func:`progress_reporter` picks), and :func:`human_size`, the one byte
count formatter of the package."""

from __future__ import annotations

import html
import logging
import sys
from collections.abc import Callable
from typing import Any

from .display import LiveFallback

log = logging.getLogger(__name__)

__all__ = ["TextProgress", "WidgetProgress", "human_size", "progress_reporter"]


def _in_kernel_with_comm() -> bool:
    """True inside an IPython kernel whose frontend can show widgets (it has a comm)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    return kernel is not None and getattr(kernel, "session", None) is not None


class TextProgress:
    """``Uploading name:  42.0% (1.0 MiB / 2.4 MiB)`` on one line of ``stream`` (stderr),
    redrawn at each whole percent."""

    def __init__(self, name: str, stream: Any = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.last = -1.0

    def __call__(self, sent: int, total: int) -> None:
        percent = 100.0 * sent / total if total else 100.0
        if percent - self.last < 1 and sent < total:
            return
        self.last = percent
        self.stream.write(f"\rUploading {self.name}: {percent:5.1f}% "
                          f"({human_size(sent)} / {human_size(total)})")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class WidgetProgress:
    """A progress bar and a label, displayed in the notebook when created. The saved notebook
    shows, without the widget, a line saying how the upload ended (kernel/display.py)."""

    def __init__(self, name: str) -> None:
        import ipywidgets as widgets

        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                         description="Uploading", bar_style="info")
        self.label = widgets.Label(value=name)
        self.name = name
        self.box = widgets.HBox([self.bar, self.label])
        self.fallback = LiveFallback()
        self.fallback.show(self._bundle("uploading"))

    def _bundle(self, state: str) -> dict[str, Any]:
        text = f"Upload of {self.label.value} ({state})"
        return {**self.box._repr_mimebundle_(), "text/plain": text,
                "text/html": f"<div class='pirus-upload'>{html.escape(text)}</div>"}

    def __call__(self, sent: int, total: int) -> None:
        self.bar.value = sent / total if total else 1.0
        self.label.value = f"{self.name}: {human_size(sent)} / {human_size(total)}"

    def close(self) -> None:
        done = self.bar.value >= 1.0
        self.bar.bar_style = "success" if done else "warning"
        self.fallback.update(self._bundle("complete" if done else "stopped"))


def progress_reporter(name: str, progress: bool | Callable[[int, int], None]
                      ) -> Callable[[int, int], None] | None:
    """What reports an upload's progress: ``progress`` itself when callable, nothing when
    False, else a widget bar in a kernel with a frontend, a text line elsewhere."""
    if callable(progress):
        return progress
    if not progress:
        return None
    if _in_kernel_with_comm():
        try:
            return WidgetProgress(name)
        except Exception:  # no ipywidgets frontend: fall back to text
            log.debug("pirus: no widget progress bar", exc_info=True)
    return TextProgress(name)


def human_size(size: float) -> str:
    """A byte count for people: 512 B, 1.5 MiB, 2.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
