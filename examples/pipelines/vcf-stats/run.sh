#!/bin/sh
# vcf-stats: bcftools view with the form's QUAL / INFO DP thresholds, then bcftools stats of
# the records kept. Outputs: filtered.vcf (no ##bcftools_view* header lines: --no-version,
# so the same command on any machine gives the same bytes) and stats.txt.
# Rules: QUAL >= min_qual (a missing QUAL fails it; 0 disables the filter); INFO/DP >= min_dp
# (a missing DP fails it; 0 disables the filter).
set -eu

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "vcf-stats: $*" >&2; }
progress() {
  [ -z "$PROGRESS" ] ||
    printf '{"progress": {"value": %d, "max": 100, "label": "%s"}}\n' "$1" "$2" >>"$PROGRESS"
}

# The JSON number of "KEY" in the config (validated against form.json by the server).
NUMBER='-\{0,1\}[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\([eE][-+]\{0,1\}[0-9][0-9]*\)\{0,1\}'
config_number() {
  value=
  if [ -f "$CONFIG" ]; then
    value=$(tr -d '\n\r' <"$CONFIG" |
      sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\($NUMBER\).*/\1/p")
  fi
  printf '%s\n' "${value:-$2}"
}
MIN_QUAL=$(config_number min_qual 20)
MIN_DP=$(config_number min_dp 10)

set --
for f in "$INPUTS"/*; do
  case "${f##*/}" in *.vcf | *.vcf.gz) [ -f "$f" ] && set -- "$@" "$f" ;; esac
done
if [ $# -ne 1 ]; then
  log "expected exactly one VCF input (.vcf or .vcf.gz) in $INPUTS, got $#"
  exit 1
fi

filter=
[ "$MIN_QUAL" = 0 ] || filter="QUAL>=$MIN_QUAL"
[ "$MIN_DP" = 0 ] || filter="${filter:+$filter && }INFO/DP>=$MIN_DP"
log "$(bcftools --version | head -n 1); filter: ${filter:-none}"

cd "$OUTPUTS"
progress 10 "bcftools view"
if [ -n "$filter" ]; then
  bcftools view --no-version -i "$filter" -Ov -o filtered.vcf "$1"
else
  bcftools view --no-version -Ov -o filtered.vcf "$1"
fi
progress 60 "bcftools stats"
bcftools stats filtered.vcf >stats.txt
progress 100 "done"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
log "wrote filtered.vcf and stats.txt"
