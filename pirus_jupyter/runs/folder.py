"""The run folder on this host: created before the start, read by the API.

A run's folder (under the runs folder of the Jupyter root) holds ``inputs/`` (read-only in the
container, with ``config.json``), ``outputs/``, ``logs/`` (``out.log``, ``err.log``) and a hidden
``.pirus/`` state folder (progress file, exit code, heartbeat). A pipeline writes into it, so
nothing here follows a symlink it may have planted. Every function blocks: call it in a thread.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Forbidden
from ..files import is_within, open_regular, resolve_under, sha256_file
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


def tail_lines(path: Path, count: int, block: int = 64 * 1024) -> str:
    """The last ``count`` lines of a file, read backwards (logs can be gigabytes)."""
    # Not followed: a pipeline can put a symlink (to a host file) in place of its log.
    handle = open_regular(path) if count > 0 else None
    if handle is None:
        return ""
    with handle as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            step = min(block, end)
            end -= step
            f.seek(end)
            data = f.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-count:]) + ("\n" if lines else "")


def last_lines(data: bytes, tail: int | None, max_bytes: int) -> str:
    """A log read whole (over the API): all of it up to ``max_bytes``, or its last lines."""
    if tail is None:
        return data[:max_bytes].decode(errors="replace")
    lines = data.decode(errors="replace").splitlines()[-tail:] if tail > 0 else []
    return "\n".join(lines) + ("\n" if lines else "")


def read_host_log(paths: RunPaths, which: str, tail: int | None, max_bytes: int) -> str:
    if tail is not None:
        return tail_lines(paths.log(which), tail)
    handle = open_regular(paths.log(which))  # a symlink planted by the pipeline is not read
    if handle is None:
        return ""
    with handle as f:
        return f.read(max_bytes).decode(errors="replace")


def truncate_logs(paths: RunPaths, max_bytes: int) -> None:
    for name in LOG_NAMES:
        path = paths.log(name)
        try:
            if path.stat().st_size > max_bytes:
                os.truncate(path, max_bytes)
        except OSError:
            pass


def prepare_folder(row: dict[str, Any], paths: RunPaths, runs_dir: Path, root_dir: Path,
                   known: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
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
        recorded = known.get(item["path"])
        # A file record's hash is reused only while the size still matches.
        sha256 = recorded[0] if recorded and recorded[1] == size else sha256_file(target)
        inputs.append(dict(item, size=size, sha256=sha256))
    (paths.inputs / "config.json").write_text(json.dumps(row["config"], indent=2))
    (paths.inputs / "config.json").chmod(0o644)
    for name in LOG_NAMES:
        paths.log(name).touch()
    return inputs
