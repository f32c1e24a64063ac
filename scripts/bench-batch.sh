#!/usr/bin/env bash
# Times one `skipflow batch` over an NDJSON file: events/s and peak RSS.
# usage: scripts/bench-batch.sh FILE WORKERS
set -euo pipefail
file=$1; workers=${2:-2}
out=$(mktemp -d "${TMPDIR:-/tmp}/skipflow-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT
events=$(wc -l < "$file")
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$out.rss" "${SKIPFLOW:-./target/release/skipflow}" batch --quiet --input "$file" --output "$out" --workers "$workers" > "$out.summary"
end=$(date +%s.%N)
rss_kb=$(cat "$out.rss"); rm -f "$out.rss"
secs=$(echo "$end - $start" | bc -l)
cat "$out.summary"; rm -f "$out.summary"
printf '\nbench: %d events, %d workers: %.2f s, %.0f events/s, peak RSS %.0f MB\n' \
  "$events" "$workers" "$secs" "$(echo "$events / $secs" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)"
