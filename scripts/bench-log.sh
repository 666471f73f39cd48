#!/usr/bin/env bash
# Group commit, side by side in one run: `pagebuf log bench` (LogWriter: direct I/O,
# commits padded to the device's unit, one write + sync shared by the commits that
# arrive meanwhile) against the ways a user would do it without pagebuf
# (crates/pagebuf/examples/logpeers.rs):
#   * buffered+fdatasync: a hand-made group commit (mutex + condvar, leader/follower:
#     the leader writes everything appended so far with one pwrite and fdatasyncs);
#   * O_DSYNC: each commit one pwrite on an O_DSYNC file, no grouping;
#   * okaywal: the okaywal crate (a published Rust WAL with group commit).
# The loop is the same for all: N threads, each appending one record and waiting until
# it is durable before the next. Records are RECORD bytes (default 128; pagebuf and the
# first two peers add the same 16-byte frame header, okaywal its own 19 bytes).
#
#   scripts/bench-log.sh [SECONDS=5] [ROUNDS=3] [THREADS...=1 4 16]
#   (environment: RECORD=128, DIR=target/bench-log; CARGO_TARGET_DIR is honoured)
#
# Each figure is the median over the rounds; every contender runs once per round and
# thread count, in an order that rotates from round to round, so drift of the disk hits
# all alike. Columns: commits/s; commit latency p50/p99 (from handing the record over
# to its being durable); log bytes per commit, the space a commit's record takes (pagebuf:
# bytes written less units written again untorn, padding included; buffered and
# O_DSYNC: file growth; okaywal: distance between consecutive entries);
# storage bytes per commit (/proc/self/io write_bytes: what reached the block layer,
# a page-cache page rewritten after a sync counting again; journal writes by the file
# system's own threads are nobody's); CPU µs per commit (user + system, whole process,
# every thread). The ratio is pagebuf's commits/s over the best peer's, with the range
# of the per-round ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
threads=${*:-1 4 16}
record=${RECORD:-128}
dir=${DIR:-target/bench-log}
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$dir"
results="$dir/results.jsonl"
: > "$results"

cargo build -q --release -p pagebuf-cli
cargo build -q --release -p pagebuf --example logpeers
pagebuf=$target/release/pagebuf
peers=$target/release/examples/logpeers

# One JSON object per run, tagged with the contender and the round.
run() { # tool round threads
  local out
  case $1 in
    pagebuf) out=$("$pagebuf" log bench --dir "$dir" --threads "$3" --seconds "$seconds" \
                     --record "$record" --json) ;;
    *) out=$("$peers" "$1" "$dir" "$3" "$seconds" "$record") ;;
  esac
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["contender"]=sys.argv[2]; r["round"]=int(sys.argv[3]); print(json.dumps(r))' \
    "$out" "$1" "$2" >> "$results"
}

tools=(pagebuf buffered dsync okaywal)
for round in $(seq "$rounds"); do
  for n in $threads; do
    echo "round $round of $rounds, $n thread(s)..." >&2
    for i in "${!tools[@]}"; do
      run "${tools[$(((i + round - 1) % ${#tools[@]}))]}" "$round" "$n"
    done
  done
done

python3 - "$results" "$seconds" "$rounds" "$record" <<'PY'
import json, statistics, sys
path, seconds, rounds, record = sys.argv[1:]
runs = [json.loads(line) for line in open(path)]
names = {"pagebuf": "pagebuf log bench", "buffered": "buffered+fdatasync (hand-made group commit)",
         "dsync": "O_DSYNC pwrite", "okaywal": "okaywal"}
def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None
def fmt(v, spec):
    return "-" if v is None else format(v, spec)
print(f"{record}-byte records, {seconds} s per run, {rounds} round(s), medians\n")
print("| threads | contender | commits/s | p50 µs | p99 µs | commits/sync | log B/commit "
      "| storage B/commit | CPU µs/commit | pagebuf / this |")
print("|---|---|---|---|---|---|---|---|---|---|")
summary = []
for n in sorted({r["threads"] for r in runs}):
    by = {t: [r for r in runs if r["threads"] == n and r["contender"] == t] for t in names}
    rate = {t: med(rows, "commits_per_s") for t, rows in by.items() if rows}
    for t in sorted(rate, key=lambda t: -rate[t]):
        rows = by[t]
        ratio = rate["pagebuf"] / rate[t] if t != "pagebuf" else None
        print(f"| {n} | {names[t]} | {rate[t]:,.0f} | {fmt(med(rows, 'p50_us'), ',.0f')} "
              f"| {fmt(med(rows, 'p99_us'), ',.0f')} | {fmt(med(rows, 'commits_per_sync'), '.2f')} "
              f"| {fmt(med(rows, 'log_bytes_per_commit'), ',.0f')} "
              f"| {fmt(med(rows, 'io_write_bytes_per_commit'), ',.0f')} "
              f"| {fmt(med(rows, 'cpu_us_per_commit'), '.1f')} "
              f"| {fmt(ratio, '.2f') + 'x' if ratio else ''} |")
    peers = [t for t in rate if t != "pagebuf"]
    best = max(peers, key=lambda t: rate[t])
    # Paired per round: pagebuf against the best peer of that same round.
    per_round = []
    for rnd in sorted({r["round"] for r in runs}):
        pb = [r["commits_per_s"] for r in by["pagebuf"] if r["round"] == rnd]
        others = [r["commits_per_s"] for t in peers for r in by[t] if r["round"] == rnd]
        if pb and others:
            per_round.append(pb[0] / max(others))
    summary.append((n, rate["pagebuf"], names[best], rate[best], per_round))
print("\n| threads | pagebuf commits/s | best peer | its commits/s | pagebuf / best peer | per round |")
print("|---|---|---|---|---|---|")
for n, pb, best, b, per_round in summary:
    span = f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else "-"
    print(f"| {n} | {pb:,.0f} | {best} | {b:,.0f} | **{pb / b:.2f}x** | {span} |")
PY
echo "raw runs: $results" >&2
