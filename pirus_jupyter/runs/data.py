"""Run data without a shared filesystem: the LXD file API instead of bind mounts.

When a run's container may be on another machine (an LXD cluster member, a remote LXD), host
folders cannot be mounted into it. Then, before the container starts, its inputs, config.json,
empty logs and state folder (and the reference databases) are pushed into it; while it runs,
the progress file, the exit code and the heartbeat are read over the API; when it ends, logs
and outputs are pulled back into the run folder on this host, each output's sha256 computed on
the host copy as it streams in and checked against the one the wrapper computed inside the
container. Nothing here assumes a host path inside the container.

Every method blocks (HTTP to LXD): the run manager calls them in threads.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from pathlib import Path
from typing import Any

from ..backend.base import Backend
from ..errors import BackendError, BackendUnavailable
from ..files import is_within

STATE_DIR = "/.pirus"
PROGRESS_PATH = f"{STATE_DIR}/progress.jsonl"
EXIT_PATH = f"{STATE_DIR}/exit_code"
HEARTBEAT_PATH = f"{STATE_DIR}/heartbeat"
MANIFEST_PATH = f"{STATE_DIR}/outputs.sha256"
LOG_NAMES = ("out", "err")
# A request about a container on an unreachable member stalls ~10 s before LXD gives up:
# after one such failure, reads of that container are skipped for this long.
UNREACHABLE_RETRY = 15.0


def heartbeat_script(logs: str, interval: float) -> str:
    """The wrapper's heartbeat for pushed runs: a counter (a change is a beat, whatever the
    clocks of this host and the member say) and the sizes of both logs (the log cap is checked
    from it, without reading the logs over the API)."""
    tmp = f"{HEARTBEAT_PATH}.tmp"
    return (f"( n=0; while kill -0 $$ 2>/dev/null; do n=$((n+1)); "
            f"echo \"$n $(wc -c <{logs}/out.log) $(wc -c <{logs}/err.log)\" >{tmp} && "
            f"mv -f {tmp} {HEARTBEAT_PATH}; sleep {interval:g}; done ) "
            f"</dev/null >/dev/null 2>&1 &\n")


def manifest_script(outputs: str) -> str:
    """sha256 of every output, computed inside the container once the command has ended, so
    that the copies pulled to this host can be checked (skipped if the image has no
    sha256sum)."""
    tmp = f"{MANIFEST_PATH}.tmp"
    return (f"( cd {outputs} && find . -type f -exec sha256sum {{}} \\; ) >{tmp} 2>/dev/null; "
            f"mv -f {tmp} {MANIFEST_PATH}\n")


class PushTransfer:
    """Moves one server's run data in and out of containers through the LXD file API."""

    def __init__(self, backend: Backend, databases_dir: Path, log: logging.Logger) -> None:
        self.backend = backend
        self.databases_dir = databases_dir
        self.log = log
        # run id -> (heartbeat content, when it was last seen changing, on this host's clock)
        self._beats: dict[int, tuple[bytes, float]] = {}
        self._unreachable: dict[str, float] = {}  # container -> when a read last failed so

    def unreachable(self, name: str) -> bool:
        """A read of this container failed to reach its member a moment ago."""
        since = self._unreachable.get(name)
        if since is None:
            return False
        if time.monotonic() - since < UNREACHABLE_RETRY:
            return True
        del self._unreachable[name]
        return False

    # -- before the start ---------------------------------------------------------------
    def push(self, name: str, pipeline: dict[str, Any], paths: dict[str, Path]) -> None:
        """Inputs (with config.json), empty logs, the state folder and the databases."""
        backend = self.backend
        inputs_path = pipeline["lxd_inputs_path"]
        backend.make_dir(name, inputs_path)
        for entry in sorted(paths["inputs"].iterdir()):
            backend.push_file(name, posixpath.join(inputs_path, entry.name), entry)
        backend.make_dir(name, pipeline["lxd_outputs_path"])
        backend.make_dir(name, pipeline["lxd_logs_path"])
        for log in LOG_NAMES:
            backend.push_file(name, posixpath.join(pipeline["lxd_logs_path"], f"{log}.log"), b"")
        backend.make_dir(name, STATE_DIR)
        self._push_tree(name, self.databases_dir, pipeline["lxd_db_path"])

    def _push_tree(self, name: str, source: Path, target: str) -> None:
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

    # -- while it runs ------------------------------------------------------------------
    def _read(self, name: str, path: str) -> bytes | None:
        """A small state file, or None when it is missing or the member cannot say."""
        if self.unreachable(name):
            return None
        try:
            data = self.backend.read_file(name, path)
        except BackendUnavailable as e:  # the monitor's health check decides what it means
            self._unreachable[name] = time.monotonic()
            self.log.debug("pirus: cannot read %s in %s: %s", path, name, e.message)
            return None
        except BackendError as e:
            self.log.debug("pirus: cannot read %s in %s: %s", path, name, e.message)
            return None
        self._unreachable.pop(name, None)
        return data

    def exit_code(self, name: str) -> int | None:
        data = self._read(name, EXIT_PATH)
        try:
            return int(data.strip()) if data else None
        except ValueError:
            return None

    def progress(self, name: str) -> bytes:
        return self._read(name, PROGRESS_PATH) or b""

    def heartbeat_age(self, run_id: int, name: str) -> float | None:
        """Seconds since the heartbeat last changed (None: cannot be read now)."""
        data = self._read(name, HEARTBEAT_PATH)
        now = time.time()
        seen = self._beats.get(run_id)
        if data is None:
            return None if seen is None else now - seen[1]
        if seen is None or seen[0] != data:
            self._beats[run_id] = (data, now)
            return 0.0
        return now - seen[1]

    def log_sizes(self, run_id: int) -> int:
        """The larger log's size at the last heartbeat."""
        seen = self._beats.get(run_id)
        if not seen:
            return 0
        try:
            return max(int(n) for n in seen[0].split()[1:3])
        except ValueError:
            return 0

    def forget(self, run_id: int, name: str | None = None) -> None:
        self._beats.pop(run_id, None)
        if name:
            self._unreachable.pop(name, None)

    def read_log(self, name: str, pipeline: dict[str, Any], which: str) -> bytes | None:
        return self._read(name, posixpath.join(pipeline["lxd_logs_path"], f"{which}.log"))

    # -- after the end ------------------------------------------------------------------
    def pull_logs(self, name: str, pipeline: dict[str, Any], logs_dir: Path) -> None:
        for log in LOG_NAMES:
            target = logs_dir / f"{log}.log"
            partial = target.with_name(f".{log}.log.part")
            self.backend.pull_file(name, posixpath.join(pipeline["lxd_logs_path"],
                                                        f"{log}.log"), partial)
            partial.replace(target)

    def pull_outputs(self, name: str, pipeline: dict[str, Any], outputs_dir: Path
                     ) -> dict[str, str]:
        """Copy every regular output file to ``outputs_dir``; return relative path -> sha256
        of the host copy. A copy whose sha256 differs from the container's is an error."""
        root = pipeline["lxd_outputs_path"]
        expected = self._manifest(name)
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

    def _manifest(self, name: str) -> dict[str, str]:
        data = self._read(name, MANIFEST_PATH) or b""
        out = {}
        for line in data.decode(errors="replace").splitlines():
            digest, _, path = line.partition("  ")
            if len(digest) == 64 and path.startswith("./"):
                out[path[2:]] = digest
        return out

