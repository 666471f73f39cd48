#!/usr/bin/env bash
# Sequential direct I/O, side by side in one run: pagebuf's DirectWriter/DirectReader
# against fio (psync; libaio at iodepth 8; io_uring at iodepth 8, plain and with
# --fixedbufs --registerfiles) and dd with oflag/iflag=direct, plus a buffered std::fs
# write + fsync for contrast. Same file system, same file size.
#
#   scripts/bench-io.sh [SIZE_MIB=1024] [ROUNDS=5] [DIR=target/bench-io] [DEPTH=8] [READ_DEPTH=4]
#
# pagebuf writes twice: through io::Write (seqio write: one copy of every byte into the
# writer's blocks) and through DirectWriter::write_buffer (seqio write-blocks: one of the
# writer's own blocks filled once and handed over again and again, no copy, which is
# what fio and dd do with their buffers).
#
# DEPTH is how many blocks pagebuf's writer keeps in flight: 8 by default, as many
# transfers as fio's libaio and io_uring runs. READ_DEPTH is the reader's: 4 blocks by
# default, each read as pieces of the device's largest request (1016 KiB here) issued
# together on io_uring. On worker threads depth 1 read fastest here (issue 4's sweep); on
# io_uring depth 4 does (1 MiB: 804-842 MiB/s at depth 1, 1106-1595 at depth 4;
# BENCHMARKS.md, issue 13).
#
# Throughput (MiB/s) is as before: pagebuf's from seqio's own clock, fio's the bandwidth
# it reports, dd's the wall time around it.
#
# CPU seconds per GiB, beside every figure, measured the same way for every tool: user +
# system time from getrusage of the whole process tree (os.wait4 on the command, which
# is what GNU time reads, but with microseconds: `/usr/bin/time` prints hundredths, too
# coarse for a 256 MiB run), less that tool's fixed start-up cost, divided by the GiB
# moved. The start-up cost is the least of 3 runs of the same command moving one block,
# measured before the rounds (the least: noise only adds). It matters for fio alone: fio
# calibrates its clock at start (about 0.15 s of CPU whatever the size); seqio's and
# dd's are a few milliseconds. The footer prints every tool's. The kernel's work done in
# other threads (interrupts, writeback workers) is in nobody's figure.
#
# This VM's disk drifts by tens of percent from one run to the next, so every tool runs
# once per round, rounds alternate, and the table shows each tool's median. Every write
# starts from a new file (a recorder's case): overwriting the blocks of an earlier run
# skips block allocation and is not what any of them would do in use.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
rounds=${2:-5}
dir=${3:-target/bench-io}
depth=${4:-8}
read_depth=${5:-4}
mkdir -p "$dir"
load_before=$(cut -d" " -f1-3 /proc/loadavg)
file="$dir/seq.bin"
bytes=$((size_mib * 1024 * 1024))
usage="$dir/rusage.txt"     # WALL USER SYS of the last timed command
results="$dir/results.txt"  # OP BS TOOL ROUND MIB_PER_S CPU_SECONDS (raw)
baselines="$dir/startup.txt" # OP BS TOOL CPU_SECONDS for one block
: > "$results"
: > "$baselines"

if ! command -v fio >/dev/null; then
  echo "installing fio (apt-get)..." >&2
  (apt-get update -qq && apt-get install -y -qq fio) >/dev/null
fi
cargo build -q --release -p pagebuf --example seqio
seqio=target/release/examples/seqio

# timed CMD...: runs CMD (its stdout passes through), writes "WALL USER SYS" to $usage.
timed() { python3 scripts/lib/timed.py "$usage" "$@"; }
cpu_of_last() { awk '{ printf "%.6f", $2 + $3 }' "$usage"; }
wall_of_last() { awk '{ print $1 }' "$usage"; }

mibs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

fresh() { [ "$1" = write ] && rm -f "$file"; true; }

# Each runner: OP BS_MIB SIZE_BYTES -> prints MiB/s; the CPU is left in $usage.
run_pagebuf() {
  local bs=$(($2 * 1048576))
  fresh "$1"
  if [ "$1" = write ]; then timed "$seqio" write "$file" "$3" "$bs" "$depth"
  else timed "$seqio" read "$file" "$3" "$bs" "$read_depth"; fi | awk '{ print $4 }'
}
run_blocks() { # writes only: one of the writer's blocks filled once, handed over again and again
  fresh write
  timed "$seqio" write-blocks "$file" "$3" $(($2 * 1048576)) "$depth" | awk '{ print $4 }'
}
run_buffered() {
  fresh write
  timed "$seqio" buffered "$file" "$3" $(($2 * 1048576)) | awk '{ print $4 }'
}
fio_run() { # op bs_mib size_bytes engine depth [extra fio options...]
  local op=$1 bs=$2 size=$3 engine=$4 iodepth=$5 out
  shift 5
  fresh "$op"
  out=$(timed fio --name=seq --filename="$file" --size="$size" --rw="$op" --bs="${bs}M" \
    --direct=1 --ioengine="$engine" --iodepth="$iodepth" --end_fsync=1 "$@" \
    --output-format=terse --terse-version=3 2>/dev/null)
  # terse v3: field 7 = read bandwidth KiB/s, field 48 = write bandwidth KiB/s
  if [ "$op" = read ]; then echo "$out" | awk -F';' '{ printf "%.0f", $7 / 1024 }'
  else echo "$out" | awk -F';' '{ printf "%.0f", $48 / 1024 }'; fi
}
run_psync() { fio_run "$1" "$2" "$3" psync 1; }
run_aio8() { fio_run "$1" "$2" "$3" libaio 8; }
run_uring8() { fio_run "$1" "$2" "$3" io_uring 8; }
run_uring8fixed() { fio_run "$1" "$2" "$3" io_uring 8 --fixedbufs --registerfiles; }
run_dd() {
  local count=$(($3 / ($2 * 1048576)))
  fresh "$1"
  if [ "$1" = write ]; then
    timed dd if=/dev/zero of="$file" bs="$2M" count="$count" oflag=direct conv=fsync status=none
  else
    timed dd if="$file" of=/dev/null bs="$2M" count="$count" iflag=direct status=none
  fi
  mibs "$3" "$(wall_of_last)"
}

