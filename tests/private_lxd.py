"""A private LXD daemon for tests that stop, kill and restart LXD.

The shared daemon (``/var/lib/lxd``) serves every other test session on this machine and must
never be stopped. A :class:`PrivateLXD` runs ``/usr/bin/lxd`` on its own ``LXD_DIR`` (a fresh
folder under ``/tmp``), initialised by preseed with a ``dir`` pool and no network. Clients reach
it by having ``LXD_DIR`` in their environment (``lxc`` and pylxd both honour it).

Tear-down always works, even after the daemon was killed mid-operation: SIGKILL the daemon by
PID, kill the container processes it left (the ``[lxc monitor]`` processes naming this
``LXD_DIR`` and every task of the containers' ``lxc.payload.*`` cgroups), remove those emptied
cgroups, lazily unmount everything under the folder and delete it. Nothing of another daemon is
touched: processes and cgroups are matched by this folder or by the names of this daemon's own
containers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

LXD_BINARY = "/usr/bin/lxd"
CGROUP_ROOT = Path("/sys/fs/cgroup")

PRESEED = """\
config: {}
networks: []
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""


class PrivateLXD:
    """One LXD daemon on its own ``LXD_DIR``; :meth:`start` may be called again after
    :meth:`kill` or :meth:`terminate` (same folder, same containers)."""

    def __init__(self, base: Path | None = None) -> None:
        # Under /tmp, not pytest's 0700 tmp folder: the daemon's folders must be traversable
        # by the containers' unprivileged root (LXD itself sets LXD_DIR to 0711).
        self.base = Path(tempfile.mkdtemp(prefix="pirus-private-lxd-", dir=base))
        os.chmod(self.base, 0o711)
        self.lxd_dir = self.base / "lxd"
        self.log_path = self.base / "lxd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.containers: set[str] = set()  # every container name seen, for the tear-down

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client (``lxc``, a Pirus server) of this daemon."""
        return {**os.environ, "LXD_DIR": str(self.lxd_dir)}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def lxc(self, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["lxc", *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    # -- life cycle ---------------------------------------------------------------------
    def start(self, timeout: float = 90) -> PrivateLXD:
        first = not self.lxd_dir.exists()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the daemon's lifetime
        # Its own session (setsid), so signals meant for the test runner never reach it; the
        # PID is the daemon's own, for kill().
        self.proc = subprocess.Popen(
            [LXD_BINARY, "--group", "root", f"--logfile={self.log_path}"], env=self.env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        ready = subprocess.run(["lxd", "waitready", f"--timeout={int(timeout)}"], env=self.env,
                               capture_output=True, text=True)
        if ready.returncode != 0:
            raise RuntimeError(f"private LXD did not start: {ready.stderr}\n{self.log_tail()}")
        if first:
            subprocess.run(["lxd", "init", "--preseed"], input=PRESEED, env=self.env,
                           capture_output=True, text=True, check=True, timeout=120)
        return self

    def _signal(self, sig: signal.Signals, wait: float) -> None:
        self._remember_containers()
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: the daemon dies at once; containers (own monitor processes) live on."""
        self._signal(signal.SIGKILL, 10)

    def terminate(self) -> None:
        """SIGTERM: LXD's own shutdown (containers are left running)."""
        self._signal(signal.SIGTERM, 60)

    def _remember_containers(self) -> None:
        folder = self.lxd_dir / "containers"
        with contextlib.suppress(OSError):
            self.containers.update(p.name for p in folder.iterdir())

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    # -- tear-down ----------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop everything this daemon started and delete its folder; never raises."""
        self._remember_containers()
        if self.pid is not None:
            # A polite delete first (quick when LXD is healthy); the hard way follows anyway.
            for name in sorted(self.containers):
                with contextlib.suppress(Exception):
                    self.lxc("delete", "--force", name, check=False, timeout=30)
        self.kill()
        self._kill_leftovers()
        self._unmount_all()
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        marker = str(self.lxd_dir)
        for _ in range(3):
            pids = set(self._pids_naming(marker))
            for name in self.containers:
                for cgroup in self._cgroups(name):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
            pids.discard(os.getpid())
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for name in self.containers:
            # Deepest first: a cgroup folder can only be removed once its children are gone.
            for cgroup in sorted(self._cgroups(name), key=lambda p: len(p.parts), reverse=True):
                for sub in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    cgroup.rmdir()

    @staticmethod
    def _pids_naming(marker: str) -> list[int]:
        """PIDs whose command line mentions ``marker`` (``[lxc monitor] <LXD_DIR>/...``)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace"):
                    found.append(int(entry.name))
        return found

    @staticmethod
    def _cgroups(container: str) -> list[Path]:
        """The ``lxc.payload.<name>`` and ``lxc.monitor.<name>`` cgroups of every hierarchy
        (cgroup v1 controllers, or the unified v2 tree)."""
        found = []
        for hierarchy in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] if CGROUP_ROOT.exists() else []:
            for kind in ("payload", "monitor"):
                path = hierarchy / f"lxc.{kind}.{container}"
                if path.is_dir():
                    found.append(path)
        return found

    def _unmount_all(self) -> None:
        base = str(self.base)
        with open("/proc/self/mountinfo") as f:
            targets = [line.split()[4] for line in f]
        # Deepest first; lazy, so a busy mount cannot block the tear-down.
        for target in sorted({t for t in targets if t == base or t.startswith(base + "/")},
                             key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
