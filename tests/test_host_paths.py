"""Host paths behind a run's mounts, seen from inside the container (issue 19).

LXD renders an image's templates with the instance's devices, whose ``source`` is the run
folder's host path: a package whose templates use ``devices`` or ``config`` is refused at
install (templates using the instance's own facts still work). A bind mount also shows its
host source in ``/proc/self/mountinfo``, which no setting of LXD hides: with
``data_transfer = "push"`` nothing is mounted, and a run sees no host path at all
(docs/reliability.md says which deployment gets which).

Real server (pytest-jupyter), real LXD, push mode.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import FINAL, requires_lxd, wait_for
from pkgbuild import build_pipeline

from pirus_jupyter.errors import InvalidPackage
from pirus_jupyter.packaging.inspect import check_templates

# Everything a pipeline could learn of its mounts and its environment, into its outputs.
SNOOP_SCRIPT = r"""#!/bin/sh
cat /proc/self/mountinfo > "$PIRUS_OUTPUTS_DIR/mountinfo.txt"
env > "$PIRUS_OUTPUTS_DIR/env.txt"
cat /etc/pirus-name > "$PIRUS_OUTPUTS_DIR/name.txt"
"""


def with_templates(package: Path, output: Path, templates: dict[str, bytes]) -> Path:
    """``package`` plus LXD templates rendered at start into ``/etc/pirus-<name>``."""
    with tarfile.open(package) as source, tarfile.open(output, "w:gz") as target:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.removeprefix("./") == "metadata.yaml":
                metadata = yaml.safe_load(data)
                metadata["templates"] = {
                    f"/etc/pirus-{name}": {"when": ["create", "start"], "template": f"{name}.tpl"}
                    for name in templates}
                data = yaml.safe_dump(metadata).encode()
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, body in templates.items():
            member = tarfile.TarInfo(f"templates/{name}.tpl")
            member.size, member.mode = len(body), 0o644
            target.addfile(member, io.BytesIO(body))
    return output


@pytest.mark.parametrize("body", [
    b"{{ devices.inputs.source }}",
    b"{% for name, device in devices %}{{ device }}{% endfor %}",
    b"{{ config_get(\"volatile.idmap.base\", \"\") }}",
    b"{%if config %}x{% endif %}",
])
def test_templates_reading_the_hosts_facts_are_refused(body):
    with pytest.raises(InvalidPackage, match=r"template 'templates/leak\.tpl' uses"):
        check_templates({"templates/leak.tpl": body})


def test_templates_using_the_instances_own_facts_pass():
    # "devices" in plain text (outside a tag) is not a use of the variable.
    check_templates({"templates/hostname.tpl": b"{{ instance.name }} {{ container.name }}\n"
                     b"devices and config are words here\n"
                     b"{% if trigger == \"create\" %}{{ properties.x }}{% endif %}"})


@pytest.fixture
def pirus_config():
    return {"data_transfer": "push", "max_parallel_runs": 1}


@pytest.mark.lxd
@requires_lxd
async def test_a_template_showing_mount_sources_is_refused_at_install(api, install, tmp_path):
    good = build_pipeline(tmp_path / "good.tar.gz", name="leaky", form={},
                          script=SNOOP_SCRIPT)
    leaky = with_templates(good, tmp_path / "leaky.tar.gz",
                           {"leak": b"{{ devices.inputs.source }}"})
    pipeline = await install(leaky, expect="ERROR")
    assert "uses 'devices'" in pipeline["error"], pipeline


@pytest.mark.lxd
@requires_lxd
async def test_a_pushed_run_sees_no_host_path(api, install, pirus, jp_root_dir, tmp_path):
    package = with_templates(
        build_pipeline(tmp_path / "snoop-base.tar.gz", name="snoop", form={},
                       script=SNOOP_SCRIPT),
        tmp_path / "snoop.tar.gz", {"name": b"{{ instance.name }}"})
    pipeline = await install(package)
    (jp_root_dir / "reads.txt").write_text("some input\n")
    code, run = await api("POST", "runs", body={"pipeline_id": pipeline["id"],
                                                "inputs": ["reads.txt"]})
    assert code == 201, run
    run = await wait_for(api, "runs", str(run["id"]), until=lambda b: b["status"] in FINAL,
                         timeout=120)
    assert run["status"] == "DONE", run
    outputs = {o["name"]: Path(jp_root_dir) / o["path"] for o in run["outputs"]}
    seen = "".join(outputs[name].read_text() for name in ("mountinfo.txt", "env.txt"))
    assert "PIRUS_OUTPUTS_DIR=" in seen and " / " in seen  # the files hold what was seen
    for host_path in (pirus.data_dir, jp_root_dir, tmp_path):
        assert str(host_path) not in seen, host_path
    # The allowed template was rendered with the container's own name.
    assert outputs["name.txt"].read_text().strip().startswith(f"{pirus.runs.prefix}-run-")
