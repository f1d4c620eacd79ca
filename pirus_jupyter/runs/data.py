"""A run's data as its container sees it: mounted | pushed, one object per run.

How the container reaches the run folder (folder.py) is one object per run, behind ``RunData``:

- ``MountedData``: LXD runs on this host; the folders are bind-mounted, the monitor reads the
  state files directly and the outputs are already here when the run ends.
- ``PushedData``: the container may be on another machine (an LXD cluster member, a remote LXD),
  so nothing assumes a host path inside it. Before the start, inputs, config.json, empty logs,
  the state folder and the reference databases are pushed through the LXD file API; while it
  runs, the progress file, the exit code and the heartbeat are read over the API; when it ends,
  logs and outputs are pulled back, each output's sha256 computed on the host copy as it
  streams in and checked against the one the wrapper computed inside the container.

Every method of a ``RunData`` may block (files, HTTP to LXD): the run manager calls them in
threads.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..backend.base import Backend, DiskMount
from ..errors import BackendError, BackendUnavailable, NotFound, RuleBroken
from ..files import is_within, open_in_folder
from . import wrapper
from .folder import EXIT_CODE_MAX_BYTES, RunPaths, log_sizes, read_state_file
from .wrapper import EXIT_FILE, HEARTBEAT_FILE, LOG_NAMES, MANIFEST_FILE, PROGRESS_FILE, STATE_DIR

# Runs whose data goes through the LXD file API: seconds between reads of their progress file
# and exit code (each read is a request to LXD, and LXD starts a helper process for it).
PUSH_POLL_INTERVAL = 1.0
# A request about a container on an unreachable member stalls ~10 s before LXD gives up:
# after one such failure, reads of that container are skipped for this long.
UNREACHABLE_RETRY = 15.0
# Progress lines read at most at once.
PROGRESS_CHUNK = 1024 * 1024
# A pushed run's progress file is read from its start at every poll (the LXD file API has no
# offset): past this size its further lines are not read.
PUSHED_PROGRESS_MAX_BYTES = 16 * 1024 * 1024
# The most read of a pushed run's heartbeat ("<count> <out.log size> <err.log size>").
HEARTBEAT_MAX_BYTES = 256
# The outputs' sha256 list the wrapper writes in a pushed run (a line per output).
MANIFEST_MAX_BYTES = 64 * 1024 * 1024
# What a log is when nobody says otherwise (PirusApp.log_max_bytes, 256 MiB).
DEFAULT_LOG_MAX_BYTES = 256 * 1024 * 1024


class RunData(ABC):
    """One run's data as its container sees it. ``container`` is the run's current container
    (a run placed again on another member gets a new container, and a new ``RunData``)."""

    #: the container runs on this host, so the notify proxy can reach this server
    on_this_host = True

    def __init__(self, row: dict[str, Any], pipeline: dict[str, Any] | None, backend: Backend,
                 databases_dir: Path, log: logging.Logger,
                 log_max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self.run_id: int = row["id"]
        self.log_max_bytes = log_max_bytes
        self.container: str | None = row.get("lxd_container")
        self.paths = RunPaths.of(row)
        # Host folders shared with the run at the same path, read-write (TES shared folders)
        self.shared: list[str] = [str(p) for p in row.get("mounts") or []]
        self.pipeline = pipeline
        self.backend = backend
        self.databases_dir = databases_dir
        self.log = log

    def _pipeline(self) -> dict[str, Any]:
        if self.pipeline is None:
            raise NotFound(f"the pipeline of run {self.run_id} is gone")
        return self.pipeline

    def poll_interval(self, base: float) -> float:
        return base

    def unreachable(self) -> bool:
        """A read of the container just failed to reach its member (asking again stalls)."""
        return False

    # -- before the start ---------------------------------------------------------------
    @abstractmethod
    def mounts(self) -> dict[str, DiskMount]:
        """Host folders bind-mounted into the container."""

    @abstractmethod
    def fill(self, uid: int, gid: int) -> None:
        """Make the data the container's, between its creation and its start."""

    @abstractmethod
    def heartbeat_script(self) -> str:
        """The wrapper's heartbeat (wrapper.py)."""

    def before_exit_script(self) -> str:
        """What the wrapper does once the command has ended, before writing the exit code."""
        return ""

    # -- while it runs ------------------------------------------------------------------
    @abstractmethod
    def exit_code(self) -> int | None:
        """The command's exit code once written; RuleBroken if the pipeline put something
        else than a regular file in its place."""

    @abstractmethod
    def progress(self, offset: int) -> bytes:
        """The progress file from ``offset`` (at most ``PROGRESS_CHUNK`` bytes)."""

    @abstractmethod
    def last_beat(self) -> float | None:
        """When the wrapper's heartbeat last beat (epoch seconds); None: cannot tell now."""

    @abstractmethod
    def log_size(self) -> int:
        """The larger log's size; RuleBroken if a log is no longer a regular file."""

    def live_log(self, which: str) -> bytes | None:
        """A log read in the container while the run is active; None: read the host copy."""
        return None

    # -- after the end ------------------------------------------------------------------
    def pull_logs(self) -> list[str]:
        """Bring the logs to the run folder (the error of a failed run quotes them), each cut
        at ``log_max_bytes``; return the names of those that were longer."""
        return []  # mounted: they are there already, and the monitor caps them

    def pull_outputs(self) -> dict[str, str] | None:
        """Bring the outputs to the run folder; relative path -> sha256 already computed."""
        return None


