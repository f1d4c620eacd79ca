"""TUS 1.0.0 resumable uploads: the protocol logic behind ``{base_url}pirus/api/v1/uploads``.

Extensions: creation, creation-with-upload, creation-defer-length, checksum (sha1, md5, sha256),
termination, expiration and concatenation (of finished partial uploads).

Where the bytes go
    Each upload owns a *part file* ``<parts_dir>/<upload id>``. Request bodies are streamed into
    it as they arrive (never buffered whole) by a :class:`ChunkWriter`: the event loop only
    collects up to :data:`WRITE_BUFFER` bytes, a worker thread writes them (in order: the next
    write is submitted only once the previous one finished) and feeds the running SHA-256 of the
    whole upload, so completion needs no second read of the file.

Crash safety
    The recorded offset is never ahead of the bytes on disk: bytes are written, then
    ``fsync``-ed (at the end of a request body, and every :data:`CHECKPOINT_BYTES` of a long body
    sent without ``Upload-Checksum``), and only then is the offset stored in the database. At
    start-up every unfinished part file is truncated to its recorded offset, so bytes received
    after the last checkpoint are discarded and simply sent again by the client.

What an upload becomes
    Metadata ``kind`` is ``input`` (default) or ``pipeline``; ``filename`` is reduced to a bare
    file name. A finished input is hard-linked (or copied, across filesystems) into
    ``uploads_dir`` under a unique name and registered with :class:`FileService`; a pipeline
    upload creates its pipeline record (UPLOADING) at creation, reports progress to it, and hands
    the finished file to :meth:`PipelineService.install_file`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PirusError,
    UnsupportedMediaType,
)
from ..events import EventBus
from ..files import FileService, is_within, safe_filename, sha256_file, to_api_path
from ..models import public_file
from ..store import Store, now_iso

if TYPE_CHECKING:
    from ..pipelines import PipelineService

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = (
    "creation", "creation-with-upload", "creation-defer-length", "termination", "checksum",
    "expiration", "concatenation",
)
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256,
}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
KINDS = ("input", "pipeline")

# Bytes collected on the event loop before one write is handed to a thread: large enough that
# the per-write overhead vanishes, small enough that an upload costs ~2 MiB of memory.
WRITE_BUFFER = 1024 * 1024
# A long body sent without Upload-Checksum is made durable (fsync + recorded offset) this often,
# so a crash or a dropped connection in the middle of a multi-GiB PATCH loses at most this much.
CHECKPOINT_BYTES = 64 * 1024 * 1024
COPY_BLOCK = 4 * 1024 * 1024
# Header values are integers in bytes; anything longer is not a plausible size.
_INT_RE = re.compile(r"[0-9]{1,19}")
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_URL_ID_RE = re.compile(r"/uploads/([A-Za-z0-9_-]{1,64})/?$")
_METADATA_KEY_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII, no space, no comma

UPLOADING = "uploading"
CONCATENATING = "concatenating"
COMPLETE = "complete"
ERROR = "error"


class UnsupportedVersion(PirusError):
    status = 412
    code = "unsupported_version"


class Locked(PirusError):
    """Another request is writing to (or finishing, or removing) this upload right now."""

    status = 423
    code = "locked"


class ChecksumMismatch(PirusError):
    status = 460
    code = "checksum_mismatch"


class StorageError(PirusError):
    status = 500
    code = "storage_error"


class InsufficientStorage(StorageError):
    """The upload store is full (ENOSPC, EDQUOT): the client resumes once space is freed."""

    status = 507
    code = "insufficient_storage"


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def storage_error(e: OSError, kept: int | None = None) -> StorageError:
    """The error a client gets when bytes could not be stored: 507 for a full disk, saying
    where to resume, 500 otherwise."""
    if e.errno in _FULL_ERRNOS:
        where = f"; {kept} bytes are stored: resume at Upload-Offset {kept} once space is " \
                "freed" if kept is not None else ""
        return InsufficientStorage(f"the upload store is full ({os.strerror(e.errno)}){where}")
    return StorageError(f"cannot store the uploaded bytes: {e}")


def _with_headers(error: PirusError, headers: Mapping[str, str]) -> PirusError:
    """Attach response headers to an error; the upload handlers' ``write_error`` sends them."""
    error.headers = dict(headers)  # type: ignore[attr-defined]
    return error


# -- header parsing ----------------------------------------------------------------------------
def parse_size(value: str | None, name: str) -> int | None:
    """A non-negative integer header (``Upload-Length``, ``Upload-Offset``), or 400."""
    if value is None:
        return None
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        raise InvalidRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata`` as an ordered ``{key: base64 value}`` (``""`` for an empty value).

    Keys must be non-empty printable ASCII without spaces or commas and unique; values must be
    strict base64. Anything else is a 400, so nothing unvalidated is ever echoed in a header.
    """
    if header is None or header.strip() == "":
        return {}
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2:
            raise InvalidRequest(f"Upload-Metadata pair {pair.strip()!r} is not 'key value'")
        key, value = parts[0], (parts[1] if len(parts) == 2 else "")
        if not _METADATA_KEY_RE.fullmatch(key):
            raise InvalidRequest(f"Upload-Metadata key {key!r} is empty or not printable ASCII")
        if key in out:
            raise InvalidRequest(f"Upload-Metadata key {key!r} is repeated")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidRequest(f"Upload-Metadata value of {key!r} is not base64") from e
        out[key] = value
    return out


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata values as text (binary values are shown with replacement characters)."""
    return {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in metadata.items()}


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(f"{k} {v}" if v else k for k, v in metadata.items())


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; unknown algorithms are a 400."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise InvalidRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidRequest(
            f"checksum algorithm {algorithm!r} is not supported "
            f"(supported: {', '.join(CHECKSUM_ALGORITHMS)})", code="unsupported_checksum")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest("Upload-Checksum digest is not base64") from e
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise InvalidRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return algorithm, digest


