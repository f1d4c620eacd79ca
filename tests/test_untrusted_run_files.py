"""Nothing a pipeline writes is trusted (issue 19): its logs and state files are opened by
descriptor, never through a link, regular files only, read in bounded pieces, never on the
event loop.

A hostile busybox pipeline on a real LXD, one server for the module (one run at a time, a
small log cap, a run timeout), whose ``mode`` picks the attack: its log replaced by a symlink
to a host file (or to its own input's host path) while it writes past the cap, its progress
file a symlink to host JSON lines or a FIFO, its exit code a FIFO planted while the server is
down. Then the bounds themselves: a tail of a log of very long lines (linear, bounded reads)
and a pushed run's reads through the LXD file API (on the fake backend: progress, heartbeat,
live log and pulled logs all bounded, a faked heartbeat does not lift the log cap).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pylxd
import pytest
from conftest import FAST_CONFIG, FINAL, requires_lxd, start_run, wait_for, wait_run
from pkgbuild import build_pipeline, fastq
from server import LXD_PREFIX, ServerProcess
from test_security import db_row

from pirus_jupyter.backend.fake import Outcome
from pirus_jupyter.runs import folder


def lxd(test: Any) -> Any:
    """A test on the real LXD (the module also holds tests that need none)."""
    return pytest.mark.lxd(requires_lxd(test))



LOG_CAP = 64 * 1024
RUN_TIMEOUT = 20

# Waits for "go" in its (host-written) inputs folder where a mode says so, then attacks.
HOSTILE_SCRIPT = r"""#!/bin/sh
conf() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$PIRUS_CONFIG_FILE"; }
mode=$(conf mode)
target=$(conf target)
hold() { while true; do sleep 1; done; }
case "$mode" in
  log-link)
    rm -f "$PIRUS_LOGS_DIR/out.log" && ln -s "$target" "$PIRUS_LOGS_DIR/out.log"
    # stdout still goes to the unlinked log: past the cap, where no check sees it
    head -c 300000 /dev/zero | tr '\0' x
    hold ;;
  log-deleted|log-swapped)
    rm -f "$PIRUS_LOGS_DIR/out.log"
    [ "$mode" = log-swapped ] && : >"$PIRUS_LOGS_DIR/out.log"
    # stdout still goes to the unlinked log, and keeps going: no size check sees it
    while true; do head -c 65536 /dev/zero | tr '\0' x; sleep 0.05; done ;;
  progress-link)
    ln -s "$target" "$PIRUS_PROGRESS_FILE"
    echo linked ;;
  progress-fifo)
    mkfifo "$PIRUS_PROGRESS_FILE"
    [ "$target" = hold ] && hold
    echo fifo made ;;
  exit-fifo)
    while [ ! -e "$PIRUS_INPUTS_DIR/go" ]; do sleep 0.2; done
    mkfifo "$(dirname "$PIRUS_PROGRESS_FILE")/exit_code"
    hold ;;
