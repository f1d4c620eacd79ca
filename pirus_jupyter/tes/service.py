"""GA4GH TES 1.1 on Pirus runs: a task is a run (``origin: "tes"``) of an installed pipeline's
image whose command is the task's executors (mapping.task_script).

Create checks the whole task before anything is made (a 400 creates nothing): the image names
an installed pipeline, every ``file://`` input and output lies inside the Jupyter root. Once a
task's run has ended, ``finalise`` reads what the script left in the run's outputs folder
(executor exit codes, times, stdout/stderr tails: untrusted, read by descriptor and bounded),
writes the outputs back to their ``file://`` URLs and records the task's final TES state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import Forbidden, NotFound, PirusError, RuleBroken
from ..events import EventBus
from ..files import is_within, open_in_folder, resolve_under, to_api_path
from ..models import FINAL_RUN_STATUSES, public_run
from ..runs.folder import RunPaths
from ..runs.manager import RunManager
from ..store import Store, now_iso
from . import mapping
from .models import (
    DEFAULT_PAGE_SIZE,
    MAX_FILES,
    MAX_PAGE_SIZE,
    STATES,
    TesInvalid,
    check_view,
    file_url_path,
    validate_task,
)

ORIGIN = "tes"
SMALL_FILE = 64  # an exit code or a time stamp


class TesNotFound(NotFound):
    code = "task_not_found"


def _read_small(folder: Path, name: str, size: int) -> bytes | None:
    try:
        handle = open_in_folder(folder, name)
    except RuleBroken:
        return None  # planted by the task: not read
    if handle is None:
        return None
    with handle as f:
        return f.read(size)


def _tail(folder: Path, name: str) -> str:
    try:
        handle = open_in_folder(folder, name)
    except RuleBroken:
        return ""
    if handle is None:
        return ""
    with handle as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - mapping.LOG_TAIL_BYTES))
        return f.read(mapping.LOG_TAIL_BYTES).decode(errors="replace")


class TesService:
    def __init__(self, store: Store, events: EventBus, runs: RunManager, root_dir: Path,
                 log: logging.Logger, shared_folders: list[str] | None = None) -> None:
        self.store = store
        self.events = events
        self.runs = runs
        self.root_dir = root_dir
        self.log = log
        self._finalising: dict[int, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None
        self.shared_folders = list(shared_folders or [])
        self._shared: list[str] = []  # their host paths, once checked at start

    def _check_shared(self) -> list[str]:
        paths = []
        for folder in self.shared_folders:
            path = resolve_under(self.root_dir, folder, must_exist=False)
            path.mkdir(parents=True, exist_ok=True)
            paths.append(str(path))
        return paths

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._shared = await asyncio.to_thread(self._check_shared)
        if self._shared and self.runs.data_transfer != "mounts":
            self.log.warning("pirus: tes_shared_folders need data_transfer mounts: not shared")
            self._shared = []
        # Subscribed before start() returns: no run's end is missed, and the server's own
        # subscribers are all there once it has started.
        sub = self.events.subscribe()
        self._watch = asyncio.get_running_loop().create_task(self._watch_runs(sub))

    async def stop(self) -> None:
        tasks = [t for t in (self._watch, *self._finalising.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_runs(self, sub: Any) -> None:
        """Finalise each task whose run ends; at start (and after being cut off the bus),
        those that ended unseen."""
        while True:
            try:
                for row in await self.store.select(
                        "runs", "origin = ? AND status IN ('DONE', 'ERROR', 'CANCELED') AND "
                        "json_extract(task, '$.pirus.state') IS NULL", [ORIGIN]):
                    self._finalise_soon(row["id"])
                while True:
                    event = await sub.get()
                    if event["type"] == "subscription.overflow":
                        break
                    data = event.get("data") or {}
                    if event["type"] == "run.updated" and data.get("origin") == ORIGIN and \
                            data.get("status") in FINAL_RUN_STATUSES:
                        self._finalise_soon(data["id"])
            finally:
                self.events.unsubscribe(sub)
            sub = self.events.subscribe()

    def _finalise_soon(self, run_id: int) -> None:
        if run_id in self._finalising:
            return
        task = asyncio.get_running_loop().create_task(self._finalise(run_id))
        self._finalising[run_id] = task
        task.add_done_callback(lambda _t: self._finalising.pop(run_id, None))

    # -- create ----------------------------------------------------------------------------
    async def _pipeline_for(self, image: str) -> dict[str, Any]:
        """The READY pipeline an executor's image names: ``name``, ``name:version``, its
        LXD image alias, or its fingerprint (or a prefix of 12 hex digits or more)."""
        rows = await self.store.select("pipelines", "status = 'READY'", order_by="id desc")
        name, _, version = image.rpartition(":")
        for row in rows:
            if row["name"] == image or (name and row["name"] == name and
                                        str(row.get("version")) == version):
                return row
        for row in rows:
            fingerprint = row.get("fingerprint") or ""
            if image == row.get("lxd_alias") or (len(image) >= 12 and
                                                  fingerprint.startswith(image)):
                return row
        raise TesInvalid(f"unknown image {image!r}: name an installed pipeline (name or "
                         "name:version), its LXD image alias or its fingerprint")

    def _root_path(self, url: str, where: str, *, must_exist: bool) -> Path:
        path = file_url_path(url, where)
        root = self.root_dir.resolve()
        candidate = Path(path)
        if not candidate.is_absolute():
            raise TesInvalid(f"{where}: {url!r} is not an absolute file:// URL")
        if not is_within(candidate.resolve(), root):
            raise TesInvalid(f"{where}: {url!r} is outside the Jupyter root ({root})")
        relative = candidate.resolve().relative_to(root).as_posix()
        try:
            return resolve_under(root, relative or ".", must_exist=must_exist)
        except (Forbidden, NotFound) as e:
            raise TesInvalid(f"{where}: {url!r}: {e.message}") from e

    def _resolve_inputs(self, task: dict[str, Any]
                        ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], str | None]:
        """(Pirus inputs, (name, container path) to place, why the task cannot run): blocks,
        run it in a thread."""
        inputs: list[dict[str, Any]] = []
        placed: list[tuple[str, str]] = []
        for i, item in enumerate(task.get("inputs", [])):
            url = item.get("url")
            if url is None:
                continue
            if urlsplit(url).scheme in ("http", "https"):
                return [], [], (f"inputs[{i}]: {url} cannot be fetched: this Pirus server "
                                "downloads nothing (no internet access); copy the file into "
                                "the Jupyter root and give its file:// URL")
            source = self._root_path(url, f"inputs[{i}].url", must_exist=True)
            if item["type"] == "FILE":
                if not source.is_file():
                    raise TesInvalid(f"inputs[{i}]: {url!r} is not a regular file")
                files = [(source, item["path"])]
            else:
                if not source.is_dir():
                    raise TesInvalid(f"inputs[{i}]: {url!r} is not a folder")
                files = []
                for folder, dirs, names in os.walk(source):
                    dirs.sort()
                    for name in sorted(names):
                        path = Path(folder) / name
                        if not path.is_symlink() and path.is_file():
                            rel = path.relative_to(source).as_posix()
                            files.append((path, f"{item['path']}/{rel}"))
            if len(inputs) + len(files) > MAX_FILES:
                raise TesInvalid(f"inputs: more than {MAX_FILES} files")
            for j, (path, target) in enumerate(files):
                name = mapping.input_name(i, j, path.name)
                inputs.append({"name": name, "path": to_api_path(self.root_dir, path),
                               "size": path.stat().st_size})
                placed.append((name, target))
        for i, out in enumerate(task.get("outputs", [])):
            self._root_path(out["url"], f"outputs[{i}].url", must_exist=False)
        return inputs, placed, None

    async def create(self, body: Any) -> dict[str, str]:
        task = validate_task(body)
        images = {ex["image"] for ex in task["executors"]}
        pipelines = [await self._pipeline_for(image) for image in sorted(images)]
        if len({p["id"] for p in pipelines}) > 1:
            raise TesInvalid("executors: all executors of a task run in one container, so "
                             "they must name the same image")
        inputs, placed, cannot = await asyncio.to_thread(self._resolve_inputs, task)
        limits: dict[str, str] = {}
        resources = task.get("resources", {})
        if resources.get("cpu_cores"):
            limits["cpu"] = str(resources["cpu_cores"])
        if resources.get("ram_gb"):
            limits["memory"] = f"{max(1, round(resources['ram_gb'] * 1000))}MB"
        if cannot:
            task["pirus"] = {"state": "SYSTEM_ERROR", "system_error": cannot}
        row = await self.runs.create_task(
            pipelines[0]["id"], task.get("name") or "TES task", inputs,
            mapping.task_script(task, placed), ORIGIN, limits, task, failed=cannot,
            mounts=self._shared)
        return {"id": str(row["id"])}

    # -- read ------------------------------------------------------------------------------
    async def _row(self, task_id: str) -> dict[str, Any]:
        if not (task_id.isascii() and task_id.isdigit() and len(task_id) < 19):
            raise TesNotFound(f"no task {task_id!r}")
        rows = await self.store.select("runs", "id = ? AND origin = ?", [int(task_id), ORIGIN])
        if not rows:
            raise TesNotFound(f"no task {task_id!r}")
        return rows[0]

    async def get(self, task_id: str, view: str | None) -> dict[str, Any]:
        view = check_view(view)
        return mapping.task_view(await self._row(task_id), view)

    async def list(self, *, view: str | None, name_prefix: str | None, state: str | None,
                   tags: dict[str, str], page_size: int | None, page_token: str | None
                   ) -> dict[str, Any]:
        view = check_view(view)
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise TesInvalid(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        clauses, params = ["origin = ?"], [ORIGIN]
        if page_token:
            if not (page_token.isascii() and page_token.isdigit() and len(page_token) < 19):
                raise TesInvalid(f"page_token {page_token!r} is not one this server gave")
            clauses.append("id < ?")
            params.append(int(page_token))
        if name_prefix:
            clauses.append("substr(json_extract(task, '$.name'), 1, ?) = ?")
            params += [len(name_prefix), name_prefix]
        if state:
            if state not in STATES:
                raise TesInvalid(f"state must be one of {', '.join(STATES)}")
            sql, extra = mapping.sql_for_state(state)
            clauses.append(f"({sql})")
            params += extra
        for key, value in tags.items():
            clauses.append("EXISTS (SELECT 1 FROM json_each(task, '$.tags') "
                           "WHERE key = ? AND (? = '' OR value = ?))")
            params += [key, value, value]
        rows = await self.store.select("runs", " AND ".join(clauses), params,
                                       order_by="id desc", limit=size + 1)
        answer: dict[str, Any] = {"tasks": [mapping.task_view(r, view) for r in rows[:size]]}
        if len(rows) > size:
            answer["next_page_token"] = str(rows[size - 1]["id"])
        return answer

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task; one that has already ended is left as it is (no error: a workflow
        engine cancels all its tasks when it stops, ended or not)."""
        row = await self._row(task_id)
        if row["status"] not in FINAL_RUN_STATUSES:
            with contextlib.suppress(PirusError):  # ended meanwhile: nothing to cancel
                await self.runs.cancel(row["id"])
        return {}

    def service_info(self, version: str) -> dict[str, Any]:
        return {
            "id": "org.pirus.jupyter.tes",
            "name": "Pirus for Jupyter TES",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "GA4GH TES 1.1 on Pirus: each task is a Pirus run in an LXD "
                           "container of an installed pipeline's image",
            "organization": {"name": "Pirus for Jupyter",
                             "url": "https://github.com/pirus-jupyter"},
            "version": version,
            "environment": "jupyter",
            "storage": [self.root_dir.resolve().as_uri(),
                        *(Path(p).as_uri() for p in self._shared)],
            "tesResources_backend_parameters": [],
        }

    # -- the end of a task -------------------------------------------------------------------
    async def _finalise(self, run_id: int) -> None:
        try:
            row = await self.store.get("runs", run_id)
            task = row.get("task") or {}
            if (task.get("pirus") or {}).get("state") or \
                    row["status"] not in FINAL_RUN_STATUSES:
                return
            result = await asyncio.to_thread(self._read_results, row)
            if row["status"] == "DONE" and not result.get("system_error"):
                try:
                    result["outputs_log"] = await asyncio.to_thread(self._write_outputs, row)
                except (OSError, PirusError) as e:
                    message = e.message if isinstance(e, PirusError) else str(e)
                    result["system_error"] = f"outputs not written back: {message}"
            result["state"] = mapping.final_state(row, result["executor_logs"],
                                                  result.get("system_error"))
            result["finalised"] = now_iso()
            updated = await self.store.update("runs", run_id, {"task": {**task, "pirus": result}})
            self.events.publish("run.updated", public_run(updated))
        except asyncio.CancelledError:
            raise
        except Exception:  # a task left RUNNING would hang its workflow: say it in the log
            self.log.exception("pirus: TES task %s could not be finalised", run_id)

    def _read_results(self, row: dict[str, Any]) -> dict[str, Any]:
        """The executors' exit codes, times and output tails, and the script's own error."""
        folder = RunPaths.of(row).outputs / mapping.TES_DIR
        logs = []
        for i in range(len((row.get("task") or {}).get("executors", []))):
            code = _read_small(folder, f"{i}.exit", SMALL_FILE)
            if code is None:
                break  # not run: an earlier one failed, or the task was canceled
            entry: dict[str, Any] = {"exit_code": None}
            with contextlib.suppress(ValueError):
                entry["exit_code"] = int(code.strip())
            for key, name in (("start_time", "start"), ("end_time", "end")):
                stamp = (_read_small(folder, f"{i}.{name}", SMALL_FILE) or b"").strip()
                if stamp and stamp.decode(errors="replace").replace(":", "").replace(
                        "-", "").replace("T", "").rstrip("Z").isdigit():
                    entry[key] = stamp.decode()
            entry["stdout"] = _tail(folder, f"{i}.out")
            entry["stderr"] = _tail(folder, f"{i}.err")
            logs.append(entry)
        result: dict[str, Any] = {"executor_logs": logs}
        error = _read_small(folder, "system_error", 4096)
        if error:
            result["system_error"] = error.decode(errors="replace").strip()
        return result

    def _write_outputs(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """Copy each output from the run's outputs folder to its file:// URL (inside the root,
        checked again now: a link may have appeared since the task was created)."""
        collected = RunPaths.of(row).outputs / mapping.OUTPUTS_DIR
        written: list[dict[str, Any]] = []
        for k, out in enumerate((row.get("task") or {}).get("outputs", [])):
            where = f"outputs[{k}].url"
            base = collected / str(k)
            if out.get("path_prefix"):
                for source, rel in _regular_files(base):
                    target = self._root_path(out["url"].rstrip("/") + "/" + rel, where,
                                             must_exist=False)
                    written.append(self._copy(source, target, out["url"].rstrip("/") + "/" + rel,
                                              out["path_prefix"].rstrip("/") + "/" + rel))
            elif out.get("type") == "DIRECTORY":
                for source, rel in _regular_files(base / "item"):
                    url = out["url"].rstrip("/") + "/" + rel
                    target = self._root_path(url, where, must_exist=False)
                    written.append(self._copy(source, target, url, f"{out['path']}/{rel}"))
            else:
                source = base / "item"
                if source.is_symlink() or not source.is_file():
                    raise PirusError(f"output {out['path']} is not a regular file")
                target = self._root_path(out["url"], where, must_exist=False)
                written.append(self._copy(source, target, out["url"], out["path"]))
        return written

    def _copy(self, source: Path, target: Path, url: str, path: str) -> dict[str, Any]:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not is_within(target.parent.resolve(), self.root_dir.resolve()):
            raise PirusError(f"{url} would leave the Jupyter root")
        # A temporary file beside the target, then a rename: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=".tes-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return {"url": url, "path": path, "size_bytes": str(target.stat().st_size)}


def _regular_files(folder: Path) -> list[tuple[Path, str]]:
    """Every regular file below ``folder`` (no link followed), with its relative path."""
    found = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not (Path(dirpath) / d).is_symlink())
        for name in sorted(names):
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file():
                found.append((path, path.relative_to(folder).as_posix()))
    return found
