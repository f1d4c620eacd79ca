"""The upload service behind ``{base_url}pirus/api/v1/uploads``: creation, status, finishing,
expiry and concatenation of TUS uploads. The wire format is :mod:`.protocol`, the bytes on disk
:mod:`.parts`, one request body :mod:`.writer`, the table and locks :mod:`.records`, and what
finished bytes become :mod:`.finish`.

Each upload is a row in the ``uploads`` table plus a part file. Every change to an upload happens
under its lock (one holder at a time: a request body, a finish, a concatenation, the start-up
check, expiry); a second request meanwhile is told 423.

Crash safety: the recorded offset is never ahead of the bytes on disk (see :mod:`.writer`); at
start-up unfinished part files are cut to it (the client sends the rest again). No room to place
a finished file loses nothing either (see :mod:`.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PirusError,
)
from ..events import EventBus
from ..files import FileService, safe_filename
from ..store import Store, now_iso
from .finish import UploadFinisher
from .parts import PartStore
from .protocol import (
    Creation,
    InsufficientStorage,
    Locked,
    head_headers,
    is_final,
    is_partial,
    parse_creation,
    parse_patch,
    response_headers,
    storage_error,
    with_headers,
)
from .records import (
    COMPLETE,
    CONCATENATING,
    ERROR,
    STARTUP_HOLDER,
    UPLOADING,
    UploadLocks,
    UploadRecords,
)
from .writer import ChunkWriter

if TYPE_CHECKING:
    from ..pipelines import PipelineService


class UploadService:
    """TUS uploads: creation, chunks, expiry, concatenation and what finished uploads become.

    Also what a :class:`ChunkWriter` reports to (:class:`~.writer.UploadOwner`).
    """

    def __init__(self, store: Store, events: EventBus, files: FileService,
                 pipelines: PipelineService, *, parts_dir: Path, uploads_dir: Path,
                 max_size: int, expiration: float, log: logging.Logger) -> None:
        self.events = events
        self.files = files
        self.pipelines = pipelines
        self.parts = PartStore(parts_dir)
        self.parts_dir = self.parts.parts_dir
        self.uploads_dir = Path(uploads_dir)
        self.max_size = int(max_size)
        self.records = UploadRecords(store, events, float(expiration))
        self.log = log
        # Expired uploads are removed at most a quarter of their lifetime late (and at least
        # every minute), so a test with a 1 s lifetime sees them go within a second or two.
        self.cleanup_interval = max(0.25, min(60.0, self.expiration / 4))
        self.locks = UploadLocks()
        self.finisher = UploadFinisher(store, self.records, self.parts, files, pipelines,
                                       uploads_dir=self.uploads_dir, log=log)
        self._creating: set[str] = set()  # ids whose part file exists before their row
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def expiration(self) -> float:
        """Seconds an unfinished upload lives after its last change."""
        return self.records.expiration

    @expiration.setter
    def expiration(self, seconds: float) -> None:
        self.records.expiration = float(seconds)

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Reconcile part files with the database, then start the periodic expiry cleanup."""
        # A short-lived server (tests) may be stopped before, or while, this runs.
        if self._stopped:
            return
        try:
            await self.reconcile()
        except Exception:
            if self._stopped:
                return
            raise
        if not self._stopped:
            self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop())

    async def stop(self) -> None:
        self._stopped = True
        tasks = [*self._tasks, *([self._cleanup_task] if self._cleanup_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cleanup_task = None
        self.parts.shutdown()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_idle(self) -> None:
        """Wait for background work (concatenations, finishing after restart); for tests."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def reconcile(self) -> None:
        """Make every unfinished upload's part file match its recorded offset.

        Bytes after the recorded offset were never acknowledged (the server stopped before
        fsync + record), so they are cut off and the client sends them again. An upload whose
        bytes were all recorded but that was not finished yet is finished now; an interrupted
        concatenation starts over. Part files without an upload row are deleted.

        Requests may already arrive while this runs: each upload is checked under its lock and
        re-read there, and uploads being created are left alone.
        """
        try:
            # Listed before the rows are read: a part file created after this is never an orphan.
            paths = await self.parts.listing()
            for row in await self.records.to_reconcile():
                if row["status"] == CONCATENATING:
                    self._start_concatenation(row)
                elif row["id"] not in self.locks:  # else a request holds it: consistent
                    await self._reconcile_one(row["id"])
            known = await self.records.known([path.name for path in paths])
            for path in paths:
                if path.name not in known and path.name not in self._creating:
                    await self.parts.delete_orphan(path)
        finally:
            self.locks.startup_done()

    async def _reconcile_one(self, upload_id: str) -> None:
        self.locks.take(upload_id, STARTUP_HOLDER)
        handed_over = False
        try:
            try:
                # Re-read under the lock.
                row = await self.records.get(upload_id, allow_expired=True)
            except NotFound:
                return
            if row["status"] != UPLOADING and not (row["status"] == COMPLETE and is_partial(row)):
                return
            size = await self.parts.size(upload_id)
            offset = row["offset"]
            if size is None or size < offset:
                # Should not happen (offsets are recorded after fsync): never claim lost bytes.
                self.log.warning("pirus: upload %s has %s bytes on disk, %s recorded",
                                 upload_id, size, offset)
                await self.parts.truncate(upload_id, size or 0)
                row = await self.records.update(upload_id, {"offset": size or 0,
                                                            "status": UPLOADING})
                await self.finisher.report_offset(row)
            elif size > offset:
                self.log.info("pirus: upload %s: dropping %s unacknowledged bytes", upload_id,
                              size - offset)
                await self.parts.truncate(upload_id, offset)
            if row["status"] == UPLOADING and row["length"] is not None and (
                    row["offset"] == row["length"]):
                # All bytes recorded, but the server stopped before finishing the upload.
                self.locks.hand_over(upload_id, "finishing")
                self.spawn(self._finish_locked(row))
                handed_over = True
        finally:
            if not handed_over:
                self.release(upload_id)

    async def _finish_locked(self, row: dict[str, Any]) -> None:
        try:
            with contextlib.suppress(NotFound):  # re-read under the lock
                row = await self.records.get(row["id"], allow_expired=True)
                await self.finisher.finish_if_complete(row)
        finally:
            self.release(row["id"])

    def retry_finish(self, row: dict[str, Any]) -> None:
        """Finish, in the background, an upload that had found no room (unless it is held)."""
        if self.finisher.is_waiting(row) and row["id"] not in self.locks:
            self.locks.take(row["id"], "finishing")
            self.spawn(self._finish_locked(row))

    # -- small helpers ----------------------------------------------------------------
    def part_path(self, upload_id: str) -> Path:
        return self.parts.path(upload_id)

    def release(self, upload_id: str) -> None:
        """Unlock an upload (also the end of a :class:`ChunkWriter`)."""
        self.locks.release(upload_id)

    async def finish_if_complete(self, row: dict[str, Any]) -> dict[str, Any]:
        """Finish the upload if all its bytes are recorded; the caller (a request) holds its
        lock. 507 if there was no room to place the file: nothing is lost, see retry_finish."""
        row = await self.finisher.finish_if_complete(row)
        if self.finisher.is_waiting(row):
            raise with_headers(InsufficientStorage(row["error"]), response_headers(row))
        return row

    def is_busy(self, upload_id: str) -> bool:
        """Whether a request or background job holds the upload right now."""
        return upload_id in self.locks

    # -- creation -------------------------------------------------------------------------
    async def create(self, headers: Mapping[str, str], url_for: Callable[[str], str]
                     ) -> tuple[dict[str, Any], ChunkWriter | None]:
        """A creation POST: returns the new upload row and, for creation-with-upload, the
        writer that receives the request body (``None`` otherwise)."""
        request = parse_creation(headers, self.max_size)
        upload_id = uuid.uuid4().hex
        filename = safe_filename(request.values.get("filename") or request.values.get("name")
                                 or "", default=f"upload-{upload_id[:8]}")
        if request.final:
            row = await self._create_final(upload_id, request, filename)
            return row, None

        length = request.length
        self._creating.add(upload_id)
        try:
            try:
                await self.parts.truncate(upload_id, 0)
            except OSError as e:  # no room even for an empty part file
                raise storage_error(e) from e
            row = await self.records.insert({
                "id": upload_id, "kind": request.kind, "filename": filename,
                "metadata": request.metadata, "length": length, "offset": 0,
                "status": UPLOADING, "created": now_iso(), "expires": self.records.expiry(),
                "concat": "partial" if request.partial else None,
            })
        finally:
            self._creating.discard(upload_id)
        if request.kind == "pipeline" and not request.partial:
            try:
                pipeline = await self.pipelines.create_uploading(filename, length, upload_id)
            except BaseException:
                await self._remove(row, None)
                raise
            row = await self.records.update(upload_id, {"pipeline_id": pipeline["id"]})
        await self.records.publish("upload.created", row)
        self.log.info("pirus: upload %s created (%s, %s, %s bytes)", upload_id, request.kind,
                      filename, length if length is not None else "deferred")

        if request.body:
            self.locks.take(upload_id, "creation-with-upload")
            writer = ChunkWriter(self, self.parts, row, start=0, limit=request.room,
                                 checksum=request.checksum, new_length=None,
                                 error_headers={"Location": url_for(upload_id)})
            try:
                await writer.open()
            except BaseException:
                self.release(upload_id)
                raise
            return row, writer
        if length == 0:
            self.locks.take(upload_id, "finishing")
            try:
                row = await self.finish_if_complete(row)
            finally:
                self.release(upload_id)
        return row, None

    # -- HEAD / PATCH / DELETE ------------------------------------------------------------
    async def head(self, upload_id: str) -> dict[str, str]:
        """The headers of a HEAD response (a client checking after a 507 retries the finish)."""
        row = await self.records.get(upload_id)
        self.retry_finish(row)
        return head_headers(row)

    async def begin_patch(self, upload_id: str, headers: Mapping[str, str]) -> ChunkWriter:
        """Validate a PATCH before its body is read and take the upload's lock.

        404/410 unknown or expired, 403 final upload, 415 content type, 400 bad headers,
        423 another request holds the upload, 409 offset mismatch, 413 body past the length.
        """
        row = await self.records.get(upload_id)
        if is_final(row):
            raise Forbidden("a final (concatenated) upload cannot be patched")
        request = parse_patch(headers)
        offset, new_length = request.offset, request.new_length

        await self.locks.take_after_startup(upload_id, "PATCH")
        try:
            # Read again under the lock: offsets move only there.
            row = await self.records.get(upload_id)
            current = {"Upload-Offset": str(row["offset"])}
            if offset != row["offset"]:
                raise with_headers(Conflict(
                    f"Upload-Offset {offset} does not match the upload's offset {row['offset']}",
                    code="offset_mismatch"), current)
            if row["status"] == ERROR:
                raise with_headers(Conflict(f"upload failed: {row['error']}"), current)
            if new_length is not None:
                if row["length"] is not None and new_length != row["length"]:
                    raise InvalidRequest(f"Upload-Length is already {row['length']}: it cannot "
                                         "change")
                if new_length > self.max_size:
                    raise PayloadTooLarge(f"Upload-Length {new_length} is over the "
                                          f"{self.max_size} byte limit (Tus-Max-Size)")
                if new_length < offset:
                    raise InvalidRequest(f"Upload-Length {new_length} is below the offset "
                                         f"{offset}")
            length = row["length"] if row["length"] is not None else new_length
            limit = (length if length is not None else self.max_size) - offset
            if row["status"] != UPLOADING:
                limit = 0  # complete: only an empty PATCH (a no-op) is acceptable
            if request.content_length is not None and request.content_length > limit:
                raise PayloadTooLarge(f"the body ({request.content_length} bytes) goes past "
                                      f"the end of the upload ({limit} bytes left)")
            accepting = row["status"] == UPLOADING
            writer = ChunkWriter(self, self.parts, row, start=offset, limit=limit,
                                 checksum=request.checksum,
                                 new_length=new_length if row["length"] is None else None,
                                 accepting=accepting)
            if accepting:
                await writer.open()
            return writer
        except BaseException:
            self.release(upload_id)
            raise

    async def record_offset(self, upload_id: str, offset: int, new_length: int | None
                            ) -> dict[str, Any]:
        """A writer made the bytes up to ``offset`` durable (see :class:`UploadOwner`)."""
        values: dict[str, Any] = {"offset": offset, "expires": self.records.expiry()}
        if new_length is not None:
            values["length"] = new_length
        row = await self.records.update(upload_id, values)
        await self.finisher.report_offset(row)
        await self.records.publish("upload.updated", row)
        return row

    async def terminate(self, upload_id: str) -> None:
        """DELETE: remove an upload (a finished input's file stays, as a Pirus file)."""
        row = await self.records.get(upload_id, allow_expired=True)
        await self.locks.take_after_startup(upload_id, "DELETE")
        try:
            await self._remove(row, "the upload was terminated")
        finally:
            self.release(upload_id)

    async def _remove(self, row: dict[str, Any], reason: str | None) -> None:
        upload_id = row["id"]
        if reason and row["status"] in (UPLOADING, CONCATENATING):
            await self.finisher.tell_pipeline(row, self.pipelines.fail, reason)
        await self.records.delete(upload_id)
        await self.parts.delete(upload_id)
        self.events.publish("upload.deleted", {"id": upload_id})

    # -- reading ----------------------------------------------------------------------
    async def record(self, upload_id: str) -> dict[str, Any]:
        return await self.records.public(await self.records.get(upload_id))

    async def list(self, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return await self.records.page(limit, offset)

    async def install_pipeline(self, upload_id: str) -> tuple[dict[str, Any], bool]:
        """``POST /pipelines {"upload_id"}``: install a finished input upload as a pipeline.
        The file stays owned by its Pirus file record: the install copies it."""
        row = await self.records.get(upload_id)
        if row["status"] != COMPLETE or is_partial(row):
            raise Conflict(f"upload {upload_id} is not finished ({row['status']})")
        if row["kind"] == "pipeline":
            raise Conflict(f"upload {upload_id} was already installed as pipeline "
                           f"{row['pipeline_id']}")
        if row["file_id"] is None:
            raise NotFound(f"upload {upload_id} has no file")
        return await self.pipelines.install_from_path(await self.files.content_path(row["file_id"]))

    # -- concatenation ----------------------------------------------------------------
    async def _create_final(self, upload_id: str, request: Creation, filename: str
                            ) -> dict[str, Any]:
        part_ids, kind = request.part_ids, request.kind
        # Checked before any byte is written (and each part is named once: see protocol).
        length = await self.records.concat_length(part_ids, self.max_size)
        locked: list[str] = []
        try:
            for part_id in dict.fromkeys(part_ids):
                self.locks.take(part_id, "concatenation")
                locked.append(part_id)
            self._creating.add(upload_id)
            try:
                await self.parts.truncate(upload_id, 0)
                row = await self.records.insert({
                    "id": upload_id, "kind": kind, "filename": filename,
                    "metadata": request.metadata, "length": length, "offset": 0,
                    "status": CONCATENATING, "created": now_iso(), "expires": None,
                    "concat": request.concat, "parts": part_ids,
                })
            finally:
                self._creating.discard(upload_id)
            if kind == "pipeline":
                pipeline = await self.pipelines.create_uploading(filename, length, upload_id)
                row = await self.records.update(upload_id, {"pipeline_id": pipeline["id"]})
        except BaseException:
            for part_id in locked:
                self.release(part_id)
            raise
        await self.records.publish("upload.created", row)
        self.locks.take(upload_id, "concatenation")
        self.spawn(self._concatenate(row))
        return row

    def _start_concatenation(self, row: dict[str, Any]) -> None:
        """Restart an interrupted concatenation (at start-up)."""
        try:
            for part_id in [*dict.fromkeys(row["parts"]), row["id"]]:
                self.locks.take(part_id, "concatenation")
        except Locked:
            return
        self.spawn(self._concatenate(row))

    async def _concatenate(self, row: dict[str, Any]) -> None:
        upload_id = row["id"]
        part_ids = list(dict.fromkeys(row["parts"]))
        try:
            for part_id in row["parts"]:
                part = await self.records.get(part_id, allow_expired=True)
                if part["status"] != COMPLETE:
                    raise InvalidRequest(f"partial upload {part_id} is not finished")
            await self.parts.concatenate(row["parts"], upload_id, row["length"])
            row = await self.records.update(upload_id, {"offset": row["length"],
                                                        "status": UPLOADING})
            row = await self.finisher.finish_if_complete(row)
            # The partial uploads have served their purpose (the protocol lets the server drop
            # them): they would only hold disk space until they expire.
            if row["status"] == COMPLETE:
                for part_id in part_ids:
                    with contextlib.suppress(NotFound):
                        part = await self.records.get(part_id, allow_expired=True)
                        await self._remove(part, None)
        except asyncio.CancelledError:
            raise
        except (PirusError, OSError) as e:
            with contextlib.suppress(NotFound):
                row = await self.records.get(upload_id, allow_expired=True)
                await self.finisher.fail(row, f"concatenation failed: {e}")
        finally:
            for part_id in [*part_ids, upload_id]:
                self.release(part_id)

    # -- expiry -----------------------------------------------------------------------
    async def cleanup_expired(self) -> int:
        """Remove uploads past their expiry; returns how many were removed."""
        removed = 0
        for row in await self.records.expired():
            upload_id = row["id"]
            if upload_id in self.locks:
                continue  # being written right now: its expiry is renewed when that ends
            self.locks.take(upload_id, "expiry")
            try:
                await self._remove(row, "the upload expired")
                removed += 1
                self.log.info("pirus: upload %s expired and was removed", upload_id)
            finally:
                self.release(upload_id)
        return removed

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                await self.cleanup_expired()
                for row in await self.records.all_bytes_unfinished():
                    self.retry_finish(row)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("pirus: upload expiry cleanup failed")
