"""Real nf-core parameter schemas, from the nf-core package that scripts/setup-tools.sh puts in a
venv of its own: its pipeline template's nextflow_schema.json rendered by nf-core's own template
parameters (as ``nf-core pipelines create`` would), and the schema its nf-schema plugin tests
use. Read once per test session."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from pathlib import Path
from typing import Any

from tools import tools_dir

# Read at import: pytest-jupyter's server fixtures point HOME at a temporary folder.
_TOOLS = tools_dir()

# Runs in the nf-core venv: nf-core's PipelineCreate computes the template's parameters, jinja2
# renders the template's schema with them (no git, no network).
_RENDER = """
import sys, tempfile
import jinja2
from nf_core.pipelines.create.create import PipelineCreate
with tempfile.TemporaryDirectory() as d:
    create = PipelineCreate(name="demo", description="A demo pipeline", author="Pirus tests",
                            no_git=True, outdir=d, default_branch="main")
    env = jinja2.Environment(loader=jinja2.PackageLoader("nf_core", "pipeline-template"),
                             keep_trailing_newline=True)
    sys.stdout.write(env.get_template("nextflow_schema.json").render(create.jinja_params))
"""
# nf-core pipelines write such messages on their patterns (sarek, rnaseq): the template has none.
INPUT_ERROR = "The sample sheet must be a .csv file name without spaces"


def _python() -> str:
    python = _TOOLS / "nf-core" / "bin" / "python"
    if not python.exists():  # never a silent skip of the real schemas
        raise RuntimeError(f"{python} missing: run bash scripts/setup-tools.sh")
    return str(python)


@functools.cache
def _template() -> str:
    return subprocess.run([_python(), "-c", _RENDER], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def template_schema(error_message: bool = False) -> dict[str, Any]:
    """The nf-core pipeline template's schema (draft 2020-12, groups in ``$defs``); with
    ``error_message`` its ``input`` carries an ``errorMessage`` as real pipelines write."""
    schema = json.loads(_template())
    if error_message:
        schema["$defs"]["input_output_options"]["properties"]["input"]["errorMessage"] = \
            INPUT_ERROR
    return schema


@functools.cache
def _plugin_test() -> str:
    site = subprocess.run([_python(), "-c", "import nf_core, os; print(os.path.dirname("
                           "nf_core.__file__))"], check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()
    path = Path(site) / "pipeline-template/subworkflows/nf-core/utils_nfschema_plugin/tests" \
        "/nextflow_schema.json"
    return path.read_text()


def plugin_test_schema() -> dict[str, Any]:
    """The schema nf-core's utils_nfschema_plugin tests use (hidden parameters, no Jinja)."""
    return copy.deepcopy(json.loads(_plugin_test()))


def draft07(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema as a draft-07 nf-core pipeline writes it (``definitions``)."""
    text = json.dumps(schema).replace('"#/$defs/', '"#/definitions/')
    out = json.loads(text)
    out["$schema"] = "http://json-schema.org/draft-07/schema"
    out["definitions"] = out.pop("$defs")
    return out
