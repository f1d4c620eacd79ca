"""Run the benchmarks in one go: ``python -m benchmarks [--quick] [ITEM ...]``.

Each item runs in its own process and prints ``name: value`` lines as it goes (scripts read
those); at the end comes a table of every result, for people, and the total wall time. Items:
upload, run_overhead, queue, api_scale, scale (100,000 runs and files), load (when
``benchmarks/load.py`` exists) and placement (a 3-member LXD cluster started for it).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Item -> extra arguments under --quick (a smoke run of a few minutes, figures not comparable).
ITEMS: dict[str, list[str]] = {
    "upload": ["--size-mib", "256", "--rounds", "1"],
    "run_overhead": ["-n", "3"],
    "queue": ["--runs", "12", "--single", "3", "--sleep-runs", "6"],
    "api_scale": ["--runs", "2000", "--requests", "100", "--seconds", "3"],
    "scale": ["--runs", "10000", "--files", "10000", "--requests", "50"],
    "load": ["--seconds", "15"],  # optional: runs only when benchmarks/load.py exists
    "placement": ["-n", "2"],  # starts its own 3-member LXD cluster on loopback
}
TIMEOUT = 600.0  # seconds per item: a hung item must not hold up the others
LINE = re.compile(r"^([A-Za-z0-9_.\[\]=,%-]+): (.+)$")


def available() -> list[str]:
    return [item for item in ITEMS if (HERE / f"{item}.py").exists()]


def run_item(item: str, quick: bool, timeout: float
             ) -> tuple[int, float, list[tuple[str, str]]]:
    """Run one item, echoing its output live; its exit code, seconds and results. An item
    still running after ``timeout`` seconds is ended with its servers (its process group)."""
    args = [sys.executable, "-m", f"benchmarks.{item}", *(ITEMS[item] if quick else [])]
    results = []
    t0 = time.perf_counter()
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, bufsize=1,
                          start_new_session=True) as proc:
        def overdue() -> None:
            print(f"# benchmarks.{item}: still running after {timeout:.0f} s, ended", flush=True)
            os.killpg(proc.pid, signal.SIGTERM)

        timer = threading.Timer(timeout, overdue)
        timer.start()
        try:
            assert proc.stdout
            for line in proc.stdout:
                print(line, end="", flush=True)
                match = LINE.match(line.rstrip("\n"))
                if match:
                    results.append((match[1], match[2]))
        finally:
            timer.cancel()
    return proc.returncode, time.perf_counter() - t0, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*", metavar="ITEM",
                        help=f"items to run (default: all of {', '.join(available())})")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: checks that everything runs, in a few minutes")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help=f"seconds allowed per item (default {TIMEOUT:.0f})")
    args = parser.parse_args()
    unknown = [i for i in args.items if i not in available()]
    if unknown:
        parser.error(f"unknown item(s) {', '.join(unknown)}; choose from {', '.join(available())}")
    items = args.items or available()

    t0 = time.perf_counter()
    failed, table = [], []
    for item in items:
        print(f"# benchmarks.{item}{' --quick' if args.quick else ''}", flush=True)
        code, seconds, results = run_item(item, args.quick, args.timeout)
        print(f"benchmarks.{item}.wall_s: {seconds:.0f}", flush=True)
        if code:
            failed.append(item)
            print(f"# benchmarks.{item} FAILED (exit code {code})", flush=True)
        table.append((item, seconds, results))
    total = time.perf_counter() - t0

    print("\n| item | result | value |\n|---|---|---|")
    for item, seconds, results in table:
        for name, value in results:
            print(f"| {item} | `{name}` | {value} |")
        print(f"| {item} | wall time | {seconds:.0f} s |")
    print(f"\nbenchmarks.total_wall_s: {total:.0f}")
    if failed:
        print(f"benchmarks.failed: {' '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
