"""Placement overhead: from ``POST /runs`` to RUNNING (and to DONE) for a one-second pipeline,
median of N runs, on a real three-member LXD cluster started here (tests/lxd_cluster.py, data
pushed through the LXD file API) against the single-host path (the local LXD, bind mounts)
measured in the same process run. On the cluster: the run placed on the member Pirus talks to
(``endpoint``) and on another member (``remote``: every request is forwarded by the endpoint
member, files included). Prints ``name: value`` lines and the ratios to local."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Server, median, report
from pirus_jupyter.packaging import build_package_from_parts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lxd_cluster import LXDCluster


def build_sleeper() -> Path:
    package = Path(tempfile.mkdtemp(prefix="pirus-bench-pkg-")) / "sleeper.tar.gz"
    return build_package_from_parts(
        {"name": "sleeper", "version": "1.0", "run": "/pipeline/run.sh"},
        {"/pipeline/run.sh": b"#!/bin/sh\nsleep 1\necho done > \"$PIRUS_OUTPUTS_DIR/x\"\n"},
        package)


def cycle(server: Server, pipeline_id: int, n: int, target: str | None
          ) -> tuple[list[float], list[float]]:
    """Seconds from POST to RUNNING and to DONE, one run at a time."""
    to_running, to_done = [], []
    for i in range(n):
        body: dict[str, Any] = {"pipeline_id": pipeline_id, "name": f"placement {i}"}
        if target:
            body["target"] = target
        t0 = time.perf_counter()
        run = server.session.post(server.api("runs"), json=body).json()
        running = server.wait(f"runs/{run['id']}",
                              lambda b: b["status"] not in ("WAITING", "INITIALIZING"),
                              interval=0.01)
        to_running.append(time.perf_counter() - t0)
        done = server.wait(f"runs/{run['id']}", lambda b: b["status"] in ("DONE", "ERROR"),
                           interval=0.01)
        to_done.append(time.perf_counter() - t0)
        assert done["status"] == "DONE", done
        if target:
            assert running["location"] == target, running
        server.wait("", lambda b: b["active_runs"] == 0, interval=0.01)
    return to_running, to_done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5, help="runs per measurement (default 5)")
    args = parser.parse_args()
    package = build_sleeper()
    results: dict[str, tuple[float, float]] = {}
    with Server(max_parallel_runs=1, poll_interval=0.05, notify_enabled=False) as local:
        pipeline = local.install(package)
        running, done = cycle(local, pipeline["id"], args.n, None)
        results["local"] = (median(running), median(done))
    cluster = LXDCluster()
    try:
        t0 = time.perf_counter()
        cluster.start()
        report("placement.cluster_start_s", f"{time.perf_counter() - t0:.1f}")
        settings = {"lxd_endpoint": cluster.endpoint("m1"), "lxd_cert": str(cluster.cert),
                    "lxd_key": str(cluster.key), "lxd_verify": str(cluster.server_cert),
                    "max_parallel_runs": 1, "poll_interval": 0.05}
        with Server(**settings) as server:
            pipeline = server.install(package)
            for label, member in (("endpoint", "m1"), ("remote", "m3")):
                running, done = cycle(server, pipeline["id"], args.n, member)
                results[label] = (median(running), median(done))
    finally:
        cluster.destroy()
    for label, (running, done) in results.items():
        report(f"placement[{label}].post_to_running_median_s", f"{running:.3f}")
        report(f"placement[{label}].post_to_done_median_s", f"{done:.3f}")
    for label in ("endpoint", "remote"):
        report(f"placement[{label}].running_ratio_to_local",
               f"{results[label][0] / results['local'][0]:.2f}")
        report(f"placement[{label}].done_ratio_to_local",
               f"{results[label][1] / results['local'][1]:.2f}")


if __name__ == "__main__":
    main()
