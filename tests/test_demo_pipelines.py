"""The demo pipelines of examples/pipelines: fastq-stats, vcf-filter and fail-on-demand.

* Each is built twice by the CLI (``python -m pirus_jupyter.cli build``): byte-identical
  packages; ``validate`` passes on the folder and on the package.
* On the host's busybox (the same binary as the image's, every applet first on PATH, so no GNU
  tool stands in), the run scripts are driven directly through their edge cases: CRLF and blank
  lines, gzip, Phred+64, empty and broken files, missing values, refused inputs, JSON escapes.
* On real LXD, each package is installed on the in-process server and run through the REST API
  with a non-default config on the bundled data (``data/`` of the pipeline's folder).

Every result is compared with values computed here, independently, in plain Python: the
statistics, the histogram, the filtered records and per-chromosome counts, and the exact
sequence of progress reports (one every 10 % of each input).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, requires_lxd, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pipelines"
DEMOS = ["fastq-stats", "vcf-filter", "fail-on-demand"]
SMALL_FASTQ = EXAMPLES / "fastq-stats" / "data" / "small.fastq"
SMALL_VCF = EXAMPLES / "vcf-filter" / "data" / "small.vcf"
BUSYBOX = shutil.which("busybox")
requires_busybox = pytest.mark.skipif(BUSYBOX is None, reason="no busybox on this host")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pirus_jupyter.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


# -- independent reference implementations --------------------------------------------------
@dataclass
class FastqStats:
    reads: int = 0
    skipped: int = 0
    bases: int = 0
    gc: int = 0
    at: int = 0
    quality: int = 0
    lengths: Counter[int] = field(default_factory=Counter)

    def row(self, name: str) -> list[str]:
        """The stats.tsv row: 2 decimals (Python's rounding of the same double as awk's)."""
        fields = [name, str(self.reads), str(self.skipped), str(self.bases)]
        if self.reads:
            fields += [str(min(self.lengths)), str(max(self.lengths)),
                       f"{self.bases / self.reads:.2f}"]
        else:
            fields += ["NA", "NA", "NA"]
        fields.append(f"{100 * self.gc / (self.gc + self.at):.2f}" if self.gc + self.at
                      else "NA")
        fields.append(f"{self.quality / self.bases:.2f}" if self.bases else "NA")
        return fields


def fastq_stats(data: bytes, min_length: int = 0, offset: int = 33) -> FastqStats:
    lines = [line.removesuffix("\r") for line in data.decode().split("\n")]
    lines = [line for line in lines if line]
    assert len(lines) % 4 == 0, "the test data must be valid FASTQ"
    stats = FastqStats()
    for header, seq, plus, qual in zip(*[iter(lines)] * 4, strict=True):
        assert header[0] == "@" and plus[0] == "+" and len(qual) == len(seq)
        if len(seq) < min_length:
            stats.skipped += 1
            continue
        stats.reads += 1
        stats.bases += len(seq)
        stats.lengths[len(seq)] += 1
        upper = seq.upper()
        stats.gc += upper.count("G") + upper.count("C")
        stats.at += upper.count("A") + upper.count("T")
        scores = [ord(c) - offset for c in qual]
        assert min(scores) >= 0
        stats.quality += sum(scores)
    return stats


def expected_fastq_outputs(files: dict[str, bytes], min_length: int, offset: int
                           ) -> tuple[str, str]:
    """(stats.tsv, lengths.tsv) for these inputs, by name order as the pipeline takes them."""
    stats = ["file\treads\tskipped\tbases\tmin_len\tmax_len\tmean_len\tgc_percent\tmean_quality"]
    lengths = ["file\tlength\tcount"]
    for name in sorted(files):
        result = fastq_stats(files[name], min_length, offset)
        stats.append("\t".join(result.row(name)))
        lengths += [f"{name}\t{length}\t{count}" for length, count in
                    sorted(result.lengths.items())]
    return "\n".join(stats) + "\n", "\n".join(lengths) + "\n"


def expected_progress(files: dict[str, bytes]) -> list[dict[str, Any]]:
    """What the pipelines write to $PIRUS_PROGRESS_FILE: a first report, then one report at
    each 10 % of each file (value: % of all the lines, as `wc -l` counts them), then FINISHING."""
    counts = {name: data.count(b"\n") for name, data in files.items()}
    total = sum(counts.values())
    reports: list[dict[str, Any]] = [
        {"progress": {"value": 0, "max": 100, "label": "counting lines"}}]
    before = 0
    for name in sorted(files):
        for pct in range(10, 101, 10):
            value = (100 * before + pct * counts[name]) // total if total else 100
            reports.append({"progress": {"value": value, "max": 100,
                                         "label": f"{name} {pct}%"}})
        before += counts[name]
    return [*reports, {"status": "FINISHING"}]


def vcf_filter(text: str, min_qual: float, min_dp: int, command: str
               ) -> tuple[str, str, list[str]]:
    """(filtered.vcf, per_chromosome.tsv, passing records) by the rules of the pipeline."""
    meta, columns, records = [], [], []
    for line in text.splitlines():
        if line.startswith("##"):
            meta.append(line)
        elif line.startswith("#CHROM"):
            columns.append(line)
        elif line:
            records.append(line)
    per_chrom: dict[str, list[int]] = {}
    passing = []
    for record in records:
        fields = record.split("\t")
        chrom, qual, info = fields[0], fields[5], fields[7]
        depth = dict(item.partition("=")[::2] for item in info.split(";")).get("DP")
        keep = min_qual == 0 or (qual != "." and float(qual) >= min_qual)
        keep = keep and (min_dp == 0 or (depth is not None and int(depth) >= min_dp))
        counts = per_chrom.setdefault(chrom, [0, 0])
        counts[0] += 1
        if keep:
            counts[1] += 1
            passing.append(record)
    vcf = "\n".join([*meta, command, *columns, *passing]) + "\n"
    tsv = "chrom\ttotal\tpassed\n" + "".join(
        f"{chrom}\t{total}\t{passed}\n" for chrom, (total, passed) in per_chrom.items())
    return vcf, tsv, passing


def vcf_command(config: dict[str, Any]) -> str:
    # The pipeline echoes the thresholds as the config file spells them (json.dumps).
    return (f"##vcf-filterCommand=vcf-filter min_qual={json.dumps(config['min_qual'])} "
            f"min_dp={json.dumps(config['min_dp'])}")


def simulated_fastq(reads: int, seed: int, offset: int = 33) -> bytes:
    """Random reads of 30 to 150 bases, a few N, qualities 2 to 41."""
    rng = random.Random(seed)
    quals = [chr(offset + q) for q in range(2, 42)]
    out = []
    for i in range(reads):
        n = rng.randint(30, 150)
        seq = "".join(rng.choices("ACGTN", weights=(29, 21, 21, 28, 1), k=n))
        out.append(f"@read{i}\n{seq}\n+\n{''.join(rng.choices(quals, k=n))}\n")
    return "".join(out).encode()


def phred64(data: bytes) -> bytes:
    """The same FASTQ with Phred+64 qualities: every 4th non-blank line shifted by 31."""
    lines, count = [], 0
    for line in data.split(b"\n"):
        if line.strip(b"\r"):
            count += 1
            if count % 4 == 0:
                line = bytes(c + 31 if c != ord("\r") else c for c in line)
        lines.append(line)
    return b"\n".join(lines)


def read_progress_file(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- build and validate with the CLI --------------------------------------------------------
@pytest.fixture(scope="session")
def demo_builds(tmp_path_factory) -> dict[str, tuple[Path, Path, str, str]]:
    """Each demo built twice by the CLI, in separate processes, to different names:
    name -> (first package, second package, first stdout, second stdout)."""
    base = tmp_path_factory.mktemp("demo-packages")
    builds = {}
    for name in DEMOS:
        first, second = base / "one" / f"{name}.tar.gz", base / "two" / f"{name}-again.tar.gz"
        outputs = []
        for package in (first, second):
            result = cli("build", str(EXAMPLES / name), "-o", str(package))
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
        builds[name] = (first, second, *outputs)
    return builds


@pytest.mark.parametrize("name", DEMOS)
def test_build_twice_same_sha256_and_valid(demo_builds, name):
    first, second, out1, out2 = demo_builds[name]
    assert out1 == f"{sha256(first)}  {first}\n"
    assert out2 == f"{sha256(second)}  {second}\n"
    assert sha256(first) == sha256(second)
    for target, kind in ((EXAMPLES / name, "folder"), (first, "package")):
        result = cli("validate", str(target))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == f"{target}: valid pipeline {kind}\n"
    # busybox base: the image stays about 1 MB, as the issue asks.
    assert first.stat().st_size < 2 * 1024 * 1024


def test_bundled_data_is_what_make_data_writes(tmp_path):
    """data/ is generated by make_data.py: regenerating gives the committed bytes."""
    for name, data in (("fastq-stats", SMALL_FASTQ), ("vcf-filter", SMALL_VCF)):
        script = tmp_path / name / "make_data.py"
        script.parent.mkdir()
        shutil.copy(EXAMPLES / name / "make_data.py", script)
        subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
        assert (script.parent / "data" / data.name).read_bytes() == data.read_bytes()
    # and it has the variety the tests rely on
    stats = fastq_stats(SMALL_FASTQ.read_bytes())
    assert 200 <= stats.reads <= 1000 and len(stats.lengths) > 20
    records = [r.split("\t") for r in SMALL_VCF.read_text().splitlines() if r[0] != "#"]
    assert len({r[0] for r in records}) >= 3
    assert any(r[5] == "." for r in records)  # no QUAL
    infos = [{item.partition("=")[0] for item in r[7].split(";")} for r in records]
    assert any("DP" not in keys for keys in infos)  # no INFO DP
    assert all("DP4" in keys for keys in infos)  # a key that starts like DP


# -- the run scripts on the host's busybox --------------------------------------------------
@pytest.fixture(scope="session")
def busybox_path(tmp_path_factory) -> str:
    """A PATH holding only busybox applets, like the image's."""
    if BUSYBOX is None:
        pytest.skip("no busybox on this host")
    folder = tmp_path_factory.mktemp("busybox-bin")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        (folder / applet).symlink_to(BUSYBOX)
    return str(folder)


