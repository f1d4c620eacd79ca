#!/bin/sh
# fastq-stats: read statistics of each FASTQ file of the inputs folder.
#
# For every .fastq/.fq(.gz) input: reads, bases, shortest/longest/mean read length, GC % and
# mean base quality, written as one row of stats.tsv, and the read-length histogram, written to
# lengths.tsv. Progress is reported every 10 % of each file.
#
# POSIX sh + busybox awk/sed/sort/wc only (the image is the busybox base: no bash, no jq).
# Pirus sets PIRUS_CONFIG_FILE (the run's form values as JSON), PIRUS_PROGRESS_FILE (append
# JSON lines to report progress) and PIRUS_INPUTS_DIR/PIRUS_OUTPUTS_DIR; the defaults below let
# the script run by hand too:
#   PIRUS_INPUTS_DIR=data PIRUS_OUTPUTS_DIR=out busybox sh run.sh
#
# Definitions (the tests recompute every number in Python with the same ones):
#   * a record is 4 non-blank lines (@header, sequence, +, qualities); blank lines and CRLF line
#     ends are tolerated, multi-line FASTQ is not;
#   * reads shorter than min_length are only counted in `skipped`, no other statistic sees them;
#   * gc_percent = 100 * (G + C) / (A + C + G + T), case-insensitive: N and other IUPAC codes
#     are left out of the denominator;
#   * mean_quality = the mean Phred score of all the bases (not the mean of per-read means),
#     score = ASCII code - phred_offset; a score below 0 means the wrong offset: an error;
#   * means and percentages have 2 decimals; NA when there is nothing to average.
set -eu
# A gzip error inside `gzip -dc f | awk` must fail the run, not look like a short file.
set -o pipefail

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "fastq-stats: $*" >&2; }

# config_int KEY DEFAULT: the integer of the top-level "KEY": <integer> of the config JSON.
# No jq: the whole file on one line, the value after the key. That is enough because the
# server validated the config against form.json (no other keys, integers only).
config_int() {
  value=
  if [ -f "$CONFIG" ]; then
    value=$(tr -d '\n\r' <"$CONFIG" |
      sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9]*\).*/\1/p")
  fi
  printf '%s\n' "${value:-$2}"
}

MIN_LENGTH=$(config_int min_length 0)
PHRED_OFFSET=$(config_int phred_offset 33)
case "$MIN_LENGTH" in -*) log "min_length must be >= 0, got $MIN_LENGTH"; exit 2 ;; esac
case "$PHRED_OFFSET" in
  33 | 64) ;;
  *) log "phred_offset must be 33 or 64, got $PHRED_OFFSET"; exit 2 ;;
esac
log "min_length=$MIN_LENGTH phred_offset=$PHRED_OFFSET"

# The FASTQ inputs, sorted by name (one glob, so one sorted list); config.json and any other
# file are skipped.
set --
for f in "$INPUTS"/*; do
  [ -f "$f" ] || continue
  case "${f##*/}" in
    config.json) ;;
    *.fastq | *.fq | *.fastq.gz | *.fq.gz) set -- "$@" "$f" ;;
    *) log "ignoring ${f##*/} (not .fastq, .fq, .fastq.gz or .fq.gz)" ;;
  esac
done
if [ $# -eq 0 ]; then
  log "no FASTQ input (.fastq, .fq, .fastq.gz or .fq.gz) in $INPUTS"
  exit 1
fi

read_input() { case "$1" in *.gz) gzip -dc "$1" ;; *) cat "$1" ;; esac; }

report() {  # report VALUE LABEL
  [ -n "$PROGRESS" ] || return 0
  printf '{"progress": {"value": %d, "max": 100, "label": "%s"}}\n' "$1" "$2" >>"$PROGRESS"
}

# Progress is by lines, so big files weigh more: count them all first (wc is much faster than
# the statistics, so this costs little even for gzipped inputs).
report 0 "counting lines"
total=0
i=0
for f in "$@"; do
  i=$((i + 1))
  lines=$(read_input "$f" | wc -l) ||
    { log "${f##*/}: cannot read it (broken gzip?)"; exit 1; }
  eval "lines_$i=$((lines))"
  total=$((total + lines))
done

mkdir -p "$OUTPUTS"
stats="$OUTPUTS/stats.tsv"
lengths="$OUTPUTS/lengths.tsv"
hist=$(mktemp)  # one file's histogram, before sorting
# No half-written table is left behind when a file turns out to be broken.
trap 'rm -f "$stats.tmp" "$lengths.tmp" "$hist"' EXIT
printf 'file\treads\tskipped\tbases\tmin_len\tmax_len\tmean_len\tgc_percent\tmean_quality\n' \
  >"$stats.tmp"
