#!/usr/bin/env bash
# Set up everything (idempotent), build and install the demo pipeline, start JupyterLab with Pirus.
#   PIRUS_DEMO_ROOT  notebook root folder (default: ./demo)
#   PIRUS_DEMO_PORT  port (default: 8888)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
root=${PIRUS_DEMO_ROOT:-$PWD/demo}
mkdir -p "$root/packages" "$root/data"
python3 -m pirus_jupyter.builder examples/pipelines/fastq-count "$root/packages/fastq-count.tar.gz"
cp -n notebooks/*.ipynb "$root/" 2>/dev/null || true
python3 - "$root/data" <<'PY'
import sys, random
from pathlib import Path
random.seed(1)
out = Path(sys.argv[1])
for name, reads in (("sample-a.fastq", 2000), ("sample-b.fastq", 500)):
    with open(out / name, "w") as f:
        for i in range(reads):
            seq = "".join(random.choice("ACGT") for _ in range(random.randint(30, 100)))
            f.write(f"@{name}-{i}\n{seq}\n+\n{'I' * len(seq)}\n")
PY
echo "Demo root: $root — install packages/fastq-count.tar.gz from the Pirus panel, or in a notebook:"
echo "  import pirus_jupyter as pirus; pirus.connect().install('packages/fastq-count.tar.gz')"
exec jupyter lab --allow-root --no-browser --ip=127.0.0.1 --port="${PIRUS_DEMO_PORT:-8888}" \
  --ServerApp.root_dir="$root"
