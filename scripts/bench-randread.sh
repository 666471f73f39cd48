#!/usr/bin/env bash
# Random 4 KiB direct reads from one thread, side by side in one run: pagebuf's IoRing
# (`pagebuf randread`: io_uring with cooperative posting, its default, and with
# interrupts, and the thread engine) against fio at the same queue
# depth: io_uring plain and with --fixedbufs --registerfiles, libaio, and psync at
# depth 1. Each figure is IOPS with CPU seconds (user + system) per GiB read beside it.
#
#   scripts/bench-randread.sh [SECONDS=5] [ROUNDS=3] [DEPTHS="1 32 128"] [DIR=target/bench-randread] [SIZE_MIB=1024]
#
# This VM's disk drifts between runs: every tool runs once per round, rounds alternate,
# and the table shows medians, the ratio of medians to the best fio's, and the median over
# rounds of each round's ratio to that round's best fio.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-3}
depths=${3:-"1 32 128"}
dir=${4:-target/bench-randread}
size_mib=${5:-1024}
mkdir -p "$dir"
file="$dir/random.bin"

if ! command -v fio >/dev/null; then
  echo "installing fio (apt-get)..." >&2
  (apt-get update -qq && apt-get install -y -qq fio) >/dev/null
fi
cargo build -q --release -p pagebuf-cli
pagebuf=target/release/pagebuf

if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" -ne $((size_mib << 20)) ]; then
  # Real blocks (not a sparse file): random reads of holes never reach the disk.
  dd if=/dev/urandom of="$file" bs=4M count=$((size_mib / 4)) oflag=direct status=none
fi

results="$dir/results.txt"
: > "$results"

# One line per run: TOOL DEPTH IOPS CPU_PER_GIB
pb() { # engine depth [extra...]
  local engine=$1 depth=$2; shift 2
  "$pagebuf" randread "$file" --depth "$depth" --seconds "$seconds" --engine "$engine" --json "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["iops"], r["cpu_seconds_per_gib"])'
}
fio_run() { # engine depth [extra...]
  local engine=$1 depth=$2; shift 2
  fio --name=rr --filename="$file" --rw=randread --bs=4k --direct=1 --norandommap \
      --randrepeat=0 --ioengine="$engine" --iodepth="$depth" --runtime="$seconds" \
      --time_based --size="${size_mib}M" --output-format=json "$@" 2>/dev/null |
    python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
secs = j["read"]["runtime"] / 1000
cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100 * secs
gib = j["read"]["io_bytes"] / 2**30
print(j["read"]["iops"], cpu / gib)'
}

# The tools of a round run forward in odd rounds and backward in even ones, so a disk
# drifting steadily through a round favours neither end of the list over two rounds.
tools_at() { # depth
  echo pagebuf-uring fio-io_uring pagebuf-threads fio-io_uring-fixed fio-libaio
  # At depth 1 pagebuf reads with pread: nothing is posted.
  if [ "$1" = 1 ]; then echo fio-psync; else echo pagebuf-uring-interrupt; fi
}
run_tool() { # tool depth
  case $1 in
    pagebuf-uring) pb uring "$2" ;;
    pagebuf-uring-interrupt) pb uring "$2" --posting interrupt ;;
    pagebuf-threads) pb threads "$2" ;;
    fio-io_uring) fio_run io_uring "$2" ;;
    fio-io_uring-fixed) fio_run io_uring "$2" --fixedbufs --registerfiles ;;
    fio-libaio) fio_run libaio "$2" ;;
    fio-psync) fio_run psync 1 ;;
  esac
}
for round in $(seq 1 "$rounds"); do
  for depth in $depths; do
    echo "round $round, depth $depth" >&2
    tools=$(tools_at "$depth")
    if [ $((round % 2)) = 0 ]; then tools=$(echo $tools | tr ' ' '\n' | tac); fi
    for tool in $tools; do
      echo "$tool $depth $(run_tool "$tool" "$depth")" >> "$results"
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    tool, depth, iops, cpu = line.split()
    rows.setdefault((int(depth), tool), []).append((float(iops), float(cpu)))
print("| depth | tool | IOPS (median) | CPU s per GiB | vs best fio | per-round ratio |")
print("|---|---|---|---|---|---|")
for depth in sorted({d for d, _ in rows}):
    tools = {t: v for (d, t), v in rows.items() if d == depth}
    med = {t: (statistics.median(i for i, _ in v), statistics.median(c for _, c in v))
           for t, v in tools.items()}
    best = max(v[0] for t, v in med.items() if t.startswith("fio"))
    rounds = min(len(v) for v in tools.values())
    # Each round against that round's best fio: the disk drifts between rounds, so the
    # ratio of medians can pair a slow round of one tool with a fast one of another.
    best_of_round = [max(v[r][0] for t, v in tools.items() if t.startswith("fio"))
                     for r in range(rounds)]
    for tool in sorted(med, key=lambda t: -med[t][0]):
        iops, cpu = med[tool]
        paired = statistics.median(tools[tool][r][0] / best_of_round[r] for r in range(rounds))
        print(f"| {depth} | {tool} | {iops:,.0f} | {cpu:.2f} | {iops / best:.3f}x | {paired:.3f}x |")
PY