def parse_concat(header: str) -> tuple[str, list[str]]:
    """``partial`` -> ("partial", []); ``final;<url> <url>`` -> ("final", [upload ids])."""
    value = header.strip()
    if value == "partial":
        return "partial", []
    if not value.startswith("final;"):
        raise InvalidRequest("Upload-Concat must be 'partial' or 'final;<upload URLs>'")
    urls = value[len("final;"):].split()
    if not urls:
        raise InvalidRequest("Upload-Concat: final lists no partial uploads")
    ids = []
    for url in urls:
        match = _URL_ID_RE.search(urlparse(url).path)
        if not match:
            raise InvalidRequest(f"{url!r} is not an upload URL")
        ids.append(match.group(1))
    return "final", ids


def has_body(headers: Mapping[str, str]) -> bool:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return True
    return (parse_size(headers.get("Content-Length"), "Content-Length") or 0) > 0


def http_date(iso: str) -> str:
    """An ISO timestamp from the store as an RFC 7231 date (``Upload-Expires``)."""
    return format_datetime(datetime.fromisoformat(iso).astimezone(timezone.utc), usegmt=True)


# -- file helpers (run in worker threads) -------------------------------------------------------
def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, position)
        view = view[n:]
        position += n


def _hash_prefix(path: Path, length: int) -> Any:
    """SHA-256 of the first ``length`` bytes of ``path`` (after a restart, once per upload)."""
    digest = hashlib.sha256()
    buf = bytearray(COPY_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        remaining = length
        while remaining:
            n = f.readinto(view[: min(remaining, COPY_BLOCK)])
            if not n:
                raise OSError(f"{path} is shorter than its recorded offset {length}")
            digest.update(view[:n])
            remaining -= n
    return digest


def _unique_names(filename: str) -> Any:
    """``reads.fastq.gz``, ``reads-1.fastq.gz``, ``reads-2.fastq.gz``, ..."""
    yield filename
    stem, dot, suffix = filename.partition(".") if not filename.startswith(".") else (
        filename, "", "")
    for i in range(1, 10_000):
        yield f"{stem}-{i}{dot}{suffix}"
    yield f"{stem}-{uuid.uuid4().hex[:12]}{dot}{suffix}"


def _link_unique(source: Path, folder: Path, filename: str) -> Path:
    """Hard-link ``source`` into ``folder`` under a free name, never overwriting anything.

    ``os.link`` fails if the name exists, so choosing the name is race-free. A name that is
    already a link to ``source`` (a finish interrupted by a crash, then retried) is reused.
    """
    for name in _unique_names(filename):
        target = folder / name
        try:
            os.link(source, target)
            return target
        except FileExistsError:
            with contextlib.suppress(OSError):
                if os.path.samefile(source, target):
                    return target
    raise OSError(f"no free file name for {filename!r} in {folder}")


def _place_file(part: Path, folder: Path, filename: str, upload_id: str) -> Path:
    """Put a finished part file into ``folder`` under a unique name; returns the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = _link_unique(part, folder, filename)
    except OSError as e:
        if e.errno != errno.EXDEV:  # parts and uploads live on different filesystems
            raise
        # Copy next to the target first (hidden, named after the upload so a retry reuses it),
        # make it durable, then link it in under the final name: never a half file there.
        staging = folder / f".{upload_id}.uploading"
        shutil.copyfile(part, staging)  # sendfile/copy_file_range: no bytes through Python
        with open(staging, "rb+") as f:
            os.fsync(f.fileno())
        target = _link_unique(staging, folder, filename)
        staging.unlink()
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    return target


def _concat_files(sources: list[Path], target: Path) -> Any:
    """Stream the partial uploads into ``target`` and return the SHA-256 of the result.

    This is ``shutil.copyfileobj`` with the hash fed from the same 4 MiB buffer: one read of
    each part, never more than one block in memory (``sendfile`` would copy without the hash,
    and hashing afterwards would read everything a second time).
    """
    digest = hashlib.sha256()
    buf = bytearray(COPY_BLOCK)
    view = memoryview(buf)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        position = 0
        for source in sources:
            with open(source, "rb", buffering=0) as src:
                while n := src.readinto(buf):
                    digest.update(view[:n])
                    _pwrite_all(fd, view[:n], position)
                    position += n
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest


@dataclass
class _RunningHash:
    """SHA-256 of the first ``size`` bytes of an upload, fed as bytes arrive."""

    digest: Any
    size: int


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key, empty in (("metadata", {}), ("parts", [])):
        value = row.get(key)
        row[key] = json.loads(value) if isinstance(value, str) else (value or empty)
    return row


def _is_final(row: Mapping[str, Any]) -> bool:
    return bool(row.get("concat")) and str(row["concat"]).startswith("final")


def _is_partial(row: Mapping[str, Any]) -> bool:
    return row.get("concat") == "partial"


class ChunkWriter:
    """Streams one request body (a PATCH, or a creation-with-upload POST) into a part file.

    The handler calls :meth:`feed` from ``data_received`` (awaited, so TCP back-pressure holds
    the client while the disk is busy), then :meth:`commit` once the body is complete, or
    :meth:`abort` if the client went away. The writer holds the upload's lock until one of those
    ends.
    """

    def __init__(self, service: UploadService, row: dict[str, Any], *, start: int, limit: int,
                 checksum: tuple[str, bytes] | None, new_length: int | None,
                 error_headers: Mapping[str, str] | None = None) -> None:
        self.service = service
        self.upload_id: str = row["id"]
        self.row = row
        self.path = service.part_path(self.upload_id)
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
        self.state = "receiving"
        self._buffer = bytearray()
        self._pending: asyncio.Future[Any] | None = None
        self._mutex = asyncio.Lock()
        self._fd: int | None = None
        self._hash: _RunningHash | None = None
        self._saved: Any = None  # running hash at ``recorded``, restored when bytes are discarded
        self._checkpoint: asyncio.Task[None] | None = None  # a background fsync + record
        self._snapshot: tuple[int, Any] | None = None  # (offset, hash copy) for that checkpoint
        # Where the first failed write started (disk full): the bytes before it are kept.
        self._failed_at: int | None = None
        self._failure: OSError | None = None

    # -- setup ------------------------------------------------------------------------
    async def open(self) -> None:
        self._fd = await self._run(self._open_fd)
        # Rebuilding the running hash (only needed after a restart) is the first queued job, so it
        # overlaps with receiving the body instead of delaying it.
        self._pending = asyncio.ensure_future(self._run(self._prepare_hash))

    def _open_fd(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        # Bytes past the recorded offset were never acknowledged: drop them so that the file
        # never holds stale bytes after this body (also covers a request racing the start-up
        # reconciliation).
        os.ftruncate(fd, self.start)
        return fd

    def _prepare_hash(self) -> None:
        running = self.service._hashers.get(self.upload_id)
        if running is None or running.size != self.start:
            running = _RunningHash(_hash_prefix(self.path, self.start), self.start)
            self.service._hashers[self.upload_id] = running
        self._hash = running
        self._saved = running.digest.copy()

    def _run(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self.service._io, fn, *args)

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
            self._buffer += data
            self.received += len(data)
            if len(self._buffer) < WRITE_BUFFER:
                return
            try:
                await self._flush_buffer()
                if self.checksum is None and self._checkpoint is None and (
                        self.start + self.flushed - self.recorded >= CHECKPOINT_BYTES):
                    # In the background: receiving goes on while the disk catches up.
                    assert self._pending is not None
                    self._checkpoint = asyncio.ensure_future(
                        self._run_checkpoint(self._pending, self.start + self.flushed))
            except OSError as e:
                # Keep reading (and ignoring) the body so that the client gets a response.
                self.error = storage_error(e)

    async def _flush_buffer(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending  # one write in flight at a time keeps them in order
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            position = self.start + self.flushed
            self.flushed += len(data)
            self._pending = asyncio.ensure_future(self._run(self._write, data, position))

    async def _drain(self) -> None:
        await self._flush_buffer()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    def _write(self, data: bytearray, position: int) -> None:
        assert self._fd is not None and self._hash is not None
        try:
            _pwrite_all(self._fd, data, position)
        except OSError as e:
            # Writes run one at a time, in order, and the hash only takes what was written:
            # the file and the hash are both good up to ``position``.
            if self._failed_at is None:
                self._failed_at, self._failure = position, e
            raise
        self._hash.digest.update(data)
        self._hash.size += len(data)
        if self._checksum_digest is not None:
            self._checksum_digest.update(data)
        if self.checksum is None:
            # The hash state at this offset, should a checkpoint record it.
            self._snapshot = (position + len(data), self._hash.digest.copy())

    async def _run_checkpoint(self, written: Awaitable[Any], offset: int) -> None:
        """Make ``[0, offset)`` durable and record ``offset``, while later bytes keep coming.

        ``written`` is the write that ends at ``offset``; fsync after it returns covers every
        byte before ``offset`` (later writes may or may not be included: they are not
        recorded), so the recorded offset is never ahead of the disk.
        """
        await written
        snapshot = self._snapshot
        assert self._fd is not None
        await self._run(os.fsync, self._fd)
        self.row = await self.service._record_offset(self, offset)
        self.recorded = offset
        if snapshot is not None and snapshot[0] == offset:
            self._saved = snapshot[1]
        else:  # a later write already replaced the snapshot: rebuild if ever needed
            self._saved = None

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
            assert self._fd is not None
            await self._run(os.fsync, self._fd)
            self.row = await self.service._record_offset(self, offset)
            self.recorded = offset
            assert self._hash is not None
            self._saved = self._hash.digest.copy()
        return offset

    async def _discard(self) -> None:
        """Drop every byte after the recorded offset (checksum mismatch, oversize, failure)."""
        with contextlib.suppress(Exception):
            await self._wait_checkpoint()  # it may still move the recorded offset
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
            self._pending = None
        self._buffer = bytearray()
        try:
            if self._fd is not None:
                await self._run(os.ftruncate, self._fd, self.recorded)
        except OSError:
            self.service.log.exception("pirus: cannot truncate upload %s", self.upload_id)
        if self._hash is not None and self._saved is not None:
            self._hash.digest = self._saved.copy()
            self._hash.size = self.recorded
        else:
            # The state at the recorded offset is unknown: the next request rebuilds it from disk.
            self.service._hashers.pop(self.upload_id, None)

    async def _keep_written(self) -> None:
        """After a failed write (a full disk): keep the bytes written before it (cut the file
        there, fsync, record the offset) so that the client resumes from there once space is
        freed, instead of sending the whole body again. Anything else is discarded as usual."""
        with contextlib.suppress(Exception):
            await self._wait_checkpoint()
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
            self._pending = None
        self._buffer = bytearray()
        good = self._failed_at
        # A checksum covers the whole body: a part of it can never be verified.
        if good is None or good <= self.recorded or self.checksum is not None or \
                self._fd is None or self._hash is None or self._hash.size != good:
            await self._discard()
            return
        try:
            await self._run(os.ftruncate, self._fd, good)
            await self._run(os.fsync, self._fd)
            self.row = await self.service._record_offset(self, good)
        except Exception:
            self.service.log.exception("pirus: upload %s: cannot keep the bytes before the "
                                       "failed write", self.upload_id)
            await self._discard()
            return
        self.recorded = good
        self._saved = self._hash.digest.copy()

    async def _fail_storage(self, e: OSError | None = None) -> PirusError:
        """Clean up after bytes could not be stored; the error to answer, saying where to
        resume."""
        e = self._failure or e
        await self._keep_written()
        error = storage_error(e, self.recorded) if e is not None else (
            self.error or StorageError("cannot store the uploaded bytes"))
        return _with_headers(error, {**self.error_headers,
                                     "Upload-Offset": str(self.recorded)})

    async def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                await self._run(os.close, fd)

    # -- ending -----------------------------------------------------------------------
    async def commit(self) -> dict[str, Any]:
        """The body is complete: verify, make durable, record, finish the upload if complete.

        Returns the upload row. Raises 460 on a checksum mismatch (the body is discarded).
        """
        async with self._mutex:
            if self.state != "receiving":
                raise Conflict("the request was interrupted")
            self.state = "committing"
        try:
            if isinstance(self.error, StorageError):
                raise await self._fail_storage()
            if self.error is not None:
                await self._discard()
                raise _with_headers(self.error, self.error_headers)
            try:
                await self._drain()
            except OSError as e:
                raise await self._fail_storage(e) from e
            if (self._checksum_digest is not None and self.checksum is not None
                    and self._checksum_digest.digest() != self.checksum[1]):
                await self._discard()
                raise _with_headers(
                    ChecksumMismatch(f"{self.checksum[0]} checksum of the body does not "
                                     "match Upload-Checksum; the bytes were discarded"),
                    {**self.error_headers, "Upload-Offset": str(self.recorded)})
            try:
                await self._make_durable()
            except OSError as e:
                raise await self._fail_storage(e) from e
            await self._close()
            return await self.service._maybe_finish(self.row)
        finally:
            self.state = "done"
            await self._close()
            self.service._unlock(self.upload_id)

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
                await self.service._maybe_finish(self.row)
        except Exception:
            self.service.log.exception("pirus: saving interrupted upload %s", self.upload_id)
        finally:
            self.state = "done"
            await self._close()
            self.service._unlock(self.upload_id)


class UploadService:
    """TUS uploads: creation, chunks, expiry, concatenation and what finished uploads become."""

    def __init__(self, store: Store, events: EventBus, files: FileService,
                 pipelines: PipelineService, *, parts_dir: Path, uploads_dir: Path,
                 max_size: int, expiration: float, log: logging.Logger) -> None:
        self.store = store
        self.events = events
        self.files = files
        self.pipelines = pipelines
        self.parts_dir = Path(parts_dir)
        self.uploads_dir = Path(uploads_dir)
        self.max_size = int(max_size)
        self.expiration = float(expiration)
        self.log = log
        # Expired uploads are removed at most a quarter of their lifetime late (and at least
        # every minute), so a test with a 1 s lifetime sees them go within a second or two.
        self.cleanup_interval = max(0.25, min(60.0, self.expiration / 4))
        self._locks: dict[str, str] = {}
        self._creating: set[str] = set()  # ids whose part file exists before their row
        self._hashers: dict[str, _RunningHash] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._reconciled = asyncio.Event()  # set once the start-up check released its locks
        # File I/O of uploads runs here, not on the default executor that other services share.
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pirus-tus")
        self.parts_dir.mkdir(parents=True, exist_ok=True)

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
        self._io.shutdown(wait=False, cancel_futures=True)

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
            paths = await asyncio.to_thread(lambda: list(self.parts_dir.iterdir()))
            rows = [_decode(r) for r in await self.store.select("uploads")]
            for row in rows:
                if row["status"] == CONCATENATING:
                    self._start_concatenation(row)
                elif row["id"] not in self._locks:  # else a request holds it: consistent
                    await self._reconcile_one(row["id"])
            known = {r["id"] for r in rows}
            for path in paths:
                if path.name not in known and path.name not in self._creating:
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(path.unlink)
        finally:
            self._reconciled.set()

    async def _reconcile_one(self, upload_id: str) -> None:
        self._lock(upload_id, "start-up check")
        handed_over = False
        try:
            try:
                row = await self._row(upload_id, allow_expired=True)  # re-read under the lock
            except NotFound:
                return
            if row["status"] != UPLOADING and not (row["status"] == COMPLETE and _is_partial(row)):
                return
            size = await asyncio.to_thread(self._part_size, upload_id)
            offset = row["offset"]
            if size is None or size < offset:
                # Should not happen (offsets are recorded after fsync), but never claim bytes
                # that are not there.
                self.log.warning("pirus: upload %s has %s bytes on disk, %s recorded",
                                 upload_id, size, offset)
                await asyncio.to_thread(self._truncate_part, upload_id, size or 0)
                row = await self._update(upload_id, {"offset": size or 0, "status": UPLOADING})
                await self._pipeline_offset(row)
            elif size > offset:
                self.log.info("pirus: upload %s: dropping %s unacknowledged bytes", upload_id,
                              size - offset)
                await asyncio.to_thread(self._truncate_part, upload_id, offset)
            if row["status"] == UPLOADING and row["length"] is not None and (
                    row["offset"] == row["length"]):
                # All bytes recorded, but the server stopped before finishing the upload.
                self._locks[upload_id] = "finishing"
                self.spawn(self._finish_locked(row))
                handed_over = True
        finally:
            if not handed_over:
                self._unlock(upload_id)

    def _part_size(self, upload_id: str) -> int | None:
        try:
            return self.part_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def _truncate_part(self, upload_id: str, size: int) -> None:
        fd = os.open(self.part_path(upload_id), os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _finish_locked(self, row: dict[str, Any]) -> None:
        try:
            await self._maybe_finish(row)
        finally:
            self._unlock(row["id"])

    # -- small helpers ----------------------------------------------------------------
    def part_path(self, upload_id: str) -> Path:
        return self.parts_dir / upload_id

    async def _lock_after_startup(self, upload_id: str, holder: str) -> None:
        """Like :meth:`_lock`, but a request arriving while the start-up check holds the upload
        waits for it (a fraction of a second) instead of being told 423."""
        if self._locks.get(upload_id) == "start-up check":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reconciled.wait(), 30)
        self._lock(upload_id, holder)

    def _lock(self, upload_id: str, holder: str) -> None:
        # Checked and set without an await in between: atomic on the event loop.
        if upload_id in self._locks:
            raise Locked(f"upload {upload_id} is busy ({self._locks[upload_id]}); retry later")
        self._locks[upload_id] = holder

    def _unlock(self, upload_id: str) -> None:
        self._locks.pop(upload_id, None)

    def is_busy(self, upload_id: str) -> bool:
        """Whether a request or background job holds the upload right now."""
        return upload_id in self._locks

    def _expiry(self) -> str:
        when = datetime.now(timezone.utc) + timedelta(seconds=self.expiration)
        return when.isoformat(timespec="milliseconds")

    @staticmethod
    def _expired(row: Mapping[str, Any]) -> bool:
        return bool(row.get("expires")) and row["expires"] < now_iso()

    async def _row(self, upload_id: str, *, allow_expired: bool = False) -> dict[str, Any]:
        if not UPLOAD_ID_RE.fullmatch(upload_id or ""):
            raise NotFound(f"no upload with id {upload_id!r}")
        row = _decode(await self.store.get("uploads", upload_id))
        if not allow_expired and self._expired(row):
            raise Gone(f"upload {upload_id} expired and is being removed")
        return row

    async def public(self, row: dict[str, Any]) -> dict[str, Any]:
        """The JSON record of an upload (no host paths)."""
        file = None
        if row.get("file_id") is not None:
            with contextlib.suppress(NotFound):
                file = public_file(await self.store.get("files", row["file_id"]))
        concat = None
        if row.get("concat"):
            concat = "partial" if _is_partial(row) else "final"
        return {
            "id": row["id"], "filename": row["filename"], "kind": row["kind"],
            "length": row["length"], "offset": row["offset"], "status": row["status"],
            "created": row["created"], "expires": row["expires"], "concat": concat,
            "parts": row["parts"] or None, "metadata": decode_metadata(row["metadata"]),
            "sha256": row["sha256_state"], "error": row["error"], "file": file,
            "pipeline_id": row["pipeline_id"],
        }

    async def _publish(self, event: str, row: dict[str, Any]) -> None:
        self.events.publish(event, await self.public(row))

    async def _update(self, upload_id: str, values: dict[str, Any]) -> dict[str, Any]:
        return _decode(await self.store.update("uploads", upload_id, values))

    async def _pipeline_offset(self, row: Mapping[str, Any]) -> None:
        if row.get("pipeline_id") is not None:
            try:
                await self.pipelines.set_upload_offset(row["pipeline_id"], row["offset"])
            except PirusError as e:  # the pipeline record was removed: the upload goes on
                self.log.warning("pirus: upload %s: pipeline %s: %s", row["id"],
                                 row["pipeline_id"], e.message)

    # -- protocol: discovery and version --------------------------------------------------
    def options_headers(self) -> dict[str, str]:
        return {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(TUS_EXTENSIONS),
            "Tus-Max-Size": str(self.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }

    @staticmethod
    def check_version(method: str, headers: Mapping[str, str]) -> None:
        """412 unless a TUS request carries ``Tus-Resumable: 1.0.0``.

        OPTIONS ignores the header (as the protocol says) and GET is this API's JSON read, not a
        TUS request, so neither is checked.
        """
        if method in ("OPTIONS", "GET"):
            return
        version = headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            raise _with_headers(UnsupportedVersion(
                f"Tus-Resumable {version!r} is not supported; this server speaks {TUS_VERSION}"),
                {"Tus-Version": TUS_VERSION})

    # -- protocol: creation ---------------------------------------------------------------
    async def create(self, headers: Mapping[str, str], url_for: Callable[[str], str]
                     ) -> tuple[dict[str, Any], ChunkWriter | None]:
        """A creation POST: returns the new upload row and, for creation-with-upload, the
        writer that receives the request body (``None`` otherwise)."""
        metadata = parse_metadata(headers.get("Upload-Metadata"))
        values = decode_metadata(metadata)
        kind = values.get("kind") or "input"
        if kind not in KINDS:
            raise InvalidRequest(f"metadata kind must be one of {', '.join(KINDS)}, not {kind!r}")
        upload_id = uuid.uuid4().hex
        filename = safe_filename(values.get("filename") or values.get("name") or "",
                                 default=f"upload-{upload_id[:8]}")
        body = has_body(headers)
        concat_header = headers.get("Upload-Concat")
        concat_kind, part_ids = parse_concat(concat_header) if concat_header else ("", [])
        if concat_kind == "final":
            if headers.get("Upload-Length") is not None or (
                    headers.get("Upload-Defer-Length") is not None):
                raise InvalidRequest("a final upload takes no Upload-Length: its length is the "
                                     "sum of its partial uploads")
            if body:
                raise InvalidRequest("a final upload takes no body")
            row = await self._create_final(upload_id, part_ids, str(concat_header).strip(),
                                           metadata, kind, filename)
            return row, None

        length = parse_size(headers.get("Upload-Length"), "Upload-Length")
        defer = headers.get("Upload-Defer-Length")
        if length is not None and defer is not None:
            raise InvalidRequest("give Upload-Length or Upload-Defer-Length, not both")
        if length is None:
            if defer is None:
                raise InvalidRequest("Upload-Length (or Upload-Defer-Length: 1) is required")
            if defer.strip() != "1":
                raise InvalidRequest("Upload-Defer-Length must be 1")
        elif length > self.max_size:
            raise PayloadTooLarge(f"Upload-Length {length} is over the {self.max_size} byte "
                                  "limit (Tus-Max-Size)")
        checksum = None
        content_length = parse_size(headers.get("Content-Length"), "Content-Length")
        if body:
            if headers.get("Content-Type", "").split(";")[0].strip() != OFFSET_CONTENT_TYPE:
                raise UnsupportedMediaType(
                    f"a creation request with a body must be {OFFSET_CONTENT_TYPE}")
            checksum = parse_checksum(headers.get("Upload-Checksum"))
            room = length if length is not None else self.max_size
            if content_length is not None and content_length > room:
                raise PayloadTooLarge(f"the body ({content_length} bytes) is longer than the "
                                      f"upload ({room} bytes)")

        partial = concat_kind == "partial"
        self._creating.add(upload_id)
        try:
            try:
                await asyncio.to_thread(self._truncate_part, upload_id, 0)
            except OSError as e:  # no room even for an empty part file
                raise storage_error(e) from e
            row = _decode(await self.store.insert("uploads", {
                "id": upload_id, "kind": kind, "filename": filename, "metadata": metadata,
                "length": length, "offset": 0, "status": UPLOADING, "created": now_iso(),
                "expires": self._expiry(), "concat": "partial" if partial else None,
            }))
        finally:
            self._creating.discard(upload_id)
        if kind == "pipeline" and not partial:
            try:
                pipeline = await self.pipelines.create_uploading(filename, length, upload_id)
            except BaseException:
                await self._remove(row, None)
                raise
            row = await self._update(upload_id, {"pipeline_id": pipeline["id"]})
        await self._publish("upload.created", row)
        self.log.info("pirus: upload %s created (%s, %s, %s bytes)", upload_id, kind, filename,
                      length if length is not None else "deferred")

        if body:
            self._lock(upload_id, "creation-with-upload")
            writer = ChunkWriter(self, row, start=0, limit=room, checksum=checksum,
                                 new_length=None,
                                 error_headers={"Location": url_for(upload_id)})
            try:
                await writer.open()
            except BaseException:
                self._unlock(upload_id)
                raise
            return row, writer
        if length == 0:
            self._lock(upload_id, "finishing")
            try:
                row = await self._maybe_finish(row)
            finally:
                self._unlock(upload_id)
        return row, None

    # -- protocol: HEAD / PATCH / DELETE --------------------------------------------------
    async def head(self, upload_id: str) -> dict[str, str]:
        """The headers of a HEAD response."""
        row = await self._row(upload_id)
        headers = {"Cache-Control": "no-store"}
        if not _is_final(row) or row["offset"] == row["length"]:
            # A final upload shows its offset only once the concatenation finished.
            headers["Upload-Offset"] = str(row["offset"])
        if row["length"] is not None:
            headers["Upload-Length"] = str(row["length"])
        else:
            headers["Upload-Defer-Length"] = "1"
        if row["metadata"]:
            headers["Upload-Metadata"] = encode_metadata(row["metadata"])
        if row["concat"]:
            headers["Upload-Concat"] = row["concat"]
        if row["expires"]:
            headers["Upload-Expires"] = http_date(row["expires"])
        return headers

    @staticmethod
    def response_headers(row: Mapping[str, Any]) -> dict[str, str]:
        """``Upload-Offset`` and ``Upload-Expires`` for PATCH and creation responses."""
        headers = {"Upload-Offset": str(row["offset"])}
        if row.get("expires"):
            headers["Upload-Expires"] = http_date(row["expires"])
        return headers

    async def begin_patch(self, upload_id: str, headers: Mapping[str, str]) -> ChunkWriter:
        """Validate a PATCH before its body is read and take the upload's lock.

        404/410 unknown or expired, 403 final upload, 415 content type, 400 bad headers,
        423 another request holds the upload, 409 offset mismatch, 413 body past the length.
        """
        row = await self._row(upload_id)
        if _is_final(row):
            raise Forbidden("a final (concatenated) upload cannot be patched")
        if headers.get("Content-Type", "").split(";")[0].strip() != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
        offset = parse_size(headers.get("Upload-Offset"), "Upload-Offset")
        if offset is None:
            raise InvalidRequest("Upload-Offset is required")
        checksum = parse_checksum(headers.get("Upload-Checksum"))
        new_length = parse_size(headers.get("Upload-Length"), "Upload-Length")
        content_length = parse_size(headers.get("Content-Length"), "Content-Length")

        await self._lock_after_startup(upload_id, "PATCH")
        try:
            row = await self._row(upload_id)  # read again under the lock: offsets move only there
            current = {"Upload-Offset": str(row["offset"])}
            if offset != row["offset"]:
                raise _with_headers(Conflict(
                    f"Upload-Offset {offset} does not match the upload's offset {row['offset']}",
                    code="offset_mismatch"), current)
            if row["status"] == ERROR:
                raise _with_headers(Conflict(f"upload failed: {row['error']}"), current)
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
            if content_length is not None and content_length > limit:
                raise PayloadTooLarge(f"the body ({content_length} bytes) goes past the end of "
                                      f"the upload ({limit} bytes left)")
            writer = ChunkWriter(self, row, start=offset, limit=limit, checksum=checksum,
                                 new_length=new_length if row["length"] is None else None)
            if row["status"] == UPLOADING:
                await writer.open()
            else:
                writer.state = "noop"
            return writer
        except BaseException:
            self._unlock(upload_id)
            raise

    async def commit(self, writer: ChunkWriter) -> dict[str, Any]:
        """End a request body (see :meth:`ChunkWriter.commit`)."""
        if writer.state == "noop":
            self._unlock(writer.upload_id)
            if writer.error is not None:
                raise writer.error
            return writer.row
        return await writer.commit()

    async def _record_offset(self, writer: ChunkWriter, offset: int) -> dict[str, Any]:
        values: dict[str, Any] = {"offset": offset, "expires": self._expiry()}
        if writer.new_length is not None:
            values["length"] = writer.new_length
            writer.new_length = None
        row = await self._update(writer.upload_id, values)
        await self._pipeline_offset(row)
        await self._publish("upload.updated", row)
        return row

    async def terminate(self, upload_id: str) -> None:
        """DELETE: remove an upload (a finished input's file stays, as a Pirus file)."""
        row = await self._row(upload_id, allow_expired=True)
        await self._lock_after_startup(upload_id, "DELETE")
        try:
            await self._remove(row, "the upload was terminated")
        finally:
            self._unlock(upload_id)

    async def _remove(self, row: dict[str, Any], reason: str | None) -> None:
        upload_id = row["id"]
        if reason and row.get("pipeline_id") is not None and row["status"] in (
                UPLOADING, CONCATENATING):
            try:
                await self.pipelines.fail(row["pipeline_id"], reason)
            except PirusError as e:
                self.log.warning("pirus: upload %s: pipeline %s: %s", upload_id,
                                 row["pipeline_id"], e.message)
        with contextlib.suppress(NotFound):
            await self.store.delete("uploads", upload_id)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.part_path(upload_id).unlink)
        self._hashers.pop(upload_id, None)
        self.events.publish("upload.deleted", {"id": upload_id})

    # -- reading ----------------------------------------------------------------------
    async def record(self, upload_id: str) -> dict[str, Any]:
        return await self.public(await self._row(upload_id))

    async def list(self, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        rows = await self.store.select("uploads", order_by="created DESC, id", limit=limit,
                                       offset=offset)
        total = await self.store.count("uploads")
        return [await self.public(_decode(r)) for r in rows], total

    async def completed_path(self, upload_id: str) -> Path:
        """The content of a finished input upload (for ``POST /pipelines {"upload_id"}``).

        The file stays owned by its Pirus file record: copy it, do not move it.
        """
        row = await self._row(upload_id)
        if row["status"] != COMPLETE or _is_partial(row):
            raise Conflict(f"upload {upload_id} is not finished ({row['status']})")
        if row["kind"] == "pipeline":
            raise Conflict(f"upload {upload_id} was already installed as pipeline "
                           f"{row['pipeline_id']}")
        if row["file_id"] is None:
            raise NotFound(f"upload {upload_id} has no file")
        return await self.files.content_path(row["file_id"])

    # -- finishing --------------------------------------------------------------------
    async def _maybe_finish(self, row: dict[str, Any]) -> dict[str, Any]:
        """Finish the upload if all its bytes are recorded; the caller holds its lock."""
        if row["status"] != UPLOADING or row["length"] is None or row["offset"] != row["length"]:
            return row
        if _is_partial(row):
            # A partial upload waits, untouched, to be concatenated (and expires otherwise).
            row = await self._update(row["id"], {"status": COMPLETE})
            await self._publish("upload.updated", row)
            return row
        try:
            digest = await self._digest(row)
            if row["kind"] == "pipeline":
                await self.pipelines.install_file(row["pipeline_id"], self.part_path(row["id"]))
                values: dict[str, Any] = {}
            else:
                values = {"file_id": await self._place_input(row, digest)}
        except (PirusError, OSError) as e:
            return await self._fail(row, e.message if isinstance(e, PirusError) else str(e))
        row = await self._update(row["id"], {**values, "status": COMPLETE, "expires": None,
                                             "sha256_state": digest, "error": None})
        self._hashers.pop(row["id"], None)
        await self._publish("upload.updated", row)
        self.log.info("pirus: upload %s complete (%s bytes, sha256 %s)", row["id"],
                      row["length"], digest)
        return row

    async def _digest(self, row: Mapping[str, Any]) -> str:
        running = self._hashers.get(row["id"])
        if running is not None and running.size == row["length"]:
            return str(running.digest.hexdigest())
        # Only after a restart between the last byte and the finish: read the file once.
        return await asyncio.to_thread(sha256_file, self.part_path(row["id"]))

    async def _place_input(self, row: Mapping[str, Any], digest: str) -> int:
        root = self.files.root_dir.resolve()
        folder = self.uploads_dir
        if not is_within(folder.resolve(), root):
            raise Forbidden(f"uploads_dir {folder} is outside the Jupyter root")
        loop = asyncio.get_running_loop()
        target = await loop.run_in_executor(
            self._io, _place_file, self.part_path(row["id"]), folder, row["filename"], row["id"])
        # A finish retried after a crash may find its file already registered: reuse it.
        api_path = to_api_path(root, target)
        for existing in await self.store.select("files", "path = ? AND source = ?",
                                                [api_path, "upload"]):
            if existing["sha256"] == digest and existing["size"] == row["length"]:
                return int(existing["id"])
        record = await self.files.register(target, source="upload", sha256=digest)
        return int(record["id"])

    async def _fail(self, row: dict[str, Any], message: str) -> dict[str, Any]:
        self.log.error("pirus: upload %s failed: %s", row["id"], message)
        row = await self._update(row["id"], {"status": ERROR, "error": message,
                                             "expires": self._expiry()})
        if row.get("pipeline_id") is not None:
            try:
                await self.pipelines.fail(row["pipeline_id"], message)
            except PirusError as e:
                self.log.warning("pirus: pipeline %s: %s", row["pipeline_id"], e.message)
        await self._publish("upload.updated", row)
        return row

    # -- concatenation ----------------------------------------------------------------
    async def _create_final(self, upload_id: str, part_ids: list[str], concat: str,
                            metadata: dict[str, str], kind: str, filename: str
                            ) -> dict[str, Any]:
        parts = []
        for part_id in part_ids:
            try:
                part = await self._row(part_id)
            except (NotFound, Gone) as e:
                raise InvalidRequest(f"partial upload {part_id} does not exist") from e
            if not _is_partial(part):
                raise InvalidRequest(f"upload {part_id} is not a partial upload")
            if part["status"] != COMPLETE:
                raise InvalidRequest(f"partial upload {part_id} is not finished (this server "
                                     "does not offer concatenation-unfinished)")
            parts.append(part)
        length = sum(int(p["length"]) for p in parts)
        if length > self.max_size:
            raise PayloadTooLarge(f"the concatenation ({length} bytes) is over the "
                                  f"{self.max_size} byte limit (Tus-Max-Size)")
        locked: list[str] = []
        try:
            for part_id in dict.fromkeys(part_ids):
                self._lock(part_id, "concatenation")
                locked.append(part_id)
            self._creating.add(upload_id)
            try:
                await asyncio.to_thread(self._truncate_part, upload_id, 0)
                row = _decode(await self.store.insert("uploads", {
                    "id": upload_id, "kind": kind, "filename": filename, "metadata": metadata,
                    "length": length, "offset": 0, "status": CONCATENATING,
                    "created": now_iso(), "expires": None, "concat": concat, "parts": part_ids,
                }))
            finally:
                self._creating.discard(upload_id)
            if kind == "pipeline":
                pipeline = await self.pipelines.create_uploading(filename, length, upload_id)
                row = await self._update(upload_id, {"pipeline_id": pipeline["id"]})
        except BaseException:
            for part_id in locked:
                self._unlock(part_id)
            raise
        await self._publish("upload.created", row)
        self._lock(upload_id, "concatenation")
        self.spawn(self._concatenate(row))
        return row

    def _start_concatenation(self, row: dict[str, Any]) -> None:
        """Restart an interrupted concatenation (at start-up)."""
        try:
            for part_id in [*dict.fromkeys(row["parts"]), row["id"]]:
                self._lock(part_id, "concatenation")
        except Locked:
            return
        self.spawn(self._concatenate(row))

    async def _concatenate(self, row: dict[str, Any]) -> None:
        upload_id = row["id"]
        part_ids = list(dict.fromkeys(row["parts"]))
        try:
            sources = []
            for part_id in row["parts"]:
                part = await self._row(part_id, allow_expired=True)
                if part["status"] != COMPLETE:
                    raise InvalidRequest(f"partial upload {part_id} is not finished")
                sources.append(self.part_path(part_id))
            loop = asyncio.get_running_loop()
            digest = await loop.run_in_executor(
                self._io, _concat_files, sources, self.part_path(upload_id))
            self._hashers[upload_id] = _RunningHash(digest, row["length"])
            row = await self._update(upload_id, {"offset": row["length"], "status": UPLOADING})
            row = await self._maybe_finish(row)
            # The partial uploads have served their purpose (the protocol lets the server drop
            # them): they would only hold disk space until they expire.
            if row["status"] == COMPLETE:
                for part_id in part_ids:
                    with contextlib.suppress(NotFound):
                        await self._remove(await self._row(part_id, allow_expired=True), None)
        except asyncio.CancelledError:
            raise
        except (PirusError, OSError) as e:
            with contextlib.suppress(NotFound):
                await self._fail(await self._row(upload_id, allow_expired=True),
                                 f"concatenation failed: {e}")
        finally:
            for part_id in [*part_ids, upload_id]:
                self._unlock(part_id)

    # -- expiry -----------------------------------------------------------------------
    async def cleanup_expired(self) -> int:
        """Remove uploads past their expiry; returns how many were removed."""
        removed = 0
        rows = await self.store.select("uploads", "expires IS NOT NULL AND expires < ?",
                                       [now_iso()])
        for row in rows:
            upload_id = row["id"]
            if upload_id in self._locks:
                continue  # being written right now: its expiry is renewed when that ends
            self._lock(upload_id, "expiry")
            try:
                await self._remove(_decode(row), "the upload expired")
                removed += 1
                self.log.info("pirus: upload %s expired and was removed", upload_id)
            finally:
                self._unlock(upload_id)
        return removed

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                await self.cleanup_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("pirus: upload expiry cleanup failed")
