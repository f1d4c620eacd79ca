"""Fast layer: reuse of identical runs (runs/reuse.py) through the REST API of an in-process
server with the fake backend: a hit makes no container, a miss names exactly what differs."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest
from conftest import FAST_CONFIG, wait_run

from pirus_jupyter.backend.fake import Outcome

pytestmark = pytest.mark.fast

FORM = {"type": "object", "properties": {
    "threshold": {"type": "integer", "default": 5}, "mode": {"type": "string", "default": "fast"}}}


def build(folder: Path, version: str, deterministic: bool = False) -> Path:
    from pirus_jupyter.packaging import build_package_from_parts

    base = folder / "rootfs.tar"
    if not base.exists():
        with tarfile.open(base, "w") as tar:
            entry = tarfile.TarInfo("bin/sh")
            entry.size, entry.mode = 1, 0o755
            tar.addfile(entry, io.BytesIO(b"\n"))
    manifest = {"name": "counter", "run": "/pipeline/run.sh", "version": version}
    if deterministic:
        manifest["deterministic"] = True
    files = {"/pipeline/run.sh": b"#!/bin/sh\n", "/pipeline/form.json": json.dumps(FORM).encode()}
    return build_package_from_parts(manifest, files, folder / f"counter-{version}.tar.gz",
                                    base=base)


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reuse-pkg")
    return {"1.0": build(folder, "1.0"), "2.0": build(folder, "2.0"),
            "det": build(folder, "det", deterministic=True)}


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


OUTPUTS = {"counts.tsv": b"file\treads\nreads.fastq\t12\n", "sub/log.txt": b"done\n"}


async def run_to_done(api, fake, pipeline: dict, **body) -> dict:
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], **body})
    assert code == 201, run
    await wait_run(api, run["id"], "RUNNING")
    fake.finish(run["id"], Outcome(out="counted\n", outputs=OUTPUTS))
    done = await wait_run(api, run["id"], "DONE", "ERROR")
    assert done["status"] == "DONE", done
    return done


async def test_identical_run_is_reused_without_a_container(api, fake, install, packages,
                                                           jp_root_dir):
    pipeline = await install(packages["1.0"])
    (Path(jp_root_dir) / "reads.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    first = await run_to_done(api, fake, pipeline, inputs=["reads.fastq"], reuse=True)
    assert first["reused_from"] is None
    assert first["reuse_miss"]["against"] is None
    assert "no earlier DONE run" in first["reuse_miss"]["message"]
    containers = len(fake.called("create_container"))

    started = time.perf_counter()
    code, again = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "inputs": ["reads.fastq"], "reuse": True,
        "config": {"threshold": 5}})  # the default, given: the same config
    latency = time.perf_counter() - started
    assert code == 201, again
    print(f"reuse hit answered in {latency * 1000:.1f} ms")
    assert again["status"] == "DONE" and again["reused_from"] == first["id"]
    assert again["reuse_miss"] is None and again["exit_code"] == 0
    assert len(fake.called("create_container")) == containers  # no container at all
    assert [(o["name"], o["sha256"]) for o in again["outputs"]] == \
        [(o["name"], o["sha256"]) for o in first["outputs"]]
    assert {o["file_id"] for o in again["outputs"]}.isdisjoint(
        {o["file_id"] for o in first["outputs"]})
    for output in again["outputs"]:
        data = (Path(jp_root_dir) / output["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
    code, text = await api("GET", "runs", again["id"], "logs", "out")
    assert (code, text) == (200, "counted\n")
    # Without reuse, the same run runs again.
    code, fresh = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                  "inputs": ["reads.fastq"]})
    assert fresh["status"] == "WAITING" and fresh["reuse_miss"] is None
    await wait_run(api, fresh["id"], "RUNNING")
    assert len(fake.called("create_container")) == containers + 1


async def test_each_change_is_a_miss_naming_exactly_it(api, fake, install, packages,
                                                       jp_root_dir):
    v1 = await install(packages["1.0"])
    reads = Path(jp_root_dir) / "reads.fastq"
    reads.write_bytes(b"@r1\nACGT\n+\nIIII\n")
    first = await run_to_done(api, fake, v1, inputs=["reads.fastq"], reuse=True)

    async def miss(pipeline: dict, **body) -> dict:
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                    "inputs": ["reads.fastq"], "reuse": True,
                                                    **body})
        assert code == 201, run
        assert run["status"] == "WAITING" and run["reused_from"] is None, run
        await wait_run(api, run["id"], "RUNNING")
        code, canceled = await api("POST", "runs", run["id"], "cancel")
        assert code == 200, canceled
        return run["reuse_miss"]

    config = await miss(v1, config={"threshold": 6})
    assert config == {"against": first["id"], "image": False, "config": ["threshold"],
                      "inputs": [], "databases": [], "outputs": [],
                      "message": f"differs from run {first['id']} in config key 'threshold'"}
    reads.write_bytes(b"@r1\nACGA\n+\nIIII\n")  # one byte
    changed = await miss(v1)
    assert (changed["image"], changed["config"], changed["inputs"]) == \
        (False, [], ["reads.fastq"]), changed
    reads.write_bytes(b"@r1\nACGT\n+\nIIII\n")  # back as it was
    v2 = await install(packages["2.0"])
    image = await miss(v2)
    assert (image["image"], image["config"], image["inputs"], image["databases"]) == \
        (True, [], [], []), image
    assert image["message"] == (f"differs from run {first['id']} in the image (another "
                                "pipeline version or build)")


async def test_changed_outputs_are_not_reused(api, fake, install, packages, jp_root_dir):
    pipeline = await install(packages["1.0"])
    first = await run_to_done(api, fake, pipeline, reuse=True)
    counts = next(o for o in first["outputs"] if o["name"] == "counts.tsv")
    path = Path(jp_root_dir) / counts["path"]
    path.chmod(0o644)
    path.write_bytes(b"file\treads\nreads.fastq\t13\n")  # same size, other bytes
    later = datetime.fromisoformat(first["end"]).timestamp() + 1
    os.utime(path, (later, later))  # as a write a second after the run leaves it
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "reuse": True})
    assert code == 201 and run["status"] == "WAITING", run
    assert run["reuse_miss"]["outputs"] == ["counts.tsv"], run["reuse_miss"]
    assert "outputs changed or are gone" in run["reuse_miss"]["message"]
    await wait_run(api, run["id"], "RUNNING")


async def test_an_older_identical_run_is_reused_when_the_newest_changed(api, fake, install,
                                                                      packages, jp_root_dir):
    pipeline = await install(packages["1.0"])
    older = await run_to_done(api, fake, pipeline)
    newer = await run_to_done(api, fake, pipeline)
    (Path(jp_root_dir) / newer["outputs"][1]["path"]).unlink()  # sub/log.txt gone
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "reuse": True})
    assert code == 201 and run["reused_from"] == older["id"], run
    assert not list(Path(jp_root_dir, "pirus-runs").glob(".reuse-*"))  # no staging left


async def test_a_changed_reference_database_is_a_miss_naming_it(api, fake, install, packages,
                                                                pirus):
    pipeline = await install(packages["1.0"])
    (pirus.runs.databases_dir / "hg38").mkdir()
    (pirus.runs.databases_dir / "hg38" / "genome.fa").write_bytes(b">chr1\nACGT\n")
    first = await run_to_done(api, fake, pipeline, reuse=True)
    (pirus.runs.databases_dir / "hg38" / "genome.fa").write_bytes(b">chr1\nACGTA\n")
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "reuse": True})
    assert code == 201 and run["status"] == "WAITING", run
    assert run["reuse_miss"]["databases"] == ["hg38"]
    assert run["reuse_miss"]["message"] == \
        f"differs from run {first['id']} in reference database 'hg38'"
    await wait_run(api, run["id"], "RUNNING")


async def test_deterministic_pipeline_reuses_by_default(api, fake, install, packages):
    pipeline = await install(packages["det"])
    first = await run_to_done(api, fake, pipeline)
    code, again = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201 and again["reused_from"] == first["id"], again
    code, fresh = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                  "reuse": False})
    assert code == 201 and fresh["status"] == "WAITING", fresh
    await wait_run(api, fresh["id"], "RUNNING")


@pytest.mark.parametrize("pirus_config", [{**FAST_CONFIG, "reuse_default": True}])
async def test_reuse_default_setting(api, fake, install, packages):
    pipeline = await install(packages["1.0"])
    first = await run_to_done(api, fake, pipeline)
    code, again = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
    assert code == 201 and again["reused_from"] == first["id"], again


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
async def test_reuse_must_be_a_bool(api, install, packages, value):
    pipeline = await install(packages["1.0"])
    body = {"pipeline_id": pipeline["id"], "reuse": value}
    code, answer = await api("POST", "runs", body=body)
    if value is None:  # null: the default
        assert code == 201, answer
        await wait_run(api, answer["id"], "RUNNING")
        return
    assert code == 400, answer
    assert answer["error"]["code"] == "invalid_request" and "reuse" in \
        answer["error"]["message"]
    code, listed = await api("GET", "runs")
    assert listed["total"] == 0  # nothing half written


# -- identical uploads -------------------------------------------------------------------------
async def upload(jp_fetch, data: bytes, **meta: str) -> dict:
    from tus_helpers import OCTET, TUS, metadata

    headers = {**TUS, **OCTET, "Upload-Length": str(len(data)),
               "Upload-Metadata": metadata(filename="reads.fastq", **meta)}
    response = await jp_fetch("pirus", "api", "v1", "uploads", method="POST", headers=headers,
                              body=data)
    assert response.code == 201, response.body
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    response = await jp_fetch("pirus", "api", "v1", "uploads", upload_id)
    record = json.loads(response.body)
    assert record["status"] == "complete", record
    return record


async def test_identical_upload_is_the_same_file_unless_a_copy_is_asked(jp_fetch, jp_root_dir,
                                                                         pirus):
    data = b"@r1\nACGT\n+\nIIII\n"
    first = await upload(jp_fetch, data)
    assert first["file"]["path"] == "pirus-uploads/reads.fastq" and not first["deduplicated"]
    again = await upload(jp_fetch, data)
    assert again["deduplicated"] and again["file"] == first["file"]
    assert sorted(p.name for p in (Path(jp_root_dir) / "pirus-uploads").iterdir()) == \
        ["reads.fastq"]
    assert not list(pirus.uploads.parts_dir.iterdir())  # the second copy's bytes are gone
    copy = await upload(jp_fetch, data, copy="yes")
    assert not copy["deduplicated"] and copy["file"]["path"] == "pirus-uploads/reads-1.fastq"
    assert (await upload(jp_fetch, data, copy="false"))["deduplicated"]
    # An existing file edited in place since its record was made is no longer a match.
    other = b"@r2\nTTTT\n+\nIIII\n"
    made = await upload(jp_fetch, other)
    assert not made["deduplicated"] and made["file"]["path"] == "pirus-uploads/reads-2.fastq"
    path = Path(jp_root_dir) / made["file"]["path"]
    path.write_bytes(b"@r2\nTTTA\n+\nIIII\n")
    later = datetime.fromisoformat(made["file"]["created"]).timestamp() + 1
    os.utime(path, (later, later))  # as a write a second later leaves it
    again = await upload(jp_fetch, other)
    assert not again["deduplicated"] and again["file"]["path"] == "pirus-uploads/reads-3.fastq"


# -- diff and lineage --------------------------------------------------------------------------
@functools.cache
def _registry():
    """openapi.yaml as a referencing registry (as test_openapi does it, without importing
    that module's heavy dependencies into the fast layer)."""
    import yaml
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    import pirus_jupyter

    spec = yaml.safe_load(Path(pirus_jupyter.__file__).with_name("openapi.yaml").read_text())
    return Registry().with_resource("urn:pirus-openapi", DRAFT202012.create_resource(spec))


def check(name: str, body: dict) -> None:
    """``body`` matches openapi.yaml's schema ``name``."""
    from openapi_schema_validator import OAS31Validator, oas31_format_checker

    validator = OAS31Validator({"$ref": f"urn:pirus-openapi#/components/schemas/{name}"},
                               registry=_registry(), format_checker=oas31_format_checker)
    errors = list(validator.iter_errors(body))
    assert not errors, f"{name}: {errors[0].message}"


async def finish_with(api, fake, pipeline: dict, outputs: dict[str, bytes], **body) -> dict:
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], **body})
    assert code == 201, run
    await wait_run(api, run["id"], "RUNNING")
    fake.finish(run["id"], Outcome(outputs=outputs))
    return await wait_run(api, run["id"], "DONE")


