"""What a run leaves on this host, made safe and listed: its outputs with size and sha256.

Nothing a pipeline wrote is trusted. In a folder-mounted run the container's root (uid 100000
on the host, in an unprivileged container) owns what it wrote, with the modes it chose: a
setuid binary, a world-writable folder, a FIFO or a symlink into the host would otherwise stay
in the Jupyter root after the run. So once the container can no longer write (frozen or
deleted), ``secure_run_folder`` walks outputs/, logs/ and the state folder by descriptor,
never following a link:

- anything that is not a regular file or a folder (symlink, FIFO, socket, device) is removed
  and named in the run's err.log;
- everything else is given to the server's user: folders 0755, files 0644 (0755 when the owner
  could execute it): no setuid/setgid/sticky bit, no group or world write;
- a file with several hard links is replaced by a copy first, so changing its owner or mode
  never reaches another name of it (the container cannot link across its mounts, so this is
  defence in depth for the inputs, which are hard links to the user's files);
- outputs are counted and sized as they are met; they are hashed (sha256, from the descriptor
  that was checked) only while within ``OutputLimits``, and hashing stops as soon as ``stop()``
  says the run moved on (canceled during FINISHING): the folder is still made safe.

Folders nested deeper than ``MAX_DEPTH`` are closed (0700, the server's) rather than walked: a
walk by descriptor holds one per level. Every function blocks: call it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import to_api_path
from ..hashing import BLOCK
from ..store import now_iso
from .folder import RunPaths

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 64
REMOVED_NAMED = 20  # special files named in err.log; the rest are counted


@dataclass(frozen=True)
class OutputLimits:
    """``PirusApp.max_outputs`` and ``PirusApp.max_output_bytes``."""

    max_count: int
    max_bytes: int


@dataclass
class FolderScan:
    """What a walk of a run folder found and did."""

    files: list[dict[str, Any]] = field(default_factory=list)  # output records (within caps)
    count: int = 0  # regular output files
    total_bytes: int = 0  # their apparent sizes (a sparse file counts whole)
    removed: list[str] = field(default_factory=list)  # special files removed (first few)
    removed_count: int = 0
    too_deep: list[str] = field(default_factory=list)
    stopped: bool = False  # hashing was stopped (the run moved on)

    def problem(self, limits: OutputLimits) -> str | None:
        """Why the outputs cannot be recorded, or None."""
        if self.count > limits.max_count:
            return (f"the pipeline wrote {self.count} output files, more than max_outputs "
                    f"({limits.max_count}); none were recorded (they stay in the run folder)")
        if self.total_bytes > limits.max_bytes:
            return (f"the pipeline's outputs take {self.total_bytes} bytes, more than "
                    f"max_output_bytes ({limits.max_bytes}); none were recorded (they stay in "
                    "the run folder)")
        if self.too_deep:
            return (f"outputs nested deeper than {MAX_DEPTH} folders ({self.too_deep[0]}): "
                    "the run folder was closed there; no outputs were recorded")
        return None


def safe_mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode):
        return 0o755
    return 0o755 if st_mode & stat.S_IXUSR else 0o644


class _Walker:
    """One walk of one folder; records outputs when ``outputs`` is set."""

    def __init__(self, scan: FolderScan, label: str, outputs: _OutputRules | None) -> None:
        self.scan = scan
        self.label = label  # "outputs", "logs", ".pirus": how removed files are named
        self.outputs = outputs
        self.uid, self.gid = os.geteuid(), os.getegid()

    def own(self, fd: int, st_mode: int) -> None:
        os.fchown(fd, self.uid, self.gid)
        os.fchmod(fd, safe_mode(st_mode))

    def walk(self, fd: int, relative: str, depth: int) -> None:
        names = sorted(entry.name for entry in os.scandir(fd))
        folders = []
        for name in names:
            child = f"{relative}/{name}" if relative else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                folders.append((name, child))
            elif stat.S_ISREG(st.st_mode):
                self.regular(fd, name, child)
            else:
                self.remove(fd, name, child)
        for name, child in folders:
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:  # replaced meanwhile by something that is not a folder
                self.remove(fd, name, child)
                continue
            try:
                if depth + 1 > MAX_DEPTH:
                    os.fchown(sub, self.uid, self.gid)
                    os.fchmod(sub, 0o700)  # closed: nobody else reaches what is below
                    self.scan.too_deep.append(f"{self.label}/{child}")
                    continue
                self.own(sub, stat.S_IFDIR)
                self.walk(sub, child, depth + 1)
            finally:
                os.close(sub)

    def remove(self, fd: int, name: str, child: str) -> None:
        try:
            os.unlink(name, dir_fd=fd)
        except IsADirectoryError:
            return
        except FileNotFoundError:
            return
        self.scan.removed_count += 1
        if len(self.scan.removed) < REMOVED_NAMED:
            self.scan.removed.append(f"{self.label}/{child}")

    def regular(self, fd: int, name: str, child: str) -> None:
        try:
            handle = os.open(name, FILE_FLAGS, dir_fd=fd)
        except OSError:  # a symlink or FIFO swapped in meanwhile (O_NOFOLLOW, O_NONBLOCK)
            self.remove(fd, name, child)
            return
        try:
            st = os.fstat(handle)
            if not stat.S_ISREG(st.st_mode):
                self.remove(fd, name, child)
                return
            if self.outputs is not None:
                self.scan.count += 1
                self.scan.total_bytes += st.st_size
            if st.st_nlink > 1:
                if self.outputs is not None and not self.outputs.within(self.scan):
                    self.remove(fd, name, child)  # over a cap: not worth a copy
                    return
                handle = self.break_link(fd, name, handle, st.st_mode)
            self.own(handle, st.st_mode)
            if self.outputs is not None:
                self.outputs.record(self.scan, handle, child, st.st_size)
        finally:
            os.close(handle)

    def break_link(self, fd: int, name: str, handle: int, st_mode: int) -> int:
        """Replace ``name`` by a copy of its own; the descriptor of the copy."""
        temporary = f".pirus-copy-{secrets.token_hex(6)}"
        copy = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                       os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            while os.copy_file_range(handle, copy, BLOCK):
                pass
        except OSError:
            os.lseek(handle, 0, os.SEEK_SET)
            os.lseek(copy, 0, os.SEEK_SET)
            while chunk := os.read(handle, BLOCK):
                os.write(copy, chunk)
        os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.close(handle)
        return copy


@dataclass
class _OutputRules:
    run_id: int
    api_prefix: str  # the outputs folder's path relative to the Jupyter root
    limits: OutputLimits
    hashes: dict[str, str]  # already computed (pulled outputs)
    stop: Callable[[], bool]

    def within(self, scan: FolderScan) -> bool:
        return scan.count <= self.limits.max_count and scan.total_bytes <= self.limits.max_bytes

    def record(self, scan: FolderScan, fd: int, relative: str, size: int) -> None:
        # Counted always; hashed and listed only while within the caps and not stopped.
        if scan.stopped or not self.within(scan):
            return
        digest = self.hashes.get(relative) or self.sha256(fd)
        if digest is None:
            scan.stopped = True
            return
        scan.files.append({
            "name": relative, "path": f"{self.api_prefix}/{relative}", "size": size,
            "sha256": digest, "source": "run", "run_id": self.run_id, "created": now_iso(),
        })

    def sha256(self, fd: int) -> str | None:
        """The file's sha256, or None if ``stop()`` said so between two blocks."""
        digest = hashlib.sha256()
        os.lseek(fd, 0, os.SEEK_SET)
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while n := f.readinto(buf):
                if self.stop():
                    return None
                digest.update(view[:n])
        return digest.hexdigest()


