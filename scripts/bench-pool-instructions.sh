#!/usr/bin/env bash
# The deterministic pool benchmark (issue 15): instructions per operation under
# callgrind, and plain-loop wall clock, for pagebuf's FramePool and every peer, from
# crates/pagebuf/examples/poolloop.rs (one operation: take a 64 KiB buffer, write one
# byte, give it back; pools of 16 where a pool size applies).
#
#   scripts/bench-pool-instructions.sh
#
# Instructions per operation: callgrind counts the instructions of a run of N operations
# at N = N1 and N = N2; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one operation,
# without start-up, pool creation and exit. It does not swing with the machine.
#
# Scenarios: `roundtrip` (one thread) and `cross` (take and write on thread A, hand over
# through a bounded ArrayQueue of 8 slots to thread B, which gives back). Valgrind runs
# one thread at a time, so under callgrind `cross` is serialized: the count is the
# instructions of both threads per buffer, with none of the cache-line traffic that
# dominates its wall clock. It runs with --fair-sched=yes (threads take turns in order)
# and POOLLOOP_SPIN=0 (a waiting end yields at once instead of spinning on a thread that
# cannot run), so the handoff costs few, repeatable instructions; the `baseline` row (a
# usize through the same loop and queue, no buffer) is that share, to subtract.
#
# The thread switches under callgrind still depend on real time (which thread takes the
# lock after a yield), so a `cross` count moves from run to run (`roundtrip` is exact):
# most contenders by a few percent, pagebuf's by more (250 to 440 instructions a buffer
# over nine run pairs on 2026-12-02; callgrind_annotate shows its own functions exact to
# the instruction and the difference in the handoff queue's push and pop, i.e. in how the
# two threads interleaved). So `cross` is run CG_RUNS times (3) at each N and the table
# gives the median of the per-pair differences, with every difference listed below it;
# raise CG_RUNS where two contenders are close.
#
# Wall clock: the median of plain-loop runs (--wall), 5 of N = 10,000,000 (roundtrip)
# and 9 of 2,000,000 (cross), the loop alone timed with Instant, in rounds that
# interleave the contenders; in cross each end bound to its own CPU, and pagebuf's time
# over each contender's within a round listed too (a round shares the host's mood).
# `arrayqueue32` is a diagnostic, not a peer: arrayqueue with a handle of BufferMut's 32
# bytes. `vec` and `alloc` in cross take microseconds a buffer (glibc frees on another
# thread), about 10 s a run: the whole script takes about 6 minutes on the 2-vCPU VM.
#
# Environment: N1, N2 (callgrind run lengths, default 100000 and 200000), CG_RUNS
# (callgrind runs of `cross` at each N, default 3), RUNS and CROSS_RUNS (wall rounds,
# default 5 and 9), WALL_RT, WALL_CROSS (wall N), CONTENDERS (default: all ten,
# space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

n1=${N1:-100000}
n2=${N2:-200000}
runs=${RUNS:-5}
cross_runs=${CROSS_RUNS:-9}
wall_rt=${WALL_RT:-10000000}
wall_cross=${WALL_CROSS:-2000000}
cg_runs=${CG_RUNS:-3}
read -r -a contenders <<<"${CONTENDERS:-pagebuf arrayqueue linear spinlock objectpool sharded vec alloc baseline arrayqueue32}"
scenarios=(roundtrip cross)

if ! command -v valgrind >/dev/null; then
  echo "valgrind is missing: installing it with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq valgrind >&2
fi

