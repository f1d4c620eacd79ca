"""Build reproducible Pirus pipeline packages.

A pipeline package is an LXD *unified* image tarball: ``metadata.yaml`` (the usual LXD fields
plus a ``pirus:`` mapping describing the pipeline), ``rootfs/`` and optionally ``templates/``.
See ``docs/package-format.md``.

Everything here aims at byte-identical output for identical inputs, so that the LXD image
fingerprint (the sha256 of the tarball) identifies a pipeline build:

* every member gets the same mtime (``$SOURCE_DATE_EPOCH`` or :data:`DEFAULT_EPOCH`), which is
  also the image ``creation_date``;
* members are written in sorted order, owned by numeric uid/gid (0 for our own files) with empty
  user and group names, so the build host's ``/etc/passwd`` never leaks in;
* gzip headers carry no file name and mtime 0; ``metadata.yaml`` is dumped with sorted keys.

Data is streamed from the source files (or from the base rootfs tarball) straight into the
output: a multi-gigabyte rootfs never sits in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import platform
import posixpath
import re
import shlex
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import yaml

from .. import API_VERSION

__all__ = [
    "DEFAULT_EPOCH",
    "DIRECTORY_DEFAULTS",
    "BuildError",
    "RootfsEntry",
    "build_epoch",
    "build_package",
    "build_package_from_parts",
    "busybox_rootfs_entries",
    "validate_manifest",
]

#: mtime of every member and ``creation_date`` of every package unless ``$SOURCE_DATE_EPOCH``
#: says otherwise (2024-01-01T00:00:00Z). Not 0: some tools treat a 1970 mtime as "unknown".
DEFAULT_EPOCH = 1704067200

#: Host binary used for the built-in ``busybox`` base. Must be statically linked (Debian's
#: ``busybox-static``) since the base rootfs has no libc.
BUSYBOX = Path("/bin/busybox")

#: Default container folders of the ``pirus:`` block.
DIRECTORY_DEFAULTS: dict[str, str] = {
    "inputs": "/pipeline/inputs",
    "outputs": "/pipeline/outputs",
    "logs": "/pipeline/logs",
    "databases": "/pipeline/databases",
}

# Files picked up from a pirus.yaml source folder when the manifest does not map them itself:
# source name -> (pirus field that points at it, default destination in the rootfs).
_DEFAULT_FILES: dict[str, tuple[str, str]] = {
    "form.json": ("form", "/pipeline/form.json"),
    "icon.png": ("icon", "/pipeline/icon.png"),
    "run.sh": ("run", "/pipeline/run.sh"),
}

# Keys of pirus.yaml that drive the build and are not copied into the package's pirus block.
_BUILD_KEYS = frozenset({"base", "files", "metadata"})

# busybox init reads this. Only a no-op sysinit: with no respawn/askfirst entries init opens
# no tty and spawns nothing; it just waits for signals as PID 1, reaping orphans, and still
# handles LXD's SIGPWR for a clean `lxc stop`. The file must exist: without it busybox falls
# back to built-in defaults that run /etc/init.d/rcS (an error on the console) and keep an
# "askfirst" root shell waiting on /dev/console ("Please press Enter to activate this
# console."). An empty file would also do; the sysinit line documents the intent.
_INITTAB = b"""\
# Pirus busybox base: PID 1 only reaps orphans and handles shutdown; no consoles, no gettys.
::sysinit:/bin/true
::shutdown:/bin/sync
"""

_PASSWD = b"""\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = b"""\
root:x:0:
nogroup:x:65534:
"""
_HOSTS = b"""\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""

_BUSYBOX_DIRS: dict[str, int] = {
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "tmp": 0o1777,
    "root": 0o700,
    "run": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
    "etc": 0o755,
    "bin": 0o755,
    "sbin": 0o755,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "pipeline": 0o755,
    "pipeline/inputs": 0o755,
    "pipeline/outputs": 0o755,
    "pipeline/logs": 0o755,
    "pipeline/databases": 0o755,
}

_LIMIT_KEYS = frozenset({"cpu", "memory", "processes"})
# LXD limits.cpu: a count ("2") or a set of CPUs ("0-3", "0,2").
_CPU_RE = re.compile(r"^(\d+|\d+(-\d+)?(,\d+(-\d+)?)*)$")
# LXD limits.memory: bytes with an optional unit, or a percentage of the host memory.
_MEMORY_RE = re.compile(
    r"^(\d+(\.\d+)?(B|kB|MB|GB|TB|PB|EB|KiB|MiB|GiB|TiB|PiB|EiB)?|\d+(\.\d+)?%)$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class BuildError(Exception):
    """The package cannot be built from these inputs (bad manifest, missing file, bad base)."""


@dataclass(frozen=True, eq=False)
class _TarSource:
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
    source: bytes | Path | _TarSource | None = None
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


# --------------------------------------------------------------------------------------------
# Manifest validation (pure: the install path calls it on untrusted metadata.yaml)
# --------------------------------------------------------------------------------------------


def _pirus_block(manifest: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """Accept either a whole metadata.yaml mapping or just its ``pirus:`` block."""
    if "pirus" in manifest:
        return manifest["pirus"], []
    # A plain LXD image: metadata.yaml fields but no pirus block at all.
    if "name" not in manifest and {"architecture", "creation_date", "properties"} & set(manifest):
        return None, ["pirus: required (metadata.yaml has no pirus block: not a Pirus package)"]
    return manifest, []


def _is_abs_path(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("/")
        and not _CONTROL_RE.search(value)
        and ".." not in value.split("/")
    )


def validate_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Human-readable problems of a pipeline manifest; an empty list means it is valid.

    ``manifest`` is either a whole ``metadata.yaml`` mapping (with a ``pirus:`` key) or the
    ``pirus`` block itself (as in ``pirus.yaml``). Problems are prefixed with the field name,
    e.g. ``"pirus.name: required"``. Unknown keys are allowed, for forward compatibility.
    No I/O: safe to call on untrusted input.
    """
    if not isinstance(manifest, Mapping):
        return ["manifest: must be a mapping"]
    block, problems = _pirus_block(manifest)
    if problems:
        return problems
    if not isinstance(block, Mapping):
        return ["pirus: must be a mapping"]

    def text(key: str, *, required: bool = False, single_line: bool = False) -> None:
        if key not in block or block[key] is None:
            if required:
                problems.append(f"pirus.{key}: required")
            return
        value = block[key]
        if not isinstance(value, str):
            hint = " (quote it in YAML)" if isinstance(value, (int, float)) else ""
            problems.append(f"pirus.{key}: must be a string, not {type(value).__name__}{hint}")
        elif required and not value.strip():
            problems.append(f"pirus.{key}: must not be empty")
        elif single_line and _CONTROL_RE.search(value):
            problems.append(f"pirus.{key}: must be a single line without control characters")

    text("name", required=True, single_line=True)
    # `job` is the historical name of `run`; either one is enough.
    run_key = "job" if block.get("run") is None and block.get("job") is not None else "run"
    run = block.get(run_key)
    if isinstance(run, list) and run and all(isinstance(arg, str) for arg in run):
        pass  # an argv list is accepted too (joined into a command line at install)
    else:
        text(run_key, required=True)
    if run_key == "run" and block.get("job") is not None and block.get("job") != run:
        problems.append("pirus.job: conflicts with pirus.run (job is an alias: keep one)")
    text("version", single_line=True)
    text("description")
    text("license", single_line=True)

    developers = block.get("developers")
    if developers is not None and not isinstance(developers, str) and (
        not isinstance(developers, list) or not all(isinstance(d, str) for d in developers)
    ):
        problems.append("pirus.developers: must be a list of strings")

    documents = block.get("documents")
    if documents is not None:
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            problems.append("pirus.documents: must be a list of paths inside the container")
        else:
            problems.extend(
                f"pirus.documents: {d!r} is not a path inside the container"
                for d in documents
                if not _is_abs_path("/" + d.lstrip("/")) or not d.strip("/")
            )

    api = block.get("pirus_api")
    if api is not None and (isinstance(api, bool) or not isinstance(api, (str, int))):
        problems.append("pirus.pirus_api: must be a string or an integer")

    for key in (*DIRECTORY_DEFAULTS, "form", "icon"):
        value = block.get(key)
        if value is None:
            continue
        if not _is_abs_path(value):
            problems.append(
                f"pirus.{key}: must be an absolute path inside the container "
                f"(like {DIRECTORY_DEFAULTS.get(key, '/pipeline/' + key)!r}), got {value!r}"
            )
        elif key in DIRECTORY_DEFAULTS and posixpath.normpath(value) == "/":
            problems.append(f"pirus.{key}: must not be the root folder")

    problems.extend(_limit_problems(block.get("limits")))
    return problems


