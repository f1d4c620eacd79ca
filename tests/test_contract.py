"""One contract: openapi.yaml is the source; models.py and the panel's generated TypeScript
(labextension/src/schema.ts) must say the same."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from pirus_jupyter import models
from pirus_jupyter.models import RunStatus, UploadStatus

ROOT = Path(__file__).resolve().parent.parent


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "openapi_to_ts.py"
    spec = importlib.util.spec_from_file_location("openapi_to_ts", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "pirus_jupyter" / "openapi.yaml").read_text(encoding="utf-8"))
    return spec["components"]["schemas"]


# -- the generated TypeScript ------------------------------------------------------------------
def test_generated_typescript_is_current():
    committed = generator.TARGET.read_text(encoding="utf-8")
    assert committed == generator.expected(), (
        "labextension/src/schema.ts is stale: run `npm run generate` in labextension/")


@pytest.mark.parametrize(("schema", "typescript"), [
    ({"type": ["string", "null"]}, "string | null"),
    ({"oneOf": [{"$ref": "#/components/schemas/Sha256"}, {"type": "null"}]}, "Sha256 | null"),
    ({"enum": ["partial", "final", None]}, "'partial' | 'final' | null"),
    ({"const": "it's"}, "'it\\'s'"),
    ({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
     "(string | number)[]"),
    ({"type": ["array", "null"], "items": {"type": "string"}}, "string[] | null"),
    ({"type": "object"}, "Record<string, unknown>"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, "Record<string, string>"),
    ({"type": "object", "additionalProperties": {"type": "number"},
      "propertyNames": {"$ref": "#/components/schemas/RunStatus"}},
     "Partial<Record<RunStatus, number>>"),
    ({"type": "object", "required": ["a"], "properties": {
        "a": {"type": "integer", "description": "An A."}, "$b-c": {"type": "boolean"}}},
     "{\n  /** An A. */\n  a: number;\n  '$b-c'?: boolean;\n}"),
    ({"allOf": [{"$ref": "#/components/schemas/UploadFields"},
                {"type": "object", "required": ["url"],
                 "properties": {"url": {"type": "string"}}}]},
     "UploadFields & {\n  url: string;\n}"),
    ({"description": "Raw bytes."}, "unknown"),
])
def test_generator_maps_json_schema(schema, typescript):
    assert generator.render(schema) == typescript


def test_generator_refuses_what_it_cannot_translate():
    with pytest.raises(ValueError, match="not"):
        generator.render({"not": {"type": "string"}})
    with pytest.raises(ValueError, match="unsupported \\$ref"):
        generator.render({"$ref": "other.yaml#/Thing"})


# -- models.py follows openapi.yaml ------------------------------------------------------------
@pytest.mark.parametrize(("schema", "fields"), [
    ("Pipeline", models.PIPELINE_PUBLIC), ("Run", models.RUN_PUBLIC),
    ("File", models.FILE_PUBLIC), ("UploadFields", models.UPLOAD_PUBLIC)])
def test_public_fields_are_the_schema_properties(schemas, schema, fields):
    body = schemas[schema]
    assert tuple(body["properties"]) == fields  # same names, same order
    assert set(body["required"]) == set(fields)


@pytest.mark.parametrize(("values", "enum"), [
    (models.RUN_STATUSES, lambda s: s["RunStatus"]["enum"]),
    (models.PIPELINE_STATUSES, lambda s: s["PipelineStatus"]["enum"]),
    (tuple(u.value for u in UploadStatus),
     lambda s: s["UploadFields"]["properties"]["status"]["enum"]),
])
def test_status_enums_are_the_schema_enums(schemas, values, enum):
    assert values == tuple(enum(schemas))


@pytest.mark.parametrize(("table", "statuses"), [
    (models.RUN_TRANSITIONS, RunStatus), (models.UPLOAD_TRANSITIONS, UploadStatus)])
def test_every_status_has_a_row_in_its_transition_table(table, statuses):
    assert set(table) == set(statuses)
    for moves in table.values():
        assert moves <= set(statuses)


def test_run_state_machine_is_the_documented_one(schemas):
    """The RunStatus description's arrows are allowed moves, and its final statuses are the
    table's."""
    text = " ".join(schemas["RunStatus"]["description"].split())
    chains = 0
    for sentence in re.split(r"[;.]", text):
        tokens = re.findall(r"<->|->|[A-Z]{4,}", sentence)
        arrows = tokens[1::2]
        if len(tokens) < 3 or tokens[0] in ("->", "<->") or \
                not all(a in ("->", "<->") for a in arrows):
            continue  # not a chain of moves ("any non-final status -> ...", "... are final")
        for left, arrow, right in zip(tokens[0::2], arrows, tokens[2::2], strict=False):
            assert models.can_move(left, right), f"{left} -> {right}"
            if arrow == "<->":
                assert models.can_move(right, left), f"{right} -> {left}"
        chains += 1
    assert chains == 2
    finals = re.search(r"([A-Z, ]+ and [A-Z]+) are final", text)
    assert finals is not None
    assert set(re.findall(r"[A-Z]{4,}", finals.group(1))) == models.FINAL_RUN_STATUSES
