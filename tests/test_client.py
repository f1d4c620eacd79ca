"""The notebook API against a real ``jupyter server`` subprocess with the extension and real LXD:
connecting (explicit arguments, environment, running-server discovery, clear failures), server
errors as exceptions, a run's life through the client, waiting by push and by polling,
pause/resume/cancel, logs, outputs with hashes, uploads, records and reruns, and the live run
widget fed by the events websocket."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_lxd
from pkgbuild import fastq
from server import ServerProcess, free_port

import pirus_jupyter as pirus
from pirus_jupyter.kernel.client import Client
from pirus_jupyter.kernel.errors import PirusAPIError, PirusConnectionError
from pirus_jupyter.kernel.records import Run
from pirus_jupyter.widgets.record import RunRecord
from pirus_jupyter.widgets.rerun import RerunError

pytestmark = [pytest.mark.lxd, requires_lxd]

REPO = Path(__file__).resolve().parent.parent
FASTQ_COUNT = REPO / "examples" / "pipelines" / "fastq-count"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected(path: Path, min_length: int) -> str:
    """``reads<TAB>bases`` as fastq-count reports them."""
    lengths = [len(line) for line in path.read_text().splitlines()[1::4]]
    kept = [n for n in lengths if n >= min_length]
    return f"{len(kept)}\t{sum(kept)}"


@pytest.fixture(scope="session")
def fastq_count_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pirus_jupyter.packaging import build_package

    return build_package(FASTQ_COUNT, tmp_path_factory.mktemp("fc") / "fastq-count.tar.gz")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with its own runtime folder (so that running-server discovery only sees
    it) and no ``PIRUS_SERVER_*`` variables in this process."""
    base = tmp_path_factory.mktemp("live")
    (base / "root").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
        mp.delenv("PIRUS_SERVER_URL", raising=False)
        mp.delenv("PIRUS_SERVER_TOKEN", raising=False)
        server = ServerProcess(base / "root", base / "data", max_parallel_runs=2,
                               poll_interval=0.1)
        server.start()
        try:
            yield server
        finally:
            _cleanup(server)
            server.stop()


def _cleanup(server: ServerProcess) -> None:
    """Cancel what still runs and uninstall the pipelines (their LXD image aliases go)."""
    try:
        client = Client(server.url, server.token)
        for run in client.runs(status=["WAITING", "INITIALIZING", "RUNNING", "PAUSE"]):
            with contextlib.suppress(PirusAPIError):
                run.cancel()
        time.sleep(0.5)
        for pipeline in client.pipelines():
            with contextlib.suppress(PirusAPIError):
                pipeline.remove()
        client.close()
    except Exception:
        pass


@pytest.fixture
def client(live: ServerProcess) -> Iterator[Client]:
    client = pirus.connect(live.url, live.token)
    yield client
    client.close()


@pytest.fixture(scope="module")
def fastq_count(live: ServerProcess, fastq_count_package: Path) -> Any:
    with pirus.connect(live.url, live.token) as client:
        target = live.root_dir / "fastq-count.tar.gz"
        target.write_bytes(fastq_count_package.read_bytes())
        pipeline = client.install(target)  # under the root: installed in place
        assert pipeline.status == "READY" and pipeline.name == "fastq-count"
        return pipeline


@pytest.fixture(scope="module")
def sleepy(live: ServerProcess, sleepy_package: Path) -> Any:
    with pirus.connect(live.url, live.token) as client:
        return client.install(sleepy_package, progress=False)  # outside the root: uploaded