def _limit_problems(limits: Any) -> list[str]:
    if limits is None:
        return []
    if not isinstance(limits, Mapping):
        return ["pirus.limits: must be a mapping with keys cpu, memory, processes"]
    problems = [
        f"pirus.limits.{key}: unknown limit (allowed: cpu, memory, processes)"
        for key in sorted(set(limits) - _LIMIT_KEYS, key=str)
    ]
    cpu = limits.get("cpu")
    if cpu is not None:
        if isinstance(cpu, bool) or not isinstance(cpu, (int, str)):
            problems.append("pirus.limits.cpu: must be an integer or a string like '2' or '0-3'")
        elif isinstance(cpu, int) and cpu < 1:
            problems.append("pirus.limits.cpu: must be at least 1")
        elif isinstance(cpu, str) and not _CPU_RE.match(cpu):
            problems.append(f"pirus.limits.cpu: {cpu!r} is not a CPU count or set like '0-3'")
    memory = limits.get("memory")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, (int, str)):
            problems.append("pirus.limits.memory: must be bytes (integer) or a string like '2GiB'")
        elif isinstance(memory, int) and memory < 1:
            problems.append("pirus.limits.memory: must be positive")
        elif isinstance(memory, str) and not _MEMORY_RE.match(memory.replace(" ", "")):
            problems.append(
                f"pirus.limits.memory: {memory!r} is not a size like '512MiB', '2GB' or '50%'"
            )
    processes = limits.get("processes")
    if processes is not None and not (
        (isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1)
        or (isinstance(processes, str) and processes.isdigit() and int(processes) >= 1)
    ):
        problems.append("pirus.limits.processes: must be a positive integer")
    return problems


