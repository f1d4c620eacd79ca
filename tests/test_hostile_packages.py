"""Hostile packages: what an install and ``jupyter pirus validate`` do with a metadata.yaml
alias bomb, limits that would drop the server's defaults, a member under a symlink, a form
that refers outside itself and a form default whose pattern backtracks for ever.

Installs go through the REST API of a real server (pytest-jupyter, real LXD); a refused
package ends its pipeline in ERROR with the message, as every invalid package does
(tests/test_api.py::test_bad_packages_end_in_error_and_write_nothing).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pylxd
import pytest
import yaml
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import GOOD_METADATA, build_pipeline, fastq, raw_package

from pirus_jupyter.packaging import build_package_from_parts
from pirus_jupyter.packaging.inspect import inspect_package
from pirus_jupyter.packaging.validate import validate_package

EMPTY_FORM = {"type": "object", "properties": {}}
# Reports "ready", then holds its container until the test drops "release" into its inputs.
HOLD_SCRIPT = r"""#!/bin/sh
printf '{"progress": {"label": "ready"}}\n' >> "$PIRUS_PROGRESS_FILE"
i=0
while [ ! -e "$PIRUS_INPUTS_DIR/release" ] && [ $i -lt 2400 ]; do i=$((i+1)); sleep 0.25; done
echo "released after $i"
"""


def alias_bomb(metadata: dict, levels: int = 7) -> str:
    """``metadata`` as YAML plus, in its pirus block, an unknown key of a few hundred bytes
    that holds 10**levels strings once its aliases are expanded."""
    others = {key: value for key, value in metadata.items() if key != "pirus"}
    pirus = yaml.safe_dump({"pirus": metadata["pirus"]}, sort_keys=False)
    lines = ["  junk:", "    l0: &l0 [x,x,x,x,x,x,x,x,x,x]"]
    for level in range(1, levels):
        lines.append(f"    l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 10) + "]")
    return yaml.safe_dump(others) + pirus + "\n".join(lines) + "\n"


def replace_members(package: Path, output: Path, replacements: dict[str, bytes]) -> Path:
    """``package`` with the named members' content replaced (a package the build would
    refuse to make)."""
    with tarfile.open(package) as source, tarfile.open(output, "w:gz") as target:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            name = member.name.removeprefix("./")
            if name in replacements:
                data = replacements[name]
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    return output


def with_form(tmp_path: Path, name: str, form: dict) -> Path:
    good = build_pipeline(tmp_path / f"{name}-good.tar.gz", name=name, script="#!/bin/sh\n",
                          form=EMPTY_FORM)
    return replace_members(good, tmp_path / f"{name}.tar.gz",
                           {"rootfs/pipeline/form.json": json.dumps(form).encode()})


async def test_yaml_alias_bomb_is_refused_and_listings_stay_small(api, install, tmp_path):
    good = build_pipeline(tmp_path / "good.tar.gz", name="bomb", script="#!/bin/sh\n",
                          form=EMPTY_FORM)
    with tarfile.open(good) as tar:
        metadata = yaml.safe_load(tar.extractfile("metadata.yaml").read())
    bomb = alias_bomb(metadata).encode()
    assert yaml.safe_load(bomb)["pirus"]["name"] == "bomb"
    package = replace_members(good, tmp_path / "bomb.tar.gz", {"metadata.yaml": bomb})
    pipeline = await install(package, expect="ERROR")
    assert "metadata.yaml is refused: over 100000 values once its aliases" in pipeline["error"]
    response = await api("GET", "pipelines", raw=True)
    assert response.code == 200 and len(response.body) < 10_000
    # an install keeps only the fields Pirus knows: unknown keys never reach the record
    plain = raw_package(tmp_path / "plain.tar.gz", metadata={
        **GOOD_METADATA, "pirus": {**GOOD_METADATA["pirus"], "junk": ["x"] * 1000}})
    assert "junk" not in inspect_package(plain, 1 << 30).manifest


@pytest.mark.parametrize("limits, problem", [
    ({"processes": "lots"}, "pirus.limits.processes: must be a positive integer"),
    ({"memory": "2G"}, "pirus.limits.memory: '2G' is not a size like"),
    ({"cpu": 0}, "pirus.limits.cpu: must be at least 1"),
])
async def test_invalid_limits_are_refused_at_install(install, tmp_path, limits, problem):
    package = raw_package(tmp_path / "limits.tar.gz", metadata={
        **GOOD_METADATA, "pirus": {**GOOD_METADATA["pirus"], "limits": limits}})
    pipeline = await install(package, expect="ERROR")
    assert problem in pipeline["error"], pipeline["error"]


@requires_lxd
@pytest.mark.lxd
async def test_empty_limit_keeps_the_default_process_limit(api, install, pirus, jp_root_dir,
                                                            tmp_path):
    """``limits: {processes: ""}`` once replaced the default and LXD got no limit at all."""
    package = build_package_from_parts(
        {"name": "unlimited", "run": "/pipeline/run.sh"},
        {"/pipeline/run.sh": HOLD_SCRIPT.encode()}, tmp_path / "unlimited.tar.gz",
        extra_metadata={"pirus": {"limits": {"processes": ""}}})  # past the build's checks
    pipeline = await install(package)
    (Path(jp_root_dir) / "a.fastq").write_bytes(fastq(1))
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "inputs": ["a.fastq"]})
    assert code == 201, run
    run = await wait_for(api, "runs", run["id"], timeout=300, until=lambda b: b["status"] in
                         FINAL or b["progress"].get("label") == "ready")
    assert run["status"] == "RUNNING", run
    row = await pirus.store.get("runs", run["id"])
    config = pylxd.Client().instances.get(row["lxd_container"]).expanded_config
    assert config.get("limits.processes") == pirus.runs.default_limits["processes"]
    (Path(row["root_path"]) / "inputs" / "release").write_text("")
    run = await wait_for(api, "runs", run["id"], timeout=300, until=lambda b: b["status"] in FINAL)
    assert run["status"] == "DONE", run
    assert pipeline["limits"] == {}  # the empty value counts as absent


async def test_member_under_a_symlink_is_refused(install, tmp_path):
    package = raw_package(tmp_path / "under-link.tar.gz", metadata=GOOD_METADATA, members=[
        ("rootfs/evil", {"type": tarfile.SYMTYPE, "linkname": "/etc"}),
        ("rootfs/evil/x", {"data": b"x"}),
    ])
    pipeline = await install(package, expect="ERROR")
    assert "'rootfs/evil/x' is inside 'rootfs/evil', which is a symlink" in pipeline["error"]


async def test_form_referring_outside_itself_is_refused_at_install(install, tmp_path):
    package = with_form(tmp_path, "remote-ref", {"type": "object", "properties": {
        "x": {"$ref": "http://127.0.0.1:9/schema.json"}}})
    pipeline = await install(package, expect="ERROR")
    assert "the pipeline's form refers outside itself" in pipeline["error"], pipeline["error"]
    problems = [str(p) for p in validate_package(package)]
    assert any("refers outside itself" in p for p in problems), problems


@pytest.mark.timeout(120)
def test_catastrophic_default_pattern_does_not_stall_validate(tmp_path):
    """``^(a|aa)+$`` against 64 a's then '!' backtracks ~fib(64) times (jsonschema's plain
    ``re`` never ends): the default's check has the deadline every config check has, and
    reports the pattern instead of hanging."""
    package = with_form(tmp_path, "redos", {"type": "object", "properties": {
        "x": {"type": "string", "pattern": "^(a|aa)+$", "default": "a" * 64 + "!"}}})
    problems = [str(p) for p in validate_package(package)]
    assert problems == [
        "rootfs/pipeline/form.json: properties.x.default: the default is refused by its own "
        "schema: checking the form's patterns took over 1 s (at '^(a|aa)+$'): the form needs "
        "simpler patterns"], problems
