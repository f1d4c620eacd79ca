"""ConfigForm: a run-configuration form generated from a pipeline's JSON Schema.

The schema is the one the server validates against: :func:`pirus_jupyter.forms.normalize_form`
turns an original Pirus draft-03 form (``"required": true`` per property) into draft-07 and
fills the placeholders (``__PIRUS_INPUT_FILES__`` with the chosen input files,
``__PIRUS_DB_ALL__``/``__PIRUS_DB_REF__``/``__PIRUS_DB_REFS__`` with the reference databases).
For a pipeline the server does this (``GET pipelines/{id}/form?inputs=...``) and the form asks
again whenever the chosen inputs change; for a bare schema it is done here.

The fields (one ipywidgets class per schema node kind; titles are labels, ``*`` marks required
fields, descriptions are help text, defaults are initial values) are :mod:`.fields`; their
layout (nf-core groups as sections, hidden parameters behind a toggle, help text, path fields
offered the inputs) is :mod:`.sections`; the input file picker is :mod:`.picker`. A field
that is optional, has no default and was never edited is left out of
:attr:`ConfigForm.value`. Every change re-validates the whole value with
:func:`pirus_jupyter.forms.field_errors` and shows each message under its field.
"""

from __future__ import annotations

import copy
import html
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..forms import apply_defaults, field_errors, normalize_form
from ..kernel.errors import PirusAPIError
from .fields import STYLE, Field, JSONField, ObjectField
from .picker import FilePicker, Lister, local_lister
from .sections import Sections
from .static import StaticFallback

if TYPE_CHECKING:
    from ..kernel.records import Pipeline, Run

__all__ = ["ConfigForm"]


class ConfigForm(StaticFallback, widgets.VBox):
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
        self.sections: Sections | None = None
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
        self.name_text = widgets.Text(value=name, description="Run name", style=STYLE,
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
            # nf-core groups as sections, hidden parameters behind a toggle (.sections).
            self.sections = Sections(self, self.root, self.schema)
            self.fields_box.children = [self.sections.box]
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
        self.refresh_static()

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
        self.refresh_static()

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
        if self.sections is not None:
            self.sections.refresh()  # a hidden field with a problem comes into sight
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

    # -- the saved notebook's picture ----------------------------------------------------------
    # Brought up to date when code sets the value or the inputs and when the run starts; not
    # at each keystroke (an update re-renders the view in JupyterLab, losing the focus).
    def static_html(self) -> str:
        e = html.escape
        td = "padding:1px 8px;text-align:left;border:none;vertical-align:top"
        rows = [("inputs", ", ".join(self.inputs) or "none")]
        if self.name_text.value.strip():
            rows.append(("run name", self.name_text.value.strip()))
        rows += [(key, _shown(value)) for key, value in self.value.items()]
        table = "".join(f"<tr><td style='{td}'>{e(str(k))}</td>"
                        f"<td style='{td};font-family:monospace'>{e(v)}</td></tr>"
                        for k, v in rows)
        problems = "".join(f"<div style='color:#cf222e'>⚠ {e(p['field'] or 'form')}: "
                           f"{e(p['message'])}</div>" for p in self._errors)
        state = (f"started run {self.last_run.id}" if self.last_run is not None else
                 "valid" if not self._errors else f"{len(self._errors)} problem(s)")
        return (f"<div class='pirus-config-form'>{self.title.value}"
                f"<table style='border-collapse:collapse'>{table}</table>{problems}"
                f"<div style='color:#57606a'>{e(state)}</div></div>")

    def static_text(self) -> str:
        title = self.schema.get("title") or (self.pipeline.name if self.pipeline else "")
        lines = [f"Run configuration: {title}" if title else "Run configuration",
                 f"  inputs: {', '.join(self.inputs) or 'none'}"]
        if self.name_text.value.strip():
            lines.append(f"  run name: {self.name_text.value.strip()}")
        lines += [f"  {key}: {_shown(value)}" for key, value in self.value.items()]
        lines += [f"  problem: {p['field'] or 'form'}: {p['message']}" for p in self._errors]
        if self.last_run is not None:
            lines.append(f"  started run {self.last_run.id}")
        return "\n".join(lines)

    # -- running ------------------------------------------------------------------------------
    def submit(self) -> Run | None:
        """Validate and start the run (the Run button). Returns the run, or None when the
        config is invalid or the server refused it (the messages are shown in the form)."""
        if self.pipeline is None:
            raise RuntimeError("this form has no pipeline to run")
        if self.validate():
            return None
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
        self.refresh_static()
        with self.output:
            from IPython.display import display

            display(run.widget())
        if self.on_run is not None:
            self.on_run(run)
        return run


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
