"""Checking a pipeline package or source folder offline, as ``jupyter pirus validate`` does:
every problem found, each with where it is, instead of stopping at the first."""

from __future__ import annotations

import json
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidPackage
from .bases import busybox_rootfs_entries
from .build import RUN_REQUIRED, build_package
from .debian import package_list_problem
from .inspect import inspect_package
from .manifest import (
    BUILD_KEYS,
    DIRECTORY_DEFAULTS,
    documents_standing_in,
    fill_default_files,
    load_yaml,
    run_program,
    validate_manifest,
)
from .oci import absolute_reference, image_path, is_oci_base, oci_problem
from .project import BASE_PROBLEM, ProjectError, project_files, read_project, yaml_error
from .rootfs import BuildError, member_name, resolve_symlinks

# Sample values for the form placeholders when a form is checked offline.
_SAMPLE_INPUTS = ["input.fastq"]
_SAMPLE_DATABASES = ["reference"]
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
    from ..errors import InvalidRequest
    from ..forms import apply_defaults, field_errors, normalize_form

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
    # Checked as the server checks a config: patterns with a deadline, no reference fetched.
    schema = normalize_form(form)
    config = apply_defaults(schema, {})
    try:
        errors = field_errors(schema, config)
    except InvalidRequest as e:
        return [Problem(where, e.message)]
    problems = []
    for error in errors:
        field = error["field"]
        if not field or error["message"] == f"{field.rsplit('.', 1)[-1]} is required":
            continue  # a required field without a default: the user fills it in
        loc = ".".join(part for p in field.split(".") for part in ("properties", p))
        problems.append(Problem(f"{where}: {loc}.default", "the default is refused by its "
                                                           f"own schema: {error['message']}"))
    return problems


