"""A pipeline source folder: ``pirus.yaml`` (the ``pirus`` fields plus the build keys ``base``,
``packages``, ``files`` and ``metadata``) and the files it maps into the rootfs. Read the same
way by the build and by the offline checks."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .manifest import DEFAULT_FILES
from .rootfs import BuildError

BASE_PROBLEM = ("base: must be busybox, lxd:<alias>, debian:<suite>, oci-archive:PATH, "
                "docker-archive:PATH, oci:DIR[:TAG] or a rootfs tarball path")


class ProjectError(BuildError):
    """pirus.yaml cannot be read. ``str()`` is the build's message; ``problem`` says the same
    for ``jupyter pirus validate``, which names the file itself."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


def read_project(source_dir: Path) -> dict[str, Any]:
    """The mapping in ``source_dir/pirus.yaml``; raises :class:`ProjectError`."""
    manifest_path = source_dir / "pirus.yaml"
    try:
        spec = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{manifest_path}: not found", f"not found in {source_dir}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{manifest_path}: invalid YAML ({exc})",
                           f"not valid YAML: {yaml_error(exc)}") from exc
    if not isinstance(spec, dict):
        raise ProjectError(f"{manifest_path}: must be a mapping",
                           "must be a mapping of pirus fields")
    return spec


def yaml_error(error: Exception) -> str:
    """A YAML (or decoding) error on one line, with its position when known."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(error).split())


@dataclass
class ProjectFiles:
    """What pirus.yaml puts in the rootfs: rootfs path -> host source, explicit modes, and
    the problems of its ``files`` entries (each as ``jupyter pirus validate`` words it)."""

    files: dict[str, Path] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def project_files(source_dir: Path, spec: Mapping[str, Any]) -> ProjectFiles:
    """The ``files`` entries of pirus.yaml, plus ``form.json``, ``icon.png`` and ``run.sh``
    found next to it (copied to the manifest's ``form``/``icon`` path or ``/pipeline/``)
    unless ``files`` already uses or suppresses them (maps their destination to null)."""
    found = ProjectFiles()
    used: set[Path] = set()
    suppressed: set[str] = set()
    raw = spec.get("files") or {}
    if not isinstance(raw, Mapping):
        found.problems.append("files: must be a mapping of rootfs path -> source path")
        return found
    for dest, value in raw.items():
        if not isinstance(dest, str) or not dest.startswith("/"):
            found.problems.append(f"files: key {dest!r} must be an absolute rootfs path")
            continue
        dest = posixpath.normpath(dest)
        if value is None:
            suppressed.add(dest)
            continue
        src = value.get("source") if isinstance(value, Mapping) else value
        mode = value.get("mode") if isinstance(value, Mapping) else None
        if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int)):
            found.problems.append(f"files[{dest}].mode: must be an integer like 0o755")
        elif mode is not None:
            found.modes[dest] = mode
        if not isinstance(src, str):
            found.problems.append(f"files[{dest}]: the source must be a path relative to "
                                  "pirus.yaml")
            continue
        path = source_dir / src
        if not path.exists():
            found.problems.append(f"files[{dest}]: {src} not found")
            continue
        found.files[dest] = path
        used.add(path.resolve())
    for name, (field_name, default_dest) in DEFAULT_FILES.items():
        path = source_dir / name
        if not path.is_file() or path.resolve() in used:
            continue
        dest = default_dest
        if field_name in ("form", "icon") and isinstance(spec.get(field_name), str):
            dest = posixpath.normpath(spec[field_name])
        if dest not in found.files and dest not in suppressed:
            found.files[dest] = path
    return found
