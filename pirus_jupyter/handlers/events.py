"""Websocket ``/pirus/api/v1/events``: every change as ``{"type", "data"}``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket


class EventsHandler(ExtensionHandlerMixin, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = "pirus"

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        authorized = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", "pirus"))
        if not authorized:
            raise web.HTTPError(403)
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        bus = self.settings["pirus"].events
        self._subscription = bus.subscribe()
        self._pump = asyncio.get_running_loop().create_task(self._forward())

    async def _forward(self) -> None:
        sub = self._subscription
        try:
            while True:
                message = await sub.get()
                if message["type"] == "subscription.overflow":
                    self.close(1013, "client too slow; reconnect and re-read state")
                    return
                await self.write_message(json.dumps(message))
        except (websocket.WebSocketClosedError, asyncio.CancelledError):
            return

    def on_message(self, message: str | bytes) -> None:
        if message == "ping":
            self.write_message(json.dumps({"type": "pong", "data": {}}))

    def on_close(self) -> None:
        if hasattr(self, "_subscription"):
            self.settings["pirus"].events.unsubscribe(self._subscription)
            self._pump.cancel()


handlers = [(r"/pirus/api/v1/events", EventsHandler)]
