"""Packages in the original REGOVAR Pirus layouts install and run unchanged.

The packages are made here the way REGOVAR authors made them: a rootfs (the project's busybox
base plus the pipeline's files) and a ``metadata.yaml`` written by hand, as JSON (which YAML
reads), with the LXD image fields and the ``pirus`` block of the time:

* **V1** (Pirus ``examples/pipelines/PirusBasic``): ``name``, ``description``, ``version``,
  ``pirus_api``, ``license``, ``developers``, ``run``, ``inputs``, ``outputs``, ``databases``,
  ``logs``, ``form``, ``icon``;
* **V2** (REGOVAR's ``LxdPirus_TestUnitaire``): ``job`` instead of ``run``, no ``form``/``icon``
  fields but ``documents``: the form, the icon and other files shown to users.

Forms are draft-03 JSON Schemas with per-property ``"required": true|false`` and the Pirus
placeholders; runs read ``<inputs>/config.json``, a reference database under the manifest's
``databases`` path (read-only) and report progress by POSTing to ``$PIRUS_NOTIFY_URL`` with
busybox ``wget``.
"""

from __future__ import annotations

import io
import json
import platform
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for
from jsonschema import Draft7Validator
from pkgbuild import fastq

from pirus_jupyter.packaging import build_package_from_parts

pytestmark = [pytest.mark.lxd, requires_lxd]

ROOT = Path(__file__).resolve().parent.parent
ICON = (ROOT / "examples" / "pipelines" / "fastq-count" / "icon.png").read_bytes()
HG19 = ">chr1\nACGTACGTAC\n>chr2\nGGCCGGCC\n>chrM\nAT\n"
DRAFT7 = "http://json-schema.org/draft-07/schema#"

# A draft-03 form in the style of the original examples, with every placeholder.
FORM_DRAFT03 = {
    "$schema": "http://json-schema.org/draft-03/schema#",
    "type": "object",
    "properties": {
        "file1": {"title": "File 1", "description": "Which input is the reads file",
                  "type": "string", "enum": "__PIRUS_INPUT_FILES__", "required": True},
        "file2": {"title": "File 2", "type": "string", "enum": "__PIRUS_INPUT_FILES__",
                  "required": False},
        "ref": {"title": "Reference genome", "type": "string", "enum": "__PIRUS_DB_REF__",
                "required": True},
        "refs": {"title": "Other references", "type": "array",
                 "items": {"type": "string", "enum": "__PIRUS_DB_REFS__"}, "required": False},
        "annotations": {"title": "Annotation database", "type": "string",
                        "enum": "__PIRUS_DB_ALL__"},
        "duration": {"title": "Duration", "type": "integer", "required": True, "default": 1},
        "confirm": {"title": "Sure?", "type": "boolean", "default": True},
    },
}

# The original examples hard-code their folders and read their options from config.json in
# the inputs folder. busybox has no jq and no curl: sed and wget do.
V1_SCRIPT = r"""#!/bin/sh
IN=/pipeline/inputs/
OUT=/pipeline/outputs/
DB=/pipeline/db/
notify() {  # POST a JSON report to Pirus; keep its answer in $2
  wget -q -O "$2" --header 'Content-Type: application/json' --post-data "$1" "$PIRUS_NOTIFY_URL"
}
option() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "${IN}config.json"; }
cp "${IN}config.json" "${OUT}config-seen.json" || exit 10
notify '{"progress": {"value": 1, "min": 0, "max": 3, "label": "reading the reference"}}' \
  /tmp/notify-1.json || exit 11
ref=$(option ref)
grep -c '^>' "${DB}${ref}" > "${OUT}contigs.txt" || exit 12
ls "${DB}" > "${OUT}databases.txt"
if touch "${DB}written" 2>/dev/null || echo x > "${DB}${ref}" 2>/dev/null; then
  echo "the databases folder is writable" >&2
  exit 13
fi
awk 'NR % 4 == 2 {n++} END {print n + 0}' "${IN}$(option file1)" > "${OUT}reads.txt" || exit 14
notify '{"progress": {"value": 2, "min": 0, "max": 3, "label": "counted"}}' \
  "${OUT}notify-progress.json" || exit 15
notify '{"status": "FINISHING"}' "${OUT}notify-status.json" || exit 16
echo "done"
"""

