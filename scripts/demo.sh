#!/usr/bin/env bash
# Set up everything (idempotent), build and install the demo pipeline, start JupyterLab with Pirus.
#   PIRUS_DEMO_ROOT  notebook root folder (default: ./demo)
#   PIRUS_DEMO_PORT  port (default: 8888)
#   PIRUS_DEMO_TOKEN Jupyter token (default: a random one, printed with the URL)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
root=${PIRUS_DEMO_ROOT:-$PWD/demo}
mkdir -p "$root/packages" "$root/data"
jupyter pirus build examples/pipelines/fastq-count -o "$root/packages/fastq-count.tar.gz"
jupyter pirus build examples/pipelines/fastq-stats -o "$root/packages/fastq-stats.tar.gz"
jupyter pirus build examples/pipelines/vcf-filter -o "$root/packages/vcf-filter.tar.gz"
jupyter pirus build examples/pipelines/fail-on-demand -o "$root/packages/fail-on-demand.tar.gz"
# Real tools: one Debian base (mmdebstrap, from this machine's apt sources) built by the first
# of these and cached in ~/.cache/pirus/bases for the others and for the next start.
jupyter pirus build examples/pipelines/vcf-stats -o "$root/packages/vcf-stats.tar.gz"
jupyter pirus build examples/pipelines/fastq-stats-seqkit -o "$root/packages/fastq-stats-seqkit.tar.gz"
jupyter pirus build examples/pipelines/bam-stats -o "$root/packages/bam-stats.tar.gz"
examples/pipelines/bam-stats/make_data.sh
cp examples/pipelines/fastq-stats/data/small.fastq examples/pipelines/vcf-filter/data/small.vcf \
  examples/pipelines/bam-stats/data/small.bam "$root/data/"
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
port=${PIRUS_DEMO_PORT:-8888}
token=${PIRUS_DEMO_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
url="http://127.0.0.1:$port/"
jupyter lab --allow-root --no-browser --ip=127.0.0.1 --port="$port" \
  --IdentityProvider.token="$token" --ServerApp.root_dir="$root" &
lab=$!
trap 'kill "$lab" 2>/dev/null' INT TERM EXIT
pirus() { jupyter pirus --url "$url" --token "$token" "$@"; }
for _ in $(seq 120); do pirus list >/dev/null 2>&1 && break; sleep 1; done
# Install the demo pipelines once (a second start finds them installed).
for package in "$root"/packages/*.tar.gz; do
  name=$(basename "$package" .tar.gz)
  pirus list 2>/dev/null | grep -qw -- "$name" || pirus install "$package" || true
done
echo
echo "Pirus demo: open ${url}lab?token=$token"
echo "  pipelines installed: $(ls "$root/packages" | sed 's/.tar.gz//' | tr '\n' ' ')"
echo "  data in $root/data; notebooks quickstart.ipynb and reproduce.ipynb in $root"
wait "$lab"
