"""TUS 1.0.0 uploads: every protocol rule (status codes and headers), crash safety, streaming,
concatenation, expiry, the tuspy-based kernel uploader, and what finished uploads become."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse
from tus_helpers import (
    OCTET,
    TUS,
    MiB,
    RawRequest,
    blocking_request,
    checksum,
    metadata,
    pattern,
    pattern_bytes,
    pattern_sha256,
)

from pirus_jupyter.hashing import sha256_file as file_sha256
from pirus_jupyter.uploads import CHECKPOINT_BYTES, TUS_EXTENSIONS

UPLOADS = ("pirus", "api", "v1", "uploads")


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def tus(jp_fetch):
    """A TUS request through the test client: ``await tus("PATCH", id, headers=..., body=...)``
    -> the raw response (never raises on 4xx/5xx). ``Tus-Resumable`` is added unless given."""

    async def call(method: str, upload_id: str | None = None, *, headers: dict | None = None,
                   body: bytes | None = None, version: bool = True) -> HTTPResponse:
        all_headers = {**(TUS if version else {}), **(headers or {})}
        kwargs: dict[str, Any] = {"method": method, "headers": all_headers, "raise_error": False}
        if body is not None or method in ("POST", "PATCH"):
            kwargs["body"] = body or b""
            kwargs["allow_nonstandard_methods"] = True
        parts = [*UPLOADS, upload_id] if upload_id else list(UPLOADS)
        return await jp_fetch(*parts, **kwargs)

    return call


@pytest.fixture
def create(tus):
    """Create an upload; returns its id."""

    async def do(length: int | None = None, *, headers: dict | None = None,
                 **meta: str) -> str:
        all_headers = dict(headers or {})
        if length is None:
            all_headers.setdefault("Upload-Defer-Length", "1")
        else:
            all_headers["Upload-Length"] = str(length)
        if meta:
            all_headers["Upload-Metadata"] = metadata(**meta)
        response = await tus("POST", headers=all_headers)
        assert response.code == 201, response.body
        return response.headers["Location"].rsplit("/", 1)[1]

    return do


@pytest.fixture
def patch(tus):
    async def do(upload_id: str, offset: int, data: bytes, **headers: str) -> HTTPResponse:
        all_headers = {**OCTET, "Upload-Offset": str(offset),
                       **{k.replace("_", "-"): v for k, v in headers.items()}}
        return await tus("PATCH", upload_id, headers=all_headers, body=data)

    return do


@pytest.fixture
def uploads_path(jp_base_url) -> str:
    return f"{jp_base_url}pirus/api/v1/uploads"


@pytest.fixture
def auth(jp_serverapp) -> dict[str, str]:
    return {"Authorization": f"token {jp_serverapp.identity_provider.token}"}


def error_code(response: HTTPResponse) -> str:
    import json

    return json.loads(response.body)["error"]["code"]


async def upload_whole(create, patch, data: bytes, **meta: str) -> str:
    upload_id = await create(len(data), **meta)
    response = await patch(upload_id, 0, data)
    assert response.code == 204, response.body
    return upload_id


# -- core protocol -------------------------------------------------------------------------------
@pytest.mark.parametrize("upload_id", [None, "someid"])
async def test_options_advertises_the_server(tus, pirus, upload_id):
    response = await tus("OPTIONS", upload_id, version=False)
    assert response.code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"].split(",") == list(TUS_EXTENSIONS)
    assert set(response.headers["Tus-Extension"].split(",")) >= {
        "creation", "creation-with-upload", "creation-defer-length", "checksum", "termination",
        "expiration", "concatenation"}
    assert response.headers["Tus-Max-Size"] == str(pirus.uploads.max_size)
    assert response.headers["Tus-Checksum-Algorithm"].split(",") == ["sha1", "md5", "sha256"]
    # The server ignores a Tus-Resumable it does not speak on OPTIONS.
    response = await tus("OPTIONS", upload_id, headers={"Tus-Resumable": "0.2.2"},
                         version=False)
    assert response.code == 204


async def test_unsupported_or_missing_version_is_412_and_not_processed(tus, create, patch,
                                                                         pirus):
    upload_id = await create(10)
    cases = [
        ("POST", None, {"Upload-Length": "5"}, None),
        ("HEAD", upload_id, {}, None),
        ("PATCH", upload_id, {**OCTET, "Upload-Offset": "0"}, b"hello"),
        ("DELETE", upload_id, {}, None),
    ]
    for version in ({"Tus-Resumable": "0.2.2"}, {}):
        for method, target, headers, body in cases:
            response = await tus(method, target, headers={**headers, **version}, body=body,
                                 version=False)
            assert response.code == 412, (method, version)
            assert response.headers["Tus-Version"] == "1.0.0"
            assert response.headers["Tus-Resumable"] == "1.0.0"
    # Nothing was created, written or deleted.
    items, total = await pirus.uploads.list()
    assert total == 1 and items[0]["offset"] == 0


async def test_creation_head_and_patch(tus, create, patch, pirus, uploads_path):
    response = await tus("POST", headers={"Upload-Length": "11",
                                          "Upload-Metadata": metadata(filename="hello.txt")})
    assert response.code == 201
    location = response.headers["Location"]
    assert location.startswith(uploads_path + "/")  # an absolute path
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "GMT" in response.headers["Upload-Expires"]
    upload_id = location.rsplit("/", 1)[1]

    head = await tus("HEAD", upload_id)
    assert head.code == 200
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "11"
    assert head.headers["Upload-Metadata"] == metadata(filename="hello.txt")
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Defer-Length" not in head.headers

    response = await patch(upload_id, 0, b"hello")
    assert response.code == 204
    assert response.headers["Upload-Offset"] == "5"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "GMT" in response.headers["Upload-Expires"]
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "5"

    response = await patch(upload_id, 5, b" world")
    assert response.code == 204 and response.headers["Upload-Offset"] == "11"
    head = await tus("HEAD", upload_id)
    assert head.headers["Upload-Offset"] == "11" and head.headers["Upload-Length"] == "11"


async def test_head_of_unknown_upload_is_404_without_offset(tus):
    response = await tus("HEAD", "nosuchupload")
    assert response.code == 404
    assert "Upload-Offset" not in response.headers
    assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_patch_rules(tus, create, patch, pirus):
    upload_id = await create(10)
    # Content-Type must be application/offset+octet-stream.
    response = await tus("PATCH", upload_id, headers={"Upload-Offset": "0",
                                                      "Content-Type": "text/plain"}, body=b"abc")
    assert response.code == 415 and error_code(response) == "unsupported_media_type"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    # Upload-Offset is required and must be a non-negative integer.
    response = await tus("PATCH", upload_id, headers=OCTET, body=b"abc")
    assert response.code == 400
    for bad in ("-1", "abc", "1.5", ""):
        assert (await patch(upload_id, 0, b"abc", Upload_Offset=bad)).code == 400, bad
    # Offset mismatch: 409, nothing written.
    response = await patch(upload_id, 3, b"abc")
    assert response.code == 409 and error_code(response) == "offset_mismatch"
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert pirus.uploads.part_path(upload_id).stat().st_size == 0
    # A body past the upload length: 413, nothing written.
    response = await patch(upload_id, 0, b"x" * 11)
    assert response.code == 413
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "0"
    # Unknown upload: 404.
    assert (await patch("nosuchupload", 0, b"abc")).code == 404


async def test_x_http_method_override(tus, create, pirus):
    upload_id = await create(6)
    response = await tus("POST", upload_id, headers={
        "X-HTTP-Method-Override": "PATCH", **OCTET, "Upload-Offset": "0"}, body=b"abc")
    assert response.code == 204, response.body
    assert response.headers["Upload-Offset"] == "3"
    response = await tus("POST", upload_id, headers={"X-HTTP-Method-Override": "HEAD"})
    assert response.code == 200 and response.headers["Upload-Offset"] == "3"
    response = await tus("POST", upload_id, headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.code == 204
    assert (await tus("HEAD", upload_id)).code == 404


# -- creation ------------------------------------------------------------------------------------
async def test_creation_validation(tus, pirus):
    bad_requests = [
        {},  # neither Upload-Length nor Upload-Defer-Length
        {"Upload-Length": "-1"},
        {"Upload-Length": "abc"},
        {"Upload-Length": "1e3"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "5", "Upload-Defer-Length": "1"},
        {"Upload-Length": "5", "Upload-Metadata": "filename notbase64!"},
        {"Upload-Length": "5", "Upload-Metadata": "a YQ==,a YQ=="},  # repeated key
        {"Upload-Length": "5", "Upload-Metadata": "a YQ==,,b YQ=="},  # empty key
        {"Upload-Length": "5", "Upload-Metadata": "a b YQ=="},  # space in key
        {"Upload-Length": "5", "Upload-Metadata": metadata(kind="weird")},
        {"Upload-Length": "5", "Upload-Concat": "something"},
    ]
    for headers in bad_requests:
        response = await tus("POST", headers=headers)
        assert response.code == 400, headers
        assert response.headers["Tus-Resumable"] == "1.0.0"
    response = await tus("POST", headers={"Upload-Length": str(pirus.uploads.max_size + 1)})
    assert response.code == 413
    assert (await pirus.uploads.list())[1] == 0
    # Empty values are allowed, with or without the separating space.
    response = await tus("POST", headers={"Upload-Length": "1",
                                          "Upload-Metadata": "flag,other ,name YQ=="})
    assert response.code == 201
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    head = await tus("HEAD", upload_id)
    assert head.headers["Upload-Metadata"] == "flag,other,name YQ=="


@pytest.mark.parametrize("pirus_config", [{"upload_max_size": 1000}])
async def test_max_size(tus, create, patch):
    assert (await tus("POST", headers={"Upload-Length": "1001"})).code == 413
    assert (await tus("POST", headers={"Upload-Length": "1000"})).code == 201
    upload_id = await create(None)
    response = await patch(upload_id, 0, b"x" * 10, Upload_Length="1001")
    assert response.code == 413
    response = await tus("OPTIONS", version=False)
    assert response.headers["Tus-Max-Size"] == "1000"


async def test_creation_with_upload(tus, pirus):
    response = await tus("POST", headers={"Upload-Length": "11", **OCTET}, body=b"hello")
    assert response.code == 201, response.body
    assert response.headers["Upload-Offset"] == "5"
    assert "GMT" in response.headers["Upload-Expires"]
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "5"
    # With a checksum over the body too; a mismatch still tells where the upload is.
    response = await tus("POST", headers={"Upload-Length": "11", **OCTET,
                                          "Upload-Checksum": checksum("sha1", b"other")},
                         body=b"hello")
    assert response.code == 460
    assert response.headers["Upload-Offset"] == "0"
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "0"
    # A body needs the offset content type.
    response = await tus("POST", headers={"Upload-Length": "11",
                                          "Content-Type": "text/plain"}, body=b"hello")
    assert response.code == 415


async def test_creation_defer_length(tus, create, patch, pirus):
    upload_id = await create(None, filename="stream.bin")
    head = await tus("HEAD", upload_id)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    assert (await patch(upload_id, 0, b"abc")).headers["Upload-Offset"] == "3"
    # The length arrives with a later PATCH ...
    response = await patch(upload_id, 3, b"def", Upload_Length="9")
    assert response.code == 204 and response.headers["Upload-Offset"] == "6"
    head = await tus("HEAD", upload_id)
    assert head.headers["Upload-Length"] == "9" and "Upload-Defer-Length" not in head.headers
    # ... and can never change.
    assert (await patch(upload_id, 6, b"ghi", Upload_Length="10")).code == 400
    assert (await patch(upload_id, 6, b"ghi", Upload_Length="9")).code == 204
    record = await pirus.uploads.record(upload_id)
    assert record["status"] == "complete"
    assert record["file"]["sha256"] == hashlib.sha256(b"abcdefghi").hexdigest()


# -- checksum ------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
async def test_checksum_accepted(create, patch, pirus, algorithm):
    upload_id = await create(6)
    response = await patch(upload_id, 0, b"abc", Upload_Checksum=checksum(algorithm, b"abc"))
    assert response.code == 204 and response.headers["Upload-Offset"] == "3"


async def test_checksum_mismatch_discards_the_chunk(tus, create, patch, pirus):
    data = pattern_bytes(0, 3 * MiB)
    upload_id = await create(len(data) * 2)
    assert (await patch(upload_id, 0, data, Upload_Checksum=checksum("sha1", data))).code == 204
    corrupted = bytearray(data)
    corrupted[12345] ^= 0xFF
    response = await patch(upload_id, len(data), bytes(corrupted),
                           Upload_Checksum=checksum("sha1", data))
    assert response.code == 460
    assert error_code(response) == "checksum_mismatch"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == str(len(data))
    assert pirus.uploads.part_path(upload_id).stat().st_size == len(data)
    # The same chunk, intact, is then accepted, and the running hash was not polluted.
    response = await patch(upload_id, len(data), data, Upload_Checksum=checksum("sha1", data))
    assert response.code == 204
    record = await pirus.uploads.record(upload_id)
    assert record["sha256"] == hashlib.sha256(data + data).hexdigest()
    assert file_sha256(Path(pirus.root_dir) / record["file"]["path"]) == record["sha256"]


async def test_checksum_bad_headers(create, patch):
    upload_id = await create(6)
    for header in ("crc32 AAAAAA==", "sha1", "sha1 notbase64!", "sha1 YQ==", "SHA1 " +
                   checksum("sha1", b"abc").split()[1]):
        response = await patch(upload_id, 0, b"abc", Upload_Checksum=header)
        assert response.code == 400, header


# -- termination ---------------------------------------------------------------------------------
async def test_termination(tus, create, patch, pirus):
    upload_id = await create(10)
    assert (await patch(upload_id, 0, b"abc")).code == 204
    part = pirus.uploads.part_path(upload_id)
    assert part.exists()
    response = await tus("DELETE", upload_id)
    assert response.code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert not part.exists()
    assert (await tus("HEAD", upload_id)).code == 404
    assert (await patch(upload_id, 3, b"def")).code == 404
    assert (await tus("DELETE", upload_id)).code == 404


# -- locking, interrupted requests ---------------------------------------------------------------
async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_concurrent_patch_loser_is_refused_without_writing(
        create, patch, pirus, uploads_path, jp_http_port, auth):
    size = 2 * MiB
    upload_id = await create(size)
    first = await RawRequest(jp_http_port, "PATCH", f"{uploads_path}/{upload_id}", {
        **auth, **TUS, **OCTET, "Upload-Offset": "0", "Content-Length": str(size)}).start()
    await first.send(b"a" * 1000)
    await wait_until(lambda: pirus.uploads.is_busy(upload_id))
    # The second writer is refused at once, while the first is still streaming.
    second = await patch(upload_id, 0, b"b" * 100)
    assert second.code == 423 and error_code(second) == "locked"
    assert second.headers["Tus-Resumable"] == "1.0.0"
    await first.send(b"a" * (size - 1000))
    response = await first.response()
    await first.close()
    assert response.status == 204 and response.headers["upload-offset"] == str(size)
    record = await pirus.uploads.record(upload_id)
    assert record["sha256"] == hashlib.sha256(b"a" * size).hexdigest()


async def test_concurrent_patches_racing(create, patch, pirus):
    upload_id = await create(8 * MiB)
    one, two = await asyncio.gather(patch(upload_id, 0, b"x" * 4 * MiB),
                                    patch(upload_id, 0, b"y" * 4 * MiB))
    assert sorted([one.code, two.code]) in ([204, 409], [204, 423])
    record = await pirus.uploads.record(upload_id)
    assert record["offset"] == 4 * MiB
    winner = b"x" if one.code == 204 else b"y"
    assert pirus.uploads.part_path(upload_id).read_bytes() == winner * 4 * MiB


async def test_client_abort_keeps_received_bytes_then_resume(
        tus, create, patch, pirus, uploads_path, jp_http_port, auth):
    size = 4 * MiB
    upload_id = await create(size, filename="abort.bin")
    request = await RawRequest(jp_http_port, "PATCH", f"{uploads_path}/{upload_id}", {
        **auth, **TUS, **OCTET, "Upload-Offset": "0", "Content-Length": str(size)}).start()
    sent = 3 * MiB // 2
    await request.send(pattern_bytes(0, sent))
    await asyncio.sleep(0.3)
    request.abort()
    await wait_until(lambda: not pirus.uploads.is_busy(upload_id))
    offset = int((await tus("HEAD", upload_id)).headers["Upload-Offset"])
    # The protocol asks to keep as much as possible: here, everything that arrived.
    assert 0 < offset <= sent
    assert pirus.uploads.part_path(upload_id).stat().st_size == offset
    response = await patch(upload_id, offset, pattern_bytes(offset, size))
    assert response.code == 204 and response.headers["Upload-Offset"] == str(size)
    record = await pirus.uploads.record(upload_id)
    assert record["status"] == "complete"
    assert record["sha256"] == pattern_sha256(size)
    assert file_sha256(Path(pirus.root_dir) / record["file"]["path"]) == pattern_sha256(size)


async def test_client_abort_with_checksum_discards_the_partial_chunk(
        tus, create, pirus, uploads_path, jp_http_port, auth):
    upload_id = await create(2 * MiB)
    data = pattern_bytes(0, 2 * MiB)
    request = await RawRequest(jp_http_port, "PATCH", f"{uploads_path}/{upload_id}", {
        **auth, **TUS, **OCTET, "Upload-Offset": "0", "Content-Length": str(len(data)),
        "Upload-Checksum": checksum("sha1", data)}).start()
    await request.send(data[:MiB + 5])
    await asyncio.sleep(0.2)
    request.abort()
    await wait_until(lambda: not pirus.uploads.is_busy(upload_id))
    # A checksum over the whole body can never be verified: nothing is kept.
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "0"
    assert pirus.uploads.part_path(upload_id).stat().st_size == 0


# -- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("method,with_id", [
    ("OPTIONS", False), ("GET", False), ("POST", False), ("OPTIONS", True), ("HEAD", True),
    ("GET", True), ("PATCH", True), ("DELETE", True), ("POST", True),
])
async def test_unauthenticated_requests_are_refused(tus, create, pirus, method, with_id):
    upload_id = await create(10)
    headers: dict[str, str] = {"Authorization": "token wrong"}
    body = None
    if method == "PATCH":
        headers.update({**OCTET, "Upload-Offset": "0"})
        body = b"hello"
    elif method == "POST" and with_id:
        headers.update({"X-HTTP-Method-Override": "PATCH", **OCTET, "Upload-Offset": "0"})
        body = b"hello"
    elif method == "POST":
        headers.update({"Upload-Length": "5", **OCTET})
        body = b"hello"
    response = await tus(method, upload_id if with_id else None, headers=headers, body=body)
    assert response.code == 403
    items, total = await pirus.uploads.list()
    assert total == 1 and items[0]["offset"] == 0
    assert pirus.uploads.part_path(upload_id).stat().st_size == 0


async def test_refusal_comes_before_the_body(pirus, create, uploads_path, jp_http_port, auth):
    """A refused PATCH is answered right after its headers: not one body byte is needed."""
    upload_id = await create(10)
    for headers, status in [
        ({"Authorization": "token wrong"}, 403),
        ({**auth, "Upload-Offset": "5"}, 409),
        ({**auth, "Upload-Offset": "0", "Tus-Resumable": "9.9.9"}, 412),
    ]:
        request = await RawRequest(jp_http_port, "PATCH", f"{uploads_path}/{upload_id}", {
            **TUS, **OCTET, "Content-Length": str(1024 ** 3), **headers}).start()
        response = await request.response(timeout=10)
        await request.close()
        assert response.status == status
        assert response.headers["tus-resumable"] == "1.0.0"
    assert pirus.uploads.part_path(upload_id).stat().st_size == 0


# -- expiration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pirus_config", [{"upload_expiration": 2.0}])
async def test_expiration_and_cleanup(tus, create, patch, pirus, jp_root_dir):
    from email.utils import parsedate_to_datetime

    upload_id = await create(10)
    response = await patch(upload_id, 0, b"abc")
    expires = parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
    assert 0 < expires - time.time() <= 2.5
    done_id = await upload_whole(create, patch, b"kept", filename="kept.txt")
    done = await pirus.uploads.record(done_id)
    assert done["expires"] is None  # finished uploads do not expire
    # Activity renews the lifetime: 1.2 s + 1.2 s after creation, but never 2 s idle.
    await asyncio.sleep(1.2)
    assert (await patch(upload_id, 3, b"def")).code == 204
    await asyncio.sleep(1.2)
    assert (await tus("HEAD", upload_id)).code == 200
    # Then idle past its lifetime: gone (410 until the cleanup ran, 404 after).
    await asyncio.sleep(2.2)
    assert (await tus("HEAD", upload_id)).code in (404, 410)
    assert (await patch(upload_id, 6, b"ghi")).code in (404, 410)
    await wait_until(lambda: not pirus.uploads.part_path(upload_id).exists(), timeout=5)
    assert (await tus("HEAD", upload_id)).code == 404
    # The finished upload and its file are untouched.
    assert (await tus("GET", done_id)).code == 200
    assert (Path(jp_root_dir) / done["file"]["path"]).read_bytes() == b"kept"


@pytest.mark.parametrize("pirus_config", [{"upload_expiration": 0.5}])
async def test_expired_upload_answers_410_before_cleanup(tus, create, pirus):
    # Stop the periodic task so that the expired row is still there.
    await wait_until(lambda: pirus.uploads._cleanup_task is not None)
    pirus.uploads._cleanup_task.cancel()
    upload_id = await create(10)
    await asyncio.sleep(0.7)
    response = await tus("HEAD", upload_id)
    assert response.code == 410 and "Upload-Offset" not in response.headers
    assert (await pirus.uploads.cleanup_expired()) == 1
    assert (await tus("HEAD", upload_id)).code == 404


# -- concatenation -------------------------------------------------------------------------------
async def test_concatenation_of_three_partials(tus, patch, pirus, jp_http_port, uploads_path):
    pieces = [pattern_bytes(0, MiB + 1), pattern_bytes(MiB + 1, 3 * MiB),
              pattern_bytes(3 * MiB, 3 * MiB + 17)]
    urls = []
    for piece in pieces:
        response = await tus("POST", headers={"Upload-Concat": "partial",
                                              "Upload-Length": str(len(piece))})
        assert response.code == 201
        upload_id = response.headers["Location"].rsplit("/", 1)[1]
        head = await tus("HEAD", upload_id)
        assert head.headers["Upload-Concat"] == "partial"
        assert (await patch(upload_id, 0, piece)).code == 204
        urls.append(response.headers["Location"])
    # URLs may be absolute or relative.
    urls[0] = f"http://127.0.0.1:{jp_http_port}{urls[0]}"
    concat = "final;" + " ".join(urls)
    response = await tus("POST", headers={"Upload-Concat": concat,
                                          "Upload-Metadata": metadata(filename="joined.bin")})
    assert response.code == 201, response.body
    final_id = response.headers["Location"].rsplit("/", 1)[1]
    assert (await patch(final_id, 0, b"x")).code == 403
    await pirus.uploads.wait_idle()
    head = await tus("HEAD", final_id)
    total = sum(len(p) for p in pieces)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(total)
    assert head.headers["Upload-Concat"] == concat
    record = await pirus.uploads.record(final_id)
    assert record["status"] == "complete" and record["concat"] == "final"
    joined = b"".join(pieces)
    assert record["sha256"] == hashlib.sha256(joined).hexdigest()
    assert (Path(pirus.root_dir) / record["file"]["path"]).read_bytes() == joined
    assert record["file"]["name"] == "joined.bin"
    # The partial uploads were consumed.
    for url in urls:
        assert (await tus("HEAD", url.rsplit("/", 1)[1])).code == 404


async def test_concatenation_rules(tus, create, patch, pirus, monkeypatch):
    import threading

    import pirus_jupyter.uploads.parts as parts_module

    async def partial(data: bytes, finish: bool = True) -> str:
        response = await tus("POST", headers={"Upload-Concat": "partial",
                                              "Upload-Length": str(len(data))})
        upload_id = response.headers["Location"].rsplit("/", 1)[1]
        if finish:
            assert (await patch(upload_id, 0, data)).code == 204
        return response.headers["Location"]

    done, unfinished = await partial(b"abc"), await partial(b"def", finish=False)
    regular = await create(3)
    for header, extra in [
        (f"final;{done} {unfinished}", {}),  # concatenation-unfinished is not offered
        (f"final;{done} /a%40b/pirus/api/v1/uploads/nosuchupload", {}),
        (f"final;{done} /a%40b/pirus/api/v1/uploads/{regular}", {}),  # not a partial upload
        (f"final;{done}", {"Upload-Length": "3"}),  # the length is implied
        ("final;", {}),
        ("final;/somewhere/else", {}),
    ]:
        response = await tus("POST", headers={"Upload-Concat": header, **extra})
        assert response.code == 400, header

    # While the parts are being assembled: HEAD has no Upload-Offset, and the parts are locked.
    release = threading.Event()
    real = parts_module.concat_files

    def slow_concat(sources, target):
        release.wait(10)
        return real(sources, target)

    monkeypatch.setattr(parts_module, "concat_files", slow_concat)
    other = await partial(b"ghi")
    response = await tus("POST", headers={"Upload-Concat": f"final;{done} {other}"})
    assert response.code == 201
    final_id = response.headers["Location"].rsplit("/", 1)[1]
    head = await tus("HEAD", final_id)
    assert head.code == 200 and "Upload-Offset" not in head.headers
    assert head.headers["Upload-Length"] == "6"
    assert (await tus("DELETE", done.rsplit("/", 1)[1])).code == 423
    assert (await tus("DELETE", final_id)).code == 423
    release.set()
    await pirus.uploads.wait_idle()
    head = await tus("HEAD", final_id)
    assert head.headers["Upload-Offset"] == "6"
    record = await pirus.uploads.record(final_id)
    assert (Path(pirus.root_dir) / record["file"]["path"]).read_bytes() == b"abcghi"


# -- what uploads become -------------------------------------------------------------------------
async def test_filenames_are_sanitized_and_made_unique(create, patch, pirus, jp_root_dir):
    cases = [
        ("../../escape.txt", "escape.txt"),
        ("a/b\\c.txt", "c.txt"),
        ("/etc/passwd", "passwd"),
        ("bad\x00na\nme.txt", "badname.txt"),
        ("reads.fastq.gz", "reads.fastq.gz"),
        ("reads.fastq.gz", "reads-1.fastq.gz"),
        ("reads.fastq.gz", "reads-2.fastq.gz"),
        (".hidden", ".hidden"),
        (".hidden", ".hidden-1"),
    ]
    root = Path(jp_root_dir)
    for index, (given, expected) in enumerate(cases):
        data = f"{index} {given}".encode()  # other bytes each: identical ones are one file
        upload_id = await upload_whole(create, patch, data, filename=given)
        record = await pirus.uploads.record(upload_id)
        assert record["filename"] == expected.replace("-1", "").replace("-2", "")
        assert record["file"]["path"] == f"pirus-uploads/{expected}", given
        assert record["file"]["source"] == "upload" and record["deduplicated"] is False
        assert (root / "pirus-uploads" / expected).read_bytes() == data
    upload_id = await upload_whole(create, patch, b"x", filename="..")
    record = await pirus.uploads.record(upload_id)
    assert record["filename"] == f"upload-{upload_id[:8]}"
    assert not (root.parent / "escape.txt").exists()


async def test_zero_length_upload_and_patches_after_completion(tus, create, patch, pirus):
    upload_id = await create(0, filename="empty.txt")
    record = await pirus.uploads.record(upload_id)
    assert record["status"] == "complete" and record["file"]["size"] == 0
    upload_id = await upload_whole(create, patch, b"abc")
    response = await patch(upload_id, 3, b"")
    assert response.code == 204 and response.headers["Upload-Offset"] == "3"
    assert (await patch(upload_id, 3, b"more")).code == 413
    assert (await patch(upload_id, 0, b"abc")).code == 409
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "3"


async def test_json_record_list_and_events(tus, create, patch, pirus, api, uploads_path):
    subscription = pirus.events.subscribe()
    upload_id = await create(5, filename="r.txt", sample="S1")
    code, record = await api("GET", "uploads", upload_id)
    assert code == 200
    assert record["id"] == upload_id and record["url"] == f"{uploads_path}/{upload_id}"
    assert record["status"] == "uploading" and record["offset"] == 0 and record["length"] == 5
    assert record["kind"] == "input" and record["filename"] == "r.txt"
    assert record["metadata"] == {"filename": "r.txt", "sample": "S1"}
    assert record["file"] is None and record["pipeline_id"] is None
    assert record["expires"] and record["created"]
    assert (await patch(upload_id, 0, b"hello")).code == 204
    code, record = await api("GET", "uploads", upload_id)
    assert record["status"] == "complete" and record["expires"] is None
    assert record["file"]["sha256"] == hashlib.sha256(b"hello").hexdigest() == record["sha256"]
    code, listing = await api("GET", "uploads")
    assert code == 200 and listing["total"] == 1 and listing["items"][0]["id"] == upload_id
    code, body = await api("GET", "uploads", "nosuchupload")
    assert code == 404 and body["error"]["code"] == "not_found"
    assert (await tus("DELETE", upload_id)).code == 204
    # Terminating a finished upload forgets the upload, not the Pirus file it became.
    code, _ = await api("GET", "files", record["file"]["id"])
    assert code == 200
    types = []
    while not subscription.queue.empty():
        types.append((await subscription.get())["type"])
    pirus.events.unsubscribe(subscription)
    assert types[0] == "upload.created" and "upload.updated" in types
    assert types[-1] == "upload.deleted" and "file.created" in types


async def test_only_a_finished_input_upload_installs_as_a_pipeline(create, patch, pirus, api):
    from pirus_jupyter.errors import Conflict

    upload_id = await create(5)
    with pytest.raises(Conflict):
        await pirus.uploads.install_pipeline(upload_id)
    code, body = await api("POST", "pipelines", body={"upload_id": upload_id})
    assert code == 409, body
    assert (await patch(upload_id, 0, b"hello")).code == 204
    # Finished: handed to the install (which refuses these bytes as a package, in the
    # background), its file record untouched.
    pipeline, new = await pirus.uploads.install_pipeline(upload_id)
    assert new and pipeline["status"] == "INSTALLING", pipeline
    record = await pirus.uploads.record(upload_id)
    assert (pirus.root_dir / record["file"]["path"]).read_bytes() == b"hello"


async def test_restart_reconciliation(tus, create, patch, pirus):
    """What start() does after a crash: cut unacknowledged bytes, drop orphans, finish uploads
    whose bytes were all recorded, rebuild the running hash from disk."""
    uploads = pirus.uploads
    upload_id = await create(10, filename="r.bin")
    assert (await patch(upload_id, 0, b"0123")).code == 204
    part = uploads.part_path(upload_id)
    with open(part, "ab") as f:
        f.write(b"garbage never acknowledged")
    orphan = uploads.parts_dir / "orphan"
    orphan.write_bytes(b"x")
    uploads.parts.hashes.clear()  # as after a restart: the in-memory hash state is gone
    await uploads.reconcile()
    assert part.read_bytes() == b"0123" and not orphan.exists()
    assert (await tus("HEAD", upload_id)).headers["Upload-Offset"] == "4"
    assert (await patch(upload_id, 4, b"45")).code == 204  # the hash is rebuilt from disk

    # All bytes recorded, but the server died before finishing: start() finishes it.
    with open(part, "ab") as f:
        f.write(b"6789")
    await pirus.store.update("uploads", upload_id, {"offset": 10})
    uploads.parts.hashes.clear()
    await uploads.reconcile()
    await uploads.wait_idle()
    record = await uploads.record(upload_id)
    assert record["status"] == "complete"
    assert record["sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    assert record["file"]["sha256"] == record["sha256"]


async def test_pipeline_upload_is_installed(create, patch, pirus, api, tus, count_package):
    from conftest import lxd_available, wait_for

    data = count_package.read_bytes()
    upload_id = await create(len(data), filename="count.tar.gz", kind="pipeline")
    record = await pirus.uploads.record(upload_id)
    pipeline_id = record["pipeline_id"]
    code, pipeline = await api("GET", "pipelines", pipeline_id)
    assert code == 200 and pipeline["status"] == "UPLOADING"
    assert pipeline["upload_offset"] == 0 and pipeline["size"] == len(data)
    half = len(data) // 2
    assert (await patch(upload_id, 0, data[:half])).code == 204
    code, pipeline = await api("GET", "pipelines", pipeline_id)
    assert pipeline["status"] == "UPLOADING" and pipeline["upload_offset"] == half
    assert (await patch(upload_id, half, data[half:])).code == 204
    code, pipeline = await api("GET", "pipelines", pipeline_id)
    assert pipeline["status"] != "UPLOADING"
    record = await pirus.uploads.record(upload_id)
    assert record["status"] == "complete" and record["file"] is None
    assert not pirus.uploads.part_path(upload_id).exists()  # handed over to the pipeline
    with pytest.raises(Exception, match="already installed"):
        await pirus.uploads.install_pipeline(upload_id)
    pipeline = await wait_for(api, "pipelines", pipeline_id,
                              until=lambda b: b["status"] not in ("UPLOADING", "INSTALLING"),
                              timeout=300)
    print("pipeline after upload:", pipeline["status"], pipeline["error"])
    if lxd_available():
        assert pipeline["status"] == "READY", pipeline
        # the same bytes uploaded again: the upload points at the installed pipeline and the
        # row it made while uploading is gone (no ERROR row left behind)
        again = await create(len(data), filename="count.tar.gz", kind="pipeline")
        second_id = (await pirus.uploads.record(again))["pipeline_id"]
        assert (await patch(again, 0, data)).code == 204
        record = await pirus.uploads.record(again)
        assert record["status"] == "complete" and record["pipeline_id"] == pipeline_id
        assert (await api("GET", "pipelines", second_id))[0] == 404
        assert not pirus.uploads.part_path(again).exists()
        await api("DELETE", "pipelines", pipeline_id)


async def test_terminated_pipeline_upload_fails_its_pipeline(create, patch, tus, pirus, api):
    upload_id = await create(100, filename="p.tar.gz", kind="pipeline")
    pipeline_id = (await pirus.uploads.record(upload_id))["pipeline_id"]
    assert (await patch(upload_id, 0, b"x" * 10)).code == 204
    assert (await tus("DELETE", upload_id)).code == 204
    _, pipeline = await api("GET", "pipelines", pipeline_id)
    assert pipeline["status"] == "ERROR" and "terminated" in pipeline["error"]


# -- the kernel uploader (tuspy) -----------------------------------------------------------------
class Interrupted(Exception):
    pass


@pytest.fixture
def server_url(jp_fetch, jp_http_port, jp_base_url) -> str:
    """The test server's URL for real clients (``jp_fetch`` makes the server accept them)."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
