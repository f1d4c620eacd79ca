"""A real three-member LXD cluster on this machine, for the cluster tests.

Three ``lxd`` daemons, each with its own ``LXD_DIR`` under a private base folder, listening on
their own loopback addresses (127.0.0.X1-X3:8443). The shared LXD daemon (/var/lib/lxd) is never
touched. Members can be SIGKILLed and restarted to test Pirus against a member's loss.

Tear-down never relies on LXD: a graceful shutdown of every member at once hangs on the lost
quorum, so daemons are SIGKILLed by their recorded PID, then this cluster's own ``[lxc monitor]``
and container processes (found by the base folder in their command line or cgroup), then its
cgroups, mounts and folder.

By hand: ``python tests/lxd_cluster.py up`` (prints the base folder and endpoint) and
``python tests/lxd_cluster.py down BASE``. A cluster whose owner is gone (a session killed
before its tear-down, or ``up`` once it returned) is reaped by the next cluster started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from lxd_teardown import reap_containers, unmount_under

PORT = 8443
LOCK_DIR = Path(tempfile.gettempdir())
# cluster.offline_threshold: the smallest LXD 5.0 accepts, so a lost member is OFFLINE sooner.
OFFLINE_THRESHOLD = 11


def _listening(address: str) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, PORT)) == 0


class LXDCluster:
    """Start with ``start()``, always end with ``destroy()`` (safe after any failure)."""

    def __init__(self, base: Path | None = None, size: int = 3) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="pirus-lxd-cluster-"))
        self.base.chmod(0o711)  # containers' root (a high host uid) must traverse it
        self.size = size
        self.names = [f"m{i + 1}" for i in range(size)]
        self.addresses: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self._lock_file: Any = None
        self.conf = self.base / "lxc-conf"  # LXD_CONF of the lxc client
        self.cert = self.base / "client.crt"
        self.key = self.base / "client.key"

    # -- paths and commands -------------------------------------------------------------
    def lxd_dir(self, name: str) -> Path:
        return self.base / name

    @property
    def server_cert(self) -> Path:
        """The cluster's certificate (every member serves it): what a client can pin."""
        return self.lxd_dir(self.names[0]) / "cluster.crt"

    def endpoint(self, name: str) -> str:
        return f"https://{self.addresses[name]}:{PORT}"

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ, LXD_DIR=str(self.lxd_dir(name)), LXD_CONF=str(self.conf))
        # The daemons' start-up fetch of instance types must fail fast on loopback instead of
        # reaching outside; members talk to each other directly.
        env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
                   NO_PROXY="127.0.0.0/8,localhost", no_proxy="127.0.0.0/8,localhost")
        return env

    def lxc(self, name: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120, program: str = "lxc") -> str:
        """Run ``lxc`` (or ``lxd``) against member ``name``'s unix socket."""
        done = subprocess.run([program, *args], env=self.env(name), input=input, text=True,
                              capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} on {name}: {done.stderr.strip()}")
        return done.stdout

    def preseed(self, name: str, document: dict[str, Any]) -> None:
        self.lxc(name, "init", "--preseed", input=yaml.safe_dump(document), program="lxd")

    # -- life ---------------------------------------------------------------------------
    def _pick_addresses(self) -> None:
        """The first free triple 127.0.0.11-13, .21-23, ...: another session's cluster (or
        anything else listening there) is left alone, and a lock file keeps two sessions
        starting at once from taking the same triple."""
        for tens in range(1, 25):
            addresses = [f"127.0.0.{tens * 10 + i + 1}" for i in range(self.size)]
            lock = open(LOCK_DIR / f"pirus-lxd-cluster-{addresses[0]}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if any(_listening(a) for a in addresses):
                lock.close()
                continue
            self._lock_file = lock
            self.addresses = dict(zip(self.names, addresses, strict=True))
            return
        raise RuntimeError("no free loopback addresses for the LXD cluster")

    def start(self) -> LXDCluster:
        reap_stale(exclude=self.base)
        self._pick_addresses()
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.base / "state.json").write_text(json.dumps({"addresses": self.addresses}))
        first = self.names[0]
        self.start_member(first)
        self.preseed(first, {
            "config": {"core.https_address": f"{self.addresses[first]}:{PORT}"},
            "storage_pools": [{"name": "default", "driver": "dir"}],
            "profiles": [{"name": "default", "devices": {
                "root": {"path": "/", "pool": "default", "type": "disk"}}}],
            "cluster": {"server_name": first, "enabled": True},
        })
        self.lxc(first, "config", "set", "cluster.offline_threshold", str(OFFLINE_THRESHOLD))
        for name in self.names[1:]:
            token = self.lxc(first, "cluster", "add", name, "--quiet").strip()
            self.start_member(name)
            self.preseed(name, {"cluster": {
                "enabled": True, "server_name": name,
                "server_address": f"{self.addresses[name]}:{PORT}", "cluster_token": token,
                "member_config": [{"entity": "storage-pool", "name": "default",
                                   "key": "source", "value": ""}],
            }})
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:secp384r1", "-nodes", "-keyout", str(self.key), "-out",
             str(self.cert), "-days", "30", "-subj", "/CN=pirus-tests"],
            check=True, capture_output=True)
        self.lxc(first, "config", "trust", "add", str(self.cert))
        return self

    def start_member(self, name: str) -> None:
        """Start (or restart) member ``name``'s daemon and wait until it is ready."""
        folder = self.lxd_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o711)
        log = folder.parent / f"{name}.log"
        proc = subprocess.Popen(
            ["/usr/bin/lxd", "--group", "root", f"--logfile={log}"], env=self.env(name),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.pids[name] = proc.pid
        self._save_pids()
        subprocess.run(["lxd", "waitready", "--timeout=120"], env=self.env(name), check=True,
                       capture_output=True, timeout=130)

    def _save_pids(self) -> None:
        (self.base / "pids.json").write_text(json.dumps(self.pids))

    def kill(self, name: str) -> None:
        """SIGKILL member ``name``'s daemon, as if its machine had been lost. Its containers
        keep running (their monitors survive) but the cluster cannot reach them."""
        pid = self.pids.pop(name, None)
        self._save_pids()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def members(self, via: str | None = None) -> list[dict[str, Any]]:
        via = via or next(n for n in self.names if n in self.pids)
        return json.loads(self.lxc(via, "query", "/1.0/cluster/members?recursion=1"))

    def wait_status(self, name: str, status: str, via: str | None = None,
                    timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                seen = {m["server_name"]: m["status"] for m in self.members(via)}.get(name)
                if seen == status:
                    return
            time.sleep(0.5)
        raise AssertionError(f"member {name} is {seen}, not {status}, after {timeout:g} s")

    def leader(self) -> str:
        for member in self.members():
            if "database-leader" in (member.get("roles") or []):
                return str(member["server_name"])
        raise AssertionError("the cluster has no database leader")

    def destroy(self) -> None:
        destroy(self.base)
        if self._lock_file:
            self._lock_file.close()


def reap_stale(exclude: Path | None = None) -> None:
    """Destroy clusters left by sessions that died without their tear-down (SIGKILLed, say):
    a cluster whose address lock nobody holds any more has no owner."""
    for base in Path(tempfile.gettempdir()).glob("pirus-lxd-cluster-*"):
        if base == exclude:
            continue
        try:
            first = sorted(json.loads((base / "state.json").read_text())["addresses"].values())[0]
        except (OSError, ValueError, KeyError, IndexError):
            continue  # being set up by a live session (or not a cluster folder)
        with open(LOCK_DIR / f"pirus-lxd-cluster-{first}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its session is alive
            destroy(base)


def destroy(base: Path) -> None:
    """Remove the cluster under ``base`` whatever state it is in."""
    base = Path(base)
    with contextlib.suppress(OSError, ValueError):
        for pid in json.loads((base / "pids.json").read_text()).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), 0)  # no zombie when this process started it
    # Containers of this cluster: their names are the folders of each member's containers.
    marker = f" {base}/"
    reap_containers((p.name for p in base.glob("m*/containers/*")),
                    lambda cmdline: cmdline.startswith("[lxc monitor]") and marker in cmdline)
    unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["up"]:
        t0 = time.monotonic()
        cluster = LXDCluster().start()
        print(json.dumps({"base": str(cluster.base), "endpoint": cluster.endpoint("m1"),
                          "cert": str(cluster.cert), "key": str(cluster.key),
                          "server_cert": str(cluster.server_cert),
                          "seconds": round(time.monotonic() - t0, 1)}))
    elif sys.argv[1:2] == ["down"]:
        destroy(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
