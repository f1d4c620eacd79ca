"""Runs: create (queued), list, read, pause/resume/cancel, logs, outputs, crate, delete,
notify, diff, lineage."""

from __future__ import annotations

from urllib.parse import quote

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.utils import url_path_join
from tornado import web

from ..crate import agent_of
from ..errors import Forbidden, InvalidRequest, NotFound
from ..lineage_svg import lineage_svg
from ..models import RunStatus
from .base import ID_SEGMENT, PirusHandler, json_id, parse_json, path_id
from .streaming import send_produced

ID = rf"(?P<run_id>{ID_SEGMENT})"
NOTIFY_MAX_BODY = 1024 * 1024  # one progress report from a pipeline


class RunsHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        statuses = [s for arg in self.get_query_arguments("status") for s in arg.split(",") if s]
        bad = [s for s in statuses if s not in RunStatus.__members__]
        if bad:
            raise InvalidRequest(f"unknown status {bad[0]!r}")
        pipeline_id = self.query_int("pipeline_id", None)
        limit = self.query_int("limit", 50, 1, 1000)
        offset = self.query_int("offset", 0)
        items, total = await self.services.runs.list(statuses or None, pipeline_id, limit, offset,
                                                     after=self.query_int("after", None))
        self.send_json({"items": items, "total": total, "limit": limit, "offset": offset})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.read_json()
        unknown = set(body) - {"pipeline_id", "name", "config", "inputs", "target",
                              "reuse"}
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        inputs = body.get("inputs")
        if isinstance(inputs, list):  # file ids may come as JSON numbers like 12.0
            inputs = [dict(i, file_id=json_id(i["file_id"], "file_id"))
                      if isinstance(i, dict) and "file_id" in i else json_id(i, "input")
                      for i in inputs]
        run = await self.services.runs.create(
            json_id(body.get("pipeline_id"), "pipeline_id"), body.get("name"), body.get("config"),
            inputs, body.get("target"), body.get("reuse"))
        self.set_header("Location", self.api_url("runs", run["id"]))
        self.send_json(run, status=201)


class RunHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        self.send_json(await self.services.runs.get(path_id(run_id, "run")))

    @web.authenticated
    @authorized
    async def delete(self, run_id: str) -> None:
        await self.services.runs.delete(path_id(run_id, "run"))
        self.set_status(204)
        self.finish()


class RunActionHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str, action: str) -> None:
        runs = self.services.runs
        operation = {"pause": runs.pause, "resume": runs.resume, "cancel": runs.cancel}[action]
        self.send_json(await operation(path_id(run_id, "run")))


class RunLogHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str, which: str) -> None:
        tail = self.query_int("tail", None, 0, 100000)
        text = await self.services.runs.logs(path_id(run_id, "run"), which, tail)
        self.finish(text, set_content_type="text/plain; charset=utf-8")


class RunOutputsHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run = await self.services.runs.get(path_id(run_id, "run"))
        self.send_json({"items": run["outputs"], "total": len(run["outputs"])})


class RunDiffHandler(PirusHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str, other_id: str) -> None:
        self.send_json(await self.services.runs.diff(path_id(run_id, "run"),
                                                     path_id(other_id, "run")))


class RunLineageHandler(PirusHandler):
    """The lineage graph as JSON, or (``?format=svg``) drawn as the notebook draws it."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        form = self.get_query_argument("format", "json")
        if form not in ("json", "svg"):
            raise InvalidRequest("format must be json or svg")
        lineage = await self.services.runs.lineage(path_id(run_id, "run"))
        if form == "json":
            self.send_json(lineage)
            return
        # Every text in it is escaped; nothing in it should ever run if opened as a page.
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.finish(lineage_svg(lineage), set_content_type="image/svg+xml; charset=utf-8")


class RunCrateHandler(PirusHandler):
    """The run as a Process Run Crate (zip), written by a thread as it is sent.
    ``?data=false``: the metadata only, no output bytes."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        data = self.get_query_argument("data", "true").lower()
        if data not in ("true", "false", "1", "0"):
            raise InvalidRequest("data must be true or false")
        request = self.request
        origin = f"{request.protocol}://{request.host}"

        def url_for(path: str) -> str:  # Jupyter's own files handler serves root paths
            return origin + url_path_join(self.base_url, "files", quote(path))

        produce, filename = await self.services.crates.crate(
            path_id(run_id, "run"), data=data in ("true", "1"), url_for=url_for,
            package_url=lambda pid: origin + self.api_url("pipelines", pid, "package"),
            server_id=origin + self.base_url, agent=agent_of(self.current_user))
        await send_produced(self, produce, "application/zip", filename=filename)


class RunNotifyHandler(PirusHandler):
    """Progress posted by a pipeline from inside its container. It has no Jupyter token: it is
    authenticated by the run's own secret, which stops working when the run ends."""

    max_body_bytes = NOTIFY_MAX_BODY

    def check_xsrf_cookie(self) -> None:
        return  # no browser cookie is involved: the per-run token is the credential

    @allow_unauthenticated
    async def post(self, run_id: str) -> None:
        token = self.get_query_argument("token", "")
        try:
            number = path_id(run_id, "run")
        except NotFound:  # the same answer as a wrong token: nothing is revealed
            raise Forbidden("invalid or expired notify token") from None
        await self.services.runs.check_notify_token(number, token)
        payload = parse_json(self.body_bytes() or b"null", "notify body")
        run = await self.services.runs.notify(number, token, payload)
        self.send_json({"id": run["id"], "status": run["status"], "progress": run["progress"]})


handlers = [
    (r"/pirus/api/v1/runs/?", RunsHandler),
    (rf"/pirus/api/v1/runs/{ID}", RunHandler),
    (rf"/pirus/api/v1/runs/{ID}/(?P<action>pause|resume|cancel)", RunActionHandler),
    (rf"/pirus/api/v1/runs/{ID}/logs/(?P<which>[^/]+)", RunLogHandler),
    (rf"/pirus/api/v1/runs/{ID}/outputs", RunOutputsHandler),
    (rf"/pirus/api/v1/runs/{ID}/crate", RunCrateHandler),
    (rf"/pirus/api/v1/runs/{ID}/notify", RunNotifyHandler),
    (rf"/pirus/api/v1/runs/{ID}/diff/(?P<other_id>{ID_SEGMENT})", RunDiffHandler),
    (rf"/pirus/api/v1/runs/{ID}/lineage", RunLineageHandler),
]