def token(jp_serverapp) -> str:
    return jp_serverapp.identity_provider.token


async def test_uploader_end_to_end_with_resume(server_url, token, tmp_path, pirus, tus):
    from pirus_jupyter.kernel.uploader import upload

    source = tmp_path / "reads.fastq"
    size = 10 * MiB + 123
    source.write_bytes(pattern_bytes(0, size))
    storage = tmp_path / "urls.json"
    seen: list[int] = []

    def interrupt_after_two_chunks(sent: int, total: int) -> None:
        seen.append(sent)
        assert total == size
        if sent >= 2 * MiB:
            raise Interrupted

    with pytest.raises(Interrupted):
        await asyncio.to_thread(upload, server_url, token, source, chunk_size=MiB,
                                progress=interrupt_after_two_chunks, url_storage_path=storage)
    assert seen == [0, MiB, 2 * MiB]
    items, total = await pirus.uploads.list()
    assert total == 1 and items[0]["offset"] == 2 * MiB

    seen.clear()
    record = await asyncio.to_thread(upload, server_url, token, source, chunk_size=MiB,
                                     progress=lambda sent, total: seen.append(sent),
                                     url_storage_path=storage, metadata={"sample": "S1"})
    assert seen[0] == 2 * MiB and seen[-1] == size  # resumed, not restarted
    assert (await pirus.uploads.list())[1] == 1
    assert record["status"] == "complete" and record["kind"] == "input"
    assert record["file"]["path"] == "pirus-uploads/reads.fastq"
    assert record["file"]["sha256"] == file_sha256(source) == record["sha256"]
    assert file_sha256(Path(pirus.root_dir) / record["file"]["path"]) == file_sha256(source)

    # The finished upload is forgotten locally: the same file again is a new upload, which
    # becomes the same file; asked for a copy, a new file.
    record = await asyncio.to_thread(upload, server_url, token, source, chunk_size=4 * MiB,
                                     url_storage_path=storage)
    assert record["file"]["path"] == "pirus-uploads/reads.fastq" and record["deduplicated"]
    assert (await pirus.uploads.list())[1] == 2
    assert not list((Path(pirus.root_dir) / "pirus-uploads").glob("reads-*"))
    record = await asyncio.to_thread(upload, server_url, token, source, chunk_size=4 * MiB,
                                     url_storage_path=storage, metadata={"copy": "true"})
    assert record["file"]["path"] == "pirus-uploads/reads-1.fastq"
    assert not record["deduplicated"]