# Release profile (the workspace's has debug = 1, so callgrind can name functions).
cargo build -q --release -p pagebuf --example poolloop
bin="${CARGO_TARGET_DIR:-target}/release/examples/poolloop"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Total instructions (Ir) of one callgrind run: the `summary:` line of the out file
# (`totals:` when a dump has no summary).
ir() {
  local c=$1 s=$2 n=$3 f="$out/$1.$2.$3.cg"
  local env=()
  [ "$s" = cross ] && env=(env POOLLOOP_SPIN=0)
  "${env[@]}" valgrind -q --tool=callgrind --fair-sched=yes --callgrind-out-file="$f" \
    "$bin" "$c" "$s" "$n" >/dev/null 2>"$out/vg.err" || { cat "$out/vg.err" >&2; return 1; }
  awk '/^summary:/ { print $2; found = 1; exit } /^totals:/ { t = $2 }
    END { if (!found) print t }' "$f"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A ipo ipo_runs wall note
for s in "${scenarios[@]}"; do
  k=1
  [ "$s" = cross ] && k=$cg_runs
  for c in "${contenders[@]}"; do
    echo "callgrind: $c $s, $k x (N = $n1, N = $n2)..." >&2
    diffs=()
    for _ in $(seq "$k"); do
      a=$(ir "$c" "$s" "$n1")
      b=$(ir "$c" "$s" "$n2")
      diffs+=("$(awk -v a="$a" -v b="$b" -v d="$((n2 - n1))" 'BEGIN { printf "%.1f", (b - a) / d }')")
    done
    ipo[$c.$s]=$(median "${diffs[@]}")
    ipo_runs[$c.$s]="${diffs[*]}"
  done
done

# Rounds interleave the contenders, so a slow spell of the host hits them all; in
# `cross` each end is bound to a CPU of its own (POOLLOOP_PIN).
declare -A runs_of
for s in "${scenarios[@]}"; do
  n=$wall_rt
  pin=()
  rounds=$runs
  [ "$s" = cross ] && n=$wall_cross && pin=(env POOLLOOP_PIN=1) && rounds=$cross_runs
  for r in $(seq "$rounds"); do
    echo "wall: $s, round $r of $rounds, N = $n..." >&2
    for c in "${contenders[@]}"; do
      # "C S: N ops in T s, X ns/op": keep X.
      runs_of[$c.$s]+=" $("${pin[@]}" "$bin" "$c" "$s" "$n" --wall | awk '{ print $(NF - 1) }')"
    done
  done
  for c in "${contenders[@]}"; do
    read -r -a vals <<< "${runs_of[$c.$s]}"
    wall[$c.$s]=$(median "${vals[@]}")
    note[$c.$s]="median of $rounds interleaved rounds, N = $n: ${vals[*]}"
  done
done

echo
echo "Instructions per operation: callgrind, (Ir(N=$n2) - Ir(N=$n1)) / $((n2 - n1)); cross: median of $cg_runs run pairs."
echo "Wall: plain loop, median of $runs runs of N = $wall_rt (roundtrip) and $cross_runs of $wall_cross (cross), ns per operation."
echo
echo "| contender | scenario | instructions/op | wall ns/op |"
echo "| --- | --- | --- | --- |"
for s in "${scenarios[@]}"; do
  for c in "${contenders[@]}"; do
    echo "| $c | $s | ${ipo[$c.$s]} | ${wall[$c.$s]} |"
  done
done
echo
# A slow spell of the host, or the two vCPUs landing on one core's two threads (then
# cross runs at a fraction of its usual time: about 18 ns for arrayqueue, 26 for pagebuf
# on 2026-12-03), moves a whole round: the ratio within each round is steadier than
# either median.
echo "Cross, pagebuf's time over each contender's in the same round (below 1: pagebuf faster):"
read -r -a mine <<< "${runs_of[pagebuf.cross]:-}"
for c in "${contenders[@]}"; do
  [ "$c" = pagebuf ] || [ "${#mine[@]}" -eq 0 ] && continue
  read -r -a theirs <<< "${runs_of[$c.cross]}"
  ratios=()
  for i in "${!mine[@]}"; do
    ratios+=("$(awk -v a="${mine[$i]}" -v b="${theirs[$i]}" 'BEGIN { printf "%.2f", a / b }')")
  done
  echo "  pagebuf / $c: median $(median "${ratios[@]}"), rounds ${ratios[*]}"
done
echo
echo "Callgrind runs (instructions/op of each run pair):"
for s in "${scenarios[@]}"; do
  for c in "${contenders[@]}"; do echo "  $c $s: ${ipo_runs[$c.$s]}"; done
done
echo "Wall runs (ns/op):"
for s in "${scenarios[@]}"; do
  for c in "${contenders[@]}"; do echo "  $c $s: ${note[$c.$s]}"; done
done
