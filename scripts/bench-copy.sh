#!/usr/bin/env bash
# Copying one large file, side by side in one run: `pagebuf copy SRC DST` (the library's
# copy_file: direct I/O, reads and writes overlapping) against
#   fscopy  std::fs::copy + sync_all (examples/fscopy.rs; on Linux copy_file_range, which
#           on ext4, having no reflinks, the kernel carries out through the page cache),
#   cp      `cp SRC DST && sync DST` (coreutils 9 also uses copy_file_range; `sync DST`
#           fsyncs the copy alone, so the writeback of whatever else is dirty on the
#           machine, a build say, is not in cp's time),
#   dd      `dd bs=1M iflag=direct oflag=direct conv=fsync`.
# Every one has the copy on disk when it returns.
#
#   scripts/bench-copy.sh [SIZE_MIB=1024] [ROUNDS=3] [DIR=target/bench-copy]
#
# Two temperatures. Cold: page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches)
# before each tool, the case a large copy meets; needs root, skipped (and said so)
# otherwise. Warm: the source read into the page cache (cat > /dev/null) before each
# tool; pagebuf and dd read around the cache with O_DIRECT, so it helps only fscopy and
# cp. The source is random data in real blocks (dd from /dev/urandom), made once; every
# copy goes to a new file (the old one removed and the removal synced before the clock
# starts). Round 1 compares each copy with the source (cmp, outside the clock).
#
# MiB/s is the file size over the wall time around the command. CPU seconds per GiB is
# user + system time from getrusage of the whole process tree (os.wait4 on the command,
# as GNU time, with microseconds), the same for every tool, start-up included (a few
# milliseconds for each of these). The kernel's work done in other threads (interrupts,
# writeback workers) is in nobody's figure.
#
# This VM's disk drifts by tens of percent from one run to the next, so every tool runs
# once per round and temperature, the order rotating from round to round, and the table
# shows medians. Files in DIR, removed at the end (DIR too, if then empty).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
rounds=${2:-3}
dir=${3:-target/bench-copy}
mkdir -p "$dir"
load_before=$(cut -d" " -f1-3 /proc/loadavg)
src="$dir/src.bin"
dst="$dir/dst.bin"
usage="$dir/rusage.txt"    # WALL USER SYS of the last timed command
results="$dir/results.txt" # TEMP TOOL ROUND MIB_PER_S CPU_S_PER_GIB
pbjson="$dir/pagebuf.json" # pagebuf's own report of its last copy
bytes=$((size_mib * 1048576))
: > "$results"

for tool in dd cp sync cmp python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing coreutils, diffutils, python3 (apt-get)..." >&2
    (apt-get update -qq && apt-get install -y -qq coreutils diffutils python3) >/dev/null
    break
  fi
done
# One build at a time.
cargo build -q --release -p pagebuf-cli
cargo build -q --release -p pagebuf --example fscopy
pagebuf=target/release/pagebuf
fscopy=target/release/examples/fscopy

temps="cold warm"
if [ "$(id -u)" != 0 ] || ! [ -w /proc/sys/vm/drop_caches ]; then
  echo "not root (or /proc/sys/vm/drop_caches not writable): the cold runs are skipped" >&2
  temps="warm"
fi

if [ ! -f "$src" ] || [ "$(stat -c %s "$src")" -ne "$bytes" ]; then
  echo "making a ${size_mib} MiB random source file..." >&2
  dd if=/dev/urandom of="$src" bs=1M count="$size_mib" iflag=fullblock conv=fsync status=none
fi

timed() { python3 scripts/lib/timed.py "$usage" "$@"; }

run_pagebuf() { timed "$pagebuf" copy "$src" "$dst" --json > "$pbjson"; }
run_fscopy() { timed "$fscopy" "$src" "$dst" >/dev/null; }
run_cp() { timed sh -c 'cp "$1" "$2" && sync "$2"' sh "$src" "$dst"; }
run_dd() { timed dd if="$src" of="$dst" bs=1M iflag=direct oflag=direct conv=fsync status=none; }

