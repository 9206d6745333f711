#!/bin/bash
# Records the command line and config file the suite passes, then execs the real binary.
# usage: CAPTURE_REAL=<binary> CAPTURE_DIR=<dir>; point the suite's *_BINARY env at this script.
d=${CAPTURE_DIR:-${UPSTREAM_HARNESS:-/work/upstream-harness}/captured}; mkdir -p "$d"
n=$(date +%s%N)
printf '%q ' "$CAPTURE_REAL" "$@" > "$d/$n.cmdline"; echo >> "$d/$n.cmdline"
prev=""
for a in "$@"; do
  case "$prev" in -c|-config|--config|-config-file) [ -f "$a" ] && cp "$a" "$d/$n.config" ;; esac
  case "$a" in -config=*|--config=*) f=${a#*=}; [ -f "$f" ] && cp "$f" "$d/$n.config" ;; esac
  prev=$a
done
exec "$CAPTURE_REAL" "$@"
