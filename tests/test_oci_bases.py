"""Pipelines whose base is an OCI image (``oci:DIR:TAG``, ``oci-archive:``, ``docker-archive:``).

Test images are made here without network, with umoci and skopeo (the tools a researcher's
image would have come from a registry with): a busybox "tool" image of two layers, the second
whiting out a file of the first, with Env, WorkingDir, User, Entrypoint and Cmd in its config;
and a "static" image holding a single static binary (no /sbin/init, no /bin/sh). Both are built
with ``jupyter pirus build``, installed on a real server and run on LXD to DONE: what the run
writes proves the config reached it. Bad images fail the build in one line, with exit 1 and
nothing left behind.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import requires_lxd, wait_for

from pirus_jupyter.errors import InvalidPackage
from pirus_jupyter.packaging.build import BuildError, build_package
from pirus_jupyter.packaging.manifest import normalize_manifest
from pirus_jupyter.packaging.oci import _apply_layer, _settle_hardlinks, host_architecture
from pirus_jupyter.packaging.rootfs import RootfsEntry
from pirus_jupyter.packaging.validate import validate_package
from pirus_jupyter.runs import wrapper

BUSYBOX = Path("/bin/busybox")
requires_tools = pytest.mark.skipif(
    not (shutil.which("umoci") and shutil.which("skopeo") and BUSYBOX.is_file()),
    reason="needs umoci, skopeo and a static busybox")

REPORT = """#!/bin/sh
# Writes what the image's config gave the run: folder, environment, arguments, user.
out="$PIRUS_OUTPUTS_DIR/report.txt"
{
  echo "pwd=$(pwd)"
  echo "FOO=$FOO"
  echo "argc=$#"
  for a in "$@"; do echo "arg=$a"; done
  echo "uid=$(id -u)"
  echo "data=$(ls /data | tr '\\n' ' ')"
} >"$out"
"""


def sh(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pirus_jupyter.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _repack(layout: Path, bundle: Path, tag: str) -> None:
    sh("umoci", "repack", "--image", f"{layout}:{tag}", bundle)


def _tool_image(layout: Path, work: Path) -> None:
    """Two layers: a busybox rootfs with /data/{secret,keep}.txt and a report script; then
    secret.txt removed (a whiteout) and added.txt added. Config: Env, WorkingDir, User,
    Entrypoint (a bare name found on the image's PATH) and Cmd."""
    bundle = work / "tool-bundle"
    sh("umoci", "new", "--image", f"{layout}:tool")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:tool", bundle)
    root = bundle / "rootfs"
    for folder in ("bin", "sbin", "etc", "data", "usr/local/bin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "ls", "tr", "id"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin" / "init").symlink_to("/bin/busybox")
    (root / "etc" / "inittab").write_text("::sysinit:/bin/true\n")
    (root / "data" / "secret.txt").write_text("must be whited out\n")
    (root / "data" / "keep.txt").write_text("kept\n")
    report = root / "usr" / "local" / "bin" / "report"
    report.write_text(REPORT)
    report.chmod(0o755)
    _repack(layout, bundle, "tool")
    # Unpacked again: umoci adds a layer to the image a bundle was unpacked from.
    upper = work / "tool-bundle-2"
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:tool", upper)
    (upper / "rootfs" / "data" / "secret.txt").unlink()
    (upper / "rootfs" / "data" / "added.txt").write_text("second layer\n")
    _repack(layout, upper, "tool")
    sh("umoci", "config", "--image", f"{layout}:tool", "--config.env", "FOO=bar baz",
       "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin", "--config.workingdir", "/data",
       "--config.user", "1000:1000", "--config.entrypoint", "report",
       "--config.cmd", "first", "--config.cmd", "second arg")
    # The same image for another architecture.
    sh("umoci", "config", "--image", f"{layout}:tool", "--tag", "arm", "--architecture", "arm64")
    # Like most BioContainers images: a shell but no init (a third layer whites it out).
    bundle = work / "noinit-bundle"
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:tool", bundle)
    (bundle / "rootfs" / "sbin" / "init").unlink()
    (bundle / "rootfs" / "etc" / "inittab").unlink()
    sh("umoci", "repack", "--image", f"{layout}:noinit", bundle)


def _static_image(layout: Path, work: Path) -> None:
    """One static binary under another name, nothing else: no /sbin/init, no /bin/sh."""
    bundle = work / "static-bundle"
    sh("umoci", "new", "--image", f"{layout}:static")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:static", bundle)
    tool = bundle / "rootfs" / "opt" / "tool" / "busybox-tool"
    tool.parent.mkdir(parents=True)
    shutil.copy(BUSYBOX, tool)
    _repack(layout, bundle, "static")
    sh("umoci", "config", "--image", f"{layout}:static", "--config.env", "GREETING=hello",
       "--config.workingdir", "/opt/tool", "--config.entrypoint", "/opt/tool/busybox-tool",
       "--config.cmd", "sh", "--config.cmd", "-c",
       "--config.cmd", 'echo "$GREETING from $(pwd)" >"$PIRUS_OUTPUTS_DIR/hello.txt"')
    # The same without Entrypoint and Cmd: nothing to run unless pirus.yaml says.
    sh("umoci", "config", "--image", f"{layout}:static", "--tag", "bare",
       "--clear=config.entrypoint", "--clear=config.cmd")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path | str]:
    """The test images, made once per session: an OCI layout, a docker-archive of the tool
    image and an oci-archive of the static one."""
    work = tmp_path_factory.mktemp("oci")
    layout = work / "layout"
    sh("umoci", "init", "--layout", layout)
    _tool_image(layout, work)
    _static_image(layout, work)
    docker = work / "tool-docker.tar"
    archive = work / "static-oci.tar"
    sh("skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:tool",
       f"docker-archive:{docker}:pirus/tool:1.0")
    sh("skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:static",
       f"oci-archive:{archive}:static")
    return {"layout": layout, "docker": docker, "archive": archive, "work": work}


