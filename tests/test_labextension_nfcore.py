"""The panel's new-run form on a real nf-core schema, in a real headless Chromium against a real
``jupyter lab`` + Pirus server + LXD: the template's groups as titled sections, its hidden
parameters behind the toggle, help text collapsed, the sample-sheet field offered the input it
accepts, the schema's errorMessage for a value breaking its pattern, a refused hidden parameter
brought into sight, the notebook form (sections, toggle, help, errorMessage), and the run (a busybox
pipeline whose form.json is the nf-core schema) to DONE. Screenshots: ``nfcore-*.png`` in the
test artifacts folder (``$PIRUS_SCREENSHOTS``, default ``test-artifacts/screenshots/``).

Builds nothing: the extension must have been built (see tests/browser.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import LabProcess, require_browser, run_ui, screenshots_dir, ui_env
from conftest import requires_lxd
from nfcore_schemas import INPUT_ERROR, template_schema
from pkgbuild import build_pipeline

# Copies the sample sheet the config names (a flat nf-core parameter) to the outputs.
SCRIPT = r"""#!/bin/sh
set -e
sheet=$(sed -n 's/.*"input": *"\([^"]*\)".*/\1/p' "$PIRUS_CONFIG_FILE")
cp "$PIRUS_INPUTS_DIR/$sheet" "$PIRUS_OUTPUTS_DIR/samplesheet.csv"
echo "read $sheet"
"""


@pytest.mark.lxd
@requires_lxd
def test_nfcore_form_in_browser(lab: LabProcess, tmp_path: Path):
    require_browser()
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

    shots = screenshots_dir("nfcore-*.png")
    result = run_ui("nfcore.spec.mjs", ui_env(lab, shots, PIRUS_PIPELINE_ID=str(pipeline_id),
                                              PIRUS_INPUT_ERROR=INPUT_ERROR))
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
