"""The database's own disk full (SQLITE_FULL): a real server (fake backend, no LXD) whose
database lives on a small tmpfs. A write is a 507 ``insufficient_storage`` (never a 500) and
is rolled back whole, reads keep working, and the same write succeeds once space is freed."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import FAKE_BACKEND
from server import ServerProcess, tmpfs

# Larger than anything SQLite could have kept free in its WAL or the database file, and below
# the 8 MiB cap of a JSON body: the write of this run's config needs fresh pages.
BIG_CONFIG = {"note": "x" * (3 * 1024 * 1024)}


def fill(folder: Path) -> None:
    """Write a file into ``folder`` until its filesystem is full."""
    with open(folder / "filler", "wb") as f:
        block = b"\0" * (64 * 1024)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
        # What is left is smaller than a block: take it byte by byte.
        try:
            while True:
                os.write(f.fileno(), b"\0")
        except OSError:
            pass


@pytest.fixture
def small_db_disk(tmp_path):
    """A 16 MiB tmpfs for the database alone."""
    with tmpfs(tmp_path / "db", "16m", "pirus-test-dbfull") as disk:
        yield disk


def test_database_disk_full_is_a_507_and_recovers(tmp_path, small_db_disk, fake_package):
    root = tmp_path / "root"
    root.mkdir()
    db_path = small_db_disk / "pirus.db"
    server = ServerProcess(root, tmp_path / "data", backend_class=FAKE_BACKEND,
                           db_path=db_path, poll_interval=0.05).start()
    try:
        (root / fake_package.name).write_bytes(fake_package.read_bytes())
        response = server.session.post(server.api("pipelines"), json={"path": fake_package.name})
        assert response.status_code == 202, response.text
        pipeline = server.wait_for(f"pipelines/{response.json()['id']}",
                                   lambda b: b["status"] == "READY")
        create = {"pipeline_id": pipeline["id"], "name": "big", "config": BIG_CONFIG}

        fill(small_db_disk)
        response = server.session.post(server.api("runs"), json=create)
        assert response.status_code == 507, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "insufficient_storage", error
        assert "full" in error["message"]

        # Reads still answer, and nothing of the refused write is there.
        listed = server.session.get(server.api("runs"))
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
        assert server.session.get(server.api(f"pipelines/{pipeline['id']}")).status_code == 200
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0

        (small_db_disk / "filler").unlink()
        response = server.session.post(server.api("runs"), json=create)
        assert response.status_code == 201, response.text
        run = server.session.get(server.api(f"runs/{response.json()['id']}")).json()
        assert run["config"] == BIG_CONFIG
    finally:
        server.stop()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
