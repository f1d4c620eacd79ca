"""What a client or a package sends is not trusted (issue 19): a form's ``$ref`` fetches
nothing, a catastrophic ``pattern`` is a clear 400 while the server keeps answering, deep JSON
is a 400, bodies are capped per route (413 before the body is read), a refused request with a
body still gets its answer (1 KiB .. 64 MiB), and file names are checked in bytes and lose
their bidi marks at creation.

One real server subprocess with the fake backend (no container runs: these are attacks on
the HTTP face and on forms, not on a pipeline).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_BACKEND
from server import ServerProcess

from pirus_jupyter.errors import InvalidRequest
from pirus_jupyter.forms import field_errors, normalize_form
from pirus_jupyter.packaging import build_package_from_parts

CATASTROPHIC = "^(a|aa)+$"  # backtracks ~1.6^n steps on "aaa…ab"
SIZES = [1024, 1024**2, 64 * 1024**2]


def fake_package(folder: Path, name: str, form: dict[str, Any]) -> Path:
    """A package of a few hundred bytes (the fake backend never runs it) with ``form``."""
    base = folder / f"{name}-rootfs.tar"
    with tarfile.open(base, "w") as tar:
        entry = tarfile.TarInfo("bin/sh")
        entry.size, entry.mode = 1, 0o755
        tar.addfile(entry, io.BytesIO(b"\n"))
    manifest = {"name": name, "run": "/pipeline/run.sh", "version": "1.0",
                "description": f"{name} test pipeline", "license": "MIT",
                "developers": ["Pirus tests"]}
    files = {"/pipeline/run.sh": b"#!/bin/sh\n", "/pipeline/form.json": b"{}"}
    built = build_package_from_parts(manifest, files, folder / f"{name}.tar.gz", base=base)
    # The builder refuses a hostile form: put it in afterwards, as an attacker would.
    hostile = json.dumps(form).encode()
    with tarfile.open(built) as source:
        members = [(m, source.extractfile(m).read() if m.isfile() else None)
                   for m in source.getmembers()]
    with tarfile.open(built, "w:gz") as target:
        for member, data in members:
            if member.name.endswith("form.json"):
                member.size, data = len(hostile), hostile
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    return built


class Recorder(http.server.BaseHTTPRequestHandler):
    """A web server a form points at: it records every request it gets."""

    seen: list[str] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, web):
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    root.mkdir()
    port = web.server_address[1]
    fake_package(root, "webref", {"type": "object", "properties": {
        "x": {"$ref": f"http://127.0.0.1:{port}/schema.json"}}})
    fake_package(root, "fileref", {"type": "object", "properties": {
        "x": {"$ref": "file:///etc/hostname"}}})
    fake_package(root, "redos", {"type": "object", "properties": {
        "word": {"type": "string", "pattern": CATASTROPHIC}}})
    server = ServerProcess(root, base / "data", backend_class=FAKE_BACKEND).start()
    try:
        yield server
    finally:
        server.stop()


def install(server: ServerProcess, name: str) -> dict[str, Any]:
    reply = server.session.post(server.api("pipelines"), json={"path": f"{name}.tar.gz"},
                                timeout=60)
    assert reply.status_code == 202, reply.text
    return server.wait_for(f"pipelines/{reply.json()['id']}",
                           lambda b: b["status"] != "INSTALLING", 120)


def raw_request(server: ServerProcess, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Send the whole body, then read the whole answer (what any HTTP client does)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


# -- $ref ------------------------------------------------------------------------------------
def test_form_references_outside_the_form_fetch_nothing(server):
    """A form whose $ref names a URL or a host file: its form and every run of it are a clear
    400; nothing is fetched, the file's content is in no answer."""
    hostname = Path("/etc/hostname").read_text().strip()
    answers = []
    for name in ("webref", "fileref"):
        pipeline = install(server, name)
        answers.append(json.dumps(pipeline))
        if pipeline["status"] == "ERROR":  # refused at install: as good
            assert "only references inside the form" in pipeline["error"], pipeline
            continue
        for reply in (server.session.post(server.api("runs"), timeout=60, json={
                          "pipeline_id": pipeline["id"], "config": {"x": "y"}}),
                      server.session.get(server.api(f"pipelines/{pipeline['id']}/form"),
                                         timeout=60)):
            answers.append(reply.text)
            assert reply.status_code == 400, reply.text
            error = reply.json()["error"]
            assert error["code"] == "invalid_form", error
            assert "only references inside the form" in error["message"], error
    assert Recorder.seen == []
    assert hostname and not [a for a in answers if hostname in a]


def test_dev_zero_reference_is_refused_without_reading():
    form = {"type": "object", "properties": {"x": {"$ref": "file:///dev/zero"}}}
    with pytest.raises(InvalidRequest) as refused:
        normalize_form(form)
    assert refused.value.code == "invalid_form"
    # even a schema that skipped normalisation resolves nothing outside itself
    with pytest.raises(InvalidRequest):
        field_errors(form, {"x": 1})


