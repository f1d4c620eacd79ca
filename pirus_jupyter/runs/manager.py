"""Runs: the queue, the lifecycle on LXD, progress, and reconciliation after a restart.

A run's folder (under the runs folder of the Jupyter root) holds ``inputs/`` (read-only in the
container, with ``config.json``), ``outputs/``, ``logs/`` (``out.log``, ``err.log``) and a hidden
``.pirus/`` state folder (progress file, exit code). The command runs detached inside LXD and
writes its exit code to ``.pirus/exit_code``, so a run survives a restart of this server: the
monitor only reads files and asks LXD for the container's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..backend.base import Backend, ContainerSpec, ContainerState, DiskMount, Member
from ..errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    InvalidRequest,
    MemberUnavailable,
    NotFound,
    PirusError,
    UnknownMember,
)
from ..events import EventBus
from ..files import (
    FileService,
    is_within,
    open_regular,
    resolve_under,
    sha256_file,
    to_api_path,
    unique_input_names,
)
from ..forms import validate_config
from ..models import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    PipelineStatus,
    RunStatus,
    check_run_move,
    public_run,
)
from ..pipelines import PipelineService
from ..store import Store, now_iso
from . import placement
from .data import PushTransfer, heartbeat_script, manifest_script

S = RunStatus
STATE_DIR = "/.pirus"
PROGRESS_FILE = f"{STATE_DIR}/progress.jsonl"
EXIT_FILE = "exit_code"
STATE_CHECK_INTERVAL = 2.0
# How long a running pipeline is given while LXD cannot be reached before it is ended in ERROR.
LXD_OUTAGE_GRACE = 120.0
# Seconds between looks at the queue while LXD is unreachable.
QUEUE_RETRY = 5.0
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_INTERVAL = 5.0
LOG_NAMES = ("out", "err")
# Runs whose data goes through the LXD file API: seconds between reads of their progress file
# and exit code (each read is a request to LXD, and LXD starts a helper process for it).
PUSH_POLL_INTERVAL = 1.0
# Cluster members' state is re-read at most this often (one request for every run).
MEMBERS_MAX_AGE = 2.0
MEMBER_WATCH_INTERVAL = 3.0
# A run whose create/start fails to connect is tried on at most this many members.
MAX_LAUNCH_ATTEMPTS = 3


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "run"


def _elapsed(start: str | None, end: str | None = None) -> float | None:
    if not start:
        return None
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else datetime.now(t0.tzinfo)
    return round((t1 - t0).total_seconds(), 3)


def tail_lines(path: Path, count: int, block: int = 64 * 1024) -> str:
    """The last ``count`` lines of a file, read backwards (logs can be gigabytes)."""
    # Not followed: a pipeline can put a symlink (to a host file) in place of its log.
    handle = open_regular(path) if count > 0 else None
    if handle is None:
        return ""
    with handle as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            step = min(block, end)
            end -= step
            f.seek(end)
            data = f.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-count:]) + ("\n" if lines else "")


def phase_durations(timings: list[list[str]]) -> dict[str, float]:
    """Seconds spent in each status, from the run's list of [status, time] moves (a status
    entered several times, e.g. RUNNING around a PAUSE, adds up)."""
    phases: dict[str, float] = {}
    for (status, at), nxt in zip(timings, [*timings[1:], None], strict=True):
        seconds = _elapsed(at, nxt[1] if nxt else None) or 0.0
        if nxt is None and status in ("DONE", "ERROR", "CANCELED"):
            continue
        phases[status] = round(phases.get(status, 0.0) + seconds, 3)
    return phases


def _clean_progress(raw: Any, previous: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest("progress must be an object with value, min, max, label")
    out = dict(previous or {"value": 0, "min": 0, "max": 100, "label": None})
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


class RunManager:
    def __init__(self, store: Store, events: EventBus, backend: Backend, files: FileService,
                 pipelines: PipelineService, *, root_dir: Path, runs_dir: Path,
                 databases_dir: Path, max_parallel: int, default_limits: dict[str, str],
                 run_timeout: float, log_max_bytes: int, poll_interval: float,
                 notify_enabled: bool, server_port: Callable[[], int], base_url: str,
                 prefix: str = "pirus", log: logging.Logger, data_transfer: str = "auto",
                 member_capacity: dict[str, Any] | None = None,
                 requeue_on_member_loss: bool = False) -> None:
        self.store = store
        self.events = events
        self.backend = backend
        self.files = files
        self.pipelines = pipelines
        self.root_dir = root_dir
        self.runs_dir = runs_dir
        self.databases_dir = databases_dir
        self.max_parallel = max(1, max_parallel)
        self.default_limits = default_limits
        self.run_timeout = run_timeout
        self.log_max_bytes = log_max_bytes
        self.poll_interval = poll_interval
        self.notify_enabled = notify_enabled
        self.server_port = server_port
        self.base_url = base_url
        self.prefix = prefix
        self.log = log
        # "mounts": run folders are bind-mounted (LXD on this host). "push": containers may be
        # on another machine, data goes through the LXD file API (transfer.py).
        self.data_transfer = data_transfer if data_transfer in ("mounts", "push") else (
            "push" if backend.remote else "mounts")
        self.transfer = PushTransfer(backend, databases_dir, log)
        self.member_capacity = dict(member_capacity or {})
        self.requeue_on_member_loss = requeue_on_member_loss
        self._members: tuple[float, list[Member]] = (0.0, [])  # (when read, members)
        self._suspects: dict[str, float] = {}  # member -> until when launches avoid it
        self._member_watch: asyncio.Task[None] | None = None
        # Runs this process drives (started or reconciled): they hold a container slot.
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._lxd_lost: dict[int, float] = {}  # run id -> when LXD was first found unreachable
        self._removals: dict[str, asyncio.Task[None]] = {}  # container deletions to retry
        self._queue_retry: asyncio.Task[None] | None = None  # the queue held while LXD is down
        # Seconds without a heartbeat (and no exit code) after which a RUNNING run is lost.
        self.heartbeat_timeout = 6 * HEARTBEAT_INTERVAL
        self._schedule_lock = asyncio.Lock()
        self._stopping = False
        self._reconciled = False  # the queue opens once runs left by a previous server are known
        self._reconcile_task: asyncio.Task[None] | None = None

    @property
    def active_count(self) -> int:
        return len(self._tasks)

    def _lock(self, run_id: int) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    # -- lifecycle of the manager --------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.runs_dir.mkdir, parents=True, exist_ok=True)
        await self.pipelines.resume_installs()
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def stop(self) -> None:
        """Stop watching; containers keep running and are reconciled at the next start."""
        self._stopping = True
        tasks = [*self._tasks.values(), *self._removals.values()]
        if self._queue_retry:
            tasks.append(self._queue_retry)
        if self._reconcile_task:
            tasks.append(self._reconcile_task)
        if self._member_watch:
            tasks.append(self._member_watch)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pipelines.wait_installs()

    async def _reconcile_loop(self) -> None:
        """Reconcile with LXD, retrying while LXD is unreachable, then open the queue."""
        while not self._stopping:
            try:
                await self.reconcile()
                break
            except PirusError as e:
                self.log.warning("pirus: cannot reconcile runs yet (%s); retrying", e.message)
                await asyncio.sleep(5)
        self._reconciled = True
        if not self._stopping:
            self._member_watch = asyncio.get_running_loop().create_task(self._watch_members())
        await self.schedule()

    async def reconcile(self) -> None:
        """Runs left in non-final states by a previous server are tracked again or ended."""
        active = [s.value for s in ACTIVE_RUN_STATUSES]
        marks = ",".join("?" * len(active))
        for row in await self.store.select("runs", f"status IN ({marks})", active):
            run_id = row["id"]
            if run_id in self._tasks:
                continue
            name = row.get("lxd_container")
            if row["status"] == S.INITIALIZING:
                if name:
                    await asyncio.to_thread(self.backend.delete_container, name)
                await self._move(run_id, S.WAITING, lxd_container=None, start=None)
                continue
            if row.get("location") and not await self._member_online(row["location"]):
                # Its cluster member is lost: the monitor ends (or re-queues) the run at once.
                self._track(run_id, self._monitor(run_id))
                continue
            state = await asyncio.to_thread(self.backend.state, name) if name else None
            if state is None and self._exit_code(row) is None and row["status"] != S.FINISHING:
                await self._fail(run_id, "the container disappeared while the server was down")
                continue
            self._track(run_id, self._monitor(run_id))
        await self._remove_leftover_containers()

    async def _remove_leftover_containers(self) -> None:
        """Delete containers of runs that already ended (a server stopped between recording
        the end and deleting the container), and those a run left behind on a cluster member
        that failed or was lost (its ``attempts``). Containers this database does not know are
        left alone: they may belong to another server sharing the LXD daemon."""
        states = await asyncio.to_thread(self.backend.container_locations,
                                         f"{self.prefix}-run-")
        # On an unreachable member a container shows as "Error" and cannot be deleted now;
        # the member watch comes back for it when the member is back.
        names = [n for n, state in states.items() if state.status != "Error"]
        if not names:
            return
        final = [s.value for s in FINAL_RUN_STATUSES]
        rows = await self.store.select(
            "runs", f"lxd_container IN ({','.join('?' * len(names))}) AND status IN "
            f"({','.join('?' * len(final))})", [*names, *final])
        for row in rows:
            await self._remove_container(row)
        abandoned = {attempt.get("container") for row in await self.store.select(
            "runs", "attempts IS NOT NULL") for attempt in row.get("attempts") or []}
        for name in sorted(abandoned & set(names)):
            await self._remove_container({"lxd_container": name})

    # -- queue -------------------------------------------------------------------------
    async def schedule(self) -> None:
        """Start WAITING runs, oldest first, while fewer than max_parallel are active."""
        if self._stopping or not self._reconciled:
            return
        async with self._schedule_lock:
            while len(self._tasks) < self.max_parallel:
                rows = await self.store.select("runs", "status = ?", [S.WAITING.value],
                                               order_by="id", limit=1)
                if not rows:
                    return
                if not await self._backend_connected():
                    # LXD down: starting runs now would end them in ERROR one after another;
                    # they stay WAITING and the queue looks again in a few seconds.
                    self._schedule_later()
                    return
                run_id = rows[0]["id"]
                values: dict[str, Any] = {}
                try:
                    members = await self._cluster_members()
                except PirusError:
                    if self._members[1]:
                        return  # a cluster that cannot be read now: the member watch retries
                    members = []
                if members:  # an LXD cluster: Pirus places the run (placement.py)
                    picked = await self._pick(members)
                    if picked is None:
                        return  # every member busy or lost: the member watch looks again
                    run_id, values = picked
                try:
                    await self._move(run_id, S.INITIALIZING, start=now_iso(), **values)
                except Conflict:
                    continue  # canceled meanwhile
                self._track(run_id, self._execute(run_id))

    async def _backend_connected(self) -> bool:
        try:
            info = await asyncio.to_thread(self.backend.info)
        except Exception:  # a backend without a connection to report
            return True
        return bool(info.get("connected", True))

    def _schedule_later(self) -> None:
        if self._queue_retry is None or self._queue_retry.done():
            self._queue_retry = asyncio.get_running_loop().create_task(self._schedule_after())

    async def _schedule_after(self) -> None:
        await asyncio.sleep(QUEUE_RETRY)
        self._queue_retry = None  # so that the queue, held again, can set a new retry
        await self.schedule()

    def _track(self, run_id: int, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(run_id, work))
        self._tasks[run_id] = task

    async def _guard(self, run_id: int, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except PirusError as e:
            await self._fail(run_id, e.message)
        except Exception as e:  # a bug must end the run with a reason, never leave it stuck
            self.log.exception("pirus: run %s failed unexpectedly", run_id)
            await self._fail(run_id, f"unexpected error: {e}")
        finally:
            # A re-queued run may already be driven by a new task: leave that one's slot.
            if self._tasks.get(run_id) is asyncio.current_task():
                self._tasks.pop(run_id, None)
                self.transfer.forget(run_id)
            if not self._stopping:
                asyncio.get_running_loop().create_task(self.schedule())

    # -- state moves -----------------------------------------------------------------
    async def _move(self, run_id: int, target: RunStatus, **values: Any) -> dict[str, Any]:
        """Move a run along the state machine (compare-and-set), publish the change."""
        while True:
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], target)
            timings = [*(row.get("timings") or []), [target.value, now_iso()]]
            updated = await self.store.update_where_status(
                "runs", run_id, [row["status"]],
                dict(values, status=target.value, timings=timings))
            if updated is not None:
                self.events.publish("run.updated", self._public(updated))
                return updated

    async def _fail(self, run_id: int, reason: str, **values: Any) -> None:
        """End a run in ERROR (if it is not already final) and free its container."""
        row = await self.store.get("runs", run_id)
        if row["status"] in FINAL_RUN_STATUSES:
            return
        metrics = await self._metrics(row)
        try:
            await self._move(run_id, S.ERROR, error=reason, end=now_iso(), metrics=metrics,
                             **values)
        except Conflict:
            return
        await self._pull_logs_quietly(row)
        await self._remove_container(row)

    async def _remove_container(self, row: dict[str, Any]) -> None:
        name = row.get("lxd_container")
        if not name:
            return
        try:
            await asyncio.to_thread(self.backend.delete_container, name)
        except PirusError as e:
            self.log.warning("pirus: could not delete %s: %s", name, e)
            # LXD down or shutting down: try again later rather than leave the container
            # (and its disk and memory) behind until the next start of this server.
            if name not in self._removals and not self._stopping:
                self._removals[name] = asyncio.get_running_loop().create_task(
                    self._retry_removal(name))

    async def _retry_removal(self, name: str) -> None:
        delay = 5.0
        try:
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    await asyncio.to_thread(self.backend.delete_container, name)
                    self.log.info("pirus: deleted %s on a later attempt", name)
                    return
                except PirusError as e:
                    self.log.debug("pirus: could not delete %s yet: %s", name, e)
                delay = min(delay * 2, 60.0)
        finally:
            self._removals.pop(name, None)

    # -- public operations -------------------------------------------------------------
    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        return public_run(row)

    async def list(self, status: list[str] | None = None, pipeline_id: int | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
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
        rows = await self.store.select("runs", where, params, order_by="id desc", limit=limit,
                                       offset=offset)
        return [self._public(r) for r in rows], await self.store.count("runs", where, params)

    async def get(self, run_id: int) -> dict[str, Any]:
        return self._public(await self.store.get("runs", run_id))

    async def databases(self) -> list[dict[str, Any]]:
        def scan() -> list[dict[str, Any]]:
            out = []
            for entry in sorted(self.databases_dir.iterdir()):
                if entry.name.startswith("."):
                    continue
                size = entry.stat().st_size if entry.is_file() else sum(
                    p.stat().st_size for p in entry.rglob("*") if p.is_file())
                out.append({"name": entry.name, "size": size, "path": entry.name})
            return out

        return await asyncio.to_thread(scan)

    async def _resolve_inputs(self, inputs: Any) -> list[dict[str, Any]]:
        if not isinstance(inputs, list):
            raise InvalidRequest("inputs must be a list of paths (under the Jupyter root) or "
                                 "file ids")
        resolved = []
        for item in inputs:
            if isinstance(item, dict):
                item = item.get("file_id", item.get("path"))
            if isinstance(item, int) and not isinstance(item, bool):
                record = await self.store.get("files", item)
                path = self.root_dir / record["path"]
                if path.is_symlink() or not path.is_file():
                    raise NotFound(f"file {item} has no content on disk")
            elif isinstance(item, str):
                path = resolve_under(self.root_dir, item)
                if not path.is_file():
                    raise InvalidRequest(f"input {item!r} is not a regular file")
            else:
                raise InvalidRequest("each input must be a path string or a file id")
            resolved.append({"name": path.name, "path": to_api_path(self.root_dir, path),
                             "size": path.stat().st_size})
        for item, name in zip(resolved, unique_input_names([i["name"] for i in resolved]),
                              strict=True):
            item["name"] = name
        return resolved

    async def create(self, pipeline_id: Any, name: Any = None, config: Any = None,
                     inputs: Any = None, target: Any = None) -> dict[str, Any]:
        if not isinstance(pipeline_id, int) or isinstance(pipeline_id, bool):
            raise InvalidRequest("pipeline_id (an integer) is required")
        pipeline = await self.pipelines.row(pipeline_id)
        if pipeline["status"] != PipelineStatus.READY:
            raise Conflict(f"pipeline {pipeline_id} is {pipeline['status']}, not READY",
                           code="pipeline_not_ready")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest("name must be a string")
        target = await self._check_target(target)
        resolved = await self._resolve_inputs(inputs if inputs is not None else [])
        dbs = [d["name"] for d in await self.databases()]
        schema = await self.pipelines.form(pipeline_id, [i["name"] for i in resolved], dbs)
        config = validate_config(schema, config if config is not None else {})
        row = await self.store.insert("runs", {
            "pipeline_id": pipeline_id, "pipeline_name": pipeline["name"],
            "pipeline_version": pipeline.get("version"),
            "pipeline_fingerprint": pipeline.get("fingerprint"),
            "name": (name or "").strip() or f"{pipeline['name']} run",
            "config": config, "inputs": resolved, "outputs": [], "status": S.WAITING.value,
            "progress": {"value": 0, "min": 0, "max": 100, "label": None},
            "created": now_iso(), "timings": [[S.WAITING.value, now_iso()]],
            "notify_token": secrets.token_urlsafe(24), "target": target,
        })
        row = await self.store.update("runs", row["id"], {
            "root_path": str(self.runs_dir / f"{row['id']}-{_slug(row['name'])}")})
        self.events.publish("run.created", self._public(row))
        asyncio.get_running_loop().create_task(self.schedule())
        return self._public(row)

    async def pause(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], S.PAUSE)
            # A failed freeze is the caller's error: the run goes on, it is not PAUSE.
            await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
            return self._public(await self._move(run_id, S.PAUSE))

    async def resume(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            if row["status"] != S.PAUSE:
                raise Conflict(f"run {run_id} is {row['status']}, not PAUSE",
                               code="illegal_transition")
            await asyncio.to_thread(self.backend.unfreeze, row["lxd_container"])
            return self._public(await self._move(run_id, S.RUNNING))

    async def cancel(self, run_id: int) -> dict[str, Any]:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], S.CANCELED)
            metrics = await self._metrics(row)
            row = await self._move(run_id, S.CANCELED, end=now_iso(), metrics=metrics)
        # The driving task sees CANCELED at its next step and stops; the container goes now.
        await self._remove_container(row)
        return self._public(row)

    async def delete(self, run_id: int) -> None:
        row = await self.store.get("runs", run_id)
        if row["status"] not in FINAL_RUN_STATUSES:
            raise Conflict(f"run {run_id} is {row['status']}; cancel it first",
                           code="run_active")
        await self.store.delete_run(run_id)
        if row.get("root_path") and is_within(Path(row["root_path"]), self.runs_dir):
            await asyncio.to_thread(shutil.rmtree, row["root_path"], True)
        self.events.publish("run.deleted", {"id": run_id})

    async def logs(self, run_id: int, which: str, tail: int | None) -> str:
        if which not in LOG_NAMES:
            raise NotFound(f"no log {which!r}: use out or err")
        row = await self.store.get("runs", run_id)
        if not row.get("root_path"):
            return ""
        if self._pushed(row) and row["status"] not in FINAL_RUN_STATUSES and \
                row.get("lxd_container") and not self._member_known_lost(row.get("location")):
            live = await self._live_log(row, which, tail)  # still in the container
            if live is not None:
                return live
        path = Path(row["root_path"]) / "logs" / f"{which}.log"

        def read() -> str:
            if tail is not None:
                return tail_lines(path, tail)
            handle = open_regular(path)  # a symlink planted by the pipeline is not read
            if handle is None:
                return ""
            with handle as f:
                return f.read(self.log_max_bytes).decode(errors="replace")

        return await asyncio.to_thread(read)

    async def check_notify_token(self, run_id: int, token: str) -> None:
        """Forbidden unless ``token`` is this active run's own notify secret."""
        try:
            row = await self.store.get("runs", run_id)
        except NotFound:
            row = {"status": S.ERROR.value}  # same answer as a wrong token: reveal nothing
        expected = (row.get("notify_token") or "").encode()
        # As bytes: hmac refuses to compare text that is not ASCII (a token is URL-safe ASCII).
        if not token or not hmac.compare_digest(token.encode(), expected) or \
                row["status"] in FINAL_RUN_STATUSES:
            raise Forbidden("invalid or expired notify token")

    async def notify(self, run_id: int, token: str, payload: Any) -> dict[str, Any]:
        """Progress or status posted by the pipeline itself to $PIRUS_NOTIFY_URL."""
        await self.check_notify_token(run_id, token)
        if not isinstance(payload, dict):
            raise InvalidRequest("notify body must be a JSON object")
        return self._public(await self._apply_report(run_id, payload))

    async def _apply_report(self, run_id: int, report: dict[str, Any]) -> dict[str, Any]:
        row = await self.store.get("runs", run_id)
        if "progress_value" in report or "progress_label" in report:  # original V2 keys
            legacy = {"value": report.get("progress_value"), "label": report.get("progress_label")}
            report = {**report, "progress": {k: v for k, v in legacy.items() if v is not None}}
        if "progress" in report:
            progress = _clean_progress(report["progress"], row.get("progress"))
            row = await self.store.update("runs", run_id, {"progress": progress})
            self.events.publish("run.updated", self._public(row))
        if "status" in report:
            status = str(report["status"]).upper()
            if status not in ("FINISHING", "FINALIZING"):  # FINALIZING: original Pirus' name
                raise InvalidRequest("a pipeline may only report status FINISHING")
            if row["status"] == S.RUNNING:
                row = await self._move(run_id, S.FINISHING)
        return row

    # -- execution -----------------------------------------------------------------------
    def _paths(self, row: dict[str, Any]) -> dict[str, Path]:
        root = Path(row["root_path"])
        return {"root": root, "inputs": root / "inputs", "outputs": root / "outputs",
                "logs": root / "logs", "state": root / ".pirus"}

    def _prepare_folder(self, row: dict[str, Any], known: dict[str, tuple[str, int]]
                        ) -> list[dict[str, Any]]:
        """Create the run folder: inputs linked (or copied when the container could not read
        them), config.json, empty outputs/logs/state folders. Returns the inputs with their
        sha256 (``known`` holds hashes of file records, so uploads are not hashed twice)."""
        paths = self._paths(row)
        if not is_within(paths["root"].resolve().parent, self.runs_dir.resolve()):
            raise Forbidden("run folder outside the runs folder")
        if paths["root"].exists():
            shutil.rmtree(paths["root"])  # a re-queued run starts from a clean folder
        for key in ("inputs", "outputs", "logs", "state"):
            paths[key].mkdir(parents=True)
            paths[key].chmod(0o755)
        paths["root"].chmod(0o755)
        inputs = []
        for item in row["inputs"]:
            source = resolve_under(self.root_dir, item["path"])
            target = paths["inputs"] / item["name"]
            linked = False
            if source.stat().st_mode & 0o004:
                try:
                    os.link(source, target)  # no copy: the mount is read-only anyway
                    linked = True
                except OSError:
                    pass
            if not linked:
                shutil.copyfile(source, target)
                target.chmod(0o644)
            size = target.stat().st_size
            recorded = known.get(item["path"])
            # A file record's hash is reused only while the size still matches.
            sha256 = recorded[0] if recorded and recorded[1] == size else sha256_file(target)
            inputs.append(dict(item, size=size, sha256=sha256))
        (paths["inputs"] / "config.json").write_text(json.dumps(row["config"], indent=2))
        (paths["inputs"] / "config.json").chmod(0o644)
        for name in LOG_NAMES:
            (paths["logs"] / f"{name}.log").touch()
        return inputs

    def _give_to_container(self, row: dict[str, Any], uid: int, gid: int) -> None:
        paths = self._paths(row)
        for key in ("outputs", "logs", "state"):
            os.chown(paths[key], uid, gid)
            for child in paths[key].iterdir():
                os.chown(child, uid, gid)

    async def _execute(self, run_id: int) -> None:
        row = await self.store.get("runs", run_id)
        pipeline = await self.pipelines.row(row["pipeline_id"])
        row = await self.store.update("runs", run_id, {"transfer": self.data_transfer})
        paths_in = [i["path"] for i in row["inputs"]]
        known = {}
        if paths_in:
            records = await self.store.select(
                "files", f"path IN ({','.join('?' * len(paths_in))}) AND sha256 IS NOT NULL",
                paths_in)
            known = {r["path"]: (r["sha256"], r["size"]) for r in records}
        inputs = await asyncio.to_thread(self._prepare_folder, row, known)
        row = await self.store.update("runs", run_id, {"inputs": inputs})
        limits = dict(self.default_limits)
        limits.update(pipeline.get("limits") or {})
        # The notify proxy connects to this host's loopback: only when the container is here.
        proxy_port = ((self.server_port() or None) if self.notify_enabled and
                      not self._pushed(row) else None)
        tried: list[str] = []
        while True:
            name = f"{self.prefix}-run-{run_id}-{secrets.token_hex(3)}"
            row = await self.store.update("runs", run_id, {"lxd_container": name})
            try:
                if not await self._launch(row, pipeline, limits, proxy_port):
                    return  # canceled meanwhile
                break
            except BackendUnavailable as e:
                if not row.get("location"):
                    raise
                # A cluster member that cannot be reached (lost, not yet marked offline):
                # the run goes to another one.
                placed = await self._launch_elsewhere(row, tried, e)
                if placed is None:
                    return
                row = placed
        await self._monitor(run_id)

    async def _launch(self, row: dict[str, Any], pipeline: dict[str, Any],
                      limits: dict[str, str], proxy_port: int | None) -> bool:
        """Create, fill, start the container and start the command; False if the run was
        moved away (canceled) meanwhile."""
        run_id, name = row["id"], row["lxd_container"]
        push = self._pushed(row)
        paths = self._paths(row)
        mounts = {} if push else {
            "pirus-inputs": DiskMount(paths["inputs"], pipeline["lxd_inputs_path"], True),
            "pirus-outputs": DiskMount(paths["outputs"], pipeline["lxd_outputs_path"], False),
            "pirus-logs": DiskMount(paths["logs"], pipeline["lxd_logs_path"], False),
            "pirus-databases": DiskMount(self.databases_dir, pipeline["lxd_db_path"], True),
            "pirus-state": DiskMount(paths["state"], STATE_DIR, False),
        }
        spec = ContainerSpec(name=name, image_alias=pipeline["lxd_alias"], limits=limits,
                             proxy_port=proxy_port, mounts=mounts, target=row.get("location"))
        uid, gid = await asyncio.to_thread(self.backend.create_container, spec)
        if not await self._still(run_id, S.INITIALIZING):
            return False
        if push:
            await asyncio.to_thread(self.transfer.push, name, pipeline, paths)
        else:
            await asyncio.to_thread(self._give_to_container, row, uid, gid)
        await asyncio.to_thread(self.backend.start, name)
        if not await self._still(run_id, S.INITIALIZING):
            return False
        # Manifest paths are absolute and free of '..', but may hold spaces: quote them.
        logs = shlex.quote(pipeline["lxd_logs_path"])
        outputs = shlex.quote(pipeline["lxd_outputs_path"])
        # Containers have no network but loopback, which nothing brings up without an init
        # system: the notify proxy listens there.
        script = ("ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null\n"
                  if proxy_port else "")
        # A heartbeat beside the command: if this wrapper dies without writing an exit code
        # (its LXD exec helper killed, say), the heartbeat stops and the run is ended in ERROR
        # instead of waiting forever on a container that stays up.
        script += f"echo $$ >{STATE_DIR}/pid\n"
        if push:
            script += heartbeat_script(logs, HEARTBEAT_INTERVAL)
        else:
            script += (f"( while kill -0 $$ 2>/dev/null; do touch {STATE_DIR}/{HEARTBEAT_FILE}; "
                       f"sleep {HEARTBEAT_INTERVAL:g}; done ) </dev/null >/dev/null 2>&1 &\n")
        script += (f"cd {outputs} || exit 125\n"
                   f"{{ {pipeline['lxd_run_cmd']}\n}} >>{logs}/out.log 2>>{logs}/err.log "
                   f"</dev/null\n")
        if push:  # outputs hashed inside, to check the copies pulled to this host
            script += (f"code=$?\n{manifest_script(outputs)}"
                       f"echo $code >{STATE_DIR}/{EXIT_FILE}.tmp && "
                       f"mv {STATE_DIR}/{EXIT_FILE}.tmp {STATE_DIR}/{EXIT_FILE}\n")
        else:
            script += (f"echo $? >{STATE_DIR}/{EXIT_FILE}.tmp && "
                       f"mv {STATE_DIR}/{EXIT_FILE}.tmp {STATE_DIR}/{EXIT_FILE}\n")
        environment = {
            "PIRUS_RUN_ID": str(run_id),
            "PIRUS_CONFIG_FILE": f"{pipeline['lxd_inputs_path']}/config.json",
            "PIRUS_PROGRESS_FILE": PROGRESS_FILE,
            "PIRUS_INPUTS_DIR": pipeline["lxd_inputs_path"],
            "PIRUS_OUTPUTS_DIR": pipeline["lxd_outputs_path"],
            "PIRUS_LOGS_DIR": pipeline["lxd_logs_path"],
            "PIRUS_DATABASES_DIR": pipeline["lxd_db_path"],
            "HOME": "/root",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        if proxy_port:
            environment["PIRUS_NOTIFY_URL"] = (
                f"http://127.0.0.1:{proxy_port}{self.base_url}pirus/api/v1/runs/{run_id}/"
                f"notify?token={row['notify_token']}")
        await asyncio.to_thread(self.backend.exec_detached, name, ["/bin/sh", "-c", script],
                                environment)
        async with self._lock(run_id):
            if not await self._still(run_id, S.INITIALIZING):
                return False
            await self._move(run_id, S.RUNNING)
        return True

    async def _still(self, run_id: int, status: RunStatus) -> bool:
        """False (after freeing the container) if the run was moved away, e.g. canceled."""
        row = await self.store.get("runs", run_id)
        if row["status"] == status:
            return True
        await self._remove_container(row)
        return False

    def _exit_code(self, row: dict[str, Any]) -> int | None:
        if self._pushed(row):
            return self.transfer.exit_code(row["lxd_container"]) if row.get(
                "lxd_container") else None
        try:
            return int((self._paths(row)["state"] / EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _read_reports(self, row: dict[str, Any], offset: int) -> tuple[list[Any], int]:
        """New complete JSON lines of the progress file since ``offset``."""
        path = self._paths(row)["state"] / "progress.jsonl"
        try:
            if self._pushed(row):  # read whole over the API: progress files stay small
                data = self.transfer.progress(row["lxd_container"])[offset:offset + 1024 * 1024]
            else:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(1024 * 1024)
        except OSError:
            return [], offset
        end = data.rfind(b"\n")
        if end < 0:
            return [], offset
        reports = []
        for line in data[: end + 1].splitlines():
            try:
                reports.append(json.loads(line))
            except ValueError:
                continue  # a malformed line is the pipeline's problem, not a reason to fail
        return reports, offset + end + 1

    def _heartbeat_lost(self, row: dict[str, Any]) -> bool:
        """True when the wrapper's heartbeat is older than the timeout, counted from the last
        move to RUNNING at the earliest (a frozen container beats no heart)."""
        if self._exit_code(row) is not None:
            return False
        running_since = max((datetime.fromisoformat(at).timestamp()
                             for status, at in row.get("timings") or []
                             if status == S.RUNNING.value), default=time.time())
        if self._pushed(row):  # a change of the beat's content, seen on this host's clock
            age = self.transfer.heartbeat_age(row["id"], row["lxd_container"])
            if age is None:
                return False  # cannot be read now: the health check sees why
            last_beat = time.time() - age
        else:
            try:
                last_beat = (self._paths(row)["state"] / HEARTBEAT_FILE).stat().st_mtime
            except OSError:
                last_beat = 0.0
        return time.time() - max(last_beat, running_since) > self.heartbeat_timeout

    def _log_sizes(self, row: dict[str, Any]) -> int:
        if self._pushed(row):  # as of the last heartbeat
            return self.transfer.log_sizes(row["id"])
        logs = self._paths(row)["logs"]
        return max((logs / f"{n}.log").stat().st_size if (logs / f"{n}.log").exists() else 0
                   for n in LOG_NAMES)

    async def _monitor(self, run_id: int) -> None:
        """Follow a running run until it ends: progress lines, exit code, container health,
        timeout and log caps."""
        offset = 0
        last_state_check = time.monotonic()
        while True:
            row = await self.store.get("runs", run_id)
            status = RunStatus(row["status"])
            if status in FINAL_RUN_STATUSES:
                await self._remove_container(row)
                return
            if status == S.WAITING:
                return  # re-queued after its cluster member was lost
            if row.get("location") and not await self._member_online(row["location"]) and \
                    not await self._container_answers(row):
                await self._member_lost(row)
                return
            row, offset = await self._follow_reports(row, offset)
            if status in (S.RUNNING, S.FINISHING):
                await self._check_log_cap(row)
                code = await asyncio.to_thread(self._exit_code, row)
                if code is not None:
                    # Reports written just before the exit (or whose read over the LXD API
                    # failed this once) still count: read them a last time.
                    row, offset = await self._follow_reports(row, offset)
                    await self._finish(run_id, code)
                    return
            now = time.monotonic()
            if now - last_state_check >= STATE_CHECK_INTERVAL:
                last_state_check = now
                await self._check_health(row)
            await asyncio.sleep(max(self.poll_interval, PUSH_POLL_INTERVAL)
                                if self._pushed(row) else self.poll_interval)

    async def _follow_reports(self, row: dict[str, Any], offset: int
                              ) -> tuple[dict[str, Any], int]:
        """Apply the progress file's new lines (merged into one report) to the run."""
        reports, offset = await asyncio.to_thread(self._read_reports, row, offset)
        merged: dict[str, Any] = {}
        for report in reports:
            if isinstance(report, dict):
                if isinstance(report.get("progress"), dict):
                    merged["progress"] = {**merged.get("progress", {}), **report["progress"]}
                if str(report.get("status")).upper() in ("FINISHING", "FINALIZING"):
                    merged["status"] = S.FINISHING.value
        if merged:
            try:
                async with self._lock(row["id"]):
                    row = await self._apply_report(row["id"], merged)
            except (InvalidRequest, Conflict) as e:
                self.log.debug("pirus: run %s ignored report %s: %s", row["id"], merged, e)
        return row, offset

    async def _check_health(self, row: dict[str, Any]) -> None:
        try:
            state = await asyncio.to_thread(self._container_state, row)
        except BackendUnavailable as e:
            # LXD restarting or briefly down: the run goes on inside its container, so wait.
            self._lxd_lost.setdefault(row["id"], time.monotonic())
            if time.monotonic() - self._lxd_lost[row["id"]] < LXD_OUTAGE_GRACE:
                self.log.warning("pirus: run %s: %s", row["id"], e.message)
                return
            raise BackendError(f"LXD unreachable for over {LXD_OUTAGE_GRACE:g} s: "
                               f"{e.message}") from e
        self._lxd_lost.pop(row["id"], None)
        alive = state is not None and state.status in ("Running", "Frozen", "Freezing")
        if not alive and await asyncio.to_thread(self._exit_code, row) is None:
            what = "disappeared" if state is None else f"is {state.status}"
            raise BackendError(f"the container {what} before the pipeline finished")
        if row["status"] == S.RUNNING and await asyncio.to_thread(self._heartbeat_lost, row):
            raise BackendError(
                f"the pipeline's process was lost (no heartbeat for {self.heartbeat_timeout:g} s "
                "and no exit code; was LXD restarted?)")
        if self.run_timeout and row["status"] == S.RUNNING:
            elapsed = phase_durations(row.get("timings") or []).get(S.RUNNING.value, 0.0)
            if elapsed > self.run_timeout:
                raise PirusError(f"timed out after {self.run_timeout:g} s")

    async def _check_log_cap(self, row: dict[str, Any]) -> None:
        """Checked at every poll, so a pipeline flooding its output is caught within one poll
        interval: stop it (freeze at once, then delete: nothing writes any more), cut the logs
        back to the cap, and end the run in ERROR."""
        if await asyncio.to_thread(self._log_sizes, row) <= self.log_max_bytes:
            return
        with contextlib.suppress(PirusError):
            await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
        await self._pull_logs_quietly(row)
        await self._remove_container(row)
        await asyncio.to_thread(self._truncate_logs, row)
        raise PirusError(f"a log file exceeded {self.log_max_bytes} bytes: the pipeline was "
                         "stopped and the log cut to that size")

    def _truncate_logs(self, row: dict[str, Any]) -> None:
        logs = self._paths(row)["logs"]
        for name in LOG_NAMES:
            path = logs / f"{name}.log"
            with contextlib.suppress(OSError):
                if path.stat().st_size > self.log_max_bytes:
                    os.truncate(path, self.log_max_bytes)

    async def _metrics(self, row: dict[str, Any], state: ContainerState | None = None
                       ) -> dict[str, Any]:
        if state is None and row.get("lxd_container") and \
                not self._member_known_lost(row.get("location")):
            try:
                state = await asyncio.to_thread(self.backend.state, row["lxd_container"])
            except PirusError:
                state = None
        previous = row.get("metrics") or {}
        return {
            "wall_seconds": _elapsed(row.get("start")),
            "cpu_seconds": state.cpu_seconds if state and state.cpu_seconds
            else previous.get("cpu_seconds"),
            "memory_peak_bytes": state.memory_peak if state and state.memory_peak
            else previous.get("memory_peak_bytes"),
            "phases": phase_durations(row.get("timings") or []),
        }

    def _collect_outputs(self, row: dict[str, Any], hashes: dict[str, str] | None = None
                         ) -> list[dict[str, Any]]:
        """Regular files of outputs/ with size and sha256. Symlinks planted by a pipeline are
        removed (never followed), so nothing outside the run folder is exposed. ``hashes``:
        sha256 already computed while pulling the files to this host."""
        outputs = self._paths(row)["outputs"]
        found = []
        for dirpath, dirnames, filenames in os.walk(outputs):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    path.unlink()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if not path.exists() or not path.is_file():
                    continue
                relative = path.relative_to(outputs).as_posix()
                found.append({
                    "name": relative,
                    "path": to_api_path(self.root_dir, path), "size": path.stat().st_size,
                    "sha256": (hashes or {}).get(relative) or sha256_file(path),
                    "source": "run", "run_id": row["id"], "created": now_iso(),
                })
        return found

    async def _finish(self, run_id: int, exit_code: int) -> None:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            try:  # read once, before stopping: a stopped container reports no usage
                state = await asyncio.to_thread(self.backend.state, row["lxd_container"])
            except PirusError:
                state = None
            metrics = await self._metrics(row, state)
            pipeline = await self.pipelines.row(row["pipeline_id"]) if self._pushed(row) else {}
            if pipeline:  # logs come back from the container first (the error quotes them)
                await asyncio.to_thread(self.transfer.pull_logs, row["lxd_container"], pipeline,
                                        self._paths(row)["logs"])
            if exit_code != 0:
                err_tail = await asyncio.to_thread(
                    tail_lines, self._paths(row)["logs"] / "err.log", 20)
                reason = f"the pipeline exited with code {exit_code}"
                if err_tail.strip():
                    reason += f": {err_tail.strip()[-2000:]}"
                await self._move(run_id, S.ERROR, exit_code=exit_code, error=reason,
                                 end=now_iso(), metrics=metrics)
                await self._remove_container(row)
                return
            if row["status"] == S.RUNNING:
                row = await self._move(run_id, S.FINISHING, exit_code=0, metrics=metrics)
            check_run_move(row["status"], S.DONE)
            # Freeze (milliseconds, where a stop takes most of a second) so nothing left
            # running in the container writes to outputs while they are hashed; deleting the
            # container waits until the run is recorded DONE.
            try:
                await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
            except PirusError as e:  # LXD down or shutting down: the command has ended, and
                # hashing without the freeze is still right
                self.log.warning("pirus: run %s: could not freeze before hashing: %s", run_id,
                                 e.message)
            hashes = None
            if pipeline:  # outputs too, each checked against its sha256 in the container
                hashes = await asyncio.to_thread(self.transfer.pull_outputs,
                                                 row["lxd_container"], pipeline,
                                                 self._paths(row)["outputs"])
            files = await asyncio.to_thread(self._collect_outputs, row, hashes)
            timings = [*(row.get("timings") or []), [S.DONE.value, now_iso()]]
            metrics = await self._metrics(dict(row, timings=timings), state)
            progress = dict(row.get("progress") or {})
            progress["value"] = progress.get("max", 100)
            await self.store.replace_run_outputs(run_id, files, {
                "status": S.DONE.value, "exit_code": 0, "end": now_iso(),
                "metrics": metrics, "timings": timings, "progress": progress,
            })
            done = await self.store.get("runs", run_id)
        for record in await self.store.select("files", "run_id = ?", [run_id]):
            self.events.publish("file.created", {k: record[k] for k in (
                "id", "name", "path", "size", "sha256", "source", "run_id", "created")})
        self.events.publish("run.updated", self._public(done))
        await self._remove_container(done)

    # -- clusters and pushed data ------------------------------------------------------------
    @staticmethod
    def _pushed(row: dict[str, Any]) -> bool:
        return row.get("transfer") == "push"

    async def _cluster_members(self, max_age: float = MEMBERS_MAX_AGE) -> list[Member]:
        """The cluster's members (cached ``max_age`` seconds); [] when LXD is no cluster."""
        at, members = self._members
        if time.monotonic() - at > max_age:
            members = await asyncio.to_thread(self.backend.members)
            self._members = (time.monotonic(), members)
        return members

    async def _member_online(self, name: str) -> bool:
        try:
            members = await self._cluster_members()
        except PirusError:
            return True  # cannot tell: the health check decides
        found = [m for m in members if m.name == name]
        return not members or bool(found and found[0].online)

    def _member_known_lost(self, name: str | None) -> bool:
        """From the last members read: ``name`` is a member that is not Online."""
        return bool(name) and any(m.name == name and not m.online for m in self._members[1])

    def _suspected(self) -> set[str]:
        now = time.monotonic()
        return {m for m, until in self._suspects.items() if until > now}

    async def _loads(self, members: list[Member]) -> dict[str, placement.Load]:
        """What active runs hold on each member (their recorded limits)."""
        active = [s.value for s in ACTIVE_RUN_STATUSES]
        rows = await self.store.select(
            "runs", f"status IN ({','.join('?' * len(active))}) AND location IS NOT NULL",
            active)
        by_name = {m.name: m for m in members}
        loads: dict[str, placement.Load] = {m.name: placement.Load() for m in members}
        for row in rows:
            member = by_name.get(row["location"])
            if member is None:
                continue
            cap = placement.capacity(member, self.member_capacity)
            placement.add_load(loads[member.name], row.get("limits") or {}, cap)
        return loads

    async def _effective_limits(self, row: dict[str, Any]) -> dict[str, str]:
        limits = dict(self.default_limits)
        with contextlib.suppress(NotFound):
            limits.update((await self.pipelines.row(row["pipeline_id"])).get("limits") or {})
        return {k: v for k, v in limits.items() if v not in ("", None)}

    async def _pick(self, members: list[Member]) -> tuple[int, dict[str, Any]] | None:
        """The oldest WAITING run that fits on a member now, and where: (run id, values to
        record). Runs no member could ever hold end in ERROR with the reason; runs that must
        wait let younger, smaller ones pass."""
        loads = await self._loads(members)
        suspects = self._suspected()
        for row in await self.store.select("runs", "status = ?", [S.WAITING.value],
                                           order_by="id", limit=200):
            limits = await self._effective_limits(row)
            try:
                member, reason = placement.choose(members, loads, limits, self.member_capacity,
                                                  target=row.get("target"), exclude=suspects)
            except ValueError as e:  # a limit or capacity LXD would not understand either
                member, reason = None, str(e)
            if member:
                return row["id"], {"location": member, "limits": limits}
            if reason:
                await self._fail(row["id"], reason)
        return None

    async def _check_target(self, target: Any) -> str | None:
        """The member a run must go to, or None (null or "": any member)."""
        if target is None or target == "":
            return None
        if not isinstance(target, str):
            raise InvalidRequest("target must be the name of an LXD cluster member")
        try:
            members = await self._cluster_members(max_age=0)
        except PirusError as e:
            raise UnknownMember(f"cannot check target {target!r}: {e.message}") from e
        if not members:
            raise UnknownMember("target needs an LXD cluster; this LXD is not clustered")
        if target not in {m.name for m in members}:
            raise UnknownMember(f"no cluster member is named {target!r} (members: "
                                f"{', '.join(m.name for m in members)})")
        return target

    async def _launch_elsewhere(self, row: dict[str, Any], tried: list[str],
                                error: PirusError) -> dict[str, Any] | None:
        """After a create/start that could not reach its member: mark the member suspect,
        leave its container behind (removed when the member is back) and place the run on
        another member. None if the run was canceled meanwhile or went back to the queue
        because no other member has room now; raises when no member could ever take it."""
        run_id, member = row["id"], row["location"]
        tried.append(member)
        self._suspects[member] = time.monotonic() + placement.SUSPECT_SECONDS
        attempts = [*(row.get("attempts") or []), {
            "member": member, "container": row["lxd_container"], "error": error.message,
            "at": now_iso()}]
        row = await self.store.update("runs", run_id, {"attempts": attempts})
        self.log.warning("pirus: run %s could not start on member %s (%s); trying another",
                         run_id, member, error.message)
        asyncio.get_running_loop().create_task(self._remove_container(
            {"lxd_container": attempts[-1]["container"]}))
        if not await self._still(run_id, S.INITIALIZING):
            return None
        members = await self._cluster_members(max_age=0)
        new, reason = placement.choose(
            members, await self._loads(members), row.get("limits") or {}, self.member_capacity,
            target=row.get("target"), exclude=set(tried) | self._suspected())
        if reason or len(tried) >= MAX_LAUNCH_ATTEMPTS:
            raise BackendError(f"could not start the run on cluster member(s) "
                               f"{', '.join(tried)}: {error.message}" +
                               (f"; {reason}" if reason else ""))
        if new is None:  # no other member has room now: back to the queue, first in line
            async with self._lock(run_id):
                if await self._still(run_id, S.INITIALIZING):
                    await self._move(run_id, S.WAITING, location=None, lxd_container=None,
                                     start=None)
            return None
        return await self.store.update("runs", run_id, {"location": new})

    def _container_state(self, row: dict[str, Any]) -> ContainerState | None:
        """The container's state; at once unreachable (no ~10 s stall) when a read of its
        pushed files just failed to reach its member."""
        if self._pushed(row) and self.transfer.unreachable(row["lxd_container"]):
            raise MemberUnavailable(f"cluster member {row.get('location')} is unreachable",
                                    member=row.get("location"))
        return self.backend.state(row["lxd_container"])

    async def _container_answers(self, row: dict[str, Any]) -> bool:
        """Asked when LXD reports the run's member not Online: a member restarted quickly can
        be marked OFFLINE for a moment while its container runs on. A lost one stalls the
        request ~10 s and fails."""
        try:
            state = await asyncio.to_thread(self._container_state, row)
        except PirusError:
            return False
        return state is not None

    async def _member_lost(self, row: dict[str, Any]) -> None:
        """The member holding a run is not Online: end the run in ERROR with the reason, or
        put it back in the queue (``requeue_on_member_loss``). Its container stays on the lost
        member until the member is back; then it is removed."""
        run_id, name = row["id"], row["location"]
        found = [m for m in self._members[1] if m.name == name]
        state = (f"{found[0].status}" + (f": {found[0].message}" if found[0].message else "")
                 if found else "not in the cluster any more")
        reason = (f"cluster member {name} was lost while the run was {row['status']} "
                  f"(LXD: {state})")
        self.transfer.forget(run_id, row.get("lxd_container"))
        if not self.requeue_on_member_loss:
            raise BackendError(f"{reason}; its outputs and logs stayed on {name}")
        attempts = [*(row.get("attempts") or []), {
            "member": name, "container": row.get("lxd_container"), "error": reason,
            "at": now_iso()}]
        async with self._lock(run_id):
            try:
                await self._move(run_id, S.WAITING, location=None, lxd_container=None,
                                 start=None, exit_code=None, attempts=attempts,
                                 progress={"value": 0, "min": 0, "max": 100,
                                           "label": f"re-queued: {name} was lost"})
            except Conflict:
                return
        self.log.warning("pirus: run %s re-queued: %s", run_id, reason)

    async def _watch_members(self) -> None:
        """In a cluster: when a lost member is back, delete the containers of runs that ended
        (or moved on) while it was away; and every few seconds let the queue look again at
        runs waiting for room, for a member to come back or for a suspect one to be trusted
        again."""
        offline: set[str] | None = None
        while not self._stopping:
            try:
                members = await self._cluster_members(max_age=0)
            except PirusError:
                members = None
            if members == [] and offline is None:
                return  # not a cluster
            if members:
                now_offline = {m.name for m in members if not m.online}
                back = (offline or set()) - now_offline
                offline = now_offline
                if back:
                    self.log.info("pirus: cluster member(s) %s back", ", ".join(sorted(back)))
                    for name in back:
                        self._suspects.pop(name, None)
                    try:
                        await self._remove_leftover_containers()
                    except PirusError as e:
                        self.log.warning("pirus: could not reconcile containers: %s", e.message)
            await self.schedule()
            await asyncio.sleep(MEMBER_WATCH_INTERVAL)

    async def _pull_logs_quietly(self, row: dict[str, Any]) -> None:
        """Bring a pushed run's logs back before its container goes (best effort)."""
        if not self._pushed(row) or not row.get("lxd_container") or \
                self._member_known_lost(row.get("location")):
            return
        try:
            pipeline = await self.pipelines.row(row["pipeline_id"])
            await asyncio.to_thread(self.transfer.pull_logs, row["lxd_container"], pipeline,
                                    self._paths(row)["logs"])
        except (PirusError, OSError) as e:
            self.log.warning("pirus: run %s: logs not pulled: %s", row["id"], e)

    async def _live_log(self, row: dict[str, Any], which: str, tail: int | None) -> str | None:
        try:
            pipeline = await self.pipelines.row(row["pipeline_id"])
        except NotFound:
            return None
        data = await asyncio.to_thread(self.transfer.read_log, row["lxd_container"], pipeline,
                                       which)
        if data is None:
            return None
        if tail is None:
            return data[:self.log_max_bytes].decode(errors="replace")
        lines = data.decode(errors="replace").splitlines()[-tail:] if tail > 0 else []
        return "\n".join(lines) + ("\n" if lines else "")

    async def cluster_info(self) -> dict[str, Any] | None:
        """Members, their state and what Pirus runs on each (for ``GET /pirus/api/v1``)."""
        try:
            members = await self._cluster_members(max_age=0)
        except PirusError:
            return None
        if not members:
            return None
        loads = await self._loads(members)
        suspects = self._suspected()
        out = []
        for member in members:
            try:
                cap = placement.capacity(member, self.member_capacity)
            except ValueError:
                cap = placement.Capacity(runs=0, cpu=None, memory=None)
            load = loads.get(member.name, placement.Load())
            out.append({**member.to_json(), "active_runs": load.runs,
                        "capacity": {"runs": cap.runs, "cpu": cap.cpu, "memory": cap.memory},
                        "suspect": member.name in suspects})
        return {"members": out, "requeue_on_member_loss": self.requeue_on_member_loss}
