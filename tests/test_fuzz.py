"""The REST API fuzzed with schemathesis against its own OpenAPI document (openapi.yaml).

A real ``jupyter server`` subprocess (an in-process server would share the event loop with the
blocking HTTP client), authenticated with the server token, Tus-Max-Size kept small. Before
each operation and each stateful scenario there is a READY pipeline (installed from the path of
the document's example), a run held RUNNING, a DONE run with outputs and a finished upload; a
hook gives half of the well-formed path ids the id of one of them, so that reads, actions and
deletions meet live records, not only 404s.

* every operation, positive and negative data (``test_operation``), then
* stateful scenarios along the document's links and those schemathesis infers
  (``test_stateful``: install -> run -> pause/cancel/logs/outputs -> delete),

with every built-in check of schemathesis: no 5xx, status codes, content types, headers and
bodies as documented, invalid requests refused, valid ones accepted, authentication enforced
(a probe without and with a wrong token), 405 with ``Allow`` for undocumented methods. Three
checks are adapted where HTTP or the document says more than the generic rule (each says why);
none is switched off. Then the server's log must hold no traceback, and the fuzzing must have
reached the successes of ``MUST_REACH``. Bounded and reproducible: a fixed number of examples
per operation and of scenarios, derandomized (``PIRUS_FUZZ_EXAMPLES`` and
``PIRUS_FUZZ_SCENARIOS`` raise them for a longer local run).

What the fuzzer found is kept as plain regression tests at the end of this module.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from conftest import FINAL, requires_lxd
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from pkgbuild import COUNT_SCRIPT, build_pipeline, fastq
from schemathesis.specs.openapi.checks import (
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
)
from server import ServerProcess

import pirus_jupyter

SPEC_PATH = Path(pirus_jupyter.__file__).with_name("openapi.yaml")
EXAMPLES = int(os.environ.get("PIRUS_FUZZ_EXAMPLES", "25"))
STATEFUL_SCENARIOS = int(os.environ.get("PIRUS_FUZZ_SCENARIOS", "15"))
UPLOAD_MAX_SIZE = 4096  # the fuzzer's uploads stay small: Tus-Max-Size is this

CONFIG = schemathesis.Config.from_dict({
    "checks": {
        # 101 Switching Protocols is how the websocket handshake of GET /events succeeds.
        "not_a_server_error": {"expected-statuses": ["101", "2xx", "3xx", "4xx"]},
        "positive_data_acceptance": {
            "expected-statuses": ["101", "2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]},
        # The defaults, plus what the protocols in the document prescribe for a bad request:
        # TUS' 412 (Tus-Resumable) and 413 (over Tus-Max-Size), RFC 6455's 426 (version).
        "negative_data_rejection": {"expected-statuses": [
            400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 422, 426]},
        "missing_required_header": {"expected-statuses": [400, 403, 412, 426]},
    },
})
schema = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)
# TUS bodies are raw bytes under their own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


# -- adapted checks ------------------------------------------------------------------------------
def _scenario(case: Any) -> tuple[str, str, str]:
    """(coverage scenario, parameter, location) of a generated case, '' where none."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    location = str(getattr(data, "parameter_location", "") or "").rsplit(".", 1)[-1]
    return (str(getattr(data, "scenario", "") or ""), str(getattr(data, "parameter", "") or ""),
            location.lower())


