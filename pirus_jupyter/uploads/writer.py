"""Streaming one request body (a PATCH, or a creation-with-upload POST) into a part file.

The event loop only collects up to :data:`WRITE_BUFFER` bytes and queues them, without waiting,
to the writer's own thread, which writes them in order (starting their writeback to disk at
once) and feeds the upload's running SHA-256, so completion needs no second read of the file.
Up to :data:`MAX_IN_FLIGHT` bytes may wait for that thread: receiving goes on while the disk
and the hash work, and only a disk slower than the network holds the client back (TCP
back-pressure). The loop is woken by the thread only when it waits for it.

Crash safety: the recorded offset is never ahead of the bytes on disk. Bytes are written, then
``fsync``-ed (at the end of the body, and every :data:`CHECKPOINT_BYTES` of a long body sent
without ``Upload-Checksum``), and only then reported to :meth:`UploadOwner.record_offset`.

The writer knows the upload only through :class:`UploadOwner` (three calls) and the part files
through :class:`~.parts.PartStore`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import Conflict, PayloadTooLarge, PirusError
from .parts import PartFile, PartStore, RunningHash
from .protocol import (
    CHECKSUM_ALGORITHMS,
    ChecksumMismatch,
    StorageError,
    storage_error,
    with_headers,
)

# Bytes collected on the event loop before one write is handed to the thread: large enough that
# the per-write overhead vanishes (the handlers receive bodies in pieces this large).
WRITE_BUFFER = 1024 * 1024
# Bytes queued to the thread before receiving waits: an upload costs at most ~this much memory.
MAX_IN_FLIGHT = 8 * 1024 * 1024
# A long body sent without Upload-Checksum is made durable (fsync + recorded offset) this often,
# so a crash or a dropped connection in the middle of a multi-GiB PATCH loses at most this much.
CHECKPOINT_BYTES = 64 * 1024 * 1024


class _Lanes:
    """Single-thread executors, one per writer while it lives, kept for the next writers:
    starting a thread for every PATCH would make the event loop wait for it to start."""

    KEEP = 8

    def __init__(self) -> None:
        self._idle: list[concurrent.futures.ThreadPoolExecutor] = []

    def take(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._idle:
            return self._idle.pop()
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pirus-tus-write")

    def give(self, lane: concurrent.futures.ThreadPoolExecutor) -> None:
        if len(self._idle) < self.KEEP:
            self._idle.append(lane)
        else:
            lane.shutdown(wait=False)


_lanes = _Lanes()


class UploadOwner(Protocol):
    """What a writer reports to (the upload service). The writer holds the upload's lock."""

    log: logging.Logger

    async def record_offset(self, upload_id: str, offset: int, new_length: int | None
                            ) -> dict[str, Any]:
        """Bytes up to ``offset`` are fsync-ed: store the offset (and a deferred length, if
        the body set it); returns the upload row."""
        ...

    async def finish_if_complete(self, row: dict[str, Any]) -> dict[str, Any]:
        """The body is stored: finish the upload if all its bytes are; returns the row."""
        ...

    def release(self, upload_id: str) -> None:
        """The writer is done: unlock the upload."""
        ...


