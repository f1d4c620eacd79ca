"""The base handler: Jupyter authentication and authorization, JSON in/out, and the single place
where errors become ``{"error": {"code", "message"}}`` responses."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..errors import InvalidRequest, PirusError

if TYPE_CHECKING:
    from ..services import Services

API_PREFIX = "pirus/api/v1"
MAX_ID = 2**63 - 1  # SQLite's largest integer

_HTTP_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 410: "gone", 412: "precondition_failed",
    413: "payload_too_large", 415: "unsupported_media_type",
}


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
            body = json.loads(self.request.body)
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
