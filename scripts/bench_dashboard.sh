#!/usr/bin/env bash
# The dashboard's task list with 100 000 tasks in the store: fills a store,
# starts a coordinator on it (loopback, protected mode), and times pages with
# curl (median and worst of 20 requests each, after one warm-up).
#   scripts/bench_dashboard.sh [path/to/legacygpu] [tasks]
# FILL_STORE=path/to/fill_store uses a built example instead of building it
# in release (e.g. target/debug/examples/fill_store with a debug binary).
set -euo pipefail
bin=${1:-target/release/legacygpu}
n=${2:-100000}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
if [ -n "${FILL_STORE:-}" ]; then
    "$FILL_STORE" "$dir/data" "$n"
else
    cargo run -q --release -p store --example fill_store -- "$dir/data" "$n"
fi
"$bin" cluster start --bind 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$dir/data" \
    --result-ttl 86400 >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 600); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.1; done
http=$(grep -E '^\s+http:' "$dir/out" | awk '{print $2}')
time_page() {
    curl -s -o /dev/null "$http$1"
    for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "$http$1"; done |
        sort -n | awk -v p="$1" '{t[NR]=$1} END {printf "%-45s median %6.1f ms  worst %6.1f ms\n", p, t[10]*1000, t[NR]*1000}'
}
time_page "/tasks"
time_page "/tasks?status=failed&task_type=echo"
time_page "/tasks?worker_id=w3"
time_page "/tasks?owner=gamer:g3"
time_page "/tasks?to=$(($(date +%s%3N) - 50000))"
time_page "/tasks?before=t-50000"
time_page "/"
time_page "/cluster/tasks?limit=100"
