"""A run's life once the queue starts it: launch, monitor, finish (or fail).

Launch prepares the run folder, creates the container (on the member placement.py chose),
hands it the data (data.py), starts it and starts the wrapper (wrapper.py) detached. The
monitor then only reads the run's state files (progress lines, exit code, heartbeat) and asks
LXD for the container's state now and then; it sleeps on the run's in-process signal
(core.ActiveRun), so a cancel, pause or re-queue is seen at once. Finishing records the exit
code, the outputs with their sha256 and the metrics, and deletes the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from datetime import datetime
from typing import Any

from ..backend.base import ContainerState
from ..errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    InvalidRequest,
    MemberUnavailable,
    PirusError,
    RuleBroken,
)
from ..models import FINAL_RUN_STATUSES, RunStatus, check_run_move, public_run
from ..store import now_iso
from . import wrapper
from .data import RunData
from .folder import (
    RunPaths,
    tail_lines,
    truncate_logs,
)
from .outputs import OutputLimits, secure_run_folder
from .poll import read_poll
from .prepare import Prepare

S = RunStatus
STATE_CHECK_INTERVAL = 2.0
# How long a running pipeline is given while LXD cannot be reached before it is ended in ERROR.
LXD_OUTAGE_GRACE = 120.0
FINISHING_NAMES = ("FINISHING", "FINALIZING")  # FINALIZING: original Pirus' name
# A run with more outputs announces them in its run.updated event only, not one file.created
# each: thousands of events at once would cut off every websocket reader (1013).
FILE_EVENTS_MAX = 100


def elapsed(start: str | None, end: str | None = None) -> float | None:
    if not start:
        return None
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else datetime.now(t0.tzinfo)
    return round((t1 - t0).total_seconds(), 3)


def phase_durations(timings: list[list[str]]) -> dict[str, float]:
    """Seconds spent in each status, from the run's list of [status, time] moves (a status
    entered several times, e.g. RUNNING around a PAUSE, adds up)."""
    phases: dict[str, float] = {}
    for (status, at), nxt in zip(timings, [*timings[1:], None], strict=True):
        seconds = elapsed(at, nxt[1] if nxt else None) or 0.0
        if nxt is None and status in ("DONE", "ERROR", "CANCELED"):
            continue
        phases[status] = round(phases.get(status, 0.0) + seconds, 3)
    return phases


def parse_reports(data: bytes) -> tuple[list[Any], int]:
    """The complete JSON lines of ``data`` and how many bytes they take."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0
    reports = []
    for line in data[: end + 1].splitlines():
        try:
            reports.append(json.loads(line))
        except ValueError:
            continue  # a malformed line is the pipeline's problem, not a reason to fail
    return reports, end + 1


def merge_reports(reports: list[Any]) -> dict[str, Any]:
    """Progress lines merged into one report (the last value of each key wins)."""
    merged: dict[str, Any] = {}
    for report in reports:
        if isinstance(report, dict):
            if isinstance(report.get("progress"), dict):
                merged["progress"] = {**merged.get("progress", {}), **report["progress"]}
            if str(report.get("status")).upper() in FINISHING_NAMES:
                merged["status"] = S.FINISHING.value
    return merged


def wants_notify(pipeline: dict[str, Any]) -> bool:
    """False only for packages whose manifest says they never POST to $PIRUS_NOTIFY_URL
    (the builder records it); original Pirus packages, which do not say, get the proxy."""
    return (pipeline.get("manifest") or {}).get("notify") is not False


