"""The notebook API: talk to a Pirus server (the ``pirus`` jupyter-server extension) from Python.

>>> import pirus_jupyter as pirus
>>> client = pirus.connect()                 # zero-config inside a kernel started by the server
>>> fastq_count = client.pipeline("fastq-count")
>>> run = fastq_count.run(config={"min_length": 10}, inputs=["data/reads.fastq"])
>>> run.wait()                               # pushed over the events websocket
>>> [(o["name"], o["sha256"]) for o in run.outputs]

Connection (:func:`connect`): explicit ``url``/``token`` arguments, else the environment variables
``PIRUS_SERVER_URL`` / ``PIRUS_SERVER_TOKEN`` (the server exports both into its own environment at
start-up, so every kernel it starts inherits them), else the Jupyter servers listed in the runtime
directory whose root folder contains the current directory.

Errors answered by the server become :class:`PirusAPIError` carrying the server's status, code,
message and details; an unreachable server is a :class:`PirusConnectionError`.

Nothing here imports ipywidgets at import time: :meth:`Pipeline.form` and :meth:`Run.widget`
import the widgets when called.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import requests

from ..hashing import sha256_file

if TYPE_CHECKING:
    from ..widgets.form import ConfigForm
    from ..widgets.record import RunRecord
    from ..widgets.run import RunWidget

log = logging.getLogger("pirus_jupyter.kernel.client")

API_PATH = "pirus/api/v1/"
URL_ENV = "PIRUS_SERVER_URL"
TOKEN_ENV = "PIRUS_SERVER_TOKEN"
FINAL_STATUSES = frozenset({"DONE", "ERROR", "CANCELED"})
#: Packages larger than this are not downloaded to compute their image fingerprint.
FINGERPRINT_MAX_BYTES = 4 * 1024**3
#: Inputs larger than this are not hashed through the Contents API (no local access).
REMOTE_HASH_MAX_BYTES = 64 * 1024**2

__all__ = [
    "FINAL_STATUSES",
    "Client",
    "EventSubscriber",
    "File",
    "Pipeline",
    "PirusAPIError",
    "PirusConnectionError",
    "Run",
    "connect",
]


# -- errors ------------------------------------------------------------------------------
class PirusAPIError(Exception):
    """The server refused a request. ``status`` is the HTTP status, ``code`` the server's
    machine-readable code (``not_found``, ``invalid_config``, ``illegal_transition``...),
    ``message`` the server's own message and ``details`` its details (e.g. the per-field
    errors of an invalid config)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status}, {self.code})"

    def __repr__(self) -> str:
        return f"PirusAPIError({self.status}, {self.code!r}, {self.message!r})"


class PirusConnectionError(ConnectionError):
    """No Pirus server could be reached; the message lists what was tried."""


# -- connection --------------------------------------------------------------------------
def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _same_server(a: str, b: str) -> bool:
    """Whether two server URLs name the same server (``localhost`` and loopback addresses
    are interchangeable)."""
    loopback = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
    pa, pb = urlparse(_with_slash(a)), urlparse(_with_slash(b))
    host_a, host_b = pa.hostname or "", pb.hostname or ""
    same_host = host_a == host_b or (host_a in loopback and host_b in loopback)
    return same_host and pa.port == pb.port and pa.path == pb.path and pa.scheme == pb.scheme


def _running_servers() -> list[dict[str, Any]]:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - jupyter_server is a dependency
        return []
    try:
        return list(list_running_servers())
    except OSError:
        return []


def _root_for(url: str) -> Path | None:
    """The root folder of the running server at ``url``, if it is listed locally."""
    for info in _running_servers():
        if info.get("url") and _same_server(info["url"], url) and info.get("root_dir"):
            return Path(info["root_dir"])
    return None


def _servers_containing(cwd: Path) -> list[dict[str, Any]]:
    """Running servers whose root folder contains ``cwd``, the deepest root first."""
    found = []
    for info in _running_servers():
        root = info.get("root_dir") or info.get("notebook_dir")
        if not root or not info.get("url"):
            continue
        try:
            cwd.relative_to(Path(root).resolve())
        except ValueError:
            continue
        found.append(info)
    return sorted(found, key=lambda i: len(Path(i["root_dir"]).resolve().parts), reverse=True)


