"""API at scale: a server whose store holds 10,000 runs (100 of them RUNNING, with their run
monitors polling as in production), timed through real HTTP from another process:

- ``GET /runs`` pages of 50 (no filter, a status filter, status + pipeline, a deep offset) and
  ``GET /runs/{id}`` of random runs: p50/p99 over sequential keep-alive requests;
- websocket fan-out: the 100 running runs each POST progress to their own notify endpoint
  (``/runs/{id}/notify?token=``, what ``$PIRUS_NOTIFY_URL`` points at: one new connection per
  POST, like ``curl`` in a pipeline) 10 times a second, seen by 5 websocket clients of
  ``/events`` in a separate process: p50/p99 of the latency from the POST being sent to the
  event being read by each client, the update rate reached and the share of events delivered;
- server RSS: an empty store, 10,000 runs, and the peak during the fan-out.

The runs are written into the store of a stopped server's data folder (the store module, the
same migrations), then the server is started on it. Containers are replaced by
``pirus_jupyter.backend.fake.IdleBackend`` (always Running, doing nothing): the figures are
Pirus' own, and the POSTs skip the LXD proxy device a real pipeline's POST would cross."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks.common import MiB, RssSampler, Server, percentile, report
from pirus_jupyter.store import Store

BACKEND = "pirus_jupyter.backend.fake.IdleBackend"
PIPELINES = 5
LABEL = "bench "


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def seeded_pipelines(data: Path, base: datetime) -> list[dict[str, Any]]:
    """PIPELINES READY pipeline rows, as the seeds of this module and scale.py write them."""
    return [{
        "id": p, "name": f"pipeline-{p}", "description": "seeded", "version": "1.0.0",
        "pirus_api": "1", "license": "MIT", "developers": json.dumps(["bench"]),
        "size": 10 * MiB, "upload_offset": 10 * MiB, "status": "READY", "created": iso(base),
        "documents": "[]", "limits": "{}", "manifest": "{}", "lxd_alias": f"bench-{p}",
        "fingerprint": secrets.token_hex(32), "lxd_inputs_path": "/pirus/inputs",
        "lxd_outputs_path": "/pirus/outputs", "lxd_logs_path": "/pirus/logs",
        "lxd_db_path": "/pirus/databases", "lxd_run_cmd": "true",
        "root_path": str(data / "pipelines" / str(p)),
    } for p in range(1, PIPELINES + 1)]


def seed(tmp: Path, runs: int, active: int) -> list[tuple[int, str]]:
    """Write ``runs`` runs (the last ``active`` of them RUNNING) with their output file records
    into ``tmp/data/pirus.db``; return the (id, notify token) of the running ones."""
    rng = random.Random(7)
    data = tmp / "data"
    runs_dir = tmp / "root" / "pirus-runs"
    runs_dir.mkdir(parents=True)
    store = Store(data / "pirus.db")  # applies the migrations, as the server would
    base = datetime.now(timezone.utc) - timedelta(minutes=runs)
    pipelines = seeded_pipelines(data, base)
    rows, files, running = [], [], []
    file_id = 0
    for run_id in range(1, runs + 1):
        created = base + timedelta(minutes=run_id)
        is_active = run_id > runs - active
        status = "RUNNING" if is_active else rng.choices(
            ["DONE", "ERROR", "CANCELED"], [80, 12, 8])[0]
        pipeline_id = rng.randint(1, PIPELINES)
        name = f"sample {run_id}"
        root_path = runs_dir / f"{run_id}-sample-{run_id}"
        moves = ["WAITING", "INITIALIZING", "RUNNING"] + (
            [] if is_active else ["FINISHING", status] if status == "DONE" else [status])
        timings = [[m, iso(created + timedelta(seconds=3 * i))] for i, m in enumerate(moves)]
        outputs = []
        if status == "DONE":
            for out in ("report.html", "counts.tsv"):
                file_id += 1
                record = {"id": file_id, "name": out,
                          "path": f"pirus-runs/{root_path.name}/outputs/{out}",
                          "size": rng.randint(1000, 10**7), "sha256": secrets.token_hex(32),
                          "source": "run", "run_id": run_id, "created": timings[-1][1]}
                files.append(record)
                outputs.append({k: record[k] for k in ("path", "name", "size", "sha256")}
                               | {"file_id": file_id})
        token = secrets.token_urlsafe(24)
        rows.append({
            "id": run_id, "pipeline_id": pipeline_id, "pipeline_name": f"pipeline-{pipeline_id}",
            "pipeline_version": "1.0.0", "pipeline_fingerprint": pipelines[pipeline_id - 1][
                "fingerprint"], "name": name,
            "config": json.dumps({"threshold": 0.5, "reference": "hg38", "paired": True}),
            "inputs": json.dumps([{"name": "reads.fastq.gz",
                                   "path": f"pirus-uploads/reads-{run_id}.fastq.gz",
                                   "size": rng.randint(10**6, 10**9),
                                   "sha256": secrets.token_hex(32)}]),
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
            "root_path": str(root_path), "notify_token": token,
        })
        if is_active:
            running.append((run_id, token))
            state = root_path / ".pirus"
            state.mkdir(parents=True)
            beat = state / "heartbeat"
            beat.touch()
            # A heartbeat from the future: the monitor must not end these runs as lost.
            os.utime(beat, (time.time() + 86400, time.time() + 86400))

    def write(db: Any) -> None:
        with db.conn:
            db["pipelines"].insert_all(pipelines)
            db["runs"].insert_all(rows, batch_size=1000)
            db["files"].insert_all(files, batch_size=1000)

    store.run_sync(write)
    store.close()
    return running


def timed_gets(server: Server, paths: list[str], warmup: int = 20) -> list[float]:
    """Milliseconds per request, sequential on one keep-alive connection."""
    session = server.session
    for path in paths[:warmup]:
        session.get(server.api(path)).raise_for_status()
    times = []
    for path in paths:
        t0 = time.perf_counter()
        response = session.get(server.api(path))
        response.content  # noqa: B018 - the whole body, as a client reads it
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return times


# -- websocket clients (a separate process) -------------------------------------------
def receive(url: str, token: str, clients: int, ready: Event, stop: Event,
            out: Connection) -> None:
    asyncio.run(_receive(url, token, clients, ready, stop, out))


async def _receive(url: str, token: str, clients: int, ready: Event, stop: Event,
                   out: Connection) -> None:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    # Per client: (run id, the label's send time, when read) of every benchmark update.
    latencies: list[list[tuple[int, float, float]]] = [[] for _ in range(clients)]
    closed: list[int | None] = [None] * clients
    sockets = [await websocket_connect(HTTPRequest(
        url, headers={"Authorization": f"token {token}"})) for _ in range(clients)]

    async def pump(i: int) -> None:
        while True:
            message = await sockets[i].read_message()
            now = time.monotonic()
            if message is None:
                closed[i] = sockets[i].close_code
                return
            event = json.loads(message)
            if event["type"] != "run.updated":
                continue
            label = (event["data"].get("progress") or {}).get("label") or ""
            if label.startswith(LABEL):
                latencies[i].append((event["data"]["id"], float(label[len(LABEL):]), now))

    tasks = [asyncio.get_running_loop().create_task(pump(i)) for i in range(clients)]
    cpu0 = time.process_time()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    for ws in sockets:
        ws.close()
    out.send({"latencies": latencies, "closed": closed, "cpu": time.process_time() - cpu0})


# -- the running runs' progress POSTs (this process) ----------------------------------
async def _post(port: int, path: str, body: bytes) -> int:
    """One POST on a new connection, as ``curl`` from a pipeline would; the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    status = await reader.readline()
    await reader.read()
    writer.close()
    return int(status.split()[1])