def project(folder: Path, base: str, **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": folder.name, "version": "1.0", "base": base, **fields}
    (folder / "pirus.yaml").write_text(yaml.safe_dump(spec))
    return folder


def package_members(package: Path) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    with tarfile.open(package) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        stream = tar.extractfile(members["metadata.yaml"])
        assert stream is not None
        metadata = yaml.safe_load(stream.read())
    return metadata, members


@pytest.fixture(scope="session")
def built(images, tmp_path_factory) -> dict[str, Any]:
    """The pipelines built by the CLI: the tool image from its docker-archive, the static one
    from its oci-archive; and in-process from the layout, the tool image (to compare) and
    the one without init."""
    work = tmp_path_factory.mktemp("oci-build")
    out: dict[str, Any] = {}
    for name in ("tool-layout", "noinit"):
        tag = "tool" if name == "tool-layout" else name
        out[name] = build_package(project(work / name, f"oci:{images['layout']}:{tag}"),
                                  work / f"{name}.tar.gz")
    for name, base in (("tool", f"docker-archive:{images['docker']}"),
                       ("static", f"oci-archive:{images['archive']}")):
        started = time.monotonic()
        result = cli("build", project(work / name, base), "-o", work / f"{name}.tar.gz")
        assert result.returncode == 0, result.stderr
        out[name] = work / f"{name}.tar.gz"
        out[f"{name}-stderr"] = result.stderr
        out[f"{name}-seconds"] = time.monotonic() - started
    return out


# -- flattening, on synthetic layers ------------------------------------------------------------
def _layer(members: list[tuple[str, str]]) -> tarfile.TarFile:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind.startswith("link:"):
                info.type, info.linkname = tarfile.LNKTYPE, kind[5:]
                tar.addfile(info)
            elif kind.startswith("symlink:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind[8:]
                tar.addfile(info)
            else:
                info.size = len(kind)
                tar.addfile(info, io.BytesIO(kind.encode()))
    data.seek(0)
    return tarfile.open(fileobj=data, mode="r:")


def test_layers_flatten_with_whiteouts_and_opaque_folders():
    entries: dict[str, RootfsEntry] = {}
    links: dict[str, RootfsEntry] = {}
    _apply_layer(entries, _layer([("a", "dir"), ("a/x", "x"), ("a/sub", "dir"),
                                  ("a/sub/y", "y"), ("b", "dir"), ("b/old", "o"),
                                  ("c", "c"), ("d", "dir"), ("d/deep", "q")]), links)
    _apply_layer(entries, _layer([("a/.wh.x", ""), ("b/.wh..wh..opq", ""), ("b/new", "n"),
                                  (".wh.d", ""), ("c", "dir"), ("c/inside", "i")]), links)
    assert sorted(entries) == ["a", "a/sub", "a/sub/y", "b", "b/new", "c", "c/inside"]
    # A whiteout hides lower layers only: a file of the same layer stays.
    _apply_layer(entries, _layer([("e", "e"), (".wh.e", "")]), links)
    assert "e" in entries


def test_layers_unpack_through_symlinked_folders_and_keep_hardlinked_content():
    entries: dict[str, RootfsEntry] = {}
    links: dict[str, RootfsEntry] = {}
    _apply_layer(entries, _layer([("usr", "dir"), ("usr/lib", "dir"), ("lib", "symlink:usr/lib"),
                                  ("usr/lib/a", "old"), ("usr/lib/b", "link:usr/lib/a")]), links)
    # lib/x lands in usr/lib (lib is a link to it); a and its link b are then told apart.
    _apply_layer(entries, _layer([("lib/x", "x"), ("lib/a", "new"), ("lib/.wh.gone", "")]),
                 links)
    _settle_hardlinks(entries, links)
    assert "usr/lib/x" in entries and "lib/x" not in entries
    assert entries["usr/lib/a"].size == 3 and entries["usr/lib/a"].source.member.name == "lib/a"
    assert entries["usr/lib/b"].kind == "file"  # still the first layer's a
    assert entries["usr/lib/b"].source.member.name == "usr/lib/a"
    with pytest.raises(BuildError, match="unsafe member name"):
        _apply_layer(entries, _layer([("../escape", "x")]), links)


# -- build -------------------------------------------------------------------------------------
@requires_tools
def test_image_config_becomes_the_manifest(built, images):
    metadata, members = package_members(built["tool"])
    pirus = metadata["pirus"]
    assert pirus["env"] == {"FOO": "bar baz", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert pirus["workdir"] == "/data"
    # The bare entrypoint is resolved on the image's PATH; Cmd follows, quoted.
    assert pirus["run"] == "/usr/local/bin/report first 'second arg'"
    assert "shell" not in pirus  # the image has /bin/sh and /sbin/init: nothing added
    assert "Reading layer 2/2" in built["tool-stderr"]  # the long steps are told
    image = pirus["provenance"]["image"]
    assert image["tags"] == ["docker.io/pirus/tool:1.0"]
    assert image["source"] == "docker-archive:tool-docker.tar"
    assert image["digest"].startswith("sha256:") and image["user"] == "1000:1000"
    assert image["architecture"] == host_architecture()
    assert "rootfs/data/secret.txt" not in members  # whited out by the second layer
    assert {"rootfs/data/keep.txt", "rootfs/data/added.txt"} <= set(members)
    assert not any(n.startswith("rootfs/.pirus-tools") for n in members)
    # The same image read from its OCI layout: the same rootfs and config.
    other, other_members = package_members(built["tool-layout"])
    assert set(other_members) == set(members)
    assert other["pirus"]["run"] == pirus["run"]
    assert other["pirus"]["env"] == pirus["env"]
    assert other["pirus"]["provenance"]["image"]["tags"] == ["tool"]


@requires_tools
def test_static_image_gets_pirus_init_and_shell(built):
    metadata, members = package_members(built["static"])
    pirus = metadata["pirus"]
    assert pirus["shell"] == "/.pirus-tools/sh"
    assert pirus["run"].startswith("/opt/tool/busybox-tool sh -c ")
    assert members["rootfs/sbin/init"].linkname == "/.pirus-tools/busybox"
    assert members["rootfs/.pirus-tools/busybox"].isfile()
    assert members["rootfs/opt/tool/busybox-tool"].size == BUSYBOX.stat().st_size
    assert "rootfs/bin/sh" not in members  # the image's own tree is left as it was
    assert pirus["provenance"]["image"]["tags"] == ["static"]


@requires_tools
def test_validate_and_run_from_pirus_yaml(images, tmp_path):
    """validate accepts an OCI project without run; pirus.yaml's fields win over the image's
    (env merged by name) and a second build is byte-identical."""
    folder = project(tmp_path / "over", f"oci:{images['layout']}:tool",
                     env={"FOO": "mine", "EXTRA": "1"}, workdir="/pipeline/outputs")
    result = cli("validate", folder)
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    build_package(folder, first)
    build_package(folder, second)
    assert first.read_bytes() == second.read_bytes()
    pirus = package_members(first)[0]["pirus"]
    assert pirus["env"] == {"FOO": "mine", "EXTRA": "1", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert pirus["workdir"] == "/pipeline/outputs"


def _corrupt(images: dict[str, Any], folder: Path) -> str:
    data = Path(images["docker"]).read_bytes()
    (folder / "corrupt.tar").write_bytes(data[: len(data) // 2])
    return "docker-archive:corrupt.tar"


def _not_oci(images: dict[str, Any], folder: Path) -> str:
    with tarfile.open(folder / "plain.tar", "w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
    return "oci-archive:plain.tar"


BAD = {
    "corrupt archive": (_corrupt, "the archive is truncated or corrupt"),
    "not an OCI archive": (_not_oci, "not an OCI image (no index.json)"),
    "missing tag": (lambda images, _f: f"oci:{images['layout']}:nope", "no image with this tag"),
    "other architecture": (lambda images, _f: f"oci:{images['layout']}:arm",
                           "the image is for arm64 architecture, this host runs "
                           + host_architecture()),
    "missing file": (lambda _i, _f: "oci-archive:nowhere.tar", "nowhere.tar not found"),
    "no path": (lambda _i, _f: "oci-archive:", "base: oci-archive: needs a path"),
    "nothing to run": (lambda images, _f: f"oci:{images['layout']}:bare",
                       "pirus.run: required (the image has no Entrypoint or Cmd to run)"),
    "not a docker archive": (lambda i, f: _not_oci(i, f).replace("oci-archive", "docker-archive"),
                             "not a docker-archive (no manifest.json)"),
}


@requires_tools
@pytest.mark.parametrize("case", list(BAD))
def test_bad_images_fail_in_one_line(images, tmp_path, case):
    make, words = BAD[case]
    folder = tmp_path / "bad"
    folder.mkdir()
    project(folder, make(images, folder))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError) as caught:
        build_package(folder, out / "bad.tar.gz")
    message = str(caught.value)
    assert "\n" not in message and words in message, message
    assert list(out.iterdir()) == []  # no package, no temporary layers or layouts


@requires_tools
def test_bad_image_build_exits_1(images, tmp_path):
    """The CLI's words for a bad image: one line, exit 1."""
    folder = tmp_path / "bad"
    folder.mkdir()
    project(folder, _corrupt(images, folder))
    result = cli("build", "--quiet", folder, "-o", tmp_path / "bad.tar.gz")
    assert result.returncode == 1, result
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "not a readable image" in result.stderr
    assert not (tmp_path / "bad.tar.gz").exists()


def test_install_checks_the_new_fields():
    """Installing reads env, workdir and shell from an untrusted package: refused unless the
    schema accepts them (an exec with them would fail at every run)."""
    good = normalize_manifest({"pirus": {"name": "x", "run": "a", "env": {"A_1": "v w"},
                                         "workdir": "/w/./x", "shell": "/s/sh"}})
    assert (good["env"], good["workdir"], good["shell"]) == ({"A_1": "v w"}, "/w/x", "/s/sh")
    for bad in ({"env": {"A=B": "x"}}, {"env": {"A": 1}}, {"env": ["A=B"]},
                {"workdir": "relative"}, {"shell": "/x/../y"}):
        with pytest.raises(InvalidPackage):
            normalize_manifest({"pirus": {"name": "x", "run": "a", **bad}})


@requires_tools
def test_image_with_a_shell_but_no_init_gets_pirus_init_only(built):
    metadata, members = package_members(built["noinit"])
    assert "shell" not in metadata["pirus"]  # its own /bin/sh runs the command
    assert members["rootfs/sbin/init"].linkname == "/.pirus-tools/busybox"
    assert "rootfs/.pirus-tools/sh" not in members
    with tarfile.open(built["noinit"]) as tar:
        inittab = tar.extractfile("rootfs/etc/inittab")
        assert inittab is not None and b"Pirus busybox base" in inittab.read()


@requires_tools
def test_validate_accepts_the_built_packages(built):
    for name in ("tool", "static"):
        assert validate_package(Path(built[name])) == [], name


def test_wrapper_honours_env_workdir_and_shell():
    pipeline = {"lxd_inputs_path": "/i", "lxd_outputs_path": "/o", "lxd_logs_path": "/l",
                "lxd_db_path": "/d", "lxd_run_cmd": "tool",
                "manifest": {"env": {"PATH": "/opt/bin", "FOO": "x", "PIRUS_RUN_ID": "no"},
                             "workdir": "/work dir", "shell": "/.pirus-tools/sh"}}
    env = wrapper.environment(7, pipeline, None)
    assert env["PATH"] == "/opt/bin" and env["FOO"] == "x" and env["PIRUS_RUN_ID"] == "7"
    assert env["HOME"] == "/root"
    script = wrapper.wrapper_script(pipeline, loopback=False, heartbeat="", before_exit="")
    assert "cd '/work dir' || exit 125" in script
    assert wrapper.shell(pipeline) == "/.pirus-tools/sh"
    del pipeline["manifest"]
    assert wrapper.shell(pipeline) == "/bin/sh"
    assert "cd /o || exit 125" in wrapper.wrapper_script(pipeline, loopback=False,
                                                         heartbeat="", before_exit="")


# -- on LXD ------------------------------------------------------------------------------------
def _outputs(root: Path, run: dict[str, Any]) -> dict[str, str]:
    return {o["name"]: (root / o["path"]).read_text() for o in run["outputs"]}


@pytest.mark.lxd
@requires_lxd
@requires_tools
async def test_oci_pipelines_run_on_lxd(api, install, jp_root_dir, built):
    root = Path(jp_root_dir)
    ids = {}
    for name in ("tool", "static", "noinit"):
        pipeline = await install(built[name])
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"]})
        assert code == 201, run
        ids[name] = run["id"]
    runs = {}
    for name, run_id in ids.items():  # all at once: the server runs two in parallel
        runs[name] = await wait_for(api, "runs", run_id, timeout=120,
                                    until=lambda b: b["status"] in ("DONE", "ERROR"))
        assert runs[name]["status"] == "DONE", runs[name]
    report = _outputs(root, runs["tool"])["report.txt"]
    assert report == ("pwd=/data\nFOO=bar baz\nargc=2\narg=first\narg=second arg\n"
                      "uid=0\ndata=added.txt keep.txt \n")
    assert _outputs(root, runs["static"]) == {"hello.txt": "hello from /opt/tool\n"}
    assert _outputs(root, runs["noinit"])["report.txt"] == report

