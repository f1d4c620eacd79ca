"""The base handler: Jupyter authentication and authorization, JSON in/out, and the single place
where errors become ``{"error": {"code", "message"}}`` responses.

Request bodies are the client's, so they are bounded before they are read: every handler
streams its body (``stream_request_body``), so ``prepare()`` sees the headers first. A route's
``max_body_bytes`` refuses a larger ``Content-Length`` with a 413 before one byte is read, and a
chunked body past it is dropped as it arrives (413 too). JSON nested deeper than
``MAX_JSON_DEPTH`` is a 400.

A refusal sent before the body was read (a 401/403, a 413, a TUS 409) would otherwise close
the connection while the client is still sending, and the client's kernel then resets the
connection: the client loses the answer. Such an answer carries ``Connection: close``; the
server then shuts down its sending side and keeps reading (and dropping) what the client still
sends, for at most ``LINGER_SECONDS``, before closing ("lingering close", as nginx does).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.ioloop import IOLoop

from ..errors import InvalidRequest, NotFound, PayloadTooLarge, PirusError

if TYPE_CHECKING:
    from ..services import Services

API_PREFIX = "pirus/api/v1"
MAX_ID = 2**63 - 1  # SQLite's largest integer

# A path id: routes match any segment (``[^/]+``) so that a malformed one is this API's JSON
# 404, not Jupyter's HTML page; the handler parses it with ``path_id``.
ID_SEGMENT = r"[^/]+"

MAX_JSON_BODY = 8 * 1024 * 1024  # a JSON request (a run's config and inputs, a package path)
MAX_JSON_DEPTH = 64  # arrays and objects inside each other; a form's config needs far fewer
LINGER_SECONDS = 10.0  # reading a refused request's body before the connection is closed

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 410: "gone", 412: "precondition_failed",
    413: "payload_too_large", 415: "unsupported_media_type",
}


def no_json_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: stored, they would make every
    # later answer that carries them invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """A JSON document from a client, or a 400: not JSON, NaN/Infinity, or nested deeper
    than ``MAX_JSON_DEPTH`` (deeper still would be a RecursionError, anywhere later on)."""
    try:
        value = json.loads(raw, parse_constant=no_json_constant)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
                             ) from None
    except ValueError as e:
        raise InvalidRequest(f"{what} is not valid JSON: {e}") from e
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for node in level if isinstance(node, dict | list)
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return value
    if any(isinstance(node, dict | list) for node in level):
        raise InvalidRequest(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return value


def _has_body(request: Any) -> bool:
    length = request.headers.get("Content-Length", "0").strip()
    return length not in ("", "0") or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


def _close_gracefully_later(connection: Any) -> None:
    """Instead of closing at once once the answer is sent (tornado's way when the body is
    unread), shut down sending and let tornado drain the body; close when the client does,
    or after ``LINGER_SECONDS``."""
    stream = getattr(connection, "stream", None)
    close_now = getattr(connection, "close", None)
    if stream is None or close_now is None or getattr(connection, "_pirus_lingers", False):
        return
    connection._pirus_lingers = True
    # Read whatever length the client announced: the time bound below is what limits it.
    connection.set_max_body_size(2**62)

    def linger() -> None:
        connection.close = close_now  # once: the next close is the real one
        try:
            stream.socket.shutdown(socket.SHUT_WR)
        except (OSError, AttributeError):
            close_now()
            return
        IOLoop.current().call_later(LINGER_SECONDS, close_now)

    connection.close = linger


def path_id(raw: str, what: str) -> int:
    """A database id from a URL segment; anything else (``-1``, ``1.0``, ``x``, past SQLite's
    largest integer) is no such resource."""
    if raw.isascii() and raw.isdigit() and int(raw) <= MAX_ID:
        return int(raw)
    raise NotFound(f"no {what} {raw!r}")


def json_id(value: Any, field: str) -> Any:
    """An id from a JSON body: JSON Schema's integers include ``12.0``, so an integral number is
    that integer; one outside 0..2^63-1 is refused (SQLite could not even look it up). Anything
    else is returned as it is, for the service to refuse with its own message."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_ID:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_ID}")
    return value


def allowed_methods(handler: type[web.RequestHandler]) -> str:
    """The ``Allow`` header of a 405 (RFC 9110): the methods the handler class implements."""
    return ", ".join(m for m in handler.SUPPORTED_METHODS
                     if getattr(handler, m.lower(), None) is not
                     getattr(web.RequestHandler, m.lower(), None))


@web.stream_request_body
class PirusHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "pirus"
    # Largest body this route reads; None: the handler streams its own (TUS uploads).
    max_body_bytes: int | None = MAX_JSON_BODY
    _body: bytearray | None = None
    _body_too_large = False

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await super().prepare(*args, **kwargs)
        if self._finished or self.max_body_bytes is None:
            return
        declared = self.request.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {declared} bytes: at most {self.max_body_bytes} here")
        # A chunked body past the cap is dropped as it arrives (data_received); past the cap
        # plus what a lingering close would read anyway, tornado cuts the connection.
        self.request.connection.set_max_body_size(self.max_body_bytes + 64 * 1024 * 1024)
        self._body = bytearray()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._body is None or self._body_too_large:
            return None
        self._body += chunk
        if self.max_body_bytes is not None and len(self._body) > self.max_body_bytes:
            self._body_too_large, self._body = True, bytearray()
        return None

    def body_bytes(self) -> bytes:
        """The request body, read whole (it is at most ``max_body_bytes``)."""
        if self._body_too_large:
            raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
        return bytes(self._body or b"")

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        if not self._finished and not getattr(self.request.connection, "_read_finished", True):
            # Answered before the body was read (even an empty one, when prepare() refused):
            # tornado then closes the connection, so say it, or a client would send its next
            # request on a connection about to close. A body being sent is drained first: see
            # the module's docstring.
            self.set_header("Connection", "close")
            if _has_body(self.request):
                _close_gracefully_later(self.request.connection)
        return super().finish(*args, **kwargs)

    @property
    def services(self) -> Services:
        return self.settings["pirus"]

    def api_url(self, *parts: Any) -> str:
        from jupyter_server.utils import url_path_join

        return url_path_join(self.base_url, API_PREFIX, *[str(p) for p in parts])

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 saying why not."""
        raw = self.body_bytes()
        if not raw:
            return {}
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        return body

    def query_int(self, name: str, default: int | None, minimum: int = 0,
                  maximum: int = MAX_ID) -> int | None:
        """An integer query parameter within bounds (400 otherwise); ``default`` when absent
        or empty."""
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        if not raw.isascii() or not raw.lstrip("-").isdigit():
            raise InvalidRequest(f"query parameter {name!r} must be an integer")
        value = int(raw)
        if not minimum <= value <= maximum:
            raise InvalidRequest(
                f"query parameter {name!r} must be between {minimum} and {maximum}")
        return value

    def send_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    # -- error mapping: the one place -------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            self.set_header("Allow", allowed_methods(type(self)))
        if isinstance(exc, PirusError):
            self.set_status(exc.status)
            body = exc.to_json()
        else:
            message = self._reason
            if isinstance(exc, web.HTTPError) and exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            elif status_code >= 500:
                message = "internal server error"
            body = {"error": {"code": _HTTP_CODES.get(status_code, "error"), "message": message}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, PirusError) and value.status < 500:
            self.log.debug("pirus: %s %s -> %s %s", self.request.method, self.request.uri,
                           value.status, value.message)
            return
        super().log_exception(typ, value, tb)
