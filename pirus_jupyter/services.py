"""Services built once per server: store, events, files, pipelines, runs, uploads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend.base import Backend
from .crate import CrateService
from .databases import DatabaseService
from .events import EventBus
from .files import FileService
from .looplag import LoopLagMonitor
from .pipelines import PipelineService
from .runs.manager import RunManager
from .store import Store
from .tes.service import TesService
from .uploads.service import UploadService

if TYPE_CHECKING:
    from .app import PirusApp


@dataclass
class Services:
    app: PirusApp
    root_dir: Path
    data_dir: Path
    store: Store
    events: EventBus
    backend: Backend
    files: FileService
    databases: DatabaseService
    pipelines: PipelineService
    runs: RunManager
    uploads: UploadService
    tes: TesService
    crates: CrateService
    looplag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    # Set once start() has run: every part started (e.g. the TES watcher subscribed).
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, app: PirusApp, root_dir: Path, data_dir: Path, backend: Backend) -> Services:
        store = Store(app.db_path or data_dir / "pirus.db")
        events = EventBus()
        files = FileService(store, events, root_dir)
        databases_dir = Path(app.databases_dir or data_dir / "databases")
        databases_dir.mkdir(parents=True, exist_ok=True)
        databases = DatabaseService(databases_dir)
        pipelines = PipelineService(
            store, events, backend, packages_dir=data_dir / "pipelines", databases=databases,
            max_package_size=app.max_package_size, prefix=app.lxd_prefix, log=app.log,
        )
        runs = RunManager(
            store, events, backend, files, pipelines, root_dir=root_dir,
            runs_dir=root_dir / app.runs_dir, databases_dir=databases_dir,
            max_parallel=app.max_parallel_runs, default_limits=dict(app.default_limits),
            run_timeout=app.run_timeout, log_max_bytes=app.log_max_bytes,
            poll_interval=app.poll_interval, notify_enabled=app.notify_enabled,
            prefix=app.lxd_prefix,
            server_port=lambda: int(app.serverapp.port), base_url=app.serverapp.base_url,
            log=app.log, data_transfer=app.data_transfer,
            member_capacity=dict(app.member_capacity),
            requeue_on_member_loss=app.requeue_on_member_loss,
            max_outputs=app.max_outputs, max_output_bytes=app.max_output_bytes,
            reuse_default=app.reuse_default, prepare_queued=app.prepare_queued_runs,
        )
        uploads = UploadService(
            store, events, files, pipelines, parts_dir=data_dir / "uploads",
            uploads_dir=root_dir / app.uploads_dir, max_size=app.upload_max_size,
            expiration=app.upload_expiration, log=app.log,
        )
        tes = TesService(store, events, runs, root_dir, log=app.log,
                         shared_folders=list(app.tes_shared_folders))
        crates = CrateService(store, root_dir)
        return cls(app=app, root_dir=root_dir, data_dir=data_dir, store=store, events=events,
                   databases=databases, backend=backend, files=files, pipelines=pipelines,
                   runs=runs, uploads=uploads, tes=tes, crates=crates)

    async def start(self) -> None:
        """Background work once the loop runs: reconcile runs with LXD, start the queue."""
        self.looplag.start()
        await self.uploads.start()  # first: it does not depend on LXD
        await self.runs.start()
        await self.tes.start()
        self.started.set()

    async def stop(self) -> None:
        await self.looplag.stop()
        await self.tes.stop()
        await self.uploads.stop()
        await self.runs.stop()
        await asyncio.to_thread(self.store.close)

    async def info(self) -> dict[str, Any]:
        """What ``GET /pirus/api/v1`` answers: versions, LXD, limits, the active runs, how run
        data reaches containers and, on an LXD cluster, its members (their state as LXD reports
        it, their capacity and the Pirus runs each holds)."""
        from . import API_VERSION, __version__

        lxd = await asyncio.to_thread(self.backend.info)
        return {
            "version": __version__,
            "api_version": API_VERSION,
            "lxd": lxd,
            "limits": {
                "max_parallel_runs": self.runs.max_parallel,
                "default_limits": self.runs.default_limits,
                "max_package_size": self.pipelines.max_package_size,
                "upload_max_size": self.uploads.max_size,
                "run_timeout": self.runs.run_timeout,
            },
            "active_runs": self.runs.active_count,
            "loop_lag": self.looplag.stats(),
            "data_transfer": self.runs.data_transfer,
            "cluster": await self.runs.cluster_info(),
        }
