"""The kernel's form on real nf-core schemas (no server, ipywidgets' dummy comm): groups as
titled sections, hidden parameters behind the toggle, help text collapsed, path fields offered
the fitting inputs, the schema's errorMessage under its field."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
from nfcore_schemas import INPUT_ERROR, draft07, plugin_test_schema, template_schema

from pirus_jupyter.widgets.form import ConfigForm
from pirus_jupyter.widgets.sections import accepts


def shown(widget: widgets.Widget) -> bool:
    return widget.layout.display != "none"


@pytest.mark.parametrize("flavour", ["2020-12", "draft-07"])
def test_template_schema_renders_in_sections_with_hidden_parameters(flavour) -> None:
    raw = template_schema(error_message=True)
    form = ConfigForm(raw if flavour == "2020-12" else draft07(raw),
                      inputs=["data/samples.csv", "data/reads.fastq.gz"])
    sections = form.sections
    assert sections is not None
    titles = [h.value.split("<b>")[1].split("</b>")[0] for h in sections.headers.values()]
    assert titles == ["Input/output options", "Reference genome options",
                      "Institutional config options", "Generic options"]
    assert "Define where the pipeline" in sections.headers["input_output_options"].value
    assert "<details" not in sections.headers["input_output_options"].value
    assert "<code>~/.nextflow/config</code>" in sections.headers["generic_options"].value
    # Hidden parameters are out of sight, and so is a section with nothing else.
    assert not shown(form.field("igenomes_ignore").box)
    assert shown(form.field("input").box) and shown(form.field("genome").box)
    assert not shown(sections.headers["institutional_config_options"])
    assert sections.toggle.description == f"Show hidden parameters ({len(sections.hidden)})"
    sections.toggle.value = True
    assert shown(form.field("igenomes_ignore").box)
    assert shown(sections.headers["institutional_config_options"])
    sections.toggle.value = False
    assert not shown(form.field("igenomes_ignore").box)
    # The section's fields come right after its header.
    children = list(sections.box.children)
    header = children.index(sections.headers["input_output_options"])
    assert children[header + 1] is form.field("input").box
    # help_text: collapsed, rendered Markdown (a link, code).
    panel = sections.help_panel("genome")
    assert panel is not None and panel.value.startswith("<details ")  # closed: no "open"
    assert "<summary" in panel.value and "<code>--genome GRCh38</code>" in panel.value
    assert '<a href="https://nf-co.re/usage/reference_genomes">' in panel.value
    # The input sheet is offered the inputs its pattern and mimetype accept.
    picker = sections.pickers["input"]
    assert list(picker.options[1:]) == ["samples.csv"]
    picker.value = "samples.csv"
    assert form.field("input").get() == "samples.csv"
    assert "outdir" not in sections.pickers  # a folder: the inputs are files
    form.field("outdir").set("results")
    form.field("outdir").changed()
    assert form.valid, form.errors
    assert form.value["input"] == "samples.csv" and form.value["outdir"] == "results"
    assert form.value["publish_dir_mode"] == "copy"  # flat, defaults of every group
    # A value breaking the pattern shows the schema's errorMessage, not the regex.
    form.field("input").set("my samples.csv")
    form.field("input").changed()
    assert form.field("input").messages == [INPUT_ERROR]
    assert form.errors == [{"field": "input", "message": INPUT_ERROR}]


def test_plugin_test_schema_hides_its_hidden_parameters() -> None:
    form = ConfigForm(plugin_test_schema())
    sections = form.sections
    assert sections is not None
    assert "validate_params" in sections.hidden and "outdir" not in sections.hidden
    assert not shown(form.field("validate_params").box)
    assert form.errors == [{"field": "outdir", "message": "outdir is required"}]


def test_a_hidden_parameter_with_a_problem_comes_into_sight() -> None:
    form = ConfigForm(template_schema())
    sections = form.sections
    assert sections is not None
    field = form.field("max_multiqc_email_size")
    assert field.schema.get("hidden") is True and not shown(field.box)
    field.set("a lot")
    field.changed()
    assert field.messages and shown(field.box)
    field.set("25.MB")
    field.changed()
    assert not field.messages and shown(field.box)  # not gone while being corrected
    sections.toggle.value = True
    sections.toggle.value = False
    assert not shown(field.box)


def test_a_form_without_groups_keeps_its_plain_layout() -> None:
    form = ConfigForm({"type": "object", "properties": {"a": {"type": "string"},
                                                         "b": {"type": "integer"}}})
    sections = form.sections
    assert sections is not None and sections.headers == {}
    assert not shown(sections.toggle)
    assert list(sections.box.children[:2]) == [form.field("a").box, form.field("b").box]


def test_accepts_by_pattern_and_mimetype() -> None:
    sheet = {"pattern": r"^\S+\.csv$", "mimetype": "text/csv"}
    assert accepts(sheet, "samples.csv") and not accepts(sheet, "my samples.csv")
    assert not accepts({"mimetype": "text/csv"}, "plot.png")
    assert accepts({"mimetype": "text/plain"}, "genome.fa")  # unknown extension: allowed
    assert not accepts({"pattern": "(unclosed"}, "x")  # a broken pattern fits nothing