async def test_uploader_restarts_when_the_remembered_upload_is_gone(server_url, token,
                                                                      tmp_path, pirus, tus):
    from pirus_jupyter.kernel.uploader import upload

    source = tmp_path / "x.bin"
    source.write_bytes(pattern_bytes(0, 3 * MiB))
    storage = tmp_path / "urls.json"

    def interrupt(sent: int, total: int) -> None:
        if sent:
            raise Interrupted

    with pytest.raises(Interrupted):
        await asyncio.to_thread(upload, server_url, token, source, chunk_size=MiB,
                                progress=interrupt, url_storage_path=storage)
    (first,), _ = await pirus.uploads.list()
    assert (await tus("DELETE", first["id"])).code == 204
    record = await asyncio.to_thread(upload, server_url, token, source, chunk_size=MiB,
                                     url_storage_path=storage)
    assert record["id"] != first["id"] and record["status"] == "complete"


async def test_uploader_resumes_across_processes(server_url, token, tmp_path, pirus):
    """A kernel killed mid-upload: a new process resumes from the server's offset."""
    from pirus_jupyter.kernel.uploader import upload

    source = tmp_path / "big.bin"
    size = 6 * MiB
    source.write_bytes(pattern_bytes(0, size))
    storage = tmp_path / "urls.json"
    script = (
        "import os, sys\n"
        "from pirus_jupyter.kernel.uploader import upload\n"
        "def die(sent, total):\n"
        "    if sent >= 3 * 1024 * 1024:\n"
        "        os._exit(3)\n"
        f"upload({server_url!r}, {token!r}, {str(source)!r}, chunk_size=1024 * 1024,\n"
        f"       progress=die, url_storage_path={str(storage)!r})\n"
    )
    # Run from a thread: the server under test lives on this event loop.
    process = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script],
                                      timeout=120)
    assert process.returncode == 3
    seen: list[int] = []
    record = await asyncio.to_thread(upload, server_url, token, source, chunk_size=MiB,
                                     progress=lambda sent, total: seen.append(sent),
                                     url_storage_path=storage)
    assert seen[0] == 3 * MiB
    assert record["sha256"] == file_sha256(source)
    assert (await pirus.uploads.list())[1] == 1


