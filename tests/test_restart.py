"""A real server process killed with SIGKILL mid-run and restarted: runs are reconciled with
LXD (tracked again to DONE, or ended in ERROR with a reason), never left stuck."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import FINAL, requires_lxd
from server import ServerProcess

pytestmark = [pytest.mark.lxd, requires_lxd]


def install(server: ServerProcess, package: Path) -> dict:
    shutil.copyfile(package, server.root_dir / package.name)
    response = server.session.post(server.api("pipelines"), json={"path": package.name})
    assert response.status_code == 202, response.text
    return server.wait_for(f"pipelines/{response.json()['id']}",
                           lambda b: b["status"] == "READY")


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = ServerProcess(root, tmp_path / "data", max_parallel_runs=2, poll_interval=0.1)
    yield proc.start()
    proc.stop()


def start_run(server: ServerProcess, pipeline: dict) -> dict:
    response = server.session.post(server.api("runs"), json={"pipeline_id": pipeline["id"]})
    assert response.status_code == 201
    return server.wait_for(f"runs/{response.json()['id']}",
                           lambda b: b["status"] == "RUNNING" and b["progress"]["value"] >= 1)


def container_of(server: ServerProcess, run_id: int) -> str:
    with sqlite3.connect(server.data_dir / "pirus.db") as db:
        return db.execute("SELECT lxd_container FROM runs WHERE id = ?", [run_id]).fetchone()[0]


def test_run_survives_server_kill_and_completes(server, sleepy_package):
    pipeline = install(server, sleepy_package)
    run = start_run(server, pipeline)
    waiting = server.session.post(server.api("runs"), json={"pipeline_id": pipeline["id"]}).json()
    server.kill()
    server.start()
    done = server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL, timeout=90)
    assert done["status"] == "DONE", done
    assert done["progress"]["value"] == 25
    assert [o["name"] for o in done["outputs"]] == ["result.txt"]
    queued = server.wait_for(f"runs/{waiting['id']}", lambda b: b["status"] in FINAL, timeout=90)
    assert queued["status"] == "DONE"
    with sqlite3.connect(server.data_dir / "pirus.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_container_deleted_while_server_down_ends_in_error(server, sleepy_package):
    pipeline = install(server, sleepy_package)
    run = start_run(server, pipeline)
    server.kill()
    subprocess.run(["lxc", "delete", "--force", container_of(server, run["id"])], check=True)
    server.start()
    ended = server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL, timeout=60)
    assert ended["status"] == "ERROR"
    assert "disappeared" in ended["error"]


def test_container_deleted_from_outside_while_running(server, sleepy_package):
    pipeline = install(server, sleepy_package)
    run = start_run(server, pipeline)
    subprocess.run(["lxc", "delete", "--force", container_of(server, run["id"])], check=True)
    ended = server.wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL, timeout=60)
    assert ended["status"] == "ERROR"
    assert "container" in ended["error"]
