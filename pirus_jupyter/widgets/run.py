"""RunWidget: a run's live state in a notebook, pushed by the server.

The widget subscribes to the client's shared events websocket
(:class:`~pirus_jupyter.kernel.events.EventSubscriber`) for its run: every ``run.updated`` event
updates the status, the progress bar and its label at once, from the events thread, so the
widget keeps moving after the cell that displayed it has finished, and several widgets (several
runs) share one websocket. Nothing polls the server in a loop: a one-second local clock only
redraws the elapsed time, and the log tail is re-read after an event (at most once a second) and
every few seconds while the run is RUNNING (logs produce no events). After a reconnection the
run is re-read once, since events sent meanwhile are lost. When the run ends the widget shows
its outputs with their sha256 and lets go of the websocket.
"""

from __future__ import annotations

import contextlib
import html
import re
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..kernel.errors import PirusAPIError, PirusConnectionError
from ..kernel.records import FINAL_STATUSES
from .record import STATUS_COLOURS
from .static import StaticFallback

if TYPE_CHECKING:
    from ..kernel.records import Run

__all__ = ["RunWidget"]

_BAR_STYLES = {"RUNNING": "info", "FINISHING": "info", "INITIALIZING": "info",
               "PAUSE": "warning", "DONE": "success", "ERROR": "danger", "CANCELED": "warning"}
LOG_MIN_INTERVAL = 1.0
LOG_RUNNING_INTERVAL = 5.0


# What the panel says for a run that has not reported progress yet.
_NO_PROGRESS = {"WAITING": "queued", "INITIALIZING": "initializing: preparing the container…"}
_PERCENT = re.compile(r"\d\s*%")


def progress_text(status: str, progress: dict[str, Any], percent: float) -> str:
    """The progress line: the pipeline's label, then value/max and the percentage, which is
    not repeated when the label already says one (``x.fastq.gz 100%``)."""
    if not progress:
        return _NO_PROGRESS.get(status, "")
    label = progress.get("label")
    numbers = f"{progress.get('value', 0):g}/{progress.get('max', 0):g}"
    if label and _PERCENT.search(str(label)):
        return f"{label} — {numbers}"
    return (f"{label} — " if label else "") + f"{numbers} ({percent:.0f}%)"


