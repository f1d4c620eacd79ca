"""GA4GH TES 1.1 on a real server and real LXD, driven by the real py-tes client: a task with
every kind of input and output runs to COMPLETE with its outputs written back byte for byte;
an executor's failure is EXECUTOR_ERROR, an http input a quick SYSTEM_ERROR, a cancel
CANCELED; lists page and filter; bad tasks are 400 TES errors that create nothing. Every
answer is validated with pydantic-tes's models and against the official TES OpenAPI
(pirus_jupyter/tes/openapi.yaml); the tasks show as runs with ``origin: "tes"``."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tes
import yaml
from conftest import requires_lxd
from openapi_schema_validator import OAS30Validator
from pkgbuild import build_pipeline
from pydantictes import models as ptes
from server import ServerProcess
from tools import tool_venv, tools_dir

import pirus_jupyter
from pirus_jupyter.packaging import build_package_from_parts

pytestmark = [pytest.mark.lxd, requires_lxd]

SPEC_PATH = Path(pirus_jupyter.__file__).parent / "tes" / "openapi.yaml"
RUNNER = Path(__file__).resolve().parent.parent / "examples" / "tes" / "snakemake-runner"


def _str_keys(value: Any) -> Any:
    # YAML reads the spec's status codes (200:) as integers
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value


SPEC = _str_keys(yaml.safe_load(SPEC_PATH.read_text()))


def check_schema(name: str, body: Any, *, minimal: bool = False) -> None:
    """``body`` against the official document's schema ``name``. The spec's MINIMAL view
    (id and state only) contradicts its own ``tesTask.required: [executors]``: a MINIMAL task
    is checked without that requirement."""
    spec = copy.deepcopy(SPEC)
    if minimal:
        spec["components"]["schemas"]["tesTask"].pop("required")
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    OAS30Validator(schema).validate(body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("tes")
    root = base / "root"
    (root / "data" / "tree" / "sub").mkdir(parents=True)
    (root / "data" / "in.txt").write_bytes(b"alpha\nbeta\ngamma\n")
    (root / "data" / "tree" / "one.txt").write_bytes(b"1\n")
    (root / "data" / "tree" / "sub" / "two.txt").write_bytes(b"2\n")
    build_pipeline(root / "tools.tar.gz", name="tools", script="#!/bin/sh\necho pipeline\n")
    (base / "outside.txt").write_text("not in the root\n")
    server = ServerProcess(root, base / "data", max_parallel_runs=3, poll_interval=0.1,
                           tes_shared_folders="shared").start()
    try:
        reply = server.session.post(server.api("pipelines"), json={"path": "tools.tar.gz"},
                                    timeout=120)
        assert reply.status_code in (201, 202), reply.text
        server.wait_for(f"pipelines/{reply.json()['id']}",
                        lambda p: p["status"] in ("READY", "ERROR"), timeout=180)
        yield {"server": server, "root": root, "base": base,
               "client": tes.HTTPClient(server.url, token=server.token, timeout=60),
               "url": server.url + "ga4gh/tes/v1", "server_url": server.url}
    finally:
        server.cancel_runs_and_stop()


def raw(world: dict[str, Any], method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request as any TES client sends it: ``Authorization: Bearer <token>``."""
    headers = {"Authorization": f"Bearer {world['server'].token}",
               "Content-Type": "application/json"}
    return requests.request(method, world["url"] + path, headers=headers, timeout=60, **kwargs)


def get_task(world: dict[str, Any], task_id: str, view: str) -> dict[str, Any]:
    reply = raw(world, "GET", f"/tasks/{task_id}", params={"view": view})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    check_schema("tesTask", body, minimal=view == "MINIMAL")
    if view == "MINIMAL":
        assert set(body) == {"id", "state"}
        ptes.TesState(body["state"])
    else:
        ptes.TesTask.model_validate(body)
    return body


def wait_state(world: dict[str, Any], task_id: str, *states: str,
               timeout: float = 120) -> dict[str, Any]:
    # py-tes's own wait() stops at any state but QUEUED/INITIALIZING/RUNNING
    done = world["client"].wait(task_id, timeout=timeout)
    task = get_task(world, task_id, "FULL")
    assert done.state in states, json.dumps(task["logs"], indent=1)
    return task