async def test_diff_names_exactly_the_changed_config_key(api, fake, install, packages,
                                                         jp_root_dir):
    pipeline = await install(packages["1.0"])
    (Path(jp_root_dir) / "reads.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    a = await finish_with(api, fake, pipeline, {"n.txt": b"1\n"}, inputs=["reads.fastq"])
    b = await finish_with(api, fake, pipeline, {"n.txt": b"2\n"}, inputs=["reads.fastq"],
                          config={"threshold": 6})
    code, diff = await api("GET", "runs", a["id"], "diff", b["id"])
    assert code == 200, diff
    check("RunDiff", diff)
    assert diff["config"] == [{"key": "threshold", "a": 5, "b": 6}]
    assert diff["image"] is None and diff["pipeline"] is None and diff["inputs"] == []
    assert diff["outputs"] == [{"name": "n.txt", "a": hashlib.sha256(b"1\n").hexdigest(),
                                "b": hashlib.sha256(b"2\n").hexdigest()}]
    assert diff["status"] is None and not diff["same"]
    code, same = await api("GET", "runs", a["id"], "diff", a["id"])
    assert code == 200 and same["same"] and same["config"] == [] and same["metrics"] == []
    for path in (("runs", 999, "diff", a["id"]), ("runs", a["id"], "diff", 999),
                 ("runs", 999, "lineage")):
        code, error = await api("GET", *path)
        assert code == 404 and error["error"]["code"] == "not_found", (path, error)


async def test_a_chain_of_three_runs_is_a_three_node_lineage(api, fake, install, packages,
                                                             jp_root_dir):
    pipeline = await install(packages["1.0"])
    (Path(jp_root_dir) / "reads.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    a = await finish_with(api, fake, pipeline, {"a.txt": b"from a\n"}, inputs=["reads.fastq"])
    # b reads a's output where it lies; c reads a copy of b's output (linked by sha256).
    b = await finish_with(api, fake, pipeline, {"b.txt": b"from b\n"},
                          inputs=[a["outputs"][0]["path"]])
    (Path(jp_root_dir) / "b-copy.txt").write_bytes(b"from b\n")
    c = await finish_with(api, fake, pipeline, {"c.txt": b"from c\n"}, inputs=["b-copy.txt"])
    unrelated = await finish_with(api, fake, pipeline, {"u.txt": b"u\n"})
    for run in (a, b, c):
        code, lineage = await api("GET", "runs", run["id"], "lineage")
        assert code == 200, lineage
        check("RunLineage", lineage)
        assert [n["id"] for n in lineage["nodes"]] == [a["id"], b["id"], c["id"]]
        assert lineage["edges"] == [
            {"from": a["id"], "to": b["id"], "files": ["a.txt"]},
            {"from": b["id"], "to": c["id"], "files": ["b-copy.txt"]}]
        assert lineage["run"] == run["id"] and not lineage["truncated"]
    code, alone = await api("GET", "runs", unrelated["id"], "lineage")
    assert [n["id"] for n in alone["nodes"]] == [unrelated["id"]] and alone["edges"] == []
    # The panel's picture: the drawing the notebook shows, made by the server.
    response = await api("GET", "runs", b["id"], "lineage", params={"format": "svg"}, raw=True)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    picture = ET.fromstring(response.body)
    svg = "{http://www.w3.org/2000/svg}"
    assert len(picture.findall(f"{svg}rect")) == 3 and len(picture.findall(f"{svg}path")) == 2
    texts = " ".join(t.text or "" for t in picture.iter(f"{svg}text"))
    assert f"#{a['id']}" in texts and f"#{c['id']}" in texts and "b-copy.txt" in texts
    code, error = await api("GET", "runs", b["id"], "lineage", params={"format": "png"})
    assert code == 400 and "format" in error["error"]["message"], error


# -- the notebook side ---------------------------------------------------------------------------
async def test_kernel_reuse_diff_lineage_and_record(api, fake, install, packages, jp_root_dir,
                                                    jp_fetch, jp_http_port, jp_base_url,
                                                    jp_serverapp):
    import asyncio
    import xml.etree.ElementTree as ET

    import pirus_jupyter as pirus
    from pirus_jupyter.kernel.client import Client
    from pirus_jupyter.widgets.record import RunRecord

    pipeline = await install(packages["1.0"])
    (Path(jp_root_dir) / "reads.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n")
    first = await run_to_done(api, fake, pipeline, inputs=["reads.fastq"])
    client = Client(f"http://127.0.0.1:{jp_http_port}{jp_base_url}",
                    jp_serverapp.identity_provider.token, root_dir=jp_root_dir)

    def in_kernel() -> tuple:
        counter = client.pipeline("counter")
        reused = counter.run(inputs=["reads.fastq"], reuse=True)
        missed = counter.run(inputs=["reads.fastq"], config={"mode": "slow"}, reuse=True)
        missed.cancel()
        return (reused, missed, pirus.diff(reused, missed), reused.lineage(),
                RunRecord.from_run(reused).to_text(), RunRecord.from_run(missed).to_html())

    reused, missed, diff, lineage, reused_text, missed_html = await asyncio.to_thread(in_kernel)
    assert reused.status == "DONE" and reused.reused_from == first["id"]
    assert missed.reuse_miss["config"] == ["mode"]
    assert diff["config"] == [{"key": "mode", "a": "fast", "b": "slow"}]
    assert "mode" in diff._repr_html_() and "RunDiff" in repr(diff)
    assert f"reused from run {first['id']}" in reused_text
    assert "not reused: differs from run" in missed_html and "config key" in missed_html
    assert [n["id"] for n in lineage.nodes] == [reused.id]
    svg = ET.fromstring(lineage._repr_svg_())  # well-formed, self-contained
    assert svg.tag.endswith("svg") and f"#{reused.id}" in lineage._repr_svg_()
    assert "<svg" in lineage._repr_html_()


def test_lineage_svg_draws_a_chain_left_to_right():
    import xml.etree.ElementTree as ET

    from pirus_jupyter.kernel.lineage import Lineage

    node = {"name": "n <&>", "pipeline_name": "p", "pipeline_version": "1", "status": "DONE",
            "created": "2026-01-01T00:00:00+00:00", "reused_from": None}
    lineage = Lineage({"run": 2, "truncated": False,
                       "nodes": [dict(node, id=1), dict(node, id=2), dict(node, id=3)],
                       "edges": [{"from": 1, "to": 2, "files": ["a.txt"]},
                                 {"from": 2, "to": 3, "files": ["b.txt"]}]})
    assert lineage.ancestors() == [1] and lineage.descendants() == [3]
    svg = ET.fromstring(lineage._repr_svg_())
    ns = "{http://www.w3.org/2000/svg}"
    xs = [float(r.get("x")) for r in svg.iter(f"{ns}rect")]
    assert len(xs) == 3 and xs == sorted(xs) and len(set(xs)) == 3  # three columns in order
    assert len(list(svg.iter(f"{ns}path"))) == 3  # two edges and the arrow head
    assert "n &lt;&amp;&gt;" in lineage._repr_svg_()


async def test_an_uploaded_input_edited_in_place_is_not_reused(api, fake, install, packages,
                                                               jp_fetch, jp_root_dir):
    """A file record's sha256 is not trusted for a file written since (same size or not)."""
    pipeline = await install(packages["1.0"])
    record = await upload(jp_fetch, b"@r1\nACGT\n+\nIIII\n")
    first = await run_to_done(api, fake, pipeline, inputs=[record["file"]["path"]], reuse=True)
    path = Path(jp_root_dir) / record["file"]["path"]
    path.write_bytes(b"@r1\nACGA\n+\nIIII\n")  # one byte, same size
    later = datetime.fromisoformat(record["file"]["created"]).timestamp() + 1
    os.utime(path, (later, later))  # as a write a second later leaves it
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "reuse": True,
                                                "inputs": [record["file"]["path"]]})
    assert code == 201 and run["status"] == "WAITING", run
    assert run["reuse_miss"]["against"] == first["id"]
    assert run["reuse_miss"]["inputs"] == ["reads.fastq"], run["reuse_miss"]
    done = await wait_run(api, run["id"], "RUNNING")
    assert done["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
