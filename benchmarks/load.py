"""Load: 50 concurrent API clients against a real server on loopback while 4 runs execute.

40 HTTP clients, each sending a request every 0.2 s (200 requests/s in all: 50 busy users),
or with ``--closed-loop`` its next request as soon as the previous answered (the server
saturated: then the loop lag measures queueing, not stalls): mostly reads (runs, pipelines,
info, files, uploads, databases), one request in 50 queues a run. 10 websocket subscribers
read every event; one more websocket consumer reads nothing at all. Meanwhile 4 runs report
progress every 0.25 s.

Measured: requests/s, errors, client-side latency, the server's event loop lag (its own
monitor, ``loop_lag`` of ``GET /pirus/api/v1``, over the load window: run at least as long as
the monitor's 60 s window for its figures to cover the load only), server RSS growth, and
whether the non-reading consumer was cut off. Baseline: the same lag monitor in an idle
asyncio process at the same time, which shows what the machine itself costs (the clients,
and whatever else runs there, share its cores with the server): a server lag close to the
baseline is the machine's, not a stall of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.websocket import websocket_connect

from benchmarks.common import Server, percentile, report
from pirus_jupyter.packaging import build_package_from_parts

HTTP_CLIENTS = 40
SUBSCRIBERS = 10
RUNS = 4
CREATE_EVERY = 50
PERIOD = 0.2  # seconds between two requests of one client (unless --closed-loop)

# Reports progress every 0.25 s, for a little longer than the load (then it is canceled; if
# the benchmark is killed, it still ends on its own).
LONG_RUN = """#!/bin/sh
i=0
while [ $i -lt {steps} ]; do
  i=$((i+1))
  printf '{{"progress": {{"value": %d, "max": {steps}}}}}\\n' $i >> "$PIRUS_PROGRESS_FILE"
  echo "step $i"
  sleep 0.25
done
"""


BASELINE = """
import asyncio, json, sys
from pirus_jupyter.looplag import LoopLagMonitor

async def main():
    monitor = LoopLagMonitor(window=float(sys.argv[1]) + 60)
    monitor.start()
    await asyncio.sleep(float(sys.argv[1]))
    print(json.dumps(monitor.stats()))

asyncio.run(main())
"""


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def build_long(folder: Path, seconds: float) -> Path:
    script = LONG_RUN.format(steps=int((seconds + 120) * 4))
    return build_package_from_parts(
        {"name": "load", "version": "1.0", "description": "load benchmark"},
        {"/pipeline/run.sh": script.encode(), "/pipeline/form.json": b"{}"},
        folder / "load.tar.gz")


async def non_reader(port: int, path: str, token: str) -> socket.socket:
    """Handshake, then never read (small receive buffer): the slowest consumer there is."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: token {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


