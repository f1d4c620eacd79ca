"""Runs on an LXD cluster: members, placement, a member that fails or is lost.

The members' state is read at most every ``MEMBERS_MAX_AGE`` seconds. The queue places each run
with placement.py (pure functions) and records the member as the run's ``location``. A create or
start that cannot reach its member marks it suspect for a while and the run goes to another
member (at most ``MAX_LAUNCH_ATTEMPTS``). A member lost under a running run ends the run in
ERROR, or puts it back in the queue (``requeue_on_member_loss``); its container stays on the
member until the member is back, then the member watch removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..backend.base import Member
from ..errors import BackendError, Conflict, InvalidRequest, NotFound, PirusError, UnknownMember
from ..models import ACTIVE_RUN_STATUSES, RunStatus
from ..store import now_iso
from . import placement
from .core import FRESH_PROGRESS, RunsCore
from .data import RunData
from .queue import status_in

S = RunStatus
# Cluster members' state is re-read at most this often (one request for every run).
MEMBERS_MAX_AGE = 2.0
MEMBER_WATCH_INTERVAL = 3.0
# A run whose create/start fails to connect is tried on at most this many members.
MAX_LAUNCH_ATTEMPTS = 3


class Cluster(RunsCore):
    # -- members --------------------------------------------------------------------------
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

    # -- placement ------------------------------------------------------------------------
    async def _loads(self, members: list[Member]) -> dict[str, placement.Load]:
        """What active runs hold on each member (their recorded limits)."""
        where, params = status_in(ACTIVE_RUN_STATUSES)
        rows = await self.store.select("runs", f"{where} AND location IS NOT NULL", params)
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
        limits.update(row.get("run_limits") or {})
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

    # -- a member that fails or is lost ---------------------------------------------------------
    async def _requeue(self, run_id: int, **values: Any) -> None:
        """Back to the queue, first in line (its container left behind)."""
        await self._move(run_id, S.WAITING, location=None, lxd_container=None, start=None,
                         **values)

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
        row = await self._save(run_id, {"attempts": attempts})
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
        if new is None:  # no other member has room now
            async with self._lock(run_id):
                if await self._still(run_id, S.INITIALIZING):
                    await self._requeue(run_id)
            return None
        return await self._save(run_id, {"location": new})

    async def _container_answers(self, row: dict[str, Any], data: RunData) -> bool:
        """Asked when LXD reports the run's member not Online: a member restarted quickly can
        be marked OFFLINE for a moment while its container runs on. A lost one stalls the
        request ~10 s and fails."""
        try:
            state = await asyncio.to_thread(self._container_state, row, data)
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
        if not self.requeue_on_member_loss:
            raise BackendError(f"{reason}; its outputs and logs stayed on {name}")
        # A run sent to the lost member by its ``target`` starts elsewhere too (it would
        # otherwise wait for the member for ever): its target is dropped, kept in the attempt.
        dropped = {"target": None} if row.get("target") == name else {}
        label = f"re-queued: {name} was lost" + ("; its target dropped" if dropped else "")
        if dropped:
            reason += f"; its target {name} was dropped so that it can start elsewhere"
        attempts = [*(row.get("attempts") or []), {
            "member": name, "container": row.get("lxd_container"), "error": reason,
            "at": now_iso(), "target": row.get("target")}]
        async with self._lock(run_id):
            try:
                await self._requeue(run_id, exit_code=None, attempts=attempts, progress=dict(
                    FRESH_PROGRESS, label=label), **dropped)
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
