"""Writing a package tarball reproducibly: fixed member times, numeric owners, sorted members,
gzip/xz headers without names or dates, and a rename into place once complete.

Everything here aims at byte-identical output for identical inputs, so that the LXD image
fingerprint (the sha256 of the tarball) identifies a pipeline build.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO

import yaml

from .rootfs import BuildError, RootfsEntry, TarSource

#: mtime of every member and ``creation_date`` of every package unless ``$SOURCE_DATE_EPOCH``
#: says otherwise (2024-01-01T00:00:00Z). Not 0: some tools treat a 1970 mtime as "unknown".
DEFAULT_EPOCH = 1704067200


def build_epoch() -> int:
    """The fixed timestamp of this build: ``$SOURCE_DATE_EPOCH`` or :data:`DEFAULT_EPOCH`."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None
    return DEFAULT_EPOCH


def compression_for(output: Path, compression: str | None) -> str:
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
    elif isinstance(source, TarSource):
        member = source.tar.extractfile(source.member)
        assert member is not None
        tar.addfile(info, member)
    else:
        raise BuildError(f"/{entry.path}: file without content")


def write_package(output: Path, metadata: dict[str, Any], rootfs: Mapping[str, RootfsEntry],
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