def create(world: dict[str, Any], task: tes.Task) -> str:
    task_id = world["client"].create_task(task)
    assert isinstance(task_id, str) and task_id
    return task_id


def count_runs(world: dict[str, Any]) -> int:
    server = world["server"]
    return int(server.session.get(server.api("runs"), timeout=30).json()["total"])


def test_service_info(world):
    info = world["client"].get_service_info()
    body = raw(world, "GET", "/service-info").json()
    ptes.TesServiceInfo.model_validate(body)
    check_schema("tesServiceInfo", body)
    assert info.type["artifact"] == "tes" and body["type"]["version"] == "1.1.0"
    assert body["storage"] == [world["root"].resolve().as_uri(),
                               (world["root"] / "shared").resolve().as_uri()]


SCRIPT_ONE = "echo from-one; echo oops >&2; exit 3"
SCRIPT_TWO = (
    'set -e; [ "$GREETING" = "hello world" ]; [ "$(pwd)" = /work ]; '
    "read first; echo \"first=$first\" > /out/first.txt; "
    "cat /in/file.txt /in/inline.txt > /out/joined.txt; "
    "cp -R /in/tree /out/tree; "
    "for n in 1 2 3; do echo $n > /out/part-$n.csv; done; "
    "echo two-says-hi")


def full_task(root: Path, name: str) -> tes.Task:
    return tes.Task(
        name=name, description="every kind of input and output",
        tags={"project": "tes-test", "kind": "full"},
        resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
        volumes=["/scratch"],
        inputs=[
            tes.Input(url=(root / "data" / "in.txt").as_uri(), path="/in/file.txt"),
            tes.Input(content="inline line\n", path="/in/inline.txt"),
            tes.Input(url=(root / "data" / "tree").as_uri(), path="/in/tree",
                      type="DIRECTORY"),
        ],
        outputs=[
            tes.Output(url=(root / "results" / "joined.txt").as_uri(), path="/out/joined.txt"),
            tes.Output(url=(root / "results" / "first.txt").as_uri(), path="/out/first.txt"),
            tes.Output(url=(root / "results" / "tree").as_uri(), path="/out/tree",
                       type="DIRECTORY"),
            tes.Output(url=(root / "results" / "parts").as_uri(), path="/out/part-*.csv",
                       path_prefix="/out/"),
            tes.Output(url=(root / "results" / "two.stdout").as_uri(), path="/logs/two.out"),
        ],
        executors=[
            tes.Executor(image="tools", command=["sh", "-c", SCRIPT_ONE], ignore_error=True),
            tes.Executor(image="tools:1.0", command=["sh", "-c", SCRIPT_TWO], workdir="/work",
                         stdin="/in/file.txt", stdout="/logs/two.out",
                         env={"GREETING": "hello world"}),
        ],
    )


def test_a_task_runs_to_complete_with_its_outputs_written_back(world):
    root = world["root"]
    task_id = create(world, full_task(root, "full-task"))
    task = wait_state(world, task_id, "COMPLETE")
    results = root / "results"
    assert (results / "joined.txt").read_bytes() == b"alpha\nbeta\ngamma\ninline line\n"
    assert (results / "first.txt").read_bytes() == b"first=alpha\n"
    assert (results / "tree" / "one.txt").read_bytes() == b"1\n"
    assert (results / "tree" / "sub" / "two.txt").read_bytes() == b"2\n"
    assert sorted(p.name for p in (results / "parts").iterdir()) == [
        "part-1.csv", "part-2.csv", "part-3.csv"]
    assert (results / "two.stdout").read_bytes() == b"two-says-hi\n"

    log = task["logs"][0]
    assert [e["exit_code"] for e in log["logs"]] == [3, 0]
    assert log["logs"][0]["stdout"] == "from-one\n" and log["logs"][0]["stderr"] == "oops\n"
    assert log["logs"][1]["stdout"] == "two-says-hi\n"
    assert all(e["start_time"] <= e["end_time"] for e in log["logs"])
    written = {o["url"]: o for o in log["outputs"]}
    joined = (results / "joined.txt").as_uri()
    assert written[joined]["size_bytes"] == str((results / "joined.txt").stat().st_size)
    assert written[joined]["path"] == "/out/joined.txt"
    assert written[(results / "parts" / "part-2.csv").as_uri()]["path"] == "/out/part-2.csv"
    assert written[(results / "tree" / "sub" / "two.txt").as_uri()]["path"] == \
        "/out/tree/sub/two.txt"
    assert len(log["outputs"]) == 8
    assert task["inputs"][1]["content"] == "inline line\n"
    assert task["tags"] == {"project": "tes-test", "kind": "full"}
    assert task["resources"] == {"cpu_cores": 1, "ram_gb": 0.5}

    basic = get_task(world, task_id, "BASIC")
    assert "content" not in basic["inputs"][1]
    assert all("stdout" not in e and "stderr" not in e for e in basic["logs"][0]["logs"])
    assert "system_logs" not in basic["logs"][0]
    assert get_task(world, task_id, "MINIMAL") == {"id": task_id, "state": "COMPLETE"}
    # the same through py-tes's own models
    assert world["client"].get_task(task_id, "FULL").logs[0].logs[1].exit_code == 0

    # a TES task is a Pirus run like any other, marked as such
    server = world["server"]
    run = server.session.get(server.api(f"runs/{task_id}"), timeout=30).json()
    assert run["origin"] == "tes" and run["status"] == "DONE"
    assert run["name"] == "full-task" and run["pipeline_name"] == "tools"