@pytest.fixture(scope="module")
def reads(live: ServerProcess) -> Path:
    data = live.root_dir / "data"
    data.mkdir(exist_ok=True)
    (data / "a.fastq").write_bytes(fastq(10))
    (data / "b.fastq").write_bytes(fastq(4))
    return data


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- connecting ---------------------------------------------------------------------------
def test_connect_explicit_arguments_and_environment(live: ServerProcess,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client = pirus.connect(live.url, live.token)
    info = client.info()
    assert info["api_version"] == pirus.API_VERSION and info["lxd"]["connected"] is True
    assert client.root_dir == live.root_dir.resolve()  # found in the running-server list
    client.close()
    # a URL without a token: the running server's own token is used
    assert pirus.connect(live.url.rstrip("/")).info()["version"] == pirus.__version__
    monkeypatch.setenv("PIRUS_SERVER_URL", live.url)
    monkeypatch.setenv("PIRUS_SERVER_TOKEN", live.token)
    monkeypatch.chdir("/")  # no running server contains it: the environment must be used
    env_client = pirus.connect()
    assert env_client.base_url == live.url and env_client.token == live.token
    assert env_client.info()["api_version"] == "1"


def test_connect_finds_the_running_server_containing_the_cwd(
        live: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = live.root_dir / "project" / "notebooks"
    sub.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(sub)
    client = pirus.connect()
    assert client.base_url == live.url and client.token == live.token
    assert client.info()["api_version"] == "1"


def test_connect_says_what_it_tried(live: ServerProcess, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # outside the server's root
    with pytest.raises(PirusConnectionError) as info:
        pirus.connect()
    message = str(info.value)
    assert "PIRUS_SERVER_URL (not set)" in message and str(tmp_path) in message
    assert live.url in message  # the servers it saw
    dead = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(PirusConnectionError) as info:
        pirus.connect(dead, "x")
    assert dead in str(info.value) and "connect(url, token)" in str(info.value)
    with pytest.raises(PirusAPIError) as refused:
        pirus.connect(live.url, "wrong-token")
    assert refused.value.status == 403 and "token" in str(refused.value)


# -- errors -------------------------------------------------------------------------------
def test_server_errors_carry_the_servers_message(client: Client, fastq_count: Any) -> None:
    with pytest.raises(PirusAPIError) as info:
        client.run(424242)
    assert (info.value.status, info.value.code) == (404, "not_found")
    assert info.value.message == "no run with id 424242"
    pipeline = client.pipeline("fastq-count")
    with pytest.raises(PirusAPIError) as info:
        pipeline.run(config={"min_length": -1})
    error = info.value
    assert (error.status, error.code) == (400, "invalid_config")
    assert "less than the minimum of 0" in error.message
    assert error.details == [{"field": "min_length", "message": "-1 is less than the minimum "
                                                                "of 0"}]
    with pytest.raises(PirusAPIError) as info:
        pipeline.run(inputs=["no/such.fastq"])
    assert info.value.status == 404 and "no/such.fastq" in info.value.message
    with pytest.raises(PirusAPIError) as info:
        client.pipeline("no-such-pipeline")
    assert "fastq-count" in info.value.message  # lists what is installed


# -- runs ---------------------------------------------------------------------------------
def test_run_lifecycle_outputs_logs_and_record(client: Client, fastq_count: Any, reads: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = client.pipeline("fastq-count")
    assert pipeline.id == fastq_count.id and pipeline.version == "1.0.0"
    assert pipeline.schema()["properties"]["min_length"]["default"] == 0
    monkeypatch.chdir(reads)  # a local path relative to the cwd, turned root-relative
    run = pipeline.run(config={"min_length": 11}, inputs=["a.fastq", reads / "b.fastq"],
                       name="count reads")
    assert isinstance(run, Run) and run.status == "WAITING" and run.name == "count reads"
    assert [i["path"] for i in run.inputs] == ["data/a.fastq", "data/b.fastq"]
    assert run.config == {"min_length": 11}
    started = time.monotonic()
    assert run.wait(timeout=120) is run
    assert run.status == "DONE" and run.done and run.exit_code == 0, run.error
    assert time.monotonic() - started < 60
    assert client.events.connections >= 1  # waited on the websocket
    assert run.progress["value"] == run.progress["max"] == 2
    (counts,) = run.outputs
    assert counts["name"] == "counts.tsv"
    local = live_path(client, counts["path"])
    assert counts["sha256"] == sha256(local) and counts["size"] == local.stat().st_size
    assert run.read_output("counts.tsv") == local.read_bytes()
    assert run.read_output("counts.tsv").decode().splitlines() == [
        "file\treads\tbases", f"a.fastq\t{expected(reads / 'a.fastq', 11)}",
        f"b.fastq\t{expected(reads / 'b.fastq', 11)}"]
    assert "wrote /pipeline/outputs/counts.tsv" in run.logs("err")
    assert run.logs("err", tail=1).strip().endswith("(2 file(s))")
    assert run.logs("out") == ""
    assert run.elapsed is not None and run.elapsed > 0
    # listing
    assert run in client.runs(status="DONE", pipeline="fastq-count")
    assert run not in client.runs(status=["ERROR", "CANCELED"])
    assert [f.sha256 for f in client.files(run)] == [counts["sha256"]]
    # the record
    record = run.record()
    assert record.status == "DONE" and record.config == {"min_length": 11}
    assert record.pipeline["name"] == "fastq-count" and record.pipeline["version"] == "1.0.0"
    assert record.pipeline["fingerprint"] == sha256(live_path(client, "fastq-count.tar.gz"))
    assert [i["sha256"] for i in record.inputs] == [sha256(reads / "a.fastq"),
                                                    sha256(reads / "b.fastq")]
    assert record.output_hashes == {"counts.tsv": counts["sha256"]}
    assert record.metrics and record.metrics["wall_seconds"] > 0
    bundle = run._repr_mimebundle_()  # displaying a run leaves its record
    assert bundle["application/vnd.pirus.run+json"]["run"]["id"] == run.id


def live_path(client: Client, relative: str) -> Path:
    assert client.root_dir is not None
    return client.root_dir / relative


def test_wait_falls_back_to_polling_when_the_socket_fails(
        client: Client, sleepy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/nothing"
    monkeypatch.setattr(type(client.events), "url", property(lambda self: dead))
    calls = []
    original = Run.refresh

    def counting(self: Run) -> Run:
        calls.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(Run, "refresh", counting)
    run = client.pipeline(sleepy.id).run()  # about 5 s of steps
    run.wait(timeout=120)
    assert run.status == "DONE"
    assert client.events.connections == 0 and client.events.last_error
    assert 3 <= len(calls) < 40  # polled, with backoff: not a tight loop
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[-1] > gaps[0] and max(gaps) > 0.5


def test_wait_timeout_pause_resume_cancel(client: Client, sleepy: Any) -> None:
    run = sleepy.run(name="sleepy")
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.5)
    woke = []
    sub = client.events.subscribe(lambda e: woke.append(e), run_id=run.id)
    wait_until(lambda: run.refresh().status == "RUNNING" and run.progress["value"] >= 2,
               what="RUNNING with progress")
    assert run.pause().status == "PAUSE"
    with pytest.raises(PirusAPIError) as info:
        run.pause()
    assert info.value.status == 409 and info.value.code == "illegal_transition"
    frozen = run.refresh().progress["value"]
    time.sleep(0.8)
    assert run.refresh().status == "PAUSE" and run.progress["value"] <= frozen + 1
    assert run.resume().status == "RUNNING"
    assert run.cancel().status == "CANCELED"
    assert run.wait(timeout=5).status == "CANCELED"
    with pytest.raises(PirusAPIError) as info:
        run.resume()
    assert info.value.status == 409
    sub.close()
    statuses = [e["data"]["status"] for e in woke if e["type"] == "run.updated"]
    assert "PAUSE" in statuses and statuses[-1] == "CANCELED"  # pushed to subscribers


def test_run_widget_is_fed_by_the_websocket(client: Client, sleepy: Any) -> None:
    run = sleepy.run(name="watched")
    widget = run.widget(log_lines=3)
    wait_until(lambda: "DONE" in widget.status_label.value, timeout=120,
               what="the widget to show DONE")
    assert widget.updates >= 5  # progress events arrived one by one
    assert widget.progress.value == widget.progress.max == 25
    assert "step 25" in widget.progress_label.value
    assert "step 25" in widget.logs.value
    assert "result.txt" in widget.outputs.value
    assert client.events.listener_count == 0  # the finished widget let go
    widget.close()


def test_upload_input_then_run_and_rerun(client: Client, fastq_count: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    local = tmp_path / "uploaded reads.fastq"
    local.write_bytes(fastq(7, length=12))
    sent: list[tuple[int, int]] = []
    uploaded = client.upload(local, progress=lambda done, total: sent.append((done, total)))
    assert uploaded.sha256 == sha256(local) and uploaded.size == local.stat().st_size
    assert uploaded.path.startswith("pirus-uploads/") and sent[-1] == (local.stat().st_size,) * 2
    assert uploaded.read_bytes() == local.read_bytes()
    again = tmp_path / "other.fastq"
    again.write_bytes(fastq(3))
    client.upload(again)  # default progress outside a kernel: a text line on stderr
    assert "Uploading other.fastq" in capsys.readouterr().err
    run = client.pipeline("fastq-count").run(inputs=[uploaded], config={"min_length": 13})
    run.wait(timeout=120)
    assert run.status == "DONE", run.error
    record = run.record()
    assert record.inputs[0]["sha256"] == uploaded.sha256
    # rerun from the record's JSON: same pipeline, config and inputs, same outputs
    copy = pirus.rerun(record.to_json(), client, wait=True, timeout=120)
    assert copy.id != run.id and copy.status == "DONE"
    assert copy.config == run.config and [i["path"] for i in copy.inputs] == [uploaded.path]
    assert record.compare(copy).identical
    # a changed config is a change, applied over the recorded one
    changed = pirus.rerun(record, client, config={"min_length": 0}, name="all reads")
    assert changed.config == {"min_length": 0} and changed.name == "all reads"
    changed.wait(timeout=120)
    assert not record.compare(changed).identical


def test_rerun_refuses_a_different_image_or_changed_inputs(client: Client, fastq_count: Any,
                                                           reads: Path) -> None:
    target = reads / "c.fastq"
    target.write_bytes(fastq(5))
    run = client.pipeline("fastq-count").run(inputs=["data/c.fastq"]).wait(timeout=120)
    record = run.record()
    data = record.to_json()
    data["pipeline"]["fingerprint"] = "0" * 64
    with pytest.raises(RerunError) as info:
        pirus.rerun(data, client)
    assert "differs from the recorded one" in str(info.value)
    assert "allow_image_change=True" in str(info.value)
    forced = pirus.rerun(data, client, allow_image_change=True)
    forced.cancel()
    data = record.to_json()
    data["pipeline"]["version"] = "9.9"
    with pytest.raises(RerunError) as info:
        pirus.rerun(data, client)
    assert "not installed" in str(info.value)
    target.write_bytes(fastq(6))  # the input changed since the run
    with pytest.raises(RerunError) as info:
        pirus.rerun(record, client)
    assert "data/c.fastq changed" in str(info.value)
    anyway = pirus.rerun(record, client, verify_inputs=False)
    anyway.cancel()
    # a run id names its record too
    assert RunRecord.load(run.id, client).run["id"] == run.id
    with pytest.raises(TypeError):
        pirus.rerun(record, client, colour="blue")


def test_files_databases_and_info(client: Client, live: ServerProcess) -> None:
    assert client.databases() == []
    (live.data_dir / "databases" / "hg19").mkdir(parents=True, exist_ok=True)
    (live.data_dir / "databases" / "hg19" / "chr1.fa").write_text(">chr1\nACGT\n")
    assert [d["name"] for d in client.databases()] == ["hg19"]
    assert all(f.sha256 for f in client.files())
    assert client.info()["limits"]["max_parallel_runs"] == 2
    listing = {e["name"]: e for e in client.list_dir("")}
    assert listing["data"]["type"] == "directory"


def test_text_progress_reporter() -> None:
    from pirus_jupyter.kernel.progress import TextProgress

    stream = io.StringIO()
    report = TextProgress("x.fastq", stream)
    for sent in (0, 512, 1024):
        report(sent, 1024)
    report.close()
    assert stream.getvalue().count("\r") == 3 and "100.0%" in stream.getvalue()
    assert os.linesep in stream.getvalue() or "\n" in stream.getvalue()
    assert sys.stderr is not stream


def test_events_subscriber_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    server = ServerProcess(tmp_path / "root", tmp_path / "data").start()
    client = Client(server.url, server.token)
    try:
        seen: list[dict[str, Any]] = []
        subscription = client.events.subscribe(seen.append)
        assert client.events.wait_connected(10)
        server.kill()
        wait_until(lambda: not client.events.connected.is_set(), 10, "the socket to drop")
        server.start()
        assert client.events.wait_connected(60), client.events.last_error
        assert client.events.connections == 2
        assert [e["type"] for e in seen].count("events.connected") == 2  # "re-read state"
        tiny = tmp_path / "tiny.fastq"
        tiny.write_bytes(fastq(1))
        client.upload(tiny, progress=False)
        wait_until(lambda: any(e["type"] == "file.created" for e in seen), 10,
                   "an event after the reconnection")
        subscription.close()
        assert client.events.listener_count == 0
    finally:
        client.close()
        server.stop()
