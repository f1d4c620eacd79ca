"""Pipelines that run real tools: the Debian-based demos vcf-stats (bcftools), fastq-stats-seqkit
(seqkit) and bam-stats (samtools) of examples/pipelines.

* One Debian base (bookworm + bcftools, samtools, seqkit) is built by mmdebstrap from the
  host's apt sources, once per session into the session's own cache
  (``$PIRUS_TEST_BASE_CACHE`` keeps it between sessions while developing); the three demos are
  built with ``jupyter pirus build`` over it, the first cold, the others from the cache.
* The provenance written into the manifest is the host's ``dpkg-query -W`` (same mirror), and
  the image keeps no apt lists or caches, logs or documentation besides copyright files.
* On real LXD the three are installed and run together; each output is compared with the same
  command run on the host's tools (byte-identical; bcftools stats' command-line comment aside).
* Bad input: unknown package, unknown suite, unreachable apt source: exit 1, one line naming
  the cause, no package and no cache entry left behind.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FINAL, requires_lxd, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pipelines"
DEMOS = ["vcf-stats", "fastq-stats-seqkit", "bam-stats"]
TOOLS = ["bcftools", "samtools", "seqkit"]
SMALL_VCF = EXAMPLES / "vcf-filter" / "data" / "small.vcf"
SMALL_FASTQ = EXAMPLES / "fastq-stats" / "data" / "small.fastq"
SMALL_SAM = EXAMPLES / "bam-stats" / "data" / "small.sam"

requires_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ["mmdebstrap", *TOOLS]),
    reason="needs mmdebstrap, bcftools, samtools and seqkit (scripts/setup.sh)")
pytestmark = requires_tools


def host_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                          capture_output=True, text=True, check=True).stdout


def cli(*args: str, env: dict[str, str], timeout: float = 900
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pirus_jupyter.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory) -> Path:
    kept = os.environ.get("PIRUS_TEST_BASE_CACHE")
    return Path(kept) if kept else tmp_path_factory.mktemp("bases")


@pytest.fixture(scope="session")
def build_env(base_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PIRUS_APT_SOURCES"}
    env["PIRUS_BASE_CACHE"] = str(base_cache)
    return env


@pytest.fixture(scope="session")
def real_builds(tmp_path_factory, build_env) -> dict[str, dict[str, Any]]:
    """Each demo built by the CLI, in DEMOS order (the first builds the shared base, unless
    $PIRUS_TEST_BASE_CACHE has it): name -> {package, stdout, stderr, seconds}."""
    out = tmp_path_factory.mktemp("real-packages")
    builds = {}
    for name in DEMOS:
        # Uncompressed: gzip of a 144 MB rootfs is most of a warm build, and LXD takes both.
        package = out / f"{name}.tar"
        started = time.monotonic()
        result = cli("build", str(EXAMPLES / name), "-o", str(package), env=build_env)
        assert result.returncode == 0, result.stderr
        builds[name] = {"package": package, "stdout": result.stdout, "stderr": result.stderr,
                        "seconds": time.monotonic() - started}
    return builds


def package_members(package: Path) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    with tarfile.open(package) as tar:
        members = {m.name: m for m in tar.getmembers()}
        stream = tar.extractfile(members["metadata.yaml"])
        assert stream is not None
        return yaml.safe_load(stream.read()), members


# -- build, cache, provenance ----------------------------------------------------------------
def test_one_cached_base_and_reproducible(real_builds, build_env, base_cache, tmp_path):
    entries = [p for p in base_cache.iterdir()]
    assert len(entries) == 1 and (entries[0] / "rootfs.tar").is_file()  # no .build- leftover
    for name in DEMOS[1:]:
        assert "Debian base bookworm [bcftools, samtools, seqkit]: cached" in \
            real_builds[name]["stderr"]
    # Progress on the long step went to stderr; the result line alone to stdout.
    first = real_builds[DEMOS[0]]
    assert first["stdout"].endswith(f"  {first['package']}\n")
    again = tmp_path / "again.tar"
    result = cli("build", str(EXAMPLES / DEMOS[0]), "-o", str(again), env=build_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == first["stdout"].split()[0]  # same sha256
    # validate's trial build takes the same base, and says so.
    checked = cli("validate", str(EXAMPLES / "bam-stats"), env=build_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Debian base bookworm [bcftools, samtools, seqkit]: cached" in checked.stderr


def test_provenance_is_the_host_versions_and_the_image_is_lean(real_builds):
    metadata, members = package_members(real_builds["vcf-stats"]["package"])
    provenance = metadata["pirus"]["provenance"]
    assert provenance["base"] == "debian:bookworm"
    for tool in [*TOOLS, "libc6", "busybox-static"]:
        assert provenance["packages"][tool] == host_version(tool), tool
    assert len(provenance["packages"]) > 50  # every installed package, not only the asked
    assert metadata["properties"]["os"] == "Debian"
    assert metadata["properties"]["release"] == "bookworm"
    names = set(members)
    assert members["rootfs/usr/sbin/init"].linkname == "/bin/busybox"
    assert "rootfs/etc/inittab" in names
    assert "rootfs/usr/bin/bcftools" in names
    docs = [n for n in names if n.startswith("rootfs/usr/share/doc/") and members[n].isfile()]
    assert docs and all(n.endswith("/copyright") for n in docs)
    for folder in ("var/lib/apt/lists/", "var/cache/apt/", "var/log/", "usr/share/man/",
                   "usr/share/locale/"):
        assert not [n for n in names if n.startswith("rootfs/" + folder) and
                    members[n].isfile() and not n.endswith("/lock")], folder  # apt's, empty
    # The three share a base: the same provenance.
    for name in DEMOS[1:]:
        assert package_members(real_builds[name]["package"])[0]["pirus"]["provenance"] == \
            provenance


# -- bad input -------------------------------------------------------------------------------
def write_project(folder: Path, base: str, packages: list[str]) -> Path:
    folder.mkdir()
    (folder / "pirus.yaml").write_text(yaml.safe_dump(
        {"name": "bad", "run": "true", "base": base, "packages": packages}))
    return folder


@pytest.mark.parametrize(("base", "packages", "sources", "message"), [
    # Refused from the host's apt lists, before mmdebstrap runs.
    ("debian:bookworm", ["bcftools", "no-such-package-pirus"], None,
     "base debian:bookworm: unknown package no-such-package-pirus (not in the apt sources "
     "for this suite"),
    ("debian:no-such-suite", ["bcftools"], None, "unknown suite 'no-such-suite': the apt "
     "sources"),
    # mmdebstrap runs and fails: its apt's words turned into one line.
    ("debian:bookworm", ["bcftools"], "Types: deb\nURIs: http://127.0.0.1:9/debian\n"
     "Suites: bookworm\nComponents: main\n",
     "base debian:bookworm: apt source unreachable (http://127.0.0.1:9/debian"),
    ("debian:bookworm", ["bcftools,seqkit"], None,
     "packages: 'bcftools,seqkit' is not a Debian package name (like bcftools)"),
])
def test_bad_input_one_line_nothing_left(tmp_path, monkeypatch, capsys, base, packages,
                                         sources, message):
    from pirus_jupyter import cli as pirus_cli

    cache = tmp_path / "cache"
    monkeypatch.setenv("PIRUS_BASE_CACHE", str(cache))
    monkeypatch.delenv("PIRUS_APT_SOURCES", raising=False)
    if sources:
        (tmp_path / "unreachable.sources").write_text(sources)
        monkeypatch.setenv("PIRUS_APT_SOURCES", str(tmp_path / "unreachable.sources"))
    folder = write_project(tmp_path / "project", base, packages)
    output = tmp_path / "out" / "bad.tar.gz"
    assert pirus_cli.main(["build", str(folder), "-o", str(output), "-q"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not output.exists()
    assert not (output.parent.exists() and list(output.parent.iterdir()))
    assert not cache.exists() or list(cache.iterdir()) == []


# -- on LXD: outputs equal to the host tools' ---------------------------------------------
@pytest.fixture
def pirus_config() -> dict[str, Any]:
    return {"max_parallel_runs": 3}


def host_run(folder: Path, *command: str, stdout: Path | None = None) -> None:
    with open(stdout, "wb") if stdout else open(os.devnull, "wb") as out:
        subprocess.run(command, cwd=folder, stdout=out, check=True)


def fastq_gz(reads: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(reads):
        seq = "".join(rng.choice("ACGTN") for _ in range(rng.randint(20, 120)))
        qual = "".join(chr(33 + rng.randint(2, 40)) for _ in seq)
        lines.append(f"@r{i}\n{seq}\n+\n{qual}\n")
    return gzip.compress("".join(lines).encode(), mtime=0)


@pytest.fixture
def data(jp_root_dir, tmp_path) -> Iterator[Path]:
    """The inputs in the Jupyter root's data/, the BAM made from SAM text by host samtools."""
    folder = Path(jp_root_dir) / "data"
    folder.mkdir()
    shutil.copy(SMALL_VCF, folder / "small.vcf")
    shutil.copy(SMALL_FASTQ, folder / "small.fastq")
    (folder / "sim.fq.gz").write_bytes(fastq_gz(3000, seed=14))
    subprocess.run(["samtools", "view", "--no-PG", "-b", "-o", str(folder / "small.bam"),
                    str(SMALL_SAM)], check=True)
    yield folder


def expected_outputs(data: Path, work: Path) -> dict[str, dict[str, bytes]]:
    """The same commands as the run scripts', on the host's tools."""
    for name in ("small.vcf", "small.fastq", "sim.fq.gz", "small.bam"):
        shutil.copy(data / name, work / name)
    host_run(work, "bcftools", "view", "--no-version", "-i", "QUAL>=30 && INFO/DP>=15", "-Ov",
             "-o", "filtered.vcf", "small.vcf")
    host_run(work, "bcftools", "stats", "filtered.vcf", stdout=work / "stats.txt")
    host_run(work, "seqkit", "stats", "-a", "-T", "-j", "1", "sim.fq.gz", "small.fastq",
             stdout=work / "stats.tsv")
    host_run(work, "samtools", "flagstat", "-O", "tsv", "small.bam",
             stdout=work / "flagstat.txt")
    host_run(work, "samtools", "sort", "-o", "sorted.bam", "small.bam")
    host_run(work, "samtools", "index", "sorted.bam")
    host_run(work, "samtools", "idxstats", "sorted.bam", stdout=work / "idxstats.tsv")
    read = lambda *names: {n: (work / n).read_bytes() for n in names}  # noqa: E731
    return {"vcf-stats": read("filtered.vcf", "stats.txt"),
            "fastq-stats-seqkit": read("stats.tsv"),
            "bam-stats": read("flagstat.txt", "idxstats.tsv")}


def without_command_line(text: bytes) -> list[bytes]:
    """bcftools stats output but its "# The command line was" comment (paths may differ)."""
    return [line for line in text.splitlines() if not line.startswith(b"# The command line")]


@pytest.mark.lxd
@requires_lxd
async def test_demos_on_lxd_equal_the_host_tools(api, install, jp_root_dir, data, tmp_path,
                                                  real_builds):
    pipelines = {name: await install(real_builds[name]["package"]) for name in DEMOS}
    for pipeline in pipelines.values():  # the record says which tools the image holds
        packages = pipeline["provenance"]["packages"]
        assert {tool: packages[tool] for tool in TOOLS} == {t: host_version(t) for t in TOOLS}
    bodies = {
        "vcf-stats": {"config": {"min_qual": 30, "min_dp": 15}, "inputs": ["data/small.vcf"]},
        "fastq-stats-seqkit": {"inputs": ["data/small.fastq", "data/sim.fq.gz"]},
        "bam-stats": {"config": {"flagstat_format": "tsv"}, "inputs": ["data/small.bam"]},
    }
    ids = {}
    for name, body in bodies.items():  # all three at once
        code, run = await api("POST", "runs", body={"pipeline_id": pipelines[name]["id"],
                                                    **body})
        assert code == 201, run
        ids[name] = run["id"]
    work = tmp_path / "host"
    work.mkdir()
    expected = expected_outputs(data, work)
    root = Path(jp_root_dir)
    for name, run_id in ids.items():
        run = await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                             timeout=300)
        assert run["status"] == "DONE", run
        assert run["progress"]["value"] == 100 and run["progress"]["label"] == "done"
        print(f"{name}: image {real_builds[name]['package'].stat().st_size / 2**20:.1f} MiB, "
              f"built in {real_builds[name]['seconds']:.1f} s, ran {run['start']} -> "
              f"{run['end']}", file=sys.stderr)
        outputs = {o["name"]: (root / o["path"]).read_bytes() for o in run["outputs"]}
        assert set(outputs) == set(expected[name]), name
        for output, content in expected[name].items():
            if output == "stats.txt":
                assert without_command_line(outputs[output]) == without_command_line(content)
            else:
                assert outputs[output] == content, f"{name}: {output}"
        code, log = await api("GET", "runs", run_id, "logs", "err")
        assert code == 200
        # The run says which tool it used, in the words of the host's same tool.
        banner = {"vcf-stats": ["bcftools", "--version"], "fastq-stats-seqkit": [
            "seqkit", "version"], "bam-stats": ["samtools", "--version"]}[name]
        first_line = subprocess.run(banner, capture_output=True, text=True, errors="replace",
                                    check=True).stdout.splitlines()[0]
        assert first_line in log, log
    # Something was filtered, something passed.
    kept = [r for r in expected["vcf-stats"]["filtered.vcf"].splitlines() if r[:1] != b"#"]
    assert 0 < len(kept) < SMALL_VCF.read_bytes().count(b"\nchr")


def test_demo_script_builds_the_real_tool_demos():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    for name in DEMOS:
        assert (f'jupyter pirus build examples/pipelines/{name} -o '
                f'"$root/packages/{name}.tar.gz"') in script
    assert "examples/pipelines/bam-stats/make_data.sh" in script