def test_an_executor_failure_is_executor_error_and_stops_the_task(world):
    task_id = create(world, tes.Task(name="failing", executors=[
        tes.Executor(image="tools", command=["sh", "-c", "echo bad >&2; exit 7"]),
        tes.Executor(image="tools", command=["echo", "never"]),
    ]))
    task = wait_state(world, task_id, "EXECUTOR_ERROR")
    log = task["logs"][0]
    assert [e["exit_code"] for e in log["logs"]] == [7]
    assert log["logs"][0]["stderr"] == "bad\n"
    assert any("exited with code 7" in line for line in log["system_logs"])


def test_a_missing_output_is_a_system_error(world):
    task_id = create(world, tes.Task(name="no-output", executors=[
        tes.Executor(image="tools", command=["true"])], outputs=[
        tes.Output(url=(world["root"] / "never.txt").as_uri(), path="/out/never.txt")]))
    task = wait_state(world, task_id, "SYSTEM_ERROR")
    assert any("/out/never.txt is missing" in line for line in task["logs"][0]["system_logs"])
    assert not (world["root"] / "never.txt").exists()


def test_cancel_a_running_task(world):
    client = world["client"]
    task_id = create(world, tes.Task(name="sleeper", executors=[
        tes.Executor(image="tools", command=["sleep", "600"])]))
    deadline = time.monotonic() + 120
    while client.get_task(task_id, "MINIMAL").state != "RUNNING":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.2)
    client.cancel_task(task_id)
    assert get_task(world, task_id, "BASIC")["state"] == "CANCELED"
    reply = raw(world, "POST", f"/tasks/{task_id}:cancel")  # again: nothing to do, no error
    assert reply.status_code == 200 and reply.json() == {}
    check_schema("tesCancelTaskResponse", reply.json())
    server = world["server"]
    assert server.session.get(server.api(f"runs/{task_id}"), timeout=30).json()["status"] == \
        "CANCELED"


def http_task(name: str, **tags: str) -> tes.Task:
    return tes.Task(name=name, tags=tags, inputs=[
        tes.Input(url="https://example.org/reads.fastq", path="/in/reads.fastq")],
        executors=[tes.Executor(image="tools", command=["cat", "/in/reads.fastq"])])


def test_an_http_input_is_a_system_error_at_once(world):
    reply = raw(world, "POST", "/tasks", data=http_task("http-input").as_json())
    assert reply.status_code == 200, reply.text
    ptes.TesCreateTaskResponse.model_validate(reply.json())
    check_schema("tesCreateTaskResponse", reply.json())
    task_id = reply.json()["id"]
    task = get_task(world, task_id, "FULL")
    assert task["state"] == "SYSTEM_ERROR"
    assert "cannot be fetched" in task["logs"][0]["system_logs"][0]


