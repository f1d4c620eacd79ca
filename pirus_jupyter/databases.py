"""The reference databases: the folders and files of ``databases_dir``, mounted read-only in
every run (and pushed to a cluster member that has no shared filesystem). Listed by
``GET /databases``, named in forms (the ``__PIRUS_DB_ALL__`` placeholder) and in runs."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any


def list_databases(folder: Path) -> list[dict[str, Any]]:
    """One entry per visible item of ``folder``: its name, size in bytes (a folder's files
    added up) and path relative to the databases folder."""
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        size = entry.stat().st_size if entry.is_file() else sum(
            p.stat().st_size for p in entry.rglob("*") if p.is_file())
        out.append({"name": entry.name, "size": size, "path": entry.name})
    return out


def database_digests(folder: Path) -> dict[str, str]:
    """Per visible item of ``folder``, a sha256 of its files' relative paths, sizes and
    modification times (nanoseconds). Not of their bytes: databases run to many gigabytes and
    this is taken at every run; a database is replaced or updated by writing files, which
    changes their times (only a rewrite keeping size and time on purpose goes unseen)."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        digest = hashlib.sha256()
        items = [entry] if not entry.is_dir() else sorted(entry.rglob("*"))
        for item in items:
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.relative_to(folder).as_posix()}\0{stat.st_size}\0"
                              f"{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        out[entry.name] = digest.hexdigest()
    return out


class DatabaseService:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def list(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(list_databases, self.folder)

    async def names(self) -> list[str]:
        return [item["name"] for item in await self.list()]
