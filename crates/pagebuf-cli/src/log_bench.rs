//! `pagebuf log bench`: group commit from N threads on one `LogWriter`. Each thread
//! loops `append(record)` + `commit(lsn)` for as long as asked; the figures are what a
//! caller of the log sees (commits per second, the latency of each append + commit)
//! beside what the log did to get there (`LogStats`: syncs, bytes handed to the disk).
//!
//! Beside the committing threads a checkpointer drops every durable record each
//! [`CHECKPOINT_EVERY`] (`truncate_before`), as a database does once what its log
//! holds is applied: the log then writes its freed segments again, as it does in
//! service (okaywal, the peer, checkpoints and recycles its segments on its own).
//!
//! A commit's latency runs from just before its `append` to the return of its
//! `commit`: the wait a caller who needs its record durable sits through, grouping
//! included. Each thread keeps its own latencies (no shared counter in the loop); they
//! are merged for the percentiles.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use pagebuf::log::{LogOptions, LogStats, LogWriter, TailWrite, MAX_RECORD};
use pagebuf::ring::RingOptions;
use pagebuf::{Engine, IoRing};
use serde_json::json;

use crate::usage::{io_write_bytes, process_cpu_seconds};
use crate::{format, CliResult};

/// How often the bench's checkpointer drops the durable records.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(10);

/// `--threads` cap: the bench must not start unbounded threads either.
pub const MAX_THREADS: usize = 1024;

/// Where the log goes: a file named by the caller, or a new one in a directory.
pub enum Target {
    File(PathBuf),
    Dir(PathBuf),
}

/// What one run measured.
pub struct Report {
    pub path: PathBuf,
    pub threads: usize,
    pub record: usize,
    pub commits: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// What the log counted over the run.
    /// The log's own counters over the run.
    pub stats: LogStats,
    /// User + system CPU seconds of the whole process during the run (every thread,
    /// the ring's included).
    pub cpu: f64,
    /// Bytes this process sent toward storage during the run (`/proc/self/io`
    /// `write_bytes`, which counts what a peer using the page cache dirties, too), if
    /// the kernel reports it.
    pub io_write_bytes: Option<u64>,
    pub tail: TailWrite,
    pub direct: bool,
    pub fallback: Option<String>,
    pub engine: Engine,
    pub engine_note: Option<String>,
}

impl Report {
    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    fn per_commit(&self, n: f64) -> f64 {
        n / self.commits.max(1) as f64
    }

    fn commits_per_sync(&self) -> f64 {
        self.commits as f64 / self.stats.syncs.max(1) as f64
    }
}

/// Removes the bench's log when the run ends, pass or fail.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The log file to write: never an existing file (a benchmark must not truncate
/// someone's data), and in a directory that exists.
fn log_path(target: &Target) -> Result<PathBuf, String> {
    let path = match target {
        Target::File(path) => path.clone(),
        Target::Dir(dir) => {
            if !dir.is_dir() {
                return Err(format!(
                    "--dir {}: not a directory; give an existing, writable directory",
                    dir.display()
                ));
            }
            dir.join(format!("pagebuf-log-bench-{}.wal", std::process::id()))
        }
    };
    if path.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists; log bench writes a new log and removes it afterwards: give a path \
             that does not exist, or --dir DIR",
            path.display()
        ));
    }
    Ok(path)
}

fn check(threads: usize, record: usize) -> Result<(), String> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!(
            "--threads {threads}: give 1 to {MAX_THREADS} committing threads"
        ));
    }
    if !(1..=MAX_RECORD).contains(&record) {
        return Err(format!(
            "--record {record}: give a record size from 1 byte to {MAX_RECORD} \
             (pagebuf::log::MAX_RECORD)"
        ));
    }
    Ok(())
}

/// Runs `threads` threads of append + commit of `record` bytes for `seconds`, on the
/// process's ring (`Engine::Auto`) or a ring of its own on `engine`.
pub fn measure(
    target: &Target,
    threads: usize,
    seconds: f64,
    record: usize,
    engine: Engine,
) -> Result<Report, Box<dyn std::error::Error>> {
    check(threads, record)?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("--seconds {seconds}: give a duration above 0").into());
    }
    let ring = match engine {
        Engine::Auto => IoRing::process_default()?,
        other => IoRing::with_options(RingOptions::default().engine(other))?,
    };
    let path = log_path(target)?;
    let log =
        LogWriter::create_with(&path, LogOptions::default().ring(ring.clone())).map_err(|e| {
            format!(
                "cannot create a log at {}: {e}; give a writable directory (--dir) or a new \
                 file's path",
                path.display()
            )
        })?;
    let _remove = RemoveOnDrop(path.clone());
    let payload: Vec<u8> = (0..record).map(|i| (i * 31 + 7) as u8).collect();
    let start = Barrier::new(threads + 1);
    let duration = Duration::from_secs_f64(seconds);

    let before = log.stats();
    let cpu_before = process_cpu_seconds();
    let io_before = io_write_bytes();
    let done = AtomicBool::new(false);
    let (started, per_thread, checkpoints) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (log, payload, start) = (&log, &payload, &start);
                scope.spawn(move || -> pagebuf::Result<Vec<u64>> {
                    // A second of commits at the fastest rate seen here, to start with.
                    let mut latencies = Vec::with_capacity(1 << 14);
                    start.wait();
                    let until = Instant::now() + duration;
                    loop {
                        let t0 = Instant::now();
                        let lsn = log.append(payload)?;
                        log.commit(lsn)?;
                        let t1 = Instant::now();
                        let nanos = (t1 - t0).as_nanos();
                        latencies.push(u64::try_from(nanos).unwrap_or(u64::MAX));
                        if t1 >= until {
                            return Ok(latencies);
                        }
                    }
                })
            })
            .collect();
        let (log, done) = (&log, &done);
        let checkpointer = scope.spawn(move || -> pagebuf::Result<()> {
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(CHECKPOINT_EVERY);
                log.truncate_before(log.durable_lsn())?;
            }
            Ok(())
        });
        start.wait();
        let started = Instant::now();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        done.store(true, Ordering::Release);
        let checkpoints = checkpointer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (started, results, checkpoints)
    });
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds() - cpu_before;
    let io_written = io_write_bytes()
        .zip(io_before)
        .map(|(a, b)| a.saturating_sub(b));
    let after = log.stats();

    checkpoints?;
    let mut latencies = Vec::new();
    for result in per_thread {
        latencies.extend(result?);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len().saturating_sub(1)) as f64 * q) as usize;
        Duration::from_nanos(latencies.get(i).copied().unwrap_or(0))
    };
    Ok(Report {
        threads,
        record,
        commits: latencies.len() as u64,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        stats: after.since(&before),
        cpu,
        io_write_bytes: io_written,
        tail: log.tail_write(),
        direct: log.file().is_direct(),
        fallback: log.file().fallback_note().map(str::to_string),
        engine: ring.engine(),
        engine_note: ring.note().map(str::to_string),
        path,
    })
}