async def test_uploader_never_resumes_a_modified_file_wrongly(server_url, token, tmp_path,
                                                             pirus, monkeypatch):
    """Rewritten in place with the same size and its old mtime put back (``cp -p``): the
    fingerprint (ctime) differs, so a new upload is made. Should the fingerprint be fooled (a
    coarse filesystem, simulated by leaving ctime out), the SHA-256 of what is sent, compared
    with the server's, refuses the mixed result."""
    from pirus_jupyter.kernel import uploader

    source = tmp_path / "rewritten.bin"
    source.write_bytes(pattern_bytes(0, 3 * MiB))
    storage = tmp_path / "urls.json"

    def interrupt(sent: int, total: int) -> None:
        if sent:
            raise Interrupted

    def rewrite(shift: int) -> None:
        before = source.stat()
        source.write_bytes(pattern_bytes(shift, 3 * MiB + shift))
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))

    with pytest.raises(Interrupted):
        await asyncio.to_thread(uploader.upload, server_url, token, source, chunk_size=MiB,
                                progress=interrupt, url_storage_path=storage)
    rewrite(7)
    seen: list[int] = []
    record = await asyncio.to_thread(uploader.upload, server_url, token, source, chunk_size=MiB,
                                     progress=lambda sent, total: seen.append(sent),
                                     url_storage_path=storage)
    assert seen[0] == 0  # not resumed
    assert record["sha256"] == file_sha256(source)

    class CoarseFingerprint(uploader.FileFingerprint):
        def __init__(self, endpoint: str, kind: str, path: Path) -> None:
            super().__init__(endpoint, kind, path)
            self.key = self.key.rsplit("|ctime:", 1)[0]

    monkeypatch.setattr(uploader, "FileFingerprint", CoarseFingerprint)
    with pytest.raises(Interrupted):
        await asyncio.to_thread(uploader.upload, server_url, token, source, chunk_size=MiB,
                                progress=interrupt, url_storage_path=storage)
    rewrite(11)
    with pytest.raises(uploader.UploadError, match="does not match what the server received"):
        await asyncio.to_thread(uploader.upload, server_url, token, source, chunk_size=MiB,
                                url_storage_path=storage)


