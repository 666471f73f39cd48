#!/usr/bin/env bash
# The recorder's two targets, measured in one run (crates/pagebuf/examples/recstall.rs):
#   * stalls: one SampleWriter recording 3 MiB video samples at 30 fps (or as fast as
#     the disk takes them) on one thread, a 4 KiB audio sample every 10 ms on another,
#     flush() every second on a third: the audio thread's allocate_sample +
#     write_sample at p50/p99/max (target: under 10 ms), and how long the flushes took;
#   * throughput: the recorder writing 3 MiB video samples as fast as it can against a
#     raw DirectWriter writing the same bytes in 3 MiB blocks (target: >= 0.9x).
# On the workspace's file system (not /tmp, which may be tmpfs).
#
#   scripts/bench-recorder.sh [SECONDS=10] [ROUNDS=3] [SIZE_MIB=1024] [DIR=target/bench-recorder]
#   (RECSTALL_BUDGET_MIB: the writer's memory budget, default 64 MiB; RECSTALL_RAW_BLOCK_KIB:
#   the raw writer's block size, default 3072, one frame a write as the recorder does)
#
# Every round runs the stall test and then both writers, in an order that alternates
# from round to round; the table at the end gives the medians over the rounds. The
# load average before the run is printed: other work on the disk or the CPUs shows up
# as stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-3}
size=${3:-1024}
dir=${4:-target/bench-recorder}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $(uname -r)"
cargo build --release -q -p pagebuf --example recstall
"${CARGO_TARGET_DIR:-target}/release/examples/recstall" "$dir" "$seconds" "$rounds" "$size"
rmdir "$dir" 2>/dev/null || true
