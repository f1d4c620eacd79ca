"""Pipelines: install (validate, import into LXD, extract form and icon), list, uninstall."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from .backend.base import Backend
from .databases import DatabaseService
from .errors import Conflict, InvalidPackage, NotFound, PackageStoreFull, PirusError
from .events import EventBus
from .forms import normalize_form
from .hashing import BLOCK
from .models import ACTIVE_RUN_STATUSES, PipelineStatus, RunStatus, public_pipeline
from .packaging.inspect import PackageInfo, inspect_package
from .store import Store, now_iso

PACKAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")


def _package_suffix(name: str) -> str:
    for suffix in PACKAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return suffix
    return ".tar"


class PipelineService:
    def __init__(self, store: Store, events: EventBus, backend: Backend, *, packages_dir: Path,
                 max_package_size: int, databases: DatabaseService, prefix: str = "pirus",
                 log: logging.Logger) -> None:
        self.store = store
        self.databases = databases
        self.events = events
        self.backend = backend
        self.packages_dir = packages_dir
        self.max_package_size = max_package_size
        self.prefix = prefix
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()
        # Pipelines this process created: start-up recovery must not mistake them for ones a
        # previous process left INSTALLING.
        self._created_here: set[int] = set()
        packages_dir.mkdir(parents=True, exist_ok=True)

    # -- reading ----------------------------------------------------------------------
    async def list(self, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("status = ?", [status]) if status else (None, [])
        return [public_pipeline(r) for r in await self.store.select("pipelines", where, params)]

    async def get(self, pipeline_id: int) -> dict[str, Any]:
        return public_pipeline(await self.store.get("pipelines", pipeline_id))

    async def row(self, pipeline_id: int) -> dict[str, Any]:
        """The internal record (host paths, LXD alias): never sent to clients."""
        return await self.store.get("pipelines", pipeline_id)

    async def form(self, pipeline_id: int, input_names: list[str] | None = None
                   ) -> dict[str, Any]:
        """The normalised draft-07 form, its placeholders filled with ``input_names`` and the
        reference databases' names."""
        row = await self.row(pipeline_id)
        raw = None
        if row.get("form_file"):
            raw = json.loads(await asyncio.to_thread(Path(row["form_file"]).read_text))
        return normalize_form(raw, input_names, await self.databases.names())

    async def icon_path(self, pipeline_id: int) -> Path:
        row = await self.row(pipeline_id)
        if not row.get("icon_file"):
            raise NotFound(f"pipeline {pipeline_id} has no icon")
        return Path(row["icon_file"])

    async def document_path(self, pipeline_id: int, name: str) -> Path:
        row = await self.row(pipeline_id)
        if name not in (row.get("documents") or []):
            raise NotFound(f"pipeline {pipeline_id} has no document {name!r}")
        return Path(row["root_path"]) / "documents" / name

    async def package_path(self, pipeline_id: int) -> Path:
        row = await self.row(pipeline_id)
        if row["status"] != PipelineStatus.READY or not row.get("pipeline_file"):
            raise Conflict(f"pipeline {pipeline_id} is {row['status']}, not READY")
        return Path(row["pipeline_file"])

    # -- installing -------------------------------------------------------------------
    async def _create(self, name: str, status: PipelineStatus, size: int = 0,
                      upload_id: str | None = None) -> dict[str, Any]:
        row = await self.store.insert("pipelines", {
            "name": name, "status": status.value, "size": size, "upload_offset": 0,
            "created": now_iso(), "upload_id": upload_id, "developers": [], "documents": [],
            "limits": {},
        })
        self._created_here.add(row["id"])
        root = self.packages_dir / str(row["id"])
        row = await self.store.update("pipelines", row["id"], {"root_path": str(root)})
        self.events.publish("pipeline.created", public_pipeline(row))
        return row

    async def _set(self, pipeline_id: int, **values: Any) -> dict[str, Any]:
        row = await self.store.update("pipelines", pipeline_id, values)
        self.events.publish("pipeline.updated", public_pipeline(row))
        return row

    async def installed_copy(self, sha256: str) -> dict[str, Any] | None:
        """The READY pipeline whose image is these very bytes (the fingerprint is the
        package's sha256, so the same name and version too), if any."""
        rows = await self.store.select("pipelines", "fingerprint = ? AND status = ?",
                                       [sha256, PipelineStatus.READY.value])
        return rows[0] if rows else None

    async def install_from_path(self, source: Path) -> tuple[dict[str, Any], bool]:
        """Copy a package file (from the Jupyter root or a finished upload) and install it.
        Returns the pipeline and whether it is new: a package identical to an installed
        pipeline answers with that pipeline instead of a second install that would fail.

        Copied, not linked: the source stays the user's to overwrite in place, and the stored
        package must keep the bytes LXD imported. The copy hashes what it writes, so the
        install does not read the package again for its fingerprint.
        """
        if not source.is_file():
            raise NotFound(f"no package file at {source.name!r}")
        size = source.stat().st_size
        if size > self.max_package_size:
            raise InvalidPackage(f"package is {size} bytes, over the {self.max_package_size} "
                                 "byte limit", code="package_too_large")
        # Copied aside first: a duplicate then leaves no pipeline row behind.
        staging = self.packages_dir / f".incoming-{secrets.token_hex(8)}"
        try:
            sha256 = await asyncio.to_thread(self._copy_in, source, staging)
        except OSError as e:
            await asyncio.to_thread(self._unlink, staging)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PackageStoreFull(f"no room to store the package: {e}") from e
            raise InvalidPackage(f"cannot copy the package: {e}", code="copy_failed") from e
        existing = await self.installed_copy(sha256)
        if existing is not None:
            await asyncio.to_thread(self._unlink, staging)
            return public_pipeline(existing), False
        row = await self._create(source.name, PipelineStatus.INSTALLING, size=size)
        target = Path(row["root_path"]) / ("package" + _package_suffix(source.name))
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, staging, target)
        row = await self._set(row["id"], pipeline_file=str(target), upload_offset=size)
        self._spawn(row["id"], sha256)
        return public_pipeline(row), True

    @staticmethod
    def _unlink(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".part").unlink(missing_ok=True)

    @staticmethod
    def _copy_in(source: Path, target: Path) -> str:
        """Copy ``source`` to ``target``; returns the sha256 of the bytes written."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        with open(source, "rb") as src, open(partial, "wb") as dst:
            while block := src.read(BLOCK):
                digest.update(block)
                dst.write(block)
        os.replace(partial, target)  # never a half-copied package under the final name
        return digest.hexdigest()

    async def create_uploading(self, filename: str, size: int | None, upload_id: str
                               ) -> dict[str, Any]:
        return await self._create(filename, PipelineStatus.UPLOADING, size=size or 0,
                                  upload_id=upload_id)

    async def set_upload_offset(self, pipeline_id: int, offset: int) -> None:
        await self._set(pipeline_id, upload_offset=offset)

    async def install_file(self, pipeline_id: int, path: Path, sha256: str | None = None
                           ) -> int:
        """Take ownership of a finished upload's file (moved, not copied) and install it in
        the background. ``sha256``: the digest the upload computed while receiving the file;
        the install then reads the package only for its manifest. Returns the pipeline that
        holds the package: an installed one with the same bytes, whose id replaces the
        upload's own (then removed), or ``pipeline_id``."""
        existing = await self.installed_copy(sha256) if sha256 else None
        if existing is not None and existing["id"] != pipeline_id:
            await asyncio.to_thread(self._unlink, path)
            await self._delete_row(await self.row(pipeline_id))
            return int(existing["id"])
        row = await self.row(pipeline_id)
        target = Path(row["root_path"]) / ("package" + _package_suffix(row["name"]))
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.move, path, target)
        size = target.stat().st_size
        await self._set(pipeline_id, status=PipelineStatus.INSTALLING.value,
                        pipeline_file=str(target), size=size, upload_offset=size)
        self._spawn(pipeline_id, sha256)
        return pipeline_id

    async def fail(self, pipeline_id: int, message: str) -> None:
        await self._set(pipeline_id, status=PipelineStatus.ERROR.value, error=message)

    def _spawn(self, pipeline_id: int, sha256: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._install(pipeline_id, sha256))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_installs(self) -> None:
        """Wait for background installs (used at shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def resume_installs(self) -> None:
        """After a restart, packages left INSTALLING are installed again (install is idempotent)."""
        for row in await self.store.select("pipelines", "status = ?", ["INSTALLING"]):
            if row["id"] in self._created_here:
                continue
            if row.get("pipeline_file") and Path(row["pipeline_file"]).is_file():
                self._spawn(row["id"])
            else:
                await self.fail(row["id"], "the server stopped before the package was stored")

    async def _install(self, pipeline_id: int, sha256: str | None = None) -> None:
        """Inspect, import into LXD and record; ``sha256`` is the package's digest when known
        (hashed otherwise, e.g. when a restart resumes the install)."""
        row = await self.row(pipeline_id)
        alias = (row.get("lxd_alias")
                 or f"{self.prefix}-pipeline-{pipeline_id}-{secrets.token_hex(4)}")
        try:
            info = await asyncio.to_thread(
                inspect_package, Path(row["pipeline_file"]), self.max_package_size, sha256=sha256)
            await self._check_not_installed(pipeline_id, info)
            await self._set(pipeline_id, lxd_alias=alias)
            fingerprint = await asyncio.to_thread(
                self.backend.import_image, Path(row["pipeline_file"]), alias, info.fingerprint)
            values = await asyncio.to_thread(self._write_assets, Path(row["root_path"]), info)
        except PirusError as e:
            await self._install_failed(pipeline_id, alias, e.message)
            return
        except Exception as e:  # an install never leaves a pipeline stuck in INSTALLING
            self.log.exception("pirus: installing pipeline %s failed", pipeline_id)
            await self._install_failed(pipeline_id, alias, f"unexpected error: {e}")
            return
        m = info.manifest
        await self._set(
            pipeline_id, status=PipelineStatus.READY.value, error=None, name=m["name"],
            description=m.get("description"), version=m.get("version"),
            pirus_api=m.get("pirus_api"), license=m.get("license"), developers=m["developers"],
            limits=m["limits"], manifest=m, fingerprint=fingerprint,
            lxd_inputs_path=m["inputs"], lxd_outputs_path=m["outputs"],
            lxd_logs_path=m["logs"], lxd_db_path=m["databases"], lxd_run_cmd=m["run"],
            **values,
        )

    async def _check_not_installed(self, pipeline_id: int, info: PackageInfo) -> None:
        m = info.manifest
        others = await self.store.select(
            "pipelines", "name = ? AND coalesce(version, '') = ? AND status = ? AND id != ?",
            [m["name"], m.get("version") or "", "READY", pipeline_id])
        if others:
            raise InvalidPackage(
                f"{m['name']} {m.get('version') or ''} is already installed as pipeline "
                f"{others[0]['id']}".replace("  ", " "), code="already_installed")

    @staticmethod
    def _write_assets(root: Path, info: PackageInfo) -> dict[str, Any]:
        """Form, icon and documents copied out of the package for serving."""
        values: dict[str, Any] = {"form_file": None, "icon_file": None, "documents": []}
        if info.form is not None:  # checked by inspect_package
            (root / "form.json").write_bytes(info.form)
            values["form_file"] = str(root / "form.json")
        if info.icon is not None:
            icon = root / ("icon" + (Path(info.manifest["icon"]).suffix or ".png"))
            icon.write_bytes(info.icon)
            values["icon_file"] = str(icon)
        if info.documents:
            (root / "documents").mkdir(exist_ok=True)
            for name, content in info.documents.items():
                (root / "documents" / name).write_bytes(content)
            values["documents"] = sorted(info.documents)
        return values

    async def _install_failed(self, pipeline_id: int, alias: str, message: str) -> None:
        try:
            await asyncio.to_thread(self.backend.delete_image, alias)
        except PirusError as e:
            self.log.warning("pirus: could not remove image %s: %s", alias, e.message)
        await self._set(pipeline_id, status=PipelineStatus.ERROR.value, error=message)

    # -- removing ---------------------------------------------------------------------
    async def remove(self, pipeline_id: int) -> None:
        """Uninstall: refused while runs are active; the image alias and files go."""
        row = await self.row(pipeline_id)
        if row["status"] in (PipelineStatus.INSTALLING, PipelineStatus.UPLOADING):
            raise Conflict(f"pipeline {pipeline_id} is {row['status']}; wait for it to finish")
        active = [s.value for s in ACTIVE_RUN_STATUSES] + [RunStatus.WAITING.value]
        marks = ",".join("?" * len(active))
        count = await self.store.count(
            "runs", f"pipeline_id = ? AND status IN ({marks})", [pipeline_id, *active])
        if count:
            raise Conflict(f"pipeline {pipeline_id} has {count} active run(s)",
                           code="pipeline_in_use")
        await self._delete_row(row)

    async def _delete_row(self, row: dict[str, Any]) -> None:
        if row.get("lxd_alias"):
            await asyncio.to_thread(self.backend.delete_image, row["lxd_alias"])
        await self.store.delete("pipelines", row["id"])
        if row.get("root_path"):
            await asyncio.to_thread(shutil.rmtree, row["root_path"], True)
        self.events.publish("pipeline.deleted", {"id": row["id"]})

    async def remove_failed(self) -> list[int]:
        """Every pipeline whose install failed, removed in one action; their ids."""
        removed = []
        for row in await self.store.select("pipelines", "status = ?",
                                           [PipelineStatus.ERROR.value]):
            await self._delete_row(row)
            removed.append(int(row["id"]))
        return removed
