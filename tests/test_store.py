"""The store's plain-SQL paths (get, update, compare-and-set, select) keep the semantics of the
sqlite-utils calls they replaced; the runs index serves the filtered count; an event's JSON is
made once for all subscribers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pirus_jupyter.errors import NotFound
from pirus_jupyter.events import EventBus
from pirus_jupyter.store import Store


def with_store(tmp_path: Path, scenario: Callable[[Store], Awaitable[None]]) -> None:
    store = Store(tmp_path / "pirus.db")
    try:
        asyncio.run(scenario(store))
    finally:
        store.close()


def run_row(pipeline_id: int, status: str, name: str = "r") -> dict[str, Any]:
    return {"pipeline_id": pipeline_id, "name": name, "config": {"a": [1, 2]}, "inputs": [],
            "status": status, "created": "2026-01-01T00:00:00+00:00",
            "progress": {"value": 0, "min": 0, "max": 100, "label": None}}


def test_get_and_update_decode_json_and_refuse_missing_rows(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        row = await store.insert("runs", run_row(1, "WAITING"))
        assert row["config"] == {"a": [1, 2]} and row["outputs"] == []
        updated = await store.update("runs", row["id"], {
            "progress": {"value": 5, "min": 0, "max": 10, "label": "é"}, "status": "RUNNING",
            "timings": [["RUNNING", "t"]]})
        assert updated["progress"] == {"value": 5, "min": 0, "max": 10, "label": "é"}
        assert updated["timings"] == [["RUNNING", "t"]]
        assert updated == await store.get("runs", row["id"])
        assert await store.update("runs", row["id"], {}) == updated  # nothing to change
        for missing in (row["id"] + 1, 2**63, -(2**63) - 1):
            with pytest.raises(NotFound):
                await store.get("runs", missing)
            with pytest.raises(NotFound):
                await store.update("runs", missing, {"status": "DONE"})
            with pytest.raises(NotFound):
                await store.update("runs", missing, {})
        # text primary keys (uploads) go the same way
        await store.insert("uploads", {"id": "abc", "offset": 0, "status": "CREATED",
                                       "created": "t", "parts": ["x"]})
        assert (await store.update("uploads", "abc", {"offset": 3}))["offset"] == 3
        with pytest.raises(NotFound):
            await store.update("uploads", "nope", {"offset": 3})

    with_store(tmp_path, scenario)


def test_update_where_status_is_compare_and_set(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        row = await store.insert("runs", run_row(1, "WAITING"))
        assert await store.update_where_status("runs", row["id"], ["RUNNING"],
                                               {"status": "DONE"}) is None
        assert (await store.get("runs", row["id"]))["status"] == "WAITING"
        moved = await store.update_where_status("runs", row["id"], ["WAITING"],
                                                {"status": "RUNNING", "metrics": {"x": 1}})
        assert moved is not None and moved["status"] == "RUNNING"
        assert moved["metrics"] == {"x": 1}
        with pytest.raises(NotFound):
            await store.update_where_status("runs", row["id"] + 1, ["WAITING"], {})

    with_store(tmp_path, scenario)


def test_select_filters_orders_and_pages(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        for i in range(10):
            await store.insert("runs", run_row(1 + i % 2, "DONE" if i % 3 else "ERROR", f"r{i}"))
        rows = await store.select("runs", "pipeline_id = ?", [2], order_by="id desc")
        assert [r["name"] for r in rows] == ["r9", "r7", "r5", "r3", "r1"]
        assert rows[0]["config"] == {"a": [1, 2]}
        page = await store.select("runs", None, None, order_by="id desc", limit=3, offset=2)
        assert [r["name"] for r in page] == ["r7", "r6", "r5"]
        rest = await store.select("runs", "status IN (?)", ["ERROR"], offset=1)  # no limit
        assert [r["name"] for r in rest] == ["r3", "r6", "r9"]
        assert await store.select("runs", "id < 0") == []
        assert await store.count("runs", "pipeline_id = ? AND status IN (?)", [1, "DONE"]) == 3

    with_store(tmp_path, scenario)


def test_filtered_run_count_reads_only_the_index(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        plan = await asyncio.get_running_loop().run_in_executor(
            store._executor, lambda: store.db.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM runs WHERE status IN (?, ?) "
                "AND pipeline_id = ?", ["ERROR", "DONE", 3]).fetchall())
        assert any("COVERING INDEX" in str(step) for step in plan), plan

    with_store(tmp_path, scenario)


def test_an_event_is_serialized_once_for_all_subscribers() -> None:
    async def scenario() -> None:
        bus = EventBus()
        first, second = bus.subscribe(), bus.subscribe()
        bus.publish("run.updated", {"id": 1, "progress": {"label": "é"}})
        a, b = await first.get(), await second.get()
        assert a == b == {"type": "run.updated", "data": {"id": 1, "progress": {"label": "é"}}}
        assert a.text is b.text  # one string, made once
        assert json.loads(a.text) == a

    asyncio.run(scenario())
