"""A rootfs being assembled: its entries (folders, files, links), the one symlink resolver
(shared with the offline package checks), and the rules for adding files over a base."""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .manifest import is_container_path

# Like Linux: more hops than this and a path is a symlink loop.
MAX_SYMLINK_HOPS = 40


class BuildError(Exception):
    """The package cannot be built from these inputs (bad manifest, missing file, bad base)."""


@dataclass(frozen=True, eq=False)
class TarSource:
    """Contents of a member of an already opened base tarball (read lazily, streamed)."""

    tar: tarfile.TarFile
    member: tarfile.TarInfo


EntryKind = Literal["dir", "file", "symlink", "hardlink"]


@dataclass(frozen=True, eq=False)
class RootfsEntry:
    """One member of a rootfs, ``path`` relative to the rootfs root (no leading slash).

    ``source`` is the content of a ``file``: bytes, a host file streamed at write time, or a
    member of a base tarball. ``linkname`` is the symlink target, or for a ``hardlink`` the
    rootfs path of the file it links to.
    """

    path: str
    kind: EntryKind
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    source: bytes | Path | TarSource | None = None
    size: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def directory(cls, path: str, mode: int = 0o755) -> RootfsEntry:
        """A folder owned by root."""
        return cls(path, "dir", mode)

    @classmethod
    def file(cls, path: str, source: bytes | Path, mode: int = 0o644) -> RootfsEntry:
        """A regular file owned by root; a ``Path`` is only read when the package is written."""
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        return cls(path, "file", mode, source=source, size=size)

    @classmethod
    def symlink(cls, path: str, target: str) -> RootfsEntry:
        """A symbolic link to ``target`` (resolved inside the container)."""
        return cls(path, "symlink", 0o777, linkname=target)


