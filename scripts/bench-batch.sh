#!/usr/bin/env bash
# Batch benchmark, everything in one run on the same file, one after the other:
#   - skipflow batch, 1 process x WORKERS workers;
#   - the DuckDB peer job (benches/duckdb_job.py, the same four tables, WORKERS threads);
#   - the parse floor: serde_json parsing the same file into borrowed
#     fields on WORKERS threads, nothing else (benches/parse_floor.rs);
#   - skipflow in cluster mode on this machine: 2 and 3 processes x 1 worker
#     (they share the machine's cores: this shows the overhead of processes,
#     not a speedup), with peak RSS per process;
#   - memory growth: 1 process x 1 and 3 processes x 1 on the first half of
#     the file and on all of it; a process of three should grow by a third
#     of what one process grows by (what does not grow is the constant).
# Prints wall time, events/s, peak RSS and the ratios to the peer.
# usage: scripts/bench-batch.sh FILE WORKERS
set -euo pipefail
file=$1; workers=${2:-2}
bin=${SKIPFLOW:-./target/release/skipflow}
py=${SKIPFLOW_PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/skipflow-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
events=$(wc -l < "$file")

# run LABEL CMD...: wall seconds and peak RSS (MB) of one command.
run() {
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$tmp/time" "$@" > "$tmp/$label.out" 2> "$tmp/$label.err" || {
    echo "bench: $label failed:"; tail -5 "$tmp/$label.err"; exit 1; }
  read -r secs rss < <(tail -1 "$tmp/time")
  printf '%s %s\n' "$secs" "$((rss / 1024))"
}

# cluster N [FILE]: skipflow batch on N processes x 1 worker (N = 1: one plain
# process); wall seconds and each process's peak RSS.
cluster() {
  local n=$1 file=${2:-$file}
  local hosts="$tmp/hosts" out="$tmp/out-cluster-$1" pids=() rss=()
  : > "$hosts"
  for i in $(seq 0 $((n - 1))); do echo "127.0.0.1:$((24000 + RANDOM % 20000))" >> "$hosts"; done
  local t0; t0=$(date +%s.%N)
  for i in $(seq 0 $((n - 1))); do
    /usr/bin/time -f '%M' -o "$tmp/rss-$n-$i" "$bin" batch --quiet --input "$file" --output "$out" \
      --workers 1 $( ((n > 1)) && echo "-- -n $n -p $i -h $hosts") > /dev/null 2> "$tmp/cluster-$n-$i.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "bench: cluster of $n failed"; cat "$tmp"/cluster-"$n"-*.err; exit 1; }; done
  local t1; t1=$(date +%s.%N)
  for i in $(seq 0 $((n - 1))); do rss+=("$(( $(tail -1 "$tmp/rss-$n-$i") / 1024 ))"); done
  printf '%s %s\n' "$(echo "$t1 - $t0" | bc -l)" "${rss[*]}"
}

echo "bench: $events events in $file; skipflow $($bin --version | cut -d' ' -f2)"
read -r s_secs s_rss < <(run skipflow "$bin" batch --quiet --input "$file" --output "$tmp/out-skipflow" --workers "$workers")
sed -n '/^read/,/^out_of_range/p' "$tmp/skipflow.out" | head -8
peer=""
if "$py" -c "import duckdb" 2> /dev/null; then
  read -r d_secs d_rss < <(run duckdb "$py" "$here/benches/duckdb_job.py" "$file" "$tmp/out-duckdb" "$workers")
  peer=1
fi
floor=$(${PARSE_FLOOR:-cargo bench -q --bench parse_floor --} "$file" "$workers" | grep '^parse_floor:')
f_secs=$(echo "$floor" | awk '{print $2}')
read -r c2_secs c2_rss < <(cluster 2)
read -r c3_secs c3_rss < <(cluster 3)
head -n "$((events / 2))" "$file" > "$tmp/half.ndjson"
read -r _ h1_rss < <(cluster 1 "$tmp/half.ndjson")
read -r _ f1_rss < <(cluster 1)
read -r _ h3_rss < <(cluster 3 "$tmp/half.ndjson")
mean() { echo "$*" | tr ' ' '\n' | awk '{s += $1} END {print s / NR}'; }

rate() { echo "$events / $1" | bc -l; }
printf '\n%-40s %9s %12s %s\n' "run ($workers threads, same file)" "wall s" "events/s" "peak RSS MB"
printf '%-40s %9.2f %12.0f %s\n' "skipflow batch, 1 process x $workers" "$s_secs" "$(rate "$s_secs")" "$s_rss"
[ -n "$peer" ] && printf '%-40s %9.2f %12.0f %s\n' "DuckDB SQL job (peer)" "$d_secs" "$(rate "$d_secs")" "$d_rss"
printf '%-40s %9.2f %12.0f\n' "serde_json parse only (floor)" "$f_secs" "$(rate "$f_secs")"
printf '%-40s %9.2f %12.0f %s\n' "skipflow batch, 2 processes x 1" "$c2_secs" "$(rate "$c2_secs")" "$c2_rss (per process)"
printf '%-40s %9.2f %12.0f %s\n' "skipflow batch, 3 processes x 1" "$c3_secs" "$(rate "$c3_secs")" "$c3_rss (per process)"
printf '\nbytes of peak RSS per event (1 process): %.0f\n' "$(echo "$s_rss * 1048576 / $events" | bc -l)"
[ -n "$peer" ] && printf 'skipflow / DuckDB speed: %.2fx\n' "$(echo "$d_secs / $s_secs" | bc -l)"
printf 'skipflow / parse floor speed: %.2f (1 = as fast as parsing alone)\n' "$(echo "$f_secs / $s_secs" | bc -l)"
echo "(cluster rows: every process on this machine's cores; the table shows overhead, not speedup)"
printf '\nmemory growth from half the file to all of it (peak RSS MB): 1 process x 1: %s -> %s; 3 processes x 1, mean per process: %.0f -> %.0f\n' \
  "$h1_rss" "$f1_rss" "$(mean $h3_rss)" "$(mean $c3_rss)"
printf 'a process of three grows by %.2f of what one process grows by (a third: 0.33)\n' \
  "$(echo "($(mean $c3_rss) - $(mean $h3_rss)) / ($f1_rss - $h1_rss)" | bc -l)"