def missing_token_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis expects 401 for a request without ``Authorization``; Jupyter answers 403
    (documented), so 403 it must be. Other missing headers: the built-in check."""
    scenario, parameter, _ = _scenario(case)
    if scenario == "missing_parameter" and parameter.lower() == "authorization":
        assert response.status_code == 403, (
            f"no Authorization header: {response.status_code}, expected 403")
        return True
    return missing_required_header(ctx, response, case)


def negative_data_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """The built-in check, except for a request whose only fault is an unknown header field:
    RFC 9110 (5.1) says a recipient MUST ignore header fields it does not recognise."""
    scenario, _, location = _scenario(case)
    if scenario == "object_unexpected_properties" and location == "header":
        return None
    return negative_data_rejection(ctx, response, case)


# Documented rules between values that OpenAPI cannot state, so schema-valid data can break
# them: operation -> {status: error codes} (None: any code) answered when it does.
CROSS_FIELD_RULES: dict[str, dict[int, set[str] | None]] = {
    # Upload-Length vs Upload-Defer-Length vs Upload-Concat vs the body; a body past the
    # length; a checksum of other bytes.
    "POST /uploads": {400: None, 413: None, 460: None},
    "PATCH /uploads/{upload_id}": {400: None, 413: None, 460: None},
    # config is checked against the pipeline's form; an input may be a folder; a target
    # must name a member of the LXD cluster (the fuzz server's LXD is not clustered).
    "POST /runs": {400: {"invalid_config", "invalid_request", "unknown_member"}},
}


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """The built-in check, except for the documented refusals of ``CROSS_FIELD_RULES``."""
    generation = getattr(case.meta, "generation", None)
    positive = generation is not None and generation.mode.is_positive
    rules = CROSS_FIELD_RULES.get(f"{case.method} {case.path}", {}) if positive else {}
    if response.status_code in rules:
        codes = rules[response.status_code]
        if codes is None:
            return None
        code = json.loads(response.content)["error"]["code"]
        if code in codes:
            if code == "invalid_request":  # only the folder case, nothing else
                assert "not a regular file" in response.text, response.text
            return None
    return positive_data_acceptance(ctx, response, case)


SEEN: Counter[tuple[str, int]] = Counter()


def record(ctx: Any, response: Any, case: Any) -> bool | None:
    """Not a check: counts (operation, status) so the module can show it reached live data."""
    SEEN[(f"{case.method} {case.path}", response.status_code)] += 1
    return None


REPLACED = [missing_required_header, negative_data_rejection, positive_data_acceptance]
ADAPTED = [missing_token_refused, negative_data_refused, positive_data_accepted, record]


# -- the server and its live records -------------------------------------------------------------
# Reads FASTQ inputs like the tests' count pipeline; with an input named hold.txt it first runs
# for ten minutes (reporting progress), so that pause, resume and cancel meet a live run.
HOLD_SCRIPT = """#!/bin/sh
if [ -e "$PIRUS_INPUTS_DIR/hold.txt" ]; then
  i=0
  while [ $i -lt 1200 ]; do
    i=$((i+1))
    printf '{"progress": {"value": %d, "max": 1200}}\\n' $i >> "$PIRUS_PROGRESS_FILE"
    sleep 0.5
  done
