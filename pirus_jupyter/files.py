"""File records, hashing, and paths that must stay under the Jupyter root."""

from __future__ import annotations

import asyncio
import os
import stat
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import Conflict, Forbidden, InvalidRequest, NotFound, RuleBroken
from .events import EventBus
from .hashing import sha256_file
from .models import public_file, public_run
from .store import Store, now_iso

FILE_SOURCES = ("upload", "run")  # what made a file record: an upload, or a run (its output)
NAME_MAX_BYTES = 255  # a file name on Linux file systems, in bytes of UTF-8
# Control characters, bidirectional and other format marks (U+202E shows "exe.txt" as
# "txt.exe"), lone surrogates (not UTF-8), line and paragraph separators.
_INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def safe_filename(name: str, default: str = "file") -> str:
    """A bare file name: no path components, no control, bidi or format characters, never
    '.' or '..'; longer than ``NAME_MAX_BYTES`` in UTF-8 is a 400 (before any byte is
    stored, rather than a failure when the file is finally written)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE).strip()
    if name in ("", ".", ".."):
        return default
    size = len(name.encode())
    if size > NAME_MAX_BYTES:
        raise InvalidRequest(f"file name too long: {size} bytes in UTF-8, at most "
                             f"{NAME_MAX_BYTES}", code="name_too_long")
    return name


def _numbered(stem: str, n: int, dot: str, ext: str) -> str:
    """``stem-n.ext``, the stem shortened (whole characters) to keep within NAME_MAX_BYTES."""
    tail = f"-{n}{dot}{ext}"
    room = NAME_MAX_BYTES - len(tail.encode())
    while len(stem.encode()) > room and stem:
        stem = stem[:-1]
    return f"{stem}{tail}"


def unique_input_names(names: list[str]) -> list[str]:
    """The names input files get in a run's inputs folder: sanitized, ``config.json`` kept
    free, a repeated name numbered (``a.fastq``, ``a-2.fastq``). The form endpoint and the run
    use this same function, so a form offers exactly the names the run will have."""
    taken = {"config.json"}
    last_number: dict[str, int] = {}  # per name: numbers below it are taken (linear, not n²)
    out = []
    for raw in names:
        name = original = safe_filename(raw)
        stem, dot, ext = name.partition(".")
        n = last_number.get(original, 1)
        while name in taken:
            n += 1
            name = _numbered(stem, n, dot, ext)
        last_number[original] = n
        taken.add(name)
        out.append(name)
    return out


def is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def resolve_under(root: Path, relative: str, *, must_exist: bool = True) -> Path:
    """Resolve a user-supplied API path (relative to ``root``) refusing any escape, including
    through symlinks."""
    if not isinstance(relative, str) or relative.strip() == "" or "\x00" in relative:
        raise InvalidRequest("path must be a non-empty string")
    parts = PurePosixPath(relative.lstrip("/")).parts
    if any(p == ".." for p in parts):
        raise Forbidden(f"path {relative!r} leaves the Jupyter root")
    real_root = root.resolve()
    candidate = (real_root / Path(*parts)) if parts else real_root
    resolved = candidate.resolve()
    if not is_within(resolved, real_root):
        raise Forbidden(f"path {relative!r} leaves the Jupyter root")
    if must_exist and not resolved.exists():
        raise NotFound(f"no file at {relative!r}")
    return resolved


def _record_parts(relative: str) -> tuple[str, ...]:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(
            p in ("", ".", "..") for p in parts):
        raise NotFound(f"no file at {relative!r}")
    return parts


def path_beneath(root: Path, relative: str) -> Path:
    """``root / relative`` when no component below the root is a symlink (NotFound
    otherwise): a file record names a place in the runs or uploads folder, and a link planted
    there (by a pipeline, say) must not make it another place."""
    current = root.resolve()
    for part in _record_parts(relative):
        current = current / part
        if current.is_symlink():
            raise NotFound(f"no file at {relative!r} (a symbolic link is on the way)")
    return current


def open_beneath(root: Path, relative: str) -> BinaryIO:
    """Open the regular file ``root / relative`` for reading, one component at a time with
    ``O_NOFOLLOW``: a symlink anywhere below the root, swapped in even between a check and
    the open, is refused (NotFound), and so is anything but a regular file (a FIFO would
    block the reader)."""
    parts = _record_parts(relative)
    directory = os.open(root.resolve(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=directory)
            os.close(directory)
            directory = child
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory)
    except OSError as e:
        raise NotFound(f"no file at {relative!r}") from e
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotFound(f"no regular file at {relative!r}")
    return os.fdopen(fd, "rb")


def open_in_folder(folder: Path, name: str, *, write: bool = False) -> BinaryIO | None:
    """The regular file ``name`` directly in ``folder`` (a run folder's logs or state: a
    pipeline writes there), opened by descriptor: the folder and the file with ``O_NOFOLLOW``,
    the file ``O_NONBLOCK`` (a FIFO never blocks the reader), then checked on the descriptor
    itself: a regular file with a single link (a hard link could share a host file's inode).
    None when nothing is there; RuleBroken when something else is."""
    flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | \
        os.O_NOCTTY | os.O_CLOEXEC
    try:
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RuleBroken(f"{folder.name}/ of the run folder is not a folder") from e
    try:
        fd = os.open(name, flags, dir_fd=directory)
    except FileNotFoundError:
        return None
    except OSError as e:  # ELOOP: a symlink; ENXIO: a FIFO opened for writing; EISDIR...
        raise RuleBroken(_not_regular(folder, name)) from e
    finally:
        os.close(directory)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise RuleBroken(_not_regular(folder, name))
    return os.fdopen(fd, "wb" if write else "rb", buffering=0 if write else -1)


def _not_regular(folder: Path, name: str) -> str:
    return (f"{folder.name}/{name} of the run folder is no longer a regular file of its own "
            "(the pipeline replaced it by a link, a FIFO or a folder?): it is never followed")


def to_api_path(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


class FileService:
    def __init__(self, store: Store, events: EventBus, root_dir: Path) -> None:
        self.store = store
        self.events = events
        self.root_dir = root_dir

    async def list(self, run_id: int | None = None, limit: int = 100, offset: int = 0, *,
                   source: str | None = None, newest_first: bool = False,
                   after: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Oldest first unless ``newest_first``; ``source``: "upload" or "run" only;
        ``after``: only records past that file id in this order (the next page)."""
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if source is not None:
            if source not in FILE_SOURCES:
                raise InvalidRequest(f"source must be one of {', '.join(FILE_SOURCES)}")
            clauses.append("source = ?")
            params.append(source)
        rows, total = await self.store.page(
            "files", " AND ".join(clauses) or None, params, descending=newest_first,
            limit=limit, offset=offset, after=after)
        return [public_file(r) for r in rows], total

    async def get(self, file_id: int) -> dict[str, Any]:
        return public_file(await self.store.get("files", file_id))

    async def content_path(self, file_id: int) -> Path:
        """The host path of a file record's content, refused unless it is a regular file at
        the recorded place (no symlink on the way: one planted by a pipeline is never
        followed out of the runs or uploads folder)."""
        row = await self.store.get("files", file_id)
        try:
            path = path_beneath(self.root_dir, row["path"])
        except NotFound:
            raise NotFound(f"file {file_id} has no content on disk") from None
        if not path.is_file():
            raise NotFound(f"file {file_id} has no content on disk")
        return path

    async def open_content(self, file_id: int) -> tuple[BinaryIO, str]:
        """A file record's content opened for reading (see ``open_beneath``) and its name."""
        row = await self.store.get("files", file_id)
        try:
            handle = await asyncio.to_thread(open_beneath, self.root_dir, row["path"])
        except NotFound:
            raise NotFound(f"file {file_id} has no content on disk") from None
        return handle, PurePosixPath(row["path"]).name

    async def register(self, path: Path, source: str, run_id: int | None = None,
                       sha256: str | None = None) -> dict[str, Any]:
        """Record an existing file under the root (hashing it off the loop when needed)."""
        if sha256 is None:
            sha256 = await asyncio.to_thread(sha256_file, path)
        row = await self.store.insert("files", {
            "name": path.name, "path": to_api_path(self.root_dir, path),
            "size": path.stat().st_size, "sha256": sha256, "source": source,
            "run_id": run_id, "created": now_iso(),
        })
        self.events.publish("file.created", public_file(row))
        return public_file(row)

    async def delete(self, file_id: int) -> None:
        """Delete a file record and its content; a running run's files are refused."""
        row = await self.store.get("files", file_id)
        if row["run_id"] is not None:
            run = await self.store.get("runs", row["run_id"])
            if run["status"] not in ("DONE", "ERROR", "CANCELED"):
                raise Conflict(f"file {file_id} belongs to run {run['id']}, which is "
                               f"{run['status']}")
        try:
            path: Path | None = path_beneath(self.root_dir, row["path"])
        except NotFound:
            path = None  # a link on the way: the record goes, nothing is deleted through it
        await self.store.delete_file(file_id)
        if path is not None and path.is_file() and not path.is_symlink():
            await asyncio.to_thread(os.unlink, path)
        self.events.publish("file.deleted", {"id": file_id})
        if row["run_id"] is not None:
            self.events.publish("run.updated", public_run(await self.store.get("runs",
                                                                               row["run_id"])))
