"""Queue throughput: 50 no-op runs (busybox image, `true`) posted at once to a server with
max_parallel_runs=4, and 24 one-second runs (`sleep 1`) through 2 slots; wall time from the
first POST to the last run ended, against the ideal ceil(N/S) x the median of one run alone
(POST → DONE) measured on the same server in the same run. A ratio of 1 means the queue adds
nothing to running the runs S at a time; S containers sharing the machine's cores count
against it (a run's slot is free at DONE: its container is deleted in the background).
``slot_handover_median_s`` is the time from a run's DONE to the start of the run that takes
its slot. ``machine_busy_pct`` is the share of all cores busy (/proc/stat) while the queue
ran: near 100, the queue waits for the machine, not the other way round."""

from __future__ import annotations

import argparse
import math
import shutil
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import Server, cpu_count, median, report
from benchmarks.run_overhead import build_noop, pirus_cycle
from pirus_jupyter.packaging import build_package_from_parts

FINAL = "DONE,ERROR,CANCELED"


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def build_sleep1(folder: Path) -> Path:
    return build_package_from_parts(
        {"name": "sleep1", "version": "1.0.0", "run": "sleep 1",
         "description": "Sleeps one second.", "license": "CC0-1.0",
         "developers": ["Pirus developers"]}, {}, folder / "sleep1.tar.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--single", type=int, default=5, help="runs for the single-run median")
    parser.add_argument("--sleep-runs", type=int, default=24,
                        help="one-second runs through 2 slots (0: skip)")
    args = parser.parse_args()
    package = build_noop()
    try:
        with Server(max_parallel_runs=args.parallel) as server:
            measure(server, package, args.runs, args.parallel, args.single)
        if args.sleep_runs:
            with Server(max_parallel_runs=2) as server:
                measure(server, build_sleep1(package.parent), args.sleep_runs, 2, args.single,
                        label="sleep1-")
    finally:
        shutil.rmtree(package.parent, ignore_errors=True)


def measure(server: Server, package, runs: int, parallel: int,  # type: ignore[no-untyped-def]
            single: int, label: str = "") -> None:
    pipeline = server.install(package)
    assert pipeline["status"] == "READY", pipeline
    pid = pipeline["id"]
    pirus_cycle(server, pid, 1)  # warm-up: the first start of an image costs more
    one, _ = pirus_cycle(server, pid, single)
    single_s = median(one)

    def ended() -> int:
        return int(server.session.get(server.api("runs"), params={
            "status": FINAL, "pipeline_id": pid, "limit": 1}).json()["total"])

    before = ended()
    first_id = None
    busy0, total0 = cpu_times()
    t0 = time.perf_counter()
    for i in range(runs):
        created = server.session.post(server.api("runs"), json={
            "pipeline_id": pid, "name": f"queued {i}"}).json()
        first_id = first_id or created["id"]
    max_active = 0
    deadline = time.monotonic() + 60 + runs * single_s * 4
    while True:
        done = ended() - before
        if done >= runs:
            break
        max_active = max(max_active, server.session.get(server.api("")).json()["active_runs"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} runs ended")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    busy1, total1 = cpu_times()

    items = server.session.get(server.api("runs"), params={
        "pipeline_id": pid, "limit": runs}).json()["items"]
    queued = [r for r in items if r["id"] >= first_id]
    failed = [r for r in queued if r["status"] != "DONE"]
    assert not failed, failed[0]
    phases: dict[str, list[float]] = {}
    for run in queued:
        for status, seconds in run["metrics"]["phases"].items():
            phases.setdefault(status, []).append(seconds)
    # The j-th run to start took the slot freed by the (j - parallel)-th run to end.
    starts = sorted(datetime.fromisoformat(r["start"]).timestamp() for r in queued)
    ends = sorted(datetime.fromisoformat(r["end"]).timestamp() for r in queued)
    handover = [starts[j] - ends[j - parallel] for j in range(parallel, len(starts))]
    ideal = math.ceil(runs / parallel) * single_s
    server.wait("", lambda b: b["active_runs"] == 0, interval=0.05)
    server.session.delete(server.api(f"pipelines/{pid}"))

    report("queue.cpu_count", str(cpu_count()))
    report(f"queue.{label}single_run_median_s", f"{single_s:.3f}")
    report(f"queue[{label}{runs}x{parallel}].wall_s", f"{wall:.1f}")
    report(f"queue[{label}{runs}x{parallel}].ideal_s", f"{ideal:.1f}")
    report(f"queue[{label}{runs}x{parallel}].ratio_to_ideal", f"{wall / ideal:.2f}")
    report(f"queue[{label}{runs}x{parallel}].runs_per_min", f"{runs / wall * 60:.0f}")
    report(f"queue[{label}{runs}x{parallel}].slot_handover_median_s", f"{median(handover):.3f}")
    report(f"queue[{label}{runs}x{parallel}].max_active_seen", str(max_active))
    report(f"queue[{label}{runs}x{parallel}].machine_busy_pct",
           f"{100 * (busy1 - busy0) / max(1, total1 - total0):.0f}")
    report(f"queue[{label}{runs}x{parallel}].phases_median_s",
           " ".join(f"{k}={median(v):.3f}" for k, v in phases.items() if k != "WAITING"))


if __name__ == "__main__":
    main()