fi
""" + COUNT_SCRIPT.split("\n", 1)[1]
ACTIVE = "WAITING,INITIALIZING,RUNNING,PAUSE,FINISHING"
# Ids of live records, refreshed before each operation and scenario (see ``live_ids``).
LIVE: dict[str, list[Any]] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> ServerProcess:
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "root"
    # Where the document's examples point: the install example and the run example.
    (root / "pipelines").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "hold").mkdir()
    build_pipeline(root / "pipelines" / "fastq-count.tar.gz", script=HOLD_SCRIPT)
    (root / "data" / "a.fastq").write_bytes(fastq(3))
    (root / "hold" / "hold.txt").write_text("hold\n")
    # Two slots: one for the held run, one for everything else.
    server = ServerProcess(root, base / "data", upload_max_size=UPLOAD_MAX_SIZE,
                           max_parallel_runs=2, poll_interval=0.1, notify_enabled=False).start()
    try:
        yield server
    finally:
        # Runs the fuzzer started must not outlive the module (nor keep LXD busy).
        try:
            for run in server.session.get(server.api("runs"), timeout=30, params={
                    "status": ACTIVE, "limit": "1000"}).json()["items"]:
                server.session.post(server.api(f"runs/{run['id']}/cancel"), timeout=60)
        finally:
            server.stop()


def _settled(server: ServerProcess, path: str, until: Any) -> dict[str, Any]:
    return server.wait_for(path, until, 300)


def ensure_live(server: ServerProcess) -> None:
    """Before each operation and each stateful scenario (the fuzzer deletes, cancels and
    pauses things): a READY pipeline (failed installs removed), a held RUNNING run, a DONE run
    with outputs, a finished upload; their ids go to ``LIVE``."""
    session = server.session
    pipelines = _settled(server, "pipelines", lambda b: all(
        p["status"] not in ("INSTALLING", "UPLOADING") for p in b["items"]))["items"]
    for pipeline in pipelines:
        if pipeline["status"] != "READY":
            session.delete(server.api(f"pipelines/{pipeline['id']}"), timeout=60)
    ready = [p for p in pipelines if p["status"] == "READY"]
    if ready:
        pipeline = ready[0]
    else:
        reply = session.post(server.api("pipelines"),
                             json={"path": "pipelines/fastq-count.tar.gz"}, timeout=60)
        assert reply.status_code == 202, reply.text
        pipeline = _settled(server, f"pipelines/{reply.json()['id']}",
                            lambda b: b["status"] != "INSTALLING")
        assert pipeline["status"] == "READY", pipeline

    def start(inputs: list[str]) -> dict[str, Any]:
        reply = session.post(server.api("runs"), timeout=60,
                             json={"pipeline_id": pipeline["id"], "inputs": inputs})
        assert reply.status_code == 201, reply.text
        return reply.json()

    active = session.get(server.api("runs"), params={"status": ACTIVE, "limit": "1000"},
                         timeout=30).json()["items"]
    held = [r for r in active if any(i["name"] == "hold.txt" for i in r["inputs"])]
    for run in active:  # the fuzzer's runs are quick, but a paused one holds a slot
        if run not in held[:1] and run["status"] == "PAUSE":
            session.post(server.api(f"runs/{run['id']}/cancel"), timeout=60)
    done = session.get(server.api("runs"), params={"status": "DONE"}, timeout=30).json()
    done_runs = [r for r in done["items"] if r["outputs"]]
    if not done_runs:
        run = start(["data/a.fastq"])
        done_runs = [_settled(server, f"runs/{run['id']}", lambda b: b["status"] in FINAL)]
        assert done_runs[0]["status"] == "DONE", done_runs[0]
    if not held:
        run = start(["hold/hold.txt"])
        held = [_settled(server, f"runs/{run['id']}", lambda b: b["status"] == "RUNNING")]
    uploads = session.get(server.api("uploads"), timeout=30).json()["items"]
    complete = [u for u in uploads if u["status"] == "complete"]
    if not complete:
        content = fastq(2)
        reply = session.post(server.api("uploads"), data=content, timeout=60, headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(len(content)),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Metadata": "filename " + base64.b64encode(b"b.fastq").decode()})
        assert reply.status_code == 201, reply.text
        upload_id = reply.headers["Location"].rsplit("/", 1)[-1]
        complete = [session.get(server.api(f"uploads/{upload_id}"), timeout=30).json()]
    files = session.get(server.api("files"), timeout=30).json()["items"]
    LIVE.update(pipeline_id=[pipeline["id"]], run_id=[held[0]["id"], done_runs[0]["id"]],
                file_id=[f["id"] for f in files[:2]], upload_id=[complete[0]["id"]])


@pytest.fixture
def live_records(fuzz_server: ServerProcess) -> None:
    ensure_live(fuzz_server)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half of the time a well-formed id becomes the id of a live record: the operation then
    meets real data, not only 404s. Malformed ids (negative cases) are left alone."""
    choices = [path_parameters]
    for name, value in (path_parameters or {}).items():
        valid = (isinstance(value, int) and 0 <= value <= 2**63 - 1 if name != "upload_id"
                 else isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value))
        if valid and LIVE.get(name):
            choices += [{**path_parameters, name: live} for live in LIVE[name]]
    return st.sampled_from(choices) if len(choices) == 1 else st.one_of(
        st.just(choices[0]), st.sampled_from(choices[1:]))


