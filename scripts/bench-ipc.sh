#!/usr/bin/env bash
# The cross-process hand-over benchmark's peers (issue 16): 64-byte round trips and 3 MiB
# frame hand-overs between two real processes, through a Unix socket, a pipe and iceoryx2
# (polling, and sleeping on its events), and pagebuf's SharedPool hand-over. The benchmark is its own Cargo package,
# bench/ipc, outside the workspace: iceoryx2 needs libclang to build, and a fresh clone's
# `cargo test` must not.
#
# Every round runs each contender once per scenario; the contenders' order rotates from
# round to round so none always runs first (or last) on a shared machine. The tables give
# the median of the rounds and each round's range.
#
#   ROUNDS=5 RTT_COUNT=50000 FRAME_COUNT=500 scripts/bench-ipc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
rtt_count=${RTT_COUNT:-50000}
frame_count=${FRAME_COUNT:-500}
manifest=bench/ipc/Cargo.toml
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/ipc-bench}
bin=$CARGO_TARGET_DIR/release/pagebuf-bench-ipc

# iceoryx2's build runs bindgen, which needs libclang itself (libclang-cpp, which other
# packages bring, is not it).
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
  && ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
  echo "libclang not found: installing libclang-dev" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq libclang-dev
fi

# Without iceoryx2 if it does not build, so the other peers still run; the reason is
# printed with the tables.
iceoryx2_note=""
mkdir -p "$CARGO_TARGET_DIR"
if ! cargo build -q --release --manifest-path "$manifest" 2>"$CARGO_TARGET_DIR.build.log"; then
  iceoryx2_note="iceoryx2 did not build: $(grep -m1 -E '^error' "$CARGO_TARGET_DIR.build.log" || tail -n1 "$CARGO_TARGET_DIR.build.log")"
  echo "$iceoryx2_note; building without it" >&2
  cargo build -q --release --manifest-path "$manifest" --no-default-features
fi

contenders=(socket pipe iceoryx2 iceoryx2-event pagebuf)
results=$(mktemp)
skipped=$(mktemp)
trap 'rm -f "$results" "$skipped"' EXIT

for round in $(seq "$rounds"); do
  echo "round $round of $rounds..." >&2
  n=${#contenders[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${contenders[$(((i + round - 1) % n))]}
    for scenario in rtt64 frame3m; do
      count=$rtt_count
      [ "$scenario" = frame3m ] && count=$frame_count
      status=0
      out=$("$bin" run "$c" "$scenario" --count "$count" 2>"$results.err") || status=$?
      if [ "$status" -eq 3 ]; then
        # A contender that is not built: say so once, in the binary's own words.
        msg=$(cat "$results.err")
        grep -qxF "$msg" "$skipped" || echo "$msg" >>"$skipped"
      elif [ "$status" -ne 0 ]; then
        echo "$c $scenario failed (exit $status): $(cat "$results.err")" >&2
        echo "$c: $scenario failed: $(tail -n1 "$results.err")" >>"$skipped"
      else
        echo "$out" | grep '^result ' >>"$results"
      fi
    done
  done
done
rm -f "$results.err"

# median and range of field `key` over the rounds, for one contender and scenario
stat() {
  awk -v c="$1" -v s="$2" -v k="$3" -v what="$4" '
    $2 == c && $3 == s { for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) v[++n] = kv[2] + 0 } }
    END {
      if (n == 0) { print "-"; exit }
      for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      if (what == "range") printf "%g-%g", v[1], v[n]; else printf "%g", m
    }' "$results"
}

echo
echo "64-byte round trip, $rtt_count round trips a run (median of $rounds rounds):"
echo
echo "| contender | ns per round trip | range over rounds | p50 ns | p99 ns |"
echo "|---|---:|---:|---:|---:|"
for c in "${contenders[@]}"; do
  [ "$(stat "$c" rtt64 ns_per_rtt median)" = - ] && continue
  echo "| $c | $(stat "$c" rtt64 ns_per_rtt median) | $(stat "$c" rtt64 ns_per_rtt range) | $(stat "$c" rtt64 p50_ns median) | $(stat "$c" rtt64 p99_ns median) |"
done
echo
echo "3 MiB frame hand-over, $frame_count frames a run, at most 4 unacknowledged (median of $rounds rounds):"
echo
echo "| contender | µs per frame | range over rounds | frames/s | GB/s |"
echo "|---|---:|---:|---:|---:|"
for c in "${contenders[@]}"; do
  [ "$(stat "$c" frame3m us_per_frame median)" = - ] && continue
  echo "| $c | $(stat "$c" frame3m us_per_frame median) | $(stat "$c" frame3m us_per_frame range) | $(stat "$c" frame3m frames_per_s median) | $(stat "$c" frame3m gb_per_s median) |"
done
echo
echo "GB/s counts the frame's bytes handed over per second, whether copied (socket, pipe) or not (iceoryx2, pagebuf)."
echo "The producer writes 8 bytes and one byte per 4 KiB page of each frame, the consumer reads as much."
echo "iceoryx2 receivers busy-poll (128 spins, then a sched_yield per poll); iceoryx2-event receivers sleep on an"
echo "iceoryx2 event the sender notifies after each send; socket and pipe block in the kernel; pagebuf receivers look 256 times, then sleep on a futex."
echo "Pipes are grown to /proc/sys/fs/pipe-max-size; the socket keeps its default buffers."
[ -n "$iceoryx2_note" ] && echo "$iceoryx2_note"
if [ -s "$skipped" ]; then
  echo "Not measured:"
  sed 's/^/  /' "$skipped"
fi
