"""File records: inputs uploaded, outputs of runs."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidRequest
from .base import ID_SEGMENT, PirusHandler, path_id
from .streaming import send_file

ID = rf"(?P<file_id>{ID_SEGMENT})"


class FilesHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        order = self.get_query_argument("order", "asc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("query parameter 'order' must be asc or desc")
        items, total = await self.services.files.list(
            run_id=self.query_int("run_id", None),
            limit=self.query_int("limit", 100, 1, 1000), offset=self.query_int("offset", 0),
            source=self.get_query_argument("source", None) or None,
            newest_first=order == "desc", after=self.query_int("after", None))
        self.send_json({"items": items, "total": total})


class FileHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, file_id: str) -> None:
        self.send_json(await self.services.files.get(path_id(file_id, "file")))

    @web.authenticated
    @authorized
    async def delete(self, file_id: str) -> None:
        await self.services.files.delete(path_id(file_id, "file"))
        self.set_status(204)
        self.finish()


class FileContentHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, file_id: str) -> None:
        handle, name = await self.services.files.open_content(path_id(file_id, "file"))
        await send_file(self, handle, "application/octet-stream", filename=name)


handlers = [
    (r"/pirus/api/v1/files/?", FilesHandler),
    (rf"/pirus/api/v1/files/{ID}", FileHandler),
    (rf"/pirus/api/v1/files/{ID}/content", FileContentHandler),
]
