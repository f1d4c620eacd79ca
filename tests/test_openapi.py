"""The OpenAPI document (``pirus_jupyter/openapi.yaml``) against the code.

* the document is a valid OpenAPI 3.1 document;
* every route of ``build_handlers()`` x every HTTP method its handler class implements is in the
  document, and the document has nothing else; the enums and public fields it declares are the
  ones of the code;
* against a live server, every response of every exercised operation (status, declared
  headers, body) is validated with openapi-core, and so is every request the tests send as
  valid (requests sent to provoke a 400 must be refused by the document too). The websocket's
  messages are validated against the ``Event`` schema.

A response that drifts from the document (a new or missing field, an internal field leaking,
another status code or content type) fails these tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from conftest import FINAL, requires_lxd
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.response.exceptions import MissingData
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import validate as validate_spec
from pkgbuild import COUNT_FORM, fastq
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from tornado import web
from werkzeug.datastructures import Headers, ImmutableMultiDict

import pirus_jupyter
from pirus_jupyter import models
from pirus_jupyter.events import EVENT_TYPES
from pirus_jupyter.handlers import build_handlers

SPEC_PATH = Path(pirus_jupyter.__file__).with_name("openapi.yaml")
API_PREFIX = "/pirus/api/v1"
TES_PREFIX = "/ga4gh/tes/v1"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SPEC_URN = "urn:pirus-openapi"
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


# -- the document ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def schema_validator(spec: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for ``#/components/schemas/<name>`` (references resolved in the document)."""
    registry = Registry().with_resource(SPEC_URN, DRAFT202012.create_resource(spec))
    return OAS31Validator({"$ref": f"{SPEC_URN}#/components/schemas/{name}"},
                          registry=registry, format_checker=oas31_format_checker)


def test_document_is_valid_openapi(spec):
    validate_spec(spec)
    assert spec["openapi"].startswith("3.1")
    OpenAPI.from_file_path(str(SPEC_PATH))  # openapi-core accepts it too


# -- routes x methods --------------------------------------------------------------------------
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^()]*)\)")
_ALTERNATIVES = re.compile(r"[\w-]+(?:\|[\w-]+)*")
_REGEX_CHARS = set("\\^$.|?*+()[]{}")


def route_paths(pattern: str, prefix: str = API_PREFIX) -> list[str]:
    """OpenAPI paths of a handler's route regex: the API prefix and an optional trailing slash
    dropped, named groups turned into ``{name}``, and a group that is a list of literal
    alternatives (``pause|resume|cancel``) expanded into one path each."""
    assert pattern.startswith(prefix), pattern
    rest = pattern[len(prefix):]
    rest = rest.removesuffix("/?")
    paths, position = [""], 0

    def literal(text: str) -> str:
        assert not _REGEX_CHARS & set(text), f"unsupported regex syntax in {pattern!r}"
        return text

    for group in _GROUP.finditer(rest):
        head = literal(rest[position:group.start()])
        if _ALTERNATIVES.fullmatch(group["body"]):
            paths = [p + head + alt for p in paths for alt in group["body"].split("|")]
        else:
            paths = [p + head + "{" + group["name"] + "}" for p in paths]
        position = group.end()
    tail = literal(rest[position:])
    return [(p + tail) or "/" for p in paths]


def implemented_methods(cls: type) -> set[str]:
    """HTTP methods a handler class implements itself: the nearest definition in its MRO is
    in Pirus' code (tornado answers 405 for the others; Jupyter's own CORS ``options`` of
    APIHandler is not part of this API)."""
    methods = set()
    for method in cls.SUPPORTED_METHODS:
        for klass in cls.__mro__:
            if method.lower() in vars(klass):
                if klass.__module__.startswith("pirus_jupyter."):
                    methods.add(method.lower())
                break
    return methods


def test_route_regex_translation():
    assert route_paths("/pirus/api/v1/?") == ["/"]
    assert route_paths(r"/pirus/api/v1/runs/(?P<run_id>\d+)/(?P<action>pause|resume)") == [
        "/runs/{run_id}/pause", "/runs/{run_id}/resume"]
    assert route_paths(r"/pirus/api/v1/uploads/(?P<upload_id>[A-Za-z0-9_-]+)/?") == [
        "/uploads/{upload_id}"]
    assert implemented_methods(web.RequestHandler) == set()


def test_every_route_and_method_is_documented_and_nothing_else(spec):
    served = set()
    for route in build_handlers():
        pattern, cls = route[0], route[1]
        if pattern.startswith(TES_PREFIX):
            continue  # GA4GH TES: its own document (tests/test_tes.py)
        methods = implemented_methods(cls)
        assert methods, f"{cls.__name__} implements no HTTP method"
        served |= {(path, m) for path in route_paths(pattern) for m in methods}
    documented = {(path, m) for path, item in spec["paths"].items() for m in item
                  if m in HTTP_METHODS}
    assert sorted(served - documented) == [], "served but not in openapi.yaml"
    assert sorted(documented - served) == [], "in openapi.yaml but not served"


def test_path_parameters_are_declared(spec):
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method in (m for m in item if m in HTTP_METHODS):
            params = [*item.get("parameters", []), *item[method].get("parameters", [])]
            declared = set()
            for p in params:
                if "$ref" in p:
                    p = spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
                if p["in"] == "path":
                    declared.add(p["name"])
            assert declared == names, (path, method)


def test_only_notify_is_unauthenticated(spec):
    assert spec["security"] == [{"jupyterToken": []}]
    open_ops = [(path, m) for path, item in spec["paths"].items() for m in item
                if m in HTTP_METHODS and item[m].get("security") == []]
    assert open_ops == [("/runs/{run_id}/notify", "post")]