@dataclass
class ScriptRun:
    returncode: int
    stderr: str
    outputs: Path
    progress: list[dict[str, Any]]


def run_script(busybox_path: str, pipeline: str, base: Path, inputs: dict[str, bytes],
               config: dict[str, Any]) -> ScriptRun:
    """Run a pipeline's run.sh as Pirus would (same environment variables), minus LXD."""
    folders = {k: base / k for k in ("inputs", "outputs", "state")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for name, data in inputs.items():
        (folders["inputs"] / name).write_bytes(data)
    (folders["inputs"] / "config.json").write_text(json.dumps(config, indent=2))
    progress = folders["state"] / "progress.jsonl"
    progress.touch()
    env = {"PATH": busybox_path, "HOME": str(base), "PIRUS_INPUTS_DIR": str(folders["inputs"]),
           "PIRUS_OUTPUTS_DIR": str(folders["outputs"]),
           "PIRUS_CONFIG_FILE": str(folders["inputs"] / "config.json"),
           "PIRUS_PROGRESS_FILE": str(progress)}
    result = subprocess.run([BUSYBOX or "busybox", "sh", str(EXAMPLES / pipeline / "run.sh")],
                            cwd=folders["outputs"], env=env, capture_output=True, timeout=120)
    return ScriptRun(result.returncode, result.stderr.decode(), folders["outputs"],
                     read_progress_file(progress))


# A FASTQ with what real files have: CRLF line ends, blank lines, lower case (soft-masked)
# bases, a read of only N, a short read, and no newline at the very end.
EDGE_FASTQ = (b"@a desc\r\nACGTacgtNN\r\n+\r\nIIIII#####\r\n\r\n@b\nNNNN\n+\n!!!!\n\n"
              b"@c\nGGCCA\n+c\n+5?IJ\n@d\nAC\n+\nII")


@requires_busybox
@pytest.mark.parametrize(("min_length", "offset"), [(0, 33), (40, 33), (3, 64)])
def test_fastq_stats_script(busybox_path, tmp_path, min_length, offset):
    convert = phred64 if offset == 64 else (lambda data: data)
    inputs = {"small.fastq": convert(SMALL_FASTQ.read_bytes()),
              "edge.fq": convert(EDGE_FASTQ),
              "empty.fastq": b"",
              "sim.fq.gz": gzip.compress(convert(simulated_fastq(500, seed=3)), mtime=0),
              "notes.txt": b"not a FASTQ input\n"}
    plain = {k: gzip.decompress(v) if k.endswith(".gz") else v for k, v in inputs.items()
             if k != "notes.txt"}
    run = run_script(busybox_path, "fastq-stats", tmp_path, inputs,
                     {"min_length": min_length, "phred_offset": offset})
    assert run.returncode == 0, run.stderr
    stats, lengths = expected_fastq_outputs(plain, min_length, offset)
    assert (run.outputs / "stats.tsv").read_text() == stats
    assert (run.outputs / "lengths.tsv").read_text() == lengths
    assert sorted(p.name for p in run.outputs.iterdir()) == ["lengths.tsv", "stats.tsv"]
    assert run.progress == expected_progress(plain)
    assert "ignoring notes.txt" in run.stderr
    if offset == 64:  # the same mean quality as the Phred+33 original
        rows = {row.split("\t")[0]: row.split("\t") for row in stats.splitlines()}
        original = fastq_stats(SMALL_FASTQ.read_bytes(), min_length, 33)
        assert rows["small.fastq"] == original.row("small.fastq")


@requires_busybox
@pytest.mark.parametrize(("inputs", "config", "message"), [
    ({"a.fastq": SMALL_FASTQ.read_bytes()}, {"phred_offset": 64},
     "is below phred_offset 64: is the file Phred+33?"),
    ({"a.fastq": b"@r\nACGT\n+\nIII\n"}, {}, "a.fastq: line 4: the quality line is not as long"),
    ({"a.fastq": b">r\nACGT\n"}, {}, "a.fastq: line 1: expected a record header starting with @"),
    ({"a.fastq": b"@r\nACGT\n+\nIIII\n@s\nAC\n"}, {}, "the last record is incomplete"),
    ({"a.fastq.gz": b"not gzip"}, {}, "a.fastq.gz: cannot read it (broken gzip?)"),
    ({"reads.bam": b"x"}, {}, "no FASTQ input"),
])
def test_fastq_stats_script_refuses_bad_input(busybox_path, tmp_path, inputs, config, message):
    run = run_script(busybox_path, "fastq-stats", tmp_path, inputs, config)
    assert run.returncode == 1, run.stderr
    assert message in run.stderr
    assert list(run.outputs.iterdir()) == []  # no half-written table


@requires_busybox
@pytest.mark.parametrize("config", [
    {"min_qual": 0, "min_dp": 0},  # every record, even without QUAL or DP
    {"min_qual": 20, "min_dp": 10},  # the form's defaults
    {"min_qual": 50.5, "min_dp": 25},
    {"min_qual": 1e-05, "min_dp": 0},  # only drops the records without QUAL
    {"min_qual": 0, "min_dp": 119},
    {"min_qual": 1000, "min_dp": 0},  # nothing passes
])
@pytest.mark.parametrize("compressed", [False, True])
def test_vcf_filter_script(busybox_path, tmp_path, config, compressed):
    data = SMALL_VCF.read_bytes()
    name = "calls.vcf.gz" if compressed else "calls.vcf"
    run = run_script(busybox_path, "vcf-filter", tmp_path,
                     {name: gzip.compress(data, mtime=0) if compressed else data}, config)
    assert run.returncode == 0, run.stderr
    vcf, tsv, passing = vcf_filter(data.decode(), config["min_qual"], config["min_dp"],
                                   vcf_command(config))
    assert (run.outputs / "filtered.vcf").read_text() == vcf
    assert (run.outputs / "per_chromosome.tsv").read_text() == tsv
    assert run.progress == expected_progress({name: data})
    records = len([r for r in data.decode().splitlines() if r and r[0] != "#"])
    if config == {"min_qual": 0, "min_dp": 0}:
        assert len(passing) == records
    elif config["min_qual"] == 1000:
        assert passing == []
    else:
        assert 0 < len(passing) < records


@requires_busybox
def test_vcf_filter_script_crlf_and_blank_lines(busybox_path, tmp_path):
    data = SMALL_VCF.read_text().replace("\n", "\r\n").replace("#CHROM", "\r\n#CHROM", 1)
    config = {"min_qual": 30, "min_dp": 15}
    run = run_script(busybox_path, "vcf-filter", tmp_path, {"a.vcf": data.encode()}, config)
    assert run.returncode == 0, run.stderr
    vcf, tsv, _ = vcf_filter(SMALL_VCF.read_text(), 30, 15, vcf_command(config))
    assert (run.outputs / "filtered.vcf").read_text() == vcf
    assert (run.outputs / "per_chromosome.tsv").read_text() == tsv


@requires_busybox
@pytest.mark.parametrize(("inputs", "message"), [
    ({}, "expected exactly one VCF input (.vcf or .vcf.gz)"),
    ({"a.vcf": b"x", "b.vcf": b"y"}, "got 2"),
    ({"a.vcf": b"chr1\t1\t.\tA\tC\t50\tPASS\tDP=3\n"}, "a record before the #CHROM header"),
    ({"a.vcf": b"##fileformat=VCFv4.2\n"}, "no #CHROM header line: not a VCF file"),
    ({"a.vcf": b"#CHROM\tPOS\nchr1\t1\t.\n"}, "line 2: 3 tab-separated columns"),
])
def test_vcf_filter_script_refuses_bad_input(busybox_path, tmp_path, inputs, message):
    run = run_script(busybox_path, "vcf-filter", tmp_path, inputs, {"min_qual": 1, "min_dp": 1})
    assert run.returncode == 1, run.stderr
    assert message in run.stderr
    assert list(run.outputs.iterdir()) == []


# Quotes, backslashes, JSON-looking text, percent signs and non-ASCII characters, which the
# server writes as \u escapes (an emoji as a surrogate pair).
NASTY_MESSAGE = 'reference "hg38" not found in C:\\refs\\ — café ✓ 🧬 100% {"fail": false}'


@requires_busybox
@pytest.mark.parametrize(("config", "code", "message"), [
    ({"fail": True, "exit_code": 42, "message": NASTY_MESSAGE}, 42, NASTY_MESSAGE),
    ({"message": "x", "exit_code": 255, "fail": True}, 255, "x"),
    ({}, 2, "failing on purpose, as asked (fail is true)"),
    ({"fail": False, "exit_code": 9, "message": "unused"}, 0, None),
    ({"fail": True, "exit_code": 0}, 2, "exit_code must be an integer from 1 to 255, got 0"),
])
def test_fail_on_demand_script(busybox_path, tmp_path, config, code, message):
    run = run_script(busybox_path, "fail-on-demand", tmp_path, {}, config)
    assert run.returncode == code, run.stderr
    if message is None:
        assert (run.outputs / "ok.txt").read_text() == "ok\n"
        assert run.progress == [{"status": "FINISHING"}]
    else:
        assert run.stderr.rstrip("\n").split("\n")[-1].endswith(message)
        assert list(run.outputs.iterdir()) == []


# -- on LXD, through the REST API -----------------------------------------------------------
async def run_and_watch(api, ws_fetch, body: dict[str, Any], timeout: float = 120
                        ) -> tuple[dict[str, Any], list[float]]:
    """Start a run with the events websocket already open; follow it to its end. Returns the
    final run record and every progress value pushed while it went on."""
    ws = await ws_fetch("pirus", "api", "v1", "events")
    try:
        code, run = await api("POST", "runs", body=body)
        assert code == 201, run
        values: list[float] = []
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(await asyncio.wait_for(ws.read_message(),
                                                        deadline - time.monotonic()))
            if message["type"] != "run.updated" or message["data"]["id"] != run["id"]:
                continue
            values.append(message["data"]["progress"]["value"])
            if message["data"]["status"] in FINAL:
                break
    finally:
        ws.close()
    code, final = await api("GET", "runs", run["id"])
    assert code == 200
    return final, values


async def progress_file(pirus, run_id: int) -> list[dict[str, Any]]:
    """The progress reports the pipeline wrote, as the server found them."""
    row = await pirus.store.get("runs", run_id)
    return read_progress_file(Path(row["root_path"]) / ".pirus" / "progress.jsonl")


def outputs_by_name(root: Path, run: dict[str, Any]) -> dict[str, Path]:
    paths = {}
    for output in run["outputs"]:
        path = root / output["path"]
        assert output["sha256"] == sha256(path)  # the recorded hash is the file's
        paths[output["name"]] = path
    return paths


@pytest.mark.lxd
@requires_lxd
async def test_fastq_stats_on_lxd(api, install, jp_root_dir, jp_ws_fetch, pirus, demo_builds):
    pipeline = await install(demo_builds["fastq-stats"][0])
    assert pipeline["name"] == "fastq-stats" and pipeline["version"] == "1.0.0"
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    shutil.copy(SMALL_FASTQ, root / "data" / "small.fastq")
    # A bigger, gzipped input on top of the bundled one, so that the run lasts long enough
    # (a second or two) for progress to be seen while it goes on, not only in the file.
    big = simulated_fastq(40_000, seed=7)
    (root / "data" / "sim.fq.gz").write_bytes(gzip.compress(big, mtime=0))
    config = {"min_length": 40}
    run, values = await run_and_watch(api, jp_ws_fetch, {
        "pipeline_id": pipeline["id"], "name": "stats", "config": config,
        "inputs": ["data/small.fastq", "data/sim.fq.gz"]})
    assert run["status"] == "DONE", run
    assert run["exit_code"] == 0
    assert run["config"] == {"min_length": 40, "phred_offset": 33}  # default filled in
    files = {"small.fastq": SMALL_FASTQ.read_bytes(), "sim.fq.gz": big}
    stats, lengths = expected_fastq_outputs(files, min_length=40, offset=33)
    outputs = outputs_by_name(root, run)
    assert set(outputs) == {"stats.tsv", "lengths.tsv"}
    assert outputs["stats.tsv"].read_text() == stats
    assert outputs["lengths.tsv"].read_text() == lengths
    # min_length did something: reads were skipped in both files
    assert all(int(row.split("\t")[2]) > 0 for row in stats.splitlines()[1:])
    # Progress: every 10 % of each file reported, seen live, ending at 100.
    assert await progress_file(pirus, run["id"]) == expected_progress(files)
    assert run["progress"]["value"] == run["progress"]["max"] == 100
    assert run["progress"]["label"] == "small.fastq 100%"  # the last file by name
    middle = [v for v in values if 0 < v < 100]
    assert middle, values
    assert values == sorted(values)


@pytest.mark.lxd
@requires_lxd
async def test_vcf_filter_on_lxd(api, install, jp_root_dir, jp_ws_fetch, pirus, demo_builds):
    pipeline = await install(demo_builds["vcf-filter"][0])
    root = Path(jp_root_dir)
    (root / "data").mkdir()
    shutil.copy(SMALL_VCF, root / "data" / "small.vcf")
    config = {"min_qual": 50.5, "min_dp": 25}
    run, values = await run_and_watch(api, jp_ws_fetch, {
        "pipeline_id": pipeline["id"], "config": config, "inputs": ["data/small.vcf"]})
    assert run["status"] == "DONE", run
    text = SMALL_VCF.read_text()
    vcf, tsv, passing = vcf_filter(text, 50.5, 25, vcf_command(config))
    outputs = outputs_by_name(root, run)
    assert set(outputs) == {"filtered.vcf", "per_chromosome.tsv"}
    assert outputs["filtered.vcf"].read_text() == vcf
    assert outputs["per_chromosome.tsv"].read_text() == tsv
    # the records kept are exactly those of the Python filter, in order
    kept = [r for r in outputs["filtered.vcf"].read_text().splitlines() if r[0] != "#"]
    assert kept == passing and 0 < len(kept) < text.count("\nchr")
    assert await progress_file(pirus, run["id"]) == expected_progress(
        {"small.vcf": SMALL_VCF.read_bytes()})
    assert run["progress"] == {"value": 100, "min": 0, "max": 100, "label": "small.vcf 100%"}
    assert values[-1] == 100 and values == sorted(values)


@pytest.mark.lxd
@requires_lxd
async def test_fail_on_demand_on_lxd(api, install, jp_root_dir, pirus, demo_builds):
    pipeline = await install(demo_builds["fail-on-demand"][0])
    configs = [{"exit_code": 42, "message": NASTY_MESSAGE}, {}, {"fail": False}]
    ids = []
    for config in configs:  # all at once: the server runs two at a time
        code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                    "config": config})
        assert code == 201, run
        ids.append(run["id"])
    runs = [await wait_for(api, "runs", run_id, until=lambda b: b["status"] in FINAL,
                           timeout=120) for run_id in ids]
    failed, default, ok = runs
    assert failed["status"] == "ERROR" and failed["exit_code"] == 42
    assert failed["config"] == {"fail": True, "exit_code": 42, "message": NASTY_MESSAGE}
    assert failed["error"].startswith("the pipeline exited with code 42: ")
    assert failed["error"].endswith(NASTY_MESSAGE)  # stderr's last line, intact
    assert failed["outputs"] == []
    assert await progress_file(pirus, failed["id"]) == [
        {"progress": {"value": 50, "max": 100, "label": "failing on purpose"}}]
    assert default["status"] == "ERROR" and default["exit_code"] == 2
    assert default["error"] == ("the pipeline exited with code 2: fail-on-demand: fail is true: "
                                "exiting with code 2\nfailing on purpose, as asked (fail is true)")
    assert ok["status"] == "DONE" and ok["exit_code"] == 0 and ok["error"] is None
    outputs = outputs_by_name(Path(jp_root_dir), ok)
    assert set(outputs) == {"ok.txt"}
    assert outputs["ok.txt"].read_text() == "ok\n"
    code, log = await api("GET", "runs", failed["id"], "logs", "err")
    assert code == 200 and log.endswith(NASTY_MESSAGE + "\n")


def test_demo_script_builds_every_demo_pipeline():
    """scripts/demo.sh builds all the demos with the CLI and ships their bundled data."""
    script = (ROOT / "scripts" / "demo.sh").read_text()
    for name in ["fastq-count", *DEMOS]:
        assert (f'jupyter pirus build examples/pipelines/{name} -o '
                f'"$root/packages/{name}.tar.gz"') in script
    for data in (SMALL_FASTQ, SMALL_VCF):
        assert str(data.relative_to(ROOT)) in script