V2_SCRIPT = r"""#!/bin/sh
IN=/pipeline/inputs/
OUT=/pipeline/outputs/
wget -q -O /dev/null --header 'Content-Type: application/json' \
  --post-data '{"progress": {"value": 1, "max": 1, "label": "job done"}}' "$PIRUS_NOTIFY_URL" \
  || exit 21
sed -n 's/.*"greeting": *"\([^"]*\)".*/\1/p' "${IN}config.json" > "${OUT}greeting.txt"
ls /pipeline/db > "${OUT}databases.txt"
"""

V2_FORM = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
           "properties": {"greeting": {"type": "string", "required": True,
                                       "default": "hello"}}}
V2_DOCUMENTS = {
    "/pipeline/form.json": json.dumps(V2_FORM, indent=4).encode(),
    "/pipeline/icon.png": ICON,
    "/pipeline/doc/help.html": b"<html><body><h1>Help</h1><p>How to use it.</p></body></html>\n",
    "/pipeline/doc/changelog": b"2.0.0: first release for Pirus V2\n",
    "/pipeline/doc/license": b"GNU AFFERO GENERAL PUBLIC LICENSE, Version 3\n",
}


@pytest.fixture
def databases_dir(tmp_path: Path) -> Path:
    """Reference databases: a genome file and a genome folder."""
    folder = tmp_path / "databases"
    (folder / "hg38").mkdir(parents=True)
    (folder / "hg19.fa").write_text(HG19)
    (folder / "hg38" / "genome.fa").write_text(">chr1\nAAAA\n")
    (folder / ".hidden").write_text("not listed")
    return folder


@pytest.fixture
def pirus_config(databases_dir: Path) -> dict[str, Any]:
    return {"databases_dir": str(databases_dir)}


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = 1493869740, mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def original_package(path: Path, pirus: dict[str, Any], files: dict[str, bytes],
                     folders: tuple[str, ...] = ("/pipeline/db",)) -> Path:
    """A package in an original layout, assembled by hand like the REGOVAR authors did: a
    busybox rootfs (from the project's builder, with no pipeline file in it), the pipeline's
    ``files`` and ``folders`` added as raw tar members (scripts 0755), and a hand-written
    ``metadata.yaml`` in JSON with the LXD image fields and ``pirus`` exactly as given."""
    base = build_package_from_parts({"name": "base", "run": "/bin/true"}, {},
                                    path.with_name(path.name + ".base.tar"))
    metadata = {
        "architecture": {"amd64": "x86_64", "arm64": "aarch64"}.get(
            platform.machine().lower(), platform.machine()),
        "creation_date": 1493869740,
        "properties": {"architecture": platform.machine(), "description": pirus["name"],
                       "os": "busybox", "release": "1"},
        "pirus": pirus,
    }
    with tarfile.open(base) as source, tarfile.open(path, "w:gz") as out:
        _add(out, "metadata.yaml", json.dumps(metadata, indent=4).encode(), 0o644)
        names = set()
        for member in source:
            if member.name != "metadata.yaml":
                out.addfile(member, source.extractfile(member) if member.isfile() else None)
                names.add(member.name)
        wanted = [*folders, *files]
        for container_path in sorted(wanted):
            parts = container_path.strip("/").split("/")
            for depth in range(1, len(parts) + (container_path in folders)):
                folder = "rootfs/" + "/".join(parts[:depth])
                if folder not in names:
                    _add(out, folder)
                    names.add(folder)
            if container_path in files:
                executable = container_path.endswith(".sh")
                _add(out, "rootfs" + container_path, files[container_path],
                     0o755 if executable else 0o644)
    base.unlink()
    return path


def v1_package(tmp_path: Path) -> Path:
    return original_package(tmp_path / "PirusSimple.tar.gz", {
        "name": "Pirus Simple",
        "description": "Test pipeline for pirus",
        "version": "1.0.0",
        "pirus_api": "1.0.0",
        "license": "AGPL",
        "developers": ["Pirus tests"],
        "run": "/pipeline/run/run.sh",
        "inputs": "/pipeline/inputs",
        "outputs": "/pipeline/outputs",
        "databases": "/pipeline/db",
        "logs": "/pipeline/logs",
        "form": "/pipeline/form.json",
        "icon": "/pipeline/logo.png",
    }, {
        "/pipeline/run/run.sh": V1_SCRIPT.encode(),
        "/pipeline/form.json": json.dumps(FORM_DRAFT03, indent=4).encode(),
        "/pipeline/logo.png": ICON,
    })


