//! What a log keeps when things go wrong (issue 14, "Tests that must exist"): a writer
//! committing from several threads killed with SIGKILL at random moments, again and
//! again on the same log (each run reopens it, so recovery is crashed into too), and a
//! disk that fills up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagebuf::log::{LogOptions, LogReader, LogWriter, TailWrite};
use pagebuf::Error;

mod support;
use support::{in_child, pattern, LoopMount, ScratchDir};

const KILLED: &str = "a_writer_killed_at_random_moments_loses_nothing_committed";
const KILLED_RECYCLING: &str =
    "a_writer_reusing_segments_killed_at_random_moments_loses_nothing_committed";

/// Threads of a recycling child are numbered from here: their records are larger, so
/// that the log goes through its 1 MiB segments many times over the runs.
const RECYCLING_THREADS: u64 = 1_000;

/// How the killed child uses its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Appends and commits; the log only grows.
    Grow,
    /// Also drops all but the last 300 records every 2 ms (`truncate_before`), on 1 MiB
    /// segments with 2 spares: jumps to segments written before, kills in every phase.
    Recycle,
}

/// A record's bytes: who wrote it and its sequence number, then a pattern of both, so
/// any record read back can be checked by itself.
fn record(thread: u64, seq: u64) -> Vec<u8> {
    // Small records: the log stays small over 50 runs, and a record of several units
    // still comes up now and then.
    let len = 16
        + ((thread * 131 + seq * 977) % 1_000) as usize
        + if seq % 50 == 7 { 9_000 } else { 0 }
        + if thread >= RECYCLING_THREADS {
            3_000
        } else {
            0
        };
    let mut data = pattern(thread << 32 | seq, len);
    data[..8].copy_from_slice(&thread.to_le_bytes());
    data[8..16].copy_from_slice(&seq.to_le_bytes());
    data
}

