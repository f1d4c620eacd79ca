"""Pipelines: list, install (from a file under the root or a finished upload), read, uninstall,
form, icon, package and documents."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidRequest
from ..files import resolve_under, unique_input_names
from ..models import PipelineStatus
from .base import ID_SEGMENT, PirusHandler, path_id
from .streaming import send_file

ID = rf"(?P<pipeline_id>{ID_SEGMENT})"


class PipelinesHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.get_query_argument("status", None)
        if status is not None and status not in PipelineStatus.__members__:
            raise InvalidRequest(f"unknown status {status!r}")
        items = await self.services.pipelines.list(status)
        self.send_json({"items": items, "total": len(items)})

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        """``?status=ERROR``: clear every failed install at once (the one status allowed, so
        a mistyped query never uninstalls working pipelines)."""
        if self.get_query_argument("status", None) != PipelineStatus.ERROR.value:
            raise InvalidRequest("give ?status=ERROR: only failed installs are cleared at once")
        removed = await self.services.pipelines.remove_failed()
        self.send_json({"removed": removed})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.read_json()
        unknown = set(body) - {"path", "upload_id"}
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        if len(body) > 1:
            raise InvalidRequest('give either "path" or "upload_id", not both')
        if isinstance(body.get("path"), str):
            source = resolve_under(self.services.root_dir, body["path"])
            pipeline, new = await self.services.pipelines.install_from_path(source)
        elif isinstance(body.get("upload_id"), str):
            pipeline, new = await self.services.uploads.install_pipeline(body["upload_id"])
        else:
            raise InvalidRequest('give {"path": "<package under the Jupyter root>"} or '
                                 '{"upload_id": "<finished upload>"}')
        self.set_header("Location", self.api_url("pipelines", pipeline["id"]))
        # 200: these very bytes are installed already, and that pipeline is the answer.
        self.send_json(pipeline, status=202 if new else 200)


class PipelineHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, pipeline_id: str) -> None:
        self.send_json(await self.services.pipelines.get(path_id(pipeline_id, "pipeline")))

    @web.authenticated
    @authorized
    async def delete(self, pipeline_id: str) -> None:
        await self.services.pipelines.remove(path_id(pipeline_id, "pipeline"))
        self.set_status(204)
        self.finish()


class PipelineFormHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, pipeline_id: str) -> None:
        """The normalised draft-07 form; ``?inputs=a&inputs=b`` fills the input placeholders."""
        inputs = unique_input_names([PurePosixPath(p).name for p in
                                     self.get_query_arguments("inputs")])
        self.send_json(await self.services.pipelines.form(path_id(pipeline_id, "pipeline"),
                                                          inputs))


class PipelineIconHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, pipeline_id: str) -> None:
        path = await self.services.pipelines.icon_path(path_id(pipeline_id, "pipeline"))
        await send_file(self, path, mimetypes.guess_type(path.name)[0] or "image/png")


class PipelinePackageHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, pipeline_id: str) -> None:
        path = await self.services.pipelines.package_path(path_id(pipeline_id, "pipeline"))
        await send_file(self, path, "application/octet-stream",
                        filename=f"pipeline-{pipeline_id}{''.join(path.suffixes)}")


class PipelineDocumentHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, pipeline_id: str, name: str) -> None:
        path = await self.services.pipelines.document_path(path_id(pipeline_id, "pipeline"), name)
        await send_file(self, path, mimetypes.guess_type(name)[0] or "text/plain")


handlers = [
    (r"/pirus/api/v1/pipelines/?", PipelinesHandler),
    (rf"/pirus/api/v1/pipelines/{ID}", PipelineHandler),
    (rf"/pirus/api/v1/pipelines/{ID}/form", PipelineFormHandler),
    (rf"/pirus/api/v1/pipelines/{ID}/icon", PipelineIconHandler),
    (rf"/pirus/api/v1/pipelines/{ID}/package", PipelinePackageHandler),
    (rf"/pirus/api/v1/pipelines/{ID}/documents/(?P<name>[^/]+)", PipelineDocumentHandler),
]
