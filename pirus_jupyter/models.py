"""The records' contract in Python: statuses, the run and upload state machines, and the one
list of public fields per record (pipeline, run, file, upload).

pirus_jupyter/openapi.yaml is the source of the public contract: tests/test_contract.py fails
when the enums and field lists here differ from its schemas, and the panel's TypeScript types are
generated from it (scripts/openapi_to_ts.py). The server, the kernel client and the CLI import
what they need from here rather than keeping their own copies.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from .errors import Conflict


class PipelineStatus(str, Enum):
    UPLOADING = "UPLOADING"
    PAUSE = "PAUSE"
    ERROR = "ERROR"
    INSTALLING = "INSTALLING"
    READY = "READY"


class RunStatus(str, Enum):
    WAITING = "WAITING"
    PAUSE = "PAUSE"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    FINISHING = "FINISHING"
    ERROR = "ERROR"
    DONE = "DONE"
    CANCELED = "CANCELED"


class UploadStatus(str, Enum):
    UPLOADING = "uploading"
    CONCATENATING = "concatenating"
    COMPLETE = "complete"
    ERROR = "error"


S = RunStatus

# The one table of allowed run moves. Anything not listed is refused with a 409.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # INITIALIZING -> WAITING: a server stopped mid-initialisation re-queues the run.
    S.WAITING: frozenset({S.INITIALIZING, S.CANCELED, S.ERROR}),
    S.INITIALIZING: frozenset({S.RUNNING, S.WAITING, S.CANCELED, S.ERROR}),
    # RUNNING/PAUSE/FINISHING -> WAITING: the cluster member holding the run was lost and
    # requeue_on_member_loss is set.
    S.RUNNING: frozenset({S.PAUSE, S.FINISHING, S.CANCELED, S.ERROR, S.WAITING}),
    S.PAUSE: frozenset({S.RUNNING, S.CANCELED, S.ERROR, S.WAITING}),
    # FINISHING -> CANCELED: hashing large outputs can take minutes; a cancel stops it.
    S.FINISHING: frozenset({S.DONE, S.ERROR, S.WAITING, S.CANCELED}),
    S.DONE: frozenset(),
    S.ERROR: frozenset(),
    S.CANCELED: frozenset(),
}

FINAL_RUN_STATUSES = frozenset(s for s, moves in RUN_TRANSITIONS.items() if not moves)
# Runs holding a container (or about to): they count against max parallel runs.
ACTIVE_RUN_STATUSES = frozenset({S.INITIALIZING, S.RUNNING, S.PAUSE, S.FINISHING})


# Status names as plain strings, in the order of openapi.yaml (CLI choices, query checks).
RUN_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
PIPELINE_STATUSES: tuple[str, ...] = tuple(s.value for s in PipelineStatus)

U = UploadStatus

# The moves an upload makes. A new upload starts UPLOADING, or CONCATENATING when it is the
# final upload of a concatenation.
UPLOAD_TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    # -> ERROR: finishing failed (bad checksum, invalid package...).
    U.UPLOADING: frozenset({U.COMPLETE, U.ERROR}),
    # -> UPLOADING: the parts are joined; the upload then finishes like any other.
    U.CONCATENATING: frozenset({U.UPLOADING, U.ERROR}),
    # -> UPLOADING: a complete partial upload whose part file came back shorter after a crash
    # is reopened at the bytes on disk.
    U.COMPLETE: frozenset({U.UPLOADING}),
    U.ERROR: frozenset(),
}


def check_run_move(current: RunStatus | str, target: RunStatus | str) -> None:
    """Raise Conflict unless ``current -> target`` is in the table."""
    current, target = RunStatus(current), RunStatus(target)
    if target not in RUN_TRANSITIONS[current]:
        raise Conflict(
            f"a run in {current.value} cannot move to {target.value}", code="illegal_transition"
        )


def can_move(current: RunStatus | str, target: RunStatus | str) -> bool:
    return RunStatus(target) in RUN_TRANSITIONS[RunStatus(current)]


# Public fields: the only ones that ever leave the server. Everything else in a row is internal
# (host paths, LXD aliases, tokens).
PIPELINE_PUBLIC = (
    "id", "name", "description", "version", "pirus_api", "license", "developers", "size",
    "upload_offset", "status", "error", "created", "documents", "limits", "fingerprint",
    "provenance", "has_icon",
)
RUN_PUBLIC = (
    "id", "pipeline_id", "pipeline_name", "pipeline_version", "pipeline_fingerprint", "name",
    "config", "inputs", "outputs", "start", "end", "status",
    "progress", "exit_code", "error", "created", "metrics", "location", "target", "origin",
    "reused_from", "reuse_miss", "paused_seconds", "paused_since",
)
# The columns a run's public record is made of (paused_* come from its timings).
RUN_LIST_COLUMNS = (*(f for f in RUN_PUBLIC if not f.startswith("paused_")), "timings")
FILE_PUBLIC = ("id", "name", "path", "size", "sha256", "source", "run_id", "created")
# An upload as events send it (openapi UploadFields); GET /uploads adds its ``url``.
UPLOAD_PUBLIC = (
    "id", "filename", "kind", "length", "offset", "status", "created", "expires", "concat",
    "parts", "metadata", "sha256", "error", "file", "pipeline_id", "deduplicated",
)

JSON_FIELDS = frozenset(
    {"developers", "config", "inputs", "outputs", "progress", "metrics", "documents", "limits",
     "manifest", "timings", "attempts", "log_identity", "run_limits", "mounts", "task",
     "reuse_basis", "reuse_miss"}
)


def public(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {key: row.get(key) for key in fields}


def public_pipeline(row: dict[str, Any]) -> dict[str, Any]:
    # Where the image came from lives in the installed manifest, not in a column of its own;
    # has_icon spares clients a request that can only 404 (the icon's path stays internal).
    manifest = row.get("manifest")
    provenance = manifest.get("provenance") if isinstance(manifest, dict) else None
    return {**public({**row, "has_icon": bool(row.get("icon_file"))}, PIPELINE_PUBLIC),
            "provenance": provenance or {}}


def paused_time(timings: list[list[str]] | None) -> tuple[float, str | None]:
    """Seconds spent in PAUSE before the current status, and when the current PAUSE began
    (None unless paused): clients stop a run's clock while it is paused."""
    total, since = 0.0, None
    for status, at in timings or []:
        if since is not None:
            total += max(0.0, (datetime.fromisoformat(at)
                               - datetime.fromisoformat(since)).total_seconds())
            since = None
        if status == RunStatus.PAUSE.value:
            since = at
    return round(total, 3), since


def public_run(row: dict[str, Any]) -> dict[str, Any]:
    seconds, since = paused_time(row.get("timings"))
    return public({**row, "paused_seconds": seconds, "paused_since": since}, RUN_PUBLIC)


def public_file(row: dict[str, Any]) -> dict[str, Any]:
    return public(row, FILE_PUBLIC)
