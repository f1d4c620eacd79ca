#!/bin/sh
# fastq-stats-seqkit: `seqkit stats -a -T` of every FASTQ/FASTA input, run in the inputs
# folder on the bare file names (the file column then says only the name). Output: stats.tsv.
set -eu

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "fastq-stats-seqkit: $*" >&2; }
progress() {
  [ -z "$PROGRESS" ] ||
    printf '{"progress": {"value": %d, "max": 100, "label": "%s"}}\n' "$1" "$2" >>"$PROGRESS"
}
THREADS=
[ ! -f "$CONFIG" ] ||
  THREADS=$(tr -d '\n\r' <"$CONFIG" | sed -n 's/.*"threads"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p')

cd "$INPUTS"
set --
for f in *; do
  case "$f" in
    *.fastq | *.fq | *.fasta | *.fa | *.fastq.gz | *.fq.gz | *.fasta.gz | *.fa.gz)
      [ -f "$f" ] && set -- "$@" "$f" ;;
  esac
done
if [ $# -eq 0 ]; then
  log "no FASTQ or FASTA input (.fastq, .fq, .fasta, .fa, optionally .gz) in $INPUTS"
  exit 1
fi
log "$(seqkit version); $# file(s)"
progress 10 "seqkit stats of $# file(s)"
seqkit stats -a -T -j "${THREADS:-1}" "$@" >"$OUTPUTS/stats.tsv.tmp"
mv "$OUTPUTS/stats.tsv.tmp" "$OUTPUTS/stats.tsv"
progress 100 "done"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
