"""Build reproducible Pirus pipeline packages.

A pipeline package is an LXD *unified* image tarball: ``metadata.yaml`` (the usual LXD fields
plus a ``pirus:`` mapping describing the pipeline), ``rootfs/`` and optionally ``templates/``.
See ``docs/package-format.md``. The build assembles the rootfs over a base (:mod:`.bases`,
:mod:`.rootfs`), checks what the installer will read, and writes the tarball byte-identically
for identical inputs (:mod:`.tarwriter`), so that the LXD image fingerprint (the sha256 of the
tarball) identifies a pipeline build. Data is streamed from the source files (or from the base
rootfs tarball) straight into the output: a multi-gigabyte rootfs never sits in memory.
"""

from __future__ import annotations

import contextlib
import json
import platform
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .bases import open_base
from .manifest import BUILD_KEYS, DIRECTORY_DEFAULTS, built_manifest, run_program
from .oci import absolute_reference, is_oci_base, oci_problem
from .project import BASE_PROBLEM, project_files, read_project
from .rootfs import (
    BuildError,
    RootfsEntry,
    TarSource,
    add_file,
    add_parents,
    exists_as_file,
    fix_hardlinks,
    put,
    regular_file_path,
    resolve,
    rootfs_path,
)
from .tarwriter import build_epoch, compression_for, write_package

# BuildError is raised by every step of a build: importable from here, where it is used.
__all__ = ["BuildError", "build_package", "build_package_from_parts"]

NOTIFY_VARIABLE = b"PIRUS_NOTIFY_URL"
NOTIFY_SCAN_MAX = 4 * 1024**2


def _architecture() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)


def _check_form(entries: Mapping[str, RootfsEntry], form: str) -> None:
    entry = entries.get(resolve(entries, form.lstrip("/")))
    if entry is None or entry.kind != "file" or isinstance(entry.source, TarSource):
        return  # only forms we add ourselves are checked (base ones are not read again)
    raw = entry.source if isinstance(entry.source, bytes) else Path(entry.source or "").read_bytes()
    try:
        schema = json.loads(raw)
    except ValueError as exc:
        raise BuildError(f"{form}: not valid JSON ({exc})") from exc
    if not isinstance(schema, dict):
        raise BuildError(f"{form}: a form must be a JSON Schema object")
    # Checked as the server reads it: draft-03 normalised, placeholders filled.
    from ..errors import InvalidRequest
    from ..forms import normalize_form

    try:
        normalize_form(schema, ["input"], ["database"])
    except InvalidRequest as exc:
        raise BuildError(f"{form}: {exc.message}") from exc


def _deep_merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


RUN_REQUIRED = "pirus.run: required"


