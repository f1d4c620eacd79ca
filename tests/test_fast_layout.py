"""The layout's rules, checked on the source: which package may import which, and how long a
module may grow (docs/design.md). Pure reads of the files; no server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parent.parent / "pirus_jupyter"
MAX_LINES = 500
# One concept each that would only be cut in an arbitrary place (docs/design.md says why).
LONGER_ALLOWED = {"widgets/fields.py": 560}

# importer (a folder or module under pirus_jupyter/) -> what it must never import
FORBIDDEN = {
    "kernel": {"widgets", "notebook", "cli", "handlers", "app", "services", "runs", "uploads",
               "store", "pipelines", "files", "backend", "packaging"},
    "widgets": {"cli", "handlers", "app", "services", "runs", "uploads", "store", "backend"},
    "cli": {"widgets", "notebook", "handlers", "app", "services", "runs", "uploads", "store"},
    "packaging": {"kernel", "widgets", "cli", "handlers", "app", "services", "runs", "uploads"},
    "backend": {"handlers", "app", "services", "runs", "uploads", "pipelines", "files", "store",
                "kernel", "widgets", "cli"},
    "store": {"handlers", "app", "services", "runs", "uploads", "pipelines", "files", "backend"},
    "models": {"handlers", "app", "services", "runs", "uploads", "pipelines", "files", "store"},
    "events": {"handlers", "app", "services", "runs", "uploads", "pipelines", "files", "store"},
    "errors": {"handlers", "app", "services", "runs", "uploads", "pipelines", "files", "store"},
    # services never call back up into the handlers
    "runs": {"handlers", "app", "kernel", "widgets", "cli"},
    "uploads": {"handlers", "app", "kernel", "widgets", "cli"},
    "pipelines": {"handlers", "app", "kernel", "widgets", "cli"},
    "files": {"handlers", "app", "kernel", "widgets", "cli"},
    "services": {"handlers", "kernel", "widgets", "cli"},
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


def top_part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(path: Path) -> set[str]:
    rel = path.relative_to(PACKAGE)
    return parts_imported_by(path.read_text(), list(rel.parts[:-1]))


def parts_imported_by(source: str, here: list[str]) -> set[str]:
    """The top-level parts of pirus_jupyter that ``source`` (a module in the package ``here``,
    below pirus_jupyter) imports, wherever the import stands (module level, inside a function,
    under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
                if target:
                    found.add(target[0])
                else:  # "from . import x" at the top: x is the part
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("pirus_jupyter."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pirus_jupyter."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path) -> None:
    forbidden = FORBIDDEN.get(top_part(path), set())
    wrong = (imported_parts(path) & forbidden) - {top_part(path)}
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_the_import_check_sees_every_form_of_import() -> None:
    # The rule above is only as good as its parser: an import hidden in a function counts.
    hidden = "def f():\n    from ..widgets import record\n    return record\n"
    assert parts_imported_by(hidden, ["kernel"]) == {"widgets"}
    assert parts_imported_by("from . import store\n", []) == {"store"}
    assert parts_imported_by("from .records import Run\n", ["kernel"]) == {"kernel"}
    assert parts_imported_by("import pirus_jupyter.cli.parser\n", ["kernel"]) == {"cli"}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable_in_one_sitting(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text().splitlines())
    assert lines <= LONGER_ALLOWED.get(rel, MAX_LINES), f"{rel}: {lines} lines"
