"""Fast layer: progress reports of a driven run are published at once and written in batches
(runs/core.py), and the events websocket sends what is queued in one write (Event.frame).
A real in-process server with the fake container backend."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import FAST_CONFIG, start_run, wait_run

from pirus_jupyter.events import Event
from pirus_jupyter.handlers.events import WRITE_BATCH
from pirus_jupyter.models import FINAL_RUN_STATUSES
from pirus_jupyter.runs import core

pytestmark = pytest.mark.fast


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


@pytest.fixture
def no_batch_written(monkeypatch):
    """The batch is never due during the test: only moves, GETs and a stop see the progress."""
    monkeypatch.setattr(core, "PROGRESS_FLUSH_INTERVAL", 3600.0)


async def notify(api, pirus, run_id: int, progress: dict) -> dict:
    token = (await pirus.store.get("runs", run_id))["notify_token"]
    code, body = await api("POST", "runs", run_id, "notify", params={"token": token},
                           body={"progress": progress})
    assert code == 200, body
    return body


async def stored_progress(pirus, run_id: int) -> dict:
    return (await pirus.store.get("runs", run_id))["progress"]


async def test_progress_is_seen_at_once_and_written_with_the_next_move(
        api, pirus, fake, install, fake_package, no_batch_written):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    before = await stored_progress(pirus, run["id"])
    answer = await notify(api, pirus, run["id"], {"value": 5, "label": "aligning"})
    assert answer["progress"]["value"] == 5
    # Not written yet (the batch is not due), yet every reader sees it.
    assert await stored_progress(pirus, run["id"]) == before
    code, one = await api("GET", "runs", run["id"])
    assert one["progress"] == {"value": 5, "min": 0, "max": 100, "label": "aligning"}
    code, page = await api("GET", "runs")
    assert [r["progress"]["value"] for r in page["items"] if r["id"] == run["id"]] == [5]
    # A later report merges with it (the label stays), read from memory.
    await notify(api, pirus, run["id"], {"value": 6})
    # A state move writes the progress published before it, in the same write.
    code, paused = await api("POST", "runs", run["id"], "pause")
    assert code == 200 and paused["progress"]["value"] == 6
    row = await pirus.store.get("runs", run["id"])
    assert (row["status"], row["progress"]["value"], row["progress"]["label"]) == (
        "PAUSE", 6, "aligning")
    code, _ = await api("POST", "runs", run["id"], "resume")
    # A final move carries the last progress, and nothing is left to be written after it.
    await notify(api, pirus, run["id"], {"value": 7})
    code, canceled = await api("POST", "runs", run["id"], "cancel")
    assert code == 200
    row = await pirus.store.get("runs", run["id"])
    assert (row["status"], row["progress"]["value"]) == ("CANCELED", 7)
    assert run["id"] not in pirus.runs._progress_unsaved


async def test_a_batch_never_writes_over_an_ended_run(api, pirus, fake, install, fake_package):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    fake.finish(run["id"])
    done = await wait_run(api, run["id"], "DONE", "ERROR")
    assert done["status"] == "DONE" and done["progress"]["value"] == 100
    await pirus.store.set_each("runs", "progress", {run["id"]: {"value": 1}},
                               unless_status=sorted(FINAL_RUN_STATUSES))
    assert (await stored_progress(pirus, run["id"]))["value"] == 100


async def test_a_stopping_server_writes_the_progress_it_published(
        api, pirus, fake, install, fake_package, no_batch_written, restart_pirus):
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    await notify(api, pirus, run["id"], {"value": 42, "label": "last words"})
    new = await restart_pirus()
    row = await new.store.get("runs", run["id"])
    assert row["progress"]["value"] == 42 and row["progress"]["label"] == "last words"
    await new.runs.cancel(run["id"])


async def test_the_websocket_sends_every_queued_event_whole_and_in_order(pirus, jp_ws_fetch):
    """More events than one write takes, with payloads of each frame length encoding (one
    byte, 16 bits, 64 bits), published at once: each arrives whole, in order."""
    await pirus.started.wait()  # the server's own subscribers are there
    before = pirus.events.subscriber_count
    ws = await jp_ws_fetch("pirus", "api", "v1", "events")
    for _ in range(500):  # the handler subscribes once it is open
        if pirus.events.subscriber_count > before:
            break
        await asyncio.sleep(0.01)
    assert pirus.events.subscriber_count == before + 1
    sizes = [0, 10, 125 - 60, 126, 1000, 70_000] * (WRITE_BATCH // 3)
    for i, size in enumerate(sizes):
        pirus.events.publish("run.updated", {"id": i, "pad": "x" * size})
    for i, size in enumerate(sizes):
        message = json.loads(await asyncio.wait_for(ws.read_message(), 30))
        assert message == {"type": "run.updated", "data": {"id": i, "pad": "x" * size}}
    ws.close()


def test_an_event_frame_is_its_text_behind_a_websocket_header() -> None:
    for size, header in ((5, b"\x81"), (200, b"\x81\x7e"), (70_000, b"\x81\x7f")):
        event = Event(type="t", data={"p": "y" * size})
        payload = event.text.encode()
        assert event.frame.startswith(header) and event.frame.endswith(payload)
        assert len(event.frame) - len(payload) == {5: 2, 200: 4, 70_000: 10}[size]
