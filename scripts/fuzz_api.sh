#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP API with schemathesis (pip install
# schemathesis): every operation of /openapi.json gets generated requests,
# valid and invalid, and no answer may be a 5xx. Runs against a local
# coordinator with one worker, both on 127.0.0.1.
#
#   scripts/fuzz_api.sh [MAX_EXAMPLES]      (default 50 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-50}"
bin="$(realpath -m "${LEGACYGPU_BIN:-target/debug/legacygpu}")"
[ -x "$bin" ] || cargo build -q -p cli
port_ws=$((20000 + RANDOM % 10000))
port_http=$((port_ws + 1))
log="$(mktemp -d)"
"$bin" cluster start --bind "127.0.0.1:$port_ws" --http "127.0.0.1:$port_http" --no-store \
    >"$log/coordinator.log" 2>&1 &
coordinator=$!
trap 'kill $coordinator $worker 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^ready' "$log/coordinator.log" && break; sleep 0.1; done
"$bin" worker start --coordinator "ws://127.0.0.1:$port_ws" --peer-id fuzz-worker --no-gpu \
    >"$log/worker.log" 2>&1 &
worker=$!
# Shutdown would end the run; the event stream is a WebSocket. Run from the
# log directory so that schemathesis keeps its cache out of the tree.
cd "$log"
schemathesis run "http://127.0.0.1:$port_http/openapi.json" \
    --checks not_a_server_error \
    --max-examples "$examples" \
    --exclude-path /cluster/shutdown \
    --exclude-path /ws/cluster/events \
    --request-timeout 10
kill -0 $coordinator  # the coordinator is still up
echo "no 5xx; the coordinator is still running"