# -- enums and public fields follow the code ----------------------------------------------------
def _schemas(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"]


def test_enums_follow_the_code(spec):
    schemas = _schemas(spec)
    assert schemas["RunStatus"]["enum"] == [s.value for s in models.RunStatus]
    assert schemas["PipelineStatus"]["enum"] == [s.value for s in models.PipelineStatus]
    from pirus_jupyter.runs.wrapper import LOG_NAMES

    which = spec["paths"]["/runs/{run_id}/logs/{which}"]["parameters"][1]
    assert which["name"] == "which" and which["schema"]["enum"] == list(LOG_NAMES)
    documented = set()
    for variant in schemas["Event"]["oneOf"]:
        kind = variant["properties"]["type"]
        documented |= set(kind.get("enum", [kind.get("const")]))
    assert documented == {*EVENT_TYPES, "pong"}


@pytest.mark.parametrize(("schema", "fields"), [
    ("Pipeline", models.PIPELINE_PUBLIC), ("Run", models.RUN_PUBLIC),
    ("File", models.FILE_PUBLIC)])
def test_public_fields_follow_the_code(spec, schema, fields):
    body = _schemas(spec)[schema]
    assert set(body["properties"]) == set(fields)
    assert set(body["required"]) == set(fields)
    assert body["additionalProperties"] is False


SAMPLES = {
    "Pipeline": {
        "id": 1, "name": "count", "description": "d", "version": "1.0", "pirus_api": "1",
        "license": "MIT", "developers": ["x"], "size": 10, "upload_offset": 10,
        "status": "READY", "error": None, "created": "2024-01-01T00:00:00.000+00:00",
        "documents": [], "limits": {}, "fingerprint": "a" * 64, "has_icon": False,
        "provenance": {"base": "debian:bookworm", "packages": {"bcftools": "1.16-1"}}},
    "Run": {
        "id": 1, "pipeline_id": 1, "pipeline_name": "count", "pipeline_version": "1.0",
        "pipeline_fingerprint": None, "name": "r", "config": {},
        "inputs": [{"name": "a", "path": "a", "size": 1}], "outputs": [], "start": None,
        "end": None, "status": "WAITING",
        "progress": {"value": 0, "min": 0, "max": 100, "label": None}, "exit_code": None,
        "error": None, "created": "2024-01-01T00:00:00.000+00:00", "metrics": None,
        "location": None, "target": None, "origin": None, "reused_from": None,
        "reuse_miss": None, "paused_seconds": 0, "paused_since": None},
    "File": {
        "id": 1, "name": "a", "path": "a", "size": 1, "sha256": "0" * 64, "source": "upload",
        "run_id": None, "created": "2024-01-01T00:00:00.000+00:00"},
    "UploadEventData": {
        "id": "abc", "filename": "a", "kind": "input", "length": 1, "offset": 0,
        "status": "uploading", "created": "2024-01-01T00:00:00.000+00:00", "expires": None,
        "concat": None, "parts": None, "metadata": {}, "sha256": None, "error": None,
        "file": None, "pipeline_id": None, "deduplicated": False},
}
LEAKS = {"Pipeline": "lxd_alias", "Run": "notify_token", "File": "root_path",
         "UploadEventData": "sha256_state"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_schemas_refuse_internal_fields(spec, name):
    validator = schema_validator(spec, name)
    validator.validate(SAMPLES[name])
    assert not validator.is_valid({**SAMPLES[name], LEAKS[name]: "x"})
    for field in SAMPLES[name]:
        assert not validator.is_valid({k: v for k, v in SAMPLES[name].items() if k != field}), (
            f"{name}.{field} should be required")
    upload = schema_validator(spec, "Upload")
    assert upload.is_valid({**SAMPLES["UploadEventData"], "url": "/pirus/api/v1/uploads/abc"})
    assert not upload.is_valid(SAMPLES["UploadEventData"])
    assert not upload.is_valid({**SAMPLES["UploadEventData"], "url": "/x", "extra": 1})


# -- validating live traffic ----------------------------------------------------------------------
class TornadoRequest:
    """openapi-core's Request protocol over a tornado client request; the Jupyter base URL is
    stripped so that paths match the document's ``/pirus/api/v1`` server."""

    def __init__(self, request: Any, base_url: str) -> None:
        parts = urlsplit(request.url)
        path = parts.path
        prefix = base_url.rstrip("/") + API_PREFIX
        assert path.startswith(prefix), path
        path = API_PREFIX + (path[len(prefix):].rstrip("/") or "/")
        self.api_path = path[len(API_PREFIX):]
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.path = path
        self.method = request.method.lower()
        self.body = request.body or None
        self.content_type = request.headers.get("Content-Type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query, keep_blank_values=True)),
            header=Headers(list(request.headers.get_all())),
            cookie=ImmutableMultiDict(),
        )


class TornadoResponse:
    def __init__(self, response: Any) -> None:
        self.status_code = response.code
        self.headers = Headers(list(response.headers.get_all()))
        self.content_type = response.headers.get("Content-Type", "").lower()
        self.data = response.body or b""


def _describe(error: BaseException) -> str:
    lines = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    while cause is not None:
        lines.append(f"  caused by {type(cause).__name__}: {cause}")
        for sub in getattr(cause, "schema_errors", None) or []:
            lines.append(f"    - {sub.message} at {list(sub.absolute_path)}")
        cause = cause.__cause__
    return "\n".join(lines)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template)) + "$")


@dataclass
class Reply:
    response: Any
    operation: tuple[str, str]

    @property
    def code(self) -> int:
        return int(self.response.code)

    @property
    def headers(self) -> Any:
        return self.response.headers

    @property
    def body(self) -> bytes:
        return self.response.body or b""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


EXERCISED: set[tuple[str, str, int]] = set()
_MISSING = object()