def member_name(name: str) -> str:
    """A tar member or rootfs path without empty and ``.`` segments (``./a//b`` -> ``a/b``)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def resolve_symlinks(link_of: Callable[[str], str | None], path: str, *,
                     follow_last: bool) -> str | None:
    """``path`` (in the rootfs, leading slash optional) with its symlinks followed as the
    container would: absolute targets are resolved inside the rootfs and ``..`` stops at its
    root. ``link_of(p)`` is the target of the symlink at rootfs path ``p``, None if ``p`` is
    not one. The last segment is followed only with ``follow_last``. None for a loop.
    """
    parts = member_name(path).split("/") if member_name(path) else []
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = link_of("/".join([*resolved, part])) if parts or follow_last else None
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            return None
        if target.startswith("/"):
            resolved = []
        parts = member_name(target).split("/") + parts if member_name(target) else parts
    return "/".join(resolved)


def _entry_link(entries: Mapping[str, RootfsEntry]) -> Callable[[str], str | None]:
    def link_of(path: str) -> str | None:
        entry = entries.get(path)
        return entry.linkname if entry is not None and entry.kind == "symlink" else None
    return link_of


def resolve(entries: Mapping[str, RootfsEntry], path: str) -> str:
    """``path`` with symlinked parent folders followed inside the rootfs.

    A base like Debian has ``/bin -> usr/bin``: adding ``/bin/tool`` must write
    ``usr/bin/tool``, not a ``bin/`` folder clashing with the symlink.
    """
    resolved = resolve_symlinks(_entry_link(entries), path, follow_last=False)
    if resolved is None:
        raise BuildError(f"too many levels of symbolic links resolving /{path}")
    return resolved


def exists_as_file(entries: Mapping[str, RootfsEntry], path: str) -> bool:
    """Whether ``path``, every symlink followed, is a file (or a hardlink to one)."""
    resolved = resolve_symlinks(_entry_link(entries), path, follow_last=True)
    entry = entries.get(resolved) if resolved is not None else None
    return entry is not None and entry.kind in ("file", "hardlink")


def contain_symlink(path: str, target: str) -> str:
    """A relative symlink target that climbs above the rootfs root, made absolute.

    Inside the container ``..`` stops at ``/``, so ``/usr/lib/x -> ../../../../lib/x`` means
    ``/lib/x``; written as is, the link would look like it escapes ``rootfs/`` in the package
    and Pirus refuses such packages. Making it absolute keeps the meaning.
    """
    if target.startswith("/"):
        return target
    depth = 0
    for part in [*posixpath.dirname(path).split("/"), *target.split("/")]:
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return posixpath.normpath(posixpath.join("/", posixpath.dirname(path), target))
    return target


def add_parents(entries: dict[str, RootfsEntry]) -> None:
    """Create any missing parent folder (tarballs often omit them; LXD's tar would use 0700)."""
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in entries:
            entries[parent] = RootfsEntry.directory(parent)
            parent = posixpath.dirname(parent)


def rootfs_path(path: str) -> str:
    """Validate an absolute container path and return it relative to the rootfs root."""
    if not is_container_path(path):
        raise BuildError(f"{path!r}: rootfs paths must be absolute, like /pipeline/run.sh")
    relative = posixpath.normpath(path).lstrip("/")
    if not relative:
        raise BuildError("cannot replace the rootfs root folder /")
    return relative


def _mode_for(dest: str, source: bytes | Path) -> int:
    # Scripts and tools must run without a chmod in the pipeline's run command.
    if dest.endswith(".sh") or dest.startswith("usr/local/bin/"):
        return 0o755
    if isinstance(source, Path) and source.stat().st_mode & 0o100:
        return 0o755
    return 0o644


def put(entries: dict[str, RootfsEntry], entry: RootfsEntry) -> None:
    """Add ``entry`` and its missing parent folders; a base folder is never replaced."""
    existing = entries.get(entry.path)
    if existing is not None and existing.kind == "dir" and entry.kind != "dir":
        raise BuildError(f"/{entry.path} is a folder in the base rootfs; cannot replace it")
    if existing is not None and existing.kind == "dir" and entry.kind == "dir":
        return  # keep the base folder's mode and owner
    entries[entry.path] = entry
    parent = posixpath.dirname(entry.path)
    while parent:
        node = entries.get(parent)
        if node is None:
            entries[parent] = RootfsEntry.directory(parent)
        elif node.kind != "dir":
            raise BuildError(f"/{parent} exists in the base rootfs and is not a folder")
        parent = posixpath.dirname(parent)


def add_file(entries: dict[str, RootfsEntry], dest: str, source: bytes | Path,
             mode: int | None) -> None:
    """Add a file (or a host folder, recursively) at container path ``dest``."""
    target = resolve(entries, rootfs_path(dest))
    if isinstance(source, Path) and source.is_dir():
        # A folder is copied recursively, in sorted order, keeping relative symlinks as links.
        put(entries, RootfsEntry.directory(target))
        for child in sorted(source.iterdir(), key=lambda p: p.name):
            child_dest = f"/{target}/{child.name}"
            if child.is_symlink():
                put(entries, RootfsEntry.symlink(target + "/" + child.name, os.readlink(child)))
            else:
                add_file(entries, child_dest, child, None)
        return
    if isinstance(source, Path) and not source.is_file():
        raise BuildError(f"{source}: no such file")
    put(entries, RootfsEntry.file(target, source,
                                  _mode_for(target, source) if mode is None else mode))


def fix_hardlinks(entries: dict[str, RootfsEntry], original: Mapping[str, RootfsEntry]) -> None:
    """Make every hardlink point at a regular file written *before* it.

    Sorting reorders members, and our files may replace a link target. Each group of linked
    names gets its smallest surviving name as the real file (sorted first, so tar extraction
    finds it) and the other names as links to it.
    """
    groups: dict[str, list[str]] = {}
    for path, entry in entries.items():
        if entry.kind != "hardlink":
            continue
        target, hops = entry.linkname, 0
        while original.get(target) is not None and original[target].kind == "hardlink":
            target, hops = original[target].linkname, hops + 1
            if hops > MAX_SYMLINK_HOPS:
                raise BuildError(f"hardlink loop at /{path}")
        if original.get(target) is None or original[target].kind != "file":
            raise BuildError(f"hardlink /{path} points at missing file /{target}")
        groups.setdefault(target, []).append(path)
    for target, links in groups.items():
        members = sorted(links + ([target] if entries.get(target) is original[target] else []))
        data = original[target]
        primary = members[0]
        entries[primary] = replace(data, path=primary)
        for name in members[1:]:
            entries[name] = replace(data, path=name, kind="hardlink", linkname=primary,
                                    source=None, size=0)


def regular_file_path(entries: Mapping[str, RootfsEntry], path: str, what: str) -> str:
    """The canonical path of a regular file the installer reads out of the package.

    The installer looks the member up by exact name and does not follow links, so a path
    through a symlinked folder (``/bin`` -> ``usr/bin``) is rewritten to the real one.
    """
    resolved = resolve(entries, path.lstrip("/"))
    entry = entries.get(resolved)
    if entry is None or entry.kind != "file":
        raise BuildError(f"{what}: {path} is not a regular file in the rootfs "
                         "(symlinks and hardlinks are not followed)")
    return "/" + resolved