def connect(url: str | None = None, token: str | None = None, *, timeout: float = 30.0
            ) -> Client:
    """Connect to a Pirus server and check that it answers.

    ``url`` is the Jupyter server's base URL (e.g. ``http://127.0.0.1:8888/``). Without
    arguments, in order: the environment variables ``PIRUS_SERVER_URL`` and
    ``PIRUS_SERVER_TOKEN`` (set for every kernel the server starts), then the running Jupyter
    servers (``jupyter_server.serverapp.list_running_servers()``) whose root folder contains
    the current directory. A ``url`` given without a token takes the token of a running
    server at that URL, or ``PIRUS_SERVER_TOKEN`` when the environment names the same server.

    Raises :class:`PirusConnectionError` saying what was tried when no candidate answers, and
    :class:`PirusAPIError` when a server answers but refuses (e.g. a wrong token).
    """
    tried: list[str] = []
    candidates: list[tuple[str, str, str, Path | None]] = []  # url, token, source, root
    env_url, env_token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url:
        if token is None:
            if env_url and _same_server(env_url, url):
                token = env_token
            else:
                token = next((i.get("token", "") for i in _running_servers()
                              if i.get("url") and _same_server(i["url"], url)), "")
        candidates.append((url, token or "", "the url argument", None))
    elif env_url:
        candidates.append((env_url, token if token is not None else env_token or "",
                           f"${URL_ENV}", None))
    else:
        tried.append(f"${URL_ENV} (not set)")
        cwd = Path.cwd().resolve()
        servers = _servers_containing(cwd)
        if not servers:
            listed = [f"{i.get('url')} (root {i.get('root_dir')})" for i in _running_servers()]
            tried.append("running Jupyter servers whose root folder contains "
                         f"{cwd}: none (listed: {', '.join(listed) or 'no server'})")
        for info in servers:
            candidates.append((info["url"], token if token is not None else
                               info.get("token", ""), "a running Jupyter server",
                               Path(info["root_dir"])))
    refused: PirusAPIError | None = None
    for cand_url, cand_token, source, root in candidates:
        client = Client(cand_url, cand_token, root_dir=root, timeout=timeout)
        try:
            client.info()
        except PirusConnectionError as e:
            tried.append(f"{source} {cand_url}: {e}")
            client.close()
            continue
        except PirusAPIError as e:
            client.close()
            if e.status == 404:
                tried.append(f"{source} {cand_url}: no Pirus API there (is the pirus_jupyter "
                             "server extension enabled?)")
                continue
            tried.append(f"{source} {cand_url}: {e}")
            refused = refused or e
            continue
        return client
    if refused is not None and len(candidates) == 1:
        raise refused
    raise PirusConnectionError(
        "no Pirus server reachable. Tried: " + "; ".join(tried) + ". Pass "
        "pirus_jupyter.connect(url, token), or set PIRUS_SERVER_URL and PIRUS_SERVER_TOKEN.")


# -- the events websocket ----------------------------------------------------------------
EventCallback = Callable[[dict[str, Any]], None]


