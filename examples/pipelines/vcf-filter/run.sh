#!/bin/sh
# vcf-filter: keep the variants of one VCF file whose QUAL and read depth reach the thresholds
# of the form, and count records and passing records per chromosome.
#
# Outputs: filtered.vcf (every header line, a ##vcf-filterCommand line saying how it was made,
# then the passing records unchanged and in order) and per_chromosome.tsv (chrom, total,
# passed; chromosomes in their order of first appearance in the file). Progress is reported
# every 10 % of the file's lines.
#
# POSIX sh + busybox awk/sed/wc only (the image is the busybox base: no bash, no jq).
# Try it by hand:  PIRUS_INPUTS_DIR=data PIRUS_OUTPUTS_DIR=out busybox sh run.sh
#
# Rules (the tests apply the same ones in Python):
#   * QUAL filter: QUAL >= min_qual; a missing QUAL (".") fails it; min_qual = 0 disables it;
#   * depth filter: the INFO key DP exactly (not DP4, not FORMAT/DP) >= min_dp; a record
#     without INFO DP fails it; min_dp = 0 disables it;
#   * blank lines and CRLF line ends are tolerated (the output has LF line ends).
set -eu
# A gzip error inside `gzip -dc f | awk` must fail the run, not look like a short file.
set -o pipefail

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "vcf-filter: $*" >&2; }

# config_number KEY DEFAULT: the JSON number of the top-level "KEY": <number> of the config,
# as written there. No jq: the whole file on one line, the value after the key. That is
# enough because the server validated the config against form.json (no other keys).
NUMBER='-\{0,1\}[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\([eE][-+]\{0,1\}[0-9][0-9]*\)\{0,1\}'
config_number() {
  value=
  if [ -f "$CONFIG" ]; then
    value=$(tr -d '\n\r' <"$CONFIG" |
      sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\($NUMBER\).*/\1/p")
  fi
  printf '%s\n' "${value:-$2}"
}

# The defaults are form.json's (the server fills them in; these are for runs by hand).
MIN_QUAL=$(config_number min_qual 20)
MIN_DP=$(config_number min_dp 10)
case "$MIN_QUAL" in -*) log "min_qual must be >= 0, got $MIN_QUAL"; exit 2 ;; esac
case "$MIN_DP" in
  -* | *[!0-9]*) log "min_dp must be an integer >= 0, got $MIN_DP"; exit 2 ;;
esac
log "min_qual=$MIN_QUAL min_dp=$MIN_DP"

# Exactly one VCF input: filtered.vcf is one file. config.json and other files are skipped.
set --
for f in "$INPUTS"/*; do
  [ -f "$f" ] || continue
  case "${f##*/}" in
    config.json) ;;
    *.vcf | *.vcf.gz) set -- "$@" "$f" ;;
    *) log "ignoring ${f##*/} (not .vcf or .vcf.gz)" ;;
  esac
done
if [ $# -ne 1 ]; then
  log "expected exactly one VCF input (.vcf or .vcf.gz) in $INPUTS, got $#"
  exit 1
fi
vcf=$1
name=${vcf##*/}

read_input() { case "$1" in *.gz) gzip -dc "$1" ;; *) cat "$1" ;; esac; }

[ -z "$PROGRESS" ] ||
  printf '{"progress": {"value": 0, "max": 100, "label": "counting lines"}}\n' >>"$PROGRESS"
lines=$(read_input "$vcf" | wc -l) ||
  { log "$name: cannot read it (broken gzip?)"; exit 1; }

mkdir -p "$OUTPUTS"
filtered="$OUTPUTS/filtered.vcf"
counts="$OUTPUTS/per_chromosome.tsv"
# No half-written output is left behind when the file turns out to be broken.
trap 'rm -f "$filtered.tmp" "$counts.tmp"' EXIT
# File names and paths go through the environment: awk -v would interpret backslashes.
read_input "$vcf" | NAME=$name PROGRESS=$PROGRESS OUT=$filtered.tmp COUNTS=$counts.tmp awk \
  -F '\t' -v min_qual="$MIN_QUAL" -v min_dp="$MIN_DP" -v lines="$((lines))" '
  function fail(message) {
    printf "%s: line %d: %s\n", name, NR, message > "/dev/stderr"
    failed = 1
    exit 1
  }
  # Progress at every 10 % of the lines; each threshold is reported exactly once, even when a
  # tiny file crosses several at once.
  function report(upto) {
    while (next_pct <= upto && next_pct <= 100) {
      if (progress != "") {
        printf "{\"progress\": {\"value\": %d, \"max\": 100, \"label\": \"%s %d%%\"}}\n",
          next_pct, label, next_pct >> progress
        fflush(progress)  # the server reads the file while the run goes on
      }
      next_pct += 10
    }
  }
  BEGIN {
    name = ENVIRON["NAME"]; progress = ENVIRON["PROGRESS"]; out = ENVIRON["OUT"]
    counts = ENVIRON["COUNTS"]
    label = name  # the file name as a JSON string
    gsub(/\\/, "\\\\", label); gsub(/"/, "\\\"", label); gsub(/\t/, "\\t", label)
    command = "##vcf-filterCommand=vcf-filter min_qual=" min_qual " min_dp=" min_dp
    min_qual += 0; min_dp += 0
    next_pct = 10
    printf "" > out  # an empty VCF still gives a filtered.vcf
  }
  { if (lines > 0 && NR * 100 >= next_pct * lines) report(int(NR * 100 / lines)) }
  { sub(/\r$/, "") }
  $0 == "" { next }
  /^##/ {
    if (columns) fail("a ## header line after the #CHROM line")
    print > out
    next
  }
  /^#CHROM/ {
    if (columns) fail("a second #CHROM line")
    columns = 1
    print command > out  # where the tool was run with which thresholds, as bcftools does
    print > out
    next
  }
  {
    if (!columns) fail("a record before the #CHROM header line")
    if (NF < 8) fail(sprintf("%d tab-separated columns, a VCF record has at least 8", NF))
    chrom = $1
    if (!(chrom in total)) order[++chroms] = chrom
    total[chrom]++
    keep = 1
    if (min_qual > 0) keep = $6 != "." && $6 + 0 >= min_qual
    if (keep && min_dp > 0) {
      dp = ""
      n = split($8, info, ";")
      for (i = 1; i <= n; i++) {
        if (substr(info[i], 1, 3) == "DP=") { dp = substr(info[i], 4); break }
      }
      keep = dp != "" && dp + 0 >= min_dp
    }
    if (keep) { passed[chrom]++; print > out }
  }
  END {
    if (failed) exit 1
    if (!columns) fail("no #CHROM header line: not a VCF file")
    report(100)
    printf "chrom\ttotal\tpassed\n" > counts
    for (i = 1; i <= chroms; i++) {
      chrom = order[i]
      printf "%s\t%d\t%d\n", chrom, total[chrom], passed[chrom] > counts
      printf "%s: %d of %d records passed\n", chrom, passed[chrom], total[chrom] > "/dev/stderr"
    }
  }
' || { log "$name: not a valid VCF file"; exit 1; }
mv "$filtered.tmp" "$filtered"
mv "$counts.tmp" "$counts"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
log "wrote $filtered and $counts"