async def test_uploader_pipeline_kind(server_url, token, tmp_path, pirus, api):
    from pirus_jupyter.kernel.uploader import UploadError, upload

    source = tmp_path / "broken.tar.gz"
    source.write_bytes(b"not a package")
    record = await asyncio.to_thread(upload, server_url, token, source, kind="pipeline",
                                     url_storage_path=tmp_path / "urls.json")
    assert record["kind"] == "pipeline" and record["pipeline_id"]
    _, pipeline = await api("GET", "pipelines", record["pipeline_id"])
    assert pipeline["status"] != "UPLOADING"
    with pytest.raises(UploadError, match="403"):
        await asyncio.to_thread(upload, server_url, "wrong-token", source,
                                url_storage_path=tmp_path / "urls.json")


def test_part_file_writes_many_pieces_in_order(tmp_path):
    """One write job gets the pieces tornado handed over: more than one pwritev can take
    (IOV_MAX), empty ones among them, from a position inside the file."""
    from pirus_jupyter.uploads.parts import IOV_MAX, PartFile

    pieces = [bytes([i % 251]) * (i % 7) for i in range(IOV_MAX + 500)]
    (tmp_path / "part").write_bytes(b"x" * 10)
    part = PartFile(tmp_path / "part", 3)
    try:
        part.write_pieces(pieces, 3)
        part.write_pieces([b"end"], 3 + sum(map(len, pieces)))
    finally:
        part.close()
    assert (tmp_path / "part").read_bytes() == b"xxx" + b"".join(pieces) + b"end"