class MountedData(RunData):
    """Run folders bind-mounted into a container on this host."""

    def mounts(self) -> dict[str, DiskMount]:
        pipeline, paths = self._pipeline(), self.paths
        return {
            "pirus-inputs": DiskMount(paths.inputs, pipeline["lxd_inputs_path"], True),
            "pirus-outputs": DiskMount(paths.outputs, pipeline["lxd_outputs_path"], False),
            "pirus-logs": DiskMount(paths.logs, pipeline["lxd_logs_path"], False),
            "pirus-databases": DiskMount(self.databases_dir, pipeline["lxd_db_path"], True),
            "pirus-state": DiskMount(paths.state, STATE_DIR, False),
            **{f"pirus-shared-{i}": DiskMount(Path(p), p, False)
               for i, p in enumerate(self.shared)},
        }

    def fill(self, uid: int, gid: int) -> None:
        for folder in (self.paths.outputs, self.paths.logs, self.paths.state):
            os.chown(folder, uid, gid)
            for child in folder.iterdir():
                os.chown(child, uid, gid)
        for shared in self.shared:  # the container writes there too: its root owns it all
            for dirpath, dirnames, filenames in os.walk(shared):
                os.chown(dirpath, uid, gid, follow_symlinks=False)
                for name in [*dirnames, *filenames]:
                    os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)

    def heartbeat_script(self) -> str:
        return wrapper.touch_heartbeat()

    # Every read by descriptor (folder.py): the state folder and the logs are the pipeline's.
    def exit_code(self) -> int | None:
        data = read_state_file(self.paths, posixpath.basename(EXIT_FILE), EXIT_CODE_MAX_BYTES)
        try:
            return int(data.strip()) if data else None
        except ValueError:
            return None

    def progress(self, offset: int) -> bytes:
        try:
            handle = open_in_folder(self.paths.state, posixpath.basename(PROGRESS_FILE))
        except RuleBroken:  # a link or a FIFO: not followed, the run just reports nothing
            return b""
        if handle is None:
            return b""
        with handle as f:
            f.seek(offset)
            return f.read(PROGRESS_CHUNK)

    def last_beat(self) -> float | None:
        try:
            handle = open_in_folder(self.paths.state, posixpath.basename(HEARTBEAT_FILE))
        except RuleBroken:
            return 0.0  # no heartbeat of the wrapper's: lost, once the timeout has passed
        if handle is None:
            return 0.0
        with handle:
            return os.fstat(handle.fileno()).st_mtime

    def log_size(self) -> int:
        return log_sizes(self.paths)


