#!/bin/sh
# bam-stats: samtools flagstat and samtools idxstats of one BAM input. idxstats needs an
# index, and the inputs folder is not ours to write: the BAM is sorted into /tmp and indexed
# there. Outputs: flagstat.txt and idxstats.tsv.
set -eu

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "bam-stats: $*" >&2; }
progress() {
  [ -z "$PROGRESS" ] ||
    printf '{"progress": {"value": %d, "max": 100, "label": "%s"}}\n' "$1" "$2" >>"$PROGRESS"
}
FORMAT=
[ ! -f "$CONFIG" ] ||
  FORMAT=$(tr -d '\n\r' <"$CONFIG" |
    sed -n 's/.*"flagstat_format"[[:space:]]*:[[:space:]]*"\([a-z]*\)".*/\1/p')

set --
for f in "$INPUTS"/*.bam; do [ -f "$f" ] && set -- "$@" "$f"; done
if [ $# -ne 1 ]; then
  log "expected exactly one BAM input in $INPUTS, got $#"
  exit 1
fi
log "$(samtools --version | head -n 1)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
progress 10 "samtools flagstat"
samtools flagstat -O "${FORMAT:-default}" "$1" >"$OUTPUTS/flagstat.txt"
progress 40 "samtools sort"
samtools sort -o "$scratch/sorted.bam" "$1"
progress 70 "samtools index + idxstats"
samtools index "$scratch/sorted.bam"
samtools idxstats "$scratch/sorted.bam" >"$OUTPUTS/idxstats.tsv"
progress 100 "done"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
