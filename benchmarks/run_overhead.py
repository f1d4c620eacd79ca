"""Run overhead: a no-op pipeline (busybox image, `true`) from POST /runs to DONE through the
API (latency: the container's deletion after DONE is not counted), median of N runs, against a
raw pylxd cycle (create, start, exec, stop, delete) of the same image measured in the same
process run. Prints the ratio and where Pirus spends its time (median
seconds per status). Two pipelines on a server with the default settings: ``default``, the
no-op package as built (its manifest says ``notify: false``: nothing in it names
$PIRUS_NOTIFY_URL, so no proxy device), and ``notify-pipeline``, the same command in a package
that asks for the notify URL (``notify: true``, as original Pirus packages are taken to)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pylxd

from benchmarks.common import LXD_PREFIX, ROOT, Server, median, report
from pirus_jupyter.packaging import build_package, build_package_from_parts


def build_noop() -> Path:
    package = Path(tempfile.mkdtemp(prefix="pirus-bench-pkg-")) / "noop.tar.gz"
    build_package(ROOT / "examples" / "pipelines" / "noop", package)
    return package


def build_noop_notify(folder: Path) -> Path:
    """The no-op command in a package whose manifest asks for $PIRUS_NOTIFY_URL."""
    return build_package_from_parts(
        {"name": "noop-notify", "version": "1.0.0", "run": "true", "notify": True,
         "description": "Does nothing, with the notify URL offered.", "license": "CC0-1.0",
         "developers": ["Pirus developers"]}, {}, folder / "noop-notify.tar.gz")


def containers_gone(client: pylxd.Client, timeout: float = 60) -> None:
    """Wait until this benchmark's run containers are deleted (after DONE, in the background)."""
    deadline = time.monotonic() + timeout
    while any(i.name.startswith(f"{LXD_PREFIX}-run-") for i in client.instances.all()):
        if time.monotonic() > deadline:
            raise TimeoutError("run containers still there")
        time.sleep(0.02)


def raw_pylxd_cycle(client: pylxd.Client, fingerprint: str, n: int
                    ) -> tuple[list[float], list[float]]:
    """Seconds to the end of the exec (what a user waits for) and to the end of the delete."""
    to_exec, total = [], []
    for i in range(n):
        name = f"{LXD_PREFIX}-raw-{i}-{time.monotonic_ns() % 100000}"
        t0 = time.perf_counter()
        instance = client.instances.create(
            {"name": name, "source": {"type": "image", "fingerprint": fingerprint}}, wait=True)
        try:
            instance.start(wait=True)
            instance.execute(["/bin/sh", "-c", "true"])
            to_exec.append(time.perf_counter() - t0)
            instance.stop(force=True, wait=True)
        finally:
            instance.delete(wait=True)
        total.append(time.perf_counter() - t0)
    return to_exec, total


def pirus_cycle(server: Server, pipeline_id: int, n: int) -> tuple[list[float], dict[str, float]]:
    times, phases = [], {}
    for i in range(n):
        t0 = time.perf_counter()
        run = server.session.post(server.api("runs"), json={"pipeline_id": pipeline_id,
                                                            "name": f"noop {i}"}).json()
        run = server.wait(f"runs/{run['id']}", lambda b: b["status"] in ("DONE", "ERROR"),
                          interval=0.01)
        times.append(time.perf_counter() - t0)
        assert run["status"] == "DONE", run
        # The container is deleted after DONE is recorded: let it go before the next run so
        # runs do not overlap (this benchmark measures latency, not throughput).
        server.wait("", lambda b: b["active_runs"] == 0, interval=0.01)
        containers_gone(LXD)
        for status, seconds in run["metrics"]["phases"].items():
            phases.setdefault(status, []).append(seconds)
    return times, {k: median(v) for k, v in phases.items()}


LXD = pylxd.Client()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10, help="runs per measurement (default 10)")
    args = parser.parse_args()
    package = build_noop()
    build_noop_notify(package.parent)
    try:
        measure(package, args.n)
    finally:
        shutil.rmtree(package.parent, ignore_errors=True)


def measure(package: Path, n: int) -> None:
    packages = {"default": package, "notify-pipeline": package.parent / "noop-notify.tar.gz"}
    with Server(max_parallel_runs=1, poll_interval=0.05) as server:
        for label, path in packages.items():
            pipeline = server.install(path)
            assert pipeline["status"] == "READY", pipeline
            # The image by fingerprint: its aliases belong to the servers that installed it.
            fingerprint = pipeline["fingerprint"]
            pirus_cycle(server, pipeline["id"], 1)  # warm-up: first start shifts the rootfs
            raw_pylxd_cycle(LXD, fingerprint, 1)
            raw_exec, raw_total = raw_pylxd_cycle(LXD, fingerprint, n)
            pirus, phases = pirus_cycle(server, pipeline["id"], n)
            server.session.delete(server.api(f"pipelines/{pipeline['id']}"))
            report(f"run_overhead[{label}].pirus_median_s", f"{median(pirus):.3f}")
            report(f"run_overhead[{label}].raw_pylxd_to_exec_median_s",
                   f"{median(raw_exec):.3f}")
            report(f"run_overhead[{label}].raw_pylxd_full_cycle_median_s",
                   f"{median(raw_total):.3f}")
            report(f"run_overhead[{label}].ratio_to_raw_exec",
                   f"{median(pirus) / median(raw_exec):.2f}")
            report(f"run_overhead[{label}].ratio_to_raw_full_cycle",
                   f"{median(pirus) / median(raw_total):.2f}")
            report(f"run_overhead[{label}].phases_median_s",
                   " ".join(f"{k}={v:.3f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
