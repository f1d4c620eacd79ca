"""The reference databases: the folders and files of ``databases_dir``, mounted read-only in
every run (and pushed to a cluster member that has no shared filesystem). Listed by
``GET /databases``, named in forms (the ``__PIRUS_DB_ALL__`` placeholder) and in runs."""

from __future__ import annotations

import asyncio
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


class DatabaseService:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def list(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(list_databases, self.folder)

    async def names(self) -> list[str]:
        return [item["name"] for item in await self.list()]
