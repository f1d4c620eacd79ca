"""100,000 runs and 100,000 files: a server whose store holds them, timed through real HTTP.

- seed: the rows written through the store module into a stopped server's database (the same
  migrations as the server's): runs (a few RUNNING, their heartbeats fresh, so reconciliation
  takes them up again), their output file records, uploaded input files and the finished
  uploads that made them; and a folder per run in the runs folder;
- start: process start → first answered request, and → reconciliation done (the running
  runs tracked again: ``active_runs`` in ``GET /pirus/api/v1``), against the same server on an
  empty store in the same run;
- list pages, p50/p99 over sequential keep-alive requests: ``GET /runs`` as the panel asks
  (newest 200), the CLI's default page, a status filter, status + pipeline, a deep offset and
  the next page by cursor; ``GET /files`` as the panel asks (the uploaded files), a run's
  outputs, a deep offset, the next page by cursor; ``GET /uploads``;
- server RSS after start-up and its peak while the pages are served.

Containers are ``pirus_jupyter.backend.fake.IdleBackend`` (always Running, doing nothing): the
figures are Pirus' own.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from benchmarks.api_scale import BACKEND, PIPELINES, iso, seeded_pipelines, timed_gets
from benchmarks.common import MiB, RssSampler, Server, percentile, report
from pirus_jupyter.store import Store

UPLOAD_SHARE = 0.2  # of the files: uploaded inputs; the rest are run outputs


def _insert(db: Any, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    sql = (f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})")
    db.conn.executemany(sql, [[r[c] for c in columns] for r in rows])


def seed(tmp: Path, runs: int, files: int, active: int, folders: bool = True
         ) -> dict[str, int]:
    """Write the rows into ``tmp/data/pirus.db`` and (``folders``) an empty run folder per
    run, as the runs folder of a real server holds (start-up lists it); what was written."""
    rng = random.Random(18)
    data, root = tmp / "data", tmp / "root"
    runs_dir = root / "pirus-runs"
    runs_dir.mkdir(parents=True)
    store = Store(data / "pirus.db")  # applies the migrations, as the server would
    base = datetime.now(timezone.utc) - timedelta(minutes=runs)
    pipelines = seeded_pipelines(data, base)
    uploads_wanted = int(files * UPLOAD_SHARE)
    outputs_wanted = files - uploads_wanted
    file_rows: list[dict[str, Any]] = []
    upload_rows: list[dict[str, Any]] = []
    # Uploaded inputs first (ids 1..), as a store that began with uploads would have them.
    for i in range(1, uploads_wanted + 1):
        created = iso(base + timedelta(seconds=i))
        sha, size = secrets.token_hex(32), rng.randint(10**6, 10**9)
        file_rows.append({"id": i, "name": f"reads-{i}.fastq.gz",
                          "path": f"pirus-uploads/reads-{i}.fastq.gz", "size": size,
                          "sha256": sha, "source": "upload", "run_id": None,
                          "created": created})
        upload_rows.append({
            "id": secrets.token_hex(16), "kind": "input", "filename": f"reads-{i}.fastq.gz",
            "metadata": json.dumps({"filename": base64.b64encode(
                f"reads-{i}.fastq.gz".encode()).decode()}), "length": size,
            "offset": size, "status": "complete", "created": created, "expires": None,
            "concat": None, "parts": None, "sha256_state": sha, "file_id": i,
            "pipeline_id": None, "error": None, "deduplicated": 0})
    run_rows = []
    for run_id in range(1, runs + 1):
        created = base + timedelta(minutes=run_id)
        is_active = run_id > runs - active
        status = "RUNNING" if is_active else rng.choices(
            ["DONE", "ERROR", "CANCELED"], [80, 12, 8])[0]
        pipeline_id = rng.randint(1, PIPELINES)
        root_path = runs_dir / f"{run_id}-sample-{run_id}"
        moves = ["WAITING", "INITIALIZING", "RUNNING"] + (
            [] if is_active else ["FINISHING", status] if status == "DONE" else [status])
        timings = [[m, iso(created + timedelta(seconds=3 * i))] for i, m in enumerate(moves)]
        outputs = []
        if status == "DONE" and len(file_rows) < uploads_wanted + outputs_wanted:
            file_id = len(file_rows) + 1
            record = {"id": file_id, "name": "counts.tsv",
                      "path": f"pirus-runs/{root_path.name}/outputs/counts.tsv",
                      "size": rng.randint(1000, 10**7), "sha256": secrets.token_hex(32),
                      "source": "run", "run_id": run_id, "created": timings[-1][1]}
            file_rows.append(record)
            outputs.append({k: record[k] for k in ("path", "name", "size", "sha256")}
                           | {"file_id": file_id})
        upload = 1 + rng.randrange(max(1, uploads_wanted))
        run_rows.append({
            "id": run_id, "pipeline_id": pipeline_id, "pipeline_name": f"pipeline-{pipeline_id}",
            "pipeline_version": "1.0.0",
            "pipeline_fingerprint": pipelines[pipeline_id - 1]["fingerprint"],
            "name": f"sample {run_id}",
            "config": json.dumps({"threshold": 0.5, "reference": "hg38", "paired": True}),
            "inputs": json.dumps([{"name": f"reads-{upload}.fastq.gz", "file_id": upload,
                                   "path": f"pirus-uploads/reads-{upload}.fastq.gz",
                                   "size": 10**8, "sha256": secrets.token_hex(32)}]),
            "outputs": json.dumps(outputs), "start": timings[1][1],
            "end": None if is_active else timings[-1][1], "status": status,
            "progress": json.dumps({"value": 40 if is_active else 100, "min": 0, "max": 100,
                                    "label": "aligning"}),
            "exit_code": None if is_active else {"DONE": 0, "ERROR": 1}.get(status),
            "error": "the pipeline exited with code 1" if status == "ERROR" else None,
            "created": iso(created),
            "metrics": None if is_active else json.dumps({
                "wall_seconds": 9.0, "cpu_seconds": 7.5, "memory_peak_bytes": 300 * MiB,
                "phases": {"WAITING": 3.0, "INITIALIZING": 3.0, "RUNNING": 3.0}}),
            "timings": json.dumps(timings),
            "lxd_container": f"bench-run-{run_id}" if is_active else None,
            "root_path": str(root_path), "notify_token": secrets.token_urlsafe(24),
        })
        if folders and not is_active:
            root_path.mkdir()
        if is_active:
            state = root_path / ".pirus"
            state.mkdir(parents=True)
            beat = state / "heartbeat"
            beat.touch()
            # A heartbeat from the future: the monitor must not end these runs as lost.
            os.utime(beat, (time.time() + 86400, time.time() + 86400))

    def write(db: Any) -> None:
        with db.conn:
            _insert(db, "pipelines", pipelines)
            _insert(db, "runs", run_rows)
            _insert(db, "files", file_rows)
            _insert(db, "uploads", upload_rows)

    store.run_sync(write)
    store.close()
    return {"runs": len(run_rows), "files": len(file_rows),
            "uploaded_files": uploads_wanted, "uploads": len(upload_rows)}


def start(server: Server, active: int) -> tuple[float, float]:
    """Start ``server``; seconds from process start to the first answered request and to
    reconciliation done (its ``active`` running runs tracked again)."""
    server.poll = 0.01  # start-up is the figure: look often
    t0 = time.monotonic()
    server.__enter__()
    first = time.monotonic() - t0
    while server.session.get(server.api(""), timeout=10).json()["active_runs"] != active:
        time.sleep(0.01)
    return first, time.monotonic() - t0


def pages(runs: int, files: int, n: int, rng: random.Random) -> dict[str, list[str]]:
    deep_run = runs * 9 // 10  # 90,000 of 100,000
    deep_file = files * 9 // 10
    return {
        "runs.panel_200": ["runs?limit=200"] * n,
        "runs.cli_50": ["runs?limit=50"] * n,
        "runs.status_done": ["runs?limit=50&status=DONE"] * n,
        "runs.status_pipeline": [f"runs?limit=50&status=ERROR,CANCELED&pipeline_id="
                                 f"{rng.randint(1, PIPELINES)}" for _ in range(n)],
        "runs.running": ["runs?limit=50&status=WAITING,INITIALIZING,RUNNING,PAUSE"] * n,
        f"runs.offset{deep_run}": [f"runs?limit=50&offset={deep_run}"] * n,
        "files.panel_uploads": ["files?limit=1000&source=upload"] * n,
        "files.default_100": ["files?limit=100"] * n,
        "files.run": [f"files?run_id={rng.randint(1, runs)}" for _ in range(n)],
        f"files.offset{deep_file}": [f"files?limit=100&offset={deep_file}"] * n,
        "uploads.default_100": ["uploads"] * n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--active", type=int, default=10, help="RUNNING runs to reconcile")
    parser.add_argument("--requests", type=int, default=200, help="per list figure")
    parser.add_argument("--no-folders", action="store_true",
                        help="no run folders (a quicker seed; start-up lists none)")
    args = parser.parse_args()
    rng = random.Random(19)

    tmp = Path(tempfile.mkdtemp(prefix="pirus-bench-"))
    try:
        t0 = time.perf_counter()
        written = seed(tmp, args.runs, args.files, args.active, not args.no_folders)
        os.sync()  # the seed's writes flushed, not competing with the starts measured below
        report("scale.seed_s", f"{time.perf_counter() - t0:.1f}")
        report("scale.seeded", " ".join(f"{k}={v}" for k, v in written.items()))
        db_mib = (tmp / "data" / "pirus.db").stat().st_size / MiB
        report("scale.db_mib", f"{db_mib:.0f}")
        with Server(backend_class=BACKEND):
            pass  # a first start warms the page cache (imports) for the starts measured
        # Empty and loaded starts in turn, twice: the fastest of each (the least disturbed
        # by the other work on a shared machine) and their ratio.
        empty_times: list[tuple[float, float]] = []
        loaded_times: list[tuple[float, float]] = []
        empty_rss = 0
        for _ in range(2):
            empty = Server(backend_class=BACKEND)
            try:
                empty_times.append(start(empty, 0))
                empty.session.get(empty.api("runs")).raise_for_status()
                empty_rss = empty.rss_bytes()
            finally:
                empty.__exit__(None, None, None)
            loaded = Server(tmp=tmp, backend_class=BACKEND)
            try:
                loaded_times.append(start(loaded, args.active))
            finally:
                loaded.__exit__(None, None, None)
        empty_first, empty_ready = min(empty_times, key=lambda t: t[1])
        first, ready = min(loaded_times, key=lambda t: t[1])
        report("scale.empty.start_first_answer_s", f"{empty_first:.2f}")
        report("scale.empty.start_reconciled_s", f"{empty_ready:.2f}")
        report("scale.start_first_answer_s", f"{first:.2f}")
        report("scale.start_reconciled_s", f"{ready:.2f}")
        report("scale.start_ratio_to_empty", f"{ready / empty_ready:.2f}")
        # What the store's size adds after the server answers (least moved by the load).
        report("scale.start_first_answer_to_reconciled_s", f"{ready - first:.2f}")
        report("scale.start_all_s", "empty=" + ",".join(f"{r:.2f}" for _, r in empty_times)
               + " loaded=" + ",".join(f"{r:.2f}" for _, r in loaded_times))
        server = Server(tmp=tmp, backend_class=BACKEND)
        try:
            start(server, args.active)
            rss = server.rss_bytes()
            report("scale.rss_after_start_mib", f"{rss / MiB:.0f}")
            report("scale.empty.rss_mib", f"{empty_rss / MiB:.0f}")
            sampler = RssSampler(server)
            sampler.start()
            for label, paths in pages(args.runs, written["files"], args.requests, rng).items():
                try:
                    ms = timed_gets(server, paths)
                except requests.HTTPError as e:  # a parameter this version does not know
                    report(f"scale.page[{label}]", f"failed: {e.response.status_code}")
                    continue
                report(f"scale.page[{label}].p50_ms", f"{percentile(ms, 50):.1f}")
                report(f"scale.page[{label}].p99_ms", f"{percentile(ms, 99):.1f}")
            report("scale.rss_peak_mib", f"{sampler.stop() / MiB:.0f}")
        finally:
            server.__exit__(None, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
