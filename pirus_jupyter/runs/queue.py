"""The queue: which WAITING run starts next, and runs left by a previous server taken up again.

WAITING runs start oldest first while fewer than ``max_parallel`` are active (PAUSE counts: a
frozen container still holds its memory). On an LXD cluster, placement.py picks the member and
a run that must wait lets younger, smaller ones pass. While LXD is unreachable the queue holds
its runs and looks again every few seconds. At start, ``reconcile`` follows again the runs a
previous server left active (their commands kept running in their containers), ends those
whose container is gone, and removes containers of runs that already ended or that were
made ahead for runs still WAITING (prepare.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import Conflict, PirusError, RuleBroken
from ..models import ACTIVE_RUN_STATUSES, FINAL_RUN_STATUSES, RunStatus
from ..store import now_iso
from .core import RunsCore

S = RunStatus
# Seconds between looks at the queue while LXD is unreachable.
QUEUE_RETRY = 5.0
# Seconds between attempts to reconcile while LXD is unreachable at start.
RECONCILE_RETRY = 5.0


def status_in(statuses: Any) -> tuple[str, list[str]]:
    """A ``status IN (...)`` clause and its parameters."""
    values = [s.value for s in statuses]
    return f"status IN ({','.join('?' * len(values))})", values


class Queue(RunsCore):
    async def _reconcile_loop(self) -> None:
        """Reconcile with LXD, retrying while LXD is unreachable, then open the queue."""
        while not self._stopping:
            try:
                await self.reconcile()
                break
            except PirusError as e:
                self.log.warning("pirus: cannot reconcile runs yet (%s); retrying", e.message)
                await asyncio.sleep(RECONCILE_RETRY)
        self._reconciled = True
        if not self._stopping:
            self._member_watch = asyncio.get_running_loop().create_task(self._watch_members())
        await self.schedule()

    async def reconcile(self) -> None:
        """Runs left in non-final states by a previous server are tracked again or ended."""
        where, params = status_in(ACTIVE_RUN_STATUSES)
        for row in await self.store.select("runs", where, params):
            run_id = row["id"]
            if run_id in self._active:
                continue
            name = row.get("lxd_container")
            if row["status"] == S.INITIALIZING:
                if name:
                    await asyncio.to_thread(self.backend.delete_container, name)
                await self._move(run_id, S.WAITING, lxd_container=None, start=None)
                continue
            if row.get("location") and not await self._member_online(row["location"]):
                # Its cluster member is lost: the monitor ends (or re-queues) the run at once.
                self._track(row, self._monitor(run_id))
                continue
            state = await asyncio.to_thread(self.backend.state, name) if name else None
            if state is None and row["status"] != S.FINISHING:
                data = await self._run_data(row)
                try:  # read in a thread, by descriptor: a FIFO there blocks nothing
                    code = await asyncio.to_thread(data.exit_code)
                except RuleBroken as e:
                    await self._fail(run_id, e.message)
                    continue
                if code is None:
                    await self._fail(run_id, "the container disappeared while the server was down")
                    continue
            self._track(row, self._monitor(run_id))
        await self._remove_prepared_containers()
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
        final, params = status_in(FINAL_RUN_STATUSES)
        rows = await self.store.select(
            "runs", f"lxd_container IN ({','.join('?' * len(names))}) AND {final}",
            [*names, *params])
        for row in rows:
            await self._remove_container(row)
        abandoned = {attempt.get("container") for row in await self.store.select(
            "runs", "attempts IS NOT NULL") for attempt in row.get("attempts") or []}
        for name in sorted(abandoned & set(names)):
            await self._remove_container({"lxd_container": name})

    async def schedule(self) -> None:
        """Start WAITING runs, oldest first, while fewer than max_parallel are active."""
        if self._stopping or not self._reconciled:
            return
        async with self._schedule_lock:
            while len(self._active) < self.max_parallel:
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
                    row = await self._move(run_id, S.INITIALIZING, start=now_iso(), **values)
                except Conflict:
                    continue  # canceled meanwhile
                self._track(row, self._execute(run_id))
            # Every slot taken: the runs next in line get their containers made meanwhile.
            self._prepare_next()

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