class PushedData(RunData):
    """Run data moved in and out of the container through the LXD file API."""

    on_this_host = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._beat: tuple[bytes, float] | None = None  # (content, when seen changing, here)
        self._unreachable_since: float | None = None

    def poll_interval(self, base: float) -> float:
        return max(base, PUSH_POLL_INTERVAL)

    def unreachable(self) -> bool:
        since = self._unreachable_since
        if since is None:
            return False
        if time.monotonic() - since < UNREACHABLE_RETRY:
            return True
        self._unreachable_since = None
        return False

    def _name(self) -> str:
        if not self.container:
            raise NotFound(f"run {self.run_id} has no container")
        return self.container

    # -- before the start ---------------------------------------------------------------
    def mounts(self) -> dict[str, DiskMount]:
        return {}

    def fill(self, uid: int, gid: int) -> None:
        """Inputs (with config.json), empty logs, the state folder and the databases."""
        backend, name, pipeline = self.backend, self._name(), self._pipeline()
        inputs_path = pipeline["lxd_inputs_path"]
        backend.make_dir(name, inputs_path)
        for entry in sorted(self.paths.inputs.iterdir()):
            backend.push_file(name, posixpath.join(inputs_path, entry.name), entry)
        backend.make_dir(name, pipeline["lxd_outputs_path"])
        backend.make_dir(name, pipeline["lxd_logs_path"])
        for log in LOG_NAMES:
            backend.push_file(name, posixpath.join(pipeline["lxd_logs_path"], f"{log}.log"), b"")
        backend.make_dir(name, STATE_DIR)
        self._push_tree(self.databases_dir, pipeline["lxd_db_path"])

    def _push_tree(self, source: Path, target: str) -> None:
        name = self._name()
        self.backend.make_dir(name, target)
        if not source.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            relative = Path(dirpath).relative_to(source).as_posix()
            folder = target if relative == "." else posixpath.join(target, relative)
            if relative != ".":
                self.backend.make_dir(name, folder)
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if filename.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                self.backend.push_file(name, posixpath.join(folder, filename), path)

    def heartbeat_script(self) -> str:
        return wrapper.counting_heartbeat(shlex.quote(self._pipeline()["lxd_logs_path"]))

    def before_exit_script(self) -> str:
        # outputs hashed inside, to check the copies pulled to this host
        return wrapper.output_manifest(shlex.quote(self._pipeline()["lxd_outputs_path"]))

    # -- while it runs ------------------------------------------------------------------
    def _read(self, path: str, max_bytes: int, offset: int = 0) -> bytes | None:
        """At most ``max_bytes`` of a file of the container from ``offset``, or None when it
        is missing or the member cannot say."""
        if not self.container or self.unreachable():
            return None
        try:
            data = self.backend.read_file(self.container, path, max_bytes, offset)
        except BackendUnavailable as e:  # the monitor's health check decides what it means
            self._unreachable_since = time.monotonic()
            self.log.debug("pirus: cannot read %s in %s: %s", path, self.container, e.message)
            return None
        except BackendError as e:
            self.log.debug("pirus: cannot read %s in %s: %s", path, self.container, e.message)
            return None
        self._unreachable_since = None
        return data

    def exit_code(self) -> int | None:
        data = self._read(EXIT_FILE, EXIT_CODE_MAX_BYTES)
        try:
            return int(data.strip()) if data else None
        except ValueError:
            return None

    def progress(self, offset: int) -> bytes:
        # Streamed from the start (the API has no offset), only the chunk after ``offset``
        # kept; past PUSHED_PROGRESS_MAX_BYTES the file is no longer read at every poll.
        if offset >= PUSHED_PROGRESS_MAX_BYTES:
            return b""
        size = min(PROGRESS_CHUNK, PUSHED_PROGRESS_MAX_BYTES - offset)
        return self._read(PROGRESS_FILE, size, offset) or b""

    def last_beat(self) -> float | None:
        """A change of the beat's content, seen on this host's clock."""
        data = self._read(HEARTBEAT_FILE, HEARTBEAT_MAX_BYTES)
        now = time.time()
        if data is None:
            return None if self._beat is None else self._beat[1]
        if self._beat is None or self._beat[0] != data:
            self._beat = (data, now)
        return self._beat[1]

    def log_size(self) -> int:
        """As of the last heartbeat: written in the container, so a hint only (a pipeline can
        fake it); the cap holds anyway when the logs are pulled (``pull_logs``)."""
        if not self._beat:
            return 0
        try:
            return max(int(n) for n in self._beat[0].split()[1:3])
        except ValueError:
            return 0

    def live_log(self, which: str) -> bytes | None:
        if self.pipeline is None:
            return None
        return self._read(posixpath.join(self.pipeline["lxd_logs_path"], f"{which}.log"),
                          self.log_max_bytes)

    # -- after the end ------------------------------------------------------------------
    def pull_logs(self) -> list[str]:
        name, pipeline = self._name(), self._pipeline()
        cut = []
        for log in LOG_NAMES:
            target = self.paths.log(log)
            partial = target.with_name(f".{log}.log.part")
            # One byte past the cap tells a longer log, whatever the heartbeat said.
            size, _ = self.backend.pull_file(
                name, posixpath.join(pipeline["lxd_logs_path"], f"{log}.log"), partial,
                self.log_max_bytes + 1)
            if size > self.log_max_bytes:
                handle = open_in_folder(partial.parent, partial.name, write=True)
                if handle is not None:
                    with handle:
                        os.ftruncate(handle.fileno(), self.log_max_bytes)
                cut.append(log)
            partial.replace(target)
        return cut

    def pull_outputs(self) -> dict[str, str]:
        """Copy every regular output file to the run folder; return relative path -> sha256
        of the host copy. A copy whose sha256 differs from the container's is an error."""
        name, root = self._name(), self._pipeline()["lxd_outputs_path"]
        outputs_dir = self.paths.outputs
        expected = self._manifest()
        hashes: dict[str, str] = {}
        for entry in self.backend.walk_files(name, root):
            target = outputs_dir / entry.path
            if any(part in ("", ".", "..") for part in entry.path.split("/")) or \
                    not is_within(target, outputs_dir):
                raise BackendError(f"output {entry.path!r} would leave the run folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            _size, digest = self.backend.pull_file(name, posixpath.join(root, entry.path), target)
            want = expected.get(entry.path)
            if want is not None and want != digest:
                raise BackendError(
                    f"output {entry.path} changed in transfer: sha256 {digest} on this host, "
                    f"{want} in the container")
            hashes[entry.path] = digest
        return hashes

    def _manifest(self) -> dict[str, str]:
        data = self._read(MANIFEST_FILE, MANIFEST_MAX_BYTES) or b""
        out = {}
        for line in data.decode(errors="replace").splitlines():
            digest, _, path = line.partition("  ")
            if len(digest) == 64 and path.startswith("./"):
                out[path[2:]] = digest
        return out


def open_run_data(row: dict[str, Any], pipeline: dict[str, Any] | None, backend: Backend,
                  databases_dir: Path, log: logging.Logger,
                  log_max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> RunData:
    """The run's data as chosen when it started (the ``transfer`` column: mounts | push)."""
    kind = PushedData if row.get("transfer") == "push" else MountedData
    return kind(row, pipeline, backend, databases_dir, log, log_max_bytes)
