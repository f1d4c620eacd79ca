"""Domain errors, each carrying its HTTP status and a stable machine-readable code.

Services raise these; the base handler maps them to ``{"error": {"code", "message"}}`` in one
place, so no handler needs its own try/except.
"""

from __future__ import annotations

from typing import Any


class PirusError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidRequest(PirusError):
    status = 400
    code = "invalid_request"


class UnknownMember(InvalidRequest):
    """A run's ``target`` names no member of the LXD cluster (or LXD is not clustered)."""

    code = "unknown_member"


class Forbidden(PirusError):
    status = 403
    code = "forbidden"


class NotFound(PirusError):
    status = 404
    code = "not_found"


class Conflict(PirusError):
    """The resource exists but its state forbids the operation (e.g. an illegal run move)."""

    status = 409
    code = "conflict"


class Gone(PirusError):
    status = 410
    code = "gone"


class PayloadTooLarge(PirusError):
    status = 413
    code = "payload_too_large"


class DatabaseFull(PirusError):
    """The database's disk is full (SQLITE_FULL): the write was rolled back, reads still
    work, and the same request succeeds once space is freed. The upload store's own full disk
    is ``uploads.protocol.InsufficientStorage``, with the same code."""

    status = 507
    code = "insufficient_storage"


class PackageStoreFull(PirusError):
    """No room to store a package being installed: nothing was recorded, and the same request
    succeeds once space is freed."""

    status = 507
    code = "insufficient_storage"


class UnsupportedMediaType(PirusError):
    status = 415
    code = "unsupported_media_type"


class BackendError(PirusError):
    """LXD refused or failed; the message says what LXD said."""

    status = 502
    code = "backend_error"


class BackendUnavailable(BackendError):
    """LXD cannot be reached at all (daemon stopped, socket gone): usually transient."""

    status = 503
    code = "backend_unavailable"


class MemberUnavailable(BackendUnavailable):
    """One LXD cluster member cannot be reached (lost, restarting, not yet marked offline):
    the rest of the cluster works, so the work can go to another member."""

    code = "member_unavailable"

    def __init__(self, message: str, *, member: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.member = member


class InvalidPackage(PirusError):
    """A pipeline package is malformed or unsafe."""

    status = 400
    code = "invalid_package"


class RuleBroken(PirusError):
    """A pipeline broke a rule of its run folder (a log or state file replaced by a link, a
    FIFO, a folder...). Never an HTTP answer: the run ends in ERROR with this message."""

    code = "rule_broken"