class Subscription:
    """A listener registered with :class:`EventSubscriber`; :meth:`close` removes it."""

    def __init__(self, subscriber: EventSubscriber, key: int) -> None:
        self._subscriber = subscriber
        self._key = key

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._subscriber._unsubscribe(self._key)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventSubscriber:
    """One websocket to ``{base_url}pirus/api/v1/events`` shared by every listener of a client.

    A daemon thread (websocket-client) connects with the token in an ``Authorization``
    header, reconnects with exponential backoff (0.5 s up to 10 s) and calls each listener
    with every ``{"type", "data"}`` event. After each (re)connection listeners receive a
    synthetic ``{"type": "events.connected"}`` event: events sent while disconnected are lost,
    so listeners re-read the state they show. The thread starts with the first listener and
    stops after ``idle_timeout`` seconds without listeners (or on :meth:`close`). Callbacks run
    on that thread: keep them short.
    """

    def __init__(self, client: Client, *, idle_timeout: float = 60.0,
                 max_backoff: float = 10.0) -> None:
        self.client = client
        self.idle_timeout = idle_timeout
        self.max_backoff = max_backoff
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.connections = 0
        self._listeners: dict[int, tuple[EventCallback, int | None]] = {}
        self._next_key = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ws: Any = None

    @property
    def url(self) -> str:
        """The websocket URL of the events endpoint."""
        base = self.client.api_url + "events"
        if base.startswith("https://"):
            return "wss://" + base[len("https://"):]
        return "ws://" + base[len("http://"):] if base.startswith("http://") else base

    def subscribe(self, callback: EventCallback, run_id: int | None = None) -> Subscription:
        """Call ``callback(event)`` for every event (only those about run ``run_id`` when given,
        plus the synthetic ``events.connected``). Starts the connection if needed."""
        with self._lock:
            key = self._next_key
            self._next_key += 1
            self._listeners[key] = (callback, run_id)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="pirus-events",
                                                daemon=True)
                self._thread.start()
        return Subscription(self, key)

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._listeners.pop(key, None)

    @property
    def listener_count(self) -> int:
        """How many listeners are registered."""
        return len(self._listeners)

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the websocket is open (or ``timeout``); True if it is."""
        return self.connected.wait(timeout)

    def close(self) -> None:
        """Disconnect and stop the thread (listeners are dropped)."""
        with self._lock:
            self._listeners.clear()
        self._stop.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    # -- the thread ------------------------------------------------------------------
    def _dispatch(self, event: dict[str, Any]) -> None:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        about = data.get("id") if str(event.get("type", "")).startswith("run.") else None
        with self._lock:
            listeners = list(self._listeners.values())
        for callback, run_id in listeners:
            if run_id is not None and event.get("type") != "events.connected" and \
                    about != run_id:
                continue
            try:
                callback(event)
            except Exception:  # a broken listener must not stop the others
                log.exception("pirus: event listener failed")

    def _idle(self, since: float | None) -> bool:
        return since is not None and time.monotonic() - since > self.idle_timeout

    def _loop(self) -> None:
        import websocket

        backoff = 0.5
        idle_since: float | None = None
        while not self._stop.is_set():
            if not self._listeners:
                idle_since = idle_since or time.monotonic()
                if self._idle(idle_since):
                    break
            try:
                ws = websocket.create_connection(
                    self.url, timeout=10,
                    header=[f"Authorization: token {self.client.token}"] if self.client.token
                    else [])
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.debug("pirus: events websocket: %s; retrying in %.1f s", e, backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self._ws = ws
            self.connections += 1
            self.last_error = None
            backoff = 0.5
            ws.settimeout(1.0)
            self.connected.set()
            self._dispatch({"type": "events.connected", "data": {}})
            last_ping = time.monotonic()
            try:
                while not self._stop.is_set():
                    if self._listeners:
                        idle_since = None
                    else:
                        idle_since = idle_since or time.monotonic()
                        if self._idle(idle_since):
                            self._stop.set()
                            break
                    try:
                        raw = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        if time.monotonic() - last_ping > 30:
                            ws.send("ping")
                            last_ping = time.monotonic()
                        continue
                    if not raw:
                        raise websocket.WebSocketConnectionClosedException("closed by server")
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("type") != "pong":
                        self._dispatch(event)
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.debug("pirus: events websocket lost: %s", e)
            finally:
                self.connected.clear()
                self._ws = None
                with contextlib.suppress(Exception):
                    ws.close()
            if not self._stop.is_set() and self._stop.wait(backoff):
                break
        self.connected.clear()
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None


# -- records ------------------------------------------------------------------------------
class _Record:
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


class File(_Record):
    """A file record: an uploaded input or an output of a run (``id``, ``name``, ``path``
    relative to the Jupyter root, ``size``, ``sha256``, ``source``, ``run_id``, ``created``)."""

    _fields = ("id", "name", "path", "size", "sha256", "source", "run_id", "created")

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


class Pipeline(_Record):
    """An installed pipeline: ``id``, ``name``, ``version``, ``description``, ``status``
    (``READY`` when runnable), ``error``, ``license``, ``developers``, ``size``, ``created``,
    ``documents``, ``limits``; :meth:`form` and :meth:`run` configure and start runs."""

    _fields = ("id", "name", "description", "version", "pirus_api", "license", "developers",
               "size", "upload_offset", "status", "error", "created", "documents", "limits")

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
        while self.refresh().status in ("UPLOADING", "INSTALLING"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline {self.id} still {self.status} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        if self.status != "READY":
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

    def form(self, inputs: Iterable[Any] | None = None, **kwargs: Any) -> ConfigForm:
        """The configuration form widget (:class:`~pirus_jupyter.widgets.ConfigForm`) with the
        input files preselected; its Run button starts the run."""
        from ..widgets.form import ConfigForm

        return ConfigForm(pipeline=self, inputs=list(inputs or []), **kwargs)

    def run(self, config: Mapping[str, Any] | None = None, inputs: Iterable[Any] | None = None,
            name: str | None = None, form: ConfigForm | None = None) -> Run:
        """Start a run (it is queued: ``WAITING`` first) and return it.

        ``config`` is the form's values (defaults are filled by the server, which validates
        them against :meth:`schema`); ``inputs`` are paths relative to the Jupyter root, local
        paths under it, file ids, :class:`File` records or upload records. ``form`` takes
        config and inputs from a :class:`ConfigForm` instead. An invalid config raises
        :class:`PirusAPIError` with ``code == "invalid_config"`` and the per-field errors in
        ``details``."""
        if form is not None:
            config = form.value if config is None else config
            inputs = form.inputs if inputs is None else inputs
        body: dict[str, Any] = {"pipeline_id": self.id, "config": dict(config or {}),
                                "inputs": self._client._input_refs(inputs or [])}
        if name:
            body["name"] = name
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


def _elapsed_seconds(start: str | None, end: str | None = None) -> float | None:
    from datetime import datetime, timezone

    if not start:
        return None
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else datetime.now(t0.tzinfo or timezone.utc)
    return max(0.0, (t1 - t0).total_seconds())


class Run(_Record):
    """A run: ``id``, ``name``, ``status``, ``progress`` (``{"value", "min", "max", "label"}``),
    ``config``, ``inputs`` (``[{"name", "path", "size", "sha256"}]``), ``outputs``
    (``[{"name", "path", "size", "sha256", "file_id"}]``), ``pipeline_id``, ``pipeline_name``,
    ``pipeline_version``, ``pipeline_fingerprint``, ``start``, ``end``, ``exit_code``,
    ``error``, ``created`` and ``metrics``.

    The record is updated by :meth:`refresh`, :meth:`wait`, the actions and, while a
    :meth:`widget` or :meth:`wait` listens, by events pushed from the server. Displaying a run
    renders its :meth:`record` (HTML + JSON), so a cell ending in ``run.wait()`` leaves the
    reproducible record in the notebook.
    """

    _fields = ("id", "pipeline_id", "pipeline_name", "pipeline_version", "pipeline_fingerprint",
               "name", "config",
               "inputs", "outputs", "start", "end", "status", "progress", "exit_code", "error",
               "created", "metrics")

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
        """Seconds since the run started (until its end once it ended); None before it
        started."""
        return _elapsed_seconds(self.start, self.end)

    def _update(self, data: Mapping[str, Any]) -> bool:
        """Take a newer server record; a final status is never replaced by a non-final one
        (an answer that raced a pushed event). True if the record changed."""
        with self._lock:
            current = self._data.get("status")
            if current in FINAL_STATUSES and data.get("status") not in FINAL_STATUSES:
                return False
            changed = dict(data) != self._data
            self._data = dict(data)
            return changed

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

    def read_output(self, name: str) -> bytes:
        """The content of the output ``name``, downloaded from the server."""
        item = self.output(name)
        return File(self._client, {"id": item["file_id"]}).read_bytes()

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this run used (raises :class:`PirusAPIError` if it was removed)."""
        return self._client.pipeline(int(self.pipeline_id))

    def widget(self, log_lines: int = 10) -> RunWidget:
        """A live widget (status, progress, elapsed time, last log lines, pause/resume/cancel)
        updated by events pushed from the server."""
        from ..widgets.run import RunWidget

        return RunWidget(self, log_lines=log_lines)

    def record(self) -> RunRecord:
        """The run's reproducible record: pipeline name/version/id/image fingerprint, config,
        inputs and outputs with sha256, status, times, exit code and metrics. It renders as
        HTML plus an ``application/vnd.pirus.run+json`` payload that a saved notebook keeps;
        :func:`pirus_jupyter.rerun` starts the same run again from it."""
        from ..widgets.record import RunRecord

        return RunRecord.from_run(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        return self.record()._repr_mimebundle_(include, exclude)


# -- the client ---------------------------------------------------------------------------
class Client:
    """A connection to one Pirus server. Create it with :func:`connect`.

    ``base_url`` is the Jupyter server's URL (with its base path), ``api_url`` the Pirus API
    under it, ``root_dir`` the server's root folder when it is visible from this machine (then
    local paths are turned into root-relative ones and inputs are hashed locally).
    """

    def __init__(self, url: str, token: str = "", *, root_dir: str | os.PathLike[str] | None
                 = None, timeout: float = 30.0) -> None:
        self.base_url = _with_slash(url)
        self.api_url = self.base_url + API_PATH
        self.token = token or ""
        self.timeout = timeout
        self.session = requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"token {self.token}"
        root = Path(root_dir) if root_dir else _root_for(self.base_url)
        self.root_dir: Path | None = root.resolve() if root else None
        self.fingerprint_max_bytes = FINGERPRINT_MAX_BYTES
        self._events: EventSubscriber | None = None
        self._fingerprints: dict[tuple[Any, ...], str | None] = {}

    def __repr__(self) -> str:
        return f"<pirus Client {self.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the events websocket and the HTTP session."""
        if self._events is not None:
            self._events.close()
            self._events = None
        self.session.close()

    @property
    def events(self) -> EventSubscriber:
        """The shared events subscriber (one websocket for every widget and wait)."""
        if self._events is None:
            self._events = EventSubscriber(self)
        return self._events

    # -- HTTP ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        url = self.api_url + path.lstrip("/")
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as e:
            raise PirusConnectionError(f"cannot reach {self.base_url}: {e}") from e
        except requests.Timeout as e:
            raise PirusConnectionError(f"{self.base_url} did not answer in time: {e}") from e
        if response.status_code >= 400:
            raise _api_error(response)
        if raw:
            return response
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def info(self) -> dict[str, Any]:
        """Server version, API version, LXD connection state, limits and active run count."""
        return self._request("GET", "")

    # -- pipelines ----------------------------------------------------------------------
    def pipelines(self, status: str | None = None) -> list[Pipeline]:
        """Installed pipelines (all, or those in ``status``, e.g. ``"READY"``)."""
        body = self._request("GET", "pipelines", params={"status": status} if status else None)
        return [Pipeline(self, item) for item in body["items"]]

    def pipeline(self, name_or_id: int | str, version: str | None = None) -> Pipeline:
        """A pipeline by id, or by name (the READY one; the newest install when several
        versions are, unless ``version`` picks one)."""
        if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
            return Pipeline(self, self._request("GET", f"pipelines/{int(name_or_id)}"))
        every = self.pipelines()
        named = [p for p in every if p.name == name_or_id
                 and (version is None or p.version == version)]
        ready = [p for p in named if p.status == "READY"]
        if ready or named:
            return max(ready or named, key=lambda p: int(p.id))
        names = ", ".join(sorted({f"{p.name} {p.version or ''}".strip() for p in every}))
        wanted = f"{name_or_id} {version}" if version else name_or_id
        raise PirusAPIError(404, "not_found", f"no pipeline named {wanted!r} is installed "
                            f"(installed: {names or 'none'})")

    def install(self, package: str | os.PathLike[str], *, wait: bool = True,
                timeout: float | None = 600, progress: bool = True) -> Pipeline:
        """Install a pipeline package. A package under the Jupyter root is installed in place;
        any other file is uploaded first (TUS). Waits until it is READY unless ``wait`` is
        False; a failed install raises :class:`PirusAPIError`."""
        relative = self._root_relative(package)
        if relative is not None:
            pipeline = Pipeline(self, self._request("POST", "pipelines",
                                                    json={"path": relative}))
        elif self.root_dir is None and not Path(package).exists():
            pipeline = Pipeline(self, self._request("POST", "pipelines",
                                                    json={"path": str(package)}))
        else:
            record = self.upload(package, kind="pipeline", progress=progress)
            if not isinstance(record, Pipeline):  # pragma: no cover - server contract
                raise PirusAPIError(500, "install_failed", "the upload made no pipeline")
            pipeline = record
        return pipeline.wait_ready(timeout) if wait else pipeline

    # -- runs ---------------------------------------------------------------------------
    def runs(self, status: str | Iterable[str] | None = None,
             pipeline: Pipeline | int | str | None = None, limit: int = 50,
             offset: int = 0) -> list[Run]:
        """Runs, newest first; ``status`` one status or several (``"RUNNING"``,
        ``["DONE", "ERROR"]``), ``pipeline`` a :class:`Pipeline`, id or name."""
        params: dict[str, Any] = {"limit": str(limit), "offset": str(offset)}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if pipeline is not None:
            if isinstance(pipeline, Pipeline):
                pipeline_id = pipeline.id
            elif isinstance(pipeline, int) or str(pipeline).isdigit():
                pipeline_id = int(pipeline)
            else:
                pipeline_id = self.pipeline(str(pipeline)).id
            params["pipeline_id"] = str(pipeline_id)
        body = self._request("GET", "runs", params=params)
        return [Run(self, item) for item in body["items"]]

    def run(self, run_id: int) -> Run:
        """One run by id."""
        return Run(self, self._request("GET", f"runs/{int(run_id)}"))

    # -- files --------------------------------------------------------------------------
    def files(self, run: Run | int | None = None, limit: int = 1000) -> list[File]:
        """File records: uploaded inputs and run outputs (only those of ``run`` when given)."""
        params: dict[str, Any] = {"limit": str(limit)}
        if run is not None:
            params["run_id"] = str(run.id if isinstance(run, Run) else int(run))
        body = self._request("GET", "files", params=params)
        return [File(self, item) for item in body["items"]]

    def file(self, file_id: int) -> File:
        """One file record by id."""
        return File(self, self._request("GET", f"files/{int(file_id)}"))

    def databases(self) -> list[dict[str, Any]]:
        """The reference databases mounted read-only in every run (``name``, ``size``)."""
        return self._request("GET", "databases")["items"]

    def upload(self, path: str | os.PathLike[str], kind: str = "input", *,
               progress: bool | Callable[[int, int], None] = True, chunk_size: int | None = None,
               metadata: Mapping[str, str] | None = None) -> File | Pipeline:
        """Upload a local file over TUS (resumable: calling again after an interruption sends
        only the rest) and return the resulting :class:`File` (``kind="input"``) or the
        :class:`Pipeline` being installed (``kind="pipeline"``).

        ``progress``: True shows an ipywidgets progress bar inside a kernel with a frontend
        comm and a text line on stderr elsewhere; False shows nothing; a callable is called
        with ``(bytes_sent, total_bytes)``."""
        from . import uploader

        source = Path(path)
        reporter = _progress_reporter(source.name, progress)
        kwargs: dict[str, Any] = {"kind": kind, "metadata": metadata, "progress": reporter}
        if chunk_size:
            kwargs["chunk_size"] = chunk_size
        try:
            record = uploader.upload(self.base_url, self.token, source, **kwargs)
        except uploader.UploadError as e:
            raise PirusAPIError(400, "upload_failed", str(e)) from e
        except requests.ConnectionError as e:
            raise PirusConnectionError(f"cannot reach {self.base_url}: {e}") from e
        finally:
            closer = getattr(reporter, "close", None)
            if closer is not None:
                closer()
        if kind == "pipeline":
            return self.pipeline(int(record["pipeline_id"]))
        return File(self, record["file"])

    # -- paths and hashes ------------------------------------------------------------------
    def _root_relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` (absolute or relative to the current directory) as a path relative to the
        Jupyter root, when the root is known and the file exists locally under it."""
        if self.root_dir is None:
            return None
        local = Path(path).expanduser()
        if not local.is_absolute():
            local = Path.cwd() / local
        if not local.exists():
            return None
        try:
            return local.resolve().relative_to(self.root_dir).as_posix()
        except ValueError:
            return None

    def _input_paths(self, inputs: Iterable[Any]) -> list[str]:
        """Root-relative paths (or names) of inputs, for form placeholders."""
        out = []
        for item in inputs:
            ref = self._input_ref(item)
            if isinstance(ref, int):
                out.append(self.file(ref).path)
            else:
                out.append(str(ref))
        return out

    def _input_refs(self, inputs: Iterable[Any]) -> list[Any]:
        return [self._input_ref(item) for item in inputs]

    def _input_ref(self, item: Any) -> Any:
        """What the server accepts for one input: a file id or a root-relative path."""
        if isinstance(item, File):
            return int(item.id)
        if isinstance(item, Mapping):
            if isinstance(item.get("file"), Mapping):  # an upload record
                return int(item["file"]["id"])
            if item.get("file_id") is not None:
                return int(item["file_id"])
            if item.get("path"):
                return self._input_ref(item["path"])
            if item.get("id") is not None:
                return int(item["id"])
            raise ValueError(f"cannot tell which file {item!r} is")
        if isinstance(item, bool):
            raise TypeError("an input is a path, a file id or a File")
        if isinstance(item, int):
            return item
        if isinstance(item, (str, os.PathLike)):
            relative = self._root_relative(item)
            return relative if relative is not None else Path(item).as_posix()
        raise TypeError(f"an input is a path, a file id or a File, not {type(item).__name__}")

    def sha256(self, path: str, size: int | None = None) -> str | None:
        """SHA-256 of a file under the Jupyter root (``path`` relative to it): hashed locally
        when the root is visible here, else read through the Jupyter Contents API when it is
        at most 64 MiB; None if it cannot be read."""
        if self.root_dir is not None:
            local = (self.root_dir / path).resolve()
            try:
                local.relative_to(self.root_dir)
            except ValueError:
                return None
            if local.is_file():
                return sha256_file(local)
            return None
        if size is not None and size > REMOTE_HASH_MAX_BYTES:
            return None
        try:
            response = self.session.get(
                f"{self.base_url}api/contents/{quote(path)}",
                params={"content": "1", "format": "base64", "type": "file"},
                timeout=self.timeout)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        import base64

        content = response.json().get("content") or ""
        return hashlib.sha256(base64.b64decode(content)).hexdigest()

    def list_dir(self, path: str = "") -> list[dict[str, Any]]:
        """Entries (``name``, ``path``, ``type`` = ``directory``/``file``/``notebook``, ``size``)
        of a folder of the Jupyter root, through the Jupyter Contents API."""
        response = self.session.get(f"{self.base_url}api/contents/{quote(path.strip('/'))}",
                                    params={"content": "1", "type": "directory"},
                                    timeout=self.timeout)
        if response.status_code >= 400:
            raise _api_error(response)
        entries = response.json().get("content") or []
        return [{k: e.get(k) for k in ("name", "path", "type", "size")} for e in entries]

    def _package_fingerprint(self, pipeline: Pipeline) -> str | None:
        key = (pipeline.id, pipeline._data.get("created"), pipeline._data.get("size"))
        if key in self._fingerprints:
            return self._fingerprints[key]
        fingerprint = None
        size = pipeline._data.get("size") or 0
        if pipeline._data.get("status") == "READY" and size <= self.fingerprint_max_bytes:
            digest = hashlib.sha256()
            try:
                response = self._request("GET", f"pipelines/{pipeline.id}/package", raw=True,
                                         stream=True, timeout=max(self.timeout, 300))
                for chunk in response.iter_content(4 * 1024 * 1024):
                    digest.update(chunk)
                fingerprint = digest.hexdigest()
            except (PirusAPIError, PirusConnectionError, requests.RequestException) as e:
                log.debug("pirus: no fingerprint for pipeline %s: %s", pipeline.id, e)
        self._fingerprints[key] = fingerprint
        return fingerprint


def _api_error(response: requests.Response) -> PirusAPIError:
    code = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            409: "conflict"}.get(response.status_code, "error")
    message = (response.reason or "").strip() or f"HTTP {response.status_code}"
    details = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details")
    elif isinstance(body, Mapping) and body.get("message"):
        message = str(body["message"])
    if response.status_code in (401, 403) and code in ("unauthorized", "forbidden"):
        message += " (check the token: PIRUS_SERVER_TOKEN or connect(url, token))"
    return PirusAPIError(response.status_code, code, message, details)


# -- upload progress --------------------------------------------------------------------
def _in_kernel_with_comm() -> bool:
    """True inside an IPython kernel whose frontend can show widgets (it has a comm)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    return kernel is not None and getattr(kernel, "session", None) is not None


class _TextProgress:
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


class _WidgetProgress:
    def __init__(self, name: str) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                         description="Uploading", bar_style="info")
        self.label = widgets.Label(value=name)
        self.name = name
        display(widgets.HBox([self.bar, self.label]))

    def __call__(self, sent: int, total: int) -> None:
        self.bar.value = sent / total if total else 1.0
        self.label.value = f"{self.name}: {human_size(sent)} / {human_size(total)}"

    def close(self) -> None:
        self.bar.bar_style = "success" if self.bar.value >= 1.0 else "warning"


def _progress_reporter(name: str, progress: bool | Callable[[int, int], None]
                       ) -> Callable[[int, int], None] | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    if _in_kernel_with_comm():
        try:
            return _WidgetProgress(name)
        except Exception:  # no ipywidgets frontend: fall back to text
            log.debug("pirus: no widget progress bar", exc_info=True)
    return _TextProgress(name)


def human_size(size: float) -> str:
    """A byte count for people: 512 B, 1.5 MiB, 2.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover

