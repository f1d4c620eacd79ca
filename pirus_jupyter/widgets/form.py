"""ConfigForm: a run-configuration form generated from a pipeline's JSON Schema.

The schema is the one the server validates against: :func:`pirus_jupyter.forms.normalize_form`
turns an original Pirus draft-03 form (``"required": true`` per property) into draft-07 and
fills the placeholders (``__PIRUS_INPUT_FILES__`` with the chosen input files,
``__PIRUS_DB_ALL__``/``__PIRUS_DB_REF__``/``__PIRUS_DB_REFS__`` with the reference databases).
For a pipeline the server does this (``GET pipelines/{id}/form?inputs=...``) and the form asks
again whenever the chosen inputs change; for a bare schema it is done here.

Widgets per schema node (plain ipywidgets, one small class per kind):

* ``string``: ``Dropdown`` for ``enum``, ``DatePicker`` for ``format: date``, ``Password`` for
  ``format: password``, ``Textarea`` for ``format: textarea``, otherwise ``Text`` (the
  ``pattern`` or ``format`` shown as placeholder);
* ``integer``/``number``: ``BoundedIntText``/``BoundedFloatText`` when the schema has a minimum
  or maximum, else ``IntText``/``FloatText``;
* ``boolean``: ``Checkbox``;
* ``array``: ``SelectMultiple`` when the items are an ``enum``, else rows with remove buttons
  and an *Add* button (``minItems``/``maxItems`` respected);
* ``object``: a nested, indented group;
* anything else (``oneOf``, several types, no type): a JSON text area.

Titles are labels (``*`` marks required fields), descriptions are help text under the field
(and tooltips), defaults are initial values. A field that is optional, has no default and was
never edited is left out of :attr:`ConfigForm.value`. Every change re-validates the whole value
with :func:`pirus_jupyter.forms.field_errors` and shows each message under its field.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..forms import apply_defaults, field_errors, normalize_form

if TYPE_CHECKING:
    from ..kernel.client import Pipeline, Run

__all__ = ["ConfigForm", "FilePicker"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
LABEL_WIDTH = "180px"
_STYLE = {"description_width": LABEL_WIDTH}
_HELP = "color:#57606a;font-size:90%;margin:-2px 0 4px " + LABEL_WIDTH
_ERROR = "color:#cf222e;font-size:90%;margin:-2px 0 4px " + LABEL_WIDTH


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    if isinstance(kind, str):
        return [kind]
    if "enum" in schema:
        return ["enum"]
    if "properties" in schema:
        return ["object"]
    return []


def _labels(values: list[Any]) -> list[str]:
    labels = [str(v) for v in values]
    if len(set(labels)) != len(labels):
        labels = [json.dumps(v) for v in values]
    return labels


# -- fields --------------------------------------------------------------------------------
class Field:
    """One schema node as widgets: ``box`` (input + help + error lines), the value, errors."""

    def __init__(self, form: ConfigForm, parent: Field | None, key: Any,
                 schema: Mapping[str, Any], required: bool) -> None:
        self.form = form
        self.parent = parent
        self.key_in_parent = key
        self.schema = dict(schema)
        self.required = required
        self.name = "" if key is None else (f"#{key + 1}" if isinstance(key, int) else str(key))
        self.has_default = "default" in schema
        self.touched = False
        self._messages: list[str] = []
        self.help = widgets.HTML(self._help_html())
        self.error = widgets.HTML("")
        self.box: widgets.Widget = widgets.VBox()

    @property
    def path(self) -> tuple[Any, ...]:
        """Where the value sits in the config (property names and array indexes)."""
        if self.parent is None:
            return ()
        return (*self.parent.path, self.key_in_parent)

    @property
    def key(self) -> str:
        """The dotted path used by :func:`field_errors` (``"a.b.0"``)."""
        return ".".join(str(p) for p in self.path)

    @property
    def title(self) -> str:
        """The label: the schema title (or the name), ``*`` when required."""
        title = str(self.schema.get("title") or self.name or "value")
        return title + (" *" if self.required else "")

    def _help_html(self) -> str:
        description = self.schema.get("description")
        if not description:
            return ""
        return f'<div style="{_HELP}">{html.escape(str(description))}</div>'

    def _finish(self, control: widgets.Widget) -> None:
        self.control = control
        description = self.schema.get("description")
        if description and hasattr(control, "tooltip"):
            control.tooltip = str(description)
        parts = [control]
        if self.help.value:
            parts.append(self.help)
        parts.append(self.error)
        self.box = widgets.VBox(parts)

    def changed(self, *_: Any) -> None:
        """Called by the widgets on every edit: mark the field edited, re-validate the form."""
        self.touched = True
        self.form._changed()

    @property
    def included(self) -> bool:
        """Whether the field's value goes into the config: it has a default, is required
        (the value shown is sent) or was edited."""
        return self.has_default or self.required or self.touched

    def get(self) -> Any:
        """The value (``UNSET`` when it stays out of the config)."""
        raise NotImplementedError

    def set(self, value: Any) -> None:
        """Show ``value`` (marks the field edited)."""
        raise NotImplementedError

    def fields(self) -> Iterable[Field]:
        """This field and the fields nested in it."""
        yield self

    def show_errors(self, messages: list[str]) -> None:
        """Show validation messages under the field (none clears them)."""
        self._messages = list(messages)
        self.error.value = "".join(
            f'<div style="{_ERROR}">⚠ {html.escape(m)}</div>' for m in messages)

    @property
    def messages(self) -> list[str]:
        """The validation messages currently shown under the field."""
        return list(self._messages)


class StringField(Field):
    """``string``: Dropdown (enum), DatePicker, Password, Textarea or Text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.schema
        default = s.get("default")
        fmt = s.get("format")
        common = {"description": self.title, "style": _STYLE,
                  "layout": widgets.Layout(width="auto")}
        self.kind = "text"
        if isinstance(s.get("enum"), list):
            self.kind = "enum"
            self.options = list(s["enum"])
            index = self.options.index(default) if default in self.options else None
            control: widgets.Widget = widgets.Dropdown(options=_labels(self.options),
                                                       index=index, **common)
        elif fmt == "date":
            self.kind = "date"
            value = None
            if isinstance(default, str):
                try:
                    value = dt.date.fromisoformat(default)
                except ValueError:
                    value = None
            control = widgets.DatePicker(value=value, **common)
        else:
            cls = {"password": widgets.Password, "textarea": widgets.Textarea}.get(
                str(fmt), widgets.Text)
            placeholder = ""
            if s.get("pattern"):
                placeholder = f"pattern: {s['pattern']}"
            elif fmt:
                placeholder = str(fmt)
            control = cls(value="" if default is None else str(default),
                          placeholder=placeholder, **common)
        control.observe(self.changed, names="value")
        self._finish(control)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        if self.kind == "enum":
            index = self.control.index
            return UNSET if index is None else self.options[index]
        if self.kind == "date":
            return UNSET if self.control.value is None else self.control.value.isoformat()
        text = self.control.value
        if text == "" and self.schema.get("default") != "":
            return UNSET  # empty: left out, so that "required" says so
        return text

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        if self.kind == "enum":
            if value not in self.options:
                raise ValueError(f"{self.key}: {value!r} is not one of {self.options}")
            self.control.index = self.options.index(value)
        elif self.kind == "date":
            self.control.value = dt.date.fromisoformat(value) if value else None
        else:
            self.control.value = "" if value is None else str(value)
        self.touched = True