def format_elapsed(seconds: float | None) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); ``-`` when unknown."""
    if seconds is None:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Clock:
    """One daemon thread ticking every second for every live RunWidget (local redraws; it
    exits when no widget is left)."""

    def __init__(self) -> None:
        self._widgets: weakref.WeakSet[RunWidget] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.interval = 1.0

    def add(self, widget: RunWidget) -> None:
        with self._lock:
            self._widgets.add(widget)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pirus-run-clock",
                                                daemon=True)
                self._thread.start()

    def discard(self, widget: RunWidget) -> None:
        with self._lock:
            self._widgets.discard(widget)

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                live = list(self._widgets)
                if not live:
                    self._thread = None
                    return
            for widget in live:
                with contextlib.suppress(Exception):  # one broken widget must not stop others
                    widget._tick()


_clock = _Clock()


class RunWidget(StaticFallback, widgets.VBox):
    """Live view of one run: name and pipeline, status, progress bar with its label, elapsed
    time, pause/resume/cancel buttons, the last lines of the logs, and the outputs (with
    sha256) once it is done. Updated by push from the server's events websocket.

    ``RunWidget(run)`` or ``run.widget()``; :meth:`close` stops listening.
    """

    def __init__(self, run: Run, log_lines: int = 10) -> None:
        self.run = run
        self.log_lines = log_lines
        self.header = widgets.HTML()
        self.status_label = widgets.HTML()
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=100.0,
                                              layout=widgets.Layout(width="320px"))
        self.progress_label = widgets.Label()
        self.elapsed_label = widgets.Label()
        self.pause_button = widgets.Button(description="Pause", icon="pause",
                                           layout=widgets.Layout(width="auto"))
        self.resume_button = widgets.Button(description="Resume", icon="play",
                                            layout=widgets.Layout(width="auto"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            button_style="danger",
                                            layout=widgets.Layout(width="auto"))
        self.pause_button.on_click(lambda _: self._act("pause"))
        self.resume_button.on_click(lambda _: self._act("resume"))
        self.cancel_button.on_click(lambda _: self._act("cancel"))
        self.message = widgets.HTML()
        self.logs = widgets.HTML()
        self.outputs = widgets.HTML()
        super().__init__([
            self.header,
            widgets.HBox([self.status_label, self.progress, self.progress_label]),
            widgets.HBox([widgets.Label("elapsed"), self.elapsed_label, self.pause_button,
                          self.resume_button, self.cancel_button]),
            self.message, self.logs, self.outputs,
        ])
        self._lock = threading.RLock()
        self._finish_lock = threading.Lock()
        self._published: tuple[str, bool] | None = None
        self._logs_dirty = True
        self._needs_refresh = False
        self._last_logs = 0.0
        self._finished = False
        self.updates = 0
        self._subscription = run.client.events.subscribe(self._on_event, run_id=run.id)
        # Any change of the record (an event, run.wait() or refresh() in another cell) redraws
        # at once, in the thread that made it: the final state is drawn before wait() returns.
        self._unwatch = run.watch(self._run_changed)
        self.render()
        if run.done:
            self._finish()
        else:
            _clock.add(self)

    # -- push ------------------------------------------------------------------------------
    def _run_changed(self, run: Run) -> None:
        if self._finished:
            return
        if run.done:
            self._finish()  # the final log tail first, then the final state
        else:
            self.render()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "run.updated":
            self.updates += 1
            self._logs_dirty = True
            self.run._update(event["data"])  # the watcher redraws
        elif kind == "events.connected":
            self._needs_refresh = True
        elif kind == "run.deleted":
            self.message.value = '<span style="color:#cf222e">the run was deleted</span>'
            self._finish(fetch=False)

    def _tick(self) -> None:
        """Every second (clock thread): the elapsed time, and pending re-reads."""
        if self._finished:
            _clock.discard(self)
            return
        if self._needs_refresh:
            self._needs_refresh = False
            try:
                self.run.refresh()
            except (PirusAPIError, PirusConnectionError) as e:
                self.message.value = f'<span style="color:#cf222e">{html.escape(str(e))}</span>'
            self._logs_dirty = True
            if self.run.done:
                self._finish()
                return
            self.render()
        now = time.monotonic()
        since = now - self._last_logs
        if (self._logs_dirty and since >= LOG_MIN_INTERVAL) or (
                self.run.status == "RUNNING" and since >= LOG_RUNNING_INTERVAL):
            self._fetch_logs()
        with self._lock:
            self.elapsed_label.value = format_elapsed(self.run.elapsed)

    def _fetch_logs(self) -> None:
        self._last_logs = time.monotonic()
        self._logs_dirty = False
        if self.log_lines <= 0 or self.run.status in ("WAITING", "INITIALIZING"):
            return
        parts = []
        for which in ("out", "err"):
            try:
                text = self.run.logs(which, tail=self.log_lines)
            except (PirusAPIError, PirusConnectionError):
                continue
            if text.strip():
                parts.append(
                    f'<div style="color:#57606a;font-size:85%">{which}</div>'
                    f'<pre style="margin:0 0 4px 0;max-height:14em;overflow:auto;'
                    f'font-size:85%;background:#f6f8fa;padding:4px">{html.escape(text)}</pre>')
        with self._lock:
            self.logs.value = "".join(parts)

    def _finish(self, fetch: bool = True) -> None:
        # One thread finishes; another one arriving meanwhile (wait()'s, the events thread's)
        # returns only once the final state is drawn and published.
        with self._finish_lock:
            if self._finished:
                return
            self._subscription.close()
            self._unwatch()
            _clock.discard(self)
            if fetch:
                self._fetch_logs()
            self._finished = True
            self.render()

    def close(self) -> None:
        """Stop listening for events and close the widgets."""
        self._finished = True
        self._subscription.close()
        self._unwatch()
        _clock.discard(self)
        super().close()

    # -- actions -----------------------------------------------------------------------------
    def _act(self, action: str) -> None:
        try:
            getattr(self.run, action)()
            self.message.value = ""
        except (PirusAPIError, PirusConnectionError) as e:
            self.message.value = f'<span style="color:#cf222e">{html.escape(str(e))}</span>'
        if self.run.done:
            self._finish()
        else:
            self.render()

    # -- drawing -----------------------------------------------------------------------------
    def render(self) -> None:
        """Redraw from the run's current record."""
        with self._lock:
            run = self.run
            status = str(run.status)
            colour = STATUS_COLOURS.get(status, "#57606a")
            self.header.value = (
                f"<b>Run {html.escape(str(run.id))}: {html.escape(str(run.name or ''))}</b> "
                f"<span style='color:#57606a'>{html.escape(str(run.pipeline_name or ''))} "
                f"{html.escape(str(run.pipeline_version or ''))}</span>"
                + (f" <span style='color:#57606a'>on {html.escape(str(run.location))}</span>"
                   if getattr(run, "location", None) else "")
                + (" <span style='color:#57606a'>· TES task</span>"
                   if getattr(run, "origin", None) == "tes" else ""))
            self.status_label.value = (f"<b style='color:{colour};display:inline-block;"
                                       f"min-width:8em'>{html.escape(status)}</b>")
            progress = run.progress or {}
            low = float(progress.get("min") or 0)
            high = float(progress.get("max") or 0)
            if high <= low:
                high = low + 1
            value = float(progress.get("value") or 0)
            self.progress.min = min(self.progress.min, low)
            self.progress.max = high
            self.progress.min = low
            self.progress.value = max(low, min(value, high))
            self.progress.bar_style = _BAR_STYLES.get(status, "")
            if status == "INITIALIZING" and not progress:
                self.progress.value = high  # a full "info" bar: busy, as the panel's moving one
            percent = 100.0 * (self.progress.value - low) / (high - low)
            self.progress_label.value = progress_text(status, progress, percent)
            self.elapsed_label.value = format_elapsed(run.elapsed)
            self.pause_button.disabled = status != "RUNNING"
            self.resume_button.disabled = status != "PAUSE"
            self.cancel_button.disabled = status in FINAL_STATUSES
            if status == "ERROR" and run.error:
                self.message.value = (f"<pre style='color:#cf222e;white-space:pre-wrap;margin:0'>"
                                      f"{html.escape(str(run.error))}</pre>")
            if status in FINAL_STATUSES:
                self.outputs.value = self._outputs_html()
            # The saved notebook's picture follows the status (not every progress step: each
            # update re-renders the view in JupyterLab).
            published = (status, self._finished)
            if published != self._published:
                self._published = published
                self.refresh_static()

    def _outputs_html(self) -> str:
        outputs = self.run.outputs or []
        if not outputs:
            return ""
        td = "padding:1px 8px;text-align:left;border:none"
        rows = "".join(
            f"<tr><td style='{td};font-family:monospace'>{html.escape(str(o.get('name')))}</td>"
            f"<td style='{td}'>{html.escape(str(o.get('size')))} bytes</td>"
            f"<td style='{td};font-family:monospace'>{html.escape(str(o.get('sha256')))}</td>"
            "</tr>" for o in outputs)
        return f"<b>Outputs</b><table style='border-collapse:collapse'>{rows}</table>"

    def snapshot_html(self) -> str:
        """A static HTML picture of the widget's current state: what a saved notebook shows
        where the live widget cannot be."""
        run = self.run
        elapsed = format_elapsed(run.elapsed) if run.done else ""
        return (f"<div class='pirus-run-widget'><div>{self.header.value}</div>"
                f"<div>{self.status_label.value} {html.escape(self.progress_label.value)}"
                + (f" <span style='color:#57606a'>in {html.escape(elapsed)}</span>"
                   if elapsed else "") + "</div>"
                + self.message.value + self.outputs.value + "</div>")

    def static_html(self) -> str:
        return self.snapshot_html()

    def static_text(self) -> str:
        run = self.run
        lines = [f"Run {run.id}: {run.name or ''} ({run.pipeline_name or ''} "
                 f"{run.pipeline_version or ''})".replace(" )", ")"),
                 f"status: {run.status}  {self.progress_label.value}".rstrip()]
        if run.status == "ERROR" and run.error:
            lines.append(f"error: {run.error}")
        lines += [f"output {o.get('name')}  {o.get('size')} bytes  sha256 {o.get('sha256')}"
                  for o in (run.outputs or []) if run.done]
        return "\n".join(lines)
