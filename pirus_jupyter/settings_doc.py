"""Render the PirusApp settings as Markdown (docs/configuration.md is generated from this, and a
test keeps the two in step): ``python -m pirus_jupyter.settings_doc > docs/configuration.md``."""

from __future__ import annotations

from .app import PirusApp

HEADER = """# Configuration

Every setting of the Pirus extension, with its default. Set them in a Jupyter config file
(`jupyter_server_config.py`: `c.PirusApp.max_parallel_runs = 4`, or the JSON equivalent) or on
the command line (`jupyter lab --PirusApp.max_parallel_runs=4`).

This page is generated: `python -m pirus_jupyter.settings_doc > docs/configuration.md`.

| setting | type | default | meaning |
|---|---|---|---|
"""


def render() -> str:
    rows = []
    traits = PirusApp.class_own_traits(config=True)
    for name in sorted(traits):
        trait = traits[name]
        default = trait.default_value_repr() if name not in _DYNAMIC else _DYNAMIC[name]
        help_text = " ".join(trait.help.split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {type(trait).__name__} | `{default}` | {help_text} |")
    return HEADER + "\n".join(rows) + "\n"


_DYNAMIC = {
    "data_dir": "<jupyter data dir>/pirus",
    "max_parallel_runs": "number of CPUs",
}

if __name__ == "__main__":
    print(render(), end="")