async def load(server: Server, pipeline_id: int, seconds: float, closed_loop: bool
               ) -> dict[str, Any]:
    base = server.api("")
    headers = {"Authorization": f"token {server.token}"}
    reads = ["runs?limit=20", "pipelines", "", "files", "uploads", "databases",
             f"runs?status=RUNNING&pipeline_id={pipeline_id}"]
    latencies: list[float] = []
    errors: list[str] = []
    created: list[int] = []
    stop_at = time.monotonic() + seconds

    async def client(index: int) -> None:
        http = SimpleAsyncHTTPClient(force_instance=True, max_clients=1)
        i = 0
        start = time.monotonic() + index * PERIOD / HTTP_CLIENTS  # spread over one period
        try:
            while time.monotonic() < stop_at:
                if not closed_loop:
                    await asyncio.sleep(max(0.0, start + i * PERIOD - time.monotonic()))
                i += 1
                if (index * 7 + i) % CREATE_EVERY == 0:
                    request = HTTPRequest(f"{base}/runs", method="POST", headers=headers,
                                          body=json.dumps({"pipeline_id": pipeline_id}))
                    expected = 201
                else:
                    path = reads[(index + i) % len(reads)]
                    request = HTTPRequest(f"{base}/{path}".rstrip("/"), headers=headers)
                    expected = 200
                t0 = time.perf_counter()
                try:
                    response = await http.fetch(request, raise_error=False)
                    code = response.code
                except Exception as e:  # a refused or dropped connection counts as an error
                    code, response = 0, None
                    errors.append(f"{request.url}: {e}")
                latencies.append(time.perf_counter() - t0)
                if code != expected and response is not None:
                    errors.append(f"{request.method} {request.url} -> {code}")
                elif request.method == "POST" and response is not None:
                    created.append(json.loads(response.body)["id"])
        finally:
            http.close()

    counts = [0] * SUBSCRIBERS

    async def subscriber(index: int) -> None:
        ws = await websocket_connect(HTTPRequest(
            f"ws://127.0.0.1:{server.port}/pirus/api/v1/events", headers=headers))
        try:
            while time.monotonic() < stop_at:
                try:
                    message = await asyncio.wait_for(ws.read_message(), 1)
                except asyncio.TimeoutError:
                    continue
                if message is None:
                    errors.append(f"subscriber {index} was disconnected")
                    return
                counts[index] += 1
        finally:
            ws.close()

    slow = await non_reader(server.port, "/pirus/api/v1/events", server.token)
    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(HTTP_CLIENTS)),
                         *(subscriber(i) for i in range(SUBSCRIBERS)))
    elapsed = time.monotonic() - started
    # Cut off means the server closed it: reading what it had buffered then ends in EOF. Not
    # cut off (the events fitted in its socket buffers and queue), events keep coming.
    slow.setblocking(True)
    slow.settimeout(1)
    cut_off = False
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            try:
                if not slow.recv(1 << 20):
                    cut_off = True
                    break
            except TimeoutError:
                continue
    except OSError:
        cut_off = True  # reset by the server
    finally:
        slow.close()
    return {"elapsed": elapsed, "latencies": latencies, "errors": errors, "created": created,
            "counts": counts, "slow_cut_off": cut_off}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60,
                        help="length of the load (default 60 s: the loop-lag window)")
    parser.add_argument("--closed-loop", action="store_true",
                        help="each client sends its next request at once (saturation)")
    args = parser.parse_args()
    # Killed (SIGTERM, a timeout): still stop the server and cancel the runs on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    folder = Path(tempfile.mkdtemp(prefix="pirus-bench-load-"))
    runs: list[int] = []
    pipeline: dict[str, Any] = {}
    try:
        package = build_long(folder, args.seconds)
        with Server(max_parallel_runs=RUNS, notify_enabled=False) as server:
            assert server.proc is not None
            try:
                pipeline = server.install(package)
                assert pipeline["status"] == "READY", pipeline
                runs = [server.session.post(server.api("runs"), json={
                    "pipeline_id": pipeline["id"]}).json()["id"] for _ in range(RUNS)]
                for run_id in runs:
                    server.wait(f"runs/{run_id}", lambda b: b["status"] == "RUNNING")
                rss_start = status_kib(server.proc.pid, "VmRSS")
                hwm_start = status_kib(server.proc.pid, "VmHWM")
                baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(args.seconds)],
                                            stdout=subprocess.PIPE, text=True)
                result = asyncio.run(load(server, pipeline["id"], args.seconds,
                                          args.closed_loop))
                base_lag = json.loads(baseline.communicate(timeout=60)[0])
                rss_end = status_kib(server.proc.pid, "VmRSS")
                hwm_end = status_kib(server.proc.pid, "VmHWM")
                info = server.session.get(server.api("")).json()
                statuses = [server.session.get(server.api(f"runs/{r}")).json()["status"]
                            for r in runs]
                runs[:0] = result["created"]  # canceled first: no slot frees for them
            finally:
                for run_id in runs:
                    server.session.post(server.api(f"runs/{run_id}/cancel"))
                if runs:
                    server.wait("", lambda b: b["active_runs"] == 0, timeout=120)
                if pipeline.get("id"):
                    server.session.delete(server.api(f"pipelines/{pipeline['id']}"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    lat = result["latencies"]
    lag = info["loop_lag"]
    mode = "closed loop" if args.closed_loop else f"1 request / {PERIOD:g} s each"
    report("load.clients", f"{HTTP_CLIENTS} http ({mode}) + {SUBSCRIBERS} websocket + "
           "1 non-reading")
    report("load.duration_s", f"{result['elapsed']:.1f}")
    report("load.requests", str(len(lat)))
    report("load.requests_per_s", f"{len(lat) / result['elapsed']:.0f}")
    report("load.errors", str(len(result["errors"])))
    for line in result["errors"][:5]:
        print(f"#   {line}")
    report("load.latency_p50_ms", f"{percentile(lat, 50) * 1000:.1f}")
    report("load.latency_p99_ms", f"{percentile(lat, 99) * 1000:.1f}")
    report("load.runs_created", str(len(result["created"])))
    report("load.runs_still_running", f"{statuses.count('RUNNING')}/{RUNS}")
    report("load.events_per_subscriber_min", str(min(result["counts"])))
    report("load.slow_consumer_cut_off", "yes" if result["slow_cut_off"] else "no")
    report("load.loop_lag_window_s", f"{lag['window_seconds']:g}")
    report("load.loop_lag_max_ms", f"{lag['window_max_ms']:.1f}")
    report("load.loop_lag_p99_ms", f"{lag['window_p99_ms']:.1f}")
    report("load.loop_lag_max_since_start_ms", f"{lag['max_ms']:.1f}")
    report("load.baseline_loop_lag_max_ms", f"{base_lag['window_max_ms']:.1f}")
    report("load.baseline_loop_lag_p99_ms", f"{base_lag['window_p99_ms']:.1f}")
    report("load.server_rss_start_mib", f"{rss_start / 1024:.0f}")
    report("load.server_rss_growth_mib", f"{(rss_end - rss_start) / 1024:.1f}")
    report("load.server_peak_rss_growth_mib", f"{(hwm_end - hwm_start) / 1024:.1f}")


if __name__ == "__main__":
    main()