class NumberField(Field):
    """``integer``/``number``: Bounded*Text with a minimum or maximum, else *Text."""

    def __init__(self, *args: Any, integer: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.schema
        self.integer = integer
        cast: Callable[[Any], Any] = int if integer else float
        low, high = s.get("minimum"), s.get("maximum")
        if isinstance(s.get("exclusiveMinimum"), (int, float)) and low is None:
            low = s["exclusiveMinimum"] + 1 if integer else s["exclusiveMinimum"]
        if isinstance(s.get("exclusiveMaximum"), (int, float)) and high is None:
            high = s["exclusiveMaximum"] - 1 if integer else s["exclusiveMaximum"]
        default = s.get("default")
        start = default if isinstance(default, (int, float)) and not isinstance(default, bool) \
            else (low if low is not None else 0)
        common: dict[str, Any] = {"description": self.title, "style": _STYLE}
        if low is not None or high is not None:
            big = 2**53 if integer else 1e308
            cls = widgets.BoundedIntText if integer else widgets.BoundedFloatText
            control: widgets.Widget = cls(
                value=cast(start), min=cast(low if low is not None else -big),
                max=cast(high if high is not None else big), **common)
        else:
            cls = widgets.IntText if integer else widgets.FloatText
            control = cls(value=cast(start), **common)
        control.observe(self.changed, names="value")
        self._finish(control)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        if not self.included:
            return UNSET
        value = self.control.value
        return int(value) if self.integer else float(value)

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        self.control.value = value
        self.touched = True


class BooleanField(Field):
    """``boolean``: Checkbox."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        control = widgets.Checkbox(value=bool(self.schema.get("default", False)),
                                   description=self.title, indent=False,
                                   layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}"))
        control.observe(self.changed, names="value")
        self._finish(control)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        return bool(self.control.value) if self.included else UNSET

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        self.control.value = bool(value)
        self.touched = True


class JSONField(Field):
    """Anything without a simple type: the value as JSON text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        default = self.schema.get("default", UNSET)
        text = "" if default is UNSET else json.dumps(default)
        control = widgets.Textarea(value=text, description=self.title, style=_STYLE,
                                   placeholder="JSON", layout=widgets.Layout(width="auto"))
        control.observe(self.changed, names="value")
        self._finish(control)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        text = self.control.value.strip()
        if not text:
            return UNSET
        try:
            return json.loads(text)
        except ValueError:
            return text  # validation will say it has the wrong type

    def parse_error(self) -> str | None:
        """Why the text is not JSON, or None."""
        text = self.control.value.strip()
        if not text:
            return None
        try:
            json.loads(text)
        except ValueError as e:
            return f"not valid JSON: {e}"
        return None

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        self.control.value = json.dumps(value)
        self.touched = True


class MultiSelectField(Field):
    """``array`` of an ``enum``: SelectMultiple."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = list(self.schema["items"]["enum"])
        default = self.schema.get("default") or []
        index = tuple(self.options.index(v) for v in default if v in self.options)
        control = widgets.SelectMultiple(options=_labels(self.options), index=index,
                                         description=self.title, style=_STYLE,
                                         rows=min(max(len(self.options), 2), 8))
        control.observe(self.changed, names="index")
        self._finish(control)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        if not (self.included or self.required):
            return UNSET
        return [self.options[i] for i in self.control.index]

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        missing = [v for v in value if v not in self.options]
        if missing:
            raise ValueError(f"{self.key}: {missing!r} not among {self.options}")
        self.control.index = tuple(self.options.index(v) for v in value)
        self.touched = True


class ArrayField(Field):
    """``array``: one row per item (a field of the item schema + a remove button) and Add."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        items = self.schema.get("items")
        self.item_schema: dict[str, Any] = dict(items) if isinstance(items, Mapping) else {}
        self.min_items = int(self.schema.get("minItems") or 0)
        self.max_items = self.schema.get("maxItems")
        self.items: list[Field] = []
        self.rows = widgets.VBox(layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}"))
        self.add_button = widgets.Button(description="Add", icon="plus",
                                         layout=widgets.Layout(width="auto"),
                                         tooltip=f"add an item to {self.name}")
        self.add_button.on_click(lambda _: self.add())
        header = widgets.HTML(f"<b>{html.escape(self.title)}</b>",
                              layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}"))
        default = self.schema.get("default")
        values = list(default) if isinstance(default, list) else []
        self._building = True
        for value in values:
            self.add(value)
        while len(self.items) < self.min_items:
            self.add()
        self._building = False
        self.control = self.rows
        parts = [header]
        if self.help.value:
            parts.append(self.help)
        parts += [self.rows, widgets.HBox([self.add_button],
                                          layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}")),
                  self.error]
        self.box = widgets.VBox(parts)
        self._update_buttons()

    def _render_rows(self) -> None:
        rows = []
        for index, field in enumerate(self.items):
            field.key_in_parent = index
            field.name = f"#{index + 1}"
            remove = widgets.Button(icon="trash", tooltip="remove this item",
                                    layout=widgets.Layout(width="36px"))
            remove.on_click(lambda _, i=index: self.remove(i))
            rows.append(widgets.HBox([field.box, remove]))
        self.rows.children = rows

    def _update_buttons(self) -> None:
        full = isinstance(self.max_items, int) and len(self.items) >= self.max_items
        self.add_button.disabled = full

    def add(self, value: Any = UNSET) -> Field:
        """Append an item (with ``value`` when given)."""
        field = self.form._make_field(self, len(self.items), self.item_schema, True)
        if value is not UNSET:
            field.set(value)
        self.items.append(field)
        self._render_rows()
        self._update_buttons()
        if not getattr(self, "_building", False):
            self.changed()
        return field

    def remove(self, index: int) -> None:
        """Remove the item at ``index``."""
        del self.items[index]
        self._render_rows()
        self._update_buttons()
        self.changed()

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        if not (self.included or self.required or self.items):
            return UNSET
        out = []
        for field in self.items:
            value = field.get()
            out.append(None if value is UNSET else value)
        return out

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        self._building = True
        self.items = []
        for item in list(value or []):
            self.add(item)
        self._building = False
        self._render_rows()
        self._update_buttons()
        self.touched = True

    def fields(self) -> Iterable[Field]:
        """This field and the fields nested in it."""
        yield self
        for field in self.items:
            yield from field.fields()


class ObjectField(Field):
    """``object``: its properties as a nested, indented group."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        required = set(self.schema.get("required") or [])
        self.children: dict[str, Field] = {}
        for name, prop in (self.schema.get("properties") or {}).items():
            if not isinstance(prop, Mapping):
                continue
            self.children[name] = self.form._make_field(self, name, prop, name in required)
        parts: list[widgets.Widget] = []
        if not top:
            parts.append(widgets.HTML(f"<b>{html.escape(self.title)}</b>"))
            if self.help.value:
                parts.append(widgets.HTML(
                    f'<div style="color:#57606a;font-size:90%">'
                    f'{html.escape(str(self.schema.get("description")))}</div>'))
        parts += [f.box for f in self.children.values()]
        parts.append(self.error)
        layout = widgets.Layout() if top else widgets.Layout(
            margin="4px 0 4px 16px", padding="2px 0 2px 8px", border_left="2px solid #d0d7de")
        self.control = self.box = widgets.VBox(parts, layout=layout)

    def get(self) -> Any:
        """The value for the config (``UNSET`` when left out)."""
        out = {}
        for name, field in self.children.items():
            value = field.get()
            if value is not UNSET:
                out[name] = value
        if not out and not (self.required or self.has_default or not self.path):
            return UNSET
        return out

    def set(self, value: Any) -> None:
        """Show ``value`` in the widgets (marks the field edited)."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{self.key or 'config'}: expected an object, got {value!r}")
        for name, item in value.items():
            if name in self.children:
                self.children[name].set(item)
        self.touched = True

    def fields(self) -> Iterable[Field]:
        """This field and the fields nested in it."""
        yield self
        for field in self.children.values():
            yield from field.fields()


