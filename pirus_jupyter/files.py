"""File records, hashing, and paths that must stay under the Jupyter root."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import Conflict, Forbidden, InvalidRequest, NotFound
from .events import EventBus
from .hashing import sha256_file
from .models import public_file, public_run
from .store import Store, now_iso


def safe_filename(name: str, default: str = "file") -> str:
    """A bare file name: no path components, no control characters, never '.' or '..'."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    if name in ("", ".", ".."):
        return default
    return name[:255]


def unique_input_names(names: list[str]) -> list[str]:
    """The names input files get in a run's inputs folder: sanitized, ``config.json`` kept
    free, a repeated name numbered (``a.fastq``, ``a-2.fastq``). The form endpoint and the run
    use this same function, so a form offers exactly the names the run will have."""
    taken = {"config.json"}
    out = []
    for raw in names:
        name = safe_filename(raw)
        stem, dot, ext = name.partition(".")
        n = 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}{dot}{ext}"
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


def to_api_path(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


class FileService:
    def __init__(self, store: Store, events: EventBus, root_dir: Path) -> None:
        self.store = store
        self.events = events
        self.root_dir = root_dir

    async def list(self, run_id: int | None = None, limit: int = 100, offset: int = 0
                   ) -> tuple[list[dict[str, Any]], int]:
        where, params = (("run_id = ?", [run_id]) if run_id is not None else (None, []))
        rows = await self.store.select("files", where, params, limit=limit, offset=offset)
        total = await self.store.count("files", where, params)
        return [public_file(r) for r in rows], total

    async def get(self, file_id: int) -> dict[str, Any]:
        return public_file(await self.store.get("files", file_id))

    async def content_path(self, file_id: int) -> Path:
        """The host path of a file record's content, refused if it is not a regular file
        inside the Jupyter root (a symlink planted by a pipeline is never followed out)."""
        row = await self.store.get("files", file_id)
        path = self.root_dir / row["path"]
        if path.is_symlink() or not path.is_file():
            raise NotFound(f"file {file_id} has no content on disk")
        if not is_within(path.resolve(), self.root_dir.resolve()):
            raise Forbidden(f"file {file_id} is outside the Jupyter root")
        return path

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
        path = self.root_dir / row["path"]
        await self.store.delete_file(file_id)
        if path.is_file() and not path.is_symlink():
            await asyncio.to_thread(os.unlink, path)
        self.events.publish("file.deleted", {"id": file_id})
        if row["run_id"] is not None:
            self.events.publish("run.updated", public_run(await self.store.get("runs",
                                                                               row["run_id"])))