def v2_package(tmp_path: Path) -> Path:
    return original_package(tmp_path / "LxdPirusV2.tar.gz", {
        "name": "Lxd Pirus V2",
        "description": "Test pipeline",
        "version": "2.0.0",
        "pirus_api": "0.2.0",
        "license": "AGPLv3",
        "developers": ["Pirus tests"],
        "job": "/pipeline/job/run.sh",
        "inputs": "/pipeline/inputs",
        "outputs": "/pipeline/outputs",
        "databases": "/pipeline/db",
        "logs": "/pipeline/logs",
        # as written in the original: relative paths were accepted too
        "documents": ["/pipeline/form.json", "pipeline/icon.png", "/pipeline/doc/help.html",
                      "/pipeline/doc/changelog", "/pipeline/doc/license"],
    }, {"/pipeline/job/run.sh": V2_SCRIPT.encode(), **V2_DOCUMENTS})


async def run_to_end(api, run_id: int, timeout: float = 90) -> dict:
    return await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                          timeout=timeout)


def outputs_of(run: dict, root: Path) -> dict[str, str]:
    return {o["name"]: (root / o["path"]).read_text() for o in run["outputs"]}


# -- reference databases -------------------------------------------------------------------
async def test_databases_are_listed(api, databases_dir):
    code, body = await api("GET", "databases")
    assert code == 200
    assert body["items"] == [
        {"name": "hg19.fa", "size": len(HG19), "path": "hg19.fa"},
        {"name": "hg38", "size": len(">chr1\nAAAA\n"), "path": "hg38"},
    ]


# -- V1 -------------------------------------------------------------------------------------
async def test_v1_package_installs_with_its_manifest_form_and_icon(api, install, tmp_path):
    pipeline = await install(v1_package(tmp_path))
    assert pipeline["name"] == "Pirus Simple"
    assert pipeline["version"] == "1.0.0" and pipeline["pirus_api"] == "1.0.0"
    assert pipeline["license"] == "AGPL" and pipeline["developers"] == ["Pirus tests"]
    assert pipeline["description"] == "Test pipeline for pirus"
    response = await api("GET", "pipelines", pipeline["id"], "icon", raw=True)
    assert response.code == 200 and response.body == ICON
    assert response.headers["Content-Type"].startswith("image/png")
    code, form = await api("GET", "pipelines", pipeline["id"], "form")
    assert code == 200 and form["$schema"] == DRAFT7
    assert set(form["properties"]) == set(FORM_DRAFT03["properties"])


async def test_draft03_form_is_normalised_with_placeholders_filled(api, install, tmp_path):
    pipeline = await install(v1_package(tmp_path))
    code, form = await api("GET", "pipelines", pipeline["id"], "form",
                           params=[("inputs", "reads.fastq"), ("inputs", "data/calls.vcf")])
    assert code == 200, form
    Draft7Validator.check_schema(form)
    assert form["$schema"] == DRAFT7
    # draft-03 per-property "required": true|false -> the draft-07 list on the object
    assert form["required"] == ["file1", "ref", "duration"]
    assert all("required" not in prop for prop in form["properties"].values())
    props = form["properties"]
    assert props["file1"]["enum"] == props["file2"]["enum"] == ["reads.fastq", "calls.vcf"]
    databases = ["hg19.fa", "hg38"]
    assert props["ref"]["enum"] == databases
    assert props["annotations"]["enum"] == databases
    assert props["refs"]["items"]["enum"] == databases and props["refs"]["uniqueItems"] is True
    assert props["duration"] == {"title": "Duration", "type": "integer", "default": 1}
    # the schema accepts what the original accepted, and refuses the rest
    validator = Draft7Validator(form)
    assert not list(validator.iter_errors({"file1": "reads.fastq", "ref": "hg38",
                                           "refs": ["hg19.fa"], "duration": 3}))
    assert {e.validator for e in validator.iter_errors(
        {"file1": "other.fastq", "ref": "hg18", "refs": ["hg38", "hg38"]})} == {
        "enum", "uniqueItems", "required"}
    # without inputs the file choices are left free rather than empty
    code, form = await api("GET", "pipelines", pipeline["id"], "form")
    assert "enum" not in form["properties"]["file1"]
    assert form["properties"]["ref"]["enum"] == databases


