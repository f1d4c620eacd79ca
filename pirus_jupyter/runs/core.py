"""What the parts of the run manager share: settings, the runs this process drives, the state
move, and container removal.

``RunManager`` (manager.py) is one object assembled from parts, one module per concern:
queue.py (schedule, reconcile), lifecycle.py (launch, monitor, finish), cluster.py (members,
placement, member loss). They all build on ``RunsCore``.

Each run this process drives has an ``ActiveRun``: its driving task, its last known record and
an ``asyncio.Event`` set at every state move. Cancel, pause/resume, a re-queue and the end of a
run reach the driving task through it, in-process; the database is written for durability
(each move a compare-and-set), never polled as a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from ..backend.base import Backend, Member
from ..errors import NotFound, PirusError
from ..events import EventBus
from ..files import FileService
from ..models import FINAL_RUN_STATUSES, RunStatus, check_run_move, public_run
from ..pipelines import PipelineService
from ..store import Store, now_iso
from .data import RunData, open_run_data
from .wrapper import HEARTBEAT_INTERVAL

# Seconds before a container deletion LXD refused is tried again (doubling up to a minute).
REMOVAL_RETRY = 5.0
# Containers of ended runs whose deletion may wait while runs start (then they go regardless):
# starting a run is on its user's path, deleting an ended one is not; both need LXD's time.
CLEANUP_BACKLOG_PER_SLOT = 1
# Progress reports of the runs this process drives are published at once but written in
# batches, one transaction per this many seconds for all runs: a crash loses at most the
# progress of the last interval, never a state move (those are written before they are told).
PROGRESS_FLUSH_INTERVAL = 0.1
# A run's progress before its pipeline reports any.
FRESH_PROGRESS: dict[str, Any] = {"value": 0, "min": 0, "max": 100, "label": None}


@dataclass(eq=False)
class ActiveRun:
    """A run this process drives. ``row`` is its last known record, kept current by every
    write of this process; ``changed`` is set at each state move."""

    row: dict[str, Any]
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    data: RunData | None = None  # how its container sees its data, once known

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.row["status"])

    async def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if the run is moved meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()


@dataclass(eq=False, repr=False)
class RunsCore:
    """Services and settings (as ``Services.build`` passes them), and the shared state."""

    store: Store
    events: EventBus
    backend: Backend
    files: FileService
    pipelines: PipelineService
    _: KW_ONLY
    root_dir: Path
    runs_dir: Path
    databases_dir: Path
    max_parallel: int
    default_limits: dict[str, str]
    run_timeout: float
    log_max_bytes: int
    poll_interval: float
    notify_enabled: bool
    server_port: Callable[[], int]
    base_url: str
    prefix: str = "pirus"
    log: logging.Logger
    # "mounts": run folders are bind-mounted (LXD on this host). "push": containers may be on
    # another machine, data goes through the LXD file API (data.py). "auto": push if remote.
    data_transfer: str = "auto"
    member_capacity: dict[str, Any] | None = None
    requeue_on_member_loss: bool = False
    # A run writing more output files, or more bytes of outputs, ends in ERROR (outputs.py).
    max_outputs: int = 1000
    max_output_bytes: int = 1024**4
    # Whether a run asked for without "reuse" reuses an identical DONE run (reuse.py).
    reuse_default: bool = False
    # Whether the runs next in the queue get their container made ahead (prepare.py).
    prepare_queued: bool = True
    # Seconds without a heartbeat (and no exit code) after which a RUNNING run is lost.
    heartbeat_timeout: float = field(default=6 * HEARTBEAT_INTERVAL, init=False)

    def __post_init__(self) -> None:
        self.max_parallel = max(1, self.max_parallel)
        if self.data_transfer not in ("mounts", "push"):
            self.data_transfer = "push" if self.backend.remote else "mounts"
        self.member_capacity = dict(self.member_capacity or {})
        self._members: tuple[float, list[Member]] = (0.0, [])  # (when read, members)
        self._suspects: dict[str, float] = {}  # member -> until when launches avoid it
        self._member_watch: asyncio.Task[None] | None = None
        # Runs this process drives (started or reconciled): they hold a container slot.
        self._active: dict[int, ActiveRun] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._lxd_lost: dict[int, float] = {}  # run id -> when LXD was first found unreachable
        self._removals: dict[str, asyncio.Task[None]] = {}  # container deletions to retry
        # Containers of ended runs being deleted, off the run's slot (lifecycle._remove_later).
        self._cleanups: set[asyncio.Task[None]] = set()
        # Notify proxies being added to started containers, by container (lifecycle.py).
        self._plugs: dict[str, asyncio.Task[None]] = {}
        self._deleting: dict[str, asyncio.Task[None]] = {}  # deletions under way, by container
        self._no_starts = asyncio.Event()  # set while no run this process drives INITIALIZING
        self._no_starts.set()
        # Runs next in the queue: prepared (or tried: None), being prepared (prepare.py).
        self._prepared: dict[int, Any] = {}
        self._preparing: dict[int, asyncio.Task[None]] = {}
        self._preparer: asyncio.Task[None] | None = None
        self._queue_retry: asyncio.Task[None] | None = None  # the queue held while LXD is down
        self._schedule_lock = asyncio.Lock()
        self._stopping = False
        self._reconciled = False  # the queue opens once runs left by a previous server are known
        self._reconcile_task: asyncio.Task[None] | None = None
        # Progress published but not yet written, by run; and the task that writes it.
        self._progress_unsaved: dict[int, dict[str, Any]] = {}
        self._progress_flush: asyncio.Task[None] | None = None

    @property
    def active_count(self) -> int:
        return len(self._active)

    def _lock(self, run_id: int) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    # -- defined by the parts; the driving task's guard calls them ---------------------------
    async def schedule(self) -> None:
        raise NotImplementedError  # queue.py

    async def _fail(self, run_id: int, reason: str, **values: Any) -> None:
        raise NotImplementedError  # lifecycle.py

    # -- the runs this process drives --------------------------------------------------------
    def _track(self, row: dict[str, Any], work: Awaitable[None]) -> None:
        """Drive ``row``'s run with ``work`` in a task of its own, holding a slot."""
        run = ActiveRun(row)
        self._active[row["id"]] = run
        run.task = asyncio.get_running_loop().create_task(self._guard(row["id"], work))
        self._starts_changed()

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
            run = self._active.get(run_id)
            if run is not None and run.task is asyncio.current_task():
                del self._active[run_id]
                self._starts_changed()
            if not self._stopping:
                asyncio.get_running_loop().create_task(self.schedule())

    def _note(self, row: dict[str, Any]) -> None:
        """Keep the driving task's copy of ``row`` current; wake it if the status moved."""
        run = self._active.get(row["id"])
        # timings grow at every move: a write that completed earlier never wins
        if run is None or len(row.get("timings") or []) < len(run.row.get("timings") or []):
            return
        moved = row["status"] != run.row["status"]
        unsaved = self._progress_unsaved.get(row["id"])
        run.row = row if unsaved is None else dict(row, progress=unsaved)
        if moved:
            run.changed.set()
            self._starts_changed()

    def _starts_changed(self) -> None:
        if self._stopping or all(run.status != RunStatus.INITIALIZING
                                 for run in self._active.values()):
            self._no_starts.set()
        else:
            self._no_starts.clear()

    async def _after_starts(self) -> None:
        """Wait until no run is starting, unless enough ended containers already wait (the
        wait bounds how many stopped containers hold their disk space at once)."""
        while not self._no_starts.is_set() and \
                len(self._cleanups) <= CLEANUP_BACKLOG_PER_SLOT * self.max_parallel:
            await self._no_starts.wait()

    async def _run_data(self, row: dict[str, Any], pipeline: dict[str, Any] | None = None
                        ) -> RunData:
        """The run's data object: the driving task's own while it has one for this container
        (it holds what was seen of the container, e.g. the last heartbeat)."""
        run = self._active.get(row["id"])
        if run and run.data and run.data.container == row.get("lxd_container"):
            return run.data
        if pipeline is None:
            with contextlib.suppress(NotFound):
                pipeline = await self.pipelines.row(row["pipeline_id"])
        data = open_run_data(row, pipeline, self.backend, self.databases_dir, self.log,
                             self.log_max_bytes)
        if run and run.row.get("lxd_container") == row.get("lxd_container"):
            run.data = data
        return data

    # -- writes ---------------------------------------------------------------------------
    async def _move(self, run_id: int, target: RunStatus, /, **values: Any) -> dict[str, Any]:
        """Move a run along the state machine (compare-and-set), publish the change."""
        while True:
            row = await self.store.get("runs", run_id)
            check_run_move(row["status"], target)
            timings = [*(row.get("timings") or []), [target.value, now_iso()]]
            write = dict(values, status=target.value, timings=timings)
            # Progress not yet written goes with the move (a final run's is never written later).
            unsaved = self._progress_unsaved.pop(run_id, None)
            if unsaved is not None and "progress" not in values:
                write["progress"] = unsaved
            updated = await self.store.update_where_status("runs", run_id, [row["status"]], write)
            if updated is not None:
                self._note(updated)
                self.events.publish("run.updated", public_run(updated))
                return updated
            if unsaved is not None:
                self._progress_unsaved.setdefault(run_id, unsaved)

    async def _save(self, run_id: int, values: dict[str, Any]) -> dict[str, Any]:
        """Record ``values`` (no state move), with the run's progress not yet written."""
        unsaved = self._progress_unsaved.pop(run_id, None)
        if unsaved is not None and "progress" not in values:
            values = dict(values, progress=unsaved)
        row = await self.store.update("runs", run_id, values)
        self._note(row)
        return row

    def _save_progress_soon(self, run: ActiveRun, progress: dict[str, Any]) -> dict[str, Any]:
        """A driven run's new progress: its row now (to publish at once), written within
        PROGRESS_FLUSH_INTERVAL together with the other runs' (one transaction)."""
        run.row = dict(run.row, progress=progress)
        self._progress_unsaved[run.row["id"]] = progress
        if self._progress_flush is None:
            self._progress_flush = asyncio.get_running_loop().create_task(self._flush_later())
        return run.row

    def _take_progress(self, run_id: int) -> dict[str, Any] | None:
        """The run's progress not yet written (the caller writes it), if any."""
        return self._progress_unsaved.pop(run_id, None)

    def _with_progress(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row read from the store, with the progress published but not yet written."""
        unsaved = self._progress_unsaved.get(row["id"])
        return row if unsaved is None else dict(row, progress=unsaved)

    async def _flush_later(self) -> None:
        try:
            while self._progress_unsaved:
                await asyncio.sleep(PROGRESS_FLUSH_INTERVAL)
                await self._flush_progress()
        finally:
            self._progress_flush = None

    async def _flush_progress(self) -> None:
        batch, self._progress_unsaved = self._progress_unsaved, {}
        if not batch:
            return
        try:
            await self.store.set_each("runs", "progress", batch,
                                      unless_status=sorted(FINAL_RUN_STATUSES))
        except Exception as e:  # a full disk: progress is not worth failing a run for
            self.log.warning("pirus: progress of %d run(s) not saved: %s", len(batch), e)

    async def _remove_container(self, row: dict[str, Any]) -> None:
        name = row.get("lxd_container")
        if not name:
            return
        plug = self._plugs.get(name)
        if plug is not None and plug is not asyncio.current_task():
            # A device being added while the container goes: LXD would fail one of the two.
            # (Left in _plugs meanwhile, so that a server stop still cancels it.)
            await asyncio.wait({plug})
        self._plugs.pop(name, None)
        # One deletion per container at a time: a cancel and the woken run's task both remove
        # it, and LXD refuses the second while the first stops it ("busy").
        deleting = self._deleting.get(name)
        if deleting is None:
            deleting = asyncio.get_running_loop().create_task(self._delete_container(name))
            self._deleting[name] = deleting
            deleting.add_done_callback(lambda _: self._deleting.pop(name, None))
        await asyncio.shield(deleting)  # a caller cancelled does not stop the deletion

    async def _delete_container(self, name: str) -> None:
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
        delay = REMOVAL_RETRY
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
