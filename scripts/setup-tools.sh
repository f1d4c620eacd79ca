#!/usr/bin/env bash
# Third-party command-line tools the integration tests drive whose pinned dependencies clash
# with the project's own test environment (snakemake-executor-plugin-tes wants py-tes<0.5,
# nf-core wants rich>=14 where roc-validator wants rich<14): one venv each, under
# ${PIRUS_TOOLS_DIR:-~/.cache/pirus-tools}/<name>. Idempotent: a venv whose stamp matches its
# requirement list is left alone. tests/tools.py finds them.
set -euo pipefail
tools_dir="${PIRUS_TOOLS_DIR:-$HOME/.cache/pirus-tools}"
mkdir -p "$tools_dir"

make_venv() {  # make_venv NAME REQUIREMENT...
  local name="$1"; shift
  local venv="$tools_dir/$name" stamp="$*"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.pirus-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  printf '%s' "$stamp" > "$venv/.pirus-stamp"
}

# py-tes 0.4 (the TES plugin's pin) imports six without declaring it.
make_venv snakemake "snakemake>=9,<10" "snakemake-executor-plugin-tes>=0.1.3" six
make_venv nf-core "nf-core==4.2.1"
echo "Pirus for Jupyter: test tools set up in $tools_dir"
