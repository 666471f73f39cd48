#!/usr/bin/env bash
# Recording and playback throughput against the raw sequential writer and reader, in
# one run, on the workspace's file system (not /tmp, which may be tmpfs).
#   scripts/bench-stream.sh [SIZE_MIB] [ROUNDS]     (default 1024 MiB, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
rounds=${2:-5}
cargo build --release -q -p pagebuf --example streamio
./target/release/examples/streamio target/bench-stream "$size" "$rounds"
rmdir target/bench-stream 2>/dev/null || true
