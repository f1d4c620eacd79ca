"""Part files: where the bytes of unfinished uploads live on disk, and how they get there.

Layout: one file ``<parts_dir>/<upload id>`` per upload, written at explicit positions
(``pwrite``) and ``fsync``-ed before its offset is recorded. A finished part file leaves this
folder: hard-linked (or copied, across filesystems) into the uploads folder, or handed to the
pipeline install.

:class:`PartStore` also keeps, in memory only, the running SHA-256 of each upload (fed as bytes
are written, so completion needs no second read of the file; rebuilt from disk once after a
restart) and the worker threads that do the uploads' file I/O, apart from the default executor
that other services share.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import Any

from ..files import sha256_file

COPY_BLOCK = 4 * 1024 * 1024
IOV_MAX = 1024  # buffers in one pwritev (Linux's limit)


def _load_sync_file_range() -> Callable[[int, int, int], None]:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``: start writing those dirty pages
    to disk without waiting. Started as each piece is written, it leaves the fsync at the end of
    a body little to wait for (an 8 MiB PATCH's fsync: ~5 ms -> ~1 ms). A no-op where missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, n: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    write = 2  # SYNC_FILE_RANGE_WRITE

    def start_writeback(fd: int, offset: int, n: int) -> None:
        call(fd, offset, n, write)  # a failure only means the fsync does all the work

    return start_writeback


start_writeback = _load_sync_file_range()


@dataclass
class RunningHash:
    """SHA-256 of the first ``size`` bytes of an upload, fed as bytes arrive."""

    digest: Any
    size: int


# -- blocking helpers (run in worker threads) ---------------------------------------------------
def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, position)
        view = view[n:]
        position += n


def _read_blocks(f: FileIO, length: int | None = None) -> Iterator[memoryview]:
    """The bytes of ``f`` (at most ``length`` of them if given) in blocks of at most
    :data:`COPY_BLOCK`, read into one reused buffer: a block is valid until the next is read."""
    view = memoryview(bytearray(COPY_BLOCK))
    remaining = COPY_BLOCK if length is None else length
    while remaining and (n := f.readinto(view[: min(remaining, COPY_BLOCK)])):
        yield view[:n]
        if length is not None:
            remaining -= n


def _hash_prefix(path: Path, length: int) -> Any:
    """SHA-256 of the first ``length`` bytes of ``path`` (after a restart, once per upload)."""
    digest = hashlib.sha256()
    read = 0
    with open(path, "rb", buffering=0) as f:
        for block in _read_blocks(f, length):
            digest.update(block)
            read += len(block)
    if read != length:
        raise OSError(f"{path} is shorter than its recorded offset {length}")
    return digest


def concat_files(sources: list[Path], target: Path) -> Any:
    """Stream the partial uploads into ``target`` and return the SHA-256 of the result.

    This is ``shutil.copyfileobj`` with the hash fed from the same 4 MiB buffer: one read of
    each part, never more than one block in memory (``sendfile`` would copy without the hash,
    and hashing afterwards would read everything a second time).
    """
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        position = 0
        for source in sources:
            with open(source, "rb", buffering=0) as src:
                for block in _read_blocks(src):
                    digest.update(block)
                    _pwrite_all(fd, block, position)
                    position += len(block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest


def _unique_names(filename: str) -> Iterator[str]:
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
        try:
            shutil.copyfile(part, staging)  # sendfile/copy_file_range: no bytes through Python
            with open(staging, "rb+") as f:
                os.fsync(f.fileno())
            target = _link_unique(staging, folder, filename)
        except BaseException:
            # A full disk: give back the space of the half copy (the part file stays, so the
            # finish can be retried once there is room).
            with contextlib.suppress(OSError):
                staging.unlink()
            raise
        staging.unlink()
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    return target


def _truncate(path: Path, size: int) -> None:
    """Create ``path`` if needed, cut it to ``size`` bytes and make that durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


