"""Run every benchmark in one go: ``python -m benchmarks``. Each prints ``name: value`` lines."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["benchmarks.upload", "benchmarks.run_overhead"]


def main() -> int:
    failed = 0
    for module in BENCHMARKS:
        print(f"# {module}", flush=True)
        failed |= subprocess.run([sys.executable, "-m", module]).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
