#!/usr/bin/env bash
# User-space instructions per commit of `pagebuf log bench` (one thread, RECORD-byte
# records): callgrind's total for a SHORT-second run and a LONG-second run, the
# difference over the difference of their commits (start-up and the ring's set-up
# cancel out). Deterministic where the wall-clock figures of scripts/bench-log.sh are
# not; `--fair-sched=yes` because without it callgrind has hung with the ring's reaper
# thread in io_uring_enter (BENCHMARKS.md, issue 14, session 11).
#
#   scripts/bench-log-instructions.sh [SHORT=2] [LONG=5]
#   (environment: RECORD=128, DIR=target/bench-log; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
short=${1:-2}
long=${2:-5}
record=${RECORD:-128}
dir=${DIR:-target/bench-log}
target=${CARGO_TARGET_DIR:-target}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build -q --release -p pagebuf-cli
mkdir -p "$dir"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for s in "$short" "$long"; do
  json=$(timeout 600 valgrind --tool=callgrind --fair-sched=yes \
           --callgrind-out-file="$out/cg.$s" "$target/release/pagebuf" log bench \
           --dir "$dir" --threads 1 --seconds "$s" --record "$record" --json 2>/dev/null)
  commits=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["commits"])' "$json")
  total=$(callgrind_annotate "$out/cg.$s" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
  echo "$s s: $commits commits, $total instructions"
  echo "$commits $total" >> "$out/runs"
done
awk 'NR == 1 {c = $1; i = $2} NR == 2 {printf "instructions per commit: %.0f\n", ($2 - i) / ($1 - c)}' "$out/runs"
