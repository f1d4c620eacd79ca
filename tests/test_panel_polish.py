"""The panel as a first-time user walks it (issue 17, item 2), in a real headless Chromium
against a real ``jupyter lab`` + Pirus server + LXD: failed installs cleared in one action, the
dialog of a pipeline that never installed, no icon request that can only 404, Markdown
descriptions, full names on hover, the log opening on the stream that has output, no "listed
when done" for a failed run, no repeated percentage, the clock stopped while paused, the new-run
form pre-filled with the selected files the pipeline accepts, the tab and view surviving a
reload, and the settings in the Settings Editor.

One server, one browser session (``labextension/ui-tests/polish.spec.mjs``); the pipelines,
files and runs it looks at are made through the REST API first. Screenshots of each screen go
to ``$PIRUS_SCREENSHOTS`` (default ``test-artifacts/screenshots/``), named ``polish-*.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from browser import LabProcess, require_browser, run_ui, screenshots_dir, ui_env
from conftest import FINAL, requires_lxd
from pkgbuild import bad_package, build_pipeline, fastq

LONG_NAME = "reads-counter-with-a-name-far-too-long-for-the-side-panel"
DESCRIPTION = "Counts **reads** in FASTQ files.\n\n- one `counts.tsv`\n- <b>no HTML</b>"

# Reports a progress label that says its own percentage, then waits (paused, then canceled).
WAITING_SCRIPT = """#!/bin/sh
printf '{"progress": {"value": 100, "max": 100, "label": "x.fastq.gz 100%%"}}\\n' \\
  >> "$PIRUS_PROGRESS_FILE"
echo started
sleep 600
"""
# Says why on stderr only, leaves a partial output, fails.
FAILING_SCRIPT = """#!/bin/sh
echo half > "$PIRUS_OUTPUTS_DIR/partial.txt"
echo "no reference genome given" >&2
exit 3
"""


def _form(pattern: str) -> dict:
    return {"type": "object", "properties": {
        "reads": {"type": "string", "format": "file-path", "pattern": pattern,
                  "title": "Input file"}}}


def _wait(lab: LabProcess, path: str, until, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = lab.session.get(lab.api(path), timeout=30).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"{path} never got there: {body}"
        time.sleep(0.3)


def _install(lab: LabProcess, package: Path) -> dict:
    target = lab.root / package.name
    target.write_bytes(package.read_bytes())
    reply = lab.session.post(lab.api("pipelines"), json={"path": package.name}, timeout=60)
    assert reply.status_code == 202, reply.text
    return _wait(lab, f"pipelines/{reply.json()['id']}",
                 lambda b: b["status"] not in ("INSTALLING", "UPLOADING"))


@pytest.mark.lxd
@requires_lxd
def test_panel_walkthrough_fixes(lab: LabProcess, tmp_path: Path):
    require_browser()

    assets = tmp_path / "assets"
    assets.mkdir()
    waiting = build_pipeline(assets / "waiting.tar.gz", name=LONG_NAME, script=WAITING_SCRIPT,
                             form=_form(r"\.f(ast)?q(\.gz)?$"), description=DESCRIPTION)
    failing = build_pipeline(assets / "failing.tar.gz", name="vcf-fails", script=FAILING_SCRIPT,
                             form=_form(r"\.vcf(\.gz)?$"))
    broken = bad_package(assets / "broken.tar.gz", "not_a_tar")
    for package, expect in ((waiting, "READY"), (failing, "READY"), (broken, "ERROR")):
        pipeline = _install(lab, package)
        assert pipeline["status"] == expect, pipeline
        assert pipeline["has_icon"] is False  # none of them ships an icon
    pipelines = {p["name"]: p for p in lab.session.get(lab.api("pipelines")).json()["items"]}

    data = lab.root / "data"
    data.mkdir()
    (data / "a.fastq").write_bytes(fastq(5))
    (data / "b.vcf").write_text("##fileformat=VCFv4.2\n")
    (data / "notes.txt").write_text("not an input\n")

    def start(name: str, pipeline: str) -> dict:
        reply = lab.session.post(lab.api("runs"), json={
            "pipeline_id": pipelines[pipeline]["id"], "name": name}, timeout=60)
        assert reply.status_code == 201, reply.text
        return reply.json()

    failed = start("failing run", "vcf-fails")
    waiting_run = start("waiting run", LONG_NAME)
    failed = _wait(lab, f"runs/{failed['id']}", lambda r: r["status"] in FINAL)
    assert failed["status"] == "ERROR", failed
    # running, with its label read: then paused, so that its clock stands still
    _wait(lab, f"runs/{waiting_run['id']}",
          lambda r: r["status"] == "RUNNING" and (r["progress"] or {}).get("label"))
    paused = lab.session.post(lab.api(f"runs/{waiting_run['id']}/pause"), timeout=60)
    assert paused.status_code == 200 and paused.json()["paused_since"], paused.text

    shots = screenshots_dir("polish-*.png")
    env = ui_env(lab, shots, PIRUS_LONG_NAME=LONG_NAME, PIRUS_WAITING_RUN=json.dumps(paused.json()),
                 PIRUS_FAILED_RUN=str(failed["id"]))
    started = time.monotonic()
    result = run_ui("polish.spec.mjs", env)
    print(f"browser scenarios: {time.monotonic() - started:.0f} s; screenshots in {shots}")
    assert result.returncode == 0, (
        f"the browser scenarios failed (screenshots in {shots}):\n{result.stdout[-6000:]}\n"
        f"{result.stderr[-4000:]}\n--- jupyter lab log ---\n{lab.log_tail()}")

    # What the panel did happened on the server: the failed install is gone, the others stay.
    names = [p["name"] for p in lab.session.get(lab.api("pipelines")).json()["items"]]
    assert sorted(names) == sorted([LONG_NAME, "vcf-fails"]), names
    assert (shots / "polish-07-newrun-prefilled.png").is_file()
