"""The bases a package's rootfs starts from: the host's static busybox, a rootfs tarball (or
a unified LXD image tarball), a local LXD image exported with ``lxc image export``, or an OCI
image (:mod:`.oci`)."""

from __future__ import annotations

import gzip
import lzma
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .manifest import DIRECTORY_DEFAULTS
from .oci import is_oci_base, open_oci
from .rootfs import (
    BuildError,
    RootfsEntry,
    TarSource,
    add_parents,
    contain_symlink,
    member_name,
)

#: Host binary used for the built-in ``busybox`` base. Must be statically linked (Debian's
#: ``busybox-static``) since the base rootfs has no libc.
BUSYBOX = Path("/bin/busybox")

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
    **{folder.lstrip("/"): 0o755 for folder in DIRECTORY_DEFAULTS.values()},
}


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
    add_parents(entries)
    return [entries[path] for path in sorted(entries)]


# --------------------------------------------------------------------------------------------
# Bases: busybox, rootfs tarball, LXD image
# --------------------------------------------------------------------------------------------


@dataclass
class Base:
    """The rootfs a package starts from, and what a base LXD image carries over."""

    entries: dict[str, RootfsEntry]
    templates: list[RootfsEntry] = field(default_factory=list)
    # metadata.yaml of a base LXD image (properties, templates) to carry over.
    metadata: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    # Written into the manifest's pirus.provenance (where the rootfs came from).
    provenance: dict[str, Any] = field(default_factory=dict)
    # pirus fields the base supplies where the manifest sets none (an OCI image's run, env...)
    defaults: dict[str, Any] = field(default_factory=dict)


def _norm_member_name(name: str) -> str:
    normalised = member_name(name)
    if ".." in normalised.split("/"):
        raise BuildError(f"unsafe member name in base tarball: {name!r}")
    return normalised


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
        return RootfsEntry(path, "symlink", linkname=contain_symlink(path, member.linkname),
                           **common)
    if member.islnk():
        return RootfsEntry(path, "hardlink", linkname=_norm_member_name(member.linkname), **common)
    if member.isreg():
        return RootfsEntry(
            path, "file", source=TarSource(tar, member), size=member.size, **common
        )
    if member.ischr() or member.isblk() or member.isfifo():
        # LXD populates /dev itself, an unprivileged container could not create device nodes,
        # and Pirus refuses packages containing them.
        return None
    raise BuildError(f"unsupported member type in base tarball: {member.name!r}")


def _read_base_tar(tar: tarfile.TarFile, source: str) -> Base:
    """Members of a rootfs tarball, or of a unified LXD image if it looks like one."""
    members = tar.getmembers()
    names = {_norm_member_name(m.name): m for m in members}
    # Hardlinks name their target by its archive path: strip the same prefix as the members.
    unified = "metadata.yaml" in names and any(n.startswith("rootfs/") for n in names)
    base = Base(entries={})
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


def open_base(base: str | Path, stack: ExitStack, workdir: Path, packages: object = None,
              progress: Callable[[str], None] | None = None) -> Base:
    """The base named by pirus.yaml's ``base`` (``packages`` only for ``debian:<suite>``)."""
    if isinstance(base, str) and base.startswith("debian:"):
        return _debian(base, packages, stack, workdir, progress)
    if packages:
        raise BuildError("packages: only a debian:<suite> base installs packages")
    if isinstance(base, str) and base == "busybox":
        entries = busybox_rootfs_entries()
        return Base(
            entries={e.path: e for e in entries},
            properties={"os": "BusyBox", "release": _busybox_version(BUSYBOX)},
        )
    if isinstance(base, str) and is_oci_base(base):
        entries, defaults, properties = open_oci(base, stack, workdir, BUSYBOX, progress)
        return Base(entries=entries, properties=properties, defaults=defaults)
    if isinstance(base, str) and base.startswith("lxd:"):
        alias = base[len("lxd:"):]
        if not alias:
            raise BuildError("base lxd: needs an image alias or fingerprint, like lxd:my-image")
        path = _export_lxd_image(alias, stack, workdir)
        source = f"LXD image {alias}"
    else:
        path = Path(base)
        if not path.is_file():
            raise BuildError(f"base {str(base)!r}: no such file (use busybox, lxd:<alias>, "
                             "oci-archive:, docker-archive:, oci: or a .tar/.tar.gz/.tar.xz "
                             "rootfs)")
        source = str(path)
    tar = _open_tar(path, stack, workdir)
    result = _read_base_tar(tar, source)
    result.properties.setdefault("os", "custom")
    result.properties.setdefault("release", "unknown")
    return result


def _debian(base: str, packages: object, stack: ExitStack, workdir: Path,
            progress: Callable[[str], None] | None) -> Base:
    from .debian import debian_base, init_entries

    built = debian_base(base, packages, progress)
    result = _read_base_tar(_open_tar(built.rootfs, stack, workdir), str(built.rootfs))
    init_entries(result.entries, _INITTAB)
    result.properties = {"os": "Debian", "release": built.suite}
    result.provenance = {"base": base, "packages": built.packages}
    return result
