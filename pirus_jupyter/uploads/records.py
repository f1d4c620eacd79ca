"""The ``uploads`` table and the upload locks: statuses, rows (decoded), expiry, the public JSON
record and its events; and the rule that one holder at a time changes an upload.

Statuses: ``uploading`` (bytes arrive; a partial upload stays here until all arrived) ->
``complete``; a final upload starts ``concatenating``; ``error`` when finishing failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import Gone, InvalidRequest, NotFound, PayloadTooLarge
from ..events import EventBus
from ..models import UPLOAD_PUBLIC, UploadStatus, public_file
from ..store import Store, now_iso
from .protocol import UPLOAD_ID_RE, Locked, decode_metadata, is_partial

# The statuses as stored (plain strings); their one home is models.UploadStatus.
UPLOADING = UploadStatus.UPLOADING.value
CONCATENATING = UploadStatus.CONCATENATING.value
COMPLETE = UploadStatus.COMPLETE.value
ERROR = UploadStatus.ERROR.value

_TABLE = "uploads"
STARTUP_HOLDER = "start-up check"


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key, empty in (("metadata", {}), ("parts", [])):
        value = row.get(key)
        row[key] = json.loads(value) if isinstance(value, str) else (value or empty)
    return row


class UploadLocks:
    """Who holds each upload right now: a request body, a finish, a concatenation, the start-up
    check or expiry. A second holder is refused with 423."""

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}
        self._startup_done = asyncio.Event()  # set once the start-up check released its locks

    def __contains__(self, upload_id: object) -> bool:
        return upload_id in self._holders

    def take(self, upload_id: str, holder: str) -> None:
        # Checked and set without an await in between: atomic on the event loop.
        if upload_id in self._holders:
            raise Locked(f"upload {upload_id} is busy ({self._holders[upload_id]}); retry later")
        self._holders[upload_id] = holder

    async def take_after_startup(self, upload_id: str, holder: str) -> None:
        """Like :meth:`take`, but a request arriving while the start-up check holds the upload
        waits for it (a fraction of a second) instead of being told 423."""
        if self._holders.get(upload_id) == STARTUP_HOLDER:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._startup_done.wait(), 30)
        self.take(upload_id, holder)

    def hand_over(self, upload_id: str, holder: str) -> None:
        """The current holder passes the lock on without releasing it."""
        self._holders[upload_id] = holder

    def release(self, upload_id: str) -> None:
        self._holders.pop(upload_id, None)

    def startup_done(self) -> None:
        self._startup_done.set()


class UploadRecords:
    """Rows of the ``uploads`` table, decoded, and the events that announce their changes."""

    def __init__(self, store: Store, events: EventBus, expiration: float) -> None:
        self.store = store
        self.events = events
        self.expiration = expiration

    def expiry(self) -> str:
        """When an upload touched now expires."""
        when = datetime.now(timezone.utc) + timedelta(seconds=self.expiration)
        return when.isoformat(timespec="milliseconds")

    async def get(self, upload_id: str, *, allow_expired: bool = False) -> dict[str, Any]:
        """404 unknown, 410 expired (unless ``allow_expired``)."""
        if not UPLOAD_ID_RE.fullmatch(upload_id or ""):
            raise NotFound(f"no upload with id {upload_id!r}")
        row = _decode(await self.store.get(_TABLE, upload_id))
        if not allow_expired and row.get("expires") and row["expires"] < now_iso():
            raise Gone(f"upload {upload_id} expired and is being removed")
        return row

    async def to_reconcile(self) -> list[dict[str, Any]]:
        """What start-up must look at: uploads still receiving bytes, concatenating, or
        partial and finished. Finished uploads (most rows, kept for ever) are not read."""
        rows = await self.store.select(
            _TABLE, "status IN (?, ?) OR (status = ? AND concat = 'partial')",
            [UPLOADING, CONCATENATING, COMPLETE])
        return [_decode(r) for r in rows]

    async def known(self, upload_ids: list[str]) -> set[str]:
        """Which of these ids have a row (by chunks: SQLite caps a statement's parameters)."""
        found: set[str] = set()
        for i in range(0, len(upload_ids), 500):
            chunk = upload_ids[i:i + 500]
            rows = await self.store.select(_TABLE, f"id IN ({','.join('?' * len(chunk))})",
                                           chunk)
            found.update(r["id"] for r in rows)
        return found

    async def expired(self) -> list[dict[str, Any]]:
        rows = await self.store.select(_TABLE, "expires IS NOT NULL AND expires < ?",
                                       [now_iso()])
        return [_decode(r) for r in rows]

    async def concat_length(self, part_ids: list[str], max_size: int) -> int:
        """The length of a final upload joining ``part_ids``: 400 unless each exists, is
        partial and is finished, 413 over ``max_size``."""
        length = 0
        for part_id in part_ids:
            try:
                part = await self.get(part_id)
            except (NotFound, Gone) as e:
                raise InvalidRequest(f"partial upload {part_id} does not exist") from e
            if not is_partial(part):
                raise InvalidRequest(f"upload {part_id} is not a partial upload")
            if part["status"] != COMPLETE:
                raise InvalidRequest(f"partial upload {part_id} is not finished (this server "
                                     "does not offer concatenation-unfinished)")
            length += int(part["length"])
        if length > max_size:
            raise PayloadTooLarge(f"the concatenation ({length} bytes) is over the "
                                  f"{max_size} byte limit (Tus-Max-Size)")
        return length

    async def all_bytes_unfinished(self) -> list[dict[str, Any]]:
        """Non-partial uploads with every byte recorded but not finished: waiting for room."""
        rows = await self.store.select(
            _TABLE, 'status = ? AND length IS NOT NULL AND "offset" = length AND '
            "(concat IS NULL OR concat != 'partial')", [UPLOADING])
        return [_decode(r) for r in rows]

    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first, as public records, with the total count."""
        rows = await self.store.select(_TABLE, order_by="created DESC, id", limit=limit,
                                       offset=offset)
        total = await self.store.count(_TABLE)
        # The page's file records in one query, not one per upload.
        ids = sorted({r["file_id"] for r in rows if r.get("file_id") is not None})
        files = {f["id"]: f for f in await self.store.select(
            "files", f"id IN ({','.join('?' * len(ids))})", ids)} if ids else {}
        return [self._public(_decode(r), files.get(r.get("file_id"))) for r in rows], total

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        return _decode(await self.store.insert(_TABLE, values))

    async def update(self, upload_id: str, values: dict[str, Any]) -> dict[str, Any]:
        return _decode(await self.store.update(_TABLE, upload_id, values))

    async def delete(self, upload_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.store.delete(_TABLE, upload_id)

    async def public(self, row: dict[str, Any]) -> dict[str, Any]:
        """The JSON record of an upload (no host paths)."""
        file = None
        if row.get("file_id") is not None:
            with contextlib.suppress(NotFound):
                file = await self.store.get("files", row["file_id"])
        return self._public(row, file)

    @staticmethod
    def _public(row: dict[str, Any], file_row: dict[str, Any] | None) -> dict[str, Any]:
        file = public_file(file_row) if file_row is not None else None
        concat = None
        if row.get("concat"):
            concat = "partial" if is_partial(row) else "final"
        record = {
            "id": row["id"], "filename": row["filename"], "kind": row["kind"],
            "length": row["length"], "offset": row["offset"], "status": row["status"],
            "created": row["created"], "expires": row["expires"], "concat": concat,
            "parts": row["parts"] or None, "metadata": decode_metadata(row["metadata"]),
            "sha256": row["sha256_state"], "error": row["error"], "file": file,
            "pipeline_id": row["pipeline_id"], "deduplicated": bool(row.get("deduplicated")),
        }
        # In the order, and with exactly the fields, of the one public list.
        return {name: record[name] for name in UPLOAD_PUBLIC}

    async def publish(self, event: str, row: dict[str, Any]) -> None:
        self.events.publish(event, await self.public(row))