class ChunkWriter:
    """Streams one request body into an upload's part file.

    The handler calls :meth:`feed` from ``data_received`` (awaited, so TCP back-pressure holds
    the client while the disk is busy), then :meth:`commit` once the body is complete, or
    :meth:`abort` if the client went away. The writer holds the upload's lock until one of those
    ends. A writer for an upload that takes no more bytes is a no-op (``state == "noop"``): it
    accepts only an empty body.
    """

    def __init__(self, owner: UploadOwner, parts: PartStore, row: dict[str, Any], *,
                 start: int, limit: int, checksum: tuple[str, bytes] | None,
                 new_length: int | None, error_headers: Mapping[str, str] | None = None,
                 accepting: bool = True) -> None:
        self.owner = owner
        self.parts = parts
        self.upload_id: str = row["id"]
        self.row = row
        self.start = start
        self.recorded = start  # durable offset (fsync-ed and stored)
        self.received = 0  # body bytes accepted so far
        self.flushed = 0  # body bytes handed to the writer thread
        self.limit = limit
        self.checksum = checksum
        self._checksum_digest = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        self.new_length = new_length
        self.error_headers = dict(error_headers or {})
        self.error: PirusError | None = None
        self.state = "receiving" if accepting else "noop"
        self._buffer: list[bytes] = []  # received, not yet queued to the thread
        self._buffered = 0
        # The writer's thread runs its jobs in order: the hash set-up, writes, hash snapshots.
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._queued: deque[tuple[int, concurrent.futures.Future[Any]]] = deque()  # (bytes, job)
        self._in_flight = 0
        self._mutex = asyncio.Lock()
        self._file: PartFile | None = None
        self._hash: RunningHash | None = None
        self._saved: Any = None  # running hash at ``recorded``, restored when bytes are discarded
        self._checkpoint: asyncio.Task[None] | None = None  # a background fsync + record
        # Where the first failed write started (disk full): the bytes before it are kept.
        self._failed_at: int | None = None
        self._failure: OSError | None = None

    # -- setup ------------------------------------------------------------------------
    async def open(self) -> None:
        # Opening the part file and rebuilding the running hash (only needed after a restart)
        # are the thread's first job, so they overlap with receiving the body instead of
        # delaying it; the writes queued behind them wait for them.
        self._io = _lanes.take()
        self._queued.append((0, self._io.submit(self._open)))

    def _open(self) -> None:
        try:
            self._file = PartFile(self.parts.path(self.upload_id), self.start)
            self._hash = self.parts.running_hash(self.upload_id, self.start)
        except OSError as e:  # nothing can be written: the jobs queued after this one fail too
            self._failed_at, self._failure = self.start, e
            raise
        self._saved = self._hash.digest.copy()

    # -- receiving --------------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        async with self._mutex:
            if self.state == "noop" and data:
                self.error = PayloadTooLarge("the upload is complete: no bytes can be added")
            if self.state != "receiving" or self.error is not None:
                return
            if len(data) > self.limit - self.received:
                # Only possible with a chunked body (Content-Length was checked up front).
                self.error = PayloadTooLarge(
                    f"the request body goes past the upload length ({self.limit} bytes left)")
                return
            self._buffer.append(data)
            self._buffered += len(data)
            self.received += len(data)
            if self._buffered < WRITE_BUFFER:
                return
            try:
                await self._flush_buffer()
                if self.checksum is None and self._checkpoint is None and (
                        self.start + self.flushed - self.recorded >= CHECKPOINT_BYTES):
                    # In the background: receiving goes on while the disk catches up. The hash
                    # state at this offset is taken in order, right after the last write.
                    assert self._io is not None
                    snapshot = self._io.submit(self._hash_copy)
                    self._queued.append((0, snapshot))
                    self._checkpoint = asyncio.ensure_future(
                        self._run_checkpoint(snapshot, self.start + self.flushed))
            except OSError as e:
                # Keep reading (and ignoring) the body so that the client gets a response.
                self.error = storage_error(e)

    async def _flush_buffer(self) -> None:
        """Queue the buffered bytes to the thread; wait while too many are queued."""
        if self._buffer:
            pieces, self._buffer, size = self._buffer, [], self._buffered
            self._buffered = 0
            position = self.start + self.flushed
            self.flushed += size
            self._in_flight += size
            assert self._io is not None
            self._queued.append((size, self._io.submit(self._write, pieces, position)))
        while self._queued and (self._queued[0][1].done() or self._in_flight > MAX_IN_FLIGHT):
            size, job = self._queued[0]
            if not job.done():
                await asyncio.wrap_future(job)
            self._queued.popleft()
            self._in_flight -= size
            job.result()  # its OSError (the jobs after a failed one fail too)

    async def _drain(self) -> None:
        """Queue what is buffered and wait until the thread has done everything queued."""
        await self._flush_buffer()
        while self._queued:
            size, job = self._queued.popleft()
            self._in_flight -= size
            await asyncio.wrap_future(job)

    def _check_not_failed(self) -> None:
        if self._failure is not None:  # nothing is written or hashed after a failed write
            raise self._failure

    def _write(self, pieces: list[bytes], position: int) -> None:
        self._check_not_failed()
        assert self._file is not None and self._hash is not None
        try:
            self._file.write_pieces(pieces, position)
        except OSError as e:
            # Writes run one at a time, in order, and the hash only takes what was written:
            # the file and the hash are both good up to ``position``.
            self._failed_at, self._failure = position, e
            raise
        for piece in pieces:
            self._hash.digest.update(piece)
            self._hash.size += len(piece)
            if self._checksum_digest is not None:
                self._checksum_digest.update(piece)

    def _hash_copy(self) -> Any:
        """The running hash state after every write queued so far (a job of the thread)."""
        assert self._hash is not None
        self._check_not_failed()
        return self._hash.digest.copy()

    # -- durability -------------------------------------------------------------------
    async def _record(self, offset: int) -> None:
        """fsync, then store ``offset``: the recorded offset is never ahead of the disk."""
        assert self._file is not None
        await self.parts.run(self._file.sync)
        new_length, self.new_length = self.new_length, None
        self.row = await self.owner.record_offset(self.upload_id, offset, new_length)
        self.recorded = offset

    async def _run_checkpoint(self, snapshot: concurrent.futures.Future[Any], offset: int
                              ) -> None:
        """Make ``[0, offset)`` durable and record ``offset``, while later bytes keep coming.

        ``snapshot`` is the thread's job right after the write that ends at ``offset`` (the hash
        state there); fsync after it returns covers every byte before ``offset`` (later writes
        may or may not be included: they are not recorded), so the recorded offset is never
        ahead of the disk.
        """
        saved = await asyncio.wrap_future(snapshot)
        await self._record(offset)
        self._saved = saved

    async def _wait_checkpoint(self) -> None:
        if self._checkpoint is not None:
            checkpoint, self._checkpoint = self._checkpoint, None
            await checkpoint

    async def _make_durable(self) -> int:
        """fsync and record the offset; returns it."""
        await self._wait_checkpoint()  # so that offsets are recorded in order
        await self._drain()
        offset = self.start + self.flushed
        if offset != self.recorded or self.new_length is not None:
            await self._record(offset)
            assert self._hash is not None
            self._saved = self._hash.digest.copy()
        return offset

    async def _settle(self) -> None:
        """Let the background work end (its failures are handled by the caller) and drop what
        was not written yet."""
        with contextlib.suppress(Exception):
            await self._wait_checkpoint()  # it may still move the recorded offset
        while self._queued:
            size, job = self._queued.popleft()
            self._in_flight -= size
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(job)
        self._buffer, self._buffered = [], 0

    async def _discard(self) -> None:
        """Drop every byte after the recorded offset (checksum mismatch, oversize, failure)."""
        await self._settle()
        try:
            if self._file is not None:
                await self.parts.run(self._file.truncate, self.recorded)
        except OSError:
            self.owner.log.exception("pirus: cannot truncate upload %s", self.upload_id)
        if self._hash is not None and self._saved is not None:
            self._hash.digest = self._saved.copy()
            self._hash.size = self.recorded
        else:
            # The state at the recorded offset is unknown: the next request rebuilds it from disk.
            self.parts.forget(self.upload_id)

    async def _keep_written(self) -> None:
        """After a failed write (a full disk): keep the bytes written before it (cut the file
        there, fsync, record the offset) so that the client resumes from there once space is
        freed, instead of sending the whole body again. Anything else is discarded as usual."""
        await self._settle()
        good = self._failed_at
        # A checksum covers the whole body: a part of it can never be verified.
        if good is None or good <= self.recorded or self.checksum is not None or \
                self._file is None or self._hash is None or self._hash.size != good:
            await self._discard()
            return
        try:
            await self.parts.run(self._file.truncate, good)
            await self._record(good)
        except Exception:
            self.owner.log.exception("pirus: upload %s: cannot keep the bytes before the "
                                     "failed write", self.upload_id)
            await self._discard()
            return
        self._saved = self._hash.digest.copy()

    async def _fail_storage(self, e: OSError | None = None) -> PirusError:
        """Clean up after bytes could not be stored; the error to answer, saying where to
        resume."""
        e = self._failure or e
        await self._keep_written()
        error = storage_error(e, self.recorded) if e is not None else (
            self.error or StorageError("cannot store the uploaded bytes"))
        return with_headers(error, {**self.error_headers, "Upload-Offset": str(self.recorded)})

    async def _close(self) -> None:
        # No job of the thread may outlive the file descriptor (its number could be reused).
        await self._settle()
        part, self._file = self._file, None
        if self._io is not None:
            lane, self._io = self._io, None
            if part is not None:
                # Not waited for: the lane closes it before any job of its next writer.
                lane.submit(part.close)
            _lanes.give(lane)

    # -- ending -----------------------------------------------------------------------
    async def commit(self) -> dict[str, Any]:
        """The body is complete: verify, make durable, record, finish the upload if complete.

        Returns the upload row. Raises 460 on a checksum mismatch (the body is discarded).
        """
        if self.state == "noop":
            self.owner.release(self.upload_id)
            if self.error is not None:
                raise self.error
            return self.row
        async with self._mutex:
            if self.state != "receiving":
                raise Conflict("the request was interrupted")
            self.state = "committing"
        try:
            if isinstance(self.error, StorageError):
                raise await self._fail_storage()
            if self.error is not None:
                await self._discard()
                raise with_headers(self.error, self.error_headers)
            try:
                await self._drain()
            except OSError as e:
                raise await self._fail_storage(e) from e
            if (self._checksum_digest is not None and self.checksum is not None
                    and self._checksum_digest.digest() != self.checksum[1]):
                await self._discard()
                raise with_headers(
                    ChecksumMismatch(f"{self.checksum[0]} checksum of the body does not "
                                     "match Upload-Checksum; the bytes were discarded"),
                    {**self.error_headers, "Upload-Offset": str(self.recorded)})
            try:
                await self._make_durable()
            except OSError as e:
                raise await self._fail_storage(e) from e
            await self._close()
            return await self.owner.finish_if_complete(self.row)
        finally:
            self.state = "done"
            await self._close()
            self.owner.release(self.upload_id)

    async def abort(self) -> None:
        """The client went away mid-body: keep what arrived (unless a checksum covered the whole
        body, which can then never be verified), as the protocol asks."""
        async with self._mutex:
            if self.state != "receiving":
                return
            self.state = "aborting"
        try:
            if isinstance(self.error, StorageError):
                await self._keep_written()
            elif self.checksum is not None or self.error is not None:
                await self._discard()
            else:
                try:
                    await self._make_durable()
                except OSError:
                    await self._keep_written()
                    raise
                except Exception:
                    await self._discard()
                    raise
                await self._close()
                await self.owner.finish_if_complete(self.row)
        except Exception:
            self.owner.log.exception("pirus: saving interrupted upload %s", self.upload_id)
        finally:
            self.state = "done"
            await self._close()
            self.owner.release(self.upload_id)