# --------------------------------------------------------------------------------------------
# The busybox base
# --------------------------------------------------------------------------------------------


def _elf_interpreter(path: Path) -> bool:
    """True if ``path`` is an ELF executable with a PT_INTERP header (dynamically linked)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF":
            raise BuildError(f"{path} is not an ELF executable")
        is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(endian + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 54)
        else:
            phoff, = struct.unpack_from(endian + "I", ident, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(
        struct.unpack_from(endian + "I", table, i * phentsize)[0] == 3  # PT_INTERP
        for i in range(phnum)
    )


def _busybox_version(busybox: Path) -> str:
    """``1.35.0`` from the banner of ``busybox`` run without arguments."""
    banner = subprocess.run([str(busybox)], capture_output=True, text=True, check=False)
    match = re.search(r"BusyBox v(\S+)", banner.stdout + banner.stderr)
    return match.group(1) if match else "unknown"


def busybox_rootfs_entries(busybox: Path = BUSYBOX) -> list[RootfsEntry]:
    """The members of a minimal rootfs built around a static busybox binary.

    ``bin/busybox`` plus one symlink per applet (``busybox --list-full``: the host binary is
    only *asked* for its applet list, nothing is installed on the host), ``sbin/init`` among
    them, ``/etc/{passwd,group,hosts,inittab}`` and the usual empty folders including the
    default ``/pipeline/*`` ones. Sorted by path.
    """
    busybox = Path(busybox)
    if not busybox.is_file():
        raise BuildError(f"{busybox} not found: apt-get install busybox-static")
    if _elf_interpreter(busybox):
        # A dynamic busybox would need the host's libc inside the rootfs.
        raise BuildError(f"{busybox} is dynamically linked: install busybox-static")
    listing = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    entries: dict[str, RootfsEntry] = {
        path: RootfsEntry.directory(path, mode) for path, mode in _BUSYBOX_DIRS.items()
    }
    for applet in listing.split():
        applet = applet.strip("/")
        if applet and applet != "bin/busybox" and ".." not in applet.split("/"):
            # Absolute target, like `busybox --install -s` would create.
            entries[applet] = RootfsEntry.symlink(applet, "/bin/busybox")
    if "bin/sh" not in entries or "sbin/init" not in entries:
        raise BuildError(f"{busybox} lacks the sh or init applet")
    entries["bin/busybox"] = RootfsEntry.file("bin/busybox", busybox, 0o755)
    entries["etc/passwd"] = RootfsEntry.file("etc/passwd", _PASSWD)
    entries["etc/group"] = RootfsEntry.file("etc/group", _GROUP)
    entries["etc/hosts"] = RootfsEntry.file("etc/hosts", _HOSTS)
    entries["etc/inittab"] = RootfsEntry.file("etc/inittab", _INITTAB)
    _add_parents(entries)
    return [entries[path] for path in sorted(entries)]


# --------------------------------------------------------------------------------------------
# Bases: busybox, rootfs tarball, LXD image
# --------------------------------------------------------------------------------------------


@dataclass
class _Base:
    entries: dict[str, RootfsEntry]
    templates: list[RootfsEntry] = field(default_factory=list)
    # metadata.yaml of a base LXD image (properties, templates) to carry over.
    metadata: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)


def _norm_member_name(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"unsafe member name in base tarball: {name!r}")
    return "/".join(parts)


def _open_tar(path: Path, stack: ExitStack, workdir: Path) -> tarfile.TarFile:
    """Open a possibly compressed tarball for random access without loading it in memory.

    Compressed streams are decompressed once to a temporary file next to the output: seeking
    backwards in a gzip/xz stream restarts decompression, and the sorted output order needs
    random access to the base members.
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    opener: Any = None
    if magic[:2] == b"\x1f\x8b":
        opener = gzip.open
    elif magic == b"\xfd7zXZ\x00":
        opener = lzma.open
    elif magic[:3] == b"BZh":
        import bz2

        opener = bz2.open
    elif magic[:4] == b"\x28\xb5\x2f\xfd":
        raise BuildError(f"{path}: zstd-compressed tarballs are not supported; use gzip or xz")
    if opener is not None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".pirus-build-", dir=workdir))
        plain = Path(tmp) / "base.tar"
        with opener(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        path = plain
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the caller's ExitStack
    except tarfile.TarError as exc:
        raise BuildError(f"{path}: not a tar archive ({exc})") from exc
    stack.callback(tar.close)
    return tar


def _contain_symlink(path: str, target: str) -> str:
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
            resolved = posixpath.normpath(posixpath.join("/", posixpath.dirname(path), target))
            return resolved
    return target


def _entry_from_member(path: str, tar: tarfile.TarFile,
                       member: tarfile.TarInfo) -> RootfsEntry | None:
    """The rootfs entry of a base member; None for devices and fifos, which are dropped."""
    # Keep numeric ownership (a distro rootfs has non-root files), drop names and times.
    xattrs = tuple(
        sorted((k, v) for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr."))
    )
    common: dict[str, Any] = {
        "mode": member.mode & 0o7777, "uid": member.uid, "gid": member.gid, "xattrs": xattrs
    }
    if member.isdir():
        return RootfsEntry(path, "dir", **common)
    if member.issym():
        return RootfsEntry(path, "symlink", linkname=_contain_symlink(path, member.linkname),
                           **common)
    if member.islnk():
        return RootfsEntry(path, "hardlink", linkname=_norm_member_name(member.linkname), **common)
    if member.isreg():
        return RootfsEntry(
            path, "file", source=_TarSource(tar, member), size=member.size, **common
        )
    if member.ischr() or member.isblk() or member.isfifo():
        # LXD populates /dev itself, an unprivileged container could not create device nodes,
        # and Pirus refuses packages containing them.
        return None
    raise BuildError(f"unsupported member type in base tarball: {member.name!r}")


def _read_base_tar(tar: tarfile.TarFile, source: str) -> _Base:
    """Members of a rootfs tarball, or of a unified LXD image if it looks like one."""
    members = tar.getmembers()
    names = {_norm_member_name(m.name): m for m in members}
    # Hardlinks name their target by its archive path: strip the same prefix as the members.
    unified = "metadata.yaml" in names and any(n.startswith("rootfs/") for n in names)
    base = _Base(entries={})
    for name, member in names.items():
        if unified:
            if name == "metadata.yaml":
                stream = tar.extractfile(member)
                assert stream is not None
                loaded = yaml.safe_load(stream.read()) or {}
                if not isinstance(loaded, dict):
                    raise BuildError(f"{source}: metadata.yaml is not a mapping")
                base.metadata = loaded
                continue
            top, _, rest = name.partition("/")
            if top == "templates" and rest:
                entry = _entry_from_member(rest, tar, member)
                if entry is None or entry.kind != "file":
                    raise BuildError(f"{source}: template {rest!r} is not a regular file")
                base.templates.append(entry)
                continue
            if top != "rootfs" or not rest:
                continue  # rootfs/ itself, or foreign top-level files LXD ignores too
            name = rest
        if not name:
            continue
        entry = _entry_from_member(name, tar, member)
        if entry is None:
            continue
        if entry.kind == "hardlink" and unified:
            target = entry.linkname
            if not target.startswith("rootfs/"):
                raise BuildError(f"{source}: hardlink {name!r} points outside rootfs/")
            entry = replace(entry, linkname=target[len("rootfs/"):])
        base.entries[name] = entry
    if unified:
        props = base.metadata.get("properties") or {}
        base.properties = {str(k): str(v) for k, v in props.items()} if isinstance(
            props, dict) else {}
    base.templates.sort(key=lambda e: e.path)
    return base


def _export_lxd_image(alias: str, stack: ExitStack, workdir: Path) -> Path:
    """``lxc image export`` into a temporary folder; returns the unified tarball."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".pirus-lxd-", dir=workdir)))
    result = subprocess.run(
        ["lxc", "image", "export", alias, str(tmp) + "/"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BuildError(f"lxc image export {alias} failed: {result.stderr.strip()}")
    exported = sorted(p for p in tmp.iterdir() if p.is_file())
    if len(exported) != 1:
        # Split images (metadata tarball + squashfs rootfs) would need squashfs tools.
        raise BuildError(
            f"LXD image {alias!r} is a split image ({', '.join(p.name for p in exported)}); "
            "only unified images can be used as a base"
        )
    return exported[0]


def _open_base(base: str | Path, stack: ExitStack, workdir: Path) -> _Base:
    if isinstance(base, str) and base == "busybox":
        entries = busybox_rootfs_entries()
        return _Base(
            entries={e.path: e for e in entries},
            properties={"os": "BusyBox", "release": _busybox_version(BUSYBOX)},
        )
    if isinstance(base, str) and base.startswith("lxd:"):
        alias = base[len("lxd:"):]
        if not alias:
            raise BuildError("base lxd: needs an image alias or fingerprint, like lxd:my-image")
        path = _export_lxd_image(alias, stack, workdir)
        source = f"LXD image {alias}"
    else:
        path = Path(base)
        if not path.is_file():
            raise BuildError(f"base {str(base)!r}: no such file (use busybox, lxd:<alias> or a "
                             ".tar/.tar.gz/.tar.xz rootfs)")
        source = str(path)
    tar = _open_tar(path, stack, workdir)
    result = _read_base_tar(tar, source)
    result.properties.setdefault("os", "custom")
    result.properties.setdefault("release", "unknown")
    return result


# --------------------------------------------------------------------------------------------
# Assembling the rootfs
# --------------------------------------------------------------------------------------------


def _add_parents(entries: dict[str, RootfsEntry]) -> None:
    """Create any missing parent folder (tarballs often omit them; LXD's tar would use 0700)."""
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in entries:
            entries[parent] = RootfsEntry.directory(parent)
            parent = posixpath.dirname(parent)


def _resolve(entries: Mapping[str, RootfsEntry], path: str) -> str:
    """``path`` with symlinked parent folders followed inside the rootfs.

    A base like Debian has ``/bin -> usr/bin``: adding ``/bin/tool`` must write
    ``usr/bin/tool``, not a ``bin/`` folder clashing with the symlink.
    """
    parts = path.split("/")
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        current = "/".join([*resolved, part])
        entry = entries.get(current)
        if parts and entry is not None and entry.kind == "symlink":
            hops += 1
            if hops > 40:
                raise BuildError(f"too many levels of symbolic links resolving /{path}")
            target = entry.linkname
            base = [] if target.startswith("/") else resolved
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            resolved = list(base)
            # Re-normalise `..` from the link target against what is resolved so far.
            while parts and parts[0] == "..":
                parts.pop(0)
                if resolved:
                    resolved.pop()
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(part)
    return "/".join(resolved)


def _rootfs_path(path: str) -> str:
    """Validate an absolute container path and return it relative to the rootfs root."""
    if not _is_abs_path(path):
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


def _put(entries: dict[str, RootfsEntry], entry: RootfsEntry) -> None:
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


def _add_file(entries: dict[str, RootfsEntry], dest: str, source: bytes | Path,
              mode: int | None) -> None:
    target = _resolve(entries, _rootfs_path(dest))
    if isinstance(source, Path) and source.is_dir():
        # A folder is copied recursively, in sorted order, keeping relative symlinks as links.
        _put(entries, RootfsEntry.directory(target))
        for child in sorted(source.iterdir(), key=lambda p: p.name):
            child_dest = f"/{target}/{child.name}"
            if child.is_symlink():
                _put(entries, RootfsEntry.symlink(target + "/" + child.name,
                                                  os.readlink(child)))
            else:
                _add_file(entries, child_dest, child, None)
        return
    if isinstance(source, Path) and not source.is_file():
        raise BuildError(f"{source}: no such file")
    _put(entries, RootfsEntry.file(target, source,
                                   _mode_for(target, source) if mode is None else mode))


def _fix_hardlinks(entries: dict[str, RootfsEntry], original: Mapping[str, RootfsEntry]) -> None:
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
            if hops > 40:
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


def _exists_as_file(entries: Mapping[str, RootfsEntry], path: str) -> bool:
    resolved = _resolve(entries, path.lstrip("/"))
    entry = entries.get(resolved)
    hops = 0
    while entry is not None and entry.kind == "symlink" and hops < 40:
        target = entry.linkname
        joined = target if target.startswith("/") else posixpath.join(
            "/" + posixpath.dirname(resolved), target)
        resolved = _resolve(entries, posixpath.normpath(joined).lstrip("/"))
        entry, hops = entries.get(resolved), hops + 1
    return entry is not None and entry.kind in ("file", "hardlink")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def build_epoch() -> int:
    """The fixed timestamp of this build: ``$SOURCE_DATE_EPOCH`` or :data:`DEFAULT_EPOCH`."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None
    return DEFAULT_EPOCH


def _compression_for(output: Path, compression: str | None) -> str:
    if compression is not None:
        aliases = {"gzip": "gz", "gz": "gz", "xz": "xz", "none": "", "": ""}
        if compression not in aliases:
            raise ValueError(f"unknown compression {compression!r} (use gzip, xz or none)")
        return aliases[compression]
    name = output.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "gz"
    if name.endswith((".tar.xz", ".txz")):
        return "xz"
    if name.endswith(".tar"):
        return ""
    raise ValueError(f"{output.name}: the output must end in .tar, .tar.gz, .tgz or .tar.xz")


@contextmanager
def _compressor(raw: BinaryIO, kind: str) -> Iterator[IO[bytes]]:
    """``raw`` wrapped in a deterministic gzip or xz writer (or as is for plain tar)."""
    if kind == "gz":
        # filename="" and mtime=0: otherwise gzip records the (temporary) output name and now.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            yield gz  # type: ignore[misc]
    elif kind == "xz":
        with lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64) as xz:
            yield xz
    else:
        yield raw


def _tarinfo(name: str, entry: RootfsEntry, epoch: int) -> tarfile.TarInfo:
    """The normalised tar header of ``entry``: fixed mtime, numeric owner, no names."""
    info = tarfile.TarInfo(name)
    info.mtime = epoch
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.pax_headers = dict(entry.xattrs)
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.linkname
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "rootfs/" + entry.linkname
    elif entry.kind == "file":
        info.type, info.size = tarfile.REGTYPE, entry.size
    return info


def _add_entry(tar: tarfile.TarFile, name: str, entry: RootfsEntry, epoch: int) -> None:
    """Write one tar member, streaming a file's content from its source."""
    info = _tarinfo(name, entry, epoch)
    if entry.kind != "file":
        tar.addfile(info)
        return
    source = entry.source
    if isinstance(source, bytes):
        tar.addfile(info, io.BytesIO(source))
    elif isinstance(source, Path):
        with open(source, "rb") as handle:
            tar.addfile(info, handle)
    elif isinstance(source, _TarSource):
        member = source.tar.extractfile(source.member)
        assert member is not None
        tar.addfile(info, member)
    else:
        raise BuildError(f"/{entry.path}: file without content")


def _write_package(output: Path, metadata: dict[str, Any], rootfs: Mapping[str, RootfsEntry],
                   templates: list[RootfsEntry], compression: str, epoch: int) -> None:
    meta = yaml.safe_dump(metadata, sort_keys=True, default_flow_style=False,
                          allow_unicode=True).encode()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the output and rename: readers never see a half-written package.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, _compressor(raw, compression) as stream, tarfile.open(
            fileobj=stream, mode="w", format=tarfile.PAX_FORMAT
        ) as tar:
            _add_entry(tar, "metadata.yaml", RootfsEntry.file("metadata.yaml", meta), epoch)
            _add_entry(tar, "rootfs", RootfsEntry.directory(""), epoch)
            for path in sorted(rootfs):
                _add_entry(tar, f"rootfs/{path}", rootfs[path], epoch)
            if templates:
                _add_entry(tar, "templates", RootfsEntry.directory(""), epoch)
                for entry in templates:
                    _add_entry(tar, f"templates/{entry.path}", replace(entry, mode=0o644), epoch)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _architecture() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)


def _normalise_manifest(manifest: Mapping[str, Any], files: Mapping[str, Any]) -> dict[str, Any]:
    block, problems = _pirus_block(manifest)
    if problems or not isinstance(block, Mapping):
        raise BuildError("invalid manifest: " + "; ".join(problems or ["pirus: must be a mapping"]))
    pirus = {k: v for k, v in block.items() if k not in _BUILD_KEYS}
    if pirus.get("run") is None and pirus.get("job") is not None:
        pirus["run"] = pirus["job"]
    if pirus.get("job") == pirus.get("run"):
        pirus.pop("job", None)  # one canonical spelling in built packages
    if isinstance(pirus.get("run"), list) and all(isinstance(a, str) for a in pirus["run"]):
        pirus["run"] = shlex.join(pirus["run"])  # an argv list: quote it into a command line
    if isinstance(pirus.get("version"), float):
        # YAML reads `version: 1.10` as 1.1: refuse rather than silently change it.
        raise BuildError(f"invalid manifest: pirus.version: {pirus['version']!r} is a number; "
                         "quote it in pirus.yaml")
    for key in ("version", "pirus_api"):
        if isinstance(pirus.get(key), int) and not isinstance(pirus.get(key), bool):
            pirus[key] = str(pirus[key])
    if isinstance(pirus.get("developers"), str):
        pirus["developers"] = [pirus["developers"]]
    dests = {posixpath.normpath(d) for d in files}
    for field_name, default_dest in (
        ("form", "/pipeline/form.json"), ("icon", "/pipeline/icon.png"),
        ("run", "/pipeline/run.sh"),
    ):
        if pirus.get(field_name) is None and default_dest in dests:
            pirus[field_name] = default_dest
    for key, default in DIRECTORY_DEFAULTS.items():
        if pirus.get(key) is None:
            pirus[key] = default
    pirus.setdefault("pirus_api", API_VERSION)
    problems = validate_manifest(pirus)
    if problems:
        raise BuildError("invalid manifest: " + "; ".join(problems))
    for key in (*DIRECTORY_DEFAULTS, "form", "icon"):
        if isinstance(pirus.get(key), str):
            pirus[key] = posixpath.normpath(pirus[key])
    return pirus


def _regular_file_path(entries: Mapping[str, RootfsEntry], path: str, what: str) -> str:
    """The canonical path of a regular file the installer reads out of the package.

    The installer looks the member up by exact name and does not follow links, so a path
    through a symlinked folder (``/bin`` -> ``usr/bin``) is rewritten to the real one.
    """
    resolved = _resolve(entries, path.lstrip("/"))
    entry = entries.get(resolved)
    if entry is None or entry.kind != "file":
        raise BuildError(f"{what}: {path} is not a regular file in the rootfs "
                         "(symlinks and hardlinks are not followed)")
    return "/" + resolved


def _check_form(entries: Mapping[str, RootfsEntry], form: str) -> None:
    entry = entries.get(_resolve(entries, form.lstrip("/")))
    if entry is None or entry.kind != "file" or isinstance(entry.source, _TarSource):
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


def build_package_from_parts(
    manifest: Mapping[str, Any],
    files: Mapping[str, bytes | Path],
    output: Path,
    *,
    base: str | Path = "busybox",
    extra_metadata: Mapping[str, Any] | None = None,
    compression: str | None = None,
    modes: Mapping[str, int] | None = None,
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
    or ``"lxd:<alias>"`` (a local LXD image, exported with ``lxc image export``).
    ``extra_metadata`` is deep-merged into metadata.yaml last. Compression follows the output
    suffix unless ``compression`` (``gzip``, ``xz``, ``none``) is given.

    Raises :class:`BuildError` for invalid inputs and ``ValueError`` for an unknown suffix.
    """
    output = Path(output)
    kind = _compression_for(output, compression)
    epoch = build_epoch()
    normalised_files = {posixpath.normpath(k): v for k, v in files.items()}
    pirus = _normalise_manifest(manifest, normalised_files)
    output.parent.mkdir(parents=True, exist_ok=True)  # temporary base copies go there too
    with ExitStack() as stack:
        base_image = _open_base(base, stack, output.parent.resolve())
        entries = base_image.entries
        original = dict(entries)
        _add_parents(entries)
        for key in DIRECTORY_DEFAULTS:
            _put(entries, RootfsEntry.directory(_resolve(entries, _rootfs_path(pirus[key]))))
        for dest in sorted(normalised_files):
            source = normalised_files[dest]
            if not isinstance(source, (bytes, Path)):
                raise BuildError(f"files[{dest!r}]: must be bytes or a Path, "
                                 f"not {type(source).__name__}")
            _add_file(entries, dest, source, (modes or {}).get(dest))
        _fix_hardlinks(entries, original)

        if not _exists_as_file(entries, "/bin/sh"):
            raise BuildError("the rootfs has no /bin/sh: Pirus runs the pipeline with /bin/sh -c")
        for key in ("form", "icon"):
            if pirus.get(key):
                pirus[key] = _regular_file_path(entries, pirus[key], f"pirus.{key}")
        if pirus.get("documents"):
            pirus["documents"] = [
                _regular_file_path(entries, "/" + doc.lstrip("/"), "pirus.documents")
                for doc in pirus["documents"]
            ]
        if pirus.get("form"):
            _check_form(entries, pirus["form"])
        program = _run_program(pirus["run"])
        if program and not _exists_as_file(entries, program):
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
        _write_package(output, metadata, entries, base_image.templates, kind, epoch)
    return output


def _run_program(run: str) -> str | None:
    """The absolute program path of a simple run command (``/pipeline/run.sh --x``), if any."""
    try:
        words = shlex.split(run)
    except ValueError:
        return None
    if not words or not words[0].startswith("/") or re.search(r"[;&|<>()$`*?\[\]{}]", words[0]):
        return None
    return words[0]


def build_package(source_dir: Path, output: Path, *, compression: str | None = None) -> Path:
    """Build the package described by ``source_dir/pirus.yaml``; returns ``output``.

    ``pirus.yaml`` holds the ``pirus`` fields plus build keys: ``base`` (``busybox``, a rootfs
    tarball path relative to ``source_dir``, or ``lxd:<alias>``), ``files`` (rootfs path ->
    source path relative to ``source_dir``, or ``{source: ..., mode: 0o755}``, or null to skip
    a default) and ``metadata`` (extra metadata.yaml fields). ``form.json``, ``icon.png`` and
    ``run.sh`` found in ``source_dir`` are copied to ``/pipeline/`` (or to the manifest's
    ``form``/``icon`` path) unless ``files`` already uses or suppresses them.
    """
    source_dir = Path(source_dir)
    manifest_path = source_dir / "pirus.yaml"
    try:
        spec = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{manifest_path}: not found") from None
    except yaml.YAMLError as exc:
        raise BuildError(f"{manifest_path}: invalid YAML ({exc})") from exc
    if not isinstance(spec, dict):
        raise BuildError(f"{manifest_path}: must be a mapping")

    raw_files = spec.get("files") or {}
    if not isinstance(raw_files, Mapping):
        raise BuildError("files: must be a mapping of rootfs path -> source path")
    files: dict[str, bytes | Path] = {}
    modes: dict[str, int] = {}
    used_sources: set[Path] = set()
    suppressed: set[str] = set()
    for dest, value in raw_files.items():
        if not isinstance(dest, str):
            raise BuildError(f"files: key {dest!r} must be a rootfs path")
        dest = posixpath.normpath(dest)
        if value is None:
            suppressed.add(dest)
            continue
        if isinstance(value, Mapping):
            src, mode = value.get("source"), value.get("mode")
            if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int)):
                raise BuildError(f"files[{dest!r}].mode: must be an integer like 0o755")
            if mode is not None:
                modes[dest] = mode
        else:
            src = value
        if not isinstance(src, str):
            raise BuildError(f"files[{dest!r}]: the source must be a path relative to pirus.yaml")
        path = source_dir / src
        if not path.exists():
            raise BuildError(f"files[{dest!r}]: {path} not found")
        files[dest] = path
        used_sources.add(path.resolve())

    for name, (field_name, default_dest) in _DEFAULT_FILES.items():
        path = source_dir / name
        if not path.is_file() or path.resolve() in used_sources:
            continue
        dest = default_dest
        if field_name in ("form", "icon") and isinstance(spec.get(field_name), str):
            dest = posixpath.normpath(spec[field_name])
        if dest in files or dest in suppressed:
            continue
        files[dest] = path

    base = spec.get("base", "busybox")
    if not isinstance(base, str) or not base:
        raise BuildError("base: must be busybox, lxd:<alias> or a rootfs tarball path")
    if base != "busybox" and not base.startswith("lxd:"):
        base = str((source_dir / base).resolve())
    extra = spec.get("metadata")
    if extra is not None and not isinstance(extra, Mapping):
        raise BuildError("metadata: must be a mapping of extra metadata.yaml fields")
    manifest = {k: v for k, v in spec.items() if k not in _BUILD_KEYS}
    return build_package_from_parts(manifest, files, output, base=base, extra_metadata=extra,
                                    compression=compression, modes=modes)