class Lifecycle(Prepare):
    # -- launch ---------------------------------------------------------------------------
    async def _execute(self, run_id: int) -> None:
        prepared = await self._take_prepared(run_id)
        if prepared is not None:  # its container was made while it waited (prepare.py)
            if await self._launch(prepared.row, prepared.pipeline, prepared.limits,
                                  created=True):
                await self._monitor(run_id)
            return
        row, pipeline, limits = await self._make_ready(run_id)
        tried: list[str] = []
        while True:
            name = f"{self.prefix}-run-{run_id}-{secrets.token_hex(3)}"
            row = await self._save(run_id, {"lxd_container": name})
            try:
                if not await self._launch(row, pipeline, limits):
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
                      limits: dict[str, str], created: bool = False) -> bool:
        """Create (unless ``created``), fill, start the container and start the command;
        False if the run was moved away (canceled) meanwhile."""
        run_id, name = row["id"], row["lxd_container"]
        if not created:
            await self._create_and_fill(row, pipeline, limits)
            if not await self._still(run_id, S.INITIALIZING):
                return False
        data = await self._run_data(row, pipeline)
        # The notify proxy connects to this host's loopback: only when the container is here,
        # and only for pipelines that may POST to it (it adds a second to the start).
        proxy_port = ((self.server_port() or None) if self.notify_enabled and
                      data.on_this_host and wants_notify(pipeline) else None)
        await asyncio.to_thread(self.backend.start, name)
        if not await self._still(run_id, S.INITIALIZING):
            return False
        if proxy_port:
            self._plug_proxy(run_id, name, proxy_port)
        script = wrapper.wrapper_script(pipeline, loopback=bool(proxy_port),
                                        heartbeat=data.heartbeat_script(),
                                        before_exit=data.before_exit_script(),
                                        proxy_port=proxy_port)
        notify_url = (f"http://127.0.0.1:{proxy_port}{self.base_url}pirus/api/v1/runs/{run_id}/"
                      f"notify?token={row['notify_token']}") if proxy_port else None
        await asyncio.to_thread(self.backend.exec_detached, name,
                                [wrapper.shell(pipeline), "-c", script],
                                wrapper.environment(run_id, pipeline, notify_url))
        async with self._lock(run_id):
            if not await self._still(run_id, S.INITIALIZING):
                return False
            await self._move(run_id, S.RUNNING)
        return True

    def _plug_proxy(self, run_id: int, name: str, port: int) -> None:
        """Add the notify proxy to the started container in a task of its own; the run ends
        in ERROR if LXD refuses it. Removing the container waits for it (core.py)."""
        async def plug() -> None:
            try:
                await asyncio.to_thread(self.backend.add_proxy, name, port)
            except PirusError as e:
                await self._fail(run_id, e.message)

        self._plugs[name] = asyncio.get_running_loop().create_task(plug())

    async def _still(self, run_id: int, status: RunStatus) -> bool:
        """False (after freeing the container) if the run was moved away, e.g. canceled."""
        row = self._active[run_id].row
        if row["status"] == status:
            return True
        await self._remove_container(row)
        return False

    # -- monitor --------------------------------------------------------------------------
    async def _monitor(self, run_id: int) -> None:
        """Follow a running run until it ends: progress lines, exit code, container health,
        timeout and log caps."""
        run = self._active[run_id]
        self._note(await self.store.get("runs", run_id))  # what happened before it was tracked
        data = await self._run_data(run.row)
        offset = 0
        last_state_check = time.monotonic()
        while True:
            row, status = run.row, run.status
            if status in FINAL_RUN_STATUSES:
                await self._remove_container(row)
                await self._secure_folder(row)
                return
            if status == S.WAITING:
                return  # re-queued after its cluster member was lost
            if row.get("location") and not await self._member_online(row["location"]) and \
                    not await self._container_answers(row, data):
                await self._member_lost(row)
                return
            running = status in (S.RUNNING, S.FINISHING)
            poll = await asyncio.to_thread(read_poll, row, data, offset, running)
            offset = await self._apply_reports(run_id, poll.progress, offset)
            if running:
                await self._check_log_cap(row, data, poll.log_size)
                code = poll.exit_code
                if isinstance(code, Exception):
                    raise code
                if code is not None:
                    # Reports written just before the exit (or whose read over the LXD API
                    # failed this once) still count: read them a last time.
                    offset = await self._follow_reports(run_id, data, offset)
                    await self._finish(run_id, code, data)
                    return
            now = time.monotonic()
            if now - last_state_check >= STATE_CHECK_INTERVAL:
                last_state_check = now
                await self._check_health(run.row, data)
            await run.wait(data.poll_interval(self.poll_interval))

    async def _follow_reports(self, run_id: int, data: RunData, offset: int) -> int:
        """Apply the progress file's new lines (merged into one report) to the run."""
        return await self._apply_reports(run_id, await asyncio.to_thread(data.progress, offset),
                                         offset)

    async def _apply_reports(self, run_id: int, lines: bytes, offset: int) -> int:
        """Apply progress lines read at ``offset``; the offset after the complete ones."""
        reports, used = parse_reports(lines)
        merged = merge_reports(reports)
        if merged:
            try:
                async with self._lock(run_id):
                    await self._apply_report(run_id, merged)
            except (InvalidRequest, Conflict) as e:
                self.log.debug("pirus: run %s ignored report %s: %s", run_id, merged, e)
        return offset + used

    def _container_state(self, row: dict[str, Any], data: RunData) -> ContainerState | None:
        """The container's state; at once unreachable (no ~10 s stall) when a read of its
        files just failed to reach its member."""
        if data.unreachable():
            raise MemberUnavailable(f"cluster member {row.get('location')} is unreachable",
                                    member=row.get("location"))
        return self.backend.state(row["lxd_container"])

    def _heartbeat_lost(self, row: dict[str, Any], data: RunData) -> bool:
        """True when the wrapper's heartbeat is older than the timeout, counted from the last
        move to RUNNING at the earliest (a frozen container beats no heart)."""
        if data.exit_code() is not None:
            return False
        running_since = max((datetime.fromisoformat(at).timestamp()
                             for status, at in row.get("timings") or []
                             if status == S.RUNNING.value), default=time.time())
        last_beat = data.last_beat()
        if last_beat is None:
            return False  # cannot be read now: the health check sees why
        return time.time() - max(last_beat, running_since) > self.heartbeat_timeout

    async def _check_health(self, row: dict[str, Any], data: RunData) -> None:
        try:
            state = await asyncio.to_thread(self._container_state, row, data)
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
        if not alive and await asyncio.to_thread(data.exit_code) is None:
            what = "disappeared" if state is None else f"is {state.status}"
            raise BackendError(f"the container {what} before the pipeline finished")
        if row["status"] == S.RUNNING and await asyncio.to_thread(self._heartbeat_lost, row,
                                                                  data):
            raise BackendError(
                f"the pipeline's process was lost (no heartbeat for {self.heartbeat_timeout:g} s "
                "and no exit code; was LXD restarted?)")
        if self.run_timeout and row["status"] == S.RUNNING:
            running = phase_durations(row.get("timings") or []).get(S.RUNNING.value, 0.0)
            if running > self.run_timeout:
                raise PirusError(f"timed out after {self.run_timeout:g} s")

    async def _check_log_cap(self, row: dict[str, Any], data: RunData,
                             size: int | Exception | None) -> None:
        """Checked at every poll (``size``: what it read, or the error), so a pipeline flooding
        its output is caught within one poll interval: stop it (freeze at once, then delete:
        nothing writes any more), cut the logs back to the cap, and end the run in ERROR. A log
        that is no longer a regular file (a link, a FIFO) or not the file made with the run
        folder (deleted, swapped: the output goes on into the unlinked one) raises RuleBroken:
        the run ends in ERROR."""
        if isinstance(size, RuleBroken):
            await self._stop_writing(row)  # its output goes on where no cap sees it
            raise size
        if isinstance(size, Exception):
            raise size
        if size is None or size <= self.log_max_bytes:
            return
        await self._stop_writing(row)
        await asyncio.to_thread(truncate_logs, data.paths, self.log_max_bytes)
        raise PirusError(self._log_cap_message())

    async def _stop_writing(self, row: dict[str, Any]) -> None:
        """Freeze the container at once (nothing writes any more), then delete it."""
        with contextlib.suppress(PirusError):
            await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
        await self._pull_logs_quietly(row)
        await self._remove_container(row)

    def _log_cap_message(self) -> str:
        return (f"a log file exceeded {self.log_max_bytes} bytes: the pipeline was stopped and "
                "the log cut to that size")

    # -- the end --------------------------------------------------------------------------
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
            "wall_seconds": elapsed(row.get("start")),
            "cpu_seconds": state.cpu_seconds if state and state.cpu_seconds
            else previous.get("cpu_seconds"),
            "memory_peak_bytes": state.memory_peak if state and state.memory_peak
            else previous.get("memory_peak_bytes"),
            "phases": phase_durations(row.get("timings") or []),
        }

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
        await self._secure_folder(row)

    async def _secure_folder(self, row: dict[str, Any], partial: bool = False) -> None:
        """What the pipeline left made safe (outputs.py), once its container is gone.
        ``partial``: a pipeline that failed by itself has what it wrote listed as its outputs
        (within the same caps), so the user sees how far it got. Not after a cancel, which
        must not start hashing what it was asked to stop."""
        if not row.get("root_path"):
            return
        limits = OutputLimits(self.max_outputs, self.max_output_bytes) if partial else None
        try:
            scan = await asyncio.to_thread(secure_run_folder, RunPaths.of(row), row["id"],
                                           self.root_dir, limits)
        except OSError as e:
            self.log.error("pirus: run %s: its folder could not be made safe: %s", row["id"], e)
            return
        if scan.removed_count:
            self.log.warning("pirus: run %s: removed %d special file(s): %s", row["id"],
                             scan.removed_count, ", ".join(scan.removed))
        if limits is not None and scan.files and scan.problem(limits) is None:
            await self.store.replace_run_outputs(row["id"], scan.files, {})
            self.events.publish("run.updated", public_run(await self.store.get("runs", row["id"])))

    async def _pull_logs_quietly(self, row: dict[str, Any]) -> None:
        """Bring the logs back before the container goes (best effort)."""
        if not row.get("lxd_container") or self._member_known_lost(row.get("location")):
            return
        try:
            data = await self._run_data(row)
            await asyncio.to_thread(data.pull_logs)
        except (PirusError, OSError) as e:
            self.log.warning("pirus: run %s: logs not pulled: %s", row["id"], e)

    async def _finish(self, run_id: int, exit_code: int, data: RunData) -> None:
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            try:  # read once, before stopping: a stopped container reports no usage
                state = await asyncio.to_thread(self.backend.state, row["lxd_container"])
            except PirusError:
                state = None
            metrics = await self._metrics(row, state)
            # logs come back from the container first (the error quotes them), each cut at
            # the cap: a pushed run's log sizes came from its own (fakeable) heartbeat
            if await asyncio.to_thread(data.pull_logs):
                raise PirusError(self._log_cap_message())
            if exit_code != 0:
                err_tail = await asyncio.to_thread(tail_lines, data.paths.log("err"), 20)
                reason = f"the pipeline exited with code {exit_code}"
                if err_tail.strip():
                    reason += f": {err_tail.strip()[-2000:]}"
                await self._move(run_id, S.ERROR, exit_code=exit_code, error=reason,
                                 end=now_iso(), metrics=metrics)
                # What it wrote before failing is listed once the container is gone.
                self._remove_later(row, secure=True, partial=True)
                return
            if row["status"] == S.RUNNING:
                row = await self._move(run_id, S.FINISHING, exit_code=0, metrics=metrics)
            check_run_move(row["status"], S.DONE)
            # Freeze (milliseconds, where a stop takes most of a second) so nothing left
            # running in the container writes to outputs while they are hashed; deleting the
            # container waits until the run is recorded DONE. Not needed when its init is
            # all that is left (the wrapper and its heartbeat have ended): on a busy host
            # LXD's freeze can take a whole second (liblxc polls the cgroup v1 freezer each
            # second).
            try:
                if state is None or state.processes != 1:
                    await asyncio.to_thread(self.backend.freeze, row["lxd_container"])
            except PirusError as e:  # LXD down or shutting down: the command has ended, and
                # hashing without the freeze is still right
                self.log.warning("pirus: run %s: could not freeze before hashing: %s", run_id,
                                 e.message)
        # Outside the run's lock: hashing large outputs takes minutes, and a cancel meanwhile
        # must not wait for it (it stops the hashing, see ``moved_on``).
        run = self._active.get(run_id)

        def moved_on() -> bool:
            return run is not None and run.status != S.FINISHING

        # pushed: each output checked against its sha256 in the container
        hashes = await asyncio.to_thread(data.pull_outputs)
        limits = OutputLimits(self.max_outputs, self.max_output_bytes)
        scan = await asyncio.to_thread(secure_run_folder, data.paths, run_id, self.root_dir,
                                       limits, hashes, moved_on)
        if scan.removed_count:
            self.log.warning("pirus: run %s: removed %d special file(s): %s", run_id,
                             scan.removed_count, ", ".join(scan.removed))
        async with self._lock(run_id):
            row = await self.store.get("runs", run_id)
            if row["status"] != S.FINISHING or scan.stopped:
                return  # canceled (or failed) meanwhile: whoever moved it freed the container
            problem = scan.problem(limits)
            if problem is not None:
                await self._move(run_id, S.ERROR, error=problem, end=now_iso(),
                                 metrics=await self._metrics(row, state))
                self._remove_later(row)
                return
            timings = [*(row.get("timings") or []), [S.DONE.value, now_iso()]]
            metrics = await self._metrics(dict(row, timings=timings), state)
            progress = dict(self._take_progress(run_id) or row.get("progress") or {})
            progress["value"] = progress.get("max", 100)
            await self.store.replace_run_outputs(run_id, scan.files, {
                "status": S.DONE.value, "exit_code": 0, "end": now_iso(),
                "metrics": metrics, "timings": timings, "progress": progress,
            })
            done = await self.store.get("runs", run_id)
            self._note(done)
        if len(scan.files) <= FILE_EVENTS_MAX:
            for record in await self.store.select("files", "run_id = ?", [run_id]):
                self.events.publish("file.created", {k: record[k] for k in (
                    "id", "name", "path", "size", "sha256", "source", "run_id", "created")})
        self.events.publish("run.updated", public_run(done))
        self._remove_later(done)

    def _remove_later(self, row: dict[str, Any], secure: bool = False,
                      partial: bool = False) -> None:
        """Delete an ended run's container (stopping it takes most of a second) in a task of
        its own, so the run's slot is free at once; then make its folder safe if ``secure``
        (listing its partial outputs if ``partial``: _secure_folder). The deletion waits while
        other runs start (core._after_starts): their users wait for them, nobody for this one.
        A deletion LXD refuses is retried (core._remove_container); one cut short by a server
        stop is done by the next start's reconciliation (a final run's leftover container)."""
        async def clean_up() -> None:
            try:
                await self._after_starts()
                await self._remove_container(row)
                if secure:
                    await self._secure_folder(row, partial)
            except Exception:  # nothing awaits this task: say what went wrong
                self.log.exception("pirus: run %s: clean-up failed", row["id"])

        task = asyncio.get_running_loop().create_task(clean_up())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