/// The subcommand.
pub fn run(
    out: &mut impl Write,
    target: &Target,
    threads: usize,
    seconds: f64,
    record: usize,
    engine: Engine,
    json: bool,
) -> CliResult {
    let r = measure(target, threads, seconds, record, engine)?;
    let engine = match r.engine {
        Engine::Uring => "io_uring",
        _ => "threads",
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let tail = match r.tail {
        TailWrite::Pad => "pad",
        TailWrite::RewriteUntorn => "rewrite_untorn",
    };
    let payload = r.stats.appended * r.record as u64;
    if json {
        let value = json!({
            "path": r.path.display().to_string(),
            "threads": r.threads,
            "record_bytes": r.record,
            "seconds": r.elapsed.as_secs_f64(),
            "commits": r.commits,
            "records": r.stats.appended,
            "commits_per_s": r.per_second(r.commits),
            "records_per_s": r.per_second(r.stats.appended),
            "payload_mib_per_s": r.per_second(payload) / f64::from(1 << 20),
            "p50_us": us(r.p50),
            "p99_us": us(r.p99),
            "max_us": us(r.max),
            "syncs": r.stats.syncs,
            "segments_reused": r.stats.segments_reused,
            "waiting_commits": r.stats.commits,
            "commits_per_sync": r.commits_per_sync(),
            "tail_write": tail,
            "bytes_written": r.stats.bytes_written,
            "padding_bytes": r.stats.padding_bytes,
            "rewritten_bytes": r.stats.rewritten_bytes,
            "bytes_per_commit": r.per_commit(r.stats.bytes_written as f64),
            "log_bytes_per_commit": r.per_commit((r.stats.bytes_written - r.stats.rewritten_bytes) as f64),
            "padding_bytes_per_commit": r.per_commit(r.stats.padding_bytes as f64),
            "rewritten_bytes_per_commit": r.per_commit(r.stats.rewritten_bytes as f64),
            "io_write_bytes_per_commit": r.io_write_bytes.map(|b| r.per_commit(b as f64)),
            "cpu_seconds": r.cpu,
            "cpu_us_per_commit": r.per_commit(r.cpu * 1e6),
            "direct": r.direct,
            "fallback_note": r.fallback,
            "engine": engine,
            "engine_note": r.engine_note,
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(
        out,
        "group commit: {} thread{} appending {}-byte records and committing each, {} ({}, {})",
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.record,
        format::seconds(r.elapsed),
        if r.direct { "direct I/O" } else { "buffered" },
        engine
    )?;
    let rows = [
        ("commits/s", format!("{:.0}", r.per_second(r.commits))),
        (
            "records/s",
            format!("{:.0}", r.per_second(r.stats.appended)),
        ),
        ("payload", format::rate(payload, r.elapsed)),
        (
            "commit latency",
            format!(
                "p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
                us(r.p50),
                us(r.p99),
                us(r.max)
            ),
        ),
        (
            "syncs",
            format!(
                "{} ({:.2} commits per sync; {} commits waited for one); {} segments \
                 written again",
                r.stats.syncs,
                r.commits_per_sync(),
                r.stats.commits,
                r.stats.segments_reused
            ),
        ),
        (
            "bytes per commit",
            format!(
                "{:.0} written for {} of record: {:.0} of log ({:.0} of padding), {:.0} \
                 written again untorn (tail: {tail})",
                r.per_commit(r.stats.bytes_written as f64),
                r.record,
                r.per_commit((r.stats.bytes_written - r.stats.rewritten_bytes) as f64),
                r.per_commit(r.stats.padding_bytes as f64),
                r.per_commit(r.stats.rewritten_bytes as f64),
            ),
        ),
        (
            "CPU",
            format!(
                "{:.2} s, {:.1} µs per commit",
                r.cpu,
                r.per_commit(r.cpu * 1e6)
            ),
        ),
    ];
    for (what, value) in rows {
        writeln!(out, "  {what:<17} {value}")?;
    }
    for note in [&r.fallback, &r.engine_note].into_iter().flatten() {
        writeln!(out, "  note: {note}")?;
    }
    writeln!(out, "  removed {}", r.path.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_are_refused_before_any_file() {
        assert!(check(0, 100).is_err());
        assert!(check(MAX_THREADS + 1, 100).is_err());
        assert!(check(1, 0).is_err());
        assert!(check(1, MAX_RECORD + 1).is_err());
        assert!(check(1, MAX_RECORD).is_ok());
    }
}