# -- ReDoS -----------------------------------------------------------------------------------
def test_catastrophic_pattern_is_a_clear_400_and_the_server_keeps_answering(server):
    pipeline = install(server, "redos")
    assert pipeline["status"] == "READY", pipeline
    answer: dict[str, Any] = {}

    def create() -> None:
        reply = server.session.post(server.api("runs"), timeout=60, json={
            "pipeline_id": pipeline["id"], "config": {"word": "a" * 64 + "b"}})
        answer.update(status=reply.status_code, body=reply.json())

    worker = threading.Thread(target=create)
    worker.start()
    # the check runs off the event loop: other requests are answered meanwhile
    assert server.session.get(f"{server.url}api/status", timeout=30).status_code == 200
    assert server.session.get(server.api("runs"), timeout=30).status_code == 200
    worker.join(90)
    assert answer["status"] == 400, answer
    error = answer["body"]["error"]
    assert error["code"] == "invalid_config" and "simpler patterns" in error["message"]
    # an ordinary value of the same field is checked as before
    good = server.session.post(server.api("runs"), timeout=60, json={
        "pipeline_id": pipeline["id"], "config": {"word": "aaaa"}})
    assert good.status_code == 201, good.text
    bad = server.session.post(server.api("runs"), timeout=60, json={
        "pipeline_id": pipeline["id"], "config": {"word": "b"}})
    assert bad.status_code == 400 and "does not match" in bad.text


# -- JSON and body size ----------------------------------------------------------------------
def test_deeply_nested_json_is_a_400(server):
    for body in ("[" * 100000 + "]" * 100000, '{"config": ' + '{"a": ' * 80 + "1" + "}" * 81):
        reply = server.session.post(server.api("runs"), data=body, timeout=60,
                                    headers={"Content-Type": "application/json"})
        assert reply.status_code == 400, reply.text[:300]
        assert "nested too deeply" in reply.json()["error"]["message"]


def test_bodies_are_capped_per_route_before_they_are_read(server):
    # a notify body announced at 300 MB: 413 at once, although no byte of it was sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(b"POST /pirus/api/v1/runs/1/notify?token=x HTTP/1.1\r\n"
                    b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 300000000\r\n\r\n{")
        head = raw.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b'"payload_too_large"' in head or b"413" in head
    # a chunked body past the cap of its route: 413 with the error shape
    def chunks():
        for _ in range(10):
            yield b" " * 1024**2
    reply = server.session.post(server.api("runs"), data=chunks(), timeout=60)
    assert reply.status_code == 413, reply.text[:200]
    assert reply.json()["error"]["code"] == "payload_too_large"
    status, body = raw_request(server, "POST", "/pirus/api/v1/runs", b" " * (9 * 1024**2),
                               {"Authorization": f"token {server.token}"})
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_refused_requests_with_a_body_still_get_their_answer(server):
    """The server answers before reading the body; the client, still sending, must read the
    whole 4xx anyway (no connection reset), whatever the size."""
    created = server.session.post(server.api("uploads"), timeout=30, headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(max(SIZES) * 2)})
    assert created.status_code == 201, created.text
    upload = created.headers["Location"]  # a path
    for size in SIZES:
        body = b"x" * size
        status, answer = raw_request(server, "POST", "/pirus/api/v1/uploads", body, {
            "Tus-Resumable": "1.0.0", "Upload-Length": str(size),
            "Content-Type": "application/offset+octet-stream"})
        assert status == 403 and answer["error"]["code"] == "forbidden", (size, answer)
        status, answer = raw_request(server, "PATCH", upload, body, {
            "Authorization": f"token {server.token}", "Tus-Resumable": "1.0.0",
            "Upload-Offset": "7", "Content-Type": "application/offset+octet-stream"})
        assert status == 409, (size, status, answer)
        assert answer["error"]["code"] == "offset_mismatch", answer
        status, answer = raw_request(server, "POST", "/pirus/api/v1/runs/1/notify?token=x",
                                     body, {"Content-Type": "application/json"})
        assert status in (403, 413), (size, status, answer)
    server.session.delete(server.url.rstrip("/") + upload, timeout=30,
                          headers={"Tus-Resumable": "1.0.0"})


# -- file names ------------------------------------------------------------------------------
def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def test_file_names_are_checked_at_creation_and_lose_bidi_marks(server):
    tus = {"Tus-Resumable": "1.0.0"}
    too_long = server.session.post(server.api("uploads"), timeout=30, headers={
        **tus, "Upload-Length": "3", "Upload-Metadata": metadata(filename="é" * 200)})
    assert too_long.status_code == 400, too_long.text
    message = too_long.json()["error"]["message"]
    assert "too long" in message and "/" not in message, message
    created = server.session.post(server.api("uploads"), timeout=30, headers={
        **tus, "Upload-Length": "3",
        "Upload-Metadata": metadata(filename="report\u202egnp.exe\u200f\u2066")})
    assert created.status_code == 201, created.text
    location = server.url.rstrip("/") + created.headers["Location"]
    done = server.session.patch(location, data=b"abc", timeout=30, headers={
        **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert done.status_code == 204, done.text
    record = server.wait_for(created.headers["Location"].split("/pirus/api/v1/")[1],
                             lambda b: b["status"] != "uploading", 60)
    assert record["filename"] == "reportgnp.exe", record