def server_errors(server: ServerProcess) -> list[str]:
    """Tracebacks in the server's log: an exception no handler turned into an answer."""
    log = server.log_path.read_text(errors="replace")
    return [chunk[:2000] for chunk in re.split(r"\n(?=\[[A-Z] )", log)
            if "Traceback (most recent call last)" in chunk]


def call_kwargs(server: ServerProcess) -> dict[str, Any]:
    return {"base_url": server.api(""), "timeout": 60,
            "headers": {"Authorization": f"token {server.token}"}}


# -- fuzzing -------------------------------------------------------------------------------------
@requires_lxd
@pytest.mark.lxd
@pytest.mark.slow
@schema.parametrize()
@SETTINGS
def test_operation(case, fuzz_server, live_records):
    case.call_and_validate(**call_kwargs(fuzz_server), excluded_checks=REPLACED,
                           additional_checks=ADAPTED)


@requires_lxd
@pytest.mark.lxd
@pytest.mark.slow
def test_stateful(fuzz_server, live_records):
    kwargs = call_kwargs(fuzz_server)

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            ensure_live(fuzz_server)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return kwargs

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kw: Any) -> None:
            case.validate_response(response, excluded_checks=REPLACED,
                                   additional_checks=ADAPTED, transport_kwargs=kw)

    # One Hypothesis engine per scenario, each with its own seed. Within one engine, scenarios
    # that begin alike must draw alike, but a live server's answers to the same calls can
    # differ (a run already DONE, or still RUNNING, when it is paused): the engine would call
    # that a FlakyStrategyDefinition, which is not a finding. Each engine tries the simplest
    # scenario, then its own.
    for scenario in range(STATEFUL_SCENARIOS):
        seeded = seed(scenario)(type(f"Workflow{scenario}", (Workflow,), {}))
        seeded.run(settings=settings(SETTINGS, max_examples=2, stateful_step_count=8))


# Successes the fuzzer must have met: create, read, act and delete on live records.
# Each operation with the success statuses that show it met a live record. An install of a
# package already installed answers that pipeline (200); a new one is installed (202).
MUST_REACH = [("POST /pipelines", (200, 202)), ("POST /runs", (201,)),
              ("GET /runs/{run_id}", (200,)), ("POST /runs/{run_id}/pause", (200,)),
              ("POST /runs/{run_id}/cancel", (200,)), ("GET /runs/{run_id}/logs/{which}", (200,)),
              ("GET /files/{file_id}/content", (200,)), ("POST /uploads", (201,)),
              ("GET /uploads/{upload_id}", (200,))]


@requires_lxd
@pytest.mark.lxd
def test_fuzzing_reached_live_records_and_nothing_escaped(fuzz_server):
    """After the fuzzing above: it met live records, not only 404s, and the server logged no
    traceback (an exception that became a 500, or a background task that died)."""
    if not SEEN:
        pytest.skip("summary of the fuzzing tests of this module, which were not selected")
    for (operation, status), count in sorted(SEEN.items()):
        print(f"{count:5d}  {status}  {operation}")
    assert [(operation, statuses) for operation, statuses in MUST_REACH
            if not any(SEEN[(operation, status)] for status in statuses)] == []
    requests.get(fuzz_server.api(""), headers={"Authorization": f"token {fuzz_server.token}"},
                 timeout=30).raise_for_status()
    assert server_errors(fuzz_server) == []


# -- what the fuzzer found, as plain regression tests (in-process server, no LXD) -----------------
async def test_405_names_the_allowed_methods(api, jp_fetch):
    response = await api("PUT", "runs", raw=True)
    assert response.code == 405 and response.headers["Allow"] == "GET, POST, OPTIONS"
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"
    # TUS: a PUT is a 405 too, not a 412 for its missing Tus-Resumable
    response = await api("PUT", "uploads", "abc", raw=True)
    assert response.code == 405 and "PATCH" in response.headers["Allow"]
    # the websocket route answers its own small page (Jupyter's templated one raised here)
    response = await jp_fetch("pirus", "api", "v1", "events", method="TRACE",
                              allow_nonstandard_methods=True, raise_error=False)
    assert response.code == 405 and response.headers["Allow"] == "GET"


