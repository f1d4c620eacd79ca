"""Run-configuration forms: normalise a pipeline's form.json to JSON Schema draft-07, fill the
Pirus placeholders, and validate a config with per-field messages.

The server validates with exactly the schema the widgets and the panel render.
"""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError

from .errors import InvalidRequest

INPUT_FILES = "__PIRUS_INPUT_FILES__"
DB_ALL = "__PIRUS_DB_ALL__"
DB_REF = "__PIRUS_DB_REF__"
DB_REFS = "__PIRUS_DB_REFS__"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


def _normalize_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalize_node(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    props = node.get("properties")
    required = [] if isinstance(node.get("required"), bool) else list(node.get("required") or [])
    if isinstance(node.get("required"), bool):
        node.pop("required")  # draft-03 flag on this node: its parent collected it
    if isinstance(props, dict):
        # draft-03: "required": true on each property -> draft-07 list on the parent.
        for name, prop in props.items():
            if isinstance(prop, dict) and prop.get("required") is True and name not in required:
                required.append(name)
    out = {k: _normalize_node(v) for k, v in node.items()}
    if required:
        out["required"] = required
    if out.get("type") == "object" and "properties" not in out:
        out["properties"] = {}
    return out


def _fill(node: Any, replacements: dict[str, list[str]]) -> Any:
    """Replace placeholder strings (as enum, default or a bare value) by the allowed choices."""
    if isinstance(node, list):
        if len(node) == 1 and node[0] in replacements:
            return list(replacements[node[0]])
        return [_fill(n, replacements) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, str) and value in replacements:
            choices = replacements[value]
            if key == "enum":
                out[key] = list(choices)
            elif key == "default":
                if choices:
                    out[key] = choices[0]
            else:
                out[key] = value
        else:
            out[key] = _fill(value, replacements)
    enum = out.get("enum")
    if isinstance(enum, list) and not enum:
        out.pop("enum")  # nothing to choose from yet: a free field, not an unsatisfiable one
    if out.get("type") == "array" and isinstance(out.get("items"), dict):
        items = out["items"]
        if "enum" in items and DB_REFS in str(node.get("items")):
            out.setdefault("uniqueItems", True)
    return out


def normalize_form(form: dict[str, Any] | None, input_names: list[str] | None = None,
                   databases: list[str] | None = None) -> dict[str, Any]:
    """A draft-07 schema from a pipeline's form (draft-03 or draft-07) with placeholders filled.
    Unknown ``__PIRUS_*__`` placeholders are left as plain strings."""
    if not form:
        return {"$schema": DRAFT7, "type": "object", "properties": {}}
    schema = _normalize_node(copy.deepcopy(form))
    schema["$schema"] = DRAFT7
    schema.setdefault("type", "object")
    dbs = list(databases or [])
    reference_dbs = dbs
    replacements = {
        INPUT_FILES: list(input_names or []),
        DB_ALL: dbs,
        DB_REF: reference_dbs,
        DB_REFS: reference_dbs,
    }
    schema = _fill(schema, replacements)
    try:
        Draft7Validator.check_schema(schema)
    except SchemaError as e:
        raise InvalidRequest(f"the pipeline's form is not a valid JSON Schema: {e.message}",
                             code="invalid_form") from e
    return schema


def apply_defaults(schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Top-level and nested object defaults filled into a copy of ``config``."""
    out = copy.deepcopy(config)
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if prop.get("type") == "object" and isinstance(out.get(name), dict):
            out[name] = apply_defaults(prop, out[name])
    return out


def field_errors(schema: dict[str, Any], config: Any) -> list[dict[str, str]]:
    """Every validation problem as ``{"field": "a.b", "message": ...}``, stable order."""
    errors = []
    for error in sorted(Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [r for r in error.validator_value if r not in error.instance]
            for name in missing:
                errors.append({"field": f"{path}.{name}" if path else name,
                               "message": f"{name} is required"})
            continue
        errors.append({"field": path, "message": error.message})
    return errors


def validate_config(schema: dict[str, Any], config: Any) -> dict[str, Any]:
    """The config with defaults applied, or InvalidRequest listing the failing fields."""
    if not isinstance(config, dict):
        raise InvalidRequest("config must be a JSON object", code="invalid_config")
    config = apply_defaults(schema, config)
    errors = field_errors(schema, config)
    if errors:
        summary = "; ".join(f"{e['field'] or '(config)'}: {e['message']}" for e in errors)
        raise InvalidRequest(f"invalid config: {summary}", code="invalid_config", details=errors)
    return config
