#!/usr/bin/env bash
# Sequential direct I/O, side by side in one run: pagebuf's DirectWriter/DirectReader
# against fio (psync, and libaio at iodepth 8) and dd with oflag/iflag=direct, plus a
# buffered std::fs write + fsync for contrast. Same file system, same file size.
#
#   scripts/bench-io.sh [SIZE_MIB=1024] [ROUNDS=5] [DIR=target/bench-io] [DEPTH=8] [READ_DEPTH=1]
#
# DEPTH is how many blocks pagebuf's writer keeps in flight: 8 by default, as many
# transfers as fio's libaio run. READ_DEPTH is the reader's: 1 block by default, whose
# pieces (of the device's largest request, 1016 KiB here) are read side by side: 2
# requests in flight for 1 MiB blocks, 5 for 4 MiB. On this VM's disk reads lose about
# 15 % with 16 to 40 requests in flight (depth 8), against 2 to 5 (BENCHMARKS.md has the
# 25-round sweep).
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
read_depth=${5:-1}
mkdir -p "$dir"
file="$dir/seq.bin"
bytes=$((size_mib * 1024 * 1024))

if ! command -v fio >/dev/null; then
  echo "installing fio (apt-get)..." >&2
  (apt-get update -qq && apt-get install -y -qq fio) >/dev/null
fi
cargo build -q --release -p pagebuf --example seqio
seqio=target/release/examples/seqio

mibs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

fresh() { [ "$1" = write ] && rm -f "$file"; true; }

fio_run() { # rw bs engine depth -> MiB/s
  local out
  fresh "$1"
  out=$(fio --name=seq --filename="$file" --size="${size_mib}M" --rw="$1" --bs="$2" \
    --direct=1 --ioengine="$3" --iodepth="$4" --end_fsync=1 --output-format=terse \
    --terse-version=3 2>/dev/null)
  # terse v3: field 7 = read bandwidth KiB/s, field 48 = write bandwidth KiB/s
  if [ "$1" = read ]; then echo "$out" | awk -F';' '{ printf "%.0f", $7 / 1024 }'
  else echo "$out" | awk -F';' '{ printf "%.0f", $48 / 1024 }'; fi
}

dd_run() { # write|read bs_mib -> MiB/s
  local start end count=$((size_mib / $2))
  fresh "$1"
  start=$(date +%s.%N)
  if [ "$1" = write ]; then
    dd if=/dev/zero of="$file" bs="$2M" count="$count" oflag=direct conv=fsync status=none
  else
    dd if="$file" of=/dev/null bs="$2M" count="$count" iflag=direct status=none
  fi
  end=$(date +%s.%N)
  mibs "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
}

declare -A runs # "op bs tool" -> space-separated MiB/s of each round
record() { runs["$1"]="${runs["$1"]:-} $2"; }
median() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for round in $(seq "$rounds"); do
  echo "round $round of $rounds..." >&2
  for bs_mib in 1 4; do
    bs=$((bs_mib * 1024 * 1024))
    for op in write read; do
      key="$op ${bs_mib}M"
      if [ "$op" = write ]; then
        fresh write
        record "$key pagebuf" "$($seqio write "$file" "$bytes" "$bs" "$depth" | awk '{ print $4 }')"
        fresh write
        record "$key buffered" "$($seqio buffered "$file" "$bytes" "$bs" | awk '{ print $4 }')"
      else
        $seqio write "$file" "$bytes" "$bs" "$depth" >/dev/null
        record "$key pagebuf" "$($seqio read "$file" "$bytes" "$bs" "$read_depth" | awk '{ print $4 }')"
      fi
      record "$key psync" "$(fio_run "$op" "${bs_mib}M" psync 1)"
      record "$key aio" "$(fio_run "$op" "${bs_mib}M" libaio 8)"
      record "$key dd" "$(dd_run "$op" "$bs_mib")"
    done
  done
done
rm -f "$file"

printf '%-6s %-5s %10s %10s %10s %10s %10s %10s\n' op bs pagebuf fio-psync fio-aio8 dd buffered best-ratio
for bs_mib in 1 4; do
  for op in write read; do
    key="$op ${bs_mib}M"
    pb=$(median "${runs["$key pagebuf"]}")
    psync=$(median "${runs["$key psync"]}")
    aio=$(median "${runs["$key aio"]}")
    ddr=$(median "${runs["$key dd"]}")
    buffered=-
    [ "$op" = write ] && buffered=$(median "${runs["$key buffered"]}")
    best=$(printf '%s\n' "$psync" "$aio" "$ddr" | sort -n | tail -1)
    ratio=$(awk -v p="$pb" -v b="$best" 'BEGIN { printf "%.3fx", p / b }')
    printf '%-6s %-5s %10s %10s %10s %10s %10s %10s\n' "$op" "${bs_mib}M" "$pb" "$psync" "$aio" "$ddr" "$buffered" "$ratio"
  done
done
echo "(MiB/s, median of $rounds rounds; pagebuf writing at depth $depth, reading at depth $read_depth; best-ratio = pagebuf / the best of fio-psync, fio-aio8, dd; file ${size_mib} MiB in $dir)"
for key in "${!runs[@]}"; do echo "  $key:${runs[$key]}"; done | sort
