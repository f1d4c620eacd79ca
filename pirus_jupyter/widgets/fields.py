"""The fields of a run-configuration form: one class per JSON Schema node kind, each a
``box`` of ipywidgets (input, help line, error line) with ``get``/``set`` of its value.

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

:func:`make_field` picks the class for a schema node; :class:`~.form.ConfigForm` holds the
fields and validates their value.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

if TYPE_CHECKING:
    from .form import ConfigForm

__all__ = ["UNSET", "ArrayField", "BooleanField", "Field", "JSONField", "MultiSelectField",
           "NumberField", "ObjectField", "StringField", "make_field"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
LABEL_WIDTH = "180px"
STYLE = {"description_width": LABEL_WIDTH}
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
        common = {"description": self.title, "style": STYLE,
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
        common: dict[str, Any] = {"description": self.title, "style": STYLE}
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
        control = widgets.Textarea(value=text, description=self.title, style=STYLE,
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
                                         description=self.title, style=STYLE,
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
        field = make_field(self.form, self, len(self.items), self.item_schema, True)
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
            self.children[name] = make_field(self.form, self, name, prop, name in required)
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


def make_field(form: ConfigForm, parent: Field | None, key: Any, schema: Mapping[str, Any],
               required: bool) -> Field:
    """The field for one schema node, by its type; a JSON text area when it has several types,
    none, or a combinator (``oneOf``, ``anyOf``, ``allOf``, ``$ref``)."""
    kinds = [k for k in _types(schema) if k != "null"]
    kind = kinds[0] if len(kinds) == 1 else None
    combinators = any(k in schema for k in ("oneOf", "anyOf", "allOf", "$ref"))
    args = (form, parent, key, schema, required)
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
