"""``GET /pirus/api/v1/databases``: the reference databases mounted read-only in every run."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import PirusHandler


class DatabasesHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        items = await self.services.databases.list()
        self.send_json({"items": items, "total": len(items)})


handlers = [(r"/pirus/api/v1/databases/?", DatabasesHandler)]