def _with_defaults(manifest: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's pirus block over what the base supplies; ``env`` is merged by name
    (pirus.yaml's values win), a job counts as a run."""
    block = dict(manifest.get("pirus", manifest))
    merged = {**defaults, **{k: v for k, v in block.items() if v is not None}}
    if block.get("job") is not None and block.get("run") is None:
        merged.pop("run", None)
    if isinstance(defaults.get("env"), Mapping) and isinstance(block.get("env"), Mapping):
        merged["env"] = {**defaults["env"], **block["env"]}
    return merged


def names_notify_url(run: str, sources: Iterable[bytes | Path]) -> bool:
    """Whether the run command or a file the build adds (host folders walked) names
    ``PIRUS_NOTIFY_URL``: only such pipelines get the notify proxy, which costs a second of
    every run's start. Files past ``NOTIFY_SCAN_MAX`` bytes (data, not scripts) are skipped."""
    if NOTIFY_VARIABLE.decode() in run:
        return True
    for source in sources:
        if isinstance(source, bytes):
            if NOTIFY_VARIABLE in source:
                return True
            continue
        paths = sorted(source.rglob("*")) if source.is_dir() else [source]
        for path in paths:
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size <= NOTIFY_SCAN_MAX and \
                        NOTIFY_VARIABLE in path.read_bytes():
                    return True
    return False


def build_package_from_parts(
    manifest: Mapping[str, Any],
    files: Mapping[str, bytes | Path],
    output: Path,
    *,
    base: str | Path = "busybox",
    extra_metadata: Mapping[str, Any] | None = None,
    compression: str | None = None,
    modes: Mapping[str, int] | None = None,
    packages: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build a package from a manifest and in-memory or on-disk files; returns ``output``.

    ``manifest`` is the ``pirus`` block (or a whole metadata.yaml mapping with one). Missing
    ``inputs``/``outputs``/``logs``/``databases`` get their defaults, ``pirus_api`` the current
    API version, and ``form``/``icon``/``run`` point at ``/pipeline/form.json``,
    ``/pipeline/icon.png`` and ``/pipeline/run.sh`` when ``files`` provides those.

    ``files`` maps absolute rootfs paths to bytes or host paths (a host folder is copied
    recursively). Files are 0644, except ``*.sh``, anything under ``/usr/local/bin`` and
    host files with the owner-execute bit, which are 0755; ``modes`` overrides per path.

    ``base`` is ``"busybox"`` (a minimal rootfs from the host's static busybox), a path to a
    rootfs tarball (``.tar``, ``.tar.gz``, ``.tar.xz``; a unified LXD image tarball works too)
    or ``"lxd:<alias>"`` (a local LXD image, exported with ``lxc image export``),
    ``"debian:<suite>"`` with ``packages`` (built by mmdebstrap, cached: :mod:`.debian`), or an
    OCI image (``oci-archive:PATH``, ``docker-archive:PATH``, ``oci:DIR[:TAG]``, absolute
    paths), whose config supplies ``run``, ``env`` and ``workdir`` when the manifest has none.
    ``extra_metadata`` is deep-merged into metadata.yaml last. Compression follows the output
    suffix unless ``compression`` (``gzip``, ``xz``, ``none``) is given. ``progress`` is told
    of the long steps (copying and flattening an image), one line each.

    Raises :class:`BuildError` for invalid inputs and ``ValueError`` for an unknown suffix.
    """
    output = Path(output)
    kind = compression_for(output, compression)
    epoch = build_epoch()
    normalised_files = {posixpath.normpath(k): v for k, v in files.items()}
    pirus, problems = built_manifest(manifest, normalised_files)
    if is_oci_base(str(base)):
        # The image may supply the run command: its absence is judged once the base is read.
        problems = [p for p in problems if p != RUN_REQUIRED]
    if problems:
        raise BuildError("invalid manifest: " + "; ".join(problems))
    output.parent.mkdir(parents=True, exist_ok=True)  # temporary base copies go there too
    with ExitStack() as stack:
        base_image = open_base(base, stack, output.parent.resolve(),
                               list(packages) if packages is not None else None, progress)
        if base_image.defaults:
            pirus, problems = built_manifest(
                _with_defaults(manifest, base_image.defaults), normalised_files)
            if RUN_REQUIRED in problems:
                raise BuildError("invalid manifest: pirus.run: required (the image has no "
                                 "Entrypoint or Cmd to run)")
            if problems:
                raise BuildError("invalid manifest: " + "; ".join(problems))
        if base_image.provenance:
            pirus["provenance"] = base_image.provenance
        if pirus.get("notify") is None:  # once the run is known (an OCI image may supply it)
            pirus["notify"] = names_notify_url(pirus.get("run") or "",
                                               normalised_files.values())
        entries = base_image.entries
        original = dict(entries)
        add_parents(entries)
        for key in DIRECTORY_DEFAULTS:
            put(entries, RootfsEntry.directory(resolve(entries, rootfs_path(pirus[key]))))
        for dest in sorted(normalised_files):
            source = normalised_files[dest]
            if not isinstance(source, (bytes, Path)):
                raise BuildError(f"files[{dest!r}]: must be bytes or a Path, "
                                 f"not {type(source).__name__}")
            add_file(entries, dest, source, (modes or {}).get(dest))
        fix_hardlinks(entries, original)

        shell = pirus.get("shell") or "/bin/sh"
        if not exists_as_file(entries, shell):
            raise BuildError(f"the rootfs has no {shell}: Pirus runs the pipeline with "
                             f"{shell} -c")
        for key in ("form", "icon"):
            if pirus.get(key):
                pirus[key] = regular_file_path(entries, pirus[key], f"pirus.{key}")
        if pirus.get("documents"):
            pirus["documents"] = [
                regular_file_path(entries, "/" + doc.lstrip("/"), "pirus.documents")
                for doc in pirus["documents"]
            ]
        if pirus.get("form"):
            _check_form(entries, pirus["form"])
        program = run_program(pirus["run"])
        if program and not exists_as_file(entries, program):
            raise BuildError(f"pirus.run: {program} is not a file in the rootfs")

        metadata: dict[str, Any] = {
            k: v for k, v in base_image.metadata.items()
            if k not in ("pirus", "creation_date", "expiry_date", "properties")
        }
        properties = dict(base_image.properties)
        properties.update({
            "architecture": _architecture(),
            "description": f"Pirus pipeline {pirus['name']} {pirus.get('version') or ''}".strip(),
            "name": str(pirus["name"]),
        })
        if pirus.get("version") is not None:
            properties["version"] = str(pirus["version"])
        metadata.update({
            "architecture": metadata.get("architecture") or _architecture(),
            "creation_date": epoch,
            "properties": properties,
            "pirus": pirus,
        })
        if extra_metadata:
            _deep_merge(metadata, extra_metadata)
        write_package(output, metadata, entries, base_image.templates, kind, epoch)
    return output


def build_package(source_dir: Path, output: Path, *, compression: str | None = None,
                  progress: Callable[[str], None] | None = None) -> Path:
    """Build the package described by ``source_dir/pirus.yaml``; returns ``output``.

    ``pirus.yaml`` holds the ``pirus`` fields plus build keys: ``base`` (``busybox``, a rootfs
    tarball path relative to ``source_dir``, ``lxd:<alias>``, ``debian:<suite>`` with
    ``packages``, or an OCI image: ``oci-archive:PATH``, ``docker-archive:PATH``,
    ``oci:DIR[:TAG]``), ``files`` (rootfs path ->
    source path relative to ``source_dir``, or ``{source: ..., mode: 0o755}``, or null to skip
    a default) and ``metadata`` (extra metadata.yaml fields). ``form.json``, ``icon.png`` and
    ``run.sh`` found in ``source_dir`` are copied to ``/pipeline/`` (or to the manifest's
    ``form``/``icon`` path) unless ``files`` already uses or suppresses them.
    """
    source_dir = Path(source_dir)
    spec = read_project(source_dir)
    mapped = project_files(source_dir, spec)
    if mapped.problems:
        raise BuildError(mapped.problems[0])
    base = spec.get("base", "busybox")
    if not isinstance(base, str) or not base:
        raise BuildError(BASE_PROBLEM)
    if is_oci_base(base):
        problem = oci_problem(base)
        if problem:
            raise BuildError(problem)
        base = absolute_reference(base, source_dir)
    elif base != "busybox" and not base.startswith(("lxd:", "debian:")):
        base = str((source_dir / base).resolve())
    extra = spec.get("metadata")
    if extra is not None and not isinstance(extra, Mapping):
        raise BuildError("metadata: must be a mapping of extra metadata.yaml fields")
    manifest = {k: v for k, v in spec.items() if k not in BUILD_KEYS}
    return build_package_from_parts(manifest, dict(mapped.files), output, base=base,
                                    extra_metadata=extra, compression=compression,
                                    modes=mapped.modes, packages=spec.get("packages"),
                                    progress=progress)
