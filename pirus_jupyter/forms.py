"""Run-configuration forms: normalise a pipeline's form.json to JSON Schema draft-07 (draft-03,
draft-07, and nf-core schemas in draft-07 or 2020-12 through :mod:`.nfschema`), fill the Pirus
placeholders, and validate a config with per-field messages (a node's ``errorMessage`` instead
of the generic one).

The server validates with exactly the schema the widgets and the panel render.

A form comes from a package, so it is not trusted:

* ``$ref`` resolves inside the form only (``#/...``). jsonschema would otherwise fetch any
  URL it names (``http://``, ``file:///etc/...``, ``file:///dev/zero``); a form with another
  reference is refused at normalisation, and validation uses an empty registry that can fetch
  nothing.
* ``pattern`` and ``patternProperties`` are matched by the ``regex`` engine with a deadline:
  one config's checks get ``PATTERN_BUDGET`` seconds in all, a pattern that backtracks past
  it (``^(a|aa)+$``) is a field error, never a stalled server.
"""

from __future__ import annotations

import contextvars
import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import regex
from jsonschema import Draft7Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

from .errors import InvalidRequest
from .nfschema import custom_message, flatten_groups

INPUT_FILES = "__PIRUS_INPUT_FILES__"
DB_ALL = "__PIRUS_DB_ALL__"
DB_REF = "__PIRUS_DB_REF__"
DB_REFS = "__PIRUS_DB_REFS__"
DRAFT7 = "http://json-schema.org/draft-07/schema#"
PATTERN_BUDGET = 1.0  # seconds of pattern matching for one whole config
_NO_RETRIEVAL: Registry = Registry()  # resolves nothing outside the schema itself
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("pirus_pattern_deadline")


def _search(pattern: str, text: str) -> bool:
    """``re.search`` semantics, bounded by the current config's deadline (TimeoutError)."""
    left = _deadline.get(time.monotonic() + PATTERN_BUDGET) - time.monotonic()
    if left <= 0:
        raise TimeoutError(pattern)
    return regex.search(pattern, text, timeout=left) is not None


def _too_costly(pattern: str) -> ValidationError:
    return ValidationError(f"checking the form's patterns took over {PATTERN_BUDGET:g} s "
                           f"(at {pattern[:200]!r}): the form needs simpler patterns")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    try:
        if not _search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
    except TimeoutError:
        yield _too_costly(pattern)


def _matching_keys(patterns: Any, instance: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(pattern, key) pairs that match; a ValidationError-worthy TimeoutError propagates."""
    for pattern in patterns:
        for key in instance:
            if _search(pattern, key):
                yield pattern, key


def _pattern_properties(validator: Any, patterns: Any, instance: Any,
                        schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    try:
        matches = list(_matching_keys(patterns, instance))
    except TimeoutError as e:
        yield _too_costly(str(e))
        return
    for pattern, key in matches:
        yield from validator.descend(instance[key], patterns[pattern], path=key,
                                     schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any,
                           schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    try:
        matched = {key for _, key in _matching_keys(schema.get("patternProperties", {}),
                                                    instance)}
    except TimeoutError as e:
        yield _too_costly(str(e))
        return
    extras = [key for key in instance if key not in properties and key not in matched]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(e) for e in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


BoundedValidator = validators.extend(Draft7Validator, {
    "pattern": _pattern, "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
})


def form_validator(schema: dict[str, Any]) -> Any:
    """The validator every config check uses: bounded patterns, no reference retrieval."""
    return BoundedValidator(schema, registry=_NO_RETRIEVAL)


# Keywords whose value maps names to schemas: a key there named "$ref" is a name.
_NAME_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependencies",
              "dependentSchemas")
# Keywords whose value is data, not schema: a "$ref" inside is never resolved.
_DATA = ("enum", "const", "default", "examples")


def _refuse_outside_references(form: Any) -> None:
    """Only ``#...`` references (inside the form): anything else would be fetched."""
    stack: list[tuple[Any, str, str]] = [(form, "", "")]
    while stack:
        node, where, keyword = stack.pop()
        if isinstance(node, list):
            stack.extend((n, f"{where}.{i}", "") for i, n in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if "$ref" in node and keyword not in _NAME_MAPS and not (
                isinstance(ref, str) and ref.startswith("#")):
            shown = ref[:200] if isinstance(ref, str) else type(ref).__name__
            raise InvalidRequest(
                f"the pipeline's form refers outside itself ($ref {shown!r} at "
                f"{where.lstrip('.') or '(top level)'}): only references inside the form "
                '("#/...") are allowed', code="invalid_form")
        stack.extend((v, f"{where}.{k}", k) for k, v in node.items()
                     if keyword in _NAME_MAPS or k not in _DATA)


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
        if len(node) == 1 and isinstance(node[0], str) and node[0] in replacements:
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
    try:
        return _normalize_form(form, input_names, databases)
    except RecursionError:
        raise InvalidRequest("the pipeline's form is nested too deeply",
                             code="invalid_form") from None


def _normalize_form(form: dict[str, Any], input_names: list[str] | None,
                    databases: list[str] | None) -> dict[str, Any]:
    _refuse_outside_references(form)
    schema = _normalize_node(flatten_groups(copy.deepcopy(form)))
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
    token = _deadline.set(time.monotonic() + PATTERN_BUDGET)
    try:
        found = sorted(form_validator(schema).iter_errors(config), key=lambda e: list(e.path))
    except Unresolvable as e:  # a "#..." reference to nothing in the form
        raise InvalidRequest(f"the pipeline's form has a reference to nothing: {e}"[:500],
                             code="invalid_form") from None
    finally:
        _deadline.reset(token)
    errors = []
    for error in found:
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [r for r in error.validator_value if r not in error.instance]
            for name in missing:  # jsonschema reports each missing name: said once each
                found_one = {"field": f"{path}.{name}" if path else name,
                             "message": f"{name} is required"}
                if found_one not in errors:
                    errors.append(found_one)
            continue
        message = custom_message(error.schema, str(error.validator)) or error.message
        if {"field": path, "message": message} not in errors:  # one errorMessage, said once
            errors.append({"field": path, "message": message})
    return errors


def validate_config(schema: dict[str, Any], config: Any,
                    more_checks: Callable[[dict[str, Any]], list[dict[str, str]]] | None = None
                    ) -> dict[str, Any]:
    """The config with defaults applied, or InvalidRequest listing the failing fields (those of
    the schema, then those ``more_checks`` finds in a schema-valid config)."""
    if not isinstance(config, dict):
        raise InvalidRequest("config must be a JSON object", code="invalid_config")
    config = apply_defaults(schema, config)
    errors = field_errors(schema, config)
    if not errors and more_checks is not None:
        errors = more_checks(config)
    if errors:
        summary = "; ".join(f"{e['field'] or '(config)'}: {e['message']}" for e in errors)
        raise InvalidRequest(f"invalid config: {summary}", code="invalid_config", details=errors)
    return config
