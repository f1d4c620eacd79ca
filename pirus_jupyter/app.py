"""PirusApp: the jupyter-server extension. Settings, service wiring and the handler table."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import Bool, Dict, Enum, Float, Int, List, Type, Unicode, Union, default

from .backend.base import Backend
from .handlers import build_handlers
from .services import Services


class PirusApp(ExtensionApp):
    name = "pirus"
    extension_url = "/pirus/api/v1"
    load_other_extensions = True

    data_dir = Unicode(
        config=True,
        help="Folder for Pirus state: the database, installed packages, upload parts. "
        "Default: <jupyter data dir>/pirus. One server per folder: a second server started "
        "on it runs without Pirus and logs the owner's pid and URL (<data_dir>/owner.lock).",
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "pirus")

    db_path = Unicode("", config=True, help="SQLite database file. Default: <data_dir>/pirus.db.")

    lxd_endpoint = Unicode(
        "", config=True,
        help="LXD endpoint: empty for the local unix socket, or an https:// URL of a remote "
        "daemon / cluster member (then set lxd_cert and lxd_key).",
    )
    lxd_cert = Unicode("", config=True, help="Client certificate (PEM) for a remote LXD.")
    lxd_key = Unicode("", config=True, help="Client key (PEM) for a remote LXD.")
    lxd_verify = Union(
        [Bool(), Unicode()], default_value=True, config=True,
        help="Verify a remote LXD's TLS certificate: true (against the system's CAs), false, "
        "or the path of the server's certificate (an LXD cluster's cluster.crt), pinned. "
        "REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment do not override it.",
    )
    lxd_project = Unicode(
        "default", config=True, help="LXD project holding Pirus images and containers."
    )

    lxd_prefix = Unicode(
        "pirus", config=True,
        help="Prefix of the LXD containers and image aliases this server creates (letters, "
        "digits and dashes). Servers sharing one LXD keep apart with different prefixes.",
    )

    max_parallel_runs = Int(
        config=True, help="Runs holding a container at once. Default: CPU count."
    )

    @default("max_parallel_runs")
    def _default_max_parallel(self) -> int:
        return os.cpu_count() or 1

    default_limits = Dict(
        {"cpu": "", "memory": "", "processes": "1000"}, config=True,
        help="Default container limits (LXD limits.cpu, limits.memory, limits.processes); a "
        "pipeline manifest's own limits override them. Empty means unlimited.",
    )
    run_timeout = Float(
        0, config=True, help="Seconds after which a running pipeline is stopped (ERROR). 0: none."
    )
    log_max_bytes = Int(
        256 * 1024 * 1024, config=True,
        help="Cap per log file (out.log, err.log); a pipeline writing more is stopped (ERROR).",
    )
    max_outputs = Int(
        1000, config=True,
        help="Most output files a run may leave; a run writing more ends in ERROR (its files "
        "stay in its run folder, none is recorded). It also bounds a run record's size.",
    )
    max_output_bytes = Int(
        1024**4, config=True,
        help="Most bytes a run's outputs may take together (apparent sizes: a sparse file "
        "counts whole); a run writing more ends in ERROR, hashing stopped once past it.",
    )
    runs_dir = Unicode(
        "pirus-runs", config=True,
        help="Folder, relative to the Jupyter root, where run folders (inputs, outputs, logs) "
        "are created so that they show in the file browser.",
    )
    uploads_dir = Unicode(
        "pirus-uploads", config=True,
        help="Folder, relative to the Jupyter root, where finished input uploads are placed.",
    )
    databases_dir = Unicode(
        "", config=True,
        help="Folder of reference databases mounted read-only in every run. "
        "Default: <data_dir>/databases.",
    )
    max_package_size = Int(
        32 * 1024**3, config=True,
        help="Largest accepted pipeline package, in bytes, compressed or uncompressed.",
    )
    upload_max_size = Int(
        1024**4, config=True, help="Largest accepted upload (TUS Tus-Max-Size), in bytes."
    )
    upload_expiration = Float(
        7 * 24 * 3600.0, config=True,
        help="Seconds an unfinished upload is kept after its last change (TUS expiration).",
    )
    reuse_default = Bool(
        False, config=True,
        help="Whether a run asked for without `reuse` reuses an identical earlier DONE run "
        "(same image, config, input contents and reference databases) instead of running: it "
        "is then DONE at once with that run's outputs. A pipeline whose manifest says "
        "`deterministic: true` reuses by default whatever this says.",
    )
    prepare_queued_runs = Bool(
        True, config=True,
        help="Whether the runs next in the queue (as many as `max_parallel_runs`) get their "
        "folder and container made while every slot is taken, so that a freed slot only starts "
        "it. Single LXD host only; turn off to keep WAITING runs without a container.",
    )
    notify_enabled = Bool(
        True, config=True,
        help="Expose the server inside run containers (LXD proxy device) so pipelines can "
        "POST progress to $PIRUS_NOTIFY_URL (those whose manifest says notify: false never "
        "get it).",
    )
    poll_interval = Float(
        0.1, config=True, help="Seconds between checks of a running pipeline's progress file "
        "(the most a progress line written in the container waits to be seen)."
    )

    data_transfer = Enum(
        ["auto", "mounts", "push"], default_value="auto", config=True,
        help="How run data reaches containers. mounts: the run folder and databases are "
        "bind-mounted (LXD on this host). push: inputs are pushed into the container and "
        "outputs and logs pulled back through the LXD file API (no shared filesystem: remote "
        "LXD, cluster members on other machines). auto: push for an https:// endpoint, "
        "mounts otherwise. A mounted run folder's host path shows in the container's "
        "/proc/self/mountinfo; push shows none (docs/reliability.md).",
    )
    tes_shared_folders = List(
        Unicode(), [], config=True,
        help="Folders, relative to the Jupyter root, that every GA4GH TES task's container "
        "shares read-write at the same absolute path (with data_transfer mounts): the storage "
        "of workflow engines that move files through a shared filesystem, such as Snakemake's "
        "fs storage plugin (docs/tes.md). What tasks write there is theirs: Pirus checks none "
        "of it. Empty: none.",
    )
    member_capacity = Dict(
        {}, config=True,
        help="LXD cluster: what Pirus may run on each member, by member name, \"*\" for all: "
        "{\"*\": {\"runs\": 4}, \"m3\": {\"runs\": 8, \"cpu\": 16, \"memory\": "
        "\"64GiB\"}}. Unset keys come from the member's resources (runs: its CPU threads). "
        "Runs' limits.cpu and limits.memory are reserved against cpu and memory.",
    )
    requeue_on_member_loss = Bool(
        False, config=True,
        help="LXD cluster: a run whose member is lost (OFFLINE) goes back to the queue and "
        "starts again elsewhere, instead of ending in ERROR.",
    )

    backend_class = Type(
        default_value="pirus_jupyter.backend.lxd.LXDBackend", klass=Backend, config=True,
        help="Container backend class (the LXD backend; tests may plug another).",
    )

    _owner_lock: int | None = None

    def _own_data_dir(self, data_dir: Path) -> None:
        """One server per data dir: an exclusive lock on ``<data_dir>/owner.lock``, held for
        the server's life (the kernel drops it when the process dies, however it dies). A
        second server on the same folder would take the first one's queued runs and show
        its pipelines: it refuses to load Pirus, naming the owner; Jupyter itself runs on."""
        fd = os.open(data_dir / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                owner = {}
            os.close(fd)
            raise RuntimeError(
                f"Pirus is not loaded: its data dir {data_dir} belongs to another running "
                f"server (pid {owner.get('pid', '?')}, {owner.get('url') or 'url not known'}). "
                "Stop that server, or give this one its own PirusApp.data_dir.") from None
        self._owner_lock = fd
        self._write_owner(url=None)

    def _write_owner(self, url: str | None) -> None:
        if self._owner_lock is None:
            return
        os.ftruncate(self._owner_lock, 0)
        os.pwrite(self._owner_lock, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)

    def _release_data_dir(self) -> None:
        fd, self._owner_lock = self._owner_lock, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    _stopped = False
    _services_started: asyncio.Future[None] | None = None

    def initialize_settings(self) -> None:
        root_dir = Path(self.serverapp.root_dir).resolve()
        data_dir = Path(self.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._own_data_dir(data_dir)
        if self.lxd_endpoint.startswith("https://") and self.lxd_verify is False:
            self.log.warning("pirus: the LXD server's certificate is not verified "
                             "(lxd_verify = False)")
        backend = self.backend_class(
            endpoint=self.lxd_endpoint or None,
            cert=(self.lxd_cert, self.lxd_key) if self.lxd_cert else None,
            verify=self.lxd_verify,
            project=self.lxd_project,
        )
        self.services = Services.build(
            app=self, root_dir=root_dir, data_dir=data_dir, backend=backend,
        )
        self.settings["pirus"] = self.services
        # After start-up the HTTP port is bound (it can move with port_retries).
        IOLoop.current().add_callback(self._publish_to_kernels)
        IOLoop.current().add_callback(self._start_services)

    def _start_services(self) -> None:
        if self._stopped:  # the server stopped before its loop ran this
            return
        self._services_started = asyncio.ensure_future(self.services.start())

    def _publish_to_kernels(self) -> None:
        """Kernels inherit the server's environment: tell them where this server is, so that
        ``pirus_jupyter.connect()`` in a notebook needs no URL or token."""
        server = self.serverapp
        url = server.connection_url if hasattr(server, "connection_url") else server.url
        os.environ["PIRUS_SERVER_URL"] = url
        self._write_owner(url=url.split("?", 1)[0])  # never the token
        token = getattr(server.identity_provider, "token", "") or ""
        if token:
            os.environ["PIRUS_SERVER_TOKEN"] = token

    def initialize_handlers(self) -> None:
        self.handlers.extend(build_handlers())

    async def stop_extension(self) -> None:
        self._stopped = True
        services = getattr(self, "services", None)
        if self._services_started is not None:
            # A stop during start-up waits for it: a part started after the stop would use
            # the closed database (seen as "Cannot operate on a closed database").
            await asyncio.wait({self._services_started})
        if services is not None:
            await services.stop()
        self._release_data_dir()
