"""nf-core's ``nextflow_schema.json`` taken as a form unchanged: flattened into the one draft-07
schema the server validates and both renderers (the kernel's widgets, the panel's rjsf) draw.

nf-core writes its parameters as groups (``$defs`` in draft 2020-12, ``definitions`` in
draft-07) merged at the top by ``allOf: [{"$ref": "#/$defs/group"}]``, while the values are flat
(``{"input": ..., "outdir": ...}``). :func:`flatten_groups` moves every group's properties and
``required`` to the top level and lists the groups, in order, under :data:`GROUPS` —
``[{"id", "title", "description", "help_html", "fa_icon", "properties": [names]}]`` — for the
renderers' titled sections (``help_html``: the group's ``help_text``, rendered as below).
nf-core's own keywords stay on each property and mean:

* ``hidden: true``: shown only behind the renderers' "show hidden parameters" toggle;
* ``help_text``: Markdown, rendered here once into :data:`HELP_HTML` (raw HTML in it is
  escaped, unsafe links are refused) and shown collapsed under the field;
* ``errorMessage``: replaces the generic message of a failing check (:func:`custom_message`);
* ``format: file-path|directory-path|path`` (+ ``mimetype``, ``pattern``): offered from the
  run's inputs and the Jupyter files; with ``exists: true`` the server checks the path
  (:func:`path_errors`).

The draft 2020-12 keywords nf-core schemas use are written in their draft-07 spelling
(``$defs``, ``dependentRequired``, ``dependentSchemas``, ``prefixItems``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from .errors import PirusError
from .files import resolve_under

GROUPS = "x-pirus-groups"
HELP_HTML = "x-pirus-help-html"
PATH_FORMATS = ("file-path", "directory-path", "path")
# CommonMark without raw HTML: a package's help text cannot inject markup or scripts.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
_DEFS = ("$defs", "definitions")
# What a group says of itself rather than of the values (nf-core writes "default": "" on some).
_GROUP_ONLY = {"title", "description", "fa_icon", "properties", "required", "type", "default",
               "$comment", "help_text", "hidden"}


def _rewrite_refs(node: Any) -> Any:
    """``#/$defs/x`` -> ``#/definitions/x`` and the 2020-12 keywords in draft-07 spelling."""
    if isinstance(node, list):
        return [_rewrite_refs(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = "#/definitions/" + value[len("#/$defs/"):]
        elif key in ("enum", "const", "default", "examples"):
            out[key] = value  # data, not schema
        else:
            out[key] = _rewrite_refs(value)
    dependencies = dict(out.get("dependencies") or {})
    for key in ("dependentRequired", "dependentSchemas"):
        if isinstance(out.get(key), dict):
            dependencies.update(out.pop(key))
    if dependencies:
        out["dependencies"] = dependencies
    if isinstance(out.get("prefixItems"), list):
        rest = out.pop("items", None)
        out["items"] = out.pop("prefixItems")
        if rest is not None:
            out["additionalItems"] = rest
    return out


def _group_name(entry: Any, defs: dict[str, Any]) -> str | None:
    if not isinstance(entry, dict) or set(entry) != {"$ref"} or not isinstance(
            entry["$ref"], str):
        return None
    for prefix in ("#/$defs/", "#/definitions/"):
        if entry["$ref"].startswith(prefix):
            name = entry["$ref"][len(prefix):]
            group = defs.get(name)
            if isinstance(group, dict) and isinstance(group.get("properties"), dict) and \
                    "/" not in name:
                return name
    return None


def _clean_property(prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    prop = dict(prop)
    prop.pop(HELP_HTML, None)  # ours only: a package's own would reach the page unrendered
    types = prop.get("type")
    nullable = types == "null" or (isinstance(types, list) and "null" in types)
    if "default" in prop and prop["default"] is None and not nullable:
        del prop["default"]  # nf-core's "no default" for a non-null field
    help_text = prop.get("help_text")
    if isinstance(help_text, str) and help_text.strip():
        prop[HELP_HTML] = _MARKDOWN.render(help_text)
    return prop


def flatten_groups(form: dict[str, Any]) -> dict[str, Any]:
    """``form`` with its ``allOf``-merged groups flattened to top-level properties (see the
    module); a form without groups only has its 2020-12 keywords respelled."""
    form = dict(form)
    form.pop(GROUPS, None)  # ours only, computed below
    form.pop("$id", None)  # no longer names this document; references stay "#/..." only
    defs: dict[str, Any] = {}
    for key in _DEFS:
        if isinstance(form.get(key), dict):
            defs.update(form.pop(key))
    all_of = form.get("allOf") if isinstance(form.get("allOf"), list) else []
    properties = dict(form.get("properties") or {}) if isinstance(
        form.get("properties"), dict) else {}
    required = list(form.get("required") or []) if isinstance(form.get("required"),
                                                              list) else []
    groups: list[dict[str, Any]] = []
    rest: list[Any] = []
    used: set[str] = set()
    for entry in all_of:
        name = _group_name(entry, defs)
        if name is None or name in used:
            rest.append(entry)
            continue
        used.add(name)
        group = defs[name]
        names = [n for n in group["properties"] if n not in properties]
        properties.update({n: group["properties"][n] for n in names})
        required += [r for r in group.get("required") or [] if isinstance(r, str)
                     and r not in required]
        # The group's own rules (dependentRequired, anyOf, ...) apply to the flat values.
        rules = {k: v for k, v in group.items() if k not in _GROUP_ONLY}
        if rules:
            rest.append(rules)
        help_text = group.get("help_text")
        groups.append({"id": name, "title": str(group.get("title") or name),
                       "description": str(group.get("description") or ""),
                       "help_html": _MARKDOWN.render(help_text) if isinstance(help_text, str)
                       and help_text.strip() else "",
                       "fa_icon": str(group.get("fa_icon") or ""), "properties": names})
    if isinstance(form.get("properties"), dict) or groups:
        form["properties"] = {k: _clean_property(v) for k, v in properties.items()}
    if required:
        form["required"] = required
    if rest:
        form["allOf"] = rest
    else:
        form.pop("allOf", None)
    # Groups still referenced from elsewhere (or never merged) stay, as draft-07 definitions.
    kept = {k: v for k, v in defs.items() if k not in used}
    if kept:
        form["definitions"] = kept
    if groups:
        form[GROUPS] = groups
    return _rewrite_refs(form)


# -- messages and paths ---------------------------------------------------------------------
def custom_message(schema: Any, keyword: str) -> str | None:
    """The schema's ``errorMessage`` for a failing ``keyword``: a string replaces every message
    of that node, an object (ajv-errors' form) names the keywords it replaces."""
    if not isinstance(schema, dict):
        return None
    message = schema.get("errorMessage")
    if isinstance(message, dict):
        message = message.get(keyword)
    return message if isinstance(message, str) and message else None


def _path_fields(schema: Any, value: Any, where: str) -> Iterator[tuple[str, dict[str, Any],
                                                                        str]]:
    """(field, property schema, value) of every string value whose property asks ``exists``."""
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict) or name not in value:
            continue
        field = f"{where}.{name}" if where else name
        item = value[name]
        if prop.get("exists") is True and prop.get("format") in PATH_FORMATS and \
                isinstance(item, str) and item:
            yield field, prop, item
        elif prop.get("type") == "object":
            yield from _path_fields(prop, item, field)


def path_errors(schema: dict[str, Any], config: dict[str, Any], root: Path,
                input_names: list[str]) -> list[dict[str, str]]:
    """``exists: true`` checked: the value names one of the run's inputs, or a path under the
    Jupyter root of the right kind (file, directory, either). Blocking: call in a thread."""
    errors = []
    for field, prop, value in _path_fields(schema, config, ""):
        kind = prop["format"]
        if value in input_names and kind != "directory-path":
            continue
        try:
            path = resolve_under(root, value, must_exist=False)
        except PirusError:
            path = None
        if path is not None and (path.is_file() if kind == "file-path" else
                                 path.is_dir() if kind == "directory-path" else path.exists()):
            continue
        what = {"file-path": "file", "directory-path": "folder"}.get(kind, "file or folder")
        # Only an errorMessage naming "exists": a string one is about the value's form (its
        # pattern), and saying the path is missing is more useful than repeating it.
        own = prop.get("errorMessage")
        own = own.get("exists") if isinstance(own, dict) else None
        errors.append({"field": field, "message": own if isinstance(own, str) and own else (
            f"{value!r} is no {what} under the Jupyter root nor one of the run's inputs")})
    return errors
