"""Load held: 50 concurrent API clients (mixed reads, run creation, event subscribers) against
loopback while 4 runs execute, plus a websocket consumer that never reads.

Behaviour only (no timings here; ``benchmarks/load.py`` measures the loop lag and request
rate): no request fails, the runs end DONE, every fast subscriber receives every event, and
the consumer that reads nothing is cut off with its backlog dropped instead of holding the
others back or growing the server's memory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline, progress_script
from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

pytestmark = [pytest.mark.lxd, requires_lxd]

HTTP_CLIENTS = 40
SUBSCRIBERS = 10  # 40 + 10: the 50 clients
REQUESTS_PER_CLIENT = 15
CREATORS = 8  # clients that also queue a run
RUNS = 4
QUEUE_SIZE = 100  # per-subscriber event queue, small so that the slow consumer overflows soon
FILLERS = 400
FILLER_BYTES = 32 * 1024  # 400 x 32 KiB: far more than the socket buffers and the queue hold
BATCH = 20


@pytest.fixture
def pirus_config() -> dict[str, Any]:
    return {"max_parallel_runs": RUNS, "notify_enabled": False, "poll_interval": 0.25}


@pytest.fixture(scope="module")
def long_package(tmp_path_factory):
    """About 15 s of progress, then held until the test drops "release" into its inputs: the
    runs execute all through the load however long it takes, and the runs queued behind them
    are still WAITING when the test cancels them."""
    hold = ('while [ ! -e "$PIRUS_INPUTS_DIR/release" ] && [ $i -lt 2400 ]; do '
            'i=$((i+1)); sleep 0.25; done\n')
    script = progress_script(60, 0.25).replace("echo finished", hold + "echo finished")
    return build_pipeline(tmp_path_factory.mktemp("pkg") / "long.tar.gz", name="long",
                          script=script, form={})


class Subscriber:
    """A websocket consumer that reads everything, as fast as it comes."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.fillers = 0
        self.closed_by_server = False
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                self.closed_by_server = True
                return
            message = json.loads(raw)
            if message["type"] == "load.filler":
                self.fillers += 1
            else:
                self.events.append(message)

    def saw(self, event_type: str, run_id: int, status: str | None = None) -> bool:
        return any(e["type"] == event_type and e["data"].get("id") == run_id and
                   (status is None or e["data"].get("status") == status) for e in self.events)


