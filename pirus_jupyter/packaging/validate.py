"""Checking a pipeline package or source folder offline, as ``jupyter pirus validate`` does:
every problem found, each with where it is, instead of stopping at the first."""

from __future__ import annotations

import json
import posixpath
import shlex
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Sample values for the form placeholders when a form is checked offline.
_SAMPLE_INPUTS = ["input.fastq"]
_SAMPLE_DATABASES = ["reference"]
# Build-only keys of pirus.yaml (see pirus_jupyter.builder.build_package).
_BUILD_KEYS = ("base", "files", "metadata")
# Files picked up next to pirus.yaml: name -> (pirus field, default rootfs path).
_DEFAULT_FILES = {
    "form.json": ("form", "/pipeline/form.json"),
    "icon.png": ("icon", "/pipeline/icon.png"),
    "run.sh": ("run", "/pipeline/run.sh"),
}
_ICON_TYPES = {".png": "PNG", ".svg": "SVG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_SCRIPT_HEAD = 4096



@dataclass(frozen=True)
class Problem:
    """One problem found by ``validate``: where it is (a file, a field) and what it is."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"



# -- form and icon checks (shared by folders and packages) ------------------------------
def icon_type(data: bytes) -> str | None:
    """``PNG``, ``JPEG`` or ``SVG`` from the content's magic bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    head = data[:4096].removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!--", b"<!DOCTYPE svg")) and b"<svg" in head
    ):
        return "SVG"
    return None


def icon_problems(where: str, data: bytes, name: str) -> list[Problem]:
    """A bad icon: not PNG/SVG/JPEG content, or a name whose suffix announces another type
    (the server serves the icon with the type of its suffix)."""
    kind = icon_type(data)
    if kind is None:
        return [Problem(where, "not a PNG, SVG or JPEG image (checked by its first bytes)")]
    suffix = posixpath.splitext(name)[1].lower() or ".png"
    expected = _ICON_TYPES.get(suffix)
    if expected is None:
        return [Problem(where, f"unsupported icon name suffix {suffix!r}: use .png, .svg or .jpg")]
    if expected != kind:
        return [Problem(where, f"the content is {kind} but the name ends in {suffix} "
                               f"(it would be served as {expected})")]
    return []


def _schema_error(form: dict[str, Any]) -> tuple[str, str] | None:
    """(location inside the form, message) of the first error of the normalised draft-07
    form, as the server computes it; None if the form is valid."""
    from ..errors import InvalidRequest
    from ..forms import normalize_form

    try:
        normalize_form(form, _SAMPLE_INPUTS, _SAMPLE_DATABASES)
    except InvalidRequest as e:
        cause = e.__cause__
        path = [str(p) for p in getattr(cause, "absolute_path", None) or []]
        return ".".join(path) or "(top level)", str(getattr(cause, "message", e.message))
    return None


def form_problems(where: str, raw: bytes) -> list[Problem]:
    """Problems of a form.json: JSON syntax, JSON Schema errors of the draft-07 form the
    server derives from it (``pirus_jupyter.forms.normalize_form``; each property is checked
    on its own so that every broken property is listed) and defaults its own schema refuses."""
    from jsonschema import Draft7Validator

    from ..forms import apply_defaults, normalize_form

    try:
        form = json.loads(raw)
    except ValueError as e:
        return [Problem(where, f"not valid JSON: {e}")]
    if not isinstance(form, dict):
        return [Problem(where, "a form must be a JSON object (a JSON Schema)")]
    found: list[tuple[str, str]] = []
    props = form.get("properties")
    if isinstance(props, dict):
        for name, prop in props.items():
            error = _schema_error({"type": "object", "properties": {name: prop}})
            if error:
                found.append(error)
        rest = {k: v for k, v in form.items() if k != "properties"}
        error = _schema_error(rest)
        if error:
            found.append(error)
    if not found:
        error = _schema_error(form)
        if error:
            found.append(error)
    if found:
        return [Problem(f"{where}: {loc}", f"invalid JSON Schema: {msg}") for loc, msg in found]
    # A default its own field refuses breaks every run that leaves the field empty. Choices
    # filled from placeholders depend on the server: left free here (no inputs, no databases).
    schema = normalize_form(form)
    config = apply_defaults(schema, {})
    problems = []
    for error in Draft7Validator(schema).iter_errors(config):
        if error.validator == "required" or not error.absolute_path:
            continue
        loc = ".".join(part for p in error.absolute_path for part in ("properties", str(p)))
        problems.append(Problem(f"{where}: {loc}.default", "the default is refused by its "
                                                           f"own schema: {error.message}"))
    return problems