Send = Callable[[int, str, bytes], Awaitable[int]]


async def publish(running: list[tuple[int, str]], rate: float, seconds: float, send: Send
                  ) -> dict[str, Any]:
    """Every run reports progress ``rate`` times a second (ticks spread over the period) by
    ``send(run_id, token, body)``; a run whose report comes back late skips the ticks it
    missed, as a pipeline's loop would. The body's label carries its send time."""
    period = 1 / rate
    start = time.monotonic() + 0.2
    end = start + seconds
    sent, skipped, errors = 0, 0, 0
    response_ms: list[float] = []
    written: dict[int, list[float]] = {run_id: [] for run_id, _ in running}

    async def one(i: int, run_id: int, token: str) -> None:
        nonlocal sent, skipped, errors
        tick = 0
        while True:
            target = start + (i / len(running) + tick) * period
            if target >= end:
                return
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period:
                missed = int(-delay / period)
                skipped += missed
                tick += missed
                continue
            t0 = time.monotonic()
            body = json.dumps({"progress": {"value": tick % 100,
                                            "label": f"{LABEL}{t0:.6f}"}}).encode()
            status = await send(run_id, token, body)
            response_ms.append((time.monotonic() - t0) * 1000)
            sent += 1
            errors += status != 200
            if status == 200:
                written[run_id].append(float(f"{t0:.6f}"))
            tick += 1

    await asyncio.gather(*(one(i, r, t) for i, (r, t) in enumerate(running)))
    return {"sent": sent, "skipped": skipped, "errors": errors, "response_ms": response_ms,
            "start": start, "seconds": seconds, "written": written}


