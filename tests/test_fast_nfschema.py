"""Fast layer: nf-core parameter schemas as forms — the normaliser (pirus_jupyter.nfschema), the
server's validation (errorMessage, exists) and a pipeline whose form.json is nf-core's template
schema installed and run on the fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST_CONFIG, wait_run
from jsonschema import Draft7Validator
from nfcore_schemas import INPUT_ERROR, draft07, plugin_test_schema, template_schema

from pirus_jupyter.backend.fake import Outcome
from pirus_jupyter.errors import InvalidRequest
from pirus_jupyter.forms import field_errors, normalize_form, validate_config
from pirus_jupyter.nfschema import GROUPS, HELP_HTML, path_errors

pytestmark = pytest.mark.fast


@pytest.fixture
def pirus_config():
    return dict(FAST_CONFIG)


def _refs(node) -> list[str]:
    text = json.dumps(node)
    return [part.split('"')[0] for part in text.split('"$ref": "')[1:]]


@pytest.mark.parametrize("flavour", ["2020-12", "draft-07"])
def test_template_schema_is_flattened_into_titled_groups(flavour) -> None:
    raw = template_schema() if flavour == "2020-12" else draft07(template_schema())
    schema = normalize_form(raw)
    Draft7Validator.check_schema(schema)
    groups = schema[GROUPS]
    assert [g["title"] for g in groups] == [
        "Input/output options", "Reference genome options", "Institutional config options",
        "Generic options"]
    assert groups[0]["fa_icon"] == "fas fa-terminal"
    assert groups[0]["description"].startswith("Define where the pipeline")
    assert groups[0]["help_html"] == ""
    assert groups[-1]["help_html"].startswith("<p>These options are common to all nf-core")
    # Every parameter at the top level, in exactly one group; no group left to resolve.
    names = [n for g in groups for n in g["properties"]]
    assert sorted(names) == sorted(schema["properties"]) and len(set(names)) == len(names)
    assert "allOf" not in schema and "$defs" not in schema and not _refs(schema)
    assert {"input", "outdir"} <= set(schema["required"])
    assert schema["properties"]["igenomes_ignore"]["hidden"] is True
    assert "$id" not in schema
    # The values are flat, as nf-core writes them.
    assert field_errors(schema, {"input": "samples.csv", "outdir": "results"}) == []
    assert [e["field"] for e in field_errors(schema, {"outdir": "results"})] == ["input"]


def test_two_flavours_give_the_same_form() -> None:
    assert normalize_form(template_schema()) == normalize_form(draft07(template_schema()))


def test_plugin_test_schema_keeps_its_hidden_parameters() -> None:
    schema = normalize_form(plugin_test_schema())
    hidden = sorted(n for n, p in schema["properties"].items() if p.get("hidden"))
    assert "validate_params" in hidden and "outdir" not in hidden
    assert schema["required"] == ["outdir"]
    assert validate_config(schema, {"outdir": "out"})["validate_params"] is True


def test_quirks_of_published_pipeline_schemas() -> None:
    """What published draft-07 pipeline schemas write (nf-core/rnaseq 3.x does all of it): a
    group with ``"default": ""`` and its own help_text, a parameter with ``"default": null``."""
    schema = normalize_form({
        "$schema": "http://json-schema.org/draft-07/schema", "type": "object",
        "definitions": {"umi_options": {
            "title": "UMI options", "type": "object", "default": "", "help_text": "About UMIs.",
            "properties": {"umitools_bc_pattern2": {"type": "string", "default": None},
                           "with_umi": {"type": "boolean"}}}},
        "allOf": [{"$ref": "#/definitions/umi_options"}]})
    assert "allOf" not in schema and "definitions" not in schema
    assert "default" not in schema["properties"]["umitools_bc_pattern2"]
    assert validate_config(schema, {}) == {}  # no null filled in for a string


def test_help_text_is_rendered_markdown_without_raw_html() -> None:
    schema = normalize_form({"type": "object", "properties": {"x": {
        "type": "string", "help_text": "Use **this** [docs](https://nf-co.re) "
        "<script>alert(1)</script> [bad](javascript:alert(1))"}}})
    rendered = schema["properties"]["x"][HELP_HTML]
    assert "<strong>this</strong>" in rendered
    assert '<a href="https://nf-co.re">docs</a>' in rendered
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered
    assert "href=\"javascript" not in rendered


def test_a_form_cannot_bring_its_own_rendered_help_or_groups() -> None:
    schema = normalize_form({"type": "object", GROUPS: [{"id": "x", "properties": ["a"]}],
                             "properties": {"a": {"type": "string", HELP_HTML: "<img onerror=1>"}}})
    assert GROUPS not in schema and HELP_HTML not in schema["properties"]["a"]


def test_error_message_replaces_the_generic_message() -> None:
    schema = normalize_form(template_schema(error_message=True))
    assert field_errors(schema, {"input": "my samples.txt", "outdir": "o"}) == [
        {"field": "input", "message": INPUT_ERROR}]
    # ajv-errors' object form names the keywords it replaces; others keep the generic text.
    schema = normalize_form({"type": "object", "properties": {"n": {
        "type": "integer", "minimum": 1, "errorMessage": {"minimum": "at least one sample"}}}})
    assert field_errors(schema, {"n": 0}) == [{"field": "n", "message": "at least one sample"}]
    assert field_errors(schema, {"n": "x"})[0]["message"] == "'x' is not of type 'integer'"
    with pytest.raises(InvalidRequest) as caught:
        validate_config(normalize_form(template_schema(error_message=True)),
                        {"input": "a b.csv", "outdir": "o"})
    assert INPUT_ERROR in caught.value.message


def test_2020_12_keywords_in_draft_07_spelling() -> None:
    schema = normalize_form({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "$defs": {"opts": {"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "string"},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}],
                     "items": {"type": "string"}}},
            "dependentRequired": {"a": ["b"]}}},
        "allOf": [{"$ref": "#/$defs/opts"}]})
    # A group's own rules apply to the flat values.
    assert field_errors(schema, {"a": "x"}) == [{"field": "", "message": "'b' is a dependency "
                                                                          "of 'a'"}]
    assert field_errors(schema, {"a": "x", "b": "y"}) == []
    assert field_errors(schema, {"pair": [1, "x"]}) == []
    assert field_errors(schema, {"pair": ["x"]})[0]["field"] == "pair.0"


def test_outside_references_are_still_refused() -> None:
    raw = template_schema()
    raw["$defs"]["generic_options"]["properties"]["version"] = {"$ref": "file:///etc/passwd"}
    with pytest.raises(InvalidRequest, match="refers outside itself"):
        normalize_form(raw)


def test_exists_is_checked_under_the_root_or_among_the_inputs(tmp_path: Path) -> None:
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "samples.csv").write_text("sample\n")
    (tmp_path.parent / "outside.csv").write_text("x\n")
    schema = normalize_form({"type": "object", "properties": {
        "input": {"type": "string", "format": "file-path", "exists": True},
        "index": {"type": "string", "format": "directory-path", "exists": True},
        "any": {"type": "string", "format": "path", "exists": True,
                "errorMessage": {"exists": "no such reference"}},
        "loose": {"type": "string", "format": "file-path"}}})

    def check(**config):
        return {e["field"]: e["message"] for e in path_errors(schema, config, tmp_path,
                                                              ["reads.fq"])}

    assert check(input="sheets/samples.csv", index="sheets", any="sheets",
                 loose="nowhere.csv") == {}
    assert check(input="reads.fq") == {}  # one of the run's inputs, by name
    found = check(input="sheets", index="sheets/samples.csv", any="gone",
                  loose="gone")
    assert found == {
        "input": "'sheets' is no file under the Jupyter root nor one of the run's inputs",
        "index": "'sheets/samples.csv' is no folder under the Jupyter root nor one of the "
                 "run's inputs",
        "any": "no such reference"}
    assert set(check(input="../outside.csv", index="/..")) == {"input", "index"}


# -- through the server -------------------------------------------------------------------
@pytest.fixture
def nfcore_package(tmp_path_factory) -> Path:
    """The fake package with the nf-core template's schema (+ an errorMessage) as form.json."""
    import io
    import tarfile

    from pirus_jupyter.packaging import build_package_from_parts

    folder = tmp_path_factory.mktemp("nfcore-pkg")
    base = folder / "rootfs.tar"
    with tarfile.open(base, "w") as tar:
        entry = tarfile.TarInfo("bin")
        entry.type, entry.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(entry)
        entry = tarfile.TarInfo("bin/sh")
        entry.size, entry.mode = 1, 0o755
        tar.addfile(entry, io.BytesIO(b"\n"))
    manifest = {"name": "nfdemo", "run": "/pipeline/run.sh", "version": "1.0",
                "description": "nf-core schema", "license": "MIT",
                "developers": ["Pirus tests"]}
    files = {"/pipeline/run.sh": b"#!/bin/sh\n",
             "/pipeline/form.json": json.dumps(template_schema(error_message=True)).encode()}
    return build_package_from_parts(manifest, files, folder / "nfdemo.tar.gz", base=base)