# -- big bodies and crashes ----------------------------------------------------------------------
@pytest.mark.slow
async def test_single_patch_larger_than_512_mib(create, pirus, uploads_path, jp_http_port, auth,
                                                jp_serverapp):
    total = 600 * MiB
    assert total > jp_serverapp.max_body_size  # the server-wide default limit
    upload_id = await create(total, filename="huge.bin")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    request = await RawRequest(jp_http_port, "PATCH", f"{uploads_path}/{upload_id}", {
        **auth, **TUS, **OCTET, "Upload-Offset": "0", "Content-Length": str(total)}).start()
    digest = hashlib.sha256()
    started = time.monotonic()
    checkpointed = False
    for piece in pattern(0, total):
        digest.update(piece)
        await request.send(piece)
        # Long bodies without a checksum are made durable as they go.
        checkpointed = checkpointed or (await pirus.uploads.record(upload_id))["offset"] > 0
    response = await request.response(timeout=300)
    elapsed = time.monotonic() - started
    await request.close()
    assert response.status == 204, response
    assert response.headers["upload-offset"] == str(total)
    assert checkpointed
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"600 MiB single PATCH: {total / MiB / elapsed:.0f} MiB/s, "
          f"peak RSS growth {rss_growth_mib:.0f} MiB")
    assert rss_growth_mib < 200  # streamed, never held in memory
    record = await pirus.uploads.record(upload_id)
    assert record["sha256"] == digest.hexdigest()
    path = Path(pirus.root_dir) / record["file"]["path"]
    assert path.stat().st_size == total
    assert file_sha256(path) == digest.hexdigest()


