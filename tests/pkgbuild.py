"""Build pipeline packages for tests: real ones with the project's builder (busybox base) and
deliberately broken ones by hand."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from pirus_jupyter.packaging import build_package_from_parts

COUNT_FORM = {
    "type": "object",
    "title": "Count reads",
    "properties": {
        "min_length": {"type": "integer", "minimum": 0, "default": 0,
                       "description": "Ignore reads shorter than this"},
        "label": {"type": "string", "default": "sample"},
    },
}

# Counts reads of every FASTQ input, reporting progress per file, honouring min_length.
COUNT_SCRIPT = r"""#!/bin/sh
set -e
min=$(sed -n 's/.*"min_length": *\([0-9]*\).*/\1/p' "$PIRUS_CONFIG_FILE")
min=${min:-0}
total=$(ls "$PIRUS_INPUTS_DIR"/*.fastq 2>/dev/null | wc -l)
i=0
printf 'file\treads\n' > "$PIRUS_OUTPUTS_DIR/counts.tsv"
for f in "$PIRUS_INPUTS_DIR"/*.fastq; do
  i=$((i+1))
  n=$(awk -v min="$min" 'NR%4==2 && length($0) >= min {c++} END {print c+0}' "$f")
  printf '%s\t%s\n' "$(basename "$f")" "$n" >> "$PIRUS_OUTPUTS_DIR/counts.tsv"
  printf '{"progress": {"value": %d, "max": %d, "label": "%s"}}\n' $i $total \
    "$(basename "$f")" >> "$PIRUS_PROGRESS_FILE"
  echo "counted $f"
done
mkdir -p "$PIRUS_OUTPUTS_DIR/sub"
echo done > "$PIRUS_OUTPUTS_DIR/sub/status.txt"
"""


def build_pipeline(path: Path, name: str = "count", run: str = "/pipeline/run.sh",
                   script: str = COUNT_SCRIPT, form: dict[str, Any] | None = None,
                   version: str = "1.0", **manifest: Any) -> Path:
    files: dict[str, bytes | Path] = {"/pipeline/run.sh": script.encode()}
    full = {"name": name, "run": run, "version": version, "description": f"{name} test pipeline",
            "license": "MIT", "developers": ["Pirus tests"], **manifest}
    files["/pipeline/form.json"] = json.dumps(form if form is not None else COUNT_FORM).encode()
    full.setdefault("form", "/pipeline/form.json")
    return build_package_from_parts(full, files, path)


def progress_script(steps: int, delay: float, word: str = "step") -> str:
    """A pipeline that reports progress ``steps`` times, ``delay`` seconds apart, then writes
    ``result.txt``: long enough to watch, pause or cancel."""
    return f"""#!/bin/sh
i=0
while [ $i -lt {steps} ]; do
  i=$((i+1))
  printf '{{"progress": {{"value": %d, "max": {steps}, "label": "step %d"}}}}\\n' $i $i \\
    >> "$PIRUS_PROGRESS_FILE"
  echo "{word} $i"
  sleep {delay:g}
done
echo finished > "$PIRUS_OUTPUTS_DIR/result.txt"
"""


def fastq(reads: int, length: int = 10) -> bytes:
    out = []
    for i in range(reads):
        out.append(f"@r{i}\n{'A' * (length + i % 3)}\n+\n{'I' * (length + i % 3)}\n")
    return "".join(out).encode()


# -- broken packages ---------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def raw_package(path: Path, metadata: Any = None, members: list[tuple[str, dict]] | None = None,
                metadata_text: str | None = None) -> Path:
    """A hand-made tar.gz: metadata.yaml (unless None) + rootfs + the given extra members."""
    with tarfile.open(path, "w:gz") as tar:
        if metadata_text is not None:
            _add(tar, "metadata.yaml", metadata_text.encode())
        elif metadata is not None:
            _add(tar, "metadata.yaml", yaml.safe_dump(metadata).encode())
        _add(tar, "rootfs", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "rootfs/bin", type=tarfile.DIRTYPE, mode=0o755)
        for name, attrs in members or []:
            data = attrs.pop("data", b"")
            _add(tar, name, data, **attrs)
    return path


GOOD_METADATA = {"architecture": "x86_64", "creation_date": 0,
                 "properties": {"description": "broken"},
                 "pirus": {"name": "broken", "run": "true"}}

BAD_PACKAGES: dict[str, dict[str, Any]] = {
    "missing_manifest": {"metadata": {"architecture": "x86_64", "creation_date": 0}},
    "missing_metadata_file": {"metadata": None},
    "missing_run": {"metadata": {**GOOD_METADATA, "pirus": {"name": "x"}}},
    "bad_yaml": {"metadata_text": "pirus: [unclosed\n  name: : :"},
    "path_traversal": {"metadata": GOOD_METADATA,
                       "members": [("rootfs/../../escaped.txt", {"data": b"x"})]},
    "absolute_path": {"metadata": GOOD_METADATA,
                      "members": [("/tmp/escaped.txt", {"data": b"x"})]},
    "symlink_escape": {"metadata": GOOD_METADATA,
                       "members": [("rootfs/bin/evil", {"type": tarfile.SYMTYPE,
                                                         "linkname": "../../../../etc/shadow"})]},
    "hardlink_escape": {"metadata": GOOD_METADATA,
                        "members": [("rootfs/bin/evil", {"type": tarfile.LNKTYPE,
                                                          "linkname": "../etc/shadow"})]},
    "device_node": {"metadata": GOOD_METADATA,
                    "members": [("rootfs/dev/sda", {"type": tarfile.BLKTYPE, "devmajor": 8,
                                                    "devminor": 0})]},
    "form_missing": {"metadata": {**GOOD_METADATA, "pirus": {"name": "x", "run": "true",
                                                             "form": "/pipeline/form.json"}}},
    "not_a_tar": {"raw": b"this is not a tarball"},
}


def bad_package(path: Path, case: str) -> Path:
    spec = dict(BAD_PACKAGES[case])
    if "raw" in spec:
        path.write_bytes(spec["raw"])
        return path
    return raw_package(path, spec.get("metadata"), [(n, dict(a)) for n, a in
                                                    spec.get("members", [])],
                       metadata_text=spec.get("metadata_text"))
