"""TUS 1.0.0 upload endpoints: ``{base_url}pirus/api/v1/uploads[/<id>]``.

Thin by design: the protocol lives in :mod:`pirus_jupyter.uploads`. What is particular to
these handlers is the streamed request body (``stream_request_body``):

* ``prepare()`` runs *before* the body is read, so authentication, authorization, the
  ``Tus-Resumable`` version and every PATCH/creation precondition are checked there, and no body
  byte is accepted from a request that will be refused (``@web.authenticated`` on the methods
  alone would only run after the whole body was streamed).
* ``data_received()`` hands each piece of the body to the upload's :class:`ChunkWriter`; the
  method (``patch``/``post``) then commits it.
* Error responses keep the TUS headers: ``send_error`` clears headers, so ``write_error`` sets
  ``Tus-Resumable`` again plus any headers the error carries (``Tus-Version`` on a 412, the
  current ``Upload-Offset`` on a 409/460, ``Location`` on a 460 of a creation-with-upload).
"""

from __future__ import annotations

import copy
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.utils import ensure_async
from tornado import web

from ..errors import InvalidRequest, NotFound
from ..uploads import (
    EXPOSED_HEADERS,
    TUS_VERSION,
    UPLOAD_ID_RE,
    ChunkWriter,
    UploadService,
    check_version,
    options_headers,
    response_headers,
)
from .base import PirusHandler

# Body bytes handed to data_received at once, at most (tornado's default is 64 KiB: 16,384
# calls, each a few Python-level hops, per GiB). The socket is read in pieces of up to this size
# too, but tornado allocates (and zeroes) a whole piece for every read, whatever it receives: a
# client sending 64 KiB at a time would cost 28 us per 64 KiB with 1 MiB pieces. So the read
# size follows what the socket delivers (:func:`_adapt_read_size`), between these two.
BODY_PIECE = 1024 * 1024
MIN_READ = 64 * 1024


def _read_in_large_pieces(connection: Any) -> None:
    """Let this request's body come in pieces of up to :data:`BODY_PIECE`. The connection
    parameters object is shared by every connection of the server: this one gets a copy."""
    params = getattr(connection, "params", None)
    if params is None or getattr(connection, "stream", None) is None:
        return
    connection.params = copy.copy(params)
    connection.params.chunk_size = BODY_PIECE


