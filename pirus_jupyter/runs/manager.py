"""Runs: the public operations (create, list, pause, resume, cancel, delete, logs, notify).

``RunManager`` is assembled from one part per concern, all sharing one object (core.py):

- queue.py: which WAITING run starts next; runs left by a previous server taken up again;
- lifecycle.py: a run's life once started (launch, monitor, finish or fail);
- cluster.py: members, placement (placement.py, pure functions), a member lost;
- data.py: the run folder and how the container sees it (mounted | pushed), one object per run;
- wrapper.py: the shell wrapper the command runs in, and the files it leaves.

A run's command runs detached inside LXD and writes its exit code to a state file, so a run
survives a restart of this server: the monitor only reads files and asks LXD for the
container's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..errors import Conflict, Forbidden, InvalidRequest, NotFound
from ..files import is_within, resolve_under, to_api_path, unique_input_names
from ..forms import validate_config
from ..models import (
    FINAL_RUN_STATUSES,
    RUN_LIST_COLUMNS,
    PipelineStatus,
    RunStatus,
    check_run_move,
    public_run,
)
from ..nfschema import path_errors
from ..store import now_iso
from .cluster import Cluster
from .compare import Compare
from .core import FRESH_PROGRESS
from .folder import RunPaths, last_lines, read_host_log, run_folder_name
from .lifecycle import FINISHING_NAMES, Lifecycle
from .queue import Queue
from .reuse import remove_staging
from .wrapper import LOG_NAMES

S = RunStatus
# How long a stopping server waits for the containers of ended runs to be deleted.
STOP_CLEANUP_GRACE = 15.0


def _clean_progress(raw: Any, previous: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest("progress must be an object with value, min, max, label")
    out = dict(previous or FRESH_PROGRESS)
    for key in ("value", "min", "max"):
        if key in raw:
            value = raw[key]
            if isinstance(value, str):  # original Pirus pipelines post numbers as strings
                with contextlib.suppress(ValueError):
                    value = float(value) if "." in value else int(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    value != value or value in (float("inf"), float("-inf")):
                raise InvalidRequest(f"progress.{key} must be a number")
            out[key] = value
    if "label" in raw:
        out["label"] = None if raw["label"] is None else str(raw["label"])[:500]
    return out


class RunManager(Queue, Lifecycle, Cluster, Compare):
    """The runs of one server. Built by ``Services.build``; see core.RunsCore for settings."""

    async def start(self) -> None:
        await asyncio.to_thread(self.runs_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(remove_staging, self.runs_dir)
        await self.pipelines.resume_installs()
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def stop(self) -> None:
        """Stop watching; containers keep running and are reconciled at the next start.
        The containers of runs that ended are deleted first, for up to STOP_CLEANUP_GRACE
        seconds: a server stopped for good (or another data dir's next) would leave them."""
        self._stopping = True
        self._starts_changed()  # deletions waiting for starts go now
        ending = [*self._cleanups, *self._deleting.values()]
        if ending:
            await asyncio.wait(ending, timeout=STOP_CLEANUP_GRACE)
        tasks = [run.task for run in self._active.values() if run.task]
        tasks += [*self._removals.values(), *self._cleanups, *self._plugs.values(),
                  *self._deleting.values(), *self._preparing.values()]
        tasks += [t for t in (self._queue_retry, self._reconcile_task, self._member_watch,
                              self._preparer) if t]
        if self._progress_flush is not None:
            tasks.append(self._progress_flush)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush_progress()  # what was published is on disk before the store closes
        await self.pipelines.wait_installs()

    # -- reading ---------------------------------------------------------------------------
    async def list(self, status: list[str] | None = None, pipeline_id: int | None = None,
                   limit: int = 50, offset: int = 0, after: int | None = None
                   ) -> tuple[list[dict[str, Any]], int]:
        """Newest first; ``after``: only runs older than that run id (the next page)."""
        clauses, params = [], []
        if status:
            for s in status:
                RunStatus(s)  # ValueError -> 400 below
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        if pipeline_id is not None:
            clauses.append("pipeline_id = ?")
            params.append(pipeline_id)
        where = " AND ".join(clauses) or None
        rows, total = await self.store.page("runs", where, params, descending=True,
                                            limit=limit, offset=offset, after=after,
                                            columns=RUN_LIST_COLUMNS)
        return [public_run(self._with_progress(r)) for r in rows], total

    async def get(self, run_id: int) -> dict[str, Any]:
        return public_run(self._with_progress(await self.store.get("runs", run_id)))

    async def logs(self, run_id: int, which: str, tail: int | None) -> str:
        if which not in LOG_NAMES:
            raise NotFound(f"no log {which!r}: use out or err")
        row = await self.store.get("runs", run_id)
        if not row.get("root_path"):
            return ""
        if row["status"] not in FINAL_RUN_STATUSES and row.get("lxd_container") and \
                not self._member_known_lost(row.get("location")):
            data = await self._run_data(row)
            live = await asyncio.to_thread(data.live_log, which)  # still in the container
            if live is not None:
                return last_lines(live, tail, self.log_max_bytes)
        return await asyncio.to_thread(read_host_log, RunPaths.of(row), which, tail,
                                       self.log_max_bytes)

    # -- creating ---------------------------------------------------------------------------
    async def _resolve_inputs(self, inputs: Any) -> list[dict[str, Any]]:
        if not isinstance(inputs, list):
            raise InvalidRequest("inputs must be a list of paths (under the Jupyter root) or "
                                 "file ids")
        wanted: list[tuple[Any, str | None]] = []  # (as given, a file record's path)
        for item in inputs:
            if isinstance(item, dict):
                item = item.get("file_id", item.get("path"))
            if isinstance(item, int) and not isinstance(item, bool):
                wanted.append((item, (await self.store.get("files", item))["path"]))
            elif isinstance(item, str):
                wanted.append((item, None))
            else:
                raise InvalidRequest("each input must be a path string or a file id")
        # The files are looked at in a thread: thousands of inputs must not stall the loop.
        return await asyncio.to_thread(self._check_inputs, wanted)

    def _check_inputs(self, wanted: list[tuple[Any, str | None]]) -> list[dict[str, Any]]:
        resolved = []
        for item, record_path in wanted:
            if record_path is not None:
                path = self.root_dir / record_path
                if path.is_symlink() or not path.is_file():
                    raise NotFound(f"file {item} has no content on disk")
            else:
                path = resolve_under(self.root_dir, item)
                if not path.is_file():
                    raise InvalidRequest(f"input {item!r} is not a regular file")
            resolved.append({"name": path.name, "path": to_api_path(self.root_dir, path),
                             "size": path.stat().st_size})
        for entry, name in zip(resolved, unique_input_names([i["name"] for i in resolved]),
                               strict=True):
            entry["name"] = name
        return resolved

    async def create(self, pipeline_id: Any, name: Any = None, config: Any = None,
                     inputs: Any = None, target: Any = None, reuse: Any = None
                     ) -> dict[str, Any]:
        if not isinstance(pipeline_id, int) or isinstance(pipeline_id, bool):
            raise InvalidRequest("pipeline_id (an integer) is required")
        pipeline = await self.pipelines.row(pipeline_id)
        if pipeline["status"] != PipelineStatus.READY:
            raise Conflict(f"pipeline {pipeline_id} is {pipeline['status']}, not READY",
                           code="pipeline_not_ready")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest("name must be a string")
        reuse = await self.reuse_wanted(reuse, pipeline)
        target = await self._check_target(target)
        resolved = await self._resolve_inputs(inputs if inputs is not None else [])
        names = [i["name"] for i in resolved]
        schema = await self.pipelines.form(pipeline_id, names)
        # In a thread: a form's patterns may take up to forms.PATTERN_BUDGET to check, and
        # `exists: true` paths are looked at on disk.
        config = await asyncio.to_thread(
            validate_config, schema, config if config is not None else {},
            lambda checked: path_errors(schema, checked, self.root_dir, names))
        name = (name or "").strip() or f"{pipeline['name']} run"
        reuse_values: dict[str, Any] = {}
        if reuse:
            basis, hashed = await self.basis_now(pipeline, config, resolved)
            sources, miss = await self.find_reusable(pipeline, basis)
            for source in sources:  # newest first, until one's outputs are intact
                reused = await self.reuse_run(source, name, basis, hashed)
                if "miss" not in reused:
                    return public_run(reused)
                miss = miss or reused["miss"]  # why the newest could not be reused
            # Recorded again, from the inputs as the run gets them, once its folder is made.
            reuse_values = {"reuse_miss": miss}
        return public_run(await self._insert(pipeline, name, config, resolved, target,
                                             **reuse_values))

    async def create_task(self, pipeline_id: int, name: str, inputs: list[dict[str, Any]],
                          command: str, origin: str, limits: dict[str, str],
                          task: dict[str, Any], failed: str | None = None,
                          mounts: list[str] | None = None) -> dict[str, Any]:
        """A run made by another front end (a GA4GH TES task): ``command`` (a shell script)
        replaces the pipeline's ``run`` and no config is checked; ``inputs`` were resolved by
        the caller (name, path under the root, size); ``task`` is the front end's own record.
        ``failed``: why it cannot run (it is recorded in ERROR at once, never started);
        ``mounts``: host folders the container shares, read-write, at the same path.
        Returns the whole row (the caller needs ``task`` and ``root_path``)."""
        pipeline = await self.pipelines.row(pipeline_id)
        if pipeline["status"] != PipelineStatus.READY:
            raise Conflict(f"pipeline {pipeline_id} is {pipeline['status']}, not READY",
                           code="pipeline_not_ready")
        extra: dict[str, Any] = {}
        if failed:
            extra = {"status": S.ERROR.value, "error": failed, "end": now_iso(),
                     "timings": [[S.WAITING.value, now_iso()], [S.ERROR.value, now_iso()]]}
        return await self._insert(pipeline, name, {}, inputs, None, origin=origin,
                                  command=command, run_limits=limits, task=task,
                                  mounts=mounts or [], **extra)

    async def _insert(self, pipeline: dict[str, Any], name: str | None, config: Any,
                      resolved: list[dict[str, Any]], target: str | None,
                      **extra: Any) -> dict[str, Any]:
        row = await self.store.insert("runs", {
            "pipeline_id": pipeline["id"], "pipeline_name": pipeline["name"],
            "pipeline_version": pipeline.get("version"),
            "pipeline_fingerprint": pipeline.get("fingerprint"),
            "name": (name or "").strip() or f"{pipeline['name']} run",
            "config": config, "inputs": resolved, "outputs": [], "status": S.WAITING.value,
            "progress": dict(FRESH_PROGRESS),
            "created": now_iso(), "timings": [[S.WAITING.value, now_iso()]],
            "notify_token": secrets.token_urlsafe(24), "target": target,
        } | extra, then=lambda new: {
            "root_path": str(self.runs_dir / run_folder_name(new["id"], new["name"]))})
        self.events.publish("run.created", public_run(row))
        if row["status"] == S.WAITING:
            asyncio.get_running_loop().create_task(self.schedule())
        return row

    # -- actions on a run --------------------------------------------------------------------
    # Each is a compare-and-set move (core._move); the driving task hears of it in-process.
    async def pause(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], S.PAUSE)
            # A failed freeze is the caller's error: the run goes on, it is not PAUSE.
            await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
            return public_run(await self._move(run_id, S.PAUSE))

    async def resume(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            if row["status"] != S.PAUSE:
                raise Conflict(f"run {run_id} is {row['status']}, not PAUSE",
                               code="illegal_transition")
            await asyncio.to_thread(self.backend.unfreeze, row["lxd_container"])
            return public_run(await self._move(run_id, S.RUNNING))

    async def cancel(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], S.CANCELED)
            metrics = await self._metrics(row)
            row = await self._move(run_id, S.CANCELED, end=now_iso(), metrics=metrics)
        self._prepared.pop(run_id, None)
        preparing = self._preparing.get(run_id)
        if preparing is not None and not preparing.done():
            return public_run(row)  # the preparation deletes what it makes (prepare.py)
        # The driving task is woken, sees CANCELED and stops; the container goes now.
        await self._remove_container(row)
        return public_run(row)

    async def delete(self, run_id: int) -> None:
        row = await self.store.get("runs", run_id)
        if row["status"] not in FINAL_RUN_STATUSES:
            raise Conflict(f"run {run_id} is {row['status']}; cancel it first",
                           code="run_active")
        await self.store.delete_run(run_id)
        if row.get("root_path") and is_within(Path(row["root_path"]), self.runs_dir):
            await asyncio.to_thread(shutil.rmtree, row["root_path"], True)
        self.events.publish("run.deleted", {"id": run_id})

    # -- what the pipeline reports -----------------------------------------------------------
    async def check_notify_token(self, run_id: int, token: str) -> None:
        """Forbidden unless ``token`` is this active run's own notify secret."""
        await self._notify_target(run_id, token)

    async def _notify_target(self, run_id: int, token: str) -> dict[str, Any]:
        """The run's row if ``token`` is its notify secret and it is active; else Forbidden.
        A run this process drives is checked against its row in memory (no read)."""
        run = self._active.get(run_id)
        if run is not None:
            row = run.row
        else:
            try:
                row = await self.store.get("runs", run_id)
            except NotFound:
                row = {"status": S.ERROR.value}  # same answer as a wrong token: reveal nothing
        expected = (row.get("notify_token") or "").encode()
        # As bytes: hmac refuses to compare text that is not ASCII (a token is URL-safe ASCII).
        if not token or not hmac.compare_digest(token.encode(), expected) or \
                row["status"] in FINAL_RUN_STATUSES:
            raise Forbidden("invalid or expired notify token")
        return row

    async def notify(self, run_id: int, token: str, payload: Any) -> dict[str, Any]:
        """Progress or status posted by the pipeline itself to $PIRUS_NOTIFY_URL."""
        await self._notify_target(run_id, token)
        if not isinstance(payload, dict):
            raise InvalidRequest("notify body must be a JSON object")
        return public_run(await self._apply_report(run_id, payload))

    async def _apply_report(self, run_id: int, report: dict[str, Any]) -> dict[str, Any]:
        """A report from the pipeline (notify URL or progress file): progress, FINISHING.
        A driven run's progress is published at once and written with the next batch
        (core.PROGRESS_FLUSH_INTERVAL); its row in memory is current, nothing is read."""
        run = self._active.get(run_id)
        row = run.row if run is not None else await self.store.get("runs", run_id)
        if "progress_value" in report or "progress_label" in report:  # original V2 keys
            legacy = {"value": report.get("progress_value"), "label": report.get("progress_label")}
            report = {**report, "progress": {k: v for k, v in legacy.items() if v is not None}}
        if "progress" in report:
            progress = _clean_progress(report["progress"], row.get("progress"))
            if run is not None and row["status"] not in FINAL_RUN_STATUSES:
                row = self._save_progress_soon(run, progress)
            else:
                row = await self._save(run_id, {"progress": progress})
            self.events.publish("run.updated", public_run(row))
        if "status" in report:
            status = str(report["status"]).upper()
            if status not in FINISHING_NAMES:
                raise InvalidRequest("a pipeline may only report status FINISHING")
            if row["status"] == S.RUNNING:
                row = await self._move(run_id, S.FINISHING)
        return row
