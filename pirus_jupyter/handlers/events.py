"""Websocket ``/pirus/api/v1/events``: every change as ``{"type", "data"}``."""

from __future__ import annotations

import asyncio
import html
import json
import re
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket
from tornado.iostream import StreamClosedError

from ..events import Event
from .base import allowed_methods

WRITE_BATCH = 32  # events written to a websocket before waiting for them to be sent
_KEY_RE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")  # base64 of exactly 16 bytes


class EventsHandler(ExtensionHandlerMixin, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = "pirus"

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        authorized = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", "pirus"))
        if not authorized:
            raise web.HTTPError(403)
        key = self.request.headers.get("Sec-WebSocket-Key")
        if key is not None and not _KEY_RE.fullmatch(key):
            # RFC 6455 4.2.1: the key is 16 random bytes in base64; tornado only checks presence.
            self.set_status(400)
            self.finish("Sec-WebSocket-Key must be 16 bytes in base64")
            return
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A small page of our own: Jupyter's templated one looks the user up, which raises when
        # the request failed before authentication (a 405, a body tornado could not parse).
        if status_code == 405:  # RFC 9110: a 405 names the allowed methods
            self.set_header("Allow", allowed_methods(type(self)))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        reason = html.escape(f"{status_code} {self._reason}")
        self.finish(f"<!DOCTYPE html><html><head><title>{reason}</title></head>"
                    f"<body><h1>{reason}</h1></body></html>")

    def open(self, *args: Any, **kwargs: Any) -> None:
        bus = self.settings["pirus"].events
        self._subscription = bus.subscribe()
        # Cut off for being too slow: close now, even if the pump is stuck writing to it.
        self._subscription.on_overflow = self._too_slow
        self._pump = asyncio.get_running_loop().create_task(self._forward())

    def _too_slow(self) -> None:
        if self.ws_connection is not None:
            self.close(1013, "client too slow; reconnect and re-read state")

    def get_compression_options(self) -> None:
        # No permessage-deflate: the pump writes frames made once per event (Event.frame),
        # which a compressed connection could not take as they are.
        return None

    async def _forward(self) -> None:
        sub = self._subscription
        try:
            while True:
                # Write what is already queued (up to WRITE_BATCH) in one write to the socket,
                # then wait for it to be sent: waiting for each message's flush made a busy
                # server fall behind its clients, and a write (and a task) per message cost
                # more than the rest of the fan-out. The cap keeps what sits unsent in the
                # socket's buffer small, so a client that stops reading is still cut off by
                # its queue.
                batch = [await sub.get()]
                while len(batch) < WRITE_BATCH and not sub.queue.empty():
                    batch.append(sub.queue.get_nowait())
                frames = []
                for message in batch:
                    if message["type"] == "subscription.overflow":
                        self.close(1013, "client too slow; reconnect and re-read state")
                        return
                    if not isinstance(message, Event):
                        message = Event(message)
                    frames.append(message.frame)
                connection = self.ws_connection
                if connection is None or connection.is_closing() or connection.stream is None:
                    return
                await connection.stream.write(b"".join(frames))
        except (websocket.WebSocketClosedError, StreamClosedError, asyncio.CancelledError):
            return

    _pongs_unsent = 0

    def on_message(self, message: str | bytes) -> None:
        # A client that pings but never reads would make pongs pile up in the write buffer:
        # a few unsent ones at most, the other pings go unanswered.
        if message == "ping" and self._pongs_unsent < 8:
            self._pongs_unsent += 1
            sent = self.write_message(json.dumps({"type": "pong", "data": {}}))
            sent.add_done_callback(self._pong_sent)

    def _pong_sent(self, future: asyncio.Future[None]) -> None:
        self._pongs_unsent -= 1
        if not future.cancelled():
            future.exception()  # a closed connection is not an error here

    def on_close(self) -> None:
        if hasattr(self, "_subscription"):
            self.settings["pirus"].events.unsubscribe(self._subscription)
            self._pump.cancel()


handlers = [(r"/pirus/api/v1/events", EventsHandler)]
