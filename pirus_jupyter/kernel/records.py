"""The server's records as Python objects: :class:`File`, :class:`Pipeline` and :class:`Run`
(attribute access to the public fields listed in :mod:`pirus_jupyter.models`, plus their
actions), and :func:`pipelines_named`, the one "pipeline by name[/version]" resolver.

Records that show something in a notebook (``Pipeline.form()``, ``Run.widget()``,
``Run.record()``) take their view from :mod:`.views`; this module never imports widgets.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..models import (
    FILE_PUBLIC,
    FINAL_RUN_STATUSES,
    PIPELINE_PUBLIC,
    RUN_PUBLIC,
    PipelineStatus,
)
from . import views
from .errors import PirusAPIError

if TYPE_CHECKING:
    from .client import Client
    from .lineage import Lineage, RunDiff

#: The statuses a run ends in (DONE, ERROR, CANCELED), as the server sends them.
FINAL_STATUSES = frozenset(status.value for status in FINAL_RUN_STATUSES)
_INSTALLING = frozenset({PipelineStatus.UPLOADING.value, PipelineStatus.INSTALLING.value})
_READY = PipelineStatus.READY.value

__all__ = ["FINAL_STATUSES", "File", "Pipeline", "Record", "Run", "pipelines_named"]


class Record:
    """A server record (pipeline, run, file) with attribute access to its fields."""

    _fields: tuple[str, ...] = ()

    def __init__(self, client: Client, data: Mapping[str, Any]) -> None:
        self._client = client
        self._data = dict(data)
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The client this record was read through."""
        return self._client

    @property
    def data(self) -> dict[str, Any]:
        """A copy of the record as the server sent it."""
        return dict(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fields = type(self)._fields
        data = self.__dict__.get("_data", {})
        if name in data or name in fields:
            return data.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._data) | set(type(self)._fields))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._data.get("id") == self._data.get("id") \
            and other._client.base_url == self._client.base_url  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._client.base_url, self._data.get("id")))


class File(Record):
    """A file record: an uploaded input or an output of a run (``id``, ``name``, ``path``
    relative to the Jupyter root, ``size``, ``sha256``, ``source``, ``run_id``, ``created``)."""

    _fields = FILE_PUBLIC

    def __repr__(self) -> str:
        return f"<File {self.id} {self.path!r} {self.size} bytes sha256={self.sha256}>"

    def read_bytes(self) -> bytes:
        """The file's content, downloaded from the server."""
        return self._client._request("GET", f"files/{self.id}/content", raw=True).content

    def download(self, target: str | os.PathLike[str]) -> Path:
        """Stream the content to ``target`` (a file path); returns it."""
        target = Path(target)
        response = self._client._request("GET", f"files/{self.id}/content", raw=True,
                                         stream=True)
        with open(target, "wb") as out:
            for chunk in response.iter_content(1024 * 1024):
                out.write(chunk)
        return target

    def delete(self) -> None:
        """Delete the record and its content."""
        self._client._request("DELETE", f"files/{self.id}")


