"""What a hostile pipeline leaves behind (issue 19, items 2 and 9): after the run every output
is the server user's, with no setuid/setgid/sticky bit, no group or world write and no special
file, in a run folder only that user can enter; outputs over ``max_outputs`` or
``max_output_bytes`` end the run in ERROR with small API answers; a cancel during a long
FINISHING (hashing a large output) succeeds at once.

One real server and one hostile busybox pipeline for the module; what the pipeline does is
chosen by its config (``mode``). The unit tests at the top need no LXD.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd
from pkgbuild import build_pipeline, fastq
from server import ServerProcess

from pirus_jupyter.files import unique_input_names
from pirus_jupyter.runs.folder import RunPaths
from pirus_jupyter.runs.outputs import OutputLimits, secure_run_folder

HOSTILE_SCRIPT = r"""#!/bin/sh
out="$PIRUS_OUTPUTS_DIR"
mode=$(sed -n 's/.*"mode": *"\([^"]*\)".*/\1/p' "$PIRUS_CONFIG_FILE")
case "$mode" in
plant)
  cp /bin/busybox "$out/suid" && chmod 4755 "$out/suid"
  cp /bin/busybox "$out/sgid" && chmod 2775 "$out/sgid"
  ln "$out/suid" "$out/suid-link"
  mkdir "$out/open" && chmod 1777 "$out/open"
  echo x > "$out/open/anyone.txt" && chmod 666 "$out/open/anyone.txt"
  mkdir -p "$out/deep/er" && echo y > "$out/deep/er/f" && chmod 777 "$out/deep/er"
  mkfifo "$out/fifo" "$out/open/fifo2"
  mknod "$out/null" c 1 3 2>/dev/null && echo "mknod ALLOWED" >> "$out/tried.txt"
  ln "$PIRUS_INPUTS_DIR/a.fastq" "$out/input-link" 2>/dev/null && echo "link ALLOWED" \
    >> "$out/tried.txt"
  echo tried >> "$out/tried.txt"
  ln -s /etc/passwd "$out/passwd-link"
  chmod 4777 "$PIRUS_LOGS_DIR/out.log"
  mkfifo "$PIRUS_LOGS_DIR/extra.fifo"
  chmod 777 "$out"
  ;;
many)
  i=0
  while [ $i -lt 60 ]; do echo $i > "$out/file-$i.txt"; i=$((i+1)); done
  ;;
huge)
  truncate -s 200G "$out/huge.bin"
  ;;
slow)
  echo ok > "$out/small.txt"
  truncate -s 64G "$out/big.bin"
  ;;
