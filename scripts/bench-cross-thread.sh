#!/usr/bin/env bash
# The cross-thread pool benchmark (allocate on one thread, drop on the other), repeated:
# on this 2-vCPU VM one criterion run of `cross_thread_64k` moves by tens of percent
# between runs (ArrayQueue alone has measured 80 to 240 ns), so single runs cannot rank
# contenders within that. Every round runs each contender once (criterion: 0.5 s warm-up,
# 2 s of measurement), contenders alternate within the round, and the table gives each
# one's median over the rounds, plus pagebuf's ratio to it.
#
#   scripts/bench-cross-thread.sh [ROUNDS=9]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-9}
contenders=(pagebuf_FramePool crossbeam_ArrayQueue crossbeam_ArrayQueue_32B_items crossbeam_ArrayQueue_of_BufferMut sharded-slab_Pool lockfree_LinearObjectPool)
cargo bench -q -p pagebuf --bench pool --no-run 2>/dev/null

declare -A runs
for round in $(seq "$rounds"); do
  echo "round $round of $rounds..." >&2
  for c in "${contenders[@]}"; do
    # criterion prints "time:   [low estimate high]"; keep the estimate, in ns.
    ns=$(cargo bench -q -p pagebuf --bench pool -- --warm-up-time 0.5 --measurement-time 2 \
      "cross_thread_64k/$c\$" 2>/dev/null | awk '/time:/ {
        v = $4; u = $5
        if (u == "ps") v /= 1000; else if (u == "µs" || u == "us") v *= 1000; else if (u == "ms") v *= 1e6
        printf "%.1f", v }')
    runs[$c]="${runs[$c]:-} $ns"
  done
done

median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
pb=$(median "${runs[pagebuf_FramePool]}")
printf '%-28s %12s %18s\n' contender "median ns" "contender/pagebuf"
for c in "${contenders[@]}"; do
  m=$(median "${runs[$c]}")
  printf '%-28s %12s %17.2fx\n' "$c" "$m" "$(awk -v a="$m" -v b="$pb" 'BEGIN { print a / b }')"
done
echo "(median of $rounds rounds; above 1x pagebuf is faster)"
for c in "${contenders[@]}"; do echo "  $c:${runs[$c]}"; done
