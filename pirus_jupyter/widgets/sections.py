"""How a form's top-level fields are laid out: nf-core's groups as titled sections, hidden
parameters behind a toggle, ``help_text`` as a collapsed Markdown panel under its field, and
path fields (``format: file-path|directory-path|path``) offered the run's inputs.

The schema is the server's normalised one (:mod:`pirus_jupyter.nfschema`): groups listed under
``x-pirus-groups``, help already rendered to safe HTML. The fields themselves are :mod:`.fields`;
this module only arranges their boxes, so a form without groups looks as it always did.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import regex

from ..nfschema import GROUPS, HELP_HTML
from .fields import LABEL_WIDTH, Field, ObjectField, StringField

if TYPE_CHECKING:
    from .form import ConfigForm

__all__ = ["Sections", "accepts"]

_SECTION = "margin:10px 0 2px;padding-top:4px;border-top:1px solid #d0d7de"
_MUTED = "color:#57606a;font-size:90%"
_PICK = "choose one of the run's inputs…"
_HELP = "color:#57606a;font-size:90%"


def accepts(schema: Mapping[str, Any], name: str) -> bool:
    """Whether a file named ``name`` fits a path field: its ``pattern`` (a deadline: the schema
    comes from a package) and its ``mimetype`` (by the name's extension, when one is known)."""
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if regex.search(pattern, name, timeout=0.1) is None:
                return False
        except (TimeoutError, regex.error):
            return False
    mimetype = schema.get("mimetype")
    if isinstance(mimetype, str) and mimetype:
        guessed, _ = mimetypes.guess_type(name)
        if guessed is not None and guessed != mimetype and not (
                mimetype.startswith("text/") and guessed.startswith("text/")):
            return False
    return True


class Sections:
    """The top-level fields of ``root`` in their sections; ``box`` is what the form shows."""

    def __init__(self, form: ConfigForm, root: ObjectField, schema: Mapping[str, Any]) -> None:
        self.form = form
        self.root = root
        self.hidden: dict[str, Field] = {
            name: field for name, field in root.children.items()
            if field.schema.get("hidden") is True}
        self.toggle = widgets.ToggleButton(
            value=False, description=f"Show hidden parameters ({len(self.hidden)})",
            tooltip="parameters the pipeline marks as hidden (advanced)",
            layout=widgets.Layout(width="auto", display="" if self.hidden else "none"))
        self.toggle.observe(lambda _: self._show_hidden(), names="value")
        self.revealed: set[str] = set()
        self.headers: dict[str, widgets.HTML] = {}
        self.group_members: dict[str, list[str]] = {}
        self.pickers: dict[str, widgets.Dropdown] = {}
        for field in root.children.values():
            self._decorate(field)
        parts: list[widgets.Widget] = []
        groups = [g for g in schema.get(GROUPS) or [] if isinstance(g, Mapping)]
        grouped = {n for g in groups for n in g.get("properties") or []}
        parts += [f.box for n, f in root.children.items() if n not in grouped]
        for group in groups:
            members = [n for n in group.get("properties") or [] if n in root.children]
            if not members:
                continue
            gid = str(group.get("id"))
            self.group_members[gid] = members
            self.headers[gid] = widgets.HTML(self._header_html(group))
            parts.append(self.headers[gid])
            parts += [root.children[n].box for n in members]
        parts += [root.error, self.toggle]
        self.box = widgets.VBox(parts)
        self._show_hidden()

    @staticmethod
    def _header_html(group: Mapping[str, Any]) -> str:
        # fa_icon names a Font Awesome glyph the page may not have: the title alone is shown.
        title = html.escape(str(group.get("title") or group.get("id") or ""))
        description = html.escape(str(group.get("description") or ""))
        help_html = group.get("help_html")  # safe HTML, rendered by the server
        return (f'<div style="{_SECTION}"><b>{title}</b>'
                + (f'<div style="{_MUTED}">{description}</div>' if description else "")
                + (f'<details style="{_HELP}"><summary style="cursor:pointer">Help</summary>'
                   f"{help_html}</details>" if isinstance(help_html, str) and help_html else "")
                + "</div>")

    def _decorate(self, field: Field) -> None:
        """Add the collapsed help and, for a path field, the picker of the run's inputs."""
        extra: list[widgets.Widget] = []
        if isinstance(field, StringField) and field.kind == "text" and \
                field.schema.get("format") in ("file-path", "path"):  # inputs are files
            names = [Path(p).name for p in self.form.inputs]
            fitting = [n for n in names if accepts(field.schema, n)]
            if fitting:
                picker = widgets.Dropdown(options=[_PICK, *fitting], value=_PICK,
                                          layout=widgets.Layout(width="auto",
                                                                margin=f"0 0 2px {LABEL_WIDTH}"))

                def pick(change: Any, field: StringField = field) -> None:
                    if change["new"] != _PICK:
                        field.set(change["new"])
                        field.changed()

                picker.observe(pick, names="value")
                self.pickers[field.key] = picker
                extra.append(picker)
        help_html = field.schema.get(HELP_HTML)
        if isinstance(help_html, str) and help_html:
            # Safe HTML: rendered by the server from Markdown without raw HTML. A <details>
            # folds it with no widget state (and is lighter than an Accordion).
            extra.append(widgets.HTML(
                f'<details style="{_HELP}"><summary style="cursor:pointer">Help</summary>'
                f"{help_html}</details>", layout=widgets.Layout(margin=f"0 0 4px {LABEL_WIDTH}")))
        if extra:
            children = list(field.box.children)
            field.box.children = [*children[:-1], *extra, children[-1]]  # error line last

    def _show_hidden(self) -> None:
        self.revealed.clear()
        self.refresh()

    def refresh(self) -> None:
        """Show the hidden fields when toggled, and any hidden field with a problem (a value
        the user cannot see must not block the run unexplained)."""
        shown = self.toggle.value
        # Once shown for a problem, a field stays until the toggle is used: it must not vanish
        # while its value is being corrected.
        self.revealed |= {n for n, f in self.hidden.items() if f.messages}
        visible = {n for n in self.hidden if shown or n in self.revealed}
        for name, field in self.hidden.items():
            field.box.layout.display = "" if name in visible else "none"
        for gid, members in self.group_members.items():
            seen = any(n not in self.hidden or n in visible for n in members)
            self.headers[gid].layout.display = "" if seen else "none"

    def help_panel(self, name: str) -> widgets.HTML | None:
        """The collapsed help of the top-level field ``name``, if it has one."""
        for child in self.root.children[name].box.children:
            if isinstance(child, widgets.HTML) and child.value.startswith("<details"):
                return child
        return None
