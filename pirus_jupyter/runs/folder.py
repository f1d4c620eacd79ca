"""The run folder on this host: created before the start, read by the API.

A run's folder (under the runs folder of the Jupyter root) holds ``inputs/`` (read-only in the
container, with ``config.json``), ``outputs/``, ``logs/`` (``out.log``, ``err.log``) and a hidden
``.pirus/`` state folder (progress file, exit code, heartbeat). A pipeline writes into it, so
nothing here follows a symlink it may have planted. Every function blocks: call it in a thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import Forbidden, RuleBroken
from ..files import is_within, open_in_folder, resolve_under, sha256_file
from ..hashing import recorded_sha256
from .wrapper import LOG_NAMES


@dataclass(frozen=True)
class RunPaths:
    """The run folder on this host and its four folders."""

    root: Path
    inputs: Path
    outputs: Path
    logs: Path
    state: Path

    @classmethod
    def of(cls, row: dict[str, Any]) -> RunPaths:
        root = Path(row["root_path"])
        return cls(root, root / "inputs", root / "outputs", root / "logs", root / ".pirus")

    def log(self, which: str) -> Path:
        return self.logs / f"{which}.log"


# The most a tail reads and returns (``GET /logs/...?tail=N``, the error of a failed run): a
# log may be one line of hundreds of megabytes.
TAIL_MAX_BYTES = 1024 * 1024
# The most read of an exit code file (a number and a newline).
EXIT_CODE_MAX_BYTES = 64


def run_folder_name(run_id: int, name: str) -> str:
    """A run folder's name: its id and a slug of the run's name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "run"
    return f"{run_id}-{slug}"


def open_log(paths: RunPaths, which: str, *, write: bool = False) -> BinaryIO | None:
    """A log of the run folder by descriptor (files.open_in_folder): never through a link the
    pipeline put in its place; RuleBroken when it is not a regular file of its own."""
    return open_in_folder(paths.logs, f"{which}.log", write=write)


def tail_lines(path: Path, count: int, block: int = 64 * 1024,
               max_bytes: int = TAIL_MAX_BYTES) -> str:
    """The last ``count`` lines of a file of the run folder, read backwards once by blocks
    (linear, at most ``max_bytes`` read and returned: logs can be gigabytes of long lines).
    Anything but a regular file reads as empty: a link planted by the pipeline is not read."""
    if count <= 0:
        return ""
    try:
        handle = open_in_folder(path.parent, path.name)
    except RuleBroken:
        return ""
    if handle is None:
        return ""
    blocks: list[bytes] = []
    newlines = taken = 0
    with handle as f:
        end = os.fstat(f.fileno()).st_size
        while end > 0 and newlines <= count and taken < max_bytes:
            step = min(block, end, max_bytes - taken)
            end -= step
            f.seek(end)
            chunk = f.read(step)
            blocks.append(chunk)
            newlines += chunk.count(b"\n")
            taken += len(chunk)
    return _last(b"".join(reversed(blocks)), count)


def _last(data: bytes, count: int) -> str:
    lines = data.decode(errors="replace").splitlines()[-count:] if count > 0 else []
    return "\n".join(lines) + ("\n" if lines else "")


def last_lines(data: bytes, tail: int | None, max_bytes: int) -> str:
    """A log read whole (over the API): all of it up to ``max_bytes``, or its last lines
    (within its last ``TAIL_MAX_BYTES``, as ``tail_lines``)."""
    if tail is None:
        return data[:max_bytes].decode(errors="replace")
    return _last(data[-TAIL_MAX_BYTES:], tail)


def read_host_log(paths: RunPaths, which: str, tail: int | None, max_bytes: int) -> str:
    if tail is not None:
        return tail_lines(paths.log(which), tail)
    try:
        handle = open_log(paths, which)
    except RuleBroken:
        return ""  # a link planted by the pipeline is not read (its run ends in ERROR)
    if handle is None:
        return ""
    with handle as f:
        return f.read(max_bytes).decode(errors="replace")


def log_sizes(paths: RunPaths) -> int:
    """The larger log's size, read on the descriptor; RuleBroken if a log is not a regular
    file of its own (the output of the pipeline would then go where no cap sees it)."""
    sizes = [0]
    for name in LOG_NAMES:
        handle = open_log(paths, name)
        if handle is not None:
            with handle:
                sizes.append(os.fstat(handle.fileno()).st_size)
    return max(sizes)