class PartFile:
    """One part file open for writing a request body. Blocking: call it in the I/O threads."""

    def __init__(self, path: Path, start: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        # Bytes past the recorded offset were never acknowledged: drop them so that the file
        # never holds stale bytes after this body (also covers a request racing the start-up
        # reconciliation).
        os.ftruncate(self.fd, start)

    def write(self, data: bytes | bytearray | memoryview, position: int) -> None:
        _pwrite_all(self.fd, data, position)
        start_writeback(self.fd, position, len(data))

    def write_pieces(self, pieces: list[bytes], position: int) -> None:
        """Write ``pieces`` one after the other from ``position`` in as few system calls as
        possible (no joining copy), then start their writeback."""
        if len(pieces) == 1:
            self.write(pieces[0], position)
            return
        views = [memoryview(piece) for piece in pieces if piece]
        start = position
        while views:
            n = os.pwritev(self.fd, views[:IOV_MAX], position)
            if n <= 0:
                raise OSError(f"pwritev wrote nothing at {position}")
            position += n
            while views and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]
        start_writeback(self.fd, start, position - start)

    def sync(self) -> None:
        os.fsync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


class PartStore:
    """The part files of all uploads in ``parts_dir``, with their running hashes."""

    def __init__(self, parts_dir: Path) -> None:
        self.parts_dir = Path(parts_dir)
        # In memory only: lost on restart, then rebuilt from disk when next needed.
        self.hashes: dict[str, RunningHash] = {}
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pirus-tus")
        self.parts_dir.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.parts_dir / upload_id

    def run(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """Run blocking file I/O in the uploads' own threads."""
        return asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def shutdown(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    # -- whole part files -------------------------------------------------------------------
    async def truncate(self, upload_id: str, size: int) -> None:
        await asyncio.to_thread(_truncate, self.path(upload_id), size)

    async def size(self, upload_id: str) -> int | None:
        """Bytes on disk, or ``None`` when there is no part file."""
        return await asyncio.to_thread(_size, self.path(upload_id))

    async def delete(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(upload_id).unlink)
        self.forget(upload_id)

    async def listing(self) -> list[Path]:
        return await asyncio.to_thread(lambda: list(self.parts_dir.iterdir()))

    async def delete_orphan(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink)

    async def place(self, upload_id: str, folder: Path, filename: str) -> Path:
        """Move a finished part file into ``folder`` under a free name based on ``filename``."""
        target: Path = await self.run(_place_file, self.path(upload_id), folder, filename,
                                      upload_id)
        return target

    async def concatenate(self, part_ids: list[str], upload_id: str, length: int) -> None:
        """Write the parts one after the other into ``upload_id``'s part file (and hash it)."""
        sources = [self.path(part_id) for part_id in part_ids]
        # Looked up at call time: a test slows it down to watch a concatenation in progress.
        digest = await self.run(concat_files, sources, self.path(upload_id))
        self.hashes[upload_id] = RunningHash(digest, length)

    # -- running hashes ---------------------------------------------------------------------
    def running_hash(self, upload_id: str, size: int) -> RunningHash:
        """The running hash of the first ``size`` bytes, read from disk if not in memory.
        Blocking: call it in the I/O threads."""
        running = self.hashes.get(upload_id)
        if running is None or running.size != size:
            running = RunningHash(_hash_prefix(self.path(upload_id), size), size)
            self.hashes[upload_id] = running
        return running

    def forget(self, upload_id: str) -> None:
        """Drop a running hash whose state is unknown or no longer needed."""
        self.hashes.pop(upload_id, None)

    async def sha256(self, upload_id: str, size: int) -> str:
        """The SHA-256 of a whole part file of ``size`` bytes."""
        running = self.hashes.get(upload_id)
        if running is not None and running.size == size:
            return str(running.digest.hexdigest())
        # Only after a restart between the last byte and the finish: read the file once.
        return await asyncio.to_thread(sha256_file, self.path(upload_id))
