"""The JupyterLab panel (``labextension/``) in a real headless Chromium against a real
``jupyter lab`` + Pirus server + LXD.

Builds nothing: the extension must have been built (``npm ci && npm run build`` in
``labextension/``, which writes ``pirus_jupyter/labextension/``). The ``lab`` fixture starts
``jupyter lab`` (token auth, a temporary root, the freshly built extension put first on the
labextensions path: tests/browser.py); this module builds the pipeline packages the scenarios
upload with ``pkgbuild``, and runs the Playwright script ``labextension/ui-tests/panel.spec.mjs``
with node. Screenshots of each main state go to ``$PIRUS_SCREENSHOTS`` (default
``test-artifacts/screenshots/``); the folder is printed.

Set ``PIRUS_SKIP_BROWSER=1`` to skip the browser test on a machine without Chromium.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from browser import (
    LABEXT_BUILD,
    LABEXT_SRC,
    ROOT,
    UI_TESTS,
    LabProcess,
    require_browser,
    screenshots_dir,
    ui_env,
)
from conftest import requires_lxd
from pkgbuild import build_pipeline, fastq, progress_script

UI_SCRIPT = UI_TESTS / "panel.spec.mjs"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# A pipeline that runs for minutes (unless canceled), reporting progress every half second.
SLOW_SCRIPT = progress_script(400, 0.5, word="slow step")


def test_labextension_listed_enabled_and_ok():
    """``jupyter labextension list`` sees the installed extension, enabled and OK."""
    result = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                            capture_output=True, text=True, timeout=120)
    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output
    lines = [line for line in output.splitlines() if re.search(r"\bpirus-jupyter\b", line)]
    assert lines, f"pirus-jupyter is not installed as a lab extension:\n{output}"
    assert any("enabled" in line and "OK" in line for line in lines), output


def test_labextension_build_is_consistent():
    """The built extension's metadata matches the sources (name, version, entry point)."""
    if not (LABEXT_BUILD / "package.json").is_file():
        pytest.fail(f"{LABEXT_BUILD} is not built: run `npm ci && npm run build` in labextension/")
    built = json.loads((LABEXT_BUILD / "package.json").read_text())
    source = json.loads((LABEXT_SRC / "package.json").read_text())
    assert built["name"] == source["name"] == "pirus-jupyter"
    assert built["version"] == source["version"]
    load = built["jupyterlab"]["_build"]["load"]
    assert (LABEXT_BUILD / load).is_file()
    assert (LABEXT_BUILD / "static" / "style.js").is_file()
    assert json.loads((LABEXT_BUILD / "install.json").read_text())["packageName"] == "pirus-jupyter"


# -- the browser test --------------------------------------------------------------------------
def run_scenarios(lab: LabProcess, env: dict[str, str], signals: Path, reads: Path,
                  timeout: float = 900) -> tuple[int, str, str]:
    """Run the Playwright script; restart the server when it asks (a line on its stdout), then
    start a run while the panel is still disconnected and tell the script (a file)."""
    stderr_path = signals / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(["node", str(UI_SCRIPT)], cwd=LABEXT_SRC, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=stderr)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.strip() == "PIRUS:RESTART-SERVER":
                    lab.stop()
                    lab.start()
                    pipeline = next(p for p in lab.session.get(lab.api("pipelines")).json()["items"]
                                    if p["name"] == "count")
                    response = lab.session.post(lab.api("runs"), json={
                        "pipeline_id": pipeline["id"], "name": "created while away",
                        "inputs": [f"pirus-uploads/{reads.name}"]})
                    assert response.status_code == 201, response.text
                    (signals / "restarted").write_text(response.text)
            proc.wait(30)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return proc.returncode, "".join(lines), stderr_path.read_text()


@pytest.mark.lxd
@pytest.mark.slow
@requires_lxd
def test_panel_in_browser(lab: LabProcess, tmp_path: Path):
    require_browser()

    assets = tmp_path / "assets"
    assets.mkdir()
    count = build_pipeline(assets / "count.tar.gz")
    slow = build_pipeline(assets / "slow.tar.gz", name="slow", script=SLOW_SCRIPT,
                          form={"type": "object", "properties": {}})
    reads = assets / "reads.fastq"
    reads.write_bytes(fastq(20))
    big = assets / "big-reads.fastq"  # several chunks: paused, resumed after a page reload
    big.write_bytes(fastq(1000) * 400)

    shots = screenshots_dir("[0-9][0-9]-*.png", "failure.png")
    print(f"\nPirus panel screenshots: {shots}")
    env = ui_env(lab, shots, PIRUS_COUNT_PACKAGE=str(count), PIRUS_SLOW_PACKAGE=str(slow),
                 PIRUS_FASTQ=str(reads), PIRUS_BIG_FILE=str(big))
    signals = tmp_path / "signals"
    signals.mkdir()
    env["PIRUS_SIGNALS"] = str(signals)
    started = time.monotonic()
    code, stdout, stderr = run_scenarios(lab, env, signals, reads)
    print(stdout)
    print(stderr, file=sys.stderr)
    print(f"browser scenarios: {time.monotonic() - started:.0f} s; screenshots in {shots}")
    if code != 0:
        pipelines = lab.session.get(lab.api("pipelines"), timeout=10).text
        pytest.fail(
            f"the browser scenarios failed (screenshots in {shots}):\n{stdout[-6000:]}\n"
            f"{stderr[-4000:]}\n--- pipelines on the server ---\n{pipelines}\n"
            f"--- jupyter lab log ---\n{lab.log_tail()}")

    # The panel's actions really happened on the server.
    runs = {r["id"]: r for r in lab.session.get(lab.api("runs")).json()["items"]}
    by_name = {name: [r for _, r in sorted(runs.items()) if r["name"] == name]
               for name in ("browser run", "slow run", "created while away",
                            "reused in the browser")}
    first, from_notebook = by_name["browser run"]  # from the form, then from the notebook code
    for done in (first, from_notebook):
        assert done["status"] == "DONE", done
        assert [o["name"] for o in done["outputs"]] == ["counts.tsv", "sub/status.txt"]
        assert done["config"] == {"min_length": 3, "label": "sample"}
        assert [i["path"] for i in done["inputs"]] == ["pirus-uploads/reads.fastq"]
    [reused] = by_name["reused in the browser"]  # asked to reuse: no container ran
    assert reused["status"] == "DONE" and reused["reused_from"] in (first["id"],
                                                                     from_notebook["id"])
    assert [o["sha256"] for o in reused["outputs"]] == \
        [o["sha256"] for o in runs[reused["reused_from"]]["outputs"]]
    [derived] = [r for r in runs.values() if r["name"] == "made from an output"]
    lineage = lab.session.get(lab.api(f"runs/{derived['id']}/lineage")).json()
    assert [e["to"] for e in lineage["edges"]] == [derived["id"]], lineage
    assert (shots / "15-run-lineage.png").is_file()
    assert [r["status"] for r in by_name["slow run"]] == ["CANCELED"]
    assert len(by_name["created while away"]) == 1
    assert (shots / "06-run-done.png").is_file()

    # The upload paused, interrupted by a page reload and resumed arrived whole.
    files = lab.session.get(lab.api("files")).json()["items"]
    resumed = next(f for f in files if f["name"] == big.name)
    assert resumed["size"] == big.stat().st_size
    assert resumed["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()

    if os.environ.get("PIRUS_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shots / "13-docs-panel.png", ROOT / "docs" / "panel.png")