def _adapt_read_size(stream: Any, received: int) -> None:
    """Double the socket read size when a read filled it (more was waiting), halve it when reads
    bring much less (a slow client): large reads only while they are filled."""
    size = getattr(stream, "read_chunk_size", None)
    if size is None:
        return
    if received >= size:
        stream.read_chunk_size = min(size * 2, BODY_PIECE, stream.max_buffer_size // 2)
    elif received < size // 4 and size > MIN_READ:
        stream.read_chunk_size = max(size // 2, MIN_READ)


@web.stream_request_body
class _TusHandler(PirusHandler):
    max_body_bytes = None  # the body goes to a ChunkWriter, bounded by the upload's length
    _writer: ChunkWriter | None = None

    @property
    def uploads(self) -> UploadService:
        return self.services.uploads

    def upload_url(self, upload_id: str) -> str:
        """Absolute path of an upload (the ``Location`` of a creation)."""
        return self.api_url("uploads", upload_id)

    async def prepare(self) -> None:  # type: ignore[override]
        # X-HTTP-Method-Override: a POST carrying it *is* the named method, for every check
        # below (auth action, version, body handling) and for the dispatch after prepare().
        override = self.request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        bad_override = None
        if override and self.request.method == "POST":
            # Only an upload's URL: a POST to the collection is a creation, nothing else.
            if override in self.SUPPORTED_METHODS and isinstance(self, UploadHandler):
                self.request.method = override
            else:
                bad_override = override
        self._set_tus_headers()
        if getattr(type(self), (self.request.method or "").lower(), None) is getattr(
                web.RequestHandler, (self.request.method or "").lower(), None):
            # Tornado would only answer 405 after prepare(): a PUT must not get a TUS 412.
            raise web.HTTPError(405)
        await super().prepare()
        if self._finished:
            return
        if not self.current_user:
            raise web.HTTPError(403)
        action = HTTP_METHOD_TO_AUTH_ACTION.get(self.request.method or "", "write")
        if not await ensure_async(self.authorizer.is_authorized(
                self, self.current_user, action, self.auth_resource)):
            raise web.HTTPError(403, f"not authorized to {action} uploads")
        upload_id = self.path_kwargs.get("upload_id")
        if upload_id is not None and not UPLOAD_ID_RE.fullmatch(upload_id):
            raise NotFound(f"no upload with id {upload_id!r}")
        if bad_override:
            raise InvalidRequest(f"X-HTTP-Method-Override {bad_override!r} is not accepted here: "
                                 "only PATCH, HEAD, DELETE, GET or OPTIONS on an upload's URL")
        check_version(self.request.method or "", self.request.headers)
        if self.request.method in ("POST", "PATCH"):
            # The server-wide limit (512 MiB by default) would cut a large PATCH: the real
            # bound is checked against the upload's own length by the service.
            self.request.connection.set_max_body_size(max(self.uploads.max_size, 1))
            _read_in_large_pieces(self.request.connection)
        await self.prepare_body()

    async def prepare_body(self) -> None:
        """Validate the request and open a writer if it carries upload bytes."""

    def _set_tus_headers(self) -> None:
        self.set_header("Tus-Resumable", TUS_VERSION)
        self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)

    async def data_received(self, chunk: bytes) -> None:
        _adapt_read_size(getattr(self.request.connection, "stream", None), len(chunk))
        if self._writer is not None:
            await self._writer.feed(chunk)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        writer, self._writer = self._writer, None
        if writer is not None and writer.state == "receiving":
            # Keep the bytes that arrived (fsync + record), in the background.
            self.uploads.spawn(writer.abort())

    def on_finish(self) -> None:
        stream = getattr(self.request.connection, "stream", None)
        if getattr(stream, "read_chunk_size", 0) > MIN_READ:
            stream.read_chunk_size = MIN_READ  # the connection's next requests: small reads
        # Safety net: a response sent while a writer was still open (an error between opening
        # it and committing) must not leave the upload locked.
        writer, self._writer = self._writer, None
        if writer is not None and writer.state == "receiving":
            self.uploads.spawn(writer.abort())
        super().on_finish()

    async def commit_body(self) -> dict[str, Any] | None:
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        return await writer.commit()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self._set_tus_headers()
        exc = kwargs.get("exc_info", (None, None, None))[1]
        for name, value in (getattr(exc, "headers", None) or {}).items():
            self.set_header(name, value)
        if status_code == 412:
            self.set_header("Tus-Version", TUS_VERSION)
        super().write_error(status_code, **kwargs)

    def send_options(self) -> None:
        for name, value in options_headers(self.uploads.max_size).items():
            self.set_header(name, value)
        self.set_status(204)
        self.finish()

    def send_empty(self, status: int, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_status(status)
        self.finish()


class UploadCollectionHandler(_TusHandler):
    """``POST`` creates an upload (TUS creation), ``GET`` lists uploads as JSON."""

    _row: dict[str, Any] | None = None

    async def prepare_body(self) -> None:
        if self.request.method == "POST":
            self._row, self._writer = await self.uploads.create(
                self.request.headers, self.upload_url)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.query_int("limit", 100, minimum=1, maximum=1000)
        offset = self.query_int("offset", 0)
        items, total = await self.uploads.list(limit=limit, offset=offset)
        for item in items:
            item["url"] = self.upload_url(item["id"])
        self.set_header("Cache-Control", "no-store")
        self.send_json({"items": items, "total": total})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        row = self._row
        assert row is not None
        headers = {"Location": self.upload_url(row["id"])}
        committed = await self.commit_body()
        if committed is not None:  # creation-with-upload: say how much was accepted
            row = committed
            headers.update(response_headers(row))
        elif row.get("expires"):
            headers.update(response_headers(row))
            del headers["Upload-Offset"]
        self.send_empty(201, headers)

    @web.authenticated
    @authorized
    def options(self) -> None:
        self.send_options()


class UploadHandler(_TusHandler):
    """One upload: ``HEAD`` offset, ``PATCH`` bytes, ``DELETE`` termination, ``GET`` JSON."""

    async def prepare_body(self) -> None:
        if self.request.method == "PATCH":
            upload_id = self.path_kwargs["upload_id"]
            self._writer = await self.uploads.begin_patch(upload_id, self.request.headers)

    @web.authenticated
    @authorized
    async def head(self, upload_id: str) -> None:
        self.send_empty(200, await self.uploads.head(upload_id))

    @web.authenticated
    @authorized
    async def get(self, upload_id: str) -> None:
        record = await self.uploads.record(upload_id)
        record["url"] = self.upload_url(upload_id)
        self.set_header("Cache-Control", "no-store")
        self.send_json(record)

    @web.authenticated
    @authorized
    async def patch(self, upload_id: str) -> None:
        row = await self.commit_body()
        assert row is not None
        self.send_empty(204, response_headers(row))

    @web.authenticated
    @authorized
    async def delete(self, upload_id: str) -> None:
        await self.uploads.terminate(upload_id)
        self.send_empty(204, {})

    @web.authenticated
    @authorized
    def options(self, upload_id: str) -> None:
        self.send_options()


handlers: list[tuple[Any, ...]] = [
    (r"/pirus/api/v1/uploads/?", UploadCollectionHandler),
    # Any segment: a malformed id is the service's JSON 404 (with the TUS headers).
    (r"/pirus/api/v1/uploads/(?P<upload_id>[^/]+)/?", UploadHandler),
]
