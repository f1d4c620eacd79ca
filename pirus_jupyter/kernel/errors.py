"""The client's two errors: a request the server refused (:class:`PirusAPIError`, built from
the server's ``{"error": {"code", "message", "details"}}`` body by :func:`api_error`) and no
server reachable (:class:`PirusConnectionError`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

__all__ = ["PirusAPIError", "PirusConnectionError", "api_error"]


class PirusAPIError(Exception):
    """The server refused a request. ``status`` is the HTTP status, ``code`` the server's
    machine-readable code (``not_found``, ``invalid_config``, ``illegal_transition``...),
    ``message`` the server's own message and ``details`` its details (e.g. the per-field
    errors of an invalid config)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status}, {self.code})"

    def __repr__(self) -> str:
        return f"PirusAPIError({self.status}, {self.code!r}, {self.message!r})"


class PirusConnectionError(ConnectionError):
    """No Pirus server could be reached; the message lists what was tried."""


def api_error(response: requests.Response) -> PirusAPIError:
    """The error for a refused request: the server's code, message and details when its body
    has them, else ones derived from the HTTP status."""
    code = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            409: "conflict"}.get(response.status_code, "error")
    message = (response.reason or "").strip() or f"HTTP {response.status_code}"
    details = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details")
    elif isinstance(body, Mapping) and body.get("message"):
        message = str(body["message"])
    if response.status_code in (401, 403) and code in ("unauthorized", "forbidden"):
        message += " (check the token: PIRUS_SERVER_TOKEN or connect(url, token))"
    return PirusAPIError(response.status_code, code, message, details)