tools=(pagebuf fscopy cp dd)
for round in $(seq "$rounds"); do
  for temp in $temps; do
    echo "round $round of $rounds, $temp..." >&2
    for i in 0 1 2 3; do
      tool=${tools[$(((i + round - 1) % 4))]}
      rm -f "$dst"
      sync
      if [ "$temp" = cold ]; then
        echo 3 > /proc/sys/vm/drop_caches
      else
        cat "$src" > /dev/null
      fi
      "run_$tool"
      if [ "$(stat -c %s "$dst")" -ne "$bytes" ]; then
        echo "$tool: the copy has $(stat -c %s "$dst") bytes, not $bytes" >&2
        exit 1
      fi
      [ "$round" = 1 ] && ! cmp -s "$src" "$dst" && { echo "$tool: the copy differs from the source" >&2; exit 1; }
      awk -v t="$temp" -v tool="$tool" -v r="$round" -v b="$bytes" \
        '{ printf "%s %s %s %.0f %.4f\n", t, tool, r, b / $1 / 1048576, ($2 + $3) / (b / 1073741824) }' \
        "$usage" >> "$results"
    done
  done
done
pb_setup=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("%d KiB blocks, depth %d, direct I/O source %s destination %s" % (r["block_size"] >> 10,
      r["depth"], r["direct"]["source"], r["direct"]["destination"]))' "$pbjson")
rm -f "$src" "$dst" "$usage" "$pbjson"

python3 - "$results" "$size_mib" "$rounds" "$dir" "$pb_setup" <<'PY'
import statistics, sys
results, size_mib, rounds, where, pb_setup = sys.argv[1:]
tools = ["pagebuf", "fscopy", "cp", "dd"]
heads = ["pagebuf copy", "fs::copy+fsync", "cp+sync", "dd direct"]
peers = tools[1:]
runs = {}
for line in open(results):
    temp, tool, rnd, rate, cpu = line.split()
    runs.setdefault((temp, tool), {})[int(rnd)] = (float(rate), float(cpu))
print(f"{'temp':<5} " + " ".join(f"{h:>15}" for h in heads) + f" {'best-ratio':>16} {'round-ratio':>11}")
print(f"{'':<5} " + " ".join(f"{'MiB/s cpu':>15}" for _ in heads))
for temp in ["cold", "warm"]:
    if (temp, "pagebuf") not in runs:
        print(f"{temp:<5} (skipped: not root)")
        continue
    med = {t: (statistics.median(r for r, _ in runs[(temp, t)].values()),
               statistics.median(c for _, c in runs[(temp, t)].values())) for t in tools}
    best = max(peers, key=lambda t: med[t][0])
    per_round = [runs[(temp, "pagebuf")][r][0] / max(runs[(temp, t)][r][0] for t in peers)
                 for r in runs[(temp, "pagebuf")]]
    print(f"{temp:<5} " + " ".join(f"{med[t][0]:>9.0f} {med[t][1]:>5.2f}" for t in tools)
          + f" {med['pagebuf'][0] / med[best][0]:>8.3f}x ({best:<6}) {statistics.median(per_round):>10.3f}x")
print(f"(MiB/s and CPU s per GiB (user + system), medians of {rounds} rounds, {size_mib} MiB file in {where}; "
      f"pagebuf copy: {pb_setup}; best-ratio = pagebuf's median / the best peer's median; "
      f"round-ratio = median over rounds of pagebuf / that round's best peer)")
for key in sorted(runs):
    v = runs[key]
    print(f"  {' '.join(key)}: " + " ".join(f"{v[r][0]:.0f}/{v[r][1]:.2f}" for r in sorted(v)))
PY
echo "load average (1, 5, 15 min) at start: $load_before, at end: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the machine slows every tool)"
rm -f "$results"
rmdir "$dir" 2>/dev/null || true