async def test_v1_run_reads_config_and_databases_and_notifies(api, install, tmp_path,
                                                             jp_root_dir, databases_dir):
    pipeline = await install(v1_package(tmp_path))
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    (root / "data" / "reads.fastq").write_bytes(fastq(7))
    # the server refuses a config the form refuses, naming the fields
    code, body = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "inputs": ["data/reads.fastq"],
        "config": {"file1": "nope.fastq", "ref": "hg18"}})
    assert code == 400 and body["error"]["code"] == "invalid_config"
    assert {d["field"] for d in body["error"]["details"]} == {"file1", "ref"}
    code, run = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "name": "original v1", "inputs": ["data/reads.fastq"],
        "config": {"file1": "reads.fastq", "ref": "hg19.fa"}})
    assert code == 201, run
    assert run["config"] == {"file1": "reads.fastq", "ref": "hg19.fa", "duration": 1,
                             "confirm": True}
    run = await run_to_end(api, run["id"])
    assert run["status"] == "DONE", run
    outputs = outputs_of(run, root)
    # config.json was where the original wrote it: <inputs>/config.json
    assert json.loads(outputs["config-seen.json"]) == run["config"]
    # the reference database was readable at the manifest's path, and read-only
    assert outputs["contigs.txt"] == "3\n"
    assert outputs["databases.txt"] == "hg19.fa\nhg38\n"
    assert (databases_dir / "hg19.fa").read_text() == HG19
    assert not (databases_dir / "written").exists()
    assert outputs["reads.txt"] == "7\n"
    # progress and status posted to $PIRUS_NOTIFY_URL were taken
    answer = json.loads(outputs["notify-progress.json"])
    assert answer["progress"] == {"value": 2, "min": 0, "max": 3, "label": "counted"}
    assert json.loads(outputs["notify-status.json"])["status"] == "FINISHING"
    assert run["progress"] == {"value": 3, "min": 0, "max": 3, "label": "counted"}
    assert "FINISHING" in run["metrics"]["phases"]
    code, log = await api("GET", "runs", run["id"], "logs", "out")
    assert log == "done\n"


# -- V2 -------------------------------------------------------------------------------------
async def test_v2_package_documents_are_listed_and_served(api, install, tmp_path):
    pipeline = await install(v2_package(tmp_path))
    assert pipeline["name"] == "Lxd Pirus V2" and pipeline["version"] == "2.0.0"
    names = {Path(p).name: content for p, content in V2_DOCUMENTS.items()}
    assert sorted(pipeline["documents"]) == sorted(names)
    for name, content in names.items():
        response = await api("GET", "pipelines", pipeline["id"], "documents", name, raw=True)
        assert response.code == 200, name
        assert response.body == content, name
    response = await api("GET", "pipelines", pipeline["id"], "documents", "help.html",
                         raw=True)
    assert response.headers["Content-Type"].startswith("text/html")
    code, body = await api("GET", "pipelines", pipeline["id"], "documents", "missing.txt")
    assert code == 404


async def test_v2_form_and_icon_come_from_the_documents(api, install, tmp_path):
    """The original V2 installer took the form and the icon from the documents named
    form.json and icon.png (there are no form/icon fields in a V2 manifest)."""
    pipeline = await install(v2_package(tmp_path))
    code, form = await api("GET", "pipelines", pipeline["id"], "form")
    assert code == 200
    assert form["properties"] == {"greeting": {"type": "string", "default": "hello"}}, form
    assert form["required"] == ["greeting"]
    response = await api("GET", "pipelines", pipeline["id"], "icon", raw=True)
    assert response.code == 200 and response.body == ICON


async def test_v2_job_runs(api, install, tmp_path, jp_root_dir):
    pipeline = await install(v2_package(tmp_path))
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "config": {"greeting": "bonjour"}})
    assert code == 201, run
    run = await run_to_end(api, run["id"])
    assert run["status"] == "DONE", run
    outputs = outputs_of(run, Path(jp_root_dir))
    assert outputs == {"greeting.txt": "bonjour\n", "databases.txt": "hg19.fa\nhg38\n"}
    assert run["progress"]["label"] == "job done"