class Client:
    """``await client("GET", "runs", expect=200)``: call the API, then validate the request
    (unless ``valid_request=False``: then the document must refuse it too) and the response
    against the document, and check the status."""

    def __init__(self, api: Any, openapi: OpenAPI, spec: dict[str, Any], base_url: str
                 ) -> None:
        self.api = api
        self.openapi = openapi
        self.spec = spec
        self.base_url = base_url
        self.templates = sorted(spec["paths"], key=lambda t: (t.count("{"), t))

    def operation(self, api_path: str, method: str) -> tuple[str, dict[str, Any]]:
        for template in self.templates:
            if _template_regex(template).match(api_path) and method in self.spec["paths"][
                    template]:
                return template, self.spec["paths"][template][method]
        raise AssertionError(f"{method.upper()} {api_path} is not in openapi.yaml")

    def declared_response(self, operation: dict[str, Any], status: int) -> dict[str, Any]:
        response = operation["responses"][str(status)]
        if "$ref" in response:
            response = self.spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        return response

    async def __call__(self, method: str, *path: Any, expect: int | tuple[int, ...],
                       json_body: Any = _MISSING,
                       body: bytes | str | None = None, params: Any = None,
                       headers: dict[str, str] | None = None,
                       valid_request: bool | None = True) -> Reply:
        headers = dict(headers or {})
        if json_body is not _MISSING:
            body = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        response = await self.api(method, *path, body=body, params=params, headers=headers,
                                  raw=True)
        request = TornadoRequest(response.request, self.base_url)
        template, operation = self.operation(request.api_path, request.method)
        reply = Reply(response, (template, request.method))
        where = f"{method} {request.api_path} -> {response.code}"

        if valid_request is not None:  # None: not checked (e.g. a wrong token on purpose)
            request_errors = list(self.openapi.iter_request_errors(request))
            if valid_request:
                assert not request_errors, f"{where}: the document refuses the request:\n" + (
                    "\n".join(_describe(e) for e in request_errors))
            else:
                assert request_errors, f"{where}: the document accepts this invalid request"

        assert str(response.code) in operation["responses"], (
            f"{where}: status not documented; body: {reply.body[:500]!r}")
        result = TornadoResponse(response)
        declared = self.declared_response(operation, response.code)
        errors = list(self.openapi.iter_response_errors(request, result))
        if not result.data:
            # openapi-core refuses an empty body wherever content is declared; an empty log or
            # file is legitimate, an empty JSON document is not.
            if any(isinstance(e, MissingData) for e in errors):
                content = declared.get("content", {})
                media = result.content_type.split(";")[0].strip()
                assert any(re.fullmatch(k.replace("*", "[^/]+"), media) for k in content), (
                    f"{where}: content type {media!r} not declared")
                assert media != "application/json", f"{where}: empty JSON body"
                errors = [e for e in errors if not isinstance(e, MissingData)]
        elif "content" not in declared:
            raise AssertionError(f"{where}: a body where the document declares none: "
                                 f"{result.data[:200]!r}")
        assert not errors, f"{where}: the response does not match openapi.yaml:\n" + (
            "\n".join(_describe(e) for e in errors)) + f"\nbody: {reply.body[:2000]!r}"
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert response.code in expected, f"{where}, expected {expect}: {reply.body[:2000]!r}"
        EXERCISED.add((template, request.method, response.code))
        return reply


@pytest.fixture(scope="module", autouse=True)
def coverage_report(spec):
    """With PIRUS_OPENAPI_COVERAGE=1, print which documented (path, method, status) the module
    exercised (use ``-s``)."""
    yield
    if os.environ.get("PIRUS_OPENAPI_COVERAGE"):
        print("\nexercised / documented responses:")
        for path, item in spec["paths"].items():
            for method in (m for m in item if m in HTTP_METHODS):
                for status in item[method]["responses"]:
                    mark = "x" if (path, method, int(status)) in EXERCISED else " "
                    print(f"  [{mark}] {method.upper():7} {path} {status}")


@pytest.fixture
def client(api, openapi, spec, jp_base_url) -> Client:
    return Client(api, openapi, spec, jp_base_url)


@pytest.fixture
def event_validator(spec) -> OAS31Validator:
    return schema_validator(spec, "Event")