def notify_sender(port: int) -> Send:
    """Progress POSTed to the run's notify URL (what ``$PIRUS_NOTIFY_URL`` points at)."""
    async def send(run_id: int, token: str, body: bytes) -> int:
        return await _post(port, f"/pirus/api/v1/runs/{run_id}/notify?token={token}", body)
    return send


def file_sender(runs_dir: Path) -> Send:
    """Progress appended to the run's progress file, as a pipeline in its container does
    (the default channel: the run's monitor reads it every ``poll_interval``)."""
    files = {int(folder.name.split("-", 1)[0]): folder / ".pirus" / "progress.jsonl"
             for folder in runs_dir.iterdir()}

    async def send(run_id: int, token: str, body: bytes) -> int:
        fd = os.open(files[run_id], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, body + b"\n")  # one write: the monitor never reads half a line
        finally:
            os.close(fd)
        return 200
    return send


def seen_latencies(written: dict[int, list[float]], events: list[tuple[int, float, float]],
                   counted_from: float) -> tuple[list[float], int, int]:
    """For each report written (from ``counted_from`` on): milliseconds until one client read
    an event carrying it or a later report of the same run (the monitor merges the lines it
    reads at once: the newest value is what a reader sees). Also how many were written and
    how many were seen."""
    by_run: dict[int, list[tuple[float, float]]] = {}
    for run_id, sent, read in events:
        by_run.setdefault(run_id, []).append((sent, read))
    latencies, total = [], 0
    for run_id, times in written.items():
        seen = sorted(by_run.get(run_id, []))
        # Earliest read among the events carrying this report or a newer one.
        first_read = [0.0] * len(seen)
        best = float("inf")
        for k in range(len(seen) - 1, -1, -1):
            best = min(best, seen[k][1])
            first_read[k] = best
        k = 0
        for t in times:
            if t < counted_from:
                continue
            total += 1
            k = bisect.bisect_left(seen, (t, -1.0), lo=k)
            if k < len(seen):
                latencies.append((first_read[k] - t) * 1000)
    return latencies, total, len(latencies)


