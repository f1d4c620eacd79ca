"""The ``jupyter pirus`` command.

Offline: ``build`` (reproducible) and ``validate`` on good and broken folders and packages,
``--help`` everywhere, usage errors. Online: a real ``jupyter server`` subprocess on real LXD
driven only through ``python -m jupyter pirus ...`` (the demo fastq-count pipeline built by the
CLI is installed, listed, run, its runs listed, then uninstalled), error exit codes, the three
ways of finding the server, and an unreachable server (exit 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import requires_lxd
from pkgbuild import raw_package
from server import ServerProcess, free_port

from pirus_jupyter import cli
from pirus_jupyter.packaging import build_package

ROOT = Path(__file__).resolve().parent.parent
FASTQ_COUNT = ROOT / "examples" / "pipelines" / "fastq-count"
NOOP = ROOT / "examples" / "pipelines" / "noop"
PNG = (FASTQ_COUNT / "icon.png").read_bytes()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
COMMANDS = ["build", "validate", "install", "list", "uninstall", "runs", "run", "crate"]
JUPYTER_PIRUS = [sys.executable, "-m", "jupyter", "pirus"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process: no server published by in-process test servers."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIRUS_SERVER_URL", "PIRUS_SERVER_TOKEN")}
    env.update(extra)
    return env


def jupyter_pirus(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``jupyter pirus ARGS`` (through jupyter's subcommand dispatch) and capture it."""
    return subprocess.run([*JUPYTER_PIRUS, *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``jupyter pirus ARGS`` in this process (fast, for the offline commands)."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(capsys, command):
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: jupyter pirus {command}")
    assert "exit codes:" in out and "3    no Pirus server reachable" in out


def test_top_level_help_through_jupyter_dispatch():
    result = jupyter_pirus("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert "--url" in result.stdout and "--token" in result.stdout


@pytest.mark.parametrize("args", [
    [],                                          # no command
    ["frobnicate"],                              # unknown command
    ["build"],                                   # missing DIR
    ["run"],                                     # missing PIPELINE
    ["run", "x", "--config", "novalue"],         # not KEY=VALUE
    ["run", "x", "--config-file", "/nonexistent/config.json"],
    ["runs", "--status", "BOGUS"],
    ["list", "--status", "SLEEPING"],
    ["build", "dir", "--compression", "zip"],
])
def test_usage_errors_exit_2(capsys, args):
    code, _, err = run_main(capsys, *args)
    assert code == cli.EXIT_USAGE
    assert "usage: jupyter pirus" in err


def test_config_values_are_json_when_possible():
    assert cli.parse_config_pairs([
        "min_length=5", "ratio=0.5", "flag=true", "none=null", "label=sample", 'quoted="05"',
        "list=[1, 2]", "obj={\"a\": 1}", "empty=", "eq=a=b", "text=hello world",
    ]) == {"min_length": 5, "ratio": 0.5, "flag": True, "none": None, "label": "sample",
           "quoted": "05", "list": [1, 2], "obj": {"a": 1}, "empty": "", "eq": "a=b",
           "text": "hello world"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli.parse_config_pairs(["=5"])


# -- build ----------------------------------------------------------------------------------
def test_build_is_reproducible(tmp_path):
    first = tmp_path / "one" / "fastq-count.tar.gz"
    second = tmp_path / "two" / "other-name.tar.gz"
    results = [jupyter_pirus("build", str(FASTQ_COUNT), "-o", str(out)) for out in (first, second)]
    for result, out in zip(results, (first, second), strict=True):
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{sha256(out)}  {out}\n"
        assert "Building" in result.stderr and "Built" in result.stderr  # progress on stderr
    assert first.read_bytes() == second.read_bytes()
    # the same bytes as the builder API
    assert sha256(build_package(FASTQ_COUNT, tmp_path / "api.tar.gz")) == sha256(first)


def test_build_default_output_name_and_quiet(tmp_path):
    result = jupyter_pirus("build", "-q", str(NOOP), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "noop.tar.gz").is_file()
    assert result.stdout.split() == [sha256(tmp_path / "noop.tar.gz"), "noop.tar.gz"]


def test_build_failure_exit_1(capsys, tmp_path):
    code, out, err = run_main(capsys, "build", str(tmp_path), "-o", str(tmp_path / "x.tar"))
    assert code == cli.EXIT_FAILURE
    assert out == ""
    assert "error: cannot build" in err and "pirus.yaml: not found" in err
    (tmp_path / "pirus.yaml").write_text("name: x\nrun: /pipeline/run.sh\n")
    code, _, err = run_main(capsys, "build", str(tmp_path), "-o", str(tmp_path / "x.tar"))
    assert code == cli.EXIT_FAILURE and "/pipeline/run.sh is not a file" in err
    assert not (tmp_path / "x.tar").exists()


# -- validate: good ---------------------------------------------------------------------------
def test_validate_good_folder_and_package(capsys, tmp_path):
    code, out, err = run_main(capsys, "validate", str(FASTQ_COUNT))
    assert code == 0, out
    assert out == f"{FASTQ_COUNT}: valid pipeline folder\n"
    assert "Trial build" in err
    package = build_package(FASTQ_COUNT, tmp_path / "fastq-count.tar.xz")
    code, out, _ = run_main(capsys, "validate", "--json", str(package))
    assert code == 0
    assert json.loads(out) == {"path": str(package), "kind": "package", "valid": True,
                               "problems": []}


# -- validate: broken folders -----------------------------------------------------------------
GOOD_SCRIPT = "#!/bin/sh\necho ok > \"$PIRUS_OUTPUTS_DIR/ok.txt\"\n"
GOOD_FORM = {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}}


def make_folder(path: Path, manifest: dict[str, Any] | str | None = None,
                files: dict[str, bytes | str | None] | None = None) -> Path:
    """A pipeline folder: pirus.yaml + run.sh/form.json/icon.png unless ``files`` says
    otherwise (None removes a default file)."""
    path.mkdir(parents=True)
    if manifest is None:
        manifest = {"name": "demo", "version": "1.0", "run": "/pipeline/run.sh"}
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    (path / "pirus.yaml").write_text(text)
    contents: dict[str, bytes | str | None] = {
        "run.sh": GOOD_SCRIPT, "form.json": json.dumps(GOOD_FORM), "icon.png": PNG}
    contents.update(files or {})
    for name, data in contents.items():
        if data is None:
            continue
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            target.write_text(data)
        else:
            target.write_bytes(data)
        if name == "run.sh":
            target.chmod(0o755)
    return path


BAD_FOLDERS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "manifest_fields": (
        {"manifest": "version: 1.10\nrun: /pipeline/run.sh\nlimits: {cpu: 0, gpu: 1}\n"},
        ["pirus.yaml: pirus.name: required",
         "pirus.yaml: pirus.version: must be a string, not float (quote it in YAML)",
         "pirus.yaml: pirus.limits.cpu: must be at least 1",
         "pirus.yaml: pirus.limits.gpu: unknown limit"]),
    "manifest_yaml": (
        {"manifest": "name: [unclosed\n"},
        ["pirus.yaml: not valid YAML"]),
    "form_json": (
        {"files": {"form.json": "{\"type\": \"object\",,}"}},
        ["form.json: not valid JSON"]),
    "form_schema": (
        {"files": {"form.json": json.dumps({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": "zero"},
            "mode": {"type": "strnig"}}})}},
        ["form.json: properties.n.minimum: invalid JSON Schema: 'zero' is not of type 'number'",
         "form.json: properties.mode.type: invalid JSON Schema"]),
    "form_default": (
        {"files": {"form.json": json.dumps({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 1, "default": 0}}})}},
        ["form.json: properties.n.default: the default is refused by its own schema: "
         "0 is less than the minimum of 1"]),
    "missing_run_script": (
        {"files": {"run.sh": None}},
        ["pirus.yaml: pirus.run: the run script /pipeline/run.sh is missing (add run.sh next "
         "to pirus.yaml or map it in files)"]),
    "run_script_in_files_missing": (
        {"manifest": {"name": "demo", "run": "/opt/tool/run", "files": {"/opt/tool/run": "x"}}},
        ["pirus.yaml: files[/opt/tool/run]: x not found",
         "pirus.yaml: pirus.run: the run script /opt/tool/run is missing (map it in files)"]),
    "run_script_not_executable": (
        {"manifest": {"name": "demo", "run": "/pipeline/tool",
                      "files": {"/pipeline/tool": "tool"}},
         "files": {"tool": GOOD_SCRIPT}},
        ["rootfs/pipeline/tool: the run script is not executable (mode 644)"]),
    "run_script_interpreter_missing": (
        {"files": {"run.sh": "#!/bin/bash\necho bash is not in busybox\n"}},
        ["rootfs/pipeline/run.sh: its interpreter #!/bin/bash is not in the package's rootfs"]),
    "bad_icon": (
        {"files": {"icon.png": "<html>not an image</html>"}},
        ["icon.png: not a PNG, SVG or JPEG image"]),
    "icon_type_mismatch": (
        {"files": {"icon.png": JPEG}},
        ["icon.png: the content is JPEG but the name ends in .png (it would be served as PNG)"]),
    "missing_document": (
        {"manifest": {"name": "demo", "run": "/pipeline/run.sh",
                      "documents": ["/pipeline/help.html"]}},
        ["pirus.yaml: pirus.documents: /pipeline/help.html is not in the package"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_validate_bad_folder(capsys, tmp_path, case):
    spec, expected = BAD_FOLDERS[case]
    folder = make_folder(tmp_path / case, spec.get("manifest"), spec.get("files"))
    code, out, err = run_main(capsys, "validate", str(folder))
    assert code == cli.EXIT_FAILURE
    lines = out.splitlines()
    for fragment in expected:
        assert any(line.startswith(fragment) for line in lines), (fragment, out)
    assert len(lines) == len(expected), out  # each problem once, nothing spurious
    assert f"{len(expected)} problem(s) in {folder}" in err


def test_validate_lists_every_problem_of_a_folder_at_once(capsys, tmp_path):
    folder = make_folder(
        tmp_path / "all", {"version": "1", "run": "/pipeline/run.sh"},
        {"run.sh": None, "icon.png": b"GIF89a",
         "form.json": json.dumps({"type": "object",
                                  "properties": {"a": {"type": "nonsense"}}})})
    code, out, _ = run_main(capsys, "validate", "--json", str(folder))
    assert code == cli.EXIT_FAILURE
    report = json.loads(out)
    assert report["valid"] is False and report["kind"] == "folder"
    found = {(p["where"], p["message"].split(":")[0]) for p in report["problems"]}
    assert found == {
        ("pirus.yaml", "pirus.name"),                       # manifest field
        ("pirus.yaml", "pirus.run"),                        # missing run script
        ("form.json: properties.a.type", "invalid JSON Schema"),  # form schema error
        ("icon.png", "not a PNG, SVG or JPEG image (checked by its first bytes)"),  # bad icon
    }


DRAFT03_FORM = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
                "properties": {
                    "file1": {"type": "string", "enum": "__PIRUS_INPUT_FILES__",
                              "required": True},
                    "ref": {"type": "string", "enum": "__PIRUS_DB_REF__", "default": "hg19.fa",
                            "required": False}}}


def test_validate_draft03_form_with_placeholders_is_valid(capsys, tmp_path):
    """An original-style form is checked as the server reads it (normalised to draft-07,
    placeholders filled), not as raw draft-03 where "enum": "__PIRUS_..." is invalid."""
    folder = make_folder(tmp_path / "draft03", files={"form.json": json.dumps(DRAFT03_FORM)})
    code, out, _ = run_main(capsys, "validate", "--no-build", str(folder))
    assert code == 0, out


def test_build_draft03_form_with_placeholders(capsys, tmp_path):
    folder = make_folder(tmp_path / "draft03", files={"form.json": json.dumps(DRAFT03_FORM)})
    code, _, err = run_main(capsys, "build", str(folder), "-o", str(tmp_path / "d.tar"))
    assert code == 0, err
    code, out, _ = run_main(capsys, "validate", str(tmp_path / "d.tar"))
    assert code == 0, out


# -- validate: broken packages ----------------------------------------------------------------
def test_validate_lists_every_problem_of_a_package(capsys, tmp_path):
    metadata = {"architecture": "x86_64", "creation_date": 0, "pirus": {
        "version": 2, "run": "/pipeline/run.sh --fast", "inputs": "relative/inputs",
        "form": "/pipeline/form.json", "icon": "/pipeline/icon.svg",
        "documents": ["/pipeline/help.html", "/pipeline/missing.txt"]}}
    package = raw_package(tmp_path / "broken.tar.gz", metadata, [
        ("rootfs/pipeline", {"type": tarfile.DIRTYPE, "mode": 0o755}),
        ("rootfs/pipeline/form.json", {"data": b'{"type": "object", "properties": '
                                                b'{"n": {"type": "integer", "maximum": "x"}}}'}),
        ("rootfs/pipeline/icon.svg", {"data": b"\x89PNG\r\n\x1a\n...."}),
        ("rootfs/pipeline/help.html", {"data": b"<p>help</p>"}),
    ])
    code, out, _ = run_main(capsys, "validate", str(package))
    assert code == cli.EXIT_FAILURE
    expected = [
        "metadata.yaml: pirus.name: required",
        "metadata.yaml: pirus.version: must be a string, not int",
        "metadata.yaml: pirus.inputs: must be an absolute path inside the container",
        "rootfs/pipeline/form.json: properties.n.maximum: invalid JSON Schema: 'x' is not of "
        "type 'number'",
        "rootfs/pipeline/icon.svg: the content is PNG but the name ends in .svg",
        "metadata.yaml: pirus.documents: /pipeline/missing.txt is not a regular file in rootfs/",
        "rootfs: /bin/sh is missing: Pirus runs the pipeline with /bin/sh -c",
        "metadata.yaml: pirus.run: the run script /pipeline/run.sh is missing from the "
        "package's rootfs",
    ]
    lines = out.splitlines()
    for fragment in expected:
        assert any(line.startswith(fragment) for line in lines), (fragment, out)
    assert len(lines) == len(expected), out


@pytest.mark.parametrize(("case", "fragment"), [
    ("path_traversal", "package: path traversal in package"),
    ("symlink_escape", "package: symlink 'rootfs/bin/evil' -> '../../../../etc/shadow' escapes"),
    ("device_node", "package: device or fifo in package"),
    ("missing_metadata_file", "package: no metadata.yaml at the top of the tarball"),
    ("not_a_tar", "package: not a readable tar archive"),
    ("missing_manifest", "metadata.yaml: pirus: required"),
    ("form_missing", "metadata.yaml: pirus.form: /pipeline/form.json is not a regular file"),
])
def test_validate_structurally_bad_packages(capsys, tmp_path, case, fragment):
    from pkgbuild import bad_package

    package = bad_package(tmp_path / f"{case}.tar.gz", case)
    code, out, _ = run_main(capsys, "validate", str(package))
    assert code == cli.EXIT_FAILURE
    assert any(line.startswith(fragment) for line in out.splitlines()), out


def test_validate_missing_path(capsys, tmp_path):
    code, out, _ = run_main(capsys, "validate", str(tmp_path / "nope.tar.gz"))
    assert code == cli.EXIT_FAILURE and "no such file" in out


# -- no server --------------------------------------------------------------------------------
def test_unreachable_server_exits_3(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    result = jupyter_pirus("--url", url, "--token", "x", "list")
    assert result.returncode == cli.EXIT_UNREACHABLE
    assert result.stdout == ""
    assert "error: cannot reach a Pirus server" in result.stderr
    assert url in result.stderr and "Connection refused" in result.stderr
    # nothing to discover: no environment, no running server containing the current folder
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    result = jupyter_pirus("runs", cwd=tmp_path,
                           env=clean_env(JUPYTER_RUNTIME_DIR=str(runtime)))
    assert result.returncode == cli.EXIT_UNREACHABLE
    assert "$PIRUS_SERVER_URL (not set)" in result.stderr
    assert "hint: pass --url and --token" in result.stderr
    assert "connect(url, token)" not in result.stderr  # the notebook's hint is not the CLI's


# -- against a real server --------------------------------------------------------------------
class Live:
    """A real ``jupyter server`` with Pirus and a private runtime folder, driven by the CLI."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.root.mkdir()
        self.runtime = base / "runtime"
        self.runtime.mkdir()
        self.jupyter_data = base / "jupyter-data"
        self.jupyter_data.mkdir()
        self.server = ServerProcess(self.root, base / "pirus-data", max_parallel_runs=2,
                                    poll_interval=0.1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JUPYTER_RUNTIME_DIR", str(self.runtime))  # discovery sees only this one
            self.server.start()

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(JUPYTER_RUNTIME_DIR=str(self.runtime),
                         JUPYTER_DATA_DIR=str(self.jupyter_data), JUPYTER_PLATFORM_DIRS="1",
                         **extra)

    def __call__(self, *args: str, cwd: Path | None = None, auth: bool = True,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        options = ["--url", self.server.url, "--token", self.server.token] if auth else []
        return jupyter_pirus(*options, *args, cwd=cwd or self.root, env=env or self.env())


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("cli-live"))
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture(scope="module")
def fastq_count(live, tmp_path_factory) -> dict[str, Any]:
    """The demo pipeline built by ``jupyter pirus build`` (outside the server's root, so that
    ``install`` uploads it) and installed by ``jupyter pirus install``."""
    package = tmp_path_factory.mktemp("cli-pkg") / "fastq-count.tar.gz"
    built = jupyter_pirus("build", str(FASTQ_COUNT), "-o", str(package))
    assert built.returncode == 0, built.stderr
    result = live("install", "--json", str(package))
    assert result.returncode == 0, result.stderr
    assert "Installing as pipeline" in result.stderr and "Uploading" in result.stderr
    pipeline = json.loads(result.stdout)
    assert pipeline["status"] == "READY" and pipeline["name"] == "fastq-count"
    assert pipeline["fingerprint"] == built.stdout.split()[0]
    return pipeline


def fastq(lengths: list[int]) -> str:
    """Reads of the given lengths (bases cycle through ACGT)."""
    return "".join(f"@r{i}\n{('ACGT' * n)[:n]}\n+\n{'I' * n}\n"
                   for i, n in enumerate(lengths))


def expected_counts(files: dict[str, list[int]], min_length: int) -> str:
    """counts.tsv computed here, independently of the pipeline."""
    lines = ["file\treads\tbases"]
    for name in sorted(files):
        kept = [n for n in files[name] if n >= min_length]
        lines.append(f"{name}\t{len(kept)}\t{sum(kept)}")
    return "\n".join(lines) + "\n"


@pytest.mark.lxd
@requires_lxd
def test_install_list_run_runs(live, fastq_count):
    listed = live("list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "VERSION", "STATUS", "DESCRIPTION"]
    assert [r.split()[:4] for r in rows] == [[str(fastq_count["id"]), "fastq-count", "1.0.0",
                                              "READY"]]
    as_json = json.loads(live("list", "--json").stdout)
    assert [p["id"] for p in as_json] == [fastq_count["id"]]

    reads = {"a.fastq": [3, 5, 8, 12, 4], "b.fastq": [5, 5, 1]}
    (live.root / "data").mkdir()
    for name, lengths in reads.items():
        (live.root / "data" / name).write_text(fastq(lengths))
    result = live("run", "fastq-count", "--input", "data/a.fastq", "data/b.fastq",
                  "--config", "min_length=5", "--name", "cli run", "--wait")
    assert result.returncode == 0, result.stderr
    # progress lines while it ran, then one "<sha256>  <path>" line per output
    progress = [line for line in result.stderr.splitlines() if "] run " in line]
    statuses = [line.split(": ", 1)[1].split()[0] for line in progress]
    assert statuses[-1] == "DONE" and {"RUNNING", "FINISHING"} & set(statuses), result.stderr
    assert any("2/2 b.fastq" in line for line in progress), result.stderr
    [output] = result.stdout.splitlines()
    digest, path = output.split("  ")
    counts = live.root / path
    assert path.startswith("pirus-runs/") and path.endswith("/outputs/counts.tsv")
    assert counts.read_text() == expected_counts(reads, 5)
    assert digest == sha256(counts)
    # The same run again with --reuse: DONE at once with the same output bytes, no container.
    again = live("run", "fastq-count", "--input", "data/a.fastq", "data/b.fastq",
                 "--config", "min_length=5", "--name", "cli rerun", "--reuse", "--wait")
    assert again.returncode == 0, again.stderr
    assert re.search(r"Run \d+ reused run \d+: no container ran", again.stderr), again.stderr
    [reused] = again.stdout.splitlines()
    assert reused.split("  ")[0] == digest and reused.split("  ")[1] != path

    runs = live("runs")
    assert runs.returncode == 0, runs.stderr
    header, *rows = runs.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROGRESS", "PIPELINE", "NAME", "CREATED"]
    assert any("DONE" in row and "cli run" in row and "fastq-count 1.0.0" in row
               for row in rows), runs.stdout
    records = json.loads(live("runs", "--status", "DONE", "--json").stdout)
    assert records and all(r["status"] == "DONE" for r in records)
    record = next(r for r in records if r["name"] == "cli run")
    assert record["config"] == {"min_length": 5}
    assert [i["name"] for i in record["inputs"]] == ["a.fastq", "b.fastq"]

    crate = live("crate", str(record["id"]), "-o", str(live.root / "cli-run.zip"))
    assert crate.returncode == 0, crate.stderr
    assert crate.stdout.strip() == str(live.root / "cli-run.zip")
    with zipfile.ZipFile(live.root / "cli-run.zip") as archive:
        assert sorted(archive.namelist()) == ["outputs/counts.tsv", "ro-crate-metadata.json"]
        assert archive.read("outputs/counts.tsv") == counts.read_bytes()


@pytest.mark.lxd
@requires_lxd
def test_run_without_wait_prints_the_id_and_local_inputs_are_uploaded(live, fastq_count,
                                                                      tmp_path):
    outside = tmp_path / "elsewhere.fastq"  # not under the server's root: uploaded first
    outside.write_text(fastq([6, 7, 2]))
    result = live("run", str(fastq_count["id"]), "-i", str(outside), "-c", "min_length=3")
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout)
    assert "Uploading elsewhere.fastq" in result.stderr
    body = live.server.wait_for(f"runs/{run_id}", lambda b: b["status"] in ("DONE", "ERROR"))
    assert body["status"] == "DONE", body
    assert body["inputs"][0]["path"].startswith("pirus-uploads/")
    counts = live.root / body["outputs"][0]["path"]
    assert counts.read_text() == expected_counts({"elsewhere.fastq": [6, 7, 2]}, 3)


@pytest.mark.lxd
@requires_lxd
def test_run_that_fails_exits_1_with_the_error(live, fastq_count):
    (live.root / "broken.fastq").write_text("this is not FASTQ\n")
    result = live("run", "fastq-count", "-i", "broken.fastq", "--wait", "--json")
    assert result.returncode == cli.EXIT_FAILURE
    record = json.loads(result.stdout)
    assert record["status"] == "ERROR" and record["exit_code"] == 1
    assert f"error: run {record['id']} ended ERROR" in result.stderr
    assert "not a valid FASTQ file" in result.stderr


@pytest.mark.lxd
@requires_lxd
def test_refused_requests_exit_1(live, fastq_count):
    result = live("run", "fastq-count", "--config", "min_length=-1", "--wait")
    assert result.returncode == cli.EXIT_FAILURE
    assert "invalid_config" in result.stderr and "min_length" in result.stderr
    result = live("run", "no-such-pipeline")
    assert result.returncode == cli.EXIT_FAILURE
    assert "no pipeline named 'no-such-pipeline'" in result.stderr
    result = live("run", "fastq-count", "-i", "does/not/exist.fastq")
    assert result.returncode == cli.EXIT_FAILURE
    assert "no file at 'does/not/exist.fastq'" in result.stderr
    result = jupyter_pirus("--url", live.server.url, "--token", "wrong", "list",
                           env=live.env())
    assert result.returncode == cli.EXIT_FAILURE
    assert "HTTP 403" in result.stderr and "hint: pass --token" in result.stderr


@pytest.mark.lxd
@requires_lxd
def test_server_found_from_the_environment_and_from_the_running_servers(live, fastq_count,
                                                                       tmp_path):
    env = live.env(PIRUS_SERVER_URL=live.server.url, PIRUS_SERVER_TOKEN=live.server.token)
    result = live("list", "-q", auth=False, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fastq-count" in result.stdout
    # no option, no environment: the running server whose root holds the current folder
    (live.root / "sub").mkdir(exist_ok=True)
    result = live("runs", auth=False, cwd=live.root / "sub")
    assert result.returncode == 0, result.stderr
    # the options go after the subcommand too
    result = jupyter_pirus("list", "--url", live.server.url, "--token", live.server.token,
                           env=live.env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.lxd
@requires_lxd
def test_install_of_a_broken_package_exits_1(live, tmp_path):
    from pkgbuild import bad_package

    package = bad_package(tmp_path / "broken.tar.gz", "missing_run")
    result = live("install", str(package))
    assert result.returncode == cli.EXIT_FAILURE
    assert "install of" in result.stderr and "is ERROR" in result.stderr
    assert "pirus.run is required" in result.stderr
    failed = [p["id"] for p in json.loads(live("list", "--json", "--status", "ERROR").stdout)]
    assert failed
    # failed installs go in one action, and only they
    assert live("uninstall").returncode == cli.EXIT_FAILURE
    cleared = live("uninstall", "--failed")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith(f"Removed {len(failed)} failed install(s): pipeline(s) ")
    assert json.loads(live("list", "--json", "--status", "ERROR").stdout) == []


@pytest.mark.lxd
@requires_lxd
def test_the_readme_sequence_runs_twice(live, fastq_count, tmp_path):
    """build + validate + install of the same pipeline again: the package is rebuilt with the
    same bytes and the install answers with the installed pipeline, no ERROR row."""
    package = tmp_path / "fastq-count.tar.gz"
    assert jupyter_pirus("build", str(FASTQ_COUNT), "-o", str(package)).returncode == 0
    assert jupyter_pirus("validate", str(package)).returncode == 0
    result = live("install", str(package))
    assert result.returncode == 0, result.stderr
    assert f"Already installed as pipeline {fastq_count['id']}" in result.stderr
    assert result.stdout == f"Installed pipeline {fastq_count['id']}: fastq-count 1.0.0 (READY)\n"
    listed = json.loads(live("list", "--json").stdout)
    assert [(p["id"], p["status"]) for p in listed if p["name"] == "fastq-count"] == [
        (fastq_count["id"], "READY")]


@pytest.mark.lxd
@requires_lxd
def test_uninstall(live, fastq_count):
    """Last: removes the shared pipeline."""
    result = live("uninstall", "fastq-count")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Uninstalled pipeline {fastq_count['id']}: fastq-count 1.0.0\n"
    listed = json.loads(live("list", "--json").stdout)
    assert fastq_count["id"] not in [p["id"] for p in listed]
    again = live("uninstall", "fastq-count")
    assert again.returncode == cli.EXIT_FAILURE
    assert "no pipeline 'fastq-count' is installed" in again.stderr
    # the runs' records survive their pipeline
    runs = json.loads(live("runs", "--json").stdout)
    assert any(r["pipeline_name"] == "fastq-count" for r in runs)