esac
"""
HOSTILE_FORM = {"type": "object", "properties": {"mode": {"type": "string"},
                                                 "target": {"type": "string"}}}


# -- the hostile pipeline on a real LXD ------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """A real server running one run at a time, ``log_max_bytes`` 64 KiB and a run timeout;
    a host file outside the Jupyter root and an input inside it, both larger than the cap."""
    base = tmp_path_factory.mktemp("untrusted")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "big.fastq").write_bytes(fastq(3000))  # > LOG_CAP
    host = base / "host"
    host.mkdir()
    secret = host / "secret.txt"
    secret.write_bytes(f"HOST-FILE-{secrets.token_hex(8)}\n".encode() * 20000)
    lines = host / "lines.jsonl"
    lines.write_text(json.dumps({"progress": {"label": "FROM-THE-HOST", "value": 7}}) + "\n")
    build_pipeline(root / "hostile.tar.gz", name="hostile", script=HOSTILE_SCRIPT,
                   form=HOSTILE_FORM)
    server = ServerProcess(root, base / "data", max_parallel_runs=1, poll_interval=0.1,
                           log_max_bytes=LOG_CAP, run_timeout=RUN_TIMEOUT).start()
    try:
        reply = server.session.post(server.api("pipelines"), json={"path": "hostile.tar.gz"},
                                    timeout=60)
        assert reply.status_code == 202, reply.text
        pipeline = server.wait_for(f"pipelines/{reply.json()['id']}",
                                   lambda b: b["status"] != "INSTALLING", 300)
        assert pipeline["status"] == "READY", pipeline
        yield {"server": server, "root": root, "secret": secret, "lines": lines,
               "pipeline": pipeline}
    finally:
        server.cancel_runs_and_stop()


def hostile_run(world: dict[str, Any], mode: str, target: str = "", **extra: Any
                ) -> dict[str, Any]:
    server = world["server"]
    reply = server.session.post(server.api("runs"), timeout=60, json={
        "pipeline_id": world["pipeline"]["id"], "config": {"mode": mode, "target": target},
        **extra})
    assert reply.status_code == 201, reply.text
    return reply.json()


def run_folder(world: dict[str, Any], run: dict[str, Any]) -> Path:
    return Path(db_row(world["server"], "runs", run["id"])["root_path"])


def wait_for_fifo(world: dict[str, Any], run: dict[str, Any], name: str) -> None:
    """Until the pipeline's FIFO shows in the run's state folder on this host."""
    path = run_folder(world, world["server"].wait_for(
        f"runs/{run['id']}", lambda b: b["status"] in FINAL or b["status"] == "RUNNING", 300))
    world["server"].wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL or (
        (path / ".pirus" / name).exists() and stat.S_ISFIFO(os.lstat(path / ".pirus" /
                                                                     name).st_mode)), 120)


def end_of(world: dict[str, Any], run: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    return world["server"].wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL,
                                    timeout)


@pytest.mark.parametrize("target", ["host file", "own input"])
@lxd
def test_log_replaced_by_a_symlink_is_never_truncated_through(world, target):
    """The pipeline replaces out.log by a symlink to a host file (outside the Jupyter root,
    larger than the cap) or to its own input's host path, and writes past the cap: the run
    ends ERROR saying so, the target is untouched (content and size), nothing of it is read
    through the logs API."""
    if target == "host file":
        path, extra = world["secret"], {}
    else:
        path, extra = world["root"] / "data" / "big.fastq", {"inputs": ["data/big.fastq"]}
    before = path.read_bytes()
    assert len(before) > LOG_CAP
    run = hostile_run(world, "log-link", str(path), **extra)
    ended = end_of(world, run)
    assert path.read_bytes() == before
    assert ended["status"] == "ERROR", ended
    assert "out.log" in ended["error"] and "regular file" in ended["error"], ended["error"]
    session, server = world["server"].session, world["server"]
    for params in (None, {"tail": "5"}):
        log = session.get(server.api(f"runs/{run['id']}/logs/out"), params=params, timeout=30)
        assert log.status_code == 200 and before[:40].decode() not in log.text
    # Never followed; removed when the folder is made safe (at once, the container being
    # stopped before the run ends), or still there just before.
    link = run_folder(world, run) / "logs" / "out.log"
    assert link.is_symlink() or not os.path.lexists(link)


@pytest.mark.parametrize("mode", ["log-deleted", "log-swapped"])
@lxd
def test_log_deleted_or_swapped_is_a_broken_rule(world, mode):
    """The pipeline deletes out.log (or swaps it for a fresh empty file) and keeps writing
    to its stdout, now the unlinked log, far past the cap: the run ends ERROR saying the log
    was deleted or replaced, and its container is gone (the unlinked log's space with it)."""
    run = hostile_run(world, mode)
    ended = end_of(world, run)
    assert ended["status"] == "ERROR", ended
    assert "out.log" in ended["error"], ended["error"]
    assert ("deleted" if mode == "log-deleted" else "replaced") in ended["error"], ended
    containers = {c.name for c in pylxd.Client().instances.all()}
    assert not {n for n in containers if n.startswith(f"{LXD_PREFIX}-run-{run['id']}-")}
    log = run_folder(world, run) / "logs" / "out.log"
    assert not log.exists() or log.stat().st_size <= LOG_CAP


@lxd
def test_symlinked_progress_is_not_followed(world):
    """progress.jsonl a symlink to host JSON lines: they never become the run's progress."""
    run = hostile_run(world, "progress-link", str(world["lines"]))
    ended = end_of(world, run)
    assert ended["status"] == "DONE", ended
    assert ended["progress"]["label"] != "FROM-THE-HOST", ended["progress"]


@lxd
def test_fifo_progress_blocks_nothing(world):
    """progress.jsonl a FIFO: a run still ends on its exit code; a holding one can be
    canceled and frees its slot (the next run, one at a time, starts and ends), and another
    hits the run timeout."""
    ended = end_of(world, hostile_run(world, "progress-fifo"))
    assert ended["status"] == "DONE" and ended["exit_code"] == 0, ended
    held = hostile_run(world, "progress-fifo", "hold")
    wait_for_fifo(world, held, "progress.jsonl")
    canceled = world["server"].session.post(world["server"].api(f"runs/{held['id']}/cancel"),
                                            timeout=60)
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    timed = hostile_run(world, "progress-fifo", "hold")  # starts only once the slot is free
    ended = end_of(world, timed, 300 + RUN_TIMEOUT)
    assert ended["status"] == "ERROR" and "timed out" in ended["error"], ended


@pytest.mark.parametrize("container", ["kept", "deleted"])
@lxd
def test_fifo_exit_code_planted_while_the_server_is_down(world, container):
    """The pipeline plants a FIFO as its exit code while the server is down (and its
    container is then deleted, or not: reconcile reads the exit code, or the monitor does):
    at the next start the server answers, and the run ends ERROR saying why."""
    server = world["server"]
    run = hostile_run(world, "exit-fifo")
    server.wait_for(f"runs/{run['id']}", lambda b: b["status"] == "RUNNING", 300)
    server.stop()
    (run_folder(world, run) / "inputs" / "go").write_text("")
    state = run_folder(world, run) / ".pirus" / "exit_code"
    while not (state.exists() and stat.S_ISFIFO(os.lstat(state).st_mode)):
        os.sched_yield()  # the pipeline makes it within a fraction of a second
    if container == "deleted":
        instance = pylxd.Client().instances.get(db_row(server, "runs", run["id"])[
            "lxd_container"])
        instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    server.start()
    assert server.session.get(server.api(""), timeout=10).status_code == 200
    ended = end_of(world, run, 120)
    assert ended["status"] == "ERROR", ended
    assert "exit_code" in ended["error"] and "regular file" in ended["error"], ended["error"]


@lxd
def test_no_traceback_in_the_server_log(world):
    log = world["server"].log_path.read_text(errors="replace")
    assert "Traceback (most recent call last)" not in log, log[-3000:]



# -- tails: linear, bounded ----------------------------------------------------------------
def long_lines_log(path: Path) -> bytes:
    """Eight lines of 3 MiB each, then 30 short ones."""
    data = b"".join(bytes([65 + i]) * (3 * 1024 * 1024) + b"\n" for i in range(8))
    data += b"".join(f"short {i}\n".encode() for i in range(30))
    path.write_bytes(data)
    return data


@pytest.fixture
def bytes_read(monkeypatch) -> list[int]:
    """The size of every read of a file opened by descriptor (``os.fdopen``) meanwhile."""
    read: list[int] = []
    real_fdopen = os.fdopen

    def counting_fdopen(fd: int, *args: Any, **kwargs: Any):
        handle = real_fdopen(fd, *args, **kwargs)
        real_read = handle.read

        def counted(size: int = -1) -> bytes:
            chunk = real_read(size)
            read.append(len(chunk))
            return chunk

        handle.read = counted
        return handle

    monkeypatch.setattr(os, "fdopen", counting_fdopen)
    return read


def test_tail_of_long_lines_is_right_and_bounded(tmp_path, bytes_read):
    """A tail of a log of 3 MiB lines reads (and returns) at most 1 MiB: the old tail read
    the whole file, joining and counting a growing buffer at every block."""
    log = tmp_path / "err.log"
    long_lines_log(log)
    assert folder.tail_lines(log, 5) == "".join(f"short {i}\n" for i in range(25, 30))
    assert sum(bytes_read) <= 64 * 1024  # the short lines only, not the long ones before them
    bytes_read.clear()
    # into the long lines: their last part, up to the 1 MiB bound, no more read
    tail = folder.tail_lines(log, 35)
    assert sum(bytes_read) <= 1024 * 1024
    assert tail.endswith("short 29\n") and tail.count("\n") == 31
    assert tail.startswith("H" * 1000) and len(tail.encode()) <= 1024 * 1024 + 1


def test_tail_across_many_blocks_is_exact(tmp_path, bytes_read):
    log = tmp_path / "out.log"
    log.write_bytes(b"".join(b"x" * 1000 + b"\n" for _ in range(2000)))
    tail = folder.tail_lines(log, 500, block=4096)
    assert tail == "\n".join(["x" * 1000] * 500) + "\n"
    assert sum(bytes_read) <= 501 * 1001 + 4096  # each block read once


def test_state_files_that_are_not_regular_are_refused(tmp_path):
    """Unit: the log cap never truncates through a link; a FIFO, a symlink, a folder or a
    hard link in place of a log or state file is never opened through (never blocks)."""
    host = tmp_path / "host.txt"
    host.write_bytes(b"host" * 100)
    (tmp_path / "link").mkdir()
    paths = folder.RunPaths(tmp_path, tmp_path, tmp_path, tmp_path / "link", tmp_path)
    (tmp_path / "link" / "out.log").symlink_to(host)
    folder.truncate_logs(paths, 10)
    assert host.read_bytes() == b"host" * 100

    from pirus_jupyter.errors import RuleBroken
    from pirus_jupyter.files import open_in_folder

    with pytest.raises(RuleBroken):
        folder.log_sizes(paths)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "f")
    (tmp_path / "link" / "f").symlink_to(host)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").mkdir()
    (tmp_path / "hard").mkdir()
    os.link(host, tmp_path / "hard" / "f")
    for kind in ("fifo", "link", "dir", "hard"):
        for write in (False, True):
            with pytest.raises(RuleBroken):
                open_in_folder(tmp_path / kind, "f", write=write)
    assert open_in_folder(tmp_path, "missing") is None


