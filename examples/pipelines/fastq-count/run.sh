#!/bin/sh
# fastq-count: count the reads and bases of each FASTQ file of the inputs folder.
#
# POSIX sh + busybox awk/sed only (the image is the busybox base: no jq, no python).
# Pirus sets PIRUS_CONFIG_FILE (the run's form values as JSON), PIRUS_PROGRESS_FILE (append
# JSON lines to report progress) and PIRUS_INPUTS_DIR/PIRUS_OUTPUTS_DIR; the defaults below
# let the script run by hand inside the container too.
set -eu

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "fastq-count: $*" >&2; }

# Escape a string for a JSON string literal (file names may hold quotes or backslashes).
json_string() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }

report() {  # report VALUE MAX LABEL
  [ -n "$PROGRESS" ] || return 0
  printf '{"progress": {"value": %d, "min": 0, "max": %d, "label": "%s"}}\n' \
    "$1" "$2" "$(json_string "$3")" >>"$PROGRESS"
}

# min_length from the JSON config. No jq: take the first `"min_length": <digits>` anywhere in
# the file (the form only allows a non-negative integer; missing means 0).
MIN_LENGTH=0
if [ -f "$CONFIG" ]; then
  value=$(tr -d '\n\r' <"$CONFIG" |
    sed -n 's/.*"min_length"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
  case "$value" in
    '') ;;
    -*) log "min_length must be >= 0, got $value"; exit 2 ;;
    *) MIN_LENGTH=$value ;;
  esac
fi
log "min_length=$MIN_LENGTH"

# The FASTQ files, sorted by name (one glob, so one sorted list), skipping config.json and
# anything else.
set --
for f in "$INPUTS"/*; do
  case "$f" in
    *.fastq | *.fq | *.fastq.gz | *.fq.gz) [ -f "$f" ] && set -- "$@" "$f" ;;
  esac
done
total=$#
[ "$total" -gt 0 ] || log "no .fastq/.fq(.gz) file in $INPUTS"

mkdir -p "$OUTPUTS"
out="$OUTPUTS/counts.tsv"
tmp="$out.tmp"
trap 'rm -f "$tmp"' EXIT  # no half-written table left behind on failure
printf 'file\treads\tbases\n' >"$tmp"
done_count=0
report 0 "$total" "starting"
for f in "$@"; do
  name=${f##*/}
  case "$f" in
    *.gz) reader="gzip -dc" ;;
    *) reader="cat" ;;
  esac
  # A record is 4 non-empty lines; the 2nd is the sequence. Blank lines (often at the end of
  # a file) and CRLF endings are tolerated. %.0f: awk numbers are doubles, %d could overflow.
  counts=$($reader "$f" | awk -v min="$MIN_LENGTH" '
    { sub(/\r$/, "") }
    $0 == "" { next }
    { n++ }
    n % 4 == 1 && substr($0, 1, 1) != "@" {
      printf "line %d is not a FASTQ header\n", NR > "/dev/stderr"; bad = 1; exit 1
    }
    n % 4 == 2 { len = length($0); if (len >= min) { reads++; bases += len } }
    END { if (!bad) printf "%.0f\t%.0f\n", reads, bases }
  ') || { log "$name: not a valid FASTQ file"; exit 1; }
  printf '%s\t%s\n' "$name" "$counts" >>"$tmp"
  done_count=$((done_count + 1))
  report "$done_count" "$total" "$name"
  log "$name: $counts"
done
mv "$tmp" "$out"
[ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
log "wrote $out ($total file(s))"
