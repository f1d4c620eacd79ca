"""FilePicker: choose input files under the Jupyter root, browsing folders through a lister
(the server's Contents API via ``Client.list_dir``, or :func:`local_lister` for a local folder)."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .static import StaticFallback

__all__ = ["FilePicker", "Lister", "local_lister"]

#: ``lister(folder)``: the entries (``name``, ``path``, ``type``, ``size``) of a root folder.
Lister = Callable[[str], list[dict[str, Any]]]


def local_lister(root: str | os.PathLike[str]) -> Lister:
    """A folder lister over a local root folder (for forms without a server)."""
    base = Path(root).resolve()

    def listing(path: str) -> list[dict[str, Any]]:
        folder = (base / path).resolve()
        folder.relative_to(base)  # never outside the root
        entries = []
        for entry in sorted(folder.iterdir()):
            kind = "directory" if entry.is_dir() else "file"
            entries.append({"name": entry.name, "type": kind,
                            "path": entry.relative_to(base).as_posix(),
                            "size": entry.stat().st_size if kind == "file" else None})
        return entries

    return listing


class FilePicker(StaticFallback, widgets.VBox):
    """Choose input files under the Jupyter root: browse folders on the left (selecting a
    folder opens it, ``..`` goes up), *Add* the selected file; the chosen files are listed on
    the right with *Remove*. ``value`` is the list of root-relative paths."""

    def __init__(self, lister: Lister, value: Iterable[str] = (), on_change:
                 Callable[[list[str]], None] | None = None, description: str = "Inputs") -> None:
        self.lister = lister
        self.on_change = on_change
        self.cwd = ""
        self._entries: list[dict[str, Any]] = []
        self.location = widgets.HTML()
        self.browser = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="280px"))
        self.browser.observe(self._browse, names="value")
        self.add_button = widgets.Button(description="Add", icon="plus", disabled=True,
                                         layout=widgets.Layout(width="auto"))
        self.add_button.on_click(lambda _: self.add_selected())
        self.chosen = widgets.SelectMultiple(options=[], rows=8,
                                             layout=widgets.Layout(width="280px"))
        self.remove_button = widgets.Button(description="Remove", icon="minus",
                                            layout=widgets.Layout(width="auto"))
        self.remove_button.on_click(lambda _: self.remove_selected())
        self.message = widgets.HTML()
        super().__init__([
            widgets.HTML(f"<b>{html.escape(description)}</b>"),
            widgets.HBox([
                widgets.VBox([self.location, self.browser, self.add_button]),
                widgets.VBox([widgets.HTML("chosen files"), self.chosen, self.remove_button]),
            ]),
            self.message,
        ])
        self._value: list[str] = [str(v) for v in value]
        self.chosen.options = list(self._value)
        self.browse("")

    @property
    def value(self) -> list[str]:
        """The chosen files (root-relative paths), in the order they were added."""
        return list(self._value)

    @value.setter
    def value(self, paths: Iterable[str]) -> None:
        """Set the value (see the getter)."""
        self._value = [str(p) for p in paths]
        self.chosen.options = list(self._value)
        self._notify()
        self.refresh_static()

    def static_html(self) -> str:
        files = "".join(f"<li style='font-family:monospace'>{html.escape(p)}</li>"
                        for p in self._value)
        return ("<div class='pirus-file-picker'><b>chosen files</b>"
                + (f"<ul style='margin:2px 0'>{files}</ul>" if files else " none") + "</div>")

    def static_text(self) -> str:
        return "chosen files: " + (", ".join(self._value) or "none")

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change(self.value)

    def browse(self, path: str) -> None:
        """Show the folder ``path`` (relative to the root)."""
        try:
            entries = [e for e in self.lister(path) if not str(e["name"]).startswith(".")]
        except Exception as e:
            self.message.value = (f'<span style="color:#cf222e">cannot list '
                                  f'{html.escape(path or "/")}: {html.escape(str(e))}</span>')
            return
        self.message.value = ""
        self.cwd = path.strip("/")
        entries.sort(key=lambda e: (e["type"] != "directory", str(e["name"]).lower()))
        self._entries = ([{"name": "..", "type": "directory",
                           "path": self.cwd.rpartition("/")[0]}] if self.cwd else []) + entries
        # No emoji (a machine without an emoji font shows boxes): folders end with "/".
        labels = [(e["name"] + ("" if e["name"] == ".." else "/"))
                  if e["type"] == "directory" else e["name"] for e in self._entries]
        self.location.value = f"<code>/{html.escape(self.cwd)}</code>"
        self.browser.unobserve(self._browse, names="value")
        self.browser.options = list(zip(labels, range(len(labels)), strict=True))
        self.browser.value = None
        self.browser.observe(self._browse, names="value")
        self.add_button.disabled = True

    def _browse(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is None:
            self.add_button.disabled = True
            return
        entry = self._entries[index]
        if entry["type"] == "directory":
            self.browse(entry["path"])
        else:
            self.add_button.disabled = False

    def add_selected(self) -> None:
        """Add the file selected in the browser."""
        index = self.browser.value
        if index is None:
            return
        entry = self._entries[index]
        if entry["type"] != "directory":
            self.add(entry["path"])

    def add(self, path: str) -> None:
        """Add a root-relative path (once)."""
        if path not in self._value:
            self._value.append(path)
            self.chosen.options = list(self._value)
            self._notify()

    def remove_selected(self) -> None:
        """Remove the files selected in the chosen list."""
        gone = set(self.chosen.value)
        if gone:
            self.value = [p for p in self._value if p not in gone]