# -- validating a package ---------------------------------------------------------------
class _Rootfs:
    """Lookups in the ``rootfs/`` members of an open package, following symlinks like the
    container would (absolute targets are resolved inside the rootfs)."""

    def __init__(self, tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> None:
        self.tar = tar
        self.members = members

    def resolve(self, path: str) -> tarfile.TarInfo | None:
        """The member at ``path``, every symlink followed (and a hardlink to its file)."""
        def link_of(rootfs_path: str) -> str | None:
            member = self.members.get(posixpath.join("rootfs", rootfs_path))
            return member.linkname if member is not None and member.issym() else None

        resolved = resolve_symlinks(link_of, path, follow_last=True)
        if resolved is None:
            return None
        member = self.members.get(posixpath.join("rootfs", resolved) if resolved else "rootfs")
        if member is not None and member.islnk():
            member = self.members.get(member_name(member.linkname))
        return member

    def regular(self, path: str) -> tarfile.TarInfo | None:
        """The member at exactly ``path`` if it is a regular file (how the server reads the
        form, icon and documents: links are not followed)."""
        member = self.members.get("rootfs/" + member_name(path))
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
    shell = block.get("shell") if isinstance(block.get("shell"), str) else "/bin/sh"
    sh = root.resolve(shell)
    if sh is None or not sh.isfile():
        problems.append(Problem("rootfs", f"{shell} is missing: Pirus runs the pipeline with "
                                          f"{shell} -c"))
    key = "run" if block.get("run") is not None else "job"
    program = run_program(block.get(key))
    if program is None:
        return problems
    program = posixpath.normpath(program)
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
    if not path.is_file():
        return [Problem(str(path), "no such file")]
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with block below
    except (tarfile.TarError, OSError, EOFError) as e:
        return [Problem("package", f"not a readable tar archive: {e}")]
    problems: list[Problem] = []
    with tar:
        try:
            members = {member_name(m.name): m for m in tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as e:
            return [Problem("package", f"corrupt archive: {e}")]
        root = _Rootfs(tar, members)
        block: Any = None
        metadata_member = members.get("metadata.yaml")
        if metadata_member is None or not metadata_member.isfile():
            problems.append(Problem("package", "no metadata.yaml at the top of the tarball"))
        else:
            try:
                metadata = load_yaml(root.read(metadata_member))
            except yaml.YAMLError as e:
                metadata = None
                problems.append(Problem("metadata.yaml", f"not valid YAML: {yaml_error(e)}"))
            if isinstance(metadata, dict):
                problems += [Problem("metadata.yaml", p) for p in validate_manifest(metadata)]
                block = metadata.get("pirus")
            elif metadata is not None:
                problems.append(Problem("metadata.yaml", "must be a mapping"))
        manifest_reported = bool(problems)
        try:
            inspect_package(path, max_size)
        except InvalidPackage as e:
            covered = {"missing_file", "invalid_form"} | (
                {"invalid_manifest", "missing_manifest"} if manifest_reported else set())
            if e.code not in covered:
                problems.append(Problem("package", f"{e.message} ({e.code})"))
        if isinstance(block, Mapping):
            problems += _named_files_problems(root, block)
            problems += _rootfs_problems(root, block, "metadata.yaml")
    return problems


# -- validating a source folder -----------------------------------------------------------
def _busybox_paths() -> set[str] | None:
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
    if not source_dir.is_dir():
        return [Problem(str(source_dir), "no such folder")]
    try:
        spec = read_project(source_dir)
    except ProjectError as e:
        return [Problem("pirus.yaml", e.problem)]
    mapped = project_files(source_dir, spec)
    files = mapped.files
    problems = [Problem("pirus.yaml", p) for p in mapped.problems]
    block = {k: v for k, v in spec.items() if k not in BUILD_KEYS}
    fill_default_files(block, files)
    base = spec.get("base", "busybox")
    oci = isinstance(base, str) and is_oci_base(base)
    found = validate_manifest(block)
    if oci:  # the image's entrypoint and cmd stand in for a missing run
        found = [p for p in found if p != RUN_REQUIRED]
    problems += [Problem("pirus.yaml", p) for p in found]

    base_paths: set[str] | None = None  # what the base provides, when it can be known here
    if not isinstance(base, str) or not base:
        problems.append(Problem("pirus.yaml", BASE_PROBLEM))
    elif base == "busybox":
        base_paths = _busybox_paths()
        if base_paths is None:
            problems.append(Problem("pirus.yaml", "base: busybox needs a static /bin/busybox on "
                                                  "this machine (apt-get install busybox-static)"))
    elif base.startswith("debian:"):
        problem = package_list_problem(spec.get("packages"))
        if problem:
            problems.append(Problem("pirus.yaml", problem))
    elif oci:
        problem = oci_problem(base)
        if problem is None and not image_path(absolute_reference(base, source_dir)).exists():
            problem = f"base: {base} not found"
        if problem:
            problems.append(Problem("pirus.yaml", problem))
    elif not base.startswith("lxd:") and not (source_dir / base).is_file():
        problems.append(Problem("pirus.yaml", f"base: {base} not found"))
    if spec.get("packages") and not (isinstance(base, str) and base.startswith("debian:")):
        problems.append(Problem("pirus.yaml", "packages: only a debian:<suite> base installs "
                                              "packages"))
    if base_paths is not None:
        base_paths |= set(DIRECTORY_DEFAULTS.values())

    def provided(dest: str) -> bool | None:
        if _source_file(files, dest) is not None:
            return True
        return None if base_paths is None else posixpath.normpath(dest) in base_paths

    key = "run" if block.get("run") is not None else "job"
    program = run_program(block.get(key))
    if program is not None:
        program = posixpath.normpath(program)
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
            build_package(source_dir, package, progress=progress)
        except (BuildError, ValueError, OSError) as e:
            return [Problem("build", str(e))]
        with tarfile.open(package, "r:") as tar:
            members = {member_name(m.name): m for m in tar.getmembers()}
            root = _Rootfs(tar, members)
            metadata = yaml.safe_load(root.read(members["metadata.yaml"]))
            problems += _rootfs_problems(root, metadata["pirus"], "pirus.yaml")
    return problems


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