# -- validating a package ---------------------------------------------------------------
def _norm(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _run_program(run: Any) -> str | None:
    """The absolute program path of a simple run command (``/pipeline/run.sh --x``)."""
    if isinstance(run, list):
        run = " ".join(str(a) for a in run)
    if not isinstance(run, str):
        return None
    try:
        words = shlex.split(run)
    except ValueError:
        return None
    if not words or not words[0].startswith("/"):
        return None
    if any(c in words[0] for c in ";&|<>()$`*?[]{}"):
        return None
    return posixpath.normpath(words[0])


class _Rootfs:
    """Lookups in the ``rootfs/`` members of an open package, following symlinks like the
    container would (absolute targets are resolved inside the rootfs)."""

    def __init__(self, tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> None:
        self.tar = tar
        self.members = members

    def resolve(self, path: str) -> tarfile.TarInfo | None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            member = self.members.get("/".join(["rootfs", *resolved, part]))
            if member is not None and member.issym():
                hops += 1
                if hops > 40:
                    return None
                target = member.linkname
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            resolved.append(part)
        member = self.members.get("/".join(["rootfs", *resolved]))
        if member is not None and member.islnk():
            member = self.members.get(_norm(member.linkname))
        return member

    def regular(self, path: str) -> tarfile.TarInfo | None:
        """The member at exactly ``path`` if it is a regular file (how the server reads the
        form, icon and documents: links are not followed)."""
        member = self.members.get("rootfs/" + _norm(path))
        return member if member is not None and member.isfile() else None

    def read(self, member: tarfile.TarInfo, limit: int | None = None) -> bytes:
        handle = self.tar.extractfile(member)
        if handle is None:
            return b""
        with handle:
            return handle.read(limit) if limit is not None else handle.read()


def _rootfs_problems(root: _Rootfs, block: Mapping[str, Any], where: str) -> list[Problem]:
    """The run command's program (present, executable, its #! interpreter present) and
    /bin/sh, which Pirus starts the command with."""
    problems = []
    sh = root.resolve("/bin/sh")
    if sh is None or not sh.isfile():
        problems.append(Problem("rootfs", "/bin/sh is missing: Pirus runs the pipeline with "
                                          "/bin/sh -c"))
    key = "run" if block.get("run") is not None else "job"
    program = _run_program(block.get(key))
    if program is None:
        return problems
    member = root.resolve(program)
    if member is None or not member.isfile():
        problems.append(Problem(where, f"pirus.{key}: the run script {program} is missing "
                                       "from the package's rootfs"))
        return problems
    if not member.mode & 0o111:
        problems.append(Problem(f"rootfs{program}", "the run script is not executable "
                                                    f"(mode {member.mode & 0o7777:o})"))
    head = root.read(member, _SCRIPT_HEAD)
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
        interpreter = line.split()[0] if line.split() else ""
        found = root.resolve(interpreter) if interpreter.startswith("/") else None
        if found is None or not found.isfile():
            problems.append(Problem(f"rootfs{program}", f"its interpreter #!{line} is not in "
                                                        "the package's rootfs"))
    return problems


def _named_files_problems(root: _Rootfs, block: Mapping[str, Any]) -> list[Problem]:
    """form, icon and documents: present as regular files, valid form, real image."""
    from .inspect import documents_standing_in

    problems: list[Problem] = []
    for key in ("form", "icon"):
        path = block.get(key)
        if not isinstance(path, str) or not path.startswith("/"):
            continue  # validate_manifest reports it
        member = root.regular(path)
        if member is None:
            problems.append(Problem("metadata.yaml", f"pirus.{key}: {path} is not a regular "
                                                     "file in rootfs/"))
            continue
        data = root.read(member)
        where = "rootfs" + posixpath.normpath(path)
        problems += (form_problems(where, data) if key == "form"
                     else icon_problems(where, data, path))
    documents = block.get("documents")
    if isinstance(documents, list):
        paths = ["/" + doc.lstrip("/") for doc in documents if isinstance(doc, str)]
        standing_in = documents_standing_in(paths)
        for doc, path in zip([d for d in documents if isinstance(d, str)], paths, strict=True):
            member = root.regular(path)
            if member is None:
                problems.append(Problem("metadata.yaml", f"pirus.documents: {doc} is not a "
                                                         "regular file in rootfs/"))
                continue
            where = "rootfs" + posixpath.normpath(path)
            # Original (V2) Pirus packages ship their form and icon as documents.
            if block.get("form") is None and standing_in.get("form") == path:
                problems += form_problems(where, root.read(member))
            elif block.get("icon") is None and standing_in.get("icon") == path:
                problems += icon_problems(where, root.read(member), posixpath.basename(path))
    return problems


def validate_package(path: Path, *, max_size: int = 32 * 1024**3) -> list[Problem]:
    """Every problem of a package file: the server's own checks
    (:func:`pirus_jupyter.packaging.inspect.inspect_package`) plus each manifest field, the
    form, the icon, the documents and the run script."""
    from ..errors import InvalidPackage
    from .build import validate_manifest
    from .inspect import inspect_package

    if not path.is_file():
        return [Problem(str(path), "no such file")]
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with block below
    except (tarfile.TarError, OSError, EOFError) as e:
        return [Problem("package", f"not a readable tar archive: {e}")]
    problems: list[Problem] = []
    with tar:
        try:
            members = {_norm(m.name): m for m in tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as e:
            return [Problem("package", f"corrupt archive: {e}")]
        root = _Rootfs(tar, members)
        block: Any = None
        metadata_member = members.get("metadata.yaml")
        if metadata_member is None or not metadata_member.isfile():
            problems.append(Problem("package", "no metadata.yaml at the top of the tarball"))
        else:
            try:
                metadata = yaml.safe_load(root.read(metadata_member))
            except yaml.YAMLError as e:
                metadata = None
                problems.append(Problem("metadata.yaml", f"not valid YAML: {_yaml_error(e)}"))
            if isinstance(metadata, dict):
                problems += [Problem("metadata.yaml", p) for p in validate_manifest(metadata)]
                block = metadata.get("pirus")
            elif metadata is not None:
                problems.append(Problem("metadata.yaml", "must be a mapping"))
        manifest_reported = bool(problems)
        try:
            inspect_package(path, max_size)
        except InvalidPackage as e:
            covered = {"missing_file"} | (
                {"invalid_manifest", "missing_manifest"} if manifest_reported else set())
            if e.code not in covered:
                problems.append(Problem("package", f"{e.message} ({e.code})"))
        if isinstance(block, Mapping):
            problems += _named_files_problems(root, block)
            problems += _rootfs_problems(root, block, "metadata.yaml")
    return problems


# -- validating a source folder -----------------------------------------------------------
def _folder_files(source_dir: Path, spec: Mapping[str, Any]
                  ) -> tuple[dict[str, Path], dict[str, int], list[Problem]]:
    """The rootfs path -> source file mapping ``build_package`` would use, the explicit
    modes, and the problems of the ``files`` entries."""
    problems: list[Problem] = []
    files: dict[str, Path] = {}
    modes: dict[str, int] = {}
    used: set[Path] = set()
    suppressed: set[str] = set()
    raw = spec.get("files") or {}
    if not isinstance(raw, Mapping):
        return files, modes, [Problem("pirus.yaml", "files: must be a mapping of rootfs path "
                                                    "-> source path")]
    for dest, value in raw.items():
        if not isinstance(dest, str) or not dest.startswith("/"):
            problems.append(Problem("pirus.yaml", f"files: key {dest!r} must be an absolute "
                                                  "rootfs path"))
            continue
        dest = posixpath.normpath(dest)
        if value is None:
            suppressed.add(dest)
            continue
        src = value.get("source") if isinstance(value, Mapping) else value
        if isinstance(value, Mapping) and value.get("mode") is not None:
            mode = value["mode"]
            if isinstance(mode, bool) or not isinstance(mode, int):
                problems.append(Problem("pirus.yaml", f"files[{dest}].mode: must be an "
                                                      "integer like 0o755"))
            else:
                modes[dest] = mode
        if not isinstance(src, str):
            problems.append(Problem("pirus.yaml", f"files[{dest}]: the source must be a path "
                                                  "relative to pirus.yaml"))
            continue
        path = source_dir / src
        if not path.exists():
            problems.append(Problem("pirus.yaml", f"files[{dest}]: {src} not found"))
            continue
        files[dest] = path
        used.add(path.resolve())
    for name, (field, default_dest) in _DEFAULT_FILES.items():
        path = source_dir / name
        if not path.is_file() or path.resolve() in used:
            continue
        dest = default_dest
        if field in ("form", "icon") and isinstance(spec.get(field), str):
            dest = posixpath.normpath(spec[field])
        if dest not in files and dest not in suppressed:
            files[dest] = path
    return files, modes, problems


def _busybox_paths() -> set[str] | None:
    from .build import BuildError, busybox_rootfs_entries

    try:
        return {"/" + e.path for e in busybox_rootfs_entries()}
    except (BuildError, OSError):
        return None


def _source_file(files: Mapping[str, Path], dest: str) -> Path | None:
    """The source of rootfs path ``dest``, also when it lies in a mapped folder."""
    dest = posixpath.normpath(dest)
    if dest in files:
        return files[dest]
    for prefix, source in files.items():
        if source.is_dir() and dest.startswith(prefix.rstrip("/") + "/"):
            candidate = source / dest[len(prefix.rstrip("/")) + 1:]
            if candidate.is_file():
                return candidate
    return None


def validate_folder(source_dir: Path, *, build: bool = True,
                    progress: Callable[[str], None] | None = None) -> list[Problem]:
    """Every problem of a pipeline source folder (``pirus.yaml`` + files): manifest fields,
    ``files`` entries, form, icon, documents and run script; then, if nothing was found and
    ``build`` is true, a trial build whose package is checked like an installed one
    (run script executable, its interpreter present, /bin/sh)."""
    from .build import DIRECTORY_DEFAULTS, BuildError, build_package, validate_manifest

    manifest_path = source_dir / "pirus.yaml"
    if not source_dir.is_dir():
        return [Problem(str(source_dir), "no such folder")]
    try:
        spec = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [Problem("pirus.yaml", f"not found in {source_dir}")]
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return [Problem("pirus.yaml", f"not valid YAML: {_yaml_error(e)}")]
    if not isinstance(spec, dict):
        return [Problem("pirus.yaml", "must be a mapping of pirus fields")]
    files, _modes, problems = _folder_files(source_dir, spec)
    block = {k: v for k, v in spec.items() if k not in _BUILD_KEYS}
    for field, default_dest in (("form", "/pipeline/form.json"), ("icon", "/pipeline/icon.png"),
                                ("run", "/pipeline/run.sh")):
        if block.get(field) is None and not (field == "run" and block.get("job") is not None) \
                and default_dest in files:
            block[field] = default_dest
    problems += [Problem("pirus.yaml", p) for p in validate_manifest(block)]

    base = spec.get("base", "busybox")
    base_paths: set[str] | None = None  # what the base provides, when it can be known here
    if not isinstance(base, str) or not base:
        problems.append(Problem("pirus.yaml", "base: must be busybox, lxd:<alias> or a rootfs "
                                              "tarball path"))
    elif base == "busybox":
        base_paths = _busybox_paths()
        if base_paths is None:
            problems.append(Problem("pirus.yaml", "base: busybox needs a static /bin/busybox on "
                                                  "this machine (apt-get install busybox-static)"))
    elif not base.startswith("lxd:") and not (source_dir / base).is_file():
        problems.append(Problem("pirus.yaml", f"base: {base} not found"))
    if base_paths is not None:
        base_paths |= set(DIRECTORY_DEFAULTS.values())

    def provided(dest: str) -> bool | None:
        if _source_file(files, dest) is not None:
            return True
        return None if base_paths is None else posixpath.normpath(dest) in base_paths

    key = "run" if block.get("run") is not None else "job"
    program = _run_program(block.get(key))
    if program is not None and provided(program) is False:
        hint = ("add run.sh next to pirus.yaml or map it in files" if program ==
                "/pipeline/run.sh" else "map it in files")
        problems.append(Problem("pirus.yaml", f"pirus.{key}: the run script {program} is "
                                              f"missing ({hint})"))
    for field in ("form", "icon"):
        dest = block.get(field)
        if not isinstance(dest, str) or not dest.startswith("/"):
            continue
        source = _source_file(files, dest)
        if source is None:
            if provided(dest) is False:
                problems.append(Problem("pirus.yaml", f"pirus.{field}: {dest} is not in the "
                                                      "package (no source file maps to it)"))
            continue
        where = _relative(source, source_dir)
        data = source.read_bytes()
        problems += (form_problems(where, data) if field == "form"
                     else icon_problems(where, data, dest))
    documents = block.get("documents")
    if isinstance(documents, list):
        for doc in documents:
            if isinstance(doc, str) and provided("/" + doc.lstrip("/")) is False:
                problems.append(Problem("pirus.yaml", f"pirus.documents: {doc} is not in the "
                                                      "package (no source file maps to it)"))
    if problems or not build:
        return problems

    if progress:
        progress(f"Trial build of {source_dir} ...")
    with tempfile.TemporaryDirectory(prefix="pirus-validate-") as tmp:
        package = Path(tmp) / "package.tar"
        try:
            build_package(source_dir, package)
        except (BuildError, ValueError, OSError) as e:
            return [Problem("build", str(e))]
        with tarfile.open(package, "r:") as tar:
            members = {_norm(m.name): m for m in tar.getmembers()}
            root = _Rootfs(tar, members)
            metadata = yaml.safe_load(root.read(members["metadata.yaml"]))
            problems += _rootfs_problems(root, metadata["pirus"], "pirus.yaml")
    return problems


def _yaml_error(error: Exception) -> str:
    """A YAML (or decoding) error on one line, with its position when known."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(error).split())


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


