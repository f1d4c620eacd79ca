"""GA4GH TES 1.1 under ``{base_url}ga4gh/tes/v1``: thin, as every handler; errors carry TES
clients' ``msg`` and ``status_code`` beside Pirus's own ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import PirusError
from .base import PirusHandler, parse_json

PREFIX = r"/ga4gh/tes/v1"
ID = r"(?P<task_id>[^/:]+)"


class TesHandler(PirusHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PirusError):
            self.set_status(exc.status)
            body = {**exc.to_json(), "msg": exc.message, "status_code": exc.status}
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))
            return
        super().write_error(status_code, **kwargs)


class ServiceInfoHandler(TesHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from .. import __version__

        self.send_json(self.services.tes.service_info(__version__))


class TasksHandler(TesHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        keys = self.get_query_arguments("tag_key")
        values = self.get_query_arguments("tag_value")
        tags = {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}
        self.send_json(await self.services.tes.list(
            view=self.get_query_argument("view", None),
            name_prefix=self.get_query_argument("name_prefix", None),
            state=self.get_query_argument("state", None) or None, tags=tags,
            page_size=self.query_int("page_size", None, 0, 2**31 - 1),
            page_token=self.get_query_argument("page_token", None) or None))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = parse_json(self.body_bytes(), "task")
        self.send_json(await self.services.tes.create(body))


class TaskHandler(TesHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        self.send_json(await self.services.tes.get(task_id,
                                                   self.get_query_argument("view", None)))


class CancelHandler(TesHandler):
    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        self.send_json(await self.services.tes.cancel(task_id))


handlers = [
    (rf"{PREFIX}/service-info/?", ServiceInfoHandler),
    (rf"{PREFIX}/tasks/?", TasksHandler),
    (rf"{PREFIX}/tasks/{ID}:cancel/?", CancelHandler),
    (rf"{PREFIX}/tasks/{ID}/?", TaskHandler),
]
