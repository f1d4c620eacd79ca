"""The base handler: Jupyter authentication and authorization, JSON in/out, and the single place
where errors become ``{"error": {"code", "message"}}`` responses."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..errors import InvalidRequest, NotFound, PirusError

if TYPE_CHECKING:
    from ..services import Services

API_PREFIX = "pirus/api/v1"
MAX_ID = 2**63 - 1  # SQLite's largest integer

# A path id: routes match any segment (``[^/]+``) so that a malformed one is this API's JSON
# 404, not Jupyter's HTML page; the handler parses it with ``path_id``.
ID_SEGMENT = r"[^/]+"

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 410: "gone", 412: "precondition_failed",
    413: "payload_too_large", 415: "unsupported_media_type",
}


def no_json_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: stored, they would make every
    # later answer that carries them invalid JSON.
    raise ValueError(f"{name} is not a JSON value")


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


class PirusHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "pirus"

    @property
    def services(self) -> Services:
        return self.settings["pirus"]

    def api_url(self, *parts: Any) -> str:
        from jupyter_server.utils import url_path_join

        return url_path_join(self.base_url, API_PREFIX, *[str(p) for p in parts])

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 saying why not."""
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body, parse_constant=no_json_constant)
        except ValueError as e:
            raise InvalidRequest(f"request body is not valid JSON: {e}") from e
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
