"""The pipeline package format: read and validate an LXD image tarball's ``pirus`` manifest.

The rootfs is never extracted on the host: LXD imports the tarball itself. Pirus only reads
``metadata.yaml`` and the few small files the manifest names (form, icon, documents), and
refuses packages whose members could escape their folder or are not plain image content.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidPackage
from ..hashing import sha256_file
from .manifest import (
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    YAMLTooLarge,
    load_yaml,
    normalize_manifest,
)
from .rootfs import member_name

__all__ = ["MAX_DOCUMENT_SIZE", "PackageInfo", "inspect_package", "normalize_manifest"]

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
    normalised = member_name(name)
    if ".." in normalised.split("/"):
        raise InvalidPackage(f"path traversal in package: {name!r}", code="path_traversal")
    return normalised


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


def check_form(raw: bytes) -> None:
    """The form as runs will read it: JSON, and a schema ``normalize_form`` accepts (only
    references inside the form, ...). Refused at install rather than at every run."""
    from ..errors import InvalidRequest
    from ..forms import normalize_form

    try:
        form = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidPackage(f"form.json is not valid JSON: {e}", code="invalid_form") from e
    if form is not None and not isinstance(form, dict):
        raise InvalidPackage("form.json must be a JSON object (a JSON Schema)",
                             code="invalid_form")
    try:
        normalize_form(form)
    except InvalidRequest as e:
        raise InvalidPackage(e.message, code="invalid_form") from None


# LXD renders an image's templates into the container at creation or start with, among
# others, ``devices`` (every disk device's host ``source``: the run folder's host path) and
# ``config`` (``config_get``). Templates may use the instance's own facts (``instance``,
# ``container``, ``trigger``, ``path``, ``properties``), never these.
_TEMPLATE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_HOST_FACTS = re.compile(r"\b(devices|config|config_get)\b")


def check_templates(templates: dict[str, bytes]) -> None:
    """Refuse templates that would write the host's device sources or the instance's
    configuration into the container (the host paths behind its mounts)."""
    for name, body in sorted(templates.items()):
        text = body.decode("utf-8", errors="replace")
        for tag in _TEMPLATE_TAG.finditer(text):
            fact = _HOST_FACTS.search(tag.group())
            if fact:
                raise InvalidPackage(
                    f"template {name!r} uses {fact.group(1)!r}, which would show the host's "
                    "mount sources or the container's configuration inside the container: "
                    "templates may use instance, container, trigger, path and properties",
                    code="template_exposes_host")


def _refuse_member_under_symlink(name: str, symlinks: set[str]) -> None:
    """``rootfs/evil -> /dir`` then ``rootfs/evil/x``: extracting the second would write
    through the link (LXD refuses such an image only at import, with a murky error)."""
    parent = posixpath.dirname(name)
    while parent:
        if parent in symlinks:
            raise InvalidPackage(f"{name!r} is inside {parent!r}, which is a symlink: a "
                                 "package member must not lie under a symlink",
                                 code="link_escape")
        parent = posixpath.dirname(parent)


def inspect_package(path: Path, max_size: int, *, sha256: str | None = None) -> PackageInfo:
    """Read and validate a package without extracting it. Raises InvalidPackage.

    ``sha256`` is the file's digest when already known (an upload hashes what it receives):
    the file is then not read a second time just to hash it.
    """
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
        symlinks: set[str] = set()
        try:
            for member in tar:
                name = _clean_member_name(member.name)
                _refuse_member_under_symlink(name, symlinks)
                if member.issym():
                    symlinks.add(name)
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
            metadata = load_yaml(read(metadata_member, "metadata.yaml"))
        except YAMLTooLarge as e:
            raise InvalidPackage(f"metadata.yaml is refused: {e} (at most {MAX_YAML_NODES} "
                                 f"values, {MAX_YAML_DEPTH} levels deep)",
                                 code="invalid_manifest") from None
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
            check_form(info.form)
        if manifest.get("icon"):
            info.icon = rootfs_file(manifest["icon"], "icon")
        for doc in manifest["documents"]:
            info.documents[posixpath.basename(doc)] = rootfs_file(doc, "documents")
        check_templates({name: read(member, name) for name, member in regular.items()
                         if name.startswith("templates/")})
    info.fingerprint = sha256 or sha256_file(path)
    return info
