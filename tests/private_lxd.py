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
from collections.abc import Iterator
from pathlib import Path

from lxd_teardown import reap_containers, unmount_under

LXD_BINARY = "/usr/bin/lxd"

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
        marker = str(self.lxd_dir)
        reap_containers(self.containers, lambda cmdline: marker in cmdline)
        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_daemon() -> Iterator[PrivateLXD]:
    """A started private daemon, destroyed on leaving (a module-scoped fixture's body)."""
    daemon = PrivateLXD()
    try:
        yield daemon.start()
    finally:
        daemon.destroy()