# -- a pushed run's reads through the LXD file API (fake backend) ---------------------------
PUSH_CONFIG = {**FAST_CONFIG, "data_transfer": "push", "log_max_bytes": 4096}


@pytest.fixture
def pirus_config():
    return dict(PUSH_CONFIG)


async def test_pushed_run_reads_are_bounded_and_its_log_capped(api, fake, install,
                                                               fake_package, monkeypatch):
    """On the fake backend, as an LXD cluster member would (the same code paths through
    ``read_file``/``pull_file``): every read of the progress file, heartbeat, exit code and
    live log asks for a bounded number of bytes; progress past the pushed cap is not read; a
    faked heartbeat (logs "empty") does not let a log past the cap: it is pulled cut and
    the run ends ERROR."""
    from pirus_jupyter.runs import data

    monkeypatch.setattr(data, "PUSHED_PROGRESS_MAX_BYTES", 64 * 1024, raising=False)
    asked: list[tuple[str, int | None]] = []
    real_read = fake.read_file

    def bounded_read(name: str, path: str, *bounds: int | None):  # max_bytes, offset
        asked.append((path, bounds[0] if bounds else None))
        return real_read(name, path, *bounds)

    monkeypatch.setattr(fake, "read_file", bounded_read)
    pipeline = await install(fake_package)
    run = await start_run(api, pipeline)
    box = fake.container(run["id"])
    progress = box.environment["PIRUS_PROGRESS_FILE"]
    early = json.dumps({"progress": {"label": "early"}}).encode() + b"\n"
    late = json.dumps({"progress": {"label": "past the cap"}}).encode() + b"\n"
    filler = (b"x" * 1000 + b"\n") * 80  # 80 KB of lines that are not JSON
    with fake._lock:
        box.files[progress] = early + filler + late
    seen = await wait_for(api, "runs", run["id"], timeout=15,
                          until=lambda b: b["progress"]["label"] in ("early", "past the cap"))
    assert seen["progress"]["label"] == "early"  # the line past the cap is not read
    logs = box.environment["PIRUS_LOGS_DIR"]
    with fake._lock:  # the pipeline floods its log, stops the heartbeat and fakes its own
        box.beating = False
        box.files[f"{logs}/out.log"] = b"y" * 100_000
        box.files[f"{box.state_dir}/heartbeat"] = b"999 0 0\n"
    code, text = await api("GET", "runs", run["id"], "logs", "out")
    assert code == 200 and len(text) <= 4096
    fake.finish(run["id"], Outcome())
    ended = await wait_run(api, run["id"], "DONE", "ERROR")
    assert ended["status"] == "ERROR" and "exceeded 4096 bytes" in ended["error"], ended
    assert ended["progress"]["label"] == "early"
    assert asked and all(size is not None for _, size in asked), asked
    assert max(size for path, size in asked if path == progress) <= 64 * 1024
    assert all(size <= 256 for path, size in asked if path.endswith("/heartbeat"))
    code, text = await api("GET", "runs", run["id"], "logs", "out")
    assert code == 200 and text == "y" * 4096
