"""The panel's new-run form on a real nf-core schema, in a real headless Chromium against a real
``jupyter lab`` + Pirus server + LXD: the template's groups as titled sections, its hidden
parameters behind the toggle, help text collapsed, the sample-sheet field offered the input it
accepts, the schema's errorMessage for a value breaking its pattern, a refused hidden parameter
brought into sight, the notebook form (sections, toggle, help, errorMessage), and the run (a busybox
pipeline whose form.json is the nf-core schema) to DONE. Screenshots: ``nfcore-*.png`` in the
test artifacts folder (``$PIRUS_SCREENSHOTS``, default ``test-artifacts/screenshots/``).

Builds nothing: the extension must have been built (see tests/test_labextension.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import requires_lxd
from nfcore_schemas import INPUT_ERROR, template_schema
from pkgbuild import build_pipeline
from test_labextension import (
    CHROMIUM,
    LABEXT_BUILD,
    LABEXT_SRC,
    ROOT,
    TOKEN,
    LabProcess,
    _browser_prerequisites,
)

UI_SCRIPT = LABEXT_SRC / "ui-tests" / "nfcore.spec.mjs"
# Copies the sample sheet the config names (a flat nf-core parameter) to the outputs.
SCRIPT = r"""#!/bin/sh
set -e
sheet=$(sed -n 's/.*"input": *"\([^"]*\)".*/\1/p' "$PIRUS_CONFIG_FILE")
cp "$PIRUS_INPUTS_DIR/$sheet" "$PIRUS_OUTPUTS_DIR/samplesheet.csv"
echo "read $sheet"
"""


@pytest.fixture
def lab(tmp_path):
    proc = LabProcess(tmp_path)
    try:
        yield proc.start()
    finally:
        if proc.proc is not None:
            proc.cleanup()
        proc.stop()


@pytest.mark.lxd
@requires_lxd
def test_nfcore_form_in_browser(lab: LabProcess, tmp_path: Path):
    skip = _browser_prerequisites()
    if skip and os.environ.get("CI") and skip != "PIRUS_SKIP_BROWSER=1":
        pytest.fail(f"CI must run the browser tests: {skip}")
    if skip:
        pytest.skip(skip)
    if not (LABEXT_BUILD / "package.json").is_file():
        pytest.fail(f"{LABEXT_BUILD} is not built: run `npm ci && npm run build` in labextension/")
    started = time.monotonic()
    package = build_pipeline(lab.root / "nfdemo.tar.gz", name="nfdemo", script=SCRIPT,
                             form=template_schema(error_message=True))
    response = lab.session.post(lab.api("pipelines"), json={"path": package.name}, timeout=30)
    assert response.status_code == 202, response.text
    pipeline_id = response.json()["id"]
    (lab.root / "samples.csv").write_text("sample,fastq_1,fastq_2\nS1,a.fq.gz,b.fq.gz\n")
    deadline = time.monotonic() + 180
    while True:  # the install is asynchronous: wait for it to settle
        status = lab.session.get(lab.api(f"pipelines/{pipeline_id}"), timeout=10).json()["status"]
        if status not in ("INSTALLING", "UPLOADING") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == "READY", lab.session.get(lab.api(f"pipelines/{pipeline_id}")).text

    shots = Path(os.environ.get("PIRUS_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIRUS_URL": lab.url, "PIRUS_TOKEN": TOKEN, "PIRUS_CHROMIUM": CHROMIUM,
           "PIRUS_PIPELINE_ID": str(pipeline_id), "PIRUS_INPUT_ERROR": INPUT_ERROR,
           "PIRUS_SCREENSHOTS": str(shots.resolve())}
    result = subprocess.run(["node", str(UI_SCRIPT)], cwd=LABEXT_SRC, env=env, text=True,
                            capture_output=True, timeout=600)
    print(result.stdout)
    print(f"nf-core browser test: {time.monotonic() - started:.0f} s; screenshots in {shots}")
    if result.returncode != 0:
        pytest.fail(f"the nf-core browser scenario failed (screenshots in {shots}):\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n"
                    f"--- jupyter lab log ---\n{lab.log_tail()}")
    assert "PIRUS:NFCORE-OK" in result.stdout

    # The run really happened, with the flat nf-core values.
    runs = lab.session.get(lab.api("runs"), timeout=10).json()["items"]
    assert len(runs) == 1, runs  # the refused config left nothing behind
    run = runs[0]
    assert run["status"] == "DONE", run
    assert run["config"]["input"] == "samples.csv" and run["config"]["outdir"] == "results"
    assert run["config"]["publish_dir_mode"] == "copy"
    assert run["config"]["max_multiqc_email_size"] == "10.MB"  # a hidden one, corrected
    assert [o["name"] for o in run["outputs"]] == ["samplesheet.csv"]
