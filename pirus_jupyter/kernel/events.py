"""The server's events websocket, shared by every listener of a client: :class:`EventSubscriber`
(one daemon thread, reconnecting with backoff) and :class:`Subscription` (one listener)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

__all__ = ["EventCallback", "EventSubscriber", "Subscription"]

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

