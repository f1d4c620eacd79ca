#!/bin/sh
# fail-on-demand: fail on purpose when the form says so, to show how Pirus handles a failed
# pipeline. fail = true (the default): write `message` to stderr and exit with `exit_code`
# (Pirus then records the run as ERROR, with the exit code and the last stderr lines in its
# error). fail = false: write ok.txt to the outputs and succeed.
#
# POSIX sh + busybox awk only (the image is the busybox base: no bash, no jq).
# Try it by hand:  mkdir in && echo '{"exit_code": 3}' >in/config.json &&
#                  PIRUS_INPUTS_DIR=in PIRUS_OUTPUTS_DIR=out busybox sh run.sh; echo $?
set -eu

INPUTS=${PIRUS_INPUTS_DIR:-/pipeline/inputs}
OUTPUTS=${PIRUS_OUTPUTS_DIR:-/pipeline/outputs}
CONFIG=${PIRUS_CONFIG_FILE:-$INPUTS/config.json}
PROGRESS=${PIRUS_PROGRESS_FILE:-}

log() { printf '%s\n' "fail-on-demand: $*" >&2; }

# config_get KEY: the value of the top-level KEY of the config JSON object, on stdout: strings
# decoded (escapes, \uXXXX and surrogate pairs to UTF-8), other values as written. Exit status
# 1 when the key is absent or the file is not a JSON object. No jq in busybox, and the message
# is free text that sed cannot cut out safely (quotes, backslashes, non-ASCII characters that
# the server writes as \u escapes): a small JSON scanner in awk.
config_get() {
  [ -f "$CONFIG" ] || return 1
  awk -v key="$1" '
    function hexval(h,   i, v) {
      v = 0
      h = tolower(h)
      for (i = 1; i <= 4; i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
      return v
    }
    function utf8(c) {
      if (c < 128) return sprintf("%c", c)
      if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
      if (c < 65536)
        return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
      return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64,
                     128 + int(c / 64) % 64, 128 + c % 64)
    }
    # The string starting at pos (its opening quote) decoded into STR; returns the position
    # after the closing quote, 0 if the string does not end.
    function jstring(pos,   c, out, cp, low) {
      out = ""
      for (pos++; pos <= n; pos++) {
        c = substr(s, pos, 1)
        if (c == "\"") { STR = out; return pos + 1 }
        if (c != "\\") { out = out c; continue }
        c = substr(s, ++pos, 1)
        if (c == "n") out = out "\n"
        else if (c == "t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "b") out = out sprintf("%c", 8)
        else if (c == "f") out = out sprintf("%c", 12)
        else if (c == "u") {
          cp = hexval(substr(s, pos + 1, 4))
          pos += 4
          # A UTF-16 surrogate pair is one character outside the BMP (an emoji, say).
          if (cp >= 55296 && cp < 56320 && substr(s, pos + 1, 2) == "\\u") {
            low = hexval(substr(s, pos + 3, 4))
            if (low >= 56320 && low < 57344) {
              cp = 65536 + (cp - 55296) * 1024 + (low - 56320)
              pos += 6
            }
          }
          if (cp > 0) out = out utf8(cp)  # awk strings cannot hold a NUL
        }
        else out = out c  # \" \\ \/
      }
      return 0
    }
    function blank(pos) {
      while (pos <= n && index(" \t\r\n", substr(s, pos, 1))) pos++
      return pos
    }
    # Skip the value at pos (any JSON value); returns the position after it, 0 if broken.
    function skip(pos,   c, depth) {
      c = substr(s, pos, 1)
      if (c == "\"") return jstring(pos)
      if (c == "{" || c == "[") {
        for (depth = 0; pos <= n; ) {
          c = substr(s, pos, 1)
          if (c == "\"") { if (!(pos = jstring(pos))) return 0; continue }
          if (c == "{" || c == "[") depth++
          else if ((c == "}" || c == "]") && --depth == 0) return pos + 1
          pos++
        }
        return 0
      }
      while (pos <= n && !index(",}] \t\r\n", substr(s, pos, 1))) pos++
      return pos
    }
    { s = s $0 "\n" }
    END {
      n = length(s)
      pos = blank(1)
      if (substr(s, pos, 1) != "{") exit 1
      pos = blank(pos + 1)
      while (substr(s, pos, 1) == "\"") {
        if (!(pos = jstring(pos))) exit 1
        name = STR
        pos = blank(pos)
        if (substr(s, pos, 1) != ":") exit 1
        pos = blank(pos + 1)
        if (name == key) {
          if (substr(s, pos, 1) == "\"") { if (!jstring(pos)) exit 1; printf "%s", STR }
          else if ((end = skip(pos))) printf "%s", substr(s, pos, end - pos)
          else exit 1
          exit 0
        }
        if (!(pos = skip(pos))) exit 1
        pos = blank(pos)
        if (substr(s, pos, 1) == ",") pos = blank(pos + 1)
      }
      exit 1
    }
  ' "$CONFIG"
}

# The defaults are form.json's (the server fills them in; these are for runs by hand).
FAIL=$(config_get fail) || FAIL=true
EXIT_CODE=$(config_get exit_code) || EXIT_CODE=2
MESSAGE=$(config_get message) || MESSAGE="failing on purpose, as asked (fail is true)"
case "$EXIT_CODE" in
  '' | *[!0-9]*) log "exit_code must be an integer from 1 to 255, got $EXIT_CODE"; exit 2 ;;
esac
if [ "$EXIT_CODE" -lt 1 ] || [ "$EXIT_CODE" -gt 255 ]; then
  # exit 256 would be 0 (success) and exit 0 would not fail at all.
  log "exit_code must be an integer from 1 to 255, got $EXIT_CODE"
  exit 2
fi

case "$FAIL" in
  true)
    [ -z "$PROGRESS" ] ||
      printf '{"progress": {"value": 50, "max": 100, "label": "failing on purpose"}}\n' \
        >>"$PROGRESS"
    log "fail is true: exiting with code $EXIT_CODE"
    # Last, so that it is the last line of stderr, which Pirus puts at the end of the error.
    printf '%s\n' "$MESSAGE" >&2
    exit "$EXIT_CODE"
    ;;
  false)
    mkdir -p "$OUTPUTS"
    printf 'ok\n' >"$OUTPUTS/ok.txt"
    [ -z "$PROGRESS" ] || printf '{"status": "FINISHING"}\n' >>"$PROGRESS"
    log "fail is false: wrote $OUTPUTS/ok.txt"
    ;;
  *) log "fail must be true or false, got $FAIL"; exit 2 ;;
esac
