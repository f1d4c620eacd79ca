"""Containers made ahead for the runs next in the queue.

While the slots are taken, the runs next in line (as many as there are slots) get their folder
made and their container created and filled, not started: when a slot frees, the run only
starts it. Creating a container (the image's files copied, its devices set up) is most of a
start; done while the slots' runs compute, it is off the queue's path. Preparing waits while
any run is starting (a start is on a user's path; this is not). A prepared run is still
WAITING and holds no slot; cancelling it deletes its container (the preparation deletes what
it made once it sees the run canceled), and a server start deletes the containers of WAITING
runs (queue.reconcile). Single host only (on an LXD cluster the member is picked when the
slot frees: placement.py), and not for TES tasks sharing host folders. A preparation that
fails is forgotten: the run starts the usual way when its turn comes, and fails there with
the reason if it must.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from ..backend.base import ContainerSpec
from ..errors import PirusError
from ..models import FINAL_RUN_STATUSES, RunStatus
from .folder import RunPaths, log_identity, prepare_folder
from .reuse import Reuse

S = RunStatus


@dataclass
class Prepared:
    """A WAITING run whose container exists, filled, not started."""

    row: dict[str, Any]
    pipeline: dict[str, Any]
    limits: dict[str, str]


class Prepare(Reuse):
    def _prepare_next(self) -> None:
        """Prepare the next WAITING runs in a task of its own (one at a time)."""
        if not self.prepare_queued or self._stopping or \
                (self._preparer is not None and not self._preparer.done()):
            return
        self._preparer = asyncio.get_running_loop().create_task(self._prepare_queued())

    async def _prepare_queued(self) -> None:
        while not self._stopping:
            await self._no_starts.wait()
            try:
                if self._stopping or await self._cluster_members():
                    return
            except PirusError:
                return
            rows = await self.store.select("runs", "status = ?", [S.WAITING.value],
                                           order_by="id", limit=self.max_parallel)
            # Not a TES task sharing host folders: what lands there before it starts must
            # still be made the container's (data.fill at the start).
            todo = [r["id"] for r in rows if r["id"] not in self._prepared and
                    not r.get("mounts")]
            if not todo:
                return
            task = asyncio.get_running_loop().create_task(self._prepare(todo[0]))
            self._preparing[todo[0]] = task
            try:
                await asyncio.shield(task)  # a stop cancels both
            finally:
                self._preparing.pop(todo[0], None)

    async def _prepare(self, run_id: int) -> None:
        self._prepared[run_id] = None  # tried: not tried again, whatever happens
        name = None
        try:
            row, pipeline, limits = await self._make_ready(run_id)
            if (await self.store.get("runs", run_id))["status"] in FINAL_RUN_STATUSES:
                return  # canceled meanwhile (inputs can take long to hash)
            name = f"{self.prefix}-run-{run_id}-{secrets.token_hex(3)}"
            row = await self._save(run_id, {"lxd_container": name})
            await self._create_and_fill(row, pipeline, limits)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the run starts the usual way, and fails there if it must
            self.log.info("pirus: run %s could not be prepared ahead: %s", run_id, e)
            if name:
                await self._remove_container({"lxd_container": name})
            return
        row = await self.store.get("runs", run_id)
        if row["status"] in FINAL_RUN_STATUSES:
            # Canceled meanwhile: the cancel did not wait for this (hashing inputs can take
            # minutes), so what was made is deleted here.
            await self._remove_container(row)
            return
        self._prepared[run_id] = Prepared(row, pipeline, limits)

    async def _take_prepared(self, run_id: int) -> Prepared | None:
        """The run's prepared container (waiting for a preparation under way), if any."""
        task = self._preparing.get(run_id)
        if task is not None:
            await asyncio.wait({task})
        prepared = self._prepared.pop(run_id, None)
        if prepared is None:
            return None
        row = await self.store.get("runs", run_id)
        if row.get("lxd_container") != prepared.row["lxd_container"]:
            return None
        return Prepared(row, prepared.pipeline, prepared.limits)

    async def _remove_prepared_containers(self) -> None:
        """At start: containers a previous server prepared for runs still WAITING."""
        rows = await self.store.select("runs", "status = ? AND lxd_container IS NOT NULL",
                                       [S.WAITING.value])
        for row in rows:
            await self._remove_container(row)
            await self._save(row["id"], {"lxd_container": None})

    # -- the steps before a start, shared with lifecycle.py's launch -------------------------
    async def _make_ready(self, run_id: int
                          ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """The run's folder made, its inputs hashed and its reuse key recorded; returns
        (row, pipeline as the run uses it, limits)."""
        row = await self.store.get("runs", run_id)
        pipeline = await self.pipelines.row(row["pipeline_id"])
        row = await self._save(run_id, {"transfer": self.data_transfer})
        known = await self.known_hashes([i["path"] for i in row["inputs"]])
        inputs = await asyncio.to_thread(prepare_folder, row, RunPaths.of(row), self.runs_dir,
                                         self.root_dir, known)
        # Kept in the row: the monitor checks the logs are still these, also after a restart.
        identity = await asyncio.to_thread(log_identity, RunPaths.of(row))
        row = await self._save(run_id, {"inputs": inputs, "log_identity": identity})
        row = await self.record_key(row)
        limits = dict(self.default_limits)
        limits.update(pipeline.get("limits") or {})
        limits.update(row.get("run_limits") or {})  # a TES task's resources
        if row.get("command"):  # a TES task's executors replace the pipeline's run
            pipeline = dict(pipeline, lxd_run_cmd=row["command"])
        return row, pipeline, limits

    async def _create_and_fill(self, row: dict[str, Any], pipeline: dict[str, Any],
                               limits: dict[str, str]) -> None:
        data = await self._run_data(row, pipeline)
        # The notify proxy is plugged in once the container runs, beside the wrapper's start
        # (LXD takes a second to confirm it, at creation as later): the wrapper waits for it.
        spec = ContainerSpec(name=row["lxd_container"], image_alias=pipeline["lxd_alias"],
                             limits=limits, mounts=data.mounts(), target=row.get("location"))
        uid, gid = await asyncio.to_thread(self.backend.create_container, spec)
        await asyncio.to_thread(data.fill, uid, gid)