@pytest.mark.slow
def test_server_killed_mid_patch_then_restarted(tmp_path):
    from urllib.parse import urlparse

    from server import ServerProcess

    root = tmp_path / "root"
    root.mkdir()
    data_dir = tmp_path / "pirus-data"
    server = ServerProcess(root, data_dir).start()
    try:
        session = server.session
        total, first = 200 * MiB, 8 * MiB
        response = session.post(server.api("uploads"), headers={
            **TUS, "Upload-Length": str(total), "Upload-Metadata": metadata(filename="big.bin")})
        assert response.status_code == 201
        path = urlparse(response.headers["Location"]).path
        url = f"http://127.0.0.1:{server.port}{path}"
        upload_id = path.rsplit("/", 1)[1]
        response = session.patch(url, data=pattern_bytes(0, first),
                                 headers={**TUS, **OCTET, "Upload-Offset": "0"})
        assert response.status_code == 204

        # A slow streaming PATCH: 100 MiB of the remaining 192 MiB, then the server dies.
        sent = first + 100 * MiB
        sock = blocking_request(server.port, "PATCH", path, {
            **session.headers, **TUS, **OCTET, "Upload-Offset": str(first),
            "Content-Length": str(total - first)}, pattern(first, total, piece=MiB),
            stop_after=sent - first)
        time.sleep(1.0)
        part = data_dir / "uploads" / upload_id
        assert part.stat().st_size > first + CHECKPOINT_BYTES
        server.kill()
        sock.close()

        server.start()
        head = session.head(url, headers=TUS)
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        # Never ahead of what was sent; here the one checkpoint the killed PATCH passed
        # (taken at the first write-buffer boundary after 64 MiB).
        assert first <= offset <= sent
        assert first + CHECKPOINT_BYTES <= offset < first + CHECKPOINT_BYTES + 2 * MiB
        deadline = time.monotonic() + 10
        while part.stat().st_size != offset:  # the start-up check cut the unrecorded bytes
            assert time.monotonic() < deadline, (part.stat().st_size, offset)
            time.sleep(0.1)

        # Resume with the rest, streamed (chunked transfer encoding).
        response = session.patch(url, data=pattern(offset, total, piece=MiB),
                                 headers={**TUS, **OCTET, "Upload-Offset": str(offset)})
        assert response.status_code == 204, response.text
        assert response.headers["Upload-Offset"] == str(total)
        record = session.get(url).json()
        assert record["status"] == "complete"
        expected = pattern_sha256(total)
        assert record["sha256"] == expected
        assert file_sha256(root / record["file"]["path"]) == expected
        with sqlite3.connect(data_dir / "pirus.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        server.stop()