def fanout(server: Server, running: list[tuple[int, str]], clients: int, rate: float,
           seconds: float, feed: str, warmup: float = 1.0) -> None:
    """``feed``: "notify" (each report a POST) or "file" (appended to the progress file)."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    mine, theirs = ctx.Pipe()
    ws_url = f"ws://127.0.0.1:{server.port}/pirus/api/v1/events"
    receiver = ctx.Process(target=receive, args=(ws_url, server.token, clients, ready, stop,
                                                 theirs), daemon=True)
    receiver.start()
    if not ready.wait(60):
        raise RuntimeError("websocket clients did not connect")
    sampler = RssSampler(server)
    sampler.start()
    send = notify_sender(server.port) if feed == "notify" else \
        file_sender(server.root / "pirus-runs")
    cpu0, mine0, t0 = server.cpu_seconds(), time.process_time(), time.monotonic()
    stats = asyncio.run(publish(running, rate, seconds + warmup, send))
    publisher_cpu = time.process_time() - mine0
    time.sleep(2)  # events still in flight
    cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - t0
    peak = sampler.stop()
    stop.set()
    result = mine.recv()
    receiver.join(30)

    counted_from = stats["start"] + warmup
    latencies: list[float] = []
    written, seen = 0, 0
    for events in result["latencies"]:
        lat, total, got = seen_latencies(stats["written"], events, counted_from)
        latencies += lat
        written += total
        seen += got
    events_read = sum(len(c) for c in result["latencies"]) / clients
    name = f"api.fanout[{len(running)}runs_{rate:g}Hz_{clients}clients]"
    if feed == "file":
        name = f"api.fanout_file[{len(running)}runs_{rate:g}Hz_{clients}clients]"
    report(f"{name}.target_updates_per_s", f"{len(running) * rate:.0f}")
    report(f"{name}.achieved_updates_per_s", f"{stats['sent'] / stats['seconds']:.0f}")
    # Events each client read per second: one per POST; fewer with the file (lines merged).
    report(f"{name}.events_per_s_per_client", f"{events_read / stats['seconds']:.0f}")
    # No latencies at all: every client was cut off before the counted window.
    report(f"{name}.latency_p50_ms", f"{percentile(latencies, 50):.1f}" if latencies else "nan")
    report(f"{name}.latency_p99_ms", f"{percentile(latencies, 99):.1f}" if latencies else "nan")
    if feed == "notify":
        report(f"{name}.notify_response_p50_ms", f"{percentile(stats['response_ms'], 50):.1f}")
        report(f"{name}.notify_response_p99_ms", f"{percentile(stats['response_ms'], 99):.1f}")
    # CPU per update (the report, the store, 5 websocket sends): less noisy than wall times.
    report(f"{name}.server_cpu_ms_per_update", f"{cpu * 1000 / max(1, stats['sent']):.2f}")
    # Where the 2 cores went: the load generators share the machine with the server.
    report(f"{name}.cpu_pct", f"server={cpu / wall * 100:.0f} "
           f"posting_runs={publisher_cpu / wall * 100:.0f} "
           f"ws_clients={result['cpu'] / wall * 100:.0f}")
    # Reports seen by the clients (in their own event or a later one of the same run).
    report(f"{name}.delivered_ratio", f"{seen / max(1, written):.3f}")
    if feed == "notify":
        report(f"{name}.notify_errors", str(stats["errors"]))
    if any(code is not None for code in result["closed"]):
        report(f"{name}.clients_cut_off", str(sum(c is not None for c in result["closed"])))
    report(f"memory.{'fanout' if feed == 'notify' else 'fanout_file'}_peak_mib",
           f"{peak / MiB:.0f}")


def settle(server: Server) -> int:
    """RSS once the server has answered a few requests and had a second to itself."""
    for _ in range(5):
        server.session.get(server.api("runs"), params={"limit": 50}).raise_for_status()
    time.sleep(1)
    return server.rss_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="per list/get figure")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="progress POSTs/s per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="fan-out duration")
    parser.add_argument("--feed", choices=["notify", "file", "both"], default="both",
                        help="how the runs report progress in the fan-out")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="the server's poll_interval (default: its own default)")
    parser.add_argument("--fanout-only", action="store_true",
                        help="skip the list pages and memory figures")
    args = parser.parse_args()
    rng = random.Random(11)

    empty_rss = 0
    if not args.fanout_only:
        with Server(backend_class=BACKEND) as empty:
            empty_rss = settle(empty)

    tmp = Path(tempfile.mkdtemp(prefix="pirus-bench-"))
    try:
        t0 = time.perf_counter()
        running = seed(tmp, args.runs, args.active)
        report("api.seed_seconds", f"{time.perf_counter() - t0:.1f}")
        polling = {} if args.poll_interval is None else {"poll_interval": args.poll_interval}
        with Server(tmp=tmp, backend_class=BACKEND, **polling) as server:
            server.wait("", lambda b: b["active_runs"] == len(running))  # monitors on
            cpu0 = server.cpu_seconds()
            time.sleep(3)
            # What the running runs' monitors cost with nothing happening (their polls).
            report(f"api.idle_cpu_pct[{len(running)}_running_runs]",
                   f"{(server.cpu_seconds() - cpu0) / 3 * 100:.0f}")
            if not args.fanout_only:
                lists(server, args, empty_rss, rng)
            for feed in ("notify", "file") if args.feed == "both" else (args.feed,):
                fanout(server, running, args.clients, args.rate, args.seconds, feed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lists(server: Server, args: argparse.Namespace, empty_rss: int, rng: random.Random
          ) -> None:
    """RSS with the runs stored, the list pages, one run."""
    rss = settle(server)
    report(f"memory.runs_{args.runs}_mib", f"{rss / MiB:.0f}")
    report(f"memory.runs_{args.runs}_growth_mib", f"{(rss - empty_rss) / MiB:.0f}")
    n = args.requests
    pages = {
        "none": ["runs?limit=50"] * n,
        "status": ["runs?limit=50&status=DONE"] * n,
        "status_pipeline": [f"runs?limit=50&status=ERROR,CANCELED&pipeline_id="
                            f"{rng.randint(1, PIPELINES)}" for _ in range(n)],
        "offset5000": ["runs?limit=50&offset=5000"] * n,
    }
    for label, paths in pages.items():
        ms = timed_gets(server, paths)
        report(f"api.list_page50[{label}].p50_ms", f"{percentile(ms, 50):.1f}")
        report(f"api.list_page50[{label}].p99_ms", f"{percentile(ms, 99):.1f}")
    ms = timed_gets(server, [f"runs/{rng.randint(1, args.runs)}" for _ in range(n)])
    report("api.get_run.p50_ms", f"{percentile(ms, 50):.1f}")
    report("api.get_run.p99_ms", f"{percentile(ms, 99):.1f}")


if __name__ == "__main__":
    main()