class Pipeline(Record):
    """An installed pipeline: ``id``, ``name``, ``version``, ``description``, ``status``
    (``READY`` when runnable), ``error``, ``license``, ``developers``, ``size``, ``created``,
    ``documents``, ``limits``, ``fingerprint``, ``provenance``; :meth:`form` and :meth:`run`
    configure and start runs."""

    _fields = PIPELINE_PUBLIC

    def __repr__(self) -> str:
        return (f"<Pipeline {self.id} {self.name!r} {self.version or ''} "
                f"{self.status}>").replace("  ", " ")

    def refresh(self) -> Pipeline:
        """Re-read the record from the server; returns self."""
        self._data = self._client._request("GET", f"pipelines/{self.id}")
        return self

    def wait_ready(self, timeout: float | None = 600) -> Pipeline:
        """Wait until the pipeline is no longer uploading or installing. Raises
        :class:`PirusAPIError` if the install failed, TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.1
        while self.refresh().status in _INSTALLING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline {self.id} still {self.status} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        if self.status != _READY:
            raise PirusAPIError(409, "install_failed",
                                f"pipeline {self.id} is {self.status}: {self.error}")
        return self

    def schema(self, inputs: Iterable[Any] | None = None) -> dict[str, Any]:
        """The run-configuration form as the server validates it: JSON Schema draft-07, with
        ``__PIRUS_INPUT_FILES__`` filled from the names of ``inputs`` and the database
        placeholders from the server's reference databases."""
        names = [PurePosixPath(p).name for p in self._client._input_paths(inputs or [])]
        return self._client._request("GET", f"pipelines/{self.id}/form",
                                     params={"inputs": names} if names else None)

    def form(self, inputs: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        """The configuration form widget (:class:`~pirus_jupyter.widgets.ConfigForm`) with the
        input files preselected; its Run button starts the run."""
        return views.view(views.FORM)(self, inputs=list(inputs or []), **kwargs)

    def run(self, config: Mapping[str, Any] | None = None, inputs: Iterable[Any] | None = None,
            name: str | None = None, form: Any = None, reuse: bool | None = None) -> Run:
        """Start a run (it is queued: ``WAITING`` first) and return it.

        ``config`` is the form's values (defaults are filled by the server, which validates
        them against :meth:`schema`); ``inputs`` are paths relative to the Jupyter root, local
        paths under it, file ids, :class:`File` records or upload records. ``form`` takes
        config and inputs from a :class:`ConfigForm` instead. An invalid config raises
        :class:`PirusAPIError` with ``code == "invalid_config"`` and the per-field errors in
        ``details``. ``reuse=True`` takes an identical earlier DONE run's outputs instead of
        running (the run comes back DONE with ``reused_from``), or says why not
        (``reuse_miss``); None: the server's default for this pipeline."""
        if form is not None:
            config = form.value if config is None else config
            inputs = form.inputs if inputs is None else inputs
        body: dict[str, Any] = {"pipeline_id": self.id, "config": dict(config or {}),
                                "inputs": self._client._input_refs(inputs or [])}
        if name:
            body["name"] = name
        if reuse is not None:
            body["reuse"] = reuse
        return Run(self._client, self._client._request("POST", "runs", json=body))

    def runs(self, status: str | Iterable[str] | None = None) -> list[Run]:
        """This pipeline's runs, newest first."""
        return self._client.runs(status=status, pipeline=self)

    @property
    def fingerprint(self) -> str | None:
        """The LXD image fingerprint: the SHA-256 of the installed package (a unified image
        tarball's fingerprint is its SHA-256). Taken from the server's record when it has one,
        otherwise computed once by streaming the package (up to
        ``Client.fingerprint_max_bytes``); None when unknown."""
        for key in ("fingerprint", "image_fingerprint", "lxd_fingerprint"):
            if self._data.get(key):
                return str(self._data[key])
        return self._client._package_fingerprint(self)

    def remove(self) -> None:
        """Uninstall the pipeline (refused while it has active runs)."""
        self._client._request("DELETE", f"pipelines/{self.id}")


def pipelines_named(pipelines: Iterable[Pipeline], name: str, version: str | None = None,
                    *, ready: bool = False) -> list[Pipeline]:
    """The pipelines called ``name`` (of ``version`` when given; only READY ones when
    ``ready``), the best candidate first: READY before any other status, then the newest
    install. The one resolver behind ``Client.pipeline(name)``, the CLI and ``rerun``."""
    named = [p for p in pipelines if p.name == name and (version is None or p.version == version)
             and (not ready or p.status == _READY)]
    return sorted(named, key=lambda p: (p.status == _READY, int(p.id)), reverse=True)


def _elapsed_seconds(start: str | None, end: str | None = None, paused_seconds: float = 0.0,
                     paused_since: str | None = None) -> float | None:
    """Running time: paused time left out (the clock stops while a run is paused)."""
    if not start:
        return None
    t0 = datetime.fromisoformat(start)
    stop = end or paused_since
    t1 = datetime.fromisoformat(stop) if stop else datetime.now(t0.tzinfo or timezone.utc)
    return max(0.0, (t1 - t0).total_seconds() - (paused_seconds or 0.0))


class Run(Record):
    """A run: ``id``, ``name``, ``status``, ``progress`` (``{"value", "min", "max", "label"}``),
    ``config``, ``inputs`` (``[{"name", "path", "size", "sha256"}]``), ``outputs``
    (``[{"name", "path", "size", "sha256", "file_id"}]``), ``pipeline_id``, ``pipeline_name``,
    ``pipeline_version``, ``pipeline_fingerprint``, ``start``, ``end``, ``exit_code``,
    ``error``, ``created``, ``metrics``, ``location`` (the cluster member it ran on) and
    ``target`` (the member it was sent to).

    The record is updated by :meth:`refresh`, :meth:`wait`, the actions and, while a
    :meth:`widget` or :meth:`wait` listens, by events pushed from the server. Displaying a run
    renders its :meth:`record` (HTML + JSON), so a cell ending in ``run.wait()`` leaves the
    reproducible record in the notebook.
    """

    _fields = RUN_PUBLIC

    def __repr__(self) -> str:
        progress = self.progress or {}
        label = f" {progress.get('value')}/{progress.get('max')}" if progress else ""
        return f"<Run {self.id} {self.name!r} {self.status}{label}>"

    @property
    def done(self) -> bool:
        """True once the run is DONE, ERROR or CANCELED."""
        return self.status in FINAL_STATUSES

    @property
    def elapsed(self) -> float | None:
        """Seconds the run has been running (until its end once it ended), paused time left
        out; None before it started."""
        data = self._data
        return _elapsed_seconds(self.start, self.end, data.get("paused_seconds") or 0.0,
                                data.get("paused_since"))

    def _update(self, data: Mapping[str, Any]) -> bool:
        """Take a newer server record; a final status is never replaced by a non-final one
        (an answer that raced a pushed event). True if the record changed; the watchers are
        then called, in this thread, before it returns."""
        with self._lock:
            current = self._data.get("status")
            if current in FINAL_STATUSES and data.get("status") not in FINAL_STATUSES:
                return False
            changed = dict(data) != self._data
            self._data = dict(data)
            watchers = list(self.__dict__.get("_watchers", ())) if changed else []
        for watcher in watchers:
            watcher(self)
        return changed

    def watch(self, callback: Callable[[Run], None]) -> Callable[[], None]:
        """Call ``callback(run)`` after every change of this record, in the thread that made
        it (so :meth:`wait` returns only after its watchers saw the final state). Returns the
        function that stops watching."""
        with self._lock:
            self.__dict__.setdefault("_watchers", []).append(callback)

        def stop() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self.__dict__["_watchers"].remove(callback)

        return stop

    def refresh(self) -> Run:
        """Re-read the run from the server; returns self."""
        self._update(self._client._request("GET", f"runs/{self.id}"))
        return self

    def wait(self, timeout: float | None = None, *, raise_on_error: bool = False,
             safety_interval: float = 15.0) -> Run:
        """Block until the run ends (DONE, ERROR or CANCELED); returns self.

        Updates are pushed over the events websocket; while it is connected the run is only
        re-read after a (re)connection and every ``safety_interval`` seconds. When the socket
        cannot be opened it falls back to polling with backoff (0.25 s growing to 5 s).
        Raises TimeoutError after ``timeout`` seconds, and :class:`PirusAPIError` for a run
        that ended in ERROR when ``raise_on_error``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = threading.Event()
        resync = threading.Event()

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("type")
            if kind == "run.updated":
                self._update(event["data"])
            elif kind in ("run.deleted", "events.connected"):
                resync.set()
            changed.set()

        def remaining() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        events = self._client.events
        with events.subscribe(on_event, run_id=self.id):
            left = remaining()
            events.wait_connected(2.0 if left is None else max(0.0, min(2.0, left)))
            self.refresh()
            delay = 0.25
            last_refresh = time.monotonic()
            while not self.done:
                left = remaining()
                if left is not None and left <= 0:
                    raise TimeoutError(f"run {self.id} is still {self.status} after "
                                       f"{timeout} s")
                connected = events.connected.is_set()
                interval = safety_interval if connected else delay
                pause = interval if left is None else min(interval, left)
                changed.wait(max(0.0, pause))
                changed.clear()
                if self.done:
                    break
                stale = time.monotonic() - last_refresh >= interval
                if resync.is_set() or stale or not events.connected.is_set():
                    resync.clear()
                    self.refresh()
                    last_refresh = time.monotonic()
                    if not events.connected.is_set():
                        delay = min(delay * 1.6, 5.0)
        if raise_on_error and self.status == "ERROR":
            raise PirusAPIError(500, "run_failed", f"run {self.id} failed: {self.error}",
                                {"exit_code": self.exit_code})
        return self

    def _action(self, action: str) -> Run:
        self._update(self._client._request("POST", f"runs/{self.id}/{action}"))
        return self

    def pause(self) -> Run:
        """Freeze the run's container (RUNNING → PAUSE)."""
        return self._action("pause")

    def resume(self) -> Run:
        """Unfreeze a paused run (PAUSE → RUNNING)."""
        return self._action("resume")

    def cancel(self) -> Run:
        """Cancel a waiting, running or paused run; its container is deleted."""
        return self._action("cancel")

    def delete(self) -> None:
        """Delete a finished run's record and folder."""
        self._client._request("DELETE", f"runs/{self.id}")

    def logs(self, which: str = "out", tail: int | None = None) -> str:
        """The pipeline's standard output (``which="out"``) or error (``"err"``), the last
        ``tail`` lines only when given."""
        params = {"tail": str(tail)} if tail is not None else None
        return self._client._request("GET", f"runs/{self.id}/logs/{which}", params=params,
                                     raw=True).text

    def output(self, name: str) -> dict[str, Any]:
        """The output named ``name`` (its path relative to the outputs folder)."""
        for item in self.outputs or []:
            if item.get("name") == name or item.get("path") == name:
                return dict(item)
        names = ", ".join(o.get("name", "?") for o in self.outputs or []) or "none"
        raise KeyError(f"run {self.id} has no output {name!r} (outputs: {names})")

    def export_crate(self, target: str | os.PathLike[str], *, data: bool = True) -> Path:
        """Save the run (it must have ended) as a Workflow Run RO-Crate of the Process Run
        Crate profile: a zip with ``ro-crate-metadata.json`` and, unless ``data=False``, the
        output files under ``outputs/``. Returns ``target``."""
        target = Path(target)
        response = self._client._request("GET", f"runs/{self.id}/crate", raw=True, stream=True,
                                         params={"data": "true" if data else "false"})
        # The server streams the zip as it writes it: a broken stream must leave no zip that
        # looks whole, so it is written aside and renamed once complete.
        partial = target.with_name(target.name + ".part")
        try:
            with open(partial, "wb") as out:
                for chunk in response.iter_content(1024 * 1024):
                    out.write(chunk)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return target

    def read_output(self, name: str) -> bytes:
        """The content of the output ``name``, downloaded from the server."""
        item = self.output(name)
        return File(self._client, {"id": item["file_id"]}).read_bytes()

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this run used (raises :class:`PirusAPIError` if it was removed)."""
        return self._client.pipeline(int(self.pipeline_id))

    def provenance(self) -> dict[str, Any]:
        """Where the image this run used came from (``packages``: name -> exact version, for
        a Debian base), read from its pipeline; empty if the pipeline was removed or
        reinstalled from another package since (its fingerprint is no longer the run's)."""
        try:
            pipeline = self.pipeline
        except PirusAPIError:
            return {}
        if pipeline.fingerprint != self.pipeline_fingerprint:
            return {}
        return dict(pipeline.provenance or {})

    def lineage(self) -> Lineage:
        """The runs whose outputs fed this one and those it fed; displayed, an SVG graph that
        stays in the saved notebook."""
        return self._client.lineage(self)

    def diff(self, other: Run | int) -> RunDiff:
        """What differs between this run and ``other``."""
        return self._client.diff(self, other)

    def widget(self, log_lines: int = 10) -> Any:
        """A live widget (status, progress, elapsed time, last log lines, pause/resume/cancel)
        updated by events pushed from the server."""
        return views.view(views.RUN_WIDGET)(self, log_lines=log_lines)

    def record(self) -> Any:
        """The run's reproducible record: pipeline name/version/id/image fingerprint, config,
        inputs and outputs with sha256, status, times, exit code and metrics. It renders as
        HTML plus an ``application/vnd.pirus.run+json`` payload that a saved notebook keeps;
        :func:`pirus_jupyter.rerun` starts the same run again from it."""
        return views.view(views.RECORD)(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        if not views.has_view(views.RECORD):  # no widgets imported: show the repr
            return {"text/plain": repr(self)}
        return self.record()._repr_mimebundle_(include, exclude)

