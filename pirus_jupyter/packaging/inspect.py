"""The pipeline package format: read and validate an LXD image tarball's ``pirus`` manifest.

The rootfs is never extracted on the host: LXD imports the tarball itself. Pirus only reads
``metadata.yaml`` and the few small files the manifest names (form, icon, documents), and
refuses packages whose members could escape their folder or are not plain image content.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidPackage
from ..hashing import sha256_file

MANIFEST_DEFAULTS = {
    "inputs": "/pipeline/inputs",
    "outputs": "/pipeline/outputs",
    "logs": "/pipeline/logs",
    "databases": "/pipeline/databases",
}
# Small files read out of the package (form, icon, documents); larger ones are refused.
MAX_DOCUMENT_SIZE = 4 * 1024 * 1024


@dataclass
class PackageInfo:
    manifest: dict[str, Any]
    fingerprint: str  # sha256 of the tarball: LXD's fingerprint of a unified image
    size: int
    form: bytes | None = None
    icon: bytes | None = None
    documents: dict[str, bytes] = field(default_factory=dict)


def _clean_member_name(name: str) -> str:
    if name.startswith("/") or "\x00" in name:
        raise InvalidPackage(f"absolute path in package: {name!r}", code="path_traversal")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPackage(f"path traversal in package: {name!r}", code="path_traversal")
    return "/".join(parts)


def _check_link_target(member: tarfile.TarInfo, name: str) -> None:
    target = member.linkname
    if member.islnk():
        # Hard links name another member: it must stay inside the package.
        _clean_member_name(target)
        return
    if target.startswith("/"):
        return  # absolute symlinks are resolved inside the container's root
    base = posixpath.dirname(name)
    top = name.split("/", 1)[0]
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or (
        top in ("rootfs", "templates") and not (resolved == top or resolved.startswith(top + "/"))
    ):
        raise InvalidPackage(
            f"symlink {name!r} -> {target!r} escapes its folder", code="link_escape"
        )


def _manifest_path(manifest: dict[str, Any], key: str) -> str:
    value = manifest.get(key)
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidPackage(f"pirus.{key} must be an absolute path inside the container")
    if ".." in value.split("/"):
        raise InvalidPackage(f"pirus.{key} must not contain '..'", code="invalid_manifest")
    return posixpath.normpath(value)


def normalize_manifest(metadata: Any) -> dict[str, Any]:
    """Validate ``metadata.yaml``'s ``pirus`` block and fill the defaults."""
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
    for key, default in MANIFEST_DEFAULTS.items():
        manifest.setdefault(key, default)
        manifest[key] = _manifest_path(manifest, key)
    for key in ("form", "icon"):
        if manifest.get(key) is not None:
            manifest[key] = _manifest_path(manifest, key)
    for key in ("version", "description", "license", "pirus_api"):
        if manifest.get(key) is not None:
            manifest[key] = str(manifest[key])
    developers = manifest.get("developers") or []
    if isinstance(developers, str):
        developers = [developers]
    if not isinstance(developers, list):
        raise InvalidPackage("pirus.developers must be a list of names")
    manifest["developers"] = [str(d) for d in developers]
    limits = manifest.get("limits") or {}
    if not isinstance(limits, dict) or not set(limits) <= {"cpu", "memory", "processes"}:
        raise InvalidPackage("pirus.limits must be a mapping with cpu, memory, processes")
    manifest["limits"] = {k: str(v) for k, v in limits.items()}
    documents = manifest.get("documents") or []
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise InvalidPackage("pirus.documents must be a list of paths")
    manifest["documents"] = [_manifest_path({"d": d if d.startswith("/") else "/" + d}, "d")
                             for d in documents]
    for key, doc in documents_standing_in(manifest["documents"]).items():
        if manifest.get(key) is None:
            manifest[key] = doc
    return manifest


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


def inspect_package(path: Path, max_size: int) -> PackageInfo:
    """Read and validate a package without extracting it. Raises InvalidPackage."""
    size = path.stat().st_size
    if size > max_size:
        raise InvalidPackage(f"package is {size} bytes, over the {max_size} byte limit",
                             code="package_too_large")
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the `with tar` below
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InvalidPackage(f"not a readable tar archive: {e}", code="bad_archive") from e
    with tar:
        metadata_member: tarfile.TarInfo | None = None
        regular: dict[str, tarfile.TarInfo] = {}
        total = 0
        has_rootfs = False
        try:
            for member in tar:
                name = _clean_member_name(member.name)
                if member.ischr() or member.isblk() or member.isfifo():
                    raise InvalidPackage(f"device or fifo in package: {member.name!r}",
                                         code="device_node")
                if member.issym() or member.islnk():
                    _check_link_target(member, name)
                total += member.size
                if total > max_size:
                    raise InvalidPackage(
                        f"package content is over the {max_size} byte limit",
                        code="package_too_large")
                if name == "metadata.yaml":
                    metadata_member = member
                elif name == "rootfs" or name.startswith("rootfs/"):
                    has_rootfs = True
                if member.isfile():
                    regular[name] = member
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            raise InvalidPackage(f"corrupt archive: {e}", code="bad_archive") from e
        if metadata_member is None or not metadata_member.isfile():
            raise InvalidPackage("package has no metadata.yaml", code="missing_manifest")
        if not has_rootfs:
            raise InvalidPackage("package has no rootfs/ folder (not a unified LXD image)",
                                 code="missing_rootfs")

        def read(member: tarfile.TarInfo, what: str) -> bytes:
            if member.size > MAX_DOCUMENT_SIZE:
                raise InvalidPackage(f"{what} is larger than {MAX_DOCUMENT_SIZE} bytes")
            handle = tar.extractfile(member)
            assert handle is not None
            return handle.read()

        try:
            metadata = yaml.safe_load(read(metadata_member, "metadata.yaml"))
        except yaml.YAMLError as e:
            raise InvalidPackage(f"metadata.yaml is not valid YAML: {e}",
                                 code="invalid_manifest") from e
        manifest = normalize_manifest(metadata)

        def rootfs_file(container_path: str, what: str) -> bytes:
            member = regular.get("rootfs" + container_path)
            if member is None:
                raise InvalidPackage(
                    f"pirus.{what} names {container_path}, which is not a regular file in rootfs/",
                    code="missing_file")
            return read(member, what)

        info = PackageInfo(manifest=manifest, fingerprint="", size=size)
        if manifest.get("form"):
            info.form = rootfs_file(manifest["form"], "form")
        if manifest.get("icon"):
            info.icon = rootfs_file(manifest["icon"], "icon")
        for doc in manifest["documents"]:
            info.documents[posixpath.basename(doc)] = rootfs_file(doc, "documents")
    info.fingerprint = sha256_file(path)
    return info