esac
echo "mode $mode done"
"""
FORM = {"type": "object", "properties": {"mode": {"type": "string"}}}
MAX_OUTPUTS = 50
MAX_OUTPUT_BYTES = 100 * 1024**3


# -- unit level: no LXD --------------------------------------------------------------------------
def test_many_copies_of_one_input_are_named_in_linear_time():
    names = unique_input_names(["a.fastq"] * 16000 + ["a-3.fastq", "config.json"])
    assert names[:3] == ["a.fastq", "a-2.fastq", "a-3.fastq"]
    assert names[15999] == "a-16000.fastq"
    assert names[16000] == "a-3-2.fastq" and names[16001] == "config-2.json"
    assert len(set(names)) == len(names)
    # a name taken by an earlier one is skipped, exactly as before
    assert unique_input_names(["a-2.fastq", "a.fastq", "a.fastq", "a.fastq"]) == [
        "a-2.fastq", "a.fastq", "a-3.fastq", "a-4.fastq"]


def test_secure_run_folder_on_this_host(tmp_path):
    """A socket (busybox cannot make one in the container), a FIFO, a symlink, a setuid
    file, a world-writable folder and a hard link to a file outside the run folder."""
    paths = RunPaths.of({"root_path": str(tmp_path / "run")})
    for folder in (paths.inputs, paths.outputs, paths.logs, paths.state):
        folder.mkdir(parents=True)
    outside = tmp_path / "user-file.txt"
    outside.write_text("mine\n")
    outside.chmod(0o600)
    os.link(outside, paths.outputs / "linked.txt")
    (paths.outputs / "suid").write_bytes(b"x")
    (paths.outputs / "suid").chmod(0o4777)
    (paths.outputs / "open").mkdir()
    (paths.outputs / "open").chmod(0o1777)
    os.mkfifo(paths.outputs / "open" / "fifo")
    (paths.outputs / "link").symlink_to(outside)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(paths.outputs / "sock"))
    (paths.logs / "err.log").write_text("")
    scan = secure_run_folder(paths, 1, tmp_path, OutputLimits(10, 1000))
    assert sorted(f["name"] for f in scan.files) == ["linked.txt", "suid"]
    assert scan.removed_count == 3 and "outputs/sock" in scan.removed
    assert_safe(paths.outputs)
    assert outside.read_text() == "mine\n" and stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert outside.stat().st_nlink == 1  # the output became a copy of its own
    assert "removed 3 special file(s)" in (paths.logs / "err.log").read_text()
    # over a cap: counted, nothing listed
    assert secure_run_folder(paths, 1, tmp_path, OutputLimits(1, 1000)).problem(
        OutputLimits(1, 1000)).startswith("the pipeline wrote 2 output files")


def assert_safe(folder: Path) -> None:
    """Everything under ``folder`` (and itself): this user's, a regular file or folder, no
    s-bits, no group/world write."""
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), path
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), path
        assert st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0, path
        assert st.st_mode & 0o022 == 0, (path, oct(st.st_mode))


# -- a real server, a hostile pipeline ------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("hostile-outputs")
    root = base / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.fastq").write_bytes(fastq(3))
    build_pipeline(root / "hostile.tar.gz", name="hostile", script=HOSTILE_SCRIPT, form=FORM)
    server = ServerProcess(root, base / "data", max_parallel_runs=3, poll_interval=0.1,
                           max_outputs=MAX_OUTPUTS, max_output_bytes=MAX_OUTPUT_BYTES).start()
    try:
        session = server.session
        reply = session.post(server.api("pipelines"), json={"path": "hostile.tar.gz"},
                             timeout=60)
        assert reply.status_code == 202, reply.text
        pipeline = server.wait_for(f"pipelines/{reply.json()['id']}",
                                   lambda b: b["status"] != "INSTALLING", 300)
        assert pipeline["status"] == "READY", pipeline
        yield {"server": server, "root": root, "pipeline": pipeline}
    finally:
        server.cancel_runs_and_stop()


def start(world: dict[str, Any], mode: str) -> dict[str, Any]:
    server = world["server"]
    reply = server.session.post(server.api("runs"), timeout=60, json={
        "pipeline_id": world["pipeline"]["id"], "config": {"mode": mode},
        "inputs": ["data/a.fastq"]})
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def runs(world) -> dict[str, dict[str, Any]]:
    """The planting run and the two over a cap, started together, once ended."""
    started = {mode: start(world, mode) for mode in ("plant", "many", "huge")}
    return {mode: world["server"].wait_for(f"runs/{run['id']}", lambda b: b["status"] in FINAL,
                                           300)
            for mode, run in started.items()}


@pytest.mark.lxd
@requires_lxd
def test_outputs_are_the_servers_with_safe_modes_and_no_special_files(world, runs):
    run = runs["plant"]
    assert run["status"] == "DONE", run
    names = {o["name"] for o in run["outputs"]}
    assert names == {"suid", "sgid", "suid-link", "open/anyone.txt", "deep/er/f", "tried.txt"}
    by_name = {o["name"]: o for o in run["outputs"]}
    folder = world["root"] / Path(by_name["suid"]["path"]).parents[1]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # only the server's user enters
    assert folder.stat().st_uid == os.geteuid()
    for part in ("outputs", "logs", ".pirus"):
        assert_safe(folder / part)
    outputs = folder / "outputs"
    assert (outputs / "tried.txt").read_text() == "tried\n"  # no device node, no link to inputs
    assert stat.S_IMODE((outputs / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((outputs / "open" / "anyone.txt").stat().st_mode) == 0o644
    assert (outputs / "suid").stat().st_ino != (outputs / "suid-link").stat().st_ino
    assert (outputs / "suid-link").read_bytes() == Path("/bin/busybox").read_bytes()
    assert by_name["suid"]["sha256"] == by_name["suid-link"]["sha256"]
    err = world["server"].session.get(world["server"].api(f"runs/{run['id']}/logs/err"),
                                      timeout=30).text
    assert "removed 4 special file(s)" in err and "outputs/fifo" in err, err
    # the inputs: untouched, here and where they came from
    source = world["root"] / "data" / "a.fastq"
    assert source.read_bytes() == fastq(3)
    assert (folder / "inputs" / "a.fastq").read_bytes() == fastq(3)
    assert stat.S_IMODE(source.stat().st_mode) == 0o644 and source.stat().st_uid == os.geteuid()


@pytest.mark.lxd
@requires_lxd
def test_too_many_outputs_end_in_error_with_small_answers(world, runs):
    server, run = world["server"], runs["many"]
    assert run["status"] == "ERROR", run
    assert f"more than max_outputs ({MAX_OUTPUTS})" in run["error"], run["error"]
    assert run["outputs"] == []
    assert server.session.get(server.api("files"), params={"run_id": run["id"]},
                              timeout=30).json()["total"] == 0
    listing = server.session.get(server.api("runs"), timeout=30)
    assert listing.status_code == 200 and len(listing.content) < 64 * 1024


@pytest.mark.lxd
@requires_lxd
def test_too_many_output_bytes_end_in_error_without_hashing(world, runs):
    run = runs["huge"]
    assert run["status"] == "ERROR", run
    assert f"more than max_output_bytes ({MAX_OUTPUT_BYTES})" in run["error"], run["error"]
    assert run["outputs"] == []


@pytest.mark.lxd
@requires_lxd
def test_cancel_during_a_long_finishing_succeeds(world):
    """A 64 GiB sparse output under the cap: hashing it holds FINISHING for a long while, and
    a cancel then is answered at once (not after the hashing, not a 409)."""
    server = world["server"]
    run = start(world, "slow")
    finishing = server.wait_for(f"runs/{run['id']}",
                                lambda b: b["status"] in FINAL | {"FINISHING"}, 300)
    assert finishing["status"] == "FINISHING", finishing
    reply = server.session.post(server.api(f"runs/{run['id']}/cancel"), timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "CANCELED"
    # the hashing stopped and the slot is free again
    server.wait_for("", lambda b: b["active_runs"] == 0, 120)
    ended = server.session.get(server.api(f"runs/{run['id']}"), timeout=30).json()
    assert ended["status"] == "CANCELED" and ended["outputs"] == []