/// Checks a record read back against what its header says it is.
fn check(data: &[u8]) -> (u64, u64) {
    assert!(data.len() >= 16, "a record of {} bytes", data.len());
    let thread = u64::from_le_bytes(data[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(data[8..16].try_into().unwrap());
    assert!(
        data == record(thread, seq),
        "record ({thread}, {seq}) is wrong"
    );
    (thread, seq)
}

/// The child: reopens (or creates) the log, then 4 threads append and commit until the
/// process is killed, printing `acked LSN THREAD SEQ` once each commit has returned.
fn child_writes(path: &std::path::Path, run: u64, usage: Use) {
    let options = match usage {
        Use::Grow => LogOptions::default(),
        Use::Recycle => LogOptions::default()
            .segment_size(1 << 20)
            .spare_segments(2),
    };
    let first_thread = match usage {
        Use::Grow => run * 4,
        Use::Recycle => RECYCLING_THREADS + run * 4,
    };
    // A killed writer's lock outlives it until the kernel has finished the I/O it had in
    // flight (its ring's requests hold the file): a few milliseconds. Retry until then.
    let started = Instant::now();
    let log = Arc::new(loop {
        match LogWriter::open_with(path, options.clone()) {
            Ok(log) => break log,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                break LogWriter::create_with(path, options.clone()).unwrap()
            }
            Err(Error::InvalidRequest(_)) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(err) => panic!("reopening the log: {err}"),
        }
    });
    println!("opened {}", log.durable_lsn());
    if usage == Use::Recycle {
        let log = log.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(2));
            let keep_from = log.durable_lsn().saturating_sub(300);
            if keep_from > 0 {
                // Announced first: a cut the kill interrupts may still take effect.
                println!("truncating {keep_from}");
                log.truncate_before(keep_from).unwrap();
                println!("reused {}", log.stats().segments_reused);
            }
        });
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let thread = first_thread + t;
                let start = Instant::now();
                let mut seq = 0;
                while start.elapsed() < Duration::from_secs(30) {
                    let lsn = log.append(&record(thread, seq)).unwrap();
                    if seq % 3 == 2 {
                        log.commit(lsn).unwrap();
                        println!("acked {lsn} {thread} {seq}");
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_writer_killed_at_random_moments_loses_nothing_committed() {
    if in_child(KILLED) {
        let path = std::env::var("PAGEBUF_CRASH_FILE").unwrap();
        let run = std::env::var("PAGEBUF_CRASH_RUN").unwrap().parse().unwrap();
        child_writes(path.as_ref(), run, Use::Grow);
        return;
    }
    let dir = ScratchDir::new("log_crash", "killed");
    kill_at_random_moments(&dir.join("log"), 50, TailWrite::Pad, Use::Grow);
}

/// The same with the log dropping old records as it goes, so that kills land while it
/// jumps to a segment written before, writes over stale frames, rewrites its header or
/// gives a segment back: every acknowledged record not dropped is kept, and the file
/// stays smaller than what was written to it.
#[test]
fn a_writer_reusing_segments_killed_at_random_moments_loses_nothing_committed() {
    if in_child(KILLED_RECYCLING) {
        let path = std::env::var("PAGEBUF_CRASH_FILE").unwrap();
        let run = std::env::var("PAGEBUF_CRASH_RUN").unwrap().parse().unwrap();
        child_writes(path.as_ref(), run, Use::Recycle);
        return;
    }
    let dir = ScratchDir::new("log_crash", "killed_recycling");
    kill_at_random_moments(&dir.join("log"), 50, TailWrite::Pad, Use::Recycle);
}

/// The same on XFS (a loop device), where commits write their last unit again untorn
/// (`RWF_ATOMIC`): kills land between a commit's write and the next one's rewrite.
#[test]
fn on_xfs_a_writer_rewriting_untorn_killed_at_random_moments_loses_nothing() {
    let dir = ScratchDir::new("log_crash", "killed_xfs");
    let Some(disk) = LoopMount::with_fs(&dir, "xfs", &[4096], 320 << 20) else {
        return; // the reason is printed
    };
    let path = disk.mount.join("log");
    let tail = LogWriter::create(&path).unwrap().tail_write();
    if tail != TailWrite::RewriteUntorn {
        eprintln!("skipped: XFS here promises no untorn 4 KiB writes");
        return;
    }
    kill_at_random_moments(&path, 20, tail, Use::Grow);
    let recycled = disk.mount.join("recycled");
    kill_at_random_moments(&recycled, 20, tail, Use::Recycle);
}

/// Runs the killed writer (`child_writes`) `runs` times on the log at `path`, each
/// killed 0-60 ms after it reopened the log, and checks after each run that every
/// acknowledged record is there.
fn kill_at_random_moments(path: &std::path::Path, runs: u64, tail: TailWrite, usage: Use) {
    let name = match usage {
        Use::Grow => KILLED,
        Use::Recycle => KILLED_RECYCLING,
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    // (lsn -> (thread, seq)) for every record whose commit returned, over all runs.
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    // Records before this one may have been dropped by a `truncate_before` begun.
    let mut dropped_before = 1;
    let mut bytes_acked = 0u64;
    let mut reused = 0;
    let started = Instant::now();
    for run in 0..runs {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("PAGEBUF_TEST_CHILD", name)
            .env("PAGEBUF_CRASH_FILE", path)
            .env("PAGEBUF_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reused_in_run = 0;
        // Wait until it has reopened the log, then let it run 0-60 ms and kill it. (The
        // harness's `test NAME ... ` has no newline: the report may share its line.)
        let opened = lines.by_ref().any(|line| line.unwrap().contains("opened "));
        assert!(opened, "run {run}: the child never reopened the log");
        std::thread::sleep(Duration::from_micros(rng % 60_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in lines {
            let line = line.unwrap();
            if let Some((_, rest)) = line.split_once("acked ") {
                let v: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                acked.push((v[0], v[1], v[2]));
                bytes_acked += record(v[1], v[2]).len() as u64;
            } else if let Some((_, rest)) = line.split_once("truncating ") {
                dropped_before = dropped_before.max(rest.trim().parse().unwrap());
            } else if let Some((_, rest)) = line.split_once("reused ") {
                reused_in_run = reused_in_run.max(rest.trim().parse().unwrap());
            }
        }
        // Every acknowledged record is there, in order, exact; nothing wrong anywhere.
        let mut records = Vec::new();
        for item in LogReader::open(path).unwrap() {
            match item {
                Ok(rec) => records.push((rec.lsn, check(&rec.data))),
                // A torn tail of the commit the kill interrupted: never acknowledged.
                Err(Error::Corrupt { .. }) => break,
                Err(err) => panic!("run {run}: {err}"),
            }
        }
        reused += reused_in_run;
        let first = records.first().map_or(1, |r| r.0);
        assert!(
            first <= dropped_before,
            "run {run}: the log starts at {first}, past the last cut asked for ({dropped_before})"
        );
        for (i, (lsn, _)) in records.iter().enumerate() {
            assert_eq!(*lsn, first + i as u64, "run {run}: numbers out of order");
        }
        for &(lsn, thread, seq) in acked.iter().filter(|a| a.0 >= dropped_before) {
            let found = records.get((lsn - first) as usize).map(|r| r.1);
            assert_eq!(
                found,
                Some((thread, seq)),
                "run {run}: acknowledged record {lsn} lost or changed"
            );
        }
    }
    eprintln!(
        "{runs} kills ({tail:?}, {usage:?}), {} acknowledged records ({bytes_acked} bytes) \
         all kept, {reused} segments written again, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(!acked.is_empty(), "no commit was ever acknowledged");
    if usage == Use::Recycle {
        // A reopened log gives its spare segments back (they may hold frames of the
        // killed commit): reuse comes from within a run, and only runs that write a few
        // MiB get there (about one reuse per 4 MB written here, none at all in a loaded
        // CI run of the XFS test that wrote 2.9 MB). Reuse itself is proven by
        // `log_rules::freed_segments_are_written_again_and_every_kept_record_reads_back`;
        // this test's point is the kills, so it asks for reuse only where the runs
        // wrote enough to be sure of some.
        if bytes_acked >= 16 << 20 {
            assert!(
                reused >= bytes_acked / (16 << 20),
                "segments were reused {reused} times only, for {bytes_acked} bytes"
            );
        }
    }
}

#[test]
fn a_full_disk_is_an_io_error_and_the_log_reopens_with_every_commit() {
    let dir = ScratchDir::new("log_crash", "full");
    let Some(disk) = LoopMount::new(&dir, 4096, 16 << 20) else {
        return;
    };
    let path = disk.mount.join("log");
    let log = LogWriter::create(&path).unwrap();
    assert!(log.file().is_direct());
    let mut committed = 0;
    let mut failure = None;
    for seq in 0..100_000u64 {
        let outcome = log.append(&record(0, seq)).and_then(|lsn| {
            if seq % 5 == 4 {
                log.commit(lsn)?;
                committed = lsn;
            }
            Ok(())
        });
        if let Err(err) = outcome {
            failure = Some(err);
            break;
        }
    }
    let failure = failure.expect("a 16 MiB file system fills up");
    let full =
        |err: &Error| matches!(err, Error::Io { source, .. } if source.raw_os_error() == Some(28));
    assert!(full(&failure), "{failure}");
    // Sticky: every later call says so.
    assert!(full(&log.append(b"more").unwrap_err()));
    assert!(full(&log.sync().unwrap_err()));
    assert!(committed > 0);
    drop(log);
    let mut kept = 0;
    for item in LogReader::open(&path).unwrap() {
        match item {
            Ok(rec) => {
                assert_eq!(check(&rec.data), (0, rec.lsn - 1));
                kept = rec.lsn;
            }
            Err(err) => {
                assert!(matches!(err, Error::Corrupt { .. }), "{err}");
                break;
            }
        }
    }
    assert!(kept >= committed, "kept {kept} < committed {committed}");
    // Reopened with every committed record (the disk still full: opening may fail only
    // with ENOSPC while cutting the tail, never lose a record).
    match LogWriter::open(&path) {
        Ok(log) => assert!(log.durable_lsn() >= committed),
        Err(err) => assert!(full(&err), "{err}"),
    }
    eprintln!("committed {committed}, kept {kept}, then {failure}");
}
