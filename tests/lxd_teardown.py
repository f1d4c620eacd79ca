"""Tear-down of LXD daemons the tests start themselves (tests/private_lxd.py,
tests/lxd_cluster.py), without relying on LXD: once their daemons are SIGKILLed, kill the
container processes they left, remove those emptied cgroups and lazily unmount everything
under their folder. Nothing of another daemon is touched: processes are matched by the
daemon's own folder in their command line, cgroups by the names of its own containers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def container_cgroups(containers: Iterable[str]) -> list[Path]:
    """The ``lxc.payload.<name>`` and ``lxc.monitor.<name>`` cgroups of every hierarchy
    (cgroup v1 controllers, or the unified v2 tree)."""
    hierarchies = [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] if CGROUP_ROOT.exists() else []
    return [path for name in containers for hierarchy in hierarchies
            for kind in ("payload", "monitor")
            if (path := hierarchy / f"lxc.{kind}.{name}").is_dir()]


def _pids_matching(match: Callable[[str], bool]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if match((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")):
                found.add(int(entry.name))
    return found


def reap_containers(containers: Iterable[str], cmdline: Callable[[str], bool],
                    rounds: int = 3) -> None:
    """SIGKILL the processes whose command line ``cmdline`` accepts (the ``[lxc monitor]``
    processes of a daemon) and every task of the containers' cgroups, then remove those
    cgroups, deepest first (a cgroup folder goes only once its children are gone)."""
    containers = sorted(set(containers))
    for _ in range(rounds):
        pids = _pids_matching(cmdline)
        for cgroup in container_cgroups(containers):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        pids.discard(os.getpid())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    for cgroup in container_cgroups(containers):
        for sub in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def unmount_under(base: Path) -> None:
    """Lazily unmount ``base`` and everything under it, deepest first (a busy mount cannot
    block the tear-down)."""
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4].replace("\\040", " ") for line in f}
    for point in sorted((p for p in points if p == str(base) or p.startswith(f"{base}/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
