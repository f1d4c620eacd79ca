"""The ``provenance`` field of the pirus block: checked by the build's schema, kept leniently
(strings and mappings of strings only, bounded) at install."""

from __future__ import annotations

import pytest

from pirus_jupyter.packaging.manifest import (
    MAX_PROVENANCE_ENTRIES,
    installed_provenance,
    normalize_manifest,
    validate_manifest,
)

pytestmark = pytest.mark.fast


def test_provenance_schema() -> None:
    ok = {"name": "a", "run": "x",
          "provenance": {"base": "debian:bookworm", "packages": {"bcftools": "1.16-1"}}}
    assert validate_manifest(ok) == []
    assert validate_manifest({**ok, "provenance": 3}) == [
        "pirus.provenance: must be a mapping (the build writes it: packages, image, base, ...)"]
    assert validate_manifest({**ok, "provenance": {"packages": [1]}}) == [
        "pirus.provenance.packages: must be a string or a mapping of strings, not list"]
    assert validate_manifest({**ok, "provenance": {"packages": {"bcftools": 1}}}) == [
        "pirus.provenance.packages.bcftools: must be a string or a list of strings, not int"]


def test_provenance_kept_leniently_at_install() -> None:
    metadata = {"pirus": {"name": "a", "run": "x", "provenance": {
        "base": "debian:bookworm", "packages": {"bcftools": "1.16-1", "bad": 2},
        "odd": [1, 2], 7: "x"}}}
    assert normalize_manifest(metadata)["provenance"] == {
        "base": "debian:bookworm", "packages": {"bcftools": "1.16-1"}}
    assert installed_provenance("not a mapping") == {}
    huge = {"packages": {f"p{i}": "1" for i in range(MAX_PROVENANCE_ENTRIES + 10)}, "b": "x"}
    assert len(installed_provenance(huge)["packages"]) == MAX_PROVENANCE_ENTRIES
    assert "b" not in installed_provenance(huge)
    assert "provenance" not in normalize_manifest({"pirus": {"name": "a", "run": "x"}})


def test_pipeline_record_shows_the_installed_provenance() -> None:
    from pirus_jupyter.models import public_pipeline

    provenance = {"base": "debian:bookworm", "packages": {"bcftools": "1.16-1"}}
    assert public_pipeline({"id": 1, "manifest": {"provenance": provenance}})[
        "provenance"] == provenance
    assert public_pipeline({"id": 1, "manifest": None})["provenance"] == {}
    assert "manifest" not in public_pipeline({"id": 1, "manifest": {}})


def test_run_provenance_from_its_pipeline_while_the_fingerprint_matches() -> None:
    from pirus_jupyter.kernel.errors import PirusAPIError
    from pirus_jupyter.kernel.records import Pipeline, Run

    provenance = {"base": "debian:bookworm", "packages": {"bcftools": "1.16-1"}}

    class Stub:
        installed: dict[str, object] | None = {"id": 3, "fingerprint": "a" * 64,
                                               "provenance": provenance}

        def pipeline(self, pipeline_id: int) -> Pipeline:
            if self.installed is None:
                raise PirusAPIError(404, "not_found", "no such pipeline")
            return Pipeline(self, self.installed)  # type: ignore[arg-type]

    stub = Stub()
    run = Run(stub, {"id": 1, "pipeline_id": 3, "pipeline_fingerprint": "a" * 64})  # type: ignore[arg-type]
    assert run.provenance() == provenance
    stub.installed = {"id": 3, "fingerprint": "b" * 64, "provenance": provenance}
    assert run.provenance() == {}  # reinstalled from another package since
    stub.installed = None
    assert run.provenance() == {}  # uninstalled
