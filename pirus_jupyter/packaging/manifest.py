"""The ``pirus:`` manifest of a pipeline package: its one JSON Schema (``manifest.schema.json``),
the problems of a manifest in words, the default folders and files, and the two normalisations
(what a build writes into ``metadata.yaml``, what an install reads out of it).

Pure: no I/O besides loading the schema once, so it is safe on untrusted metadata.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, ValidationError, validators

from .. import API_VERSION
from ..errors import InvalidPackage

SCHEMA: dict[str, Any] = json.loads(
    Path(__file__).with_name("manifest.schema.json").read_text(encoding="utf-8"))

# YAML gives Python values: an integer is an int, never a bool nor 2.0 (draft-07 allows 2.0).
_Validator = validators.extend(Draft7Validator, type_checker=Draft7Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)))
_VALIDATOR = _Validator(SCHEMA)
_PATH_VALIDATOR = _Validator(SCHEMA["definitions"]["file"])

#: Default container folders of the ``pirus:`` block (the schema's defaults).
DIRECTORY_DEFAULTS: dict[str, str] = {
    key: spec["default"] for key, spec in SCHEMA["properties"].items() if "default" in spec
}
#: Files picked up next to pirus.yaml when nothing maps them: source name -> (the pirus field
#: that points at it, its default place in the rootfs).
DEFAULT_FILES: dict[str, tuple[str, str]] = {
    "form.json": ("form", "/pipeline/form.json"),
    "icon.png": ("icon", "/pipeline/icon.png"),
    "run.sh": ("run", "/pipeline/run.sh"),
}
#: Keys of pirus.yaml that drive the build and are not copied into the package's pirus block.
BUILD_KEYS = frozenset({"base", "files", "metadata", "packages"})
# Problems are listed in the schema's field order (run and its alias job after name).
_FIELD_ORDER = {key: index for index, key in enumerate(SCHEMA["properties"])}
_UNSAFE_PROGRAM = frozenset(";&|<>()$`*?[]{}")


# -- reading metadata.yaml -------------------------------------------------------------------
#: A package's metadata.yaml is at most this many YAML nodes once its aliases are expanded,
#: and nested at most this deep. Real ones have tens of nodes; an "alias bomb" (each level
#: ten aliases of the one above) is a few hundred bytes and 10^7 nodes once expanded.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document over MAX_YAML_NODES or MAX_YAML_DEPTH, or one that contains itself."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures the composed document (aliases counted each time they are
    used, as the loaded value would hold them) before a single Python value is built."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_size(node)
        return node


def _check_size(root: yaml.Node) -> None:
    """Refuse a node graph over MAX_YAML_NODES (expanded) or MAX_YAML_DEPTH, or that
    contains itself. Iterative, and each shared node is measured once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels")
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise YAMLTooLarge(f"over {MAX_YAML_NODES} values once its aliases "
                                     "(*name) are expanded")
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise YAMLTooLarge("an alias (*name) refers to a value that contains it")
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children
                     if id(child) not in sizes)


def load_yaml(text: bytes | str) -> Any:
    """One YAML document, loaded safely and bounded (``MAX_YAML_NODES``, ``MAX_YAML_DEPTH``):
    raises :class:`YAMLTooLarge` over the bounds, ``yaml.YAMLError`` for invalid YAML."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: no Python objects
    except RecursionError:  # composing is recursive: deeper than Python's stack
        raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels") from None


def is_container_path(value: Any) -> bool:
    """An absolute path inside the container: no control character, no ``..`` segment."""
    return _PATH_VALIDATOR.is_valid(value)


def pirus_block(manifest: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """Accept either a whole metadata.yaml mapping or just its ``pirus:`` block."""
    if "pirus" in manifest:
        return manifest["pirus"], []
    # A plain LXD image: metadata.yaml fields but no pirus block at all.
    if "name" not in manifest and {"architecture", "creation_date", "properties"} & set(manifest):
        return None, ["pirus: required (metadata.yaml has no pirus block: not a Pirus package)"]
    return manifest, []


def validate_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Human-readable problems of a pipeline manifest; an empty list means it is valid.

    ``manifest`` is either a whole ``metadata.yaml`` mapping (with a ``pirus:`` key) or the
    ``pirus`` block itself (as in ``pirus.yaml``). Problems are prefixed with the field name,
    e.g. ``"pirus.name: required"``. Unknown keys are allowed, for forward compatibility.
    No I/O: safe to call on untrusted input.
    """
    if not isinstance(manifest, Mapping):
        return ["manifest: must be a mapping"]
    block, problems = pirus_block(manifest)
    if problems:
        return problems
    if not isinstance(block, Mapping):
        return ["pirus: must be a mapping"]
    present = _without_nulls(block, SCHEMA)
    found = [problem for error in _VALIDATOR.iter_errors(present) for problem in _explain(error)]
    found += _cross_field_problems(present)
    seen_paths: set[tuple[Any, ...]] = set()
    kept: list[tuple[str, str]] = []
    for path, field, text in found:
        if path not in seen_paths:  # one problem per value: the first the schema meets
            seen_paths.add(path)
            kept.append((field, text))
    kept.sort(key=lambda item: _FIELD_ORDER.get(item[0], len(_FIELD_ORDER)))
    return [text for _field, text in kept]