# -- the input file picker -------------------------------------------------------------------
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


class FilePicker(widgets.VBox):
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
        labels = [("📁 " + e["name"] + ("" if e["name"] == ".." else "/"))
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


# -- the form ------------------------------------------------------------------------------
class ConfigForm(widgets.VBox):
    """A run-configuration form: inputs (file picker), run name, the pipeline's options, live
    validation messages and a Run button.

    ``ConfigForm(pipeline=p, inputs=[...])`` asks the server for the normalised schema (as
    :meth:`Pipeline.form` does); ``ConfigForm(schema, inputs=[...], databases=[...])`` works
    without a server, normalising a draft-03 or draft-07 form locally. ``value`` is the config
    dict (settable), ``inputs`` the chosen files, ``errors`` the current problems as
    ``[{"field", "message"}]``, ``valid`` whether there are none. :meth:`submit` (the Run
    button) starts the run and shows its live widget below the form.
    """

    def __init__(self, schema: Mapping[str, Any] | None = None, *,
                 pipeline: Pipeline | None = None, inputs: Iterable[Any] | None = None,
                 databases: Iterable[str] | None = None, root_dir: str | os.PathLike[str]
                 | None = None, lister: Lister | None = None, name: str = "",
                 show_inputs: bool | None = None,
                 on_run: Callable[[Run], None] | None = None) -> None:
        self.pipeline = pipeline
        self.raw_schema = dict(schema) if schema is not None else None
        self.databases = list(databases or [])
        self.on_run = on_run
        self.last_run: Run | None = None
        self.fields_by_key: dict[str, Field] = {}
        self.root: ObjectField | None = None
        self.schema: dict[str, Any] = {}
        self._errors: list[dict[str, str]] = []
        self._suspend = 0
        client = pipeline.client if pipeline is not None else None
        initial = list(client._input_paths(inputs or [])) if client is not None \
            else [str(i) for i in inputs or []]
        if lister is None:
            if client is not None:
                lister = client.list_dir
            elif root_dir is not None:
                lister = local_lister(root_dir)
        self.picker: FilePicker | None = None
        if show_inputs is None:
            show_inputs = lister is not None
        if show_inputs and lister is not None:
            self.picker = FilePicker(lister, initial, on_change=self._inputs_changed)
        self._inputs = initial
        self.title = widgets.HTML()
        self.name_text = widgets.Text(value=name, description="Run name", style=_STYLE,
                                      placeholder="optional")
        self.fields_box = widgets.VBox()
        self.form_errors = widgets.HTML()
        self.status = widgets.HTML()
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary",
                                         disabled=pipeline is None,
                                         tooltip="start the run" if pipeline is not None
                                         else "no pipeline: this form only builds a config")
        self.run_button.on_click(lambda _: self.submit())
        self.output = widgets.Output()
        children: list[widgets.Widget] = [self.title]
        if self.picker is not None:
            children.append(self.picker)
        children += [self.name_text, self.fields_box, self.form_errors,
                     widgets.HBox([self.run_button, self.status]), self.output]
        super().__init__(children)
        self._load_schema(self._inputs)

    # -- schema and fields ------------------------------------------------------------------
    def _fetch_schema(self, inputs: list[str]) -> dict[str, Any]:
        names = [Path(p).name for p in inputs]
        if self.pipeline is not None:
            return self.pipeline.schema(names)
        return normalize_form(self.raw_schema, names, self.databases)

    def _load_schema(self, inputs: list[str]) -> None:
        previous = self.value if self.root is not None else None
        touched = {k for k, f in self.fields_by_key.items() if f.touched}
        self.schema = self._fetch_schema(inputs)
        self._suspend += 1
        try:
            self.root = ObjectField(self, None, None, self.schema, True, top=True)
            self.fields_box.children = [self.root.box]
            if previous:
                self._restore(previous, touched)
        finally:
            self._suspend -= 1
        title = self.schema.get("title") or (self.pipeline.name if self.pipeline else "")
        description = self.schema.get("description") or ""
        self._reindex()
        self.title.value = (f"<h4 style='margin:4px 0'>{html.escape(str(title))}</h4>"
                            if title else "") + (
            f"<div style='color:#57606a'>{html.escape(str(description))}</div>"
            if description else "")
        self._changed()

    def _restore(self, previous: dict[str, Any], touched: set[str]) -> None:
        """Put back values still allowed by a new schema (e.g. after the inputs changed)."""
        assert self.root is not None
        for name, value in previous.items():
            field = self.root.children.get(name)
            if field is None:
                continue
            if field.key not in touched and not isinstance(field, ObjectField):
                continue  # a default of the old schema: keep the new schema's default
            try:
                field.set(value)
            except (ValueError, TypeError):
                continue  # no longer a valid choice

    def _make_field(self, parent: Field | None, key: Any, schema: Mapping[str, Any],
                    required: bool) -> Field:
        kinds = [k for k in _types(schema) if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
        combinators = any(k in schema for k in ("oneOf", "anyOf", "allOf", "$ref"))
        args = (self, parent, key, schema, required)
        field: Field
        if combinators:
            field = JSONField(*args)
        elif kind in ("string", "enum"):
            field = StringField(*args)
        elif kind in ("integer", "number"):
            field = NumberField(*args, integer=kind == "integer")
        elif kind == "boolean":
            field = BooleanField(*args)
        elif kind == "array":
            items = schema.get("items")
            if isinstance(items, Mapping) and isinstance(items.get("enum"), list):
                field = MultiSelectField(*args)
            else:
                field = ArrayField(*args)
        elif kind == "object":
            field = ObjectField(*args)
        else:
            field = JSONField(*args)
        return field

    def _reindex(self) -> None:
        self.fields_by_key = {f.key: f for f in self.root.fields()} if self.root else {}

    # -- values -----------------------------------------------------------------------------
    @property
    def value(self) -> dict[str, Any]:
        """The config: every field with a default or edited (what :meth:`submit` sends)."""
        if self.root is None:
            return {}
        value = self.root.get()
        return value if isinstance(value, dict) else {}

    @value.setter
    def value(self, config: Mapping[str, Any]) -> None:
        """Set the value (see the getter)."""
        assert self.root is not None
        self._suspend += 1
        try:
            self.root.set(dict(config))
        finally:
            self._suspend -= 1
        self._changed()

    @property
    def inputs(self) -> list[str]:
        """The chosen input files (paths relative to the Jupyter root)."""
        return list(self.picker.value) if self.picker is not None else list(self._inputs)

    @inputs.setter
    def inputs(self, paths: Iterable[str]) -> None:
        """Set the chosen input files (the form is re-generated if their names change)."""
        paths = [str(p) for p in paths]
        if self.picker is not None:
            self.picker.value = paths  # calls _inputs_changed
        else:
            self._inputs_changed(paths)

    def _inputs_changed(self, paths: list[str]) -> None:
        old_names = [Path(p).name for p in self._inputs]
        self._inputs = list(paths)
        if [Path(p).name for p in paths] != old_names:
            self._load_schema(self._inputs)

    @property
    def errors(self) -> list[dict[str, str]]:
        """Current problems, ``[{"field": "a.b", "message": ...}]`` (as the server reports)."""
        return copy.deepcopy(self._errors)

    @property
    def valid(self) -> bool:
        """True when the config passes validation."""
        return not self._errors

    def field(self, key: str) -> Field:
        """The field at a dotted path (``"min_length"``, ``"advanced.threads"``,
        ``"samples.0"``)."""
        return self.fields_by_key[key]

    def validate(self) -> list[dict[str, str]]:
        """Validate the current value (with defaults applied, as the server does), show every
        message under its field and return the problems."""
        config = apply_defaults(self.schema, self.value)
        errors = field_errors(self.schema, config)
        for field in self.fields_by_key.values():
            if isinstance(field, JSONField):
                problem = field.parse_error()
                if problem:
                    errors.append({"field": field.key, "message": problem})
        self._show(errors)
        return errors

    def _show(self, errors: list[dict[str, str]]) -> None:
        self._errors = errors
        per_field: dict[str, list[str]] = {}
        loose: list[str] = []
        for error in errors:
            key = error.get("field") or ""
            parts = key.split(".") if key else []
            target = None
            while parts:  # the deepest field that exists on the error's path
                candidate = ".".join(parts)
                if candidate in self.fields_by_key:
                    target = candidate
                    break
                parts.pop()
            if target is None:
                loose.append(f"{key + ': ' if key else ''}{error['message']}")
            else:
                message = error["message"] if target == key else f"{key}: {error['message']}"
                per_field.setdefault(target, []).append(message)
        for key, field in self.fields_by_key.items():
            if key:
                field.show_errors(per_field.get(key, []))
        loose += per_field.get("", [])
        self.form_errors.value = "".join(
            f'<div style="color:#cf222e">⚠ {html.escape(m)}</div>' for m in loose)
        if self.pipeline is not None:
            self.run_button.disabled = bool(errors)
        count = len(errors)
        self.status.value = ('<span style="color:#1a7f37">✓ valid</span>' if not count else
                             f'<span style="color:#cf222e">{count} problem'
                             f'{"s" if count > 1 else ""}</span>')

    def _changed(self) -> None:
        if self._suspend:
            return
        self._reindex()
        self.validate()

    # -- running ------------------------------------------------------------------------------
    def submit(self) -> Run | None:
        """Validate and start the run (the Run button). Returns the run, or None when the
        config is invalid or the server refused it (the messages are shown in the form)."""
        if self.pipeline is None:
            raise RuntimeError("this form has no pipeline to run")
        if self.validate():
            return None
        from ..kernel.client import PirusAPIError

        try:
            run = self.pipeline.run(config=self.value, inputs=self.inputs,
                                    name=self.name_text.value.strip() or None)
        except PirusAPIError as e:
            if isinstance(e.details, list) and all(isinstance(d, Mapping) for d in e.details):
                self._show([{"field": str(d.get("field", "")),
                             "message": str(d.get("message", ""))} for d in e.details])
            else:
                self.form_errors.value = (f'<div style="color:#cf222e">⚠ '
                                          f'{html.escape(e.message)}</div>')
            return None
        self.last_run = run
        self.status.value = f"started run {run.id}"
        with self.output:
            from IPython.display import display

            display(run.widget())
        if self.on_run is not None:
            self.on_run(run)
        return run