def test_list_views_paging_and_filters(world):
    client = world["client"]
    ids = [create(world, http_task(f"batch-{i}", batch="yes", parity=str(i % 2)))
           for i in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = client.list_tasks(view="BASIC", page_size=2, page_token=token)
        body = raw(world, "GET", "/tasks", params={"view": "BASIC", "page_size": 2,
                                                   **({"page_token": token} if token else {})})
        ptes.TesListTasksResponse.model_validate(body.json())
        check_schema("tesListTasksResponse", body.json())
        assert [t.id for t in page.tasks] == [t["id"] for t in body.json()["tasks"]]
        seen += [t.id for t in page.tasks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages >= 3 and len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert seen == sorted(seen, key=int, reverse=True)  # newest first

    for view in ("MINIMAL", "BASIC", "FULL"):
        body = raw(world, "GET", "/tasks", params={"view": view, "name_prefix": "batch-"}).json()
        check_schema("tesListTasksResponse", body, minimal=view == "MINIMAL")
        assert sorted(t["id"] for t in body["tasks"]) == sorted(ids)
        if view == "MINIMAL":
            assert all(set(t) == {"id", "state"} for t in body["tasks"])
        else:
            ptes.TesListTasksResponse.model_validate(body)
            assert ("system_logs" in body["tasks"][0]["logs"][0]) == (view == "FULL")

    def listed(**params: Any) -> list[str]:
        reply = raw(world, "GET", "/tasks", params=params)
        assert reply.status_code == 200, reply.text
        return sorted(t["id"] for t in reply.json()["tasks"])

    assert listed(tag_key="batch") == sorted(ids)
    assert listed(tag_key=["batch", "parity"], tag_value=["yes", "0"]) == sorted(ids[0::2])
    assert listed(tag_key="parity", tag_value="1") == sorted(ids[1::2])
    assert listed(tag_key="nosuchtag") == []
    assert set(ids) <= set(listed(state="SYSTEM_ERROR"))
    assert not set(ids) & set(listed(state="COMPLETE"))
    assert listed(name_prefix="batch-3") == [ids[3]]


def test_bad_input_is_a_400_tes_error_and_creates_nothing(world):
    root, base = world["root"], world["base"]
    good = {"executors": [{"image": "tools", "command": ["true"]}]}
    cases: dict[str, Any] = {
        "not JSON": b"{not json",
        "not an object": [],
        "no executors": {"name": "x"},
        "unknown image": {"executors": [{"image": "ubuntu:20.04", "command": ["true"]}]},
        "command not a list": {"executors": [{"image": "tools", "command": "true"}]},
        "relative path": {**good, "inputs": [{"content": "x", "path": "in.txt"}]},
        "input outside the root": {**good, "inputs": [
            {"url": (base / "outside.txt").as_uri(), "path": "/in/x"}]},
        "input escaping with ..": {**good, "inputs": [
            {"url": f"file://{root}/../outside.txt", "path": "/in/x"}]},
        "missing input": {**good, "inputs": [
            {"url": (root / "nope.txt").as_uri(), "path": "/in/x"}]},
        "s3 input": {**good, "inputs": [{"url": "s3://bucket/x", "path": "/in/x"}]},
        "s3 output": {**good, "outputs": [{"url": "s3://bucket/x", "path": "/out/x"}]},
        "output outside the root": {**good, "outputs": [
            {"url": (base / "written.txt").as_uri(), "path": "/out/x"}]},
        "negative ram": {**good, "resources": {"ram_gb": -1}},
        "fractional cpu": {**good, "resources": {"cpu_cores": 1.5}},
        "unknown field": {**good, "priority": 3},
        "two images": {"executors": [{"image": "tools", "command": ["true"]},
                                     {"image": "other", "command": ["true"]}]},
    }
    before = count_runs(world)
    for label, body in cases.items():
        data = body if isinstance(body, bytes) else json.dumps(body)
        reply = raw(world, "POST", "/tasks", data=data)
        assert reply.status_code == 400, (label, reply.status_code, reply.text)
        error = reply.json()
        assert error["status_code"] == 400 and error["msg"], label
        assert error["error"]["message"] == error["msg"], label
    for label, params in {"unknown view": {"view": "EVERYTHING"},
                          "bad page_token": {"page_token": "not-a-token"},
                          "page_size 0": {"page_size": 0},
                          "unknown state": {"state": "SLEEPING"}}.items():
        reply = raw(world, "GET", "/tasks", params=params)
        assert reply.status_code == 400 and reply.json()["msg"], (label, reply.text)
    assert raw(world, "GET", "/tasks/1", params={"view": "ALL"}).status_code == 400
    assert raw(world, "GET", "/tasks/999999", params={"view": "BASIC"}).status_code == 404
    assert raw(world, "POST", "/tasks/nope:cancel").status_code == 404
    assert count_runs(world) == before
    assert not (base / "written.txt").exists()


@pytest.fixture(scope="session")
def snakemake_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image Snakemake's jobs run in, made by Pirus's builder: the Debian rootfs with
    Snakemake that scripts/setup-tools.sh prepares, plus an init and a pip for a container
    without network (examples/tes/snakemake-runner/)."""
    rootfs = tools_dir() / "snakemake-rootfs.tar"
    if not rootfs.exists():
        raise RuntimeError(f"{rootfs} missing: run bash scripts/setup-tools.sh")
    return build_package_from_parts(
        {"name": "snakemake-runner", "version": "9", "run": "/pipeline/run.sh",
         "description": "Snakemake 9 for jobs sent through TES", "license": "MIT",
         "developers": ["Pirus tests"]},
        {"/pipeline/run.sh": b"#!/bin/sh\nexec python3 -m snakemake --version\n",
         "/sbin/init": RUNNER / "init", "/usr/local/bin/pip": RUNNER / "pip"},
        tmp_path_factory.mktemp("smk") / "snakemake-runner.tar", base=rootfs,
        compression="none", modes={"/sbin/init": 0o755, "/usr/local/bin/pip": 0o755})


def run_snakemake(venv: Path, folder: Path, *args: str, env: dict[str, str] | None = None
                  ) -> float:
    started = time.monotonic()
    done = subprocess.run([str(venv / "bin" / "snakemake"), *args], cwd=folder,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-4000:]
    return time.monotonic() - started


def test_snakemake_runs_its_jobs_as_pirus_runs(world, snakemake_package, tmp_path,
                                               record_property):
    venv = tool_venv("snakemake")
    server, root = world["server"], world["root"]
    shutil.copy(snakemake_package, root / snakemake_package.name)
    reply = server.session.post(server.api("pipelines"), json={"path": snakemake_package.name},
                                timeout=120)
    assert reply.status_code in (201, 202), reply.text
    pipeline = server.wait_for(f"pipelines/{reply.json()['id']}",
                               lambda p: p["status"] in ("READY", "ERROR"), timeout=300)
    assert pipeline["status"] == "READY", pipeline

    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(RUNNER / "Snakefile", local / "Snakefile")
    local_seconds = run_snakemake(venv, local, "--cores", "2")

    workflow = root / "workflow"
    workflow.mkdir()
    shutil.copy(RUNNER / "Snakefile", workflow / "Snakefile")
    storage = root / "shared" / "workflow"
    # The plugin reads $GITHUB_WORKSPACE/funnel.log when a task fails (left-over debug code):
    # give it one, so that a failure is reported rather than a KeyError.
    (tmp_path / "funnel.log").write_text("(Pirus: see the task's logs)\n")
    tes_seconds = run_snakemake(
        venv, workflow, "--executor", "tes", "--tes-url", world["server_url"] + "ga4gh/tes",
        "--tes-token", server.token, "--container-image", "snakemake-runner", "--jobs", "3",
        "--default-storage-provider", "fs", "--default-storage-prefix", str(storage),
        "--seconds-between-status-checks", "1", env={"GITHUB_WORKSPACE": str(tmp_path)})
    record_property("snakemake_local_seconds", round(local_seconds, 1))
    record_property("snakemake_tes_seconds", round(tes_seconds, 1))
    print(f"Snakemake: local --cores 2 {local_seconds:.1f} s, through Pirus TES "
          f"{tes_seconds:.1f} s")

    made = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.txt")
                  if ".snakemake" not in p.parts)
    assert len(made) == 7
    for rel in made:
        assert (storage / rel).read_bytes() == (local / rel).read_bytes(), rel
    runs = server.session.get(server.api("runs"), timeout=30,
                              params={"pipeline_id": pipeline["id"], "limit": 100}).json()
    assert runs["total"] == 7  # 3 make + 3 upper + 1 join: each job a run of its own
    assert all(r["origin"] == "tes" and r["status"] == "DONE" for r in runs["items"])