async def open_non_reader(port: int, path: str, headers: dict[str, str]
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket client that completes the handshake and then reads nothing: a tiny receive
    buffer and a stream that stops pulling from the socket after 1 KiB."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    status = await reader.readline()
    assert b" 101 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer


async def test_fifty_clients_while_four_runs_execute(api, install, pirus, long_package,
                                                     jp_ws_fetch, jp_http_port, jp_base_url,
                                                     jp_auth_header):
    pirus.events.queue_size = QUEUE_SIZE
    pipeline = await install(long_package)
    await pirus.started.wait()
    baseline = pirus.events.subscriber_count  # the server's own (the TES tasks' watcher)
    runs = []
    for _ in range(RUNS):
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
        assert code == 201, run
        runs.append(run["id"])

    subscribers = [Subscriber(await jp_ws_fetch("pirus", "api", "v1", "events"))
                   for _ in range(SUBSCRIBERS)]
    before = set(pirus.events._subscribers)
    slow_reader, slow_writer = await open_non_reader(
        jp_http_port, f"{jp_base_url}pirus/api/v1/events", jp_auth_header)
    await wait_for(api, "", until=lambda b: len(pirus.events._subscribers) > len(before))
    (slow,) = set(pirus.events._subscribers) - before
    for run_id in runs:
        await wait_for(api, "runs", run_id, until=lambda b: b["status"] == "RUNNING",
                       timeout=120)

    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}pirus/api/v1"
    errors: list[str] = []
    created: list[int] = []
    reads = ["runs?limit=20", f"runs/{runs[0]}", "pipelines", "", "files", "uploads",
             f"runs?status=RUNNING&pipeline_id={pipeline['id']}", "databases"]

    async def client(index: int) -> int:
        http = SimpleAsyncHTTPClient(force_instance=True, max_clients=1)
        done = 0
        try:
            for i in range(REQUESTS_PER_CLIENT):
                if index < CREATORS and i == REQUESTS_PER_CLIENT // 2:
                    request = HTTPRequest(f"{base}/runs", method="POST", headers=jp_auth_header,
                                          body=json.dumps({"pipeline_id": pipeline["id"],
                                                           "name": f"load {index}"}))
                    expected = 201
                else:
                    path = reads[(index + i) % len(reads)]
                    request = HTTPRequest(f"{base}/{path}".rstrip("/"), headers=jp_auth_header)
                    expected = 200
                response = await http.fetch(request, raise_error=False)
                if response.code != expected:
                    errors.append(f"{request.method} {request.url} -> {response.code}: "
                                  f"{response.body[:200]!r}")
                elif request.method == "POST":
                    created.append(json.loads(response.body)["id"])
                done += 1
        finally:
            http.close()
        return done

    async def fillers() -> None:
        """Big events, in batches each fast subscriber takes in before the next: the slow
        consumer's socket and queue fill up, the others keep pace."""
        for start in range(0, FILLERS, BATCH):
            for seq in range(start, start + BATCH):
                pirus.events.publish("load.filler", {"seq": seq, "pad": "x" * FILLER_BYTES})
            while min(s.fillers for s in subscribers) < start + BATCH:
                await asyncio.sleep(0.01)

    results = await asyncio.gather(*(client(i) for i in range(HTTP_CLIENTS)), fillers())
    assert errors == []
    assert sum(results[:HTTP_CLIENTS]) == HTTP_CLIENTS * REQUESTS_PER_CLIENT
    assert len(created) == CREATORS

    # The consumer that reads nothing was cut off: unsubscribed, its backlog dropped (only
    # the overflow marker left), and the server closed its connection although the client
    # still reads nothing (its handler is not stuck writing to it).
    assert slow.overflowed
    assert slow not in pirus.events._subscribers
    assert slow.queue.qsize() <= 1
    handler = slow.on_overflow.__self__  # the EventsHandler serving the slow consumer
    deadline = asyncio.get_running_loop().time() + 60
    while handler.ws_connection is not None:
        assert asyncio.get_running_loop().time() < deadline, "the server kept the connection"
        await asyncio.sleep(0.1)
    assert handler.close_code is None or handler.close_code == 1013
    drained = 0
    while chunk := await asyncio.wait_for(slow_reader.read(1 << 20), 60):
        drained += len(chunk)
    assert drained < (FILLERS + 50) * (FILLER_BYTES + 100)  # it never got everything
    slow_writer.close()

    # The queued runs are canceled; the four runs are unaffected and end DONE once released.
    for run_id in created:
        code, body = await api("POST", "runs", run_id, "cancel")
        assert code == 200, body
    for run_id in runs:
        row = await pirus.store.get("runs", run_id)
        (Path(row["root_path"]) / "inputs" / "release").write_text("")
    for run_id in runs:
        body = await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                              timeout=120)
        assert body["status"] == "DONE", body
        assert body["progress"]["value"] == 60

    # Every fast subscriber got every filler and every change of the runs.
    for sub in subscribers:
        async def seen_all(sub: Subscriber = sub) -> bool:
            return all(sub.saw("run.updated", r, "DONE") for r in runs) and all(
                sub.saw("run.created", r) and sub.saw("run.updated", r, "CANCELED")
                for r in created)

        deadline = asyncio.get_running_loop().time() + 30
        while not await seen_all():
            assert asyncio.get_running_loop().time() < deadline, sub.events[-5:]
            await asyncio.sleep(0.05)
        assert sub.fillers == FILLERS
        assert not sub.closed_by_server
        sub.ws.close()
    # Every closed websocket gives its subscription back (asynchronously): none is leaked.
    deadline = asyncio.get_running_loop().time() + 30
    while pirus.events.subscriber_count != baseline:
        assert asyncio.get_running_loop().time() < deadline, pirus.events.subscriber_count
        await asyncio.sleep(0.05)
