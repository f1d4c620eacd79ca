"""``GET /pirus/api/v1``: version, API version, LXD connection state, limits, cluster members."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import PirusHandler


class InfoHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send_json(await self.services.info())


handlers = [(r"/pirus/api/v1/?", InfoHandler)]
