#!/usr/bin/env bash
# Fuzzes every decoder an outsider reaches (the WebSocket messages, peer
# capabilities, what clients read from a coordinator, the HTTP API's JSON
# bodies and query strings) for a bounded time: SECONDS per target (default
# 60). The normal test suite runs the same fuzzers for 1 s per target.
# A panic prints the seed and the input, saved under target/fuzz-failures/.
set -euo pipefail
cd "$(dirname "$0")/.."
export LEGACYGPU_FUZZ_SECS="${1:-60}"
cargo test -p proto --test fuzz -- --nocapture
cargo test -p coordinator --lib fuzzed -- --nocapture