tools_for() { # op -> the tools measured for it, in the order they run
  if [ "$1" = write ]; then echo pagebuf blocks buffered psync aio8 uring8 uring8fixed dd
  else echo pagebuf psync aio8 uring8 uring8fixed dd; fi
}

# Each tool's fixed start-up cost: the same command moving one block, 3 times. The
# writes leave a file of one block, which the reads then read.
echo "start-up cost of each tool (one block, 3 runs)..." >&2
for bs_mib in 1 4; do
  for op in write read; do
    for tool in $(tools_for "$op"); do
      for _ in 1 2 3; do
        "run_$tool" "$op" "$bs_mib" $((bs_mib * 1048576)) >/dev/null
        echo "$op ${bs_mib}M $tool $(cpu_of_last)" >> "$baselines"
      done
    done
  done
done

for round in $(seq "$rounds"); do
  echo "round $round of $rounds..." >&2
  for bs_mib in 1 4; do
    for op in write read; do
      [ "$op" = read ] && $seqio write "$file" "$bytes" $((bs_mib * 1048576)) "$depth" >/dev/null
      for tool in $(tools_for "$op"); do
        rate=$("run_$tool" "$op" "$bs_mib" "$bytes")
        echo "$op ${bs_mib}M $tool $round $rate $(cpu_of_last)" >> "$results"
      done
    done
  done
done
rm -f "$file" "$usage"

python3 - "$results" "$baselines" "$size_mib" "$rounds" "$depth" "$read_depth" "$dir" <<'PY'
import statistics, sys
results, baselines, size_mib, rounds, depth, read_depth, where = sys.argv[1:]
gib = int(size_mib) / 1024
tools = ["pagebuf", "blocks", "psync", "aio8", "uring8", "uring8fixed", "dd", "buffered"]
heads = ["pagebuf", "pb-blocks", "fio-psync", "fio-aio8", "fio-uring8", "fio-uring8fx", "dd", "buffered"]
peers = ["psync", "aio8", "uring8", "uring8fixed", "dd"]
startup = {}
for line in open(baselines):
    op, bs, tool, cpu = line.split()
    startup.setdefault((op, bs, tool), []).append(float(cpu))
startup = {k: min(v) for k, v in startup.items()}
runs = {}
for line in open(results):
    op, bs, tool, rnd, rate, cpu = line.split()
    runs.setdefault((op, bs, tool), {})[int(rnd)] = (float(rate), (float(cpu) - startup[(op, bs, tool)]) / gib)

print(f"{'op':<6} {'bs':<3} " + " ".join(f"{h:>13}" for h in heads) + f" {'best-ratio':>10} {'round-ratio':>11}")
print(f"{'':<6} {'':<3} " + " ".join(f"{'MiB/s cpu':>13}" for _ in heads))
for bs in ["1M", "4M"]:
    for op in ["write", "read"]:
        med = {}
        for t in tools:
            if (op, bs, t) in runs:
                v = runs[(op, bs, t)].values()
                med[t] = (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
        cells = [f"{med[t][0]:>7.0f} {med[t][1]:>5.2f}" if t in med else f"{'-':>13}" for t in tools]
        best = max(med[t][0] for t in peers)
        ratios = []
        for mine in ["pagebuf", "blocks"]:
            if mine not in med:
                continue
            # per round: against the best peer of that round, then the median
            per_round = [runs[(op, bs, mine)][r][0] / max(runs[(op, bs, t)][r][0] for t in peers)
                         for r in runs[(op, bs, mine)]]
            ratios.append(f"{med[mine][0] / best:>9.3f}x {statistics.median(per_round):>10.3f}x")
        print(f"{op:<6} {bs:<3} " + " ".join(cells) + " " + " | ".join(ratios))
print(f"(MiB/s and CPU s per GiB (user + system, less start-up), medians of {rounds} rounds; pagebuf "
      f"writing at depth {depth} through io::Write (one copy) and pb-blocks through write_buffer (one block "
      f"filled once, no copy, as fio and dd), reading at depth {read_depth}; ratios for pagebuf, then for "
      f"pb-blocks on writes; best-ratio = the median / the best "
      f"median of fio-psync, fio-aio8, fio-uring8, fio-uring8fx (--fixedbufs --registerfiles), dd; "
      f"round-ratio = median over rounds of pagebuf / that round's best of them; file {size_mib} MiB in {where})")
print("start-up CPU seconds subtracted (least of 3 one-block runs; write 1M, read 1M, write 4M, read 4M): " + "; ".join(
    f"{t} " + "/".join(f"{startup[(op, bs, t)]:.3f}" for bs in ["1M", "4M"] for op in ["write", "read"] if (op, bs, t) in startup)
    for t in tools))
for key in sorted(runs):
    v = runs[key]
    print(f"  {' '.join(key)}: " + " ".join(f"{v[r][0]:.0f}/{v[r][1]:.2f}" for r in sorted(v)))
PY
echo "load average (1, 5, 15 min) at start: $load_before, at end: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the machine slows every tool)"
rm -f "$results" "$baselines"
rmdir "$dir" 2>/dev/null || true
