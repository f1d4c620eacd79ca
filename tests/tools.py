"""Where scripts/setup-tools.sh put the third-party command-line tools the tests drive."""

from __future__ import annotations

import os
from pathlib import Path


def tools_dir() -> Path:
    return Path(os.environ.get("PIRUS_TOOLS_DIR") or Path.home() / ".cache" / "pirus-tools")


def tool_venv(name: str) -> Path:
    """The venv holding ``name`` (``snakemake``, ``nf-core``); an error naming the set-up step
    when it is missing, so a test never silently skips a real client."""
    venv = tools_dir() / name
    if not (venv / "bin" / "python").exists():
        raise RuntimeError(f"{venv} missing: run bash scripts/setup-tools.sh")
    return venv
