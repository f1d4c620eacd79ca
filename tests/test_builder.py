"""The reproducible pipeline-package builder (pirus_jupyter.packaging) and the example pipelines."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import lxd_available

from pirus_jupyter.packaging.bases import busybox_rootfs_entries
from pirus_jupyter.packaging.build import BuildError, build_package, build_package_from_parts
from pirus_jupyter.packaging.manifest import validate_manifest
from pirus_jupyter.packaging.tarwriter import DEFAULT_EPOCH

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "pipelines"
FASTQ_COUNT = EXAMPLES / "fastq-count"
NOOP = EXAMPLES / "noop"

needs_busybox = pytest.mark.skipif(
    not Path("/bin/busybox").is_file(), reason="needs busybox-static at /bin/busybox"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def metadata(path: Path) -> dict[str, Any]:
    return yaml.safe_load(read_member(path, "metadata.yaml"))


def make_tar(path: Path, entries: list[tuple[str, str, Any]], mode: str = "w:xz") -> Path:
    """A tarball from (name, kind, value) rows: kind file (bytes), dir, symlink, hardlink, fifo."""
    with tarfile.open(path, mode) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1234567890
            info.uname = info.gname = "someone"
            if kind == "file":
                info.size, info.mode = len(value), 0o644
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type, info.mode = {
                "dir": (tarfile.DIRTYPE, 0o755), "symlink": (tarfile.SYMTYPE, 0o777),
                "hardlink": (tarfile.LNKTYPE, 0o644), "fifo": (tarfile.FIFOTYPE, 0o644),
                "chr": (tarfile.CHRTYPE, 0o666),
            }[kind]
            info.linkname = value or ""
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def fastq_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/bin/busybox").is_file():
        pytest.skip("needs busybox-static at /bin/busybox")
    return build_package(FASTQ_COUNT, tmp_path_factory.mktemp("pkg") / "fastq-count.tar.gz")


# ---------------------------------------------------------------------------------------------
# Reproducibility and layout
# ---------------------------------------------------------------------------------------------


@needs_busybox
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz"])
def test_build_is_reproducible(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    # Different folders and file names: neither may leak into the output (gzip FNAME...).
    first = build_package(FASTQ_COUNT, tmp_path / "a" / f"one{suffix}")
    second = build_package(FASTQ_COUNT, tmp_path / "b" / f"two{suffix}")
    assert sha256(first) == sha256(second)
    assert not [p.name for p in (tmp_path / "a").iterdir() if p.name != f"one{suffix}"]


@needs_busybox
def test_source_date_epoch_sets_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    package = build_package_from_parts({"name": "t", "run": "true"}, {}, tmp_path / "p.tar")
    assert metadata(package)["creation_date"] == 1600000000
    assert {m.mtime for m in members(package).values()} == {1600000000}
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    other = build_package_from_parts({"name": "t", "run": "true"}, {}, tmp_path / "q.tar")
    assert metadata(other)["creation_date"] == DEFAULT_EPOCH
    assert sha256(package) != sha256(other)


@needs_busybox
def test_package_layout(fastq_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    with tarfile.open(fastq_package) as tar:
        ordered = tar.getmembers()
    names = [m.name for m in ordered]
    assert names[0] == "metadata.yaml"
    assert names == sorted(names)  # sorted: parents before children, stable order
    assert len(names) == len(set(names))
    for m in ordered:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == DEFAULT_EPOCH

    by_name = {m.name: m for m in ordered}
    busybox = by_name["rootfs/bin/busybox"]
    assert busybox.isfile() and busybox.mode == 0o755
    assert busybox.size == Path("/bin/busybox").stat().st_size
    applets = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "bin/busybox":
            link = by_name[f"rootfs/{applet}"]
            assert link.issym() and link.linkname == "/bin/busybox", applet
    for applet in ("bin/sh", "sbin/init", "usr/bin/awk", "bin/sed", "bin/sleep"):
        assert by_name[f"rootfs/{applet}"].issym()
    assert by_name["rootfs/tmp"].isdir() and by_name["rootfs/tmp"].mode == 0o1777
    for folder in ("dev", "proc", "sys", "root", "run", "var", "pipeline/inputs",
                   "pipeline/outputs", "pipeline/logs", "pipeline/databases"):
        assert by_name[f"rootfs/{folder}"].isdir(), folder
    assert by_name["rootfs/pipeline/run.sh"].mode == 0o755
    assert by_name["rootfs/pipeline/form.json"].mode == 0o644
    assert read_member(fastq_package, "rootfs/pipeline/icon.png").startswith(b"\x89PNG")
    passwd = read_member(fastq_package, "rootfs/etc/passwd").decode()
    assert passwd.startswith("root:x:0:0:")
    assert read_member(fastq_package, "rootfs/etc/group").decode().startswith("root:x:0:")
    inittab = read_member(fastq_package, "rootfs/etc/inittab").decode()
    assert "respawn" not in inittab and "askfirst" not in inittab

    meta = metadata(fastq_package)
    assert meta["architecture"] == "x86_64"
    assert meta["creation_date"] == DEFAULT_EPOCH
    assert meta["properties"]["os"] == "BusyBox"
    assert meta["properties"]["description"]
    assert meta["pirus"] == {
        "name": "fastq-count",
        "version": "1.0.0",
        "description": meta["pirus"]["description"],
        "license": "AGPL-3.0-or-later",
        "developers": ["Pirus developers"],
        "pirus_api": "1",
        "run": "/pipeline/run.sh",
        "limits": {"cpu": 1, "memory": "256MiB"},
        "form": "/pipeline/form.json",
        "icon": "/pipeline/icon.png",
        "inputs": "/pipeline/inputs",
        "outputs": "/pipeline/outputs",
        "logs": "/pipeline/logs",
        "databases": "/pipeline/databases",
        "notify": False,  # its run.sh reports progress through the file, never the URL
    }
    # Deterministic YAML: keys sorted.
    text = read_member(fastq_package, "metadata.yaml").decode()
    top = [line.split(":")[0] for line in text.splitlines() if line and not line[0].isspace()]
    assert top == sorted(top)


@needs_busybox
def test_busybox_rootfs_entries() -> None:
    entries = busybox_rootfs_entries()
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    by_path = {e.path: e for e in entries}
    assert by_path["bin/busybox"].kind == "file"
    assert by_path["sbin/init"].kind == "symlink"
    assert by_path["sbin/init"].linkname == "/bin/busybox"
    assert by_path["usr/bin"].kind == "dir"  # parents of applet links exist


def test_busybox_must_be_static(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="dynamically linked"):
        busybox_rootfs_entries(Path("/bin/ls"))
    with pytest.raises(BuildError, match="not found"):
        busybox_rootfs_entries(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# Manifest defaults and files
# ---------------------------------------------------------------------------------------------


@needs_busybox
def test_from_parts_defaults_and_modes(tmp_path: Path) -> None:
    tool = tmp_path / "tool.py"
    tool.write_text("print('hi')\n")
    package = build_package_from_parts(
        {"name": "demo", "job": "/pipeline/run.sh --fast", "version": "2"},
        {
            "/pipeline/run.sh": b"#!/bin/sh\necho run\n",
            "/pipeline/form.json": b'{"type": "object"}',
            "/pipeline/icon.png": b"\x89PNG fake",
            "/usr/local/bin/tool": tool,
            "/opt/data/ref.txt": b"ACGT\n",
        },
        tmp_path / "demo.tar.gz",
        extra_metadata={"properties": {"extra": "yes"}, "expiry_date": 0},
    )
    meta = metadata(package)
    pirus = meta["pirus"]
    assert pirus["run"] == "/pipeline/run.sh --fast" and "job" not in pirus
    assert pirus["form"] == "/pipeline/form.json"
    assert pirus["icon"] == "/pipeline/icon.png"
    assert pirus["inputs"] == "/pipeline/inputs" and pirus["databases"] == "/pipeline/databases"
    assert pirus["pirus_api"] == "1"
    assert meta["properties"]["extra"] == "yes" and meta["properties"]["os"] == "BusyBox"
    assert meta["expiry_date"] == 0
    found = members(package)
    assert found["rootfs/pipeline/run.sh"].mode == 0o755
    assert found["rootfs/usr/local/bin/tool"].mode == 0o755
    assert found["rootfs/opt/data/ref.txt"].mode == 0o644
    assert found["rootfs/opt"].isdir() and found["rootfs/usr/local"].isdir()
    assert read_member(package, "rootfs/usr/local/bin/tool") == b"print('hi')\n"


@needs_busybox
def test_custom_folders_are_created(tmp_path: Path) -> None:
    package = build_package_from_parts(
        {"name": "x", "run": "true", "inputs": "/data/in", "outputs": "/data/out/"},
        {}, tmp_path / "x.tar")
    found = members(package)
    assert found["rootfs/data/in"].isdir() and found["rootfs/data/out"].isdir()
    assert metadata(package)["pirus"]["outputs"] == "/data/out"


@needs_busybox
def test_build_package_files_mapping(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "a.txt").write_text("a")
    (src / "lib" / "b.sh").write_text("echo b")
    (src / "main.sh").write_text("echo main")
    (src / "form.json").write_text('{"type": "object", "properties": {}}')
    (src / "icon.png").write_bytes(b"\x89PNG")
    (src / "pirus.yaml").write_text(yaml.safe_dump({
        "name": "mapped",
        "run": "/opt/main.sh",
        "form": "/opt/form.json",
        "files": {
            "/opt/main.sh": "main.sh",
            "/opt/lib": "lib",
            "/opt/secret": {"source": "lib/a.txt", "mode": 0o600},
            "/pipeline/icon.png": None,  # suppress the default icon
        },
        "metadata": {"properties": {"source": "test"}},
    }))
    package = build_package(src, tmp_path / "mapped.tgz")
    found = members(package)
    assert found["rootfs/opt/main.sh"].mode == 0o755
    assert found["rootfs/opt/lib/a.txt"].isfile() and found["rootfs/opt/lib/b.sh"].mode == 0o755
    assert found["rootfs/opt/secret"].mode == 0o600
    assert found["rootfs/opt/form.json"].isfile()  # default form.json follows pirus.form
    assert "rootfs/pipeline/form.json" not in found
    assert "rootfs/pipeline/icon.png" not in found
    meta = metadata(package)
    assert meta["pirus"]["form"] == "/opt/form.json" and "icon" not in meta["pirus"]
    assert meta["properties"]["source"] == "test"
    assert "files" not in meta["pirus"] and "base" not in meta["pirus"]


@needs_busybox
@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        ({"run": "true"}, {}, "pirus.name: required"),
        ({"name": "x"}, {}, "pirus.run: required"),
        ({"name": "x", "run": "true", "form": "/pipeline/form.json"}, {},
         "not a regular file in the rootfs"),
        ({"name": "x", "run": "/pipeline/missing.sh"}, {}, "missing.sh is not a file"),
        ({"name": "x", "run": "true"}, {"/pipeline/form.json": b"{nope"}, "not valid JSON"),
        ({"name": "x", "run": "true"}, {"/pipeline/form.json": b'{"type": 12}'},
         "not a valid JSON Schema"),
        ({"name": "x", "run": "true"}, {"relative/path": b""}, "must be absolute"),
        ({"name": "x", "run": "true"}, {"/tmp": b"file over a folder"}, "is a folder"),
        ({"name": "x", "run": "true", "version": 1.1}, {}, "quote it"),
    ],
)
def test_build_errors(tmp_path: Path, manifest: dict, files: dict, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        build_package_from_parts(manifest, files, tmp_path / "bad.tar")
    assert list(tmp_path.iterdir()) == []  # no partial output left behind


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end in"):
        build_package_from_parts({"name": "x", "run": "true"}, {}, tmp_path / "x.zip")


# ---------------------------------------------------------------------------------------------
# validate_manifest
# ---------------------------------------------------------------------------------------------


def test_validate_manifest_accepts_valid() -> None:
    good = {
        "name": "ok", "run": "/pipeline/run.sh", "version": "1.0", "description": "d",
        "license": "MIT", "developers": ["a", "b"], "pirus_api": "1",
        "inputs": "/in", "outputs": "/out", "logs": "/logs", "databases": "/db",
        "form": "/pipeline/form.json", "icon": "/pipeline/icon.png",
        "limits": {"cpu": 2, "memory": "512MiB", "processes": 100},
        "unknown_future_key": {"kept": True},
    }
    assert validate_manifest(good) == []
    assert validate_manifest({"pirus": good, "architecture": "x86_64"}) == []
    assert validate_manifest({"name": "ok", "job": "true"}) == []
    assert validate_manifest({"name": "ok", "run": ["/bin/echo", "hi"]}) == []
    for limits in ({"cpu": "0-3"}, {"cpu": "2"}, {"memory": 1 << 30}, {"memory": "50%"},
                   {"memory": "2GB"}):
        assert validate_manifest({"name": "ok", "run": "true", "limits": limits}) == [], limits


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({}, ["pirus.name: required", "pirus.run: required"]),
        ({"architecture": "x86_64", "properties": {}}, ["pirus: required"]),
        ({"pirus": "nope"}, ["pirus: must be a mapping"]),
        ({"pirus": {"run": "true"}}, ["pirus.name: required"]),
        ({"name": "", "run": " "}, ["pirus.name: must not be empty",
                                    "pirus.run: must not be empty"]),
        ({"name": 3, "run": "true"}, ["pirus.name: must be a string"]),
        ({"name": "a\nb", "run": "true"}, ["pirus.name: must be a single line"]),
        ({"name": "x", "run": "true", "job": "false"}, ["pirus.job: conflicts"]),
        ({"name": "x", "run": "true", "version": 1.0}, ["pirus.version: must be a string"]),
        ({"name": "x", "run": "true", "developers": [1]}, ["pirus.developers"]),
        ({"name": "x", "run": "true", "pirus_api": True}, ["pirus.pirus_api"]),
        ({"name": "x", "run": "true", "inputs": "data/in"}, ["pirus.inputs: must be an absolute"]),
        ({"name": "x", "run": "true", "outputs": "/a/../b"}, ["pirus.outputs: must be an abs"]),
        ({"name": "x", "run": "true", "logs": 7}, ["pirus.logs: must be an absolute"]),
        ({"name": "x", "run": "true", "databases": "/"}, ["pirus.databases: must not be the"]),
        ({"name": "x", "run": "true", "form": "form.json"}, ["pirus.form: must be an absolute"]),
        ({"name": "x", "run": "true", "icon": "icon.png"}, ["pirus.icon: must be an absolute"]),
        ({"name": "x", "run": "true", "limits": "2"}, ["pirus.limits: must be a mapping"]),
        ({"name": "x", "run": "true", "limits": {"gpu": 1}}, ["pirus.limits.gpu: unknown"]),
        ({"name": "x", "run": "true", "limits": {"cpu": 0}}, ["pirus.limits.cpu: must be at"]),
        ({"name": "x", "run": "true", "limits": {"cpu": "many"}}, ["pirus.limits.cpu:"]),
        ({"name": "x", "run": "true", "limits": {"memory": "lots"}}, ["pirus.limits.memory:"]),
        ({"name": "x", "run": "true", "limits": {"memory": -1}}, ["pirus.limits.memory:"]),
        ({"name": "x", "run": "true", "limits": {"processes": 0}}, ["pirus.limits.processes"]),
        ({"name": "x", "run": "true", "documents": "README"}, ["pirus.documents: must be"]),
    ],
)
def test_validate_manifest_problems(manifest: dict, expected: list[str]) -> None:
    problems = validate_manifest(manifest)
    assert len(problems) == len(expected), problems
    for problem, prefix in zip(problems, expected, strict=True):
        assert problem.startswith(prefix), (problem, prefix)


def test_validate_manifest_not_a_mapping() -> None:
    assert validate_manifest(["name"]) == ["manifest: must be a mapping"]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------------------


@needs_busybox
@pytest.mark.parametrize(
    ("name", "compression", "magic"),
    [
        ("p.tar", None, None),
        ("p.tar.gz", None, b"\x1f\x8b"),
        ("p.tgz", None, b"\x1f\x8b"),
        ("p.tar.xz", None, b"\xfd7zXZ\x00"),
        ("p.tar", "gzip", b"\x1f\x8b"),
        ("p.tar.gz", "none", None),
        ("p.img", "xz", b"\xfd7zXZ\x00"),
    ],
)
def test_compression(tmp_path: Path, name: str, compression: str | None, magic: bytes | None
                     ) -> None:
    package = build_package_from_parts({"name": "c", "run": "true"}, {}, tmp_path / name,
                                       compression=compression)
    head = package.read_bytes()[:512]
    if magic is None:
        assert head[257:262] == b"ustar"
    else:
        assert head.startswith(magic)
    if magic == b"\x1f\x8b":
        # No FNAME flag (bit 3) and mtime 0 in the gzip header.
        assert head[3] & 0x08 == 0 and head[4:8] == b"\0\0\0\0"
    assert "rootfs/bin/busybox" in members(package)


# ---------------------------------------------------------------------------------------------
# Other bases
# ---------------------------------------------------------------------------------------------


def base_rootfs(path: Path) -> Path:
    """A made-up merged-/usr rootfs, as .tar.xz, with links and a device node."""
    return make_tar(path, [
        ("./", "dir", None),
        ("./usr/bin/sh", "file", b"#!fake shell\n"),
        ("./usr/bin/dash", "hardlink", "./usr/bin/sh"),
        ("./usr/bin/ash", "hardlink", "./usr/bin/sh"),
        ("./bin", "symlink", "usr/bin"),
        ("./usr/lib/escape", "symlink", "../../../../usr/bin/sh"),
        ("./etc/os-release", "file", b"ID=made-up\n"),
        ("./dev/null", "chr", None),
        ("./run/fifo", "fifo", None),
        ("./srv/deep/file.txt", "file", b"parents are missing\n"),
    ])


def test_tar_xz_base(tmp_path: Path) -> None:
    base = base_rootfs(tmp_path / "rootfs.tar.xz")
    out = tmp_path / "out"
    out.mkdir()
    package = build_package_from_parts(
        {"name": "based", "run": "/bin/tool"}, {"/bin/tool": b"#!/bin/sh\n",
                                                "/pipeline/form.json": b"{}"},
        out / "based.tar.gz", base=str(base))
    found = members(package)
    # Merged /usr: /bin/tool lands in usr/bin, next to the /bin -> usr/bin symlink.
    assert found["rootfs/bin"].issym()
    assert found["rootfs/usr/bin/tool"].isfile() and "rootfs/bin/tool" not in found
    # Hardlinks point at a member written before them (the smallest name of the group).
    assert found["rootfs/usr/bin/ash"].isfile()
    assert found["rootfs/usr/bin/dash"].islnk()
    assert found["rootfs/usr/bin/dash"].linkname == "rootfs/usr/bin/ash"
    assert found["rootfs/usr/bin/sh"].linkname == "rootfs/usr/bin/ash"
    # Escaping relative symlink made absolute; devices and fifos dropped; parents synthesised.
    assert found["rootfs/usr/lib/escape"].linkname == "/usr/bin/sh"
    assert "rootfs/dev/null" not in found and "rootfs/run/fifo" not in found
    assert found["rootfs/srv"].isdir() and found["rootfs/srv/deep"].mode == 0o755
    assert found["rootfs/pipeline/inputs"].isdir()
    for m in found.values():
        assert m.uname == "" and m.mtime == DEFAULT_EPOCH
    meta = metadata(package)
    assert meta["properties"]["os"] == "custom"
    assert meta["pirus"]["form"] == "/pipeline/form.json"
    # The temporary decompressed copy of the base is gone.
    assert sorted(p.name for p in out.iterdir()) == ["based.tar.gz"]
    # Extraction works (the hardlinks resolve) and is reproducible.
    with tarfile.open(package) as tar:
        tar.extractall(tmp_path / "x", filter="tar")
    assert (tmp_path / "x/rootfs/usr/bin/dash").read_bytes() == b"#!fake shell\n"
    again = build_package_from_parts(
        {"name": "based", "run": "/bin/tool"}, {"/bin/tool": b"#!/bin/sh\n",
                                                "/pipeline/form.json": b"{}"},
        tmp_path / "again.tar.gz", base=str(base))
    assert sha256(again) == sha256(package)


def test_base_without_sh(tmp_path: Path) -> None:
    base = make_tar(tmp_path / "r.tar.gz", [("etc/hostname", "file", b"x\n")], mode="w:gz")
    with pytest.raises(BuildError, match="no /bin/sh"):
        build_package_from_parts({"name": "x", "run": "true"}, {}, tmp_path / "x.tar",
                                 base=str(base))


def test_missing_base(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such file"):
        build_package_from_parts({"name": "x", "run": "true"}, {}, tmp_path / "x.tar",
                                 base=str(tmp_path / "nope.tar"))


@needs_busybox
def test_package_as_base_keeps_templates(tmp_path: Path) -> None:
    first = build_package_from_parts(
        {"name": "first", "run": "true"}, {"/opt/first.txt": b"1"}, tmp_path / "first.tar",
        extra_metadata={"templates": {"/etc/hostname": {"when": ["create"],
                                                       "template": "hostname.tpl"}}})
    # Add a template to the first package by hand (the builder does not create templates).
    with tarfile.open(first, "a") as tar:
        template = b"{{ container.name }}\n"
        info = tarfile.TarInfo("templates/hostname.tpl")
        info.size = len(template)
        tar.addfile(info, io.BytesIO(template))
    second = build_package_from_parts({"name": "second", "run": "true"},
                                      {"/opt/second.txt": b"2"}, tmp_path / "second.tar.xz",
                                      base=str(first))
    found = members(second)
    assert "rootfs/opt/first.txt" in found and "rootfs/opt/second.txt" in found
    assert found["templates/hostname.tpl"].isfile()
    meta = metadata(second)
    assert meta["pirus"]["name"] == "second"
    assert meta["templates"]["/etc/hostname"]["template"] == "hostname.tpl"
    assert meta["properties"]["os"] == "BusyBox"


@needs_busybox
def test_installer_accepts_built_packages(fastq_package: Path, tmp_path: Path) -> None:
    """The install path (pirus_jupyter.packaging.inspect) reads what the builder writes."""
    packages = pytest.importorskip("pirus_jupyter.packaging.inspect")
    info = packages.inspect_package(fastq_package, 1 << 30)
    assert info.manifest["name"] == "fastq-count"
    assert info.form is not None and json.loads(info.form)["properties"]["min_length"]
    assert info.icon is not None and info.icon.startswith(b"\x89PNG")
    noop = build_package(NOOP, tmp_path / "noop.tar.xz")
    assert packages.inspect_package(noop, 1 << 30).manifest["run"] == "true"


# ---------------------------------------------------------------------------------------------
# The fastq-count example
# ---------------------------------------------------------------------------------------------


FASTQ = (
    "@r1\nACGT\n+\nIIII\n"
    "@r2\nACGTACGTAC\n+\nIIIIIIIIII\n"
    "@r3\nAC\n+\nII\n\n"
)


def test_fastq_count_form_is_draft7() -> None:
    from jsonschema import Draft7Validator

    schema = json.loads((FASTQ_COUNT / "form.json").read_text())
    Draft7Validator.check_schema(schema)
    option = schema["properties"]["min_length"]
    assert (option["type"], option["minimum"], option["default"]) == ("integer", 0, 0)
    assert schema["title"] and schema["description"]
    assert (FASTQ_COUNT / "icon.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@needs_busybox
def test_fastq_count_script_on_host(tmp_path: Path) -> None:
    """run.sh under the host's busybox sh (same applets as in the image)."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "b.fastq").write_text(FASTQ)
    (inputs / "a.fq.gz").write_bytes(gzip.compress(b"@x\r\nACG\r\n+\r\nIII\r\n"))
    (inputs / "notes.txt").write_text("ignored")
    (inputs / "config.json").write_text(json.dumps({"min_length": 3}, indent=2))
    progress = tmp_path / "progress.jsonl"
    env = {"PATH": "/usr/bin:/bin", "PIRUS_INPUTS_DIR": str(inputs),
           "PIRUS_OUTPUTS_DIR": str(outputs), "PIRUS_CONFIG_FILE": str(inputs / "config.json"),
           "PIRUS_PROGRESS_FILE": str(progress)}
    result = subprocess.run(["/bin/busybox", "sh", str(FASTQ_COUNT / "run.sh")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (outputs / "counts.tsv").read_text() == (
        "file\treads\tbases\na.fq.gz\t1\t3\nb.fastq\t2\t14\n")
    reports = [json.loads(line) for line in progress.read_text().splitlines()]
    assert reports[-1] == {"status": "FINISHING"}
    assert reports[-2] == {"progress": {"value": 2, "min": 0, "max": 2, "label": "b.fastq"}}

    (inputs / "bad.fastq").write_text("not fastq\n")
    result = subprocess.run(["/bin/busybox", "sh", str(FASTQ_COUNT / "run.sh")], env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "bad.fastq" in result.stderr
    assert not (outputs / "counts.tsv.tmp").exists()


# ---------------------------------------------------------------------------------------------
# LXD integration
# ---------------------------------------------------------------------------------------------


def lxc(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["lxc", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@contextmanager
def imported(package: Path) -> Iterator[str]:
    """Import ``package`` under a unique alias; remove what this created afterwards.

    Builds are reproducible, so another test (or a Pirus install) may already hold an image
    with this fingerprint: then only an alias is added, and only the alias removed.
    """
    alias = f"pirus-test-{uuid.uuid4().hex[:10]}"
    fingerprint = sha256(package)
    created_image = False
    result = lxc("image", "import", str(package), "--alias", alias, check=False)
    if result.returncode == 0:
        created_image = True
    elif "already exists" in result.stderr:
        lxc("image", "alias", "create", alias, fingerprint)
    else:
        raise AssertionError(f"lxc image import failed: {result.stderr.strip()}")
    try:
        assert lxc("image", "info", alias).stdout.count(fingerprint) == 1
        yield alias
    finally:
        if created_image:
            lxc("image", "delete", fingerprint, check=False)
        else:
            lxc("image", "alias", "delete", alias, check=False)


@contextmanager
def container(alias: str, *options: str) -> Iterator[str]:
    """A started unprivileged container without any network device (no profiles)."""
    name = f"pirus-test-{uuid.uuid4().hex[:10]}"
    try:
        lxc("init", alias, name, "--no-profiles", "--storage", "default",
            "-c", "security.privileged=false", *options)
        yield name
    finally:
        lxc("delete", "--force", name, check=False)


lxd = pytest.mark.skipif(not lxd_available(), reason="needs a running LXD daemon (lxc info)")


@pytest.mark.lxd
@lxd
@needs_busybox
def test_busybox_base_boots_in_lxd(tmp_path: Path) -> None:
    package = build_package(NOOP, tmp_path / "noop.tar.gz")
    with imported(package) as alias, container(alias) as name:
        lxc("start", name)
        assert lxc("exec", name, "--", "sh", "-c", "echo ok").stdout == "ok\n"
        # PID 1 is busybox init, alone: no getty, no askfirst shell.
        ps = lxc("exec", name, "--", "ps", "-o", "pid,comm").stdout.split("\n")[1:]
        commands = {line.split()[1] for line in ps if line.strip()} - {"ps"}
        assert commands == {"init"}, ps
        state = json.loads(lxc("list", name, "--format", "json").stdout)[0]["state"]
        assert set(state.get("network") or {}) <= {"lo"}  # no NIC at all
        # A clean `lxc stop` works too: busybox init handles LXD's SIGPWR.
        lxc("stop", name, "--timeout", "30")
        assert json.loads(lxc("list", name, "--format", "json").stdout)[0]["status"] == "Stopped"
        lxc("start", name)
        lxc("stop", name, "--force")


@pytest.mark.lxd
@lxd
@needs_busybox
def test_fastq_count_runs_in_lxd(fastq_package: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    inputs.chmod(0o755)
    (inputs / "reads.fastq").write_text(FASTQ)
    (inputs / "config.json").write_text(json.dumps({"min_length": 0}))
    for path in inputs.iterdir():
        path.chmod(0o644)  # host root's files appear as nobody in the container: keep readable
    run = metadata(fastq_package)["pirus"]["run"]
    with imported(fastq_package) as alias, container(alias) as name:
        lxc("config", "device", "add", name, "inputs", "disk", f"source={inputs}",
            "path=/pipeline/inputs", "readonly=true")
        lxc("start", name)
        # A second input pushed with `lxc file push` into a writable folder.
        extra = tmp_path / "more.fq"
        extra.write_text("@z\nACGTA\n+\nIIIII\n")
        lxc("exec", name, "--", "mkdir", "-p", "/tmp/more")
        lxc("file", "push", str(extra), f"{name}/tmp/more/more.fq")
        env = ["--env", "PIRUS_CONFIG_FILE=/pipeline/inputs/config.json",
               "--env", "PIRUS_PROGRESS_FILE=/tmp/progress.jsonl",
               "--env", "PIRUS_OUTPUTS_DIR=/pipeline/outputs"]
        result = lxc("exec", name, *env, "--", "/bin/sh", "-c",
                     f"cd /pipeline/outputs && {run}", check=False)
        assert result.returncode == 0, result.stderr
        counts = lxc("exec", name, "--", "cat", "/pipeline/outputs/counts.tsv").stdout
        assert counts == "file\treads\tbases\nreads.fastq\t3\t16\n"
        progress = [json.loads(line) for line in lxc(
            "exec", name, "--", "cat", "/tmp/progress.jsonl").stdout.splitlines()]
        assert {"progress": {"value": 1, "min": 0, "max": 1, "label": "reads.fastq"}} in progress
        assert progress[-1] == {"status": "FINISHING"}

        # Inputs elsewhere (PIRUS_INPUTS_DIR) and a config option read without jq.
        lxc("exec", name, "--", "sh", "-c", 'echo \'{"min_length": 5}\' > /tmp/more/config.json')
        result = lxc("exec", name, "--env", "PIRUS_INPUTS_DIR=/tmp/more", "--env",
                     "PIRUS_CONFIG_FILE=/tmp/more/config.json", "--", "/bin/sh", "-c",
                     f"cd /pipeline/outputs && {run}", check=False)
        assert result.returncode == 0, result.stderr
        counts = lxc("exec", name, "--", "cat", "/pipeline/outputs/counts.tsv").stdout
        assert counts == "file\treads\tbases\nmore.fq\t1\t5\n"
        # The inputs are read-only inside the container.
        denied = lxc("exec", name, "--", "touch", "/pipeline/inputs/x", check=False)
        assert denied.returncode != 0
    assert alias not in lxc("image", "alias", "list", "--format", "csv").stdout


@pytest.mark.lxd
@lxd
@needs_busybox
def test_lxd_image_as_base(tmp_path: Path) -> None:
    noop = build_package(NOOP, tmp_path / "noop.tar.gz")
    with imported(noop) as alias:
        manifest = {"name": "on-noop", "run": "/pipeline/run.sh"}
        files = {"/pipeline/run.sh": b"#!/bin/sh\necho hi\n"}
        first = build_package_from_parts(manifest, files, tmp_path / "a.tar.xz",
                                         base=f"lxd:{alias}")
        second = build_package_from_parts(manifest, files, tmp_path / "b.tar.xz",
                                          base=f"lxd:{alias}")
    assert sha256(first) == sha256(second)
    found = members(first)
    assert found["rootfs/bin/busybox"].isfile() and found["rootfs/pipeline/run.sh"].mode == 0o755
    meta = metadata(first)
    assert meta["pirus"]["name"] == "on-noop" and meta["properties"]["os"] == "BusyBox"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.xz", "b.tar.xz", "noop.tar.gz"]
    with pytest.raises(BuildError, match="lxc image export"):
        build_package_from_parts(manifest, files, tmp_path / "c.tar",
                                 base=f"lxd:no-such-image-{uuid.uuid4().hex[:8]}")