async def drain_events(ws: Any, validator: OAS31Validator, until: Any = None,
                       timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read (and validate) websocket messages until ``until(messages)`` or a quiet period."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
        except asyncio.TimeoutError:
            break
        assert raw is not None, "the websocket closed"
        message = json.loads(raw)
        errors = sorted(validator.iter_errors(message), key=lambda e: list(e.path))
        assert not errors, f"event {message} does not match Event: {errors[0].message}"
        messages.append(message)
        if until is not None and until(messages):
            break
    return messages


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def _metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


# -- without LXD ----------------------------------------------------------------------------------
async def test_info_and_authentication(client):
    info = (await client("GET", expect=200)).json
    assert info["api_version"] == "1"
    await client("GET", "", expect=200)  # trailing slash
    bad = {"Authorization": "token not-the-token"}
    for method, path, kwargs in [
        ("GET", (), {}), ("GET", ("pipelines",), {}), ("GET", ("runs",), {}),
        ("POST", ("runs",), {"json_body": {"pipeline_id": 1}}), ("GET", ("files",), {}),
        ("GET", ("databases",), {}), ("DELETE", ("runs", 1), {}),
        ("GET", ("uploads",), {}), ("OPTIONS", ("uploads",), {}),
    ]:
        reply = await client(method, *path, headers=bad, expect=403, **kwargs)
        assert reply.json["error"]["code"] == "forbidden"


PLACEHOLDERS = {"pipeline_id": "1", "run_id": "1", "file_id": "1", "upload_id": "abc",
                "which": "out", "name": "README.md"}


async def test_every_authenticated_operation_refuses_a_wrong_token(client, spec):
    bad = {"Authorization": "token not-the-token"}
    for path, item in spec["paths"].items():
        for method in (m for m in item if m in HTTP_METHODS):
            if item[method].get("security") == []:
                continue
            headers = dict(bad)
            if path.startswith("/uploads"):
                headers.update(TUS)
            if path == "/events":
                headers.update({"Upgrade": "websocket", "Connection": "Upgrade"})
            parts = [PLACEHOLDERS.get(p[1:-1], p) for p in path.strip("/").split("/") if p]
            reply = await client(method.upper(), *parts, headers=headers, expect=403,
                                 valid_request=None)
            if reply.body and reply.headers["Content-Type"].startswith("application/json"):
                assert reply.json["error"]["code"] == "forbidden", (method, path)


async def test_events_handshake_errors(client):
    await client("GET", "events", expect=400, valid_request=False)
    reply = await client("GET", "events", headers={"Upgrade": "websocket",
                                                   "Connection": "Upgrade"}, expect=426,
                         valid_request=False)  # no Sec-WebSocket-Version/Key: not a handshake
    assert reply.headers["Sec-WebSocket-Version"]


async def test_empty_collections_and_404s(client):
    assert (await client("GET", "pipelines", expect=200)).json == {"items": [], "total": 0}
    await client("GET", "pipelines", params={"status": "READY"}, expect=200)
    page = (await client("GET", "runs", expect=200)).json
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert (await client("GET", "files", expect=200)).json == {"items": [], "total": 0}
    for method, path in [
        ("GET", ("pipelines", 9)), ("DELETE", ("pipelines", 9)),
        ("GET", ("pipelines", 9, "form")), ("GET", ("pipelines", 9, "icon")),
        ("GET", ("pipelines", 9, "package")), ("GET", ("pipelines", 9, "documents", "a.md")),
        ("GET", ("runs", 9)), ("DELETE", ("runs", 9)), ("POST", ("runs", 9, "pause")),
        ("POST", ("runs", 9, "resume")), ("POST", ("runs", 9, "cancel")),
        ("GET", ("runs", 9, "logs", "out")), ("GET", ("runs", 9, "outputs")),
        ("GET", ("files", 9)), ("DELETE", ("files", 9)), ("GET", ("files", 9, "content")),
    ]:
        reply = await client(method, *path, expect=404)
        assert reply.json["error"]["code"] == "not_found"
    # the notify endpoint answers an unknown run like a wrong token
    for params in ({"token": "x"}, None):
        reply = await client("POST", "runs", 9, "notify", params=params,
                             headers={"Authorization": ""}, json_body={"progress": {"value": 1}},
                             expect=403, valid_request=params is not None)
        assert reply.json["error"]["code"] == "forbidden"


async def test_bad_query_parameters_are_400_for_server_and_document(client):
    for path, params in [
        (("runs",), {"status": "BOGUS"}), (("runs",), {"status": "DONE,nope"}),
        (("runs",), {"pipeline_id": "x"}), (("runs",), {"limit": "0"}),
        (("runs",), {"limit": "1001"}), (("runs",), {"limit": "ten"}),
        (("runs",), {"offset": "-1"}), (("files",), {"limit": "0"}),
        (("files",), {"offset": "x"}), (("uploads",), {"limit": "5000"}),
        (("runs",), {"after": "-1"}), (("files",), {"after": "x"}),
        (("files",), {"order": "up"}), (("files",), {"source": "disk"}),
    ]:
        reply = await client("GET", *path, params=params, expect=400, valid_request=False)
        assert reply.json["error"]["code"] == "invalid_request", (path, params)
    page = (await client("GET", "runs", params={"status": "DONE,ERROR", "limit": "1000",
                                                "offset": "3"}, expect=200)).json
    assert (page["limit"], page["offset"]) == (1000, 3)
    await client("GET", "runs", params={"after": "5", "status": "DONE"}, expect=200)
    await client("GET", "files", params={"after": "5", "order": "desc", "source": "upload"},
                 expect=200)


# Known bugs, pinned: each of these is a 500 today. ``strict``: a fix makes the test pass,
# which fails the run until the marker is removed.
INT64_OVERFLOW = "99999999999999999999"  # > 2**63 - 1: SQLite raises OverflowError


async def test_ids_too_large_for_sqlite_are_not_found(client):
    for kind in ("pipelines", "runs", "files"):
        await client("GET", kind, INT64_OVERFLOW, expect=(400, 404), valid_request=False)


async def test_offsets_too_large_for_sqlite_are_refused(client):
    for kind in ("runs", "files", "uploads"):
        await client("GET", kind, params={"offset": INT64_OVERFLOW}, expect=400,
                     valid_request=False)


async def test_non_decimal_digits_in_id_filters(client):
    await client("GET", "runs", params={"pipeline_id": "²"}, expect=400, valid_request=False)
    await client("GET", "files", params={"run_id": "²"}, expect=(200, 400),
                 valid_request=False)


async def test_run_creation_errors_without_a_pipeline(client, jp_root_dir):
    for body in [{"pipeline_id": "1"}, {}, {"pipeline_id": 1, "colour": "red"}]:
        reply = await client("POST", "runs", json_body=body, expect=400, valid_request=False)
        assert reply.json["error"]["code"] == "invalid_request"
    await client("POST", "runs", body="[1, 2]", headers={"Content-Type": "application/json"},
                 expect=400, valid_request=False)
    await client("POST", "runs", json_body={"pipeline_id": 41}, expect=404)


async def test_databases(client, pirus):
    root = pirus.runs.databases_dir
    (root / "hg38.fa").write_bytes(b"A" * 10)
    (root / "refseq").mkdir()
    (root / "refseq" / "a").write_bytes(b"B" * 5)
    (root / ".hidden").write_text("x")
    body = (await client("GET", "databases", expect=200)).json
    assert body == {"items": [{"name": "hg38.fa", "size": 10, "path": "hg38.fa"},
                              {"name": "refseq", "size": 5, "path": "refseq"}],
                    "total": 2}


async def test_uploads_files_and_events(client, pirus, jp_ws_fetch, event_validator):
    """TUS uploads of an input and of a (broken) pipeline package, the file records they
    become, a pipeline that fails to install, and the events all this publishes."""
    ws = await jp_ws_fetch("pirus", "api", "v1", "events")
    ws.write_message("ping")
    events = await drain_events(ws, event_validator, until=lambda m: m[-1]["type"] == "pong")
    assert events[-1] == {"type": "pong", "data": {}}

    options = await client("OPTIONS", "uploads", expect=204)
    assert "creation" in options.headers["Tus-Extension"].split(",")
    await client("OPTIONS", "uploads", "abc", expect=204)

    # creation-with-upload of half the bytes, HEAD, PATCH the rest
    content = b"@r1\nACGT\n+\nIIII\n" * 50
    half = len(content) // 2
    created = await client("POST", "uploads", body=content[:half], expect=201, headers={
        **TUS, "Upload-Length": str(len(content)), "Content-Type": OFFSET_TYPE,
        "Upload-Metadata": _metadata(filename="reads.fastq")})
    assert created.headers["Upload-Offset"] == str(half)
    location = created.headers["Location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    head = await client("HEAD", "uploads", upload_id, headers=TUS, expect=200)
    assert head.headers["Upload-Offset"] == str(half)
    assert head.headers["Upload-Length"] == str(len(content))
    record = (await client("GET", "uploads", upload_id, expect=200)).json
    assert record["status"] == "uploading" and record["url"] == location
    mismatch = await client("PATCH", "uploads", upload_id, body=b"xx", expect=409, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE})
    assert mismatch.json["error"]["code"] == "offset_mismatch"
    await client("PATCH", "uploads", upload_id, body=b"xx", expect=415, headers={
        **TUS, "Upload-Offset": str(half), "Content-Type": "application/json"},
        valid_request=False)
    await client("PATCH", "uploads", upload_id, body=content[half:], expect=460, headers={
        **TUS, "Upload-Offset": str(half), "Content-Type": OFFSET_TYPE,
        "Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(b"").digest()).decode()})
    done = await client("PATCH", "uploads", upload_id, body=content[half:], expect=204,
                        headers={**TUS, "Upload-Offset": str(half), "Content-Type": OFFSET_TYPE})
    assert done.headers["Upload-Offset"] == str(len(content))
    record = (await client("GET", "uploads", upload_id, expect=200)).json
    assert record["status"] == "complete"
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    file_id = record["file"]["id"]

    # TUS errors
    await client("HEAD", "uploads", upload_id, expect=412, valid_request=False)
    await client("HEAD", "uploads", "nope", headers=TUS, expect=404)
    await client("GET", "uploads", "nope", expect=404)
    await client("POST", "uploads", headers=TUS, expect=400)  # no Upload-Length
    await client("POST", "uploads", headers={**TUS, "Upload-Length": str(2**62)}, expect=413)
    deferred = await client("POST", "uploads", headers={**TUS, "Upload-Defer-Length": "1"},
                            expect=201)
    deferred_id = deferred.headers["Location"].rsplit("/", 1)[-1]
    head = await client("HEAD", "uploads", deferred_id, headers=TUS, expect=200)
    assert head.headers["Upload-Defer-Length"] == "1"
    await client("DELETE", "uploads", deferred_id, headers=TUS, expect=204)
    await client("DELETE", "uploads", deferred_id, headers=TUS, expect=404)

    # concatenation of two partial uploads
    parts = []
    for piece in (b"hello ", b"world\n"):
        part = await client("POST", "uploads", body=piece, expect=201, headers={
            **TUS, "Upload-Length": str(len(piece)), "Content-Type": OFFSET_TYPE,
            "Upload-Concat": "partial"})
        parts.append(part.headers["Location"])
    final = await client("POST", "uploads", expect=201, headers={
        **TUS, "Upload-Concat": "final;" + " ".join(parts),
        "Upload-Metadata": _metadata(filename="hello.txt")})
    final_id = final.headers["Location"].rsplit("/", 1)[-1]
    await pirus.uploads.wait_idle()
    final_record = (await client("GET", "uploads", final_id, expect=200)).json
    assert final_record["status"] == "complete" and final_record["concat"] == "final"
    listing = (await client("GET", "uploads", params={"limit": "10"}, expect=200)).json
    assert {u["id"] for u in listing["items"]} >= {upload_id, final_id}

    # the file records
    files = (await client("GET", "files", expect=200)).json
    assert {f["name"] for f in files["items"]} == {"reads.fastq", "hello.txt"}
    page = (await client("GET", "files", params={"limit": "1", "offset": "1"}, expect=200)).json
    assert page["total"] == 2 and len(page["items"]) == 1
    record = (await client("GET", "files", file_id, expect=200)).json
    assert record["source"] == "upload" and record["run_id"] is None
    download = await client("GET", "files", file_id, "content", expect=200)
    assert download.body == content
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"reads.fastq\"; filename*=UTF-8''reads.fastq")

    # a finished input upload installed as a pipeline: not a package, so it ends in ERROR
    # (no LXD call is made for a package that does not even open)
    reply = await client("POST", "pipelines", json_body={"upload_id": upload_id}, expect=202)
    assert reply.headers["Location"].endswith(f"/pirus/api/v1/pipelines/{reply.json['id']}")
    await pirus.pipelines.wait_installs()
    pipeline = (await client("GET", "pipelines", reply.json["id"], expect=200)).json
    assert pipeline["status"] == "ERROR" and pipeline["error"]
    listing = (await client("GET", "pipelines", params={"status": "ERROR"}, expect=200)).json
    assert [p["id"] for p in listing["items"]] == [pipeline["id"]]
    await client("GET", "pipelines", pipeline["id"], "package", expect=409)
    form = (await client("GET", "pipelines", pipeline["id"], "form", expect=200)).json
    assert form["properties"] == {}
    await client("POST", "runs", json_body={"pipeline_id": pipeline["id"]}, expect=409)
    await client("DELETE", "pipelines", pipeline["id"], expect=204)

    # a pipeline upload (kind=pipeline) creates its record at once, UPLOADING
    junk = b"not a tarball"
    created = await client("POST", "uploads", expect=201, headers={
        **TUS, "Upload-Length": str(len(junk)),
        "Upload-Metadata": _metadata(filename="junk.tar.gz", kind="pipeline")})
    junk_id = created.headers["Location"].rsplit("/", 1)[-1]
    pipeline_id = (await client("GET", "uploads", junk_id, expect=200)).json["pipeline_id"]
    uploading = (await client("GET", "pipelines", pipeline_id, expect=200)).json
    assert uploading["status"] == "UPLOADING"
    await client("DELETE", "pipelines", pipeline_id, expect=409)
    await client("PATCH", "uploads", junk_id, body=junk, expect=204, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE})
    await pirus.pipelines.wait_installs()
    failed = (await client("GET", "pipelines", pipeline_id, expect=200)).json
    assert failed["status"] == "ERROR"
    await client("POST", "pipelines", json_body={"upload_id": junk_id}, expect=409)

    # pipeline install errors
    for body, code in [({}, 400), ({"path": ""}, 400), ({"path": "../outside.tar"}, 403),
                       ({"path": "missing.tar.gz"}, 404), ({"upload_id": "nope"}, 404)]:
        await client("POST", "pipelines", json_body=body, expect=code,
                     valid_request=code != 400)

    # deleting a file record
    await client("DELETE", "files", file_id, expect=204)
    await client("GET", "files", file_id, expect=404)
    await client("DELETE", "uploads", upload_id, headers=TUS, expect=204)

    events = await drain_events(ws, event_validator, timeout=1.0)
    ws.close()
    kinds = {m["type"] for m in events}
    assert kinds >= {"upload.created", "upload.updated", "upload.deleted", "file.created",
                     "file.deleted", "pipeline.created", "pipeline.updated",
                     "pipeline.deleted"}, kinds


async def _upload(client: Client, pirus: Any, content: bytes, filename: str) -> dict[str, Any]:
    """A finished input upload (one creation-with-upload request); returns its file record."""
    created = await client("POST", "uploads", body=content, expect=201, headers={
        **TUS, "Upload-Length": str(len(content)), "Content-Type": OFFSET_TYPE,
        "Upload-Metadata": _metadata(filename=filename)})
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    await pirus.uploads.wait_idle()
    record = (await client("GET", "uploads", upload_id, expect=200)).json
    assert record["status"] == "complete", record
    return record["file"]


async def test_streamed_downloads_have_their_content_type(api, openapi, spec, jp_base_url,
                                                          pirus):
    client = Client(api, openapi, spec, jp_base_url)
    record = await _upload(client, pirus, b"ACGT\n", "reads.fastq")
    reply = await client("GET", "files", record["id"], "content", expect=200)
    assert reply.headers["Content-Type"] == "application/octet-stream"


async def test_tus_errors(client, pirus):
    offset = {"Content-Type": OFFSET_TYPE}
    refused = await client("POST", "uploads", headers={"Upload-Length": "3"}, expect=412,
                           valid_request=False)
    assert refused.headers["Tus-Version"] == "1.0.0"
    await client("POST", "uploads", body=b"abc", expect=415, valid_request=False, headers={
        **TUS, "Upload-Length": "3", "Content-Type": "text/plain"})
    mismatch = await client("POST", "uploads", body=b"abc", expect=460, headers={
        **TUS, **offset, "Upload-Length": "3",
        "Upload-Checksum": "md5 " + base64.b64encode(hashlib.md5(b"xyz").digest()).decode()})
    upload_id = mismatch.headers["Location"].rsplit("/", 1)[-1]
    assert mismatch.headers["Upload-Offset"] == "0"
    await client("PATCH", "uploads", "nope", body=b"a", headers={**TUS, **offset,
                                                                "Upload-Offset": "0"},
                 expect=404)
    await client("PATCH", "uploads", upload_id, body=b"a", expect=412, valid_request=False,
                 headers={**offset, "Upload-Offset": "0"})
    await client("PATCH", "uploads", upload_id, body=b"a", expect=400, valid_request=False,
                 headers={**TUS, **offset, "Upload-Offset": "first"})
    await client("PATCH", "uploads", upload_id, body=b"abcd", expect=413,
                 headers={**TUS, **offset, "Upload-Offset": "0"})
    await client("DELETE", "uploads", upload_id, expect=412, valid_request=False)

    # an expired upload is gone (until the cleanup removes it)
    pirus.uploads.expiration = 0.05
    created = await client("POST", "uploads", headers={**TUS, "Upload-Length": "3"},
                           expect=201)
    assert created.headers["Upload-Expires"].endswith("GMT")
    expired = created.headers["Location"].rsplit("/", 1)[-1]
    await asyncio.sleep(0.2)
    await client("HEAD", "uploads", expired, headers=TUS, expect=410)
    assert (await client("GET", "uploads", expired, expect=410)).json["error"]["code"] == "gone"
    await client("PATCH", "uploads", expired, body=b"abc", expect=410,
                 headers={**TUS, **offset, "Upload-Offset": "0"})
    await client("POST", "pipelines", json_body={"upload_id": expired}, expect=410)
    await client("DELETE", "uploads", expired, headers=TUS, expect=204)


async def test_download_of_a_file_with_a_non_latin1_name(client, pirus):
    record = await _upload(client, pirus, b"ACGT\n", "échantillon_名.fastq")
    await client("GET", "files", record["id"], "content", expect=200)


# -- with LXD -------------------------------------------------------------------------------------
SLEEPY_SCRIPT = """#!/bin/sh
i=0
while [ $i -lt 25 ]; do
  i=$((i+1))
  echo "{\\"progress\\": {\\"value\\": $i, \\"max\\": 25, \\"label\\": \\"step $i\\"}}" \\
    >> "$PIRUS_PROGRESS_FILE"
  echo "step $i"
  sleep 0.2
done
echo finished > "$PIRUS_OUTPUTS_DIR/result.txt"
"""


@pytest.fixture(scope="module")
def illustrated_package(tmp_path_factory) -> Path:
    """A slow pipeline with an icon and a document."""
    from pirus_jupyter.packaging import build_package_from_parts

    manifest = {"name": "sleepy-doc", "version": "2.0", "description": "sleeps",
                "license": "MIT", "developers": ["Pirus tests"],
                "documents": ["/pipeline/README.md"], "limits": {"processes": "200"}}
    files: dict[str, bytes | Path] = {
        "/pipeline/run.sh": SLEEPY_SCRIPT.encode(),
        "/pipeline/form.json": json.dumps({"type": "object", "properties": {
            "inputs": {"type": "string", "enum": ["__PIRUS_INPUT_FILES__"]}}}).encode(),
        "/pipeline/icon.png": _png(),
        "/pipeline/README.md": b"# sleepy\n\nSleeps, reporting progress.\n",
    }
    return build_package_from_parts(manifest, files,
                                    tmp_path_factory.mktemp("pkg") / "sleepy-doc.tar.gz")


async def wait_for_status(client: Client, kind: str, item_id: int, until: Any,
                          timeout: float = 90.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client("GET", kind, item_id, expect=200)).json
        if until(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {body}"
        await asyncio.sleep(0.1)


@pytest.mark.lxd
@requires_lxd
async def test_pipelines_and_runs_on_lxd(client, install, count_package, illustrated_package,
                                        jp_root_dir, pirus, jp_ws_fetch, event_validator):
    root = Path(jp_root_dir)
    ws = await jp_ws_fetch("pirus", "api", "v1", "events")
    count = await install(count_package)

    # an install through the validated client: 202 + Location, then READY
    shutil.copyfile(illustrated_package, root / illustrated_package.name)
    reply = await client("POST", "pipelines", json_body={"path": illustrated_package.name},
                         expect=202)
    assert reply.json["status"] == "INSTALLING"
    sleepy = await wait_for_status(client, "pipelines", reply.json["id"],
                                   until=lambda b: b["status"] not in ("INSTALLING",))
    assert sleepy["status"] == "READY", sleepy
    assert sleepy["documents"] == ["README.md"] and sleepy["limits"] == {"processes": "200"}

    listing = (await client("GET", "pipelines", expect=200)).json
    assert listing["total"] == 2
    await client("GET", "pipelines", count["id"], expect=200)
    form = (await client("GET", "pipelines", count["id"], "form", expect=200)).json
    assert set(form["properties"]) == set(COUNT_FORM["properties"])
    form = (await client("GET", "pipelines", sleepy["id"], "form",
                         params=[("inputs", "x/a.fastq"), ("inputs", "b.fastq")],
                         expect=200)).json
    assert form["properties"]["inputs"]["enum"] == ["a.fastq", "b.fastq"]
    icon = await client("GET", "pipelines", sleepy["id"], "icon", expect=200)
    assert icon.body == _png()
    await client("GET", "pipelines", count["id"], "icon", expect=404)
    doc = await client("GET", "pipelines", sleepy["id"], "documents", "README.md", expect=200)
    assert doc.text.startswith("# sleepy")
    await client("GET", "pipelines", sleepy["id"], "documents", "other.md", expect=404)
    package = await client("GET", "pipelines", count["id"], "package", expect=200)
    assert package.body == count_package.read_bytes()
    assert package.headers["Content-Disposition"] == (
        f'attachment; filename="pipeline-{count["id"]}.tar.gz"; '
        f"filename*=UTF-8''pipeline-{count['id']}.tar.gz")

    # run creation errors
    (root / "data").mkdir()
    (root / "data" / "a.fastq").write_bytes(fastq(10))
    (root / "data" / "b.fastq").write_bytes(fastq(4))
    invalid = await client("POST", "runs", json_body={
        "pipeline_id": count["id"], "config": {"min_length": -1}}, expect=400)
    assert invalid.json["error"]["code"] == "invalid_config"
    assert invalid.json["error"]["details"][0]["field"] == "min_length"
    await client("POST", "runs", json_body={"pipeline_id": count["id"], "config": [1]},
                 expect=400, valid_request=False)
    await client("POST", "runs", json_body={"pipeline_id": count["id"],
                                            "inputs": ["../../etc/passwd"]}, expect=403)
    await client("POST", "runs", json_body={"pipeline_id": count["id"],
                                            "inputs": ["data/none.fastq"]}, expect=404)
    await client("POST", "runs", json_body={"pipeline_id": count["id"], "inputs": ["data"]},
                 expect=400)
    await client("POST", "runs", json_body={"pipeline_id": count["id"], "inputs": [987]},
                 expect=404)

    # a run to its end
    created = await client("POST", "runs", expect=201, json_body={
        "pipeline_id": count["id"], "name": "count reads", "config": {"min_length": 11},
        "inputs": ["data/a.fastq", "data/b.fastq"]})
    run = created.json
    assert created.headers["Location"].endswith(f"/pirus/api/v1/runs/{run['id']}")
    assert run["status"] == "WAITING" and run["metrics"] is None
    await client("GET", "runs", params={"status": "WAITING,INITIALIZING,RUNNING,FINISHING,DONE",
                                        "pipeline_id": str(count["id"]), "limit": "1"},
                 expect=200)
    run = await wait_for_status(client, "runs", run["id"], until=lambda b: b["status"] in FINAL)
    assert run["status"] == "DONE", run
    await client("POST", "runs", run["id"], "pause", expect=409)
    await client("POST", "runs", run["id"], "resume", expect=409)
    await client("POST", "runs", run["id"], "cancel", expect=409)
    outputs = (await client("GET", "runs", run["id"], "outputs", expect=200)).json
    assert outputs["total"] == 2
    # reuse, diff and lineage (docs/reuse.md); the reused run is deleted again
    again = {"pipeline_id": run["pipeline_id"], "config": run["config"],
             "inputs": [i["path"] for i in run["inputs"]], "reuse": True}
    reused = (await client("POST", "runs", json_body=again, expect=201)).json
    assert reused["status"] == "DONE" and reused["reused_from"] == run["id"]
    assert (await client("GET", "runs", run["id"], "diff", reused["id"], expect=200)).json[
        "same"]
    await client("GET", "runs", run["id"], "diff", 10**6, expect=404)
    lineage = (await client("GET", "runs", reused["id"], "lineage", expect=200)).json
    assert [n["id"] for n in lineage["nodes"]] == [reused["id"]]
    await client("GET", "runs", 10**6, "lineage", expect=404)
    await client("POST", "runs", json_body={**again, "reuse": "yes"}, expect=400,
                 valid_request=False)
    await client("DELETE", "runs", reused["id"], expect=204)
    log = await client("GET", "runs", run["id"], "logs", "out", expect=200)
    assert "counted" in log.text
    assert log.headers["Content-Type"].startswith("text/plain")
    tail = await client("GET", "runs", run["id"], "logs", "out", params={"tail": "1"},
                        expect=200)
    assert tail.text.count("\n") == 1
    await client("GET", "runs", run["id"], "logs", "err", expect=200)  # empty log
    await client("GET", "runs", run["id"], "logs", "all", expect=404, valid_request=False)
    await client("GET", "runs", run["id"], "logs", "out", params={"tail": "-1"}, expect=400,
                 valid_request=False)
    files = (await client("GET", "files", params={"run_id": str(run["id"])}, expect=200)).json
    assert files["total"] == 2 and all(f["source"] == "run" for f in files["items"])
    output = outputs["items"][0]
    record = (await client("GET", "files", output["file_id"], expect=200)).json
    content = await client("GET", "files", record["id"], "content", expect=200)
    assert hashlib.sha256(content.body).hexdigest() == output["sha256"]

    # pause, resume, notify, cancel, delete on a slow run
    slow = (await client("POST", "runs", json_body={"pipeline_id": sleepy["id"]},
                         expect=201)).json
    await client("DELETE", "runs", slow["id"], expect=409)
    await wait_for_status(client, "runs", slow["id"],
                          until=lambda b: b["status"] == "RUNNING" and b["progress"]["value"] >= 2)
    paused = (await client("POST", "runs", slow["id"], "pause", expect=200)).json
    assert paused["status"] == "PAUSE"
    await client("POST", "runs", slow["id"], "pause", expect=409)
    resumed = (await client("POST", "runs", slow["id"], "resume", expect=200)).json
    assert resumed["status"] == "RUNNING"
    token = (await pirus.store.get("runs", slow["id"]))["notify_token"]
    no_auth = {"Authorization": ""}
    notified = await client("POST", "runs", slow["id"], "notify", params={"token": token},
                            headers=no_auth, json_body={"progress": {"label": "from notify"}},
                            expect=200)
    assert notified.json["progress"]["label"] == "from notify"
    await client("POST", "runs", slow["id"], "notify", params={"token": token},
                 headers=no_auth, json_body={"progress": {"value": "x"}}, expect=400,
                 valid_request=False)
    await client("POST", "runs", slow["id"], "notify", params={"token": token},
                 headers=no_auth, json_body={"status": "DONE"}, expect=400,
                 valid_request=False)
    await client("POST", "runs", slow["id"], "notify", params={"token": "wrong"},
                 headers=no_auth, json_body={"progress": {"value": 1}}, expect=403)
    in_use = await client("DELETE", "pipelines", sleepy["id"], expect=409)
    assert in_use.json["error"]["code"] == "pipeline_in_use"
    canceled = (await client("POST", "runs", slow["id"], "cancel", expect=200)).json
    assert canceled["status"] == "CANCELED" and canceled["metrics"]["wall_seconds"] > 0
    await client("POST", "runs", slow["id"], "notify", params={"token": token},
                 headers=no_auth, json_body={"progress": {"value": 1}}, expect=403)
    assert (await client("GET", "runs", slow["id"], "outputs", expect=200)).json == {
        "items": [], "total": 0}
    page = (await client("GET", "runs", params={"status": "DONE,CANCELED"}, expect=200)).json
    assert page["total"] == 2

    # a run canceled while it waits (never started): no wall time
    blocked = []
    for _ in range(3):  # max_parallel_runs is 2 in tests
        blocked.append((await client("POST", "runs", json_body={"pipeline_id": sleepy["id"]},
                                     expect=201)).json)
    waiting = (await client("POST", "runs", blocked[2]["id"], "cancel", expect=200)).json
    assert waiting["metrics"]["wall_seconds"] is None
    for item in blocked[:2]:
        await client("POST", "runs", item["id"], "cancel", expect=200)

    # deletions
    await client("DELETE", "files", output["file_id"], expect=204)
    await client("DELETE", "runs", run["id"], expect=204)
    await client("GET", "runs", run["id"], expect=404)
    await client("DELETE", "pipelines", sleepy["id"], expect=204)
    await client("DELETE", "pipelines", count["id"], expect=204)  # its LXD image alias goes

    # every canceled run's container is gone (deletes racing LXD operations are retried)
    names = [r["lxd_container"] for r in await pirus.store.select("runs") if r["lxd_container"]]
    for _ in range(100):
        left = [n for n in names if await asyncio.to_thread(pirus.backend.state, n)]
        if not left:
            break
        await asyncio.sleep(0.1)
    assert not left

    events = await drain_events(ws, event_validator, timeout=1.0)
    ws.close()
    kinds = {m["type"] for m in events}
    assert kinds >= {"pipeline.created", "pipeline.updated", "pipeline.deleted", "run.created",
                     "run.updated", "run.deleted", "file.created", "file.deleted"}, kinds
