#!/usr/bin/env bash
# Set up what the tests need (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check pirus_jupyter tests benchmarks examples
(cd labextension && npm test --silent)
python3 -m pytest -p no:cacheprovider -q -ra "$@"