async def test_a_pipeline_with_an_nfcore_form_installs_validates_and_runs(
        api, fake, install, nfcore_package, jp_root_dir) -> None:
    pipeline = await install(nfcore_package)
    code, form = await api("GET", "pipelines", pipeline["id"], "form")
    assert code == 200
    assert [g["id"] for g in form[GROUPS]] == [
        "input_output_options", "reference_genome_options", "institutional_config_options",
        "generic_options"]
    assert form["properties"]["input"]["format"] == "file-path"

    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "config": {
        "input": "my samples.csv", "outdir": "results"}})
    assert code == 400 and body["error"]["code"] == "invalid_config"
    assert body["error"]["details"] == [{"field": "input", "message": INPUT_ERROR}]

    code, body = await api("POST", "runs", body={"pipeline_id": pipeline["id"], "config": {
        "input": "missing.csv", "outdir": "results"}})
    assert code == 400 and body["error"]["details"] == [{
        "field": "input", "message": "'missing.csv' is no file under the Jupyter root nor one "
                                     "of the run's inputs"}]
    code, runs = await api("GET", "runs")
    assert code == 200 and runs["total"] == 0  # nothing half written

    (Path(jp_root_dir) / "samples.csv").write_text("sample,fastq_1,fastq_2\n")
    code, run = await api("POST", "runs", body={
        "pipeline_id": pipeline["id"], "inputs": ["samples.csv"],
        "config": {"input": "samples.csv", "outdir": "results"}})
    assert code == 201, run
    assert run["config"]["publish_dir_mode"] == "copy"  # the groups' defaults, flat
    await wait_run(api, run["id"], "RUNNING")
    fake.finish(run["id"], Outcome(out="ok\n"))
    assert (await wait_run(api, run["id"], "DONE", "ERROR"))["status"] == "DONE"
