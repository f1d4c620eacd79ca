"""Hostile or unlucky uploads (issue 19): a concatenation cannot multiply one partial upload (each
part named once, at most MAX_CONCAT_PARTS parts, the sum within ``upload_max_size``, all checked
before a byte is written), and an input finished onto a full uploads folder on another
filesystem than the part store loses nothing: 507, the bytes wait, and the file appears
identical once space is freed.

One real server subprocess with the fake backend (nothing here runs a container) whose
``uploads_dir`` is a small tmpfs while the part store stays on the ordinary disk; mounting needs
root.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import FAKE_BACKEND
from server import ServerProcess, tmpfs
from tus_helpers import OCTET, TUS, MiB, metadata, pattern_bytes, pattern_sha256

from pirus_jupyter.hashing import sha256_file
from pirus_jupyter.uploads import MAX_CONCAT_PARTS

MAX_SIZE = 8 * MiB
UPLOADS_TMPFS = "4m"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-uploads")
    root = base / "root"
    with tmpfs(root / "pirus-uploads", UPLOADS_TMPFS, "pirus-test-uploads"):
        server = ServerProcess(root, base / "data", backend_class=FAKE_BACKEND,
                               upload_max_size=MAX_SIZE)
        try:
            yield server.start()
        finally:
            server.stop()


def error_of(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return response.json()["error"]


def upload_url(server: ServerProcess, location: str) -> str:
    return f"http://127.0.0.1:{server.port}{urlparse(location).path}"


def finished_partial(server: ServerProcess, data: bytes) -> str:
    """A finished partial upload; returns its URL path."""
    created = server.session.post(server.api("uploads"), headers={
        **TUS, "Upload-Concat": "partial", "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    path = urlparse(created.headers["Location"]).path
    response = server.session.patch(upload_url(server, path), data=data,
                                    headers={**TUS, **OCTET, "Upload-Offset": "0"})
    assert response.status_code == 204, response.text
    return path


def concat(server: ServerProcess, paths: list[str]) -> Any:
    return server.session.post(server.api("uploads"), headers={
        **TUS, "Upload-Concat": "final;" + " ".join(paths),
        "Upload-Metadata": metadata(filename="joined.bin")})


def test_a_concatenation_names_each_part_once(server):
    """One 64 KiB partial named 400 times would be a 25 MiB file: a 400 before anything is
    written, and the part stays usable."""
    data = pattern_bytes(0, 64 * 1024)
    part = finished_partial(server, data)
    total = server.session.get(server.api("uploads")).json()["total"]
    for times in (2, 400):
        response = concat(server, [part] * times)
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "invalid_request"
        assert "more than once" in error["message"], error
    assert server.session.get(server.api("uploads")).json()["total"] == total  # none created
    assert server.session.head(upload_url(server, part), headers=TUS).status_code == 200

    response = concat(server, [part])
    assert response.status_code == 201, response.text
    # concatenating -> uploading (joined) -> complete (finished): wait for an end, not a step.
    record = server.wait_for(f"uploads/{response.headers['Location'].rsplit('/', 1)[1]}",
                             lambda b: b["status"] in ("complete", "error"))
    assert record["status"] == "complete" and record["length"] == len(data), record


def test_a_concatenation_has_a_bounded_number_of_parts_and_size(server):
    too_many = [f"/pirus/api/v1/uploads/p{i}" for i in range(MAX_CONCAT_PARTS + 1)]
    response = concat(server, too_many)
    assert response.status_code == 400, response.text
    assert f"at most {MAX_CONCAT_PARTS}" in error_of(response)["message"]

    # Two parts within the limit each, over it together: 413 before a byte is copied.
    half = MAX_SIZE // 2 + 1
    parts = [finished_partial(server, pattern_bytes(0, half)) for _ in range(2)]
    total = server.session.get(server.api("uploads")).json()["total"]
    response = concat(server, parts)
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["code"] == "payload_too_large" and str(MAX_SIZE) in error["message"]
    assert server.session.get(server.api("uploads")).json()["total"] == total


def test_finishing_onto_a_full_uploads_folder_loses_nothing(server):
    """uploads_dir (a 4 MiB tmpfs) is another filesystem than the part store, so finishing is a
    copy: a 6 MiB input does not fit. The last PATCH is a 507 saying so, the part file and the
    upload stay (not in error, not expiring), no half copy holds the space, an empty PATCH at
    the end retries (507 again while full), and once space is freed a HEAD finishes it to
    identical bytes."""
    root = server.root_dir
    uploads = root / "pirus-uploads"
    total = 6 * MiB
    created = server.session.post(server.api("uploads"), headers={
        **TUS, "Upload-Length": str(total), "Upload-Metadata": metadata(filename="big.bin")})
    assert created.status_code == 201, created.text
    url = upload_url(server, created.headers["Location"])
    upload_id = url.rsplit("/", 1)[1]
    part = server.data_dir / "uploads" / upload_id

    response = server.session.patch(url, data=pattern_bytes(0, total),
                                    headers={**TUS, **OCTET, "Upload-Offset": "0"})
    assert response.status_code == 507, response.text
    error = error_of(response)
    assert error["code"] == "insufficient_storage"
    assert "no room" in error["message"] and "space is freed" in error["message"], error
    assert str(root) not in error["message"]  # no host path
    assert response.headers["Upload-Offset"] == str(total)
    record = server.session.get(url).json()
    assert record["status"] == "uploading" and record["offset"] == total, record
    assert record["expires"] is None and "no room" in record["error"]
    assert sha256_file(part) == pattern_sha256(total)
    assert [p.name for p in uploads.iterdir() if upload_id in p.name] == []  # no half copy

    # Still full: the explicit retry (an empty PATCH at the end) says so again.
    response = server.session.patch(url, data=b"",
                                    headers={**TUS, **OCTET, "Upload-Offset": str(total)})
    assert response.status_code == 507, response.text
    assert error_of(response)["code"] == "insufficient_storage"

    subprocess.run(["mount", "-o", "remount,size=16m", str(uploads)], check=True)
    try:
        head = server.session.head(url, headers=TUS)  # what a TUS client does after a 5xx
        assert head.status_code == 200 and head.headers["Upload-Offset"] == str(total)
        record = server.wait_for(f"uploads/{upload_id}", lambda b: b["status"] != "uploading")
        assert record["status"] == "complete", record
        assert record["error"] is None and record["sha256"] == pattern_sha256(total)
        assert sha256_file(root / record["file"]["path"]) == pattern_sha256(total)
        assert record["file"]["path"] == "pirus-uploads/big.bin"
        assert not part.exists()
        assert [p.name for p in uploads.iterdir() if upload_id in p.name] == []
    finally:
        (uploads / "big.bin").unlink(missing_ok=True)
        subprocess.run(["mount", "-o", f"remount,size={UPLOADS_TMPFS}", str(uploads)],
                       check=True)