printf 'file\tlength\tcount\n' >"$lengths.tmp"

before=0  # lines of the files already done
i=0
for f in "$@"; do
  i=$((i + 1))
  name=${f##*/}
  eval "lines=\$lines_$i"
  : >"$hist"  # awk writes no histogram at all for a file without reads
  # File names and paths go through the environment: awk -v would interpret backslashes.
  row=$(read_input "$f" | NAME=$name HIST=$hist PROGRESS=$PROGRESS awk \
    -v min="$MIN_LENGTH" -v offset="$PHRED_OFFSET" -v lines="$lines" -v before="$before" \
    -v total="$total" '
    function fail(message) {
      printf "%s: line %d: %s\n", name, NR, message > "/dev/stderr"
      failed = 1
      exit 1
    }
    # Progress at every 10 % of this file; value is the percentage of all the input lines.
    # Each threshold is reported exactly once, even when a tiny file crosses several at once.
    function report(upto) {
      while (next_pct <= upto && next_pct <= 100) {
        if (progress != "") {
          value = total ? int((100 * before + next_pct * lines) / total) : 100
          printf "{\"progress\": {\"value\": %d, \"max\": 100, \"label\": \"%s %d%%\"}}\n",
            value, label, next_pct >> progress
          fflush(progress)  # the server reads the file while the run goes on
        }
        next_pct += 10
      }
    }
    BEGIN {
      name = ENVIRON["NAME"]; hist = ENVIRON["HIST"]; progress = ENVIRON["PROGRESS"]
      label = name  # the file name as a JSON string
      gsub(/\\/, "\\\\", label); gsub(/"/, "\\\"", label); gsub(/\t/, "\\t", label)
      for (c = 32; c < 127; c++) ORD[sprintf("%c", c)] = c
      next_pct = 10
      min += 0; offset += 0
    }
    { if (lines > 0 && NR * 100 >= next_pct * lines) report(int(NR * 100 / lines)) }
    { sub(/\r$/, "") }
    $0 == "" { next }
    { n++ }
    n % 4 == 1 {
      if (substr($0, 1, 1) != "@") fail("expected a record header starting with @")
      next
    }
    n % 4 == 2 { seq = $0; next }
    n % 4 == 3 { if (substr($0, 1, 1) != "+") fail("expected a + separator line"); next }
    {
      len = length(seq)
      if (length($0) != len) fail("the quality line is not as long as the sequence")
      if (len < min) { skipped++; next }
      reads++
      bases += len
      count[len]++
      if (reads == 1 || len < shortest) shortest = len
      if (len > longest) longest = len
      s = toupper(seq)
      gc += gsub(/[GC]/, "", s)
      at += gsub(/[AT]/, "", s)
      for (p = 1; p <= len; p++) {
        q = ORD[substr($0, p, 1)] - offset  # unknown characters give a negative score too
        if (q < 0) fail(sprintf("quality character \"%s\" is below phred_offset %d: %s",
          substr($0, p, 1), offset, offset == 64 ? "is the file Phred+33?" : "not a FASTQ quality"))
        qual += q
      }
    }
    END {
      if (failed) exit 1
      if (n % 4 != 0) fail("the last record is incomplete")
      report(100)
      for (len in count) printf "%d\t%d\n", len, count[len] > hist
      close(hist)
      printf "%.0f\t%.0f\t%.0f\t", reads, skipped, bases
      if (reads) printf "%d\t%d\t%.2f\t", shortest, longest, bases / reads
      else printf "NA\tNA\tNA\t"
      if (gc + at) printf "%.2f\t", 100 * gc / (gc + at)
      else printf "NA\t"
      if (bases) printf "%.2f\n", qual / bases
      else printf "NA\n"
    }
  ') || { log "$name: not a valid FASTQ file"; exit 1; }
  printf '%s\t%s\n' "$name" "$row" >>"$stats.tmp"
  # The histogram, by increasing length, each row prefixed with the file name.
  sort -n "$hist" | NAME=$name awk '{ print ENVIRON["NAME"] "\t" $0 }' >>"$lengths.tmp"
  before=$((before + lines))
  log "$name: $row"
done
mv "$stats.tmp" "$stats"
mv "$lengths.tmp" "$lengths"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
log "wrote $stats and $lengths ($# file(s))"