def log_identity(paths: RunPaths) -> dict[str, list[int]]:
    """Each log's (device, inode), taken when the run folder is made (``check_log_identity``)."""
    identity = {}
    for name in LOG_NAMES:
        handle = open_log(paths, name)
        if handle is not None:
            with handle:
                info = os.fstat(handle.fileno())
                identity[name] = [info.st_dev, info.st_ino]
    return identity


def check_log_identity(paths: RunPaths, recorded: dict[str, list[int]]) -> None:
    """RuleBroken when a log is no longer the file made with the run folder: deleted, or
    swapped for a fresh file, the pipeline's output goes on into the unlinked one, where no
    size check sees it (unbounded disk use until the container goes)."""
    for name, (device, inode) in recorded.items():
        handle = open_log(paths, name)  # a link, a FIFO: RuleBroken already
        if handle is None:
            raise RuleBroken(f"logs/{name}.log of the run folder was deleted by the pipeline: "
                             "its output would escape the log cap")
        with handle:
            info = os.fstat(handle.fileno())
        if (info.st_dev, info.st_ino) != (device, inode):
            raise RuleBroken(f"logs/{name}.log of the run folder was replaced by another file "
                             "(deleted, then made again?): its output would escape the log cap")


def truncate_logs(paths: RunPaths, max_bytes: int) -> None:
    """Cut the logs back to ``max_bytes``, by descriptor: never what a link points to."""
    for name in LOG_NAMES:
        try:
            handle = open_log(paths, name, write=True)
        except RuleBroken:
            continue  # not ours to cut: its run is failed for it
        if handle is None:
            continue
        with handle:
            if os.fstat(handle.fileno()).st_size > max_bytes:
                os.ftruncate(handle.fileno(), max_bytes)


def read_state_file(paths: RunPaths, name: str, max_bytes: int) -> bytes | None:
    """The start of a state file (``.pirus/``) by descriptor: None when missing,
    RuleBroken when not a regular file of its own (a FIFO would block the reader)."""
    handle = open_in_folder(paths.state, name)
    if handle is None:
        return None
    with handle as f:
        return f.read(max_bytes)


def prepare_folder(row: dict[str, Any], paths: RunPaths, runs_dir: Path, root_dir: Path,
                   known: dict[str, tuple[str, int, str]]) -> list[dict[str, Any]]:
    """Create the run folder: inputs linked (or copied when the container could not read
    them), config.json, empty outputs/logs/state folders. Returns the inputs with their
    sha256 (``known`` holds hashes of file records, so uploads are not hashed twice)."""
    if not is_within(paths.root.resolve().parent, runs_dir.resolve()):
        raise Forbidden("run folder outside the runs folder")
    if paths.root.exists():
        shutil.rmtree(paths.root)  # a re-queued run starts from a clean folder
    for folder in (paths.inputs, paths.outputs, paths.logs, paths.state):
        folder.mkdir(parents=True)
        folder.chmod(0o755)  # the container's root (another uid on the host) reads inputs/
    # The run folder is the server user's alone: what a pipeline leaves in outputs/ while it
    # runs (a setuid binary of the container's uid, a world-writable folder) is out of other
    # local users' reach. The container does not need it: its mounts are the folders inside.
    paths.root.chmod(0o700)
    inputs = []
    for item in row["inputs"]:
        source = resolve_under(root_dir, item["path"])
        target = paths.inputs / item["name"]
        linked = False
        if source.stat().st_mode & 0o004:
            try:
                os.link(source, target)  # no copy: the mount is read-only anyway
                linked = True
            except OSError:
                pass
        if not linked:
            shutil.copyfile(source, target)
            target.chmod(0o644)
        size = target.stat().st_size
        # A file record's hash is reused only while it holds (same size, not written since).
        sha256 = recorded_sha256(known.get(item["path"]), source.stat()) or sha256_file(target)
        inputs.append(dict(item, size=size, sha256=sha256))
    (paths.inputs / "config.json").write_text(json.dumps(row["config"], indent=2))
    (paths.inputs / "config.json").chmod(0o644)
    for name in LOG_NAMES:
        paths.log(name).touch()
    return inputs
