"""Fast layer: list pages at scale. Pages walked by cursor (``after``) are the pages walked by
offset, with the same totals; GET /files filters by source and sorts newest first; bad paging
parameters are a 400; deep pages and the start-up's looks read indexes, not whole tables;
the start-up does not re-read finished uploads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import FAST_CONFIG

pytestmark = pytest.mark.fast

RUNS = 45
STATUSES = ("DONE", "ERROR", "CANCELED")


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


def on_db(store: Any, fn: Any) -> Any:
    return asyncio.get_running_loop().run_in_executor(store._executor, fn)


async def seed(store: Any) -> None:
    """RUNS runs (pipelines 1 and 2, statuses in turn), an output of each, and an upload
    (file record and finished upload row) every third run."""
    def write() -> None:
        db = store.db
        with db.conn:
            for i in range(1, RUNS + 1):
                db.execute("INSERT INTO runs (id, pipeline_id, name, config, inputs, status, "
                           "created) VALUES (?, ?, ?, '{}', '[]', ?, 't')",
                           [i, 1 + i % 2, f"r{i}", STATUSES[i % 3]])
                db.execute("INSERT INTO files (name, path, size, source, run_id, created) "
                           "VALUES ('o', ?, 1, 'run', ?, 't')", [f"pirus-runs/{i}/o", i])
                if i % 3 == 0:
                    db.execute("INSERT INTO files (name, path, size, source, created) "
                               "VALUES ('u', ?, 1, 'upload', 't')", [f"pirus-uploads/u{i}"])
                    db.execute("INSERT INTO uploads (id, kind, filename, metadata, length, "
                               "offset, status, created, file_id) VALUES (?, 'input', 'u', "
                               "'{}', 1, 1, 'complete', ?, last_insert_rowid())",
                               [f"{i:032x}", f"2026-01-01T00:00:{i:02d}"])
    await on_db(store, write)


async def walk(api: Any, path: str, params: dict[str, str]) -> tuple[list[int], set[int]]:
    """Every id of a list, page after page by cursor; the totals the pages said."""
    ids: list[int] = []
    totals: set[int] = set()
    for _ in range(100):  # a cursor that were ignored would give the first page for ever
        cursor = {"after": str(ids[-1])} if ids else {}
        code, body = await api("GET", path, params={**params, "limit": "7", **cursor})
        assert code == 200, body
        totals.add(body["total"])
        if not body["items"]:
            return ids, totals
        ids += [item["id"] for item in body["items"]]
    raise AssertionError(f"{path} {params}: no last page after 100 pages")


async def test_cursor_pages_are_the_offset_pages_with_the_same_total(api, pirus):
    await seed(pirus.store)
    for params in ({}, {"status": "DONE"}, {"status": "ERROR,CANCELED", "pipeline_id": "2"}):
        code, whole = await api("GET", "runs", params={**params, "limit": "1000"})
        assert code == 200
        expected = [r["id"] for r in whole["items"]]
        assert expected == sorted(expected, reverse=True) and expected
        ids, totals = await walk(api, "runs", params)
        assert ids == expected and totals == {len(expected)}, params
        # The cursor and an offset together: the offset counts past the cursor.
        code, page = await api("GET", "runs", params={**params, "after": str(expected[2]),
                                                      "offset": "2", "limit": "3"})
        assert [r["id"] for r in page["items"]] == expected[5:8]
        assert (page["total"], page["offset"]) == (len(expected), 2)


async def test_files_by_source_newest_first_and_by_cursor(api, pirus):
    await seed(pirus.store)
    code, body = await api("GET", "files", params={"source": "upload", "order": "desc"})
    assert code == 200
    uploads = [f["id"] for f in body["items"]]
    assert len(uploads) == RUNS // 3 == body["total"]
    assert uploads == sorted(uploads, reverse=True)
    assert {f["source"] for f in body["items"]} == {"upload"}
    ids, totals = await walk(api, "files", {"source": "upload", "order": "desc"})
    assert ids == uploads and totals == {len(uploads)}
    ids, totals = await walk(api, "files", {})  # oldest first, as before
    assert ids == sorted(ids) and totals == {RUNS + RUNS // 3} == {len(ids)}
    code, body = await api("GET", "files", params={"source": "run", "run_id": "4"})
    assert [(f["source"], f["run_id"]) for f in body["items"]] == [("run", 4)]


async def test_bad_paging_parameters_are_400(api):
    for path, params in [
        ("runs", {"after": "-1"}), ("runs", {"after": "x"}),
        ("runs", {"after": "99999999999999999999"}), ("files", {"after": "1.5"}),
        ("files", {"order": "sideways"}), ("files", {"source": "disk"}),
        ("files", {"order": "DESC"}),
    ]:
        code, body = await api("GET", path, params=params)
        assert code == 400 and body["error"]["code"] == "invalid_request", (path, params)


async def test_uploads_page_carries_each_file_newest_first(api, pirus):
    await seed(pirus.store)
    code, body = await api("GET", "uploads", params={"limit": "4"})
    assert code == 200 and body["total"] == RUNS // 3
    created = [u["created"] for u in body["items"]]
    assert created == sorted(created, reverse=True) and len(created) == 4
    for upload in body["items"]:
        assert upload["file"]["source"] == "upload", upload


async def test_deep_pages_and_start_up_looks_read_indexes(pirus):
    def plans() -> list[str]:
        queries = [
            # the ids of a deep page of runs and of files
            "SELECT id FROM runs ORDER BY id DESC LIMIT 50 OFFSET 90000",
            "SELECT id FROM files ORDER BY id LIMIT 50 OFFSET 90000",
            "SELECT id FROM files WHERE source = 'upload' ORDER BY id DESC LIMIT 50",
            "SELECT * FROM runs WHERE attempts IS NOT NULL",
            "SELECT * FROM uploads ORDER BY created DESC, id LIMIT 100",
            "SELECT * FROM uploads WHERE status IN ('uploading', 'concatenating') OR "
            "(status = 'complete' AND concat = 'partial')",
        ]
        return [" ".join(str(step[3]) for step in pirus.store.db.execute(
            f"EXPLAIN QUERY PLAN {q}").fetchall()) for q in queries]

    for plan in await on_db(pirus.store, plans):
        assert "INDEX" in plan and "TEMP B-TREE" not in plan, plan


async def test_start_up_reads_no_finished_upload(pirus, monkeypatch):
    await seed(pirus.store)
    uploads = pirus.uploads
    orphan = uploads.parts_dir / "orphan"
    orphan.write_bytes(b"x")
    kept = uploads.parts_dir / f"{3:032x}"  # the part file of a known upload stays
    kept.write_bytes(b"x")
    read: list[Any] = []
    get = pirus.store.get

    async def counting_get(table: str, row_id: Any) -> Any:
        read.append((table, row_id))
        return await get(table, row_id)

    monkeypatch.setattr(pirus.store, "get", counting_get)
    await uploads.reconcile()
    assert read == [] and not orphan.exists() and kept.exists()


async def test_the_kernel_client_pages_by_cursor(pirus, jp_fetch, jp_http_port, jp_base_url,
                                                 jp_serverapp, jp_root_dir):
    # jp_fetch: the fixture that makes the in-process server listen on jp_http_port.
    from pirus_jupyter.kernel.client import Client

    await seed(pirus.store)
    client = Client(f"http://127.0.0.1:{jp_http_port}{jp_base_url}",
                    jp_serverapp.identity_provider.token, root_dir=jp_root_dir)

    def in_kernel() -> tuple[list[int], list[int], list[int]]:
        first = client.runs(status="DONE", limit=4)
        after = client.runs(status="DONE", limit=4, after=first[-1])
        uploads = client.files(source="upload", newest_first=True, limit=2)
        more = client.files(source="upload", newest_first=True, after=uploads[-1].id, limit=2)
        return ([r.id for r in first + after], [f.id for f in uploads + more],
                [r.id for r in client.runs(status="DONE", limit=8)])

    try:
        runs, files, expected = await asyncio.to_thread(in_kernel)
    finally:
        client.close()
    assert runs == expected and len(runs) == 8
    assert files == sorted(files, reverse=True) and len(set(files)) == 4


def test_start_up_removes_only_staging_folders(tmp_path):
    from pirus_jupyter.runs.reuse import STAGING_PREFIX, remove_staging

    runs = tmp_path / "runs"
    (runs / f"{STAGING_PREFIX}1" / "outputs").mkdir(parents=True)
    (runs / "7-sample").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs / f"{STAGING_PREFIX}link").symlink_to(outside)  # never followed
    (runs / f"{STAGING_PREFIX}file").write_bytes(b"x")
    remove_staging(runs)
    assert sorted(p.name for p in runs.iterdir()) == [
        f"{STAGING_PREFIX}file", f"{STAGING_PREFIX}link", "7-sample"]
    assert outside.is_dir()
    remove_staging(tmp_path / "missing")  # no runs folder yet: nothing to do
