#!/usr/bin/env bash
# The Python client beside the Rust load generator, against one coordinator
# (release build, store on, sync=full) on 127.0.0.1 with one echo worker.
#
#   cargo build --release -p cli && bash clients/python/benchmarks/run.sh
#
# Bounded: each run stops at --tasks or --duration, whichever comes first.
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${LEGACYGPU_BIN:-target/release/legacygpu}
ws_port=${PORT:-18765}
http_port=$((ws_port + 1))
data=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$data"; }
trap cleanup EXIT

"$bin" cluster start --bind "127.0.0.1:$ws_port" --http "127.0.0.1:$http_port" --data-dir "$data" --sync full >"$data/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$data/coordinator.log" && break; sleep 0.1; done
"$bin" worker start --coordinator "ws://127.0.0.1:$ws_port" --peer-id bench-worker --slots 256 --task-types echo --no-gpu >"$data/worker.log" 2>&1 &
pids+=($!)
sleep 1

url="ws://127.0.0.1:$ws_port"
export PYTHONPATH=clients/python/src
echo "== Python client (echo tasks on one legacygpu worker)"
python3 clients/python/benchmarks/bench_client.py --coordinator "$url" --mode sync --tasks 5000 --duration 10
for n in 16 256; do
    python3 clients/python/benchmarks/bench_client.py --coordinator "$url" --mode pipelined --in-flight "$n" --tasks 50000 --duration 10
done
python3 clients/python/benchmarks/bench_client.py --coordinator "$url" --mode submit_many --in-flight 256 --tasks 20000
echo "== Rust: legacygpu bench (its own no-op peer and raw-JSON gamer) against the same coordinator"
for n in 1 16 256; do
    "$bin" bench --coordinator "$url" --peers 1 --slots 256 --gamers 1 --in-flight "$n" --tasks 50000 --duration 10 | grep -E 'in flight|completed|latency'
done