def _walk_folder(path: Path, scan: FolderScan, label: str,
                 outputs: _OutputRules | None = None) -> None:
    try:
        fd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError:  # a symlink or a file in place of the folder
        path.unlink(missing_ok=True)
        return
    try:
        walker = _Walker(scan, label, outputs)
        walker.own(fd, stat.S_IFDIR)
        walker.walk(fd, "", 0)
    finally:
        os.close(fd)


def secure_run_folder(paths: RunPaths, run_id: int, root_dir: Path,
                      limits: OutputLimits | None = None, hashes: dict[str, str] | None = None,
                      stop: Callable[[], bool] = lambda: False) -> FolderScan:
    """Make what the pipeline left safe (see the module's text) and, with ``limits``, list
    the outputs. inputs/ is not walked: the container could not write it, and its files are
    hard links to the user's own."""
    scan = FolderScan()
    rules = None
    if limits is not None:
        rules = _OutputRules(run_id, to_api_path(root_dir, paths.outputs), limits,
                             hashes or {}, stop)
    _walk_folder(paths.outputs, scan, "outputs", rules)
    _walk_folder(paths.logs, scan, "logs")
    _walk_folder(paths.state, scan, paths.state.name)
    if scan.removed_count:
        note_removed(paths, scan)
    return scan


def note_removed(paths: RunPaths, scan: FolderScan) -> None:
    """Say in err.log which special files were removed (the run record has no room)."""
    more = scan.removed_count - len(scan.removed)
    text = (f"pirus: removed {scan.removed_count} special file(s) (symlinks, FIFOs, sockets, "
            f"devices) left by the pipeline: {', '.join(scan.removed)}"
            + (f" and {more} more" if more > 0 else "") + "\n")
    try:
        fd = os.open(paths.log("err"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW |
                     os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, text.encode())
    finally:
        os.close(fd)
