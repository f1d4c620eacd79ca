"""``GET /pirus/api/v1``: version, API version, LXD connection state, limits, cluster members."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import PirusHandler


class InfoHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        info = await self.services.info()
        runs = self.services.runs
        # How run data reaches containers, and for an LXD cluster its members: their state
        # as LXD reports it, their capacity and the Pirus runs each holds.
        info["data_transfer"] = runs.data_transfer
        info["cluster"] = await runs.cluster_info()
        self.send_json(info)


handlers = [(r"/pirus/api/v1/?", InfoHandler)]