def _without_nulls(block: Mapping[Any, Any], schema: Mapping[str, Any]) -> dict[Any, Any]:
    """``block`` without the known fields set to null (YAML's empty value means "absent")."""
    fields = schema.get("properties", {})
    return {
        key: _without_nulls(value, fields[key])
        if key in fields and isinstance(value, Mapping) and "properties" in fields[key] else value
        for key, value in block.items() if not (value is None and key in fields)
    }


def _explain(error: ValidationError) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    """(path of the value, top-level field, problem) for a schema error, in the words of the
    schema's ``x-messages``."""
    path = tuple(error.absolute_path)
    template = error.schema.get("x-messages", {}).get(error.validator)
    if template is None:  # every keyword of the schema has its words; never reached
        template = error.message
    members: list[Any] = [None]
    if error.validator == "required":
        members = [name for name in error.validator_value if name not in error.instance]
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        members = sorted((key for key in error.instance if key not in known), key=str)
    for member in members:
        names = [str(p) for p in path if isinstance(p, str)]
        if member is not None:
            names.append(str(member))
        field = names[0] if names else ""
        value = error.instance
        prop = SCHEMA["properties"].get(field, {})
        text = template.format(
            value=value, type=type(value).__name__,
            hint=" (quote it in YAML)" if isinstance(value, (int, float)) else "",
            example=prop.get("default") or (prop.get("examples") or [""])[0],
        )
        yield (*path, member), field, ".".join(["pirus", *names]) + ": " + text