@pytest.mark.parametrize("path", [
    ("pipelines", "-1"), ("pipelines", "1.0", "form"), ("runs", "99999999999999999999"),
    ("runs", "x", "logs", "out"), ("runs", "1", "logs", "OUT"), ("files", "abc", "content"),
    ("files", "%C2%84")])
async def test_malformed_ids_are_json_404s(api, path):
    code, body = await api("GET", *path)
    assert code == 404 and body["error"]["code"] == "not_found", body


async def test_malformed_upload_id_is_a_tus_404(api):
    for method in ("OPTIONS", "GET", "DELETE"):
        response = await api(method, "uploads", "%C2%84", headers={"Tus-Resumable": "1.0.0"},
                             raw=True)
        assert response.code == 404, method
        assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_notify_refuses_odd_ids_and_tokens_alike(api):
    for run_id, token in (("-1", "x"), ("1", "é"), ("99999999999999999999", "x")):
        code, body = await api("POST", "runs", run_id, "notify", params={"token": token},
                               body={"progress": {"value": 1}}, headers={"Authorization": ""})
        assert code == 403 and body["error"]["code"] == "forbidden", (run_id, token, body)


async def test_ids_in_json_bodies(api):
    # JSON Schema's integers include 999.0: it is the id 999, not a type error
    code, body = await api("POST", "runs", body={"pipeline_id": 999.0})
    assert code == 404 and "999" in body["error"]["message"], body
    code, body = await api("POST", "runs", body={"pipeline_id": 2**63})
    assert code == 400 and "pipeline_id" in body["error"]["message"], body
    code, body = await api("POST", "runs", body={"pipeline_id": 1.5})
    assert code == 400, body


async def test_nan_and_infinity_are_not_json(api, pirus):
    code, body = await api("POST", "runs", body='{"pipeline_id": 1, "config": {"a": NaN}}')
    assert code == 400 and "NaN" in body["error"]["message"], body
    code, body = await api("POST", "pipelines", body='{"path": Infinity}')
    assert code == 400, body
    assert await pirus.store.count("pipelines") == 0


async def test_install_body_takes_one_source_and_nothing_else(api, pirus):
    code, body = await api("POST", "pipelines", body={"path": "a.tar.gz", "force": True})
    assert code == 400 and "force" in body["error"]["message"], body
    code, body = await api("POST", "pipelines", body={"path": "a.tar.gz", "upload_id": "x"})
    assert code == 400 and "not both" in body["error"]["message"], body
    assert await pirus.store.count("pipelines") == 0


async def test_filters_take_any_id_and_refuse_unknown_statuses(api):
    code, body = await api("GET", "runs", params={"pipeline_id": "0"})
    assert code == 200 and body["total"] == 0
    code, body = await api("GET", "files", params={"run_id": "0"})
    assert code == 200 and body["total"] == 0
    code, body = await api("GET", "pipelines", params={"status": "AAA"})
    assert code == 400 and body["error"]["code"] == "invalid_request"


async def test_method_override_only_on_an_upload_url(api, pirus):
    code, body = await api("POST", "uploads", headers={
        "Tus-Resumable": "1.0.0", "X-HTTP-Method-Override": "GET", "Upload-Length": "3"})
    assert code == 400 and "upload's URL" in body["error"]["message"], body
    assert await pirus.store.count("uploads") == 0


async def test_websocket_key_must_be_16_bytes_of_base64(api, jp_fetch):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    response = await jp_fetch("pirus", "api", "v1", "events", raise_error=False,
                              headers={**headers, "Sec-WebSocket-Key": "not a key"})
    assert response.code == 400 and b"Sec-WebSocket-Key" in response.body
    # a body tornado cannot parse gets an error page, not a traceback
    response = await jp_fetch("pirus", "api", "v1", "events", raise_error=False,
                              method="GET", allow_nonstandard_methods=True, body=b"x",
                              headers={"Content-Type": "multipart/form-data"})
    assert response.code == 400 and response.headers["Content-Type"].startswith("text/html")
