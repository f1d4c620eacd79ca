"""Container backends without LXD: ``FakeBackend`` for the fast tests, ``IdleBackend`` for the
API benchmarks.

``FakeBackend`` keeps containers in memory and plays the run wrapper's part of the protocol
itself: when the wrapper is exec'd it writes what the real one writes (pid, heartbeat, logs,
progress lines, outputs, the exit code) into the host folders the ``ContainerSpec`` mounts, or
into the container's in-memory files when the run's data is pushed through the file API. A
pipeline runs until the test ends it (``finish``), unless ``outcome`` is set, in which case it
ends as soon as it starts. Tests drive everything else too: progress lines, a lost heartbeat,
a container vanishing, LXD unreachable, cluster members going offline, a failing call.
Nothing here sleeps or keeps time: the server's own monitor sees the files change.

``IdleBackend`` reports every container as Running and runs nothing, so that a server holding
many "running" runs spends only what Pirus itself spends on them.

Plugged with ``--PirusApp.backend_class=pirus_jupyter.backend.fake.FakeBackend`` (or
``IdleBackend``). Every method is thread-safe: the server calls them from worker threads while
the test calls the scripting methods from the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BackendError, BackendUnavailable, MemberUnavailable, PirusError
from .base import Backend, ContainerSpec, ContainerState, FileEntry, Member, bounded_bytes

# The run wrapper's files in its state folder (the folder of $PIRUS_PROGRESS_FILE); see the
# wrapper script in pirus_jupyter/runs/. exec_detached refuses a wrapper that no longer
# mentions them, so a change of protocol fails the fast tests loudly instead of hanging them.
EXIT_FILE = "exit_code"
HEARTBEAT_FILE = "heartbeat"
PID_FILE = "pid"
OUTPUTS_MANIFEST = "outputs.sha256"  # written by the wrapper of runs whose data is pushed
GATE_TIMEOUT = 60.0  # a held call never blocks a worker thread for ever
CPU_SECONDS = 1.0
MEMORY_PEAK = 64 * 1024 * 1024


@dataclass
class Outcome:
    """How a simulated pipeline ends: what it writes, then its exit code."""

    exit_code: int = 0
    progress: list[dict[str, Any]] = field(default_factory=list)  # lines of the progress file
    out: str = ""
    err: str = ""
    outputs: dict[str, bytes] = field(default_factory=dict)  # relative path -> content


@dataclass
class FakeContainer:
    spec: ContainerSpec
    location: str | None
    status: str = "Stopped"
    files: dict[str, bytes] = field(default_factory=dict)  # paths not under a mount
    environment: dict[str, str] = field(default_factory=dict)  # of the exec'd wrapper
    script: str = ""
    beats: int = 0
    beating: bool = False  # the wrapper's heartbeat loop is alive
    ended: bool = False  # the exit code is written

    @property
    def run_id(self) -> int | None:
        run_id = self.environment.get("PIRUS_RUN_ID")
        return int(run_id) if run_id else None

    @property
    def state_dir(self) -> str:
        return posixpath.dirname(self.environment["PIRUS_PROGRESS_FILE"])


class FakeBackend(Backend):
    """An in-memory LXD whose pipelines are scripted by the test (see the module docstring)."""

    def __init__(self, endpoint: str | None = None, cert: tuple[str, str] | None = None,
                 verify: bool | str = True, project: str = "default") -> None:
        super().__init__(endpoint, cert, verify, project)
        self._lock = threading.RLock()
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, str] = {}  # alias -> fingerprint
        self.cluster: dict[str, Member] = {}  # empty: LXD is not clustered
        self.reachable = True
        # Set: every pipeline ends with it as soon as it starts. None: it runs until finish().
        self.outcome: Outcome | None = None
        # Method name -> error it raises (on any container) until removed.
        self.broken: dict[str, PirusError] = {}
        # (method, container or alias), in order; bounded: an idle server calls for ever.
        self.started_runs: set[int] = set()  # runs whose wrapper was exec'd
        self.calls: deque[tuple[str, str]] = deque(maxlen=10_000)
        self.bytes_read = 0  # what read_file and pull_file brought out of containers
        # Method name -> gate its calls wait at until the test opens it (see hold()).
        self.gates: dict[str, threading.Event] = {}

    # -- scripting, for tests ---------------------------------------------------------------
    def container(self, run_id: int) -> FakeContainer:
        """The container running ``run_id``'s pipeline (the latest one if re-queued)."""
        with self._lock:
            found = [c for c in self.containers.values() if c.run_id == run_id]
            if not found:
                raise KeyError(f"no container runs run {run_id}")
            return found[-1]

    def started(self, run_id: int) -> bool:
        """The run's wrapper was exec'd (in a container that may be gone since)."""
        with self._lock:
            return run_id in self.started_runs

    def report(self, run_id: int, *lines: dict[str, Any]) -> None:
        """The pipeline appends ``lines`` to its progress file."""
        with self._lock:
            box = self.container(run_id)
            self._append(box, box.environment["PIRUS_PROGRESS_FILE"],
                         b"".join(json.dumps(line).encode() + b"\n" for line in lines))

    def finish(self, run_id: int, outcome: Outcome | None = None) -> None:
        """The pipeline writes its logs, progress and outputs, then the wrapper its exit code."""
        with self._lock:
            self._finish(self.container(run_id), outcome or Outcome())

    def stop_heartbeat(self, run_id: int) -> None:
        """The wrapper dies without an exit code (its LXD exec helper killed, say)."""
        with self._lock:
            self.container(run_id).beating = False

    def vanish(self, run_id: int) -> None:
        """The container is deleted behind Pirus's back."""
        with self._lock:
            self.containers.pop(self.container(run_id).spec.name)

    def add_member(self, name: str, cpu: int = 4, memory: int = 8 * 1024**3,
                   status: str = "Online") -> Member:
        with self._lock:
            self.cluster[name] = Member(name=name, status=status, cpu=cpu, memory=memory,
                                        url=f"https://{name}.fake:8443")
            return self.cluster[name]

    def set_member(self, name: str, status: str, message: str = "") -> None:
        with self._lock:
            self.cluster[name].status = status
            self.cluster[name].message = message

    def hold(self, method: str) -> threading.Event:
        """Calls of ``method`` wait until the returned event is set (e.g. hold ``start`` to
        keep a run INITIALIZING)."""
        return self.gates.setdefault(method, threading.Event())

    def release(self) -> None:
        """Open every gate (a test's end must not leave a worker thread waiting)."""
        for gate in list(self.gates.values()):
            gate.set()

    def called(self, method: str) -> list[str]:
        """Containers (or aliases) ``method`` was called with, in order."""
        with self._lock:
            return [target for name, target in self.calls if name == method]

    # -- the Backend interface ------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        self.calls.append(("info", ""))  # never raises: no _check
        base = {"endpoint": self.endpoint or "fake backend", "project": self.project}
        if not self.reachable:
            return {"connected": False, **base, "error": "LXD is unreachable (fake)"}
        return {"connected": True, **base, "server_version": "fake", "storage": None,
                "clustered": bool(self.cluster)}

    def import_image(self, tarball: Path, alias: str, fingerprint: str) -> str:
        self._check("import_image", alias)
        with self._lock:
            self.images[alias] = fingerprint
            return fingerprint

    def delete_image(self, alias: str) -> None:
        self._check("delete_image", alias)
        with self._lock:
            self.images.pop(alias, None)

    def create_container(self, spec: ContainerSpec) -> tuple[int, int]:
        self._check("create_container", spec.name)
        with self._lock:
            if spec.name in self.containers:
                raise BackendError(f"LXD failed to create container {spec.name}: it exists")
            for mount in spec.mounts.values():  # as LXD: a mount's source must exist
                if not mount.source.is_dir():
                    raise BackendError(f"LXD failed to create container {spec.name}: "
                                       f"missing disk source {mount.source}")
            self.containers[spec.name] = FakeContainer(spec=spec, location=self._place(spec))
            return os.getuid(), os.getgid()  # its root is this user: chown is a no-op

    def start(self, name: str) -> None:
        self._check("start", name)
        with self._lock:
            self._box("start", name).status = "Running"

    def add_proxy(self, name: str, port: int) -> None:
        self._check("add_proxy", name)
        with self._lock:
            self._box("add_proxy", name).spec.proxy_port = port

    def exec_detached(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        self._check("exec_detached", name)
        with self._lock:
            box = self._box("exec_detached", name)
            if box.status != "Running":
                raise BackendError(f"LXD failed to execute in container {name}: not running")
            box.environment, box.script = dict(environment), command[-1]
            if box.run_id is not None:
                self.started_runs.add(box.run_id)
            state = box.state_dir
            for needed in (f"{state}/{EXIT_FILE}", f"{state}/{HEARTBEAT_FILE}"):
                if needed not in box.script:
                    raise BackendError(f"fake backend: the run wrapper no longer writes "
                                       f"{needed}; update pirus_jupyter/backend/fake.py")
            self._write(box, f"{state}/{PID_FILE}", b"1\n")
            box.beating = True
            self._beat(box)
            if self.outcome is not None:
                self._finish(box, self.outcome)

    def freeze(self, name: str) -> None:
        self._check("freeze", name)
        with self._lock:
            self._box("freeze", name).status = "Frozen"

    def unfreeze(self, name: str) -> None:
        self._check("unfreeze", name)
        with self._lock:
            self._box("unfreeze", name).status = "Running"

    def state(self, name: str) -> ContainerState | None:
        self._check("state", name)
        with self._lock:
            if name not in self.containers:
                return None
            box = self._box("state", name)  # on a lost member: MemberUnavailable
            if box.beating and box.status == "Running":
                self._beat(box)  # the heartbeat loop ran since the last look
            return ContainerState(box.status, cpu_seconds=CPU_SECONDS,
                                  memory_peak=MEMORY_PEAK, location=box.location)

    def delete_container(self, name: str) -> None:
        self._check("delete_container", name)
        with self._lock:
            if name in self.containers:
                self._box("delete_container", name)  # on a lost member: MemberUnavailable
                del self.containers[name]

    def list_containers(self, prefix: str) -> list[str]:
        self._check("list_containers", prefix)
        with self._lock:
            return sorted(n for n in self.containers if n.startswith(prefix))

    def members(self) -> list[Member]:
        self._check("members", "")
        with self._lock:
            return [Member(**vars(m)) for m in self.cluster.values()]

    def container_locations(self, prefix: str) -> dict[str, ContainerState]:
        self._check("container_locations", prefix)
        with self._lock:
            # As LXD answers from its database: a container on a lost member shows as Error.
            return {name: ContainerState("Error" if self._lost(box) else box.status,
                                         location=box.location)
                    for name, box in sorted(self.containers.items()) if name.startswith(prefix)}

    def make_dir(self, name: str, path: str, mode: int = 0o755) -> None:
        self._check("make_dir", name)
        with self._lock:
            self._box("make_dir", name)

    def push_file(self, name: str, path: str, source: Path | bytes | BinaryIO,
                  mode: int = 0o644) -> None:
        data = (source.read_bytes() if isinstance(source, Path) else
                source if isinstance(source, bytes) else source.read())
        self._check("push_file", name)
        with self._lock:
            self._write(self._box("push_file", name), path, data)

    def read_file(self, name: str, path: str, max_bytes: int | None = None,
                  offset: int = 0) -> bytes | None:
        self._check("read_file", name)
        with self._lock:
            data = self._read(self._box("read_file", name), path)
        if data is None:
            return None
        self.bytes_read += min(len(data), offset + (max_bytes or len(data)))  # as streamed
        return bounded_bytes([data], offset, max_bytes)

    def pull_file(self, name: str, path: str, target: Path,
                  max_bytes: int | None = None) -> tuple[int, str]:
        self._check("pull_file", name)
        with self._lock:
            data = self._read(self._box("pull_file", name), path)
        if data is None:
            raise BackendError(f"LXD failed to read {path} in {name}: not found")
        data = data if max_bytes is None else data[:max_bytes]
        self.bytes_read += len(data)
        target.write_bytes(data)
        return len(data), hashlib.sha256(data).hexdigest()

    def walk_files(self, name: str, root: str) -> list[FileEntry]:
        self._check("walk_files", name)
        with self._lock:
            box = self._box("walk_files", name)
            host = self._host_path(box, root)
            if host is not None:
                return sorted((FileEntry(p.relative_to(host).as_posix(), p.stat().st_size)
                               for p in host.rglob("*") if p.is_file() and not p.is_symlink()),
                              key=lambda f: f.path)
            prefix = root.rstrip("/") + "/"
            return [FileEntry(path[len(prefix):], len(data))
                    for path, data in sorted(box.files.items()) if path.startswith(prefix)]

    # -- inside ------------------------------------------------------------------------------
    def _check(self, method: str, target: str) -> None:
        """Record the call, wait at its gate, raise what the test asked for (LXD down, a
        broken method). Called before taking the lock, so that a held call holds no other."""
        self.calls.append((method, target))
        gate = self.gates.get(method)
        if gate is not None and not gate.wait(GATE_TIMEOUT):
            raise BackendError(f"fake backend: the {method} gate was never opened")
        if not self.reachable:
            raise BackendUnavailable("LXD is unreachable: fake backend told so")
        if method in self.broken:
            raise self.broken[method]

    def _box(self, method: str, name: str) -> FakeContainer:
        """The container ``name`` (with the lock held), as LXD would find it."""
        box = self.containers.get(name)
        if box is None:
            raise BackendError(f"container {name} does not exist")
        if self._lost(box):
            raise MemberUnavailable(f"LXD failed to {method} {name}: a cluster member is "
                                    f"unreachable", member=box.location)
        return box

    def _lost(self, box: FakeContainer) -> bool:
        member = self.cluster.get(box.location or "")
        return member is not None and not member.online

    def _place(self, spec: ContainerSpec) -> str | None:
        if not self.cluster:
            return None
        if spec.target is None:  # LXD's own choice: the first member up
            online = [m.name for m in self.cluster.values() if m.online]
            if not online:
                raise BackendError("LXD failed to create container: no member online")
            return online[0]
        member = self.cluster.get(spec.target)
        if member is None:
            raise BackendError(f"LXD failed to create container {spec.name}: no member "
                               f"{spec.target}")
        if not member.online:
            raise MemberUnavailable(f"LXD failed to create container {spec.name}: a cluster "
                                    f"member is unreachable", member=spec.target)
        return spec.target

    def _host_path(self, box: FakeContainer, path: str) -> Path | None:
        """Where a path inside the container is on this host (None: not under a mount)."""
        for mount in sorted(box.spec.mounts.values(), key=lambda m: -len(m.path)):
            if path == mount.path or path.startswith(mount.path.rstrip("/") + "/"):
                return mount.source / posixpath.relpath(path, mount.path)
        return None

    def _read(self, box: FakeContainer, path: str) -> bytes | None:
        host = self._host_path(box, path)
        if host is None:
            return box.files.get(path)
        try:
            return host.read_bytes()
        except OSError:
            return None

    def _write(self, box: FakeContainer, path: str, data: bytes) -> None:
        host = self._host_path(box, path)
        if host is None:
            box.files[path] = data
            return
        host.parent.mkdir(parents=True, exist_ok=True)
        partial = host.with_name(host.name + ".tmp")  # as the wrapper: written, then moved
        partial.write_bytes(data)
        partial.replace(host)

    def _append(self, box: FakeContainer, path: str, data: bytes) -> None:
        host = self._host_path(box, path)
        if host is None or not host.is_file():
            self._write(box, path, (self._read(box, path) or b"") + data)
            return
        with open(host, "ab") as f:  # as the wrapper's ``>>``: the log keeps its inode
            f.write(data)

    def _beat(self, box: FakeContainer) -> None:
        """What the wrapper's heartbeat loop writes: for pushed runs a counter and the logs'
        sizes (a change is a beat), otherwise a touch of the file."""
        box.beats += 1
        logs = box.environment["PIRUS_LOGS_DIR"]
        sizes = [len(self._read(box, f"{logs}/{n}.log") or b"") for n in ("out", "err")]
        self._write(box, f"{box.state_dir}/{HEARTBEAT_FILE}",
                    f"{box.beats} {sizes[0]} {sizes[1]}\n".encode())

    def _finish(self, box: FakeContainer, outcome: Outcome) -> None:
        if box.ended:
            raise BackendError(f"the pipeline in {box.spec.name} has already ended")
        env = box.environment
        logs, outputs = env["PIRUS_LOGS_DIR"], env["PIRUS_OUTPUTS_DIR"]
        if outcome.progress:
            self._append(box, env["PIRUS_PROGRESS_FILE"], b"".join(
                json.dumps(line).encode() + b"\n" for line in outcome.progress))
        self._append(box, f"{logs}/out.log", outcome.out.encode())
        self._append(box, f"{logs}/err.log", outcome.err.encode())
        for relative, content in outcome.outputs.items():
            self._write(box, f"{outputs}/{relative}", content)
        if OUTPUTS_MANIFEST in box.script:
            self._write(box, f"{box.state_dir}/{OUTPUTS_MANIFEST}", "".join(
                f"{hashlib.sha256(c).hexdigest()}  ./{p}\n"
                for p, c in outcome.outputs.items()).encode())
        self._write(box, f"{box.state_dir}/{EXIT_FILE}", f"{outcome.exit_code}\n".encode())
        box.beating, box.ended = False, True


class IdleBackend(FakeBackend):
    """Every container asked about is Running and does nothing (even one never created: the
    API benchmark seeds running runs straight into the store)."""

    def exec_detached(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        self._check("exec_detached", name)

    def state(self, name: str) -> ContainerState | None:
        self._check("state", name)
        return ContainerState("Running", cpu_seconds=CPU_SECONDS, memory_peak=MEMORY_PEAK)