def _cross_field_problems(block: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    """What JSON Schema cannot say: job equal to run, and a folder normalising to ``/``
    (``posixpath.normpath`` keeps a leading ``//``, which no pattern should mimic)."""
    if "run" in block and "job" in block and block["job"] != block["run"]:
        yield ("job",), "job", "pirus.job: conflicts with pirus.run (job is an alias: keep one)"
    for key in DIRECTORY_DEFAULTS:
        value = block.get(key)
        if is_container_path(value) and posixpath.normpath(value) == "/":
            yield (key,), key, f"pirus.{key}: must not be the root folder"


def fill_default_files(block: dict[str, Any], destinations: Collection[str]) -> None:
    """Point ``form``, ``icon`` and ``run`` at their default files when those are in the
    package (``destinations``: normalised rootfs paths) and the manifest names none."""
    for field, default_dest in DEFAULT_FILES.values():
        named = block.get(field) is not None or (field == "run" and block.get("job") is not None)
        if not named and default_dest in destinations:
            block[field] = default_dest


def built_manifest(manifest: Mapping[str, Any], destinations: Collection[str]
                   ) -> tuple[dict[str, Any], list[str]]:
    """The ``pirus`` block a build writes (one spelling of each field, defaults filled,
    paths normalised) and its problems; the block is only meaningful without problems."""
    block, problems = pirus_block(manifest)
    if problems or not isinstance(block, Mapping):
        return {}, problems or ["pirus: must be a mapping"]
    pirus = {k: v for k, v in block.items() if k not in BUILD_KEYS}
    if pirus.get("run") is None and pirus.get("job") is not None:
        pirus["run"] = pirus["job"]
    if pirus.get("job") == pirus.get("run"):
        pirus.pop("job", None)  # one canonical spelling in built packages
    if isinstance(pirus.get("run"), list) and all(isinstance(a, str) for a in pirus["run"]):
        pirus["run"] = shlex.join(pirus["run"])  # an argv list: quote it into a command line
    if isinstance(pirus.get("version"), float):
        # YAML reads `version: 1.10` as 1.1: refuse rather than silently change it.
        return pirus, [f"pirus.version: {pirus['version']!r} is a number; quote it in pirus.yaml"]
    for key in ("version", "pirus_api"):
        if isinstance(pirus.get(key), int) and not isinstance(pirus.get(key), bool):
            pirus[key] = str(pirus[key])
    if isinstance(pirus.get("developers"), str):
        pirus["developers"] = [pirus["developers"]]
    fill_default_files(pirus, destinations)
    for key, default in DIRECTORY_DEFAULTS.items():
        if pirus.get(key) is None:
            pirus[key] = default
    pirus.setdefault("pirus_api", API_VERSION)
    problems = validate_manifest(pirus)
    for key in (*DIRECTORY_DEFAULTS, "form", "icon"):
        if not problems and isinstance(pirus.get(key), str):
            pirus[key] = posixpath.normpath(pirus[key])
    return pirus, problems


def run_program(run: Any) -> str | None:
    """The absolute program path of a simple run command (``/pipeline/run.sh --x``), if any;
    None for a shell construct (a pipe, a variable, a glob) or a program on the ``PATH``."""
    if isinstance(run, list):
        run = " ".join(str(a) for a in run)
    if not isinstance(run, str):
        return None
    try:
        words = shlex.split(run)
    except ValueError:
        return None
    if not words or not words[0].startswith("/") or _UNSAFE_PROGRAM & set(words[0]):
        return None
    return words[0]


def documents_standing_in(documents: list[str]) -> dict[str, str]:
    """V2 manifests name no form or icon: the original installer took the documents called
    form.json and icon.* for them. Returns ``{"form": path, "icon": path}`` for those found
    (the first of each)."""
    found: dict[str, str] = {}
    for doc in documents:
        name = posixpath.basename(doc)
        if name == "form.json":
            found.setdefault("form", doc)
        elif name.startswith("icon."):
            found.setdefault("icon", doc)
    return found


# -- what an install reads ------------------------------------------------------------------
# Installing is more lenient than building, on purpose: packages made by the original Pirus
# (V1/V2: numbers for versions, any limit values, ...) install as they always did. It refuses
# only what it cannot run, with the messages clients have always seen.
def _installed_path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidPackage(f"pirus.{key} must be an absolute path inside the container")
    if ".." in value.split("/"):
        raise InvalidPackage(f"pirus.{key} must not contain '..'", code="invalid_manifest")
    return posixpath.normpath(value)


def normalize_manifest(metadata: Any) -> dict[str, Any]:
    """Validate ``metadata.yaml``'s ``pirus`` block as the server installs it and fill the
    defaults. Raises :class:`~pirus_jupyter.errors.InvalidPackage`."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("pirus"), dict):
        raise InvalidPackage("metadata.yaml has no 'pirus' mapping", code="missing_manifest")
    manifest = dict(metadata["pirus"])
    problems = []
    if not isinstance(manifest.get("name"), str) or not manifest["name"].strip():
        problems.append("pirus.name is required (a string)")
    run = manifest.get("run", manifest.get("job"))
    if isinstance(run, list) and all(isinstance(a, str) for a in run):
        run = " ".join(run)
    if not isinstance(run, str) or not run.strip():
        problems.append("pirus.run is required (the command run in the container)")
    if problems:
        raise InvalidPackage("; ".join(problems), code="invalid_manifest")
    manifest["run"] = run
    manifest.pop("job", None)
    for key, default in DIRECTORY_DEFAULTS.items():
        manifest[key] = _installed_path(manifest.get(key, default), key)
    for key in ("form", "icon"):
        if manifest.get(key) is not None:
            manifest[key] = _installed_path(manifest[key], key)
    for key in ("version", "description", "license", "pirus_api"):
        if manifest.get(key) is not None:
            manifest[key] = str(manifest[key])
    developers = manifest.get("developers") or []
    if isinstance(developers, str):
        developers = [developers]
    if not isinstance(developers, list):
        raise InvalidPackage("pirus.developers must be a list of names")
    manifest["developers"] = [str(d) for d in developers]
    manifest["limits"] = _installed_limits(manifest.get("limits"))
    for key in ("workdir", "shell"):
        if manifest.get(key) is not None:
            manifest[key] = _installed_path(manifest[key], key)
    manifest["env"] = _installed_env(manifest.get("env"))
    if not isinstance(manifest.get("provenance"), dict):
        manifest.pop("provenance", None)
    if manifest.get("notify") is not None and not isinstance(manifest["notify"], bool):
        raise InvalidPackage("pirus.notify must be true or false", code="invalid_manifest")
    documents = manifest.get("documents") or []
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise InvalidPackage("pirus.documents must be a list of paths")
    manifest["documents"] = [_installed_path(d if d.startswith("/") else "/" + d, "d")
                             for d in documents]
    for key, doc in documents_standing_in(manifest["documents"]).items():
        if manifest.get(key) is None:
            manifest[key] = doc
    if "provenance" in manifest:
        manifest["provenance"] = installed_provenance(manifest["provenance"])
    # Only the fields Pirus knows are kept: the record is read back by every listing, and an
    # unknown key could hold anything metadata.yaml can (up to MAX_YAML_NODES values).
    return {key: manifest[key] for key in _FIELD_ORDER if key in manifest}


#: At most this many provenance values are kept at install (a Debian base has a few hundred
#: packages; the record is read back by every listing).
MAX_PROVENANCE_ENTRIES = 5000


def installed_provenance(value: Any) -> dict[str, Any]:
    """The build's ``provenance`` as an install keeps it: strings, and mappings of strings or
    lists of strings (Debian packages -> versions, an OCI image's digest and tags), at most
    MAX_PROVENANCE_ENTRIES values, anything else dropped.
    Lenient: provenance informs, it never stops a package from running."""
    kept: dict[str, Any] = {}
    budget = MAX_PROVENANCE_ENTRIES
    for key, item in (value.items() if isinstance(value, dict) else ()):
        if budget <= 0 or not isinstance(key, str):
            continue
        if isinstance(item, str):
            kept[key], budget = item, budget - 1
        elif isinstance(item, dict):
            strings = [(k, v) for k, v in item.items() if isinstance(k, str) and (
                isinstance(v, str) or (isinstance(v, list)
                                       and all(isinstance(x, str) for x in v)))][:budget]
            kept[key], budget = dict(strings), budget - len(strings)
    return kept


def _installed_env(env: Any) -> dict[str, str]:
    """The run command's extra environment: what the schema accepts, or the package is
    refused (LXD would refuse the exec of every run)."""
    if env is None:
        return {}
    problems = [text for error in _Validator(SCHEMA["properties"]["env"]).iter_errors(env)
                for _path, _field, text in _explain_env(error)]
    if problems:
        raise InvalidPackage("; ".join(sorted(problems)), code="invalid_manifest")
    return dict(env)


def _explain_env(error: ValidationError) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    error.path.appendleft("env")
    return _explain(error)


def _installed_limits(limits: Any) -> dict[str, str]:
    """The manifest's container limits as LXD strings. A null or empty value counts as absent
    (the server's ``default_limits`` apply: a manifest never removes the fork-bomb guard); any
    other value must be one the schema accepts (LXD would refuse it at the first run)."""
    schema = SCHEMA["properties"]["limits"]
    if limits is None:
        return {}
    if not isinstance(limits, dict) or not set(limits) <= set(schema["properties"]):
        raise InvalidPackage("pirus.limits must be a mapping with cpu, memory, processes")
    kept = {key: value for key, value in limits.items()
            if value is not None and not (isinstance(value, str) and not value.strip())}
    problems = [text for error in _Validator(schema).iter_errors(kept)
                for _path, _field, text in _explain_limit(error)]
    if problems:
        raise InvalidPackage("; ".join(sorted(problems)), code="invalid_manifest")
    return {key: str(value) for key, value in kept.items()}


def _explain_limit(error: ValidationError) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    """A limits error in the words of the whole manifest's (``pirus.limits.cpu: ...``)."""
    error.path.appendleft("limits")
    return _explain(error)
