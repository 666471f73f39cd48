//! The peers `pagebuf log bench` is measured against (`scripts/bench-log.sh`): the same
//! loop (N threads, each appending one record and making it durable before the next),
//! done the ways a user would without pagebuf.
//!
//! * `buffered`: a hand-made group commit, as users write it: a mutex and a condvar;
//!   records are framed into a shared buffer; the first committer to find no sync under
//!   way becomes the leader, takes the buffer, writes it with one `pwrite` (through the
//!   page cache) and `fdatasync`s without the lock; the others wait on the condvar and
//!   the next leader takes whatever they appended meanwhile.
//! * `dsync`: the file opened `O_DSYNC`; each commit is one `pwrite` of its frame at an
//!   offset taken from an atomic counter. No grouping: the kernel serializes them.
//! * `okaywal`: the `okaywal` crate (a published WAL with group commit): each commit is
//!   `begin_entry`, `write_chunk(record)`, `commit`, with a checkpointer that does
//!   nothing (the log recycles its segments).
//!
//! `buffered` and `dsync` frame each record as pagebuf does (16 bytes: length, CRC32C,
//! sequence number), so every contender does the same work per record; `okaywal` uses
//! its own framing (19 bytes an entry of one chunk).
//!
//! `cargo run --release -p pagebuf --example logpeers -- MODE DIR THREADS SECONDS RECORD`
//!
//! Prints one JSON object with the field names of `pagebuf log bench --json`:
//! `commits`, `commits_per_s`, `p50_us`/`p99_us`/`max_us` (from before the record is
//! handed over to its durability), `syncs` and `commits_per_sync` where the contender
//! knows them, `log_bytes_per_commit` (the log's growth: file size, or for okaywal the
//! distance between consecutive entries), `io_write_bytes_per_commit` (`/proc/self/io`:
//! what reached the storage layer, where a rewritten page cache page counts again),
//! `cpu_us_per_commit` (user + system time of the whole process, every thread).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use okaywal::{Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Frames `record` as pagebuf does: a 16-byte header of length, CRC32C and sequence
/// number, then the bytes.
fn frame(out: &mut Vec<u8>, seq: u64, record: &[u8]) {
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(record).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(record);
}

/// What every contender reports beside the latencies.
#[derive(Default)]
struct Tally {
    syncs: Option<u64>,
    log_bytes: u64,
}

trait Contender: Sync {
    /// Appends `record` and returns once it is durable. `chunks` collects whatever the
    /// contender needs to size its log afterwards.
    fn commit(&self, record: &[u8], chunks: &mut Vec<(u64, u64)>) -> io::Result<()>;
    fn tally(&self, chunks: &[(u64, u64)]) -> io::Result<Tally>;
}

// ---- buffered writes + fdatasync, hand-made group commit ----

struct Buffered {
    file: File,
    state: Mutex<GroupState>,
    synced: Condvar,
}

#[derive(Default)]
struct GroupState {
    pending: Vec<u8>,
    /// The leader's last batch, kept for its capacity.
    spare: Vec<u8>,
    appended: u64,
    durable: u64,
    leading: bool,
    end: u64,
    syncs: u64,
    failure: Option<String>,
}

impl Buffered {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Contender for Buffered {
    fn commit(&self, record: &[u8], _: &mut Vec<(u64, u64)>) -> io::Result<()> {
        let mut state = self.lock();
        state.appended += 1;
        let seq = state.appended;
        frame(&mut state.pending, seq, record);
        loop {
            if let Some(failure) = &state.failure {
                return Err(io::Error::other(failure.clone()));
            }
            if state.durable >= seq {
                return Ok(());
            }
            if state.leading {
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leading = true;
            let spare = std::mem::take(&mut state.spare);
            let mut batch = std::mem::replace(&mut state.pending, spare);
            let (target, at) = (state.appended, state.end);
            state.end += batch.len() as u64;
            drop(state);
            let outcome = self
                .file
                .write_all_at(&batch, at)
                .and_then(|()| self.file.sync_data());
            batch.clear();
            state = self.lock();
            state.leading = false;
            state.spare = batch;
            match outcome {
                Ok(()) => {
                    state.durable = target;
                    state.syncs += 1;
                }
                Err(err) => state.failure = Some(err.to_string()),
            }
            self.synced.notify_all();
        }
    }

    fn tally(&self, _: &[(u64, u64)]) -> io::Result<Tally> {
        Ok(Tally {
            syncs: Some(self.lock().syncs),
            log_bytes: self.file.metadata()?.len(),
        })
    }
}

// ---- O_DSYNC writes, no grouping ----

struct Dsync {
    file: File,
    end: AtomicU64,
    seq: AtomicU64,
}

thread_local! {
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Contender for Dsync {
    fn commit(&self, record: &[u8], _: &mut Vec<(u64, u64)>) -> io::Result<()> {
        FRAME.with_borrow_mut(|buf| {
            buf.clear();
            frame(buf, self.seq.fetch_add(1, Ordering::Relaxed) + 1, record);
            let at = self.end.fetch_add(buf.len() as u64, Ordering::Relaxed);
            self.file.write_all_at(buf, at)
        })
    }

    fn tally(&self, _: &[(u64, u64)]) -> io::Result<Tally> {
        Ok(Tally {
            // Every commit is its own synchronous write.
            syncs: Some(self.seq.load(Ordering::Relaxed)),
            log_bytes: self.file.metadata()?.len(),
        })
    }
}

// ---- okaywal ----

/// Checkpointing is the database's job; here there is nothing to apply.
#[derive(Debug)]
struct NoCheckpoint;

impl LogManager for NoCheckpoint {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

struct OkayWal {
    log: WriteAheadLog,
}

impl Contender for OkayWal {
    fn commit(&self, record: &[u8], chunks: &mut Vec<(u64, u64)>) -> io::Result<()> {
        let mut entry = self.log.begin_entry()?;
        let chunk = entry.write_chunk(record)?;
        entry.commit()?;
        // The position's fields are private; its serialized form is (file, offset).
        let mut bytes = [0u8; 16];
        chunk.position.serialize_to(&mut bytes[..])?;
        let [file, offset] =
            [&bytes[..8], &bytes[8..]].map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        chunks.push((file, offset));
        Ok(())
    }

    /// okaywal preallocates its segments and recycles them after a checkpoint, so the
    /// files' sizes say nothing; entries follow each other without gaps in a segment, so
    /// the distance between consecutive chunks is an entry's size.
    fn tally(&self, chunks: &[(u64, u64)]) -> io::Result<Tally> {
        let mut by_file: std::collections::HashMap<u64, (u64, u64, u64)> = Default::default();
        for &(file, offset) in chunks {
            let e = by_file.entry(file).or_insert((offset, offset, 0));
            e.0 = e.0.min(offset);
            e.1 = e.1.max(offset);
            e.2 += 1;
        }
        let (span, gaps) = by_file
            .values()
            .fold((0, 0), |(s, g), &(lo, hi, n)| (s + hi - lo, g + n - 1));
        Ok(Tally {
            syncs: None,
            log_bytes: (span as f64 / gaps.max(1) as f64 * chunks.len() as f64) as u64,
        })
    }
}

// ---- the harness ----

/// User + system CPU seconds of this process so far (every thread).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |r| r.1);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent to storage.
fn io_write_bytes() -> Option<u64> {
    let mut io = String::new();
    File::open("/proc/self/io")
        .ok()?
        .read_to_string(&mut io)
        .ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}

/// One thread's commit latencies (ns) and the positions its contender noted.
type ThreadRun = (Vec<u64>, Vec<(u64, u64)>);

fn run(
    name: &str,
    contender: &dyn Contender,
    threads: usize,
    seconds: f64,
    record: usize,
) -> Result<String, Error> {
    let payload: Vec<u8> = (0..record).map(|i| (i * 31 + 7) as u8).collect();
    let start = Barrier::new(threads + 1);
    let duration = Duration::from_secs_f64(seconds);
    let (cpu_before, io_before) = (cpu_seconds(), io_write_bytes());
    let (started, results) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (payload, start) = (&payload, &start);
                scope.spawn(move || -> io::Result<ThreadRun> {
                    let mut latencies = Vec::with_capacity(1 << 14);
                    let mut chunks = Vec::new();
                    start.wait();
                    let until = Instant::now() + duration;
                    loop {
                        let t0 = Instant::now();
                        contender.commit(payload, &mut chunks)?;
                        let t1 = Instant::now();
                        latencies.push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                        if t1 >= until {
                            return Ok((latencies, chunks));
                        }
                    }
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (started, results)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let io = io_write_bytes()
        .zip(io_before)
        .map(|(a, b)| a.saturating_sub(b));
    let (mut latencies, mut chunks) = (Vec::new(), Vec::new());
    for result in results {
        let (l, c) = result?;
        latencies.extend(l);
        chunks.extend(c);
    }
    let tally = contender.tally(&chunks)?;
    latencies.sort_unstable();
    let commits = latencies.len() as u64;
    let at = |q: f64| {
        let i = (latencies.len().saturating_sub(1) as f64 * q) as usize;
        latencies.get(i).map_or(0.0, |&ns| ns as f64 / 1e3)
    };
    let per_commit = |x: f64| x / commits.max(1) as f64;
    let null_or = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v}"));
    Ok(format!(
        "{{\"tool\":\"{name}\",\"threads\":{threads},\"record_bytes\":{record},\
         \"seconds\":{elapsed},\"commits\":{commits},\"commits_per_s\":{},\
         \"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"syncs\":{},\"commits_per_sync\":{},\
         \"log_bytes_per_commit\":{},\"io_write_bytes_per_commit\":{},\"cpu_seconds\":{cpu},\
         \"cpu_us_per_commit\":{}}}",
        commits as f64 / elapsed,
        at(0.50),
        at(0.99),
        at(1.0),
        tally.syncs.map_or("null".to_string(), |s| s.to_string()),
        null_or(tally.syncs.map(|s| commits as f64 / s.max(1) as f64)),
        per_commit(tally.log_bytes as f64),
        null_or(io.map(|b| per_commit(b as f64))),
        per_commit(cpu * 1e6),
    ))
}

/// Removes what a contender made, pass or fail.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_file(path: &Path, dsync: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if dsync {
        options.custom_flags(libc::O_DSYNC);
    }
    let file = options.open(path)?;
    // A new file survives power loss only once its directory entry is on disk too.
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    Ok(file)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: logpeers buffered|dsync|okaywal DIR THREADS SECONDS RECORD_BYTES";
    let [mode, dir, threads, seconds, record] = &args[..] else {
        return Err(usage.into());
    };
    let threads: usize = threads.parse()?;
    let seconds: f64 = seconds.parse()?;
    let record: usize = record.parse()?;
    if !(1..=1024).contains(&threads) || seconds <= 0.0 || record == 0 {
        return Err(usage.into());
    }
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("logpeers-{mode}-{}", std::process::id()));
    let _remove = Remove(path.clone());
    let line = match mode.as_str() {
        "buffered" => {
            let contender = Buffered {
                file: new_file(&path, false)?,
                state: Mutex::default(),
                synced: Condvar::new(),
            };
            run("buffered+fdatasync", &contender, threads, seconds, record)?
        }
        "dsync" => {
            let contender = Dsync {
                file: new_file(&path, true)?,
                end: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            };
            run("O_DSYNC", &contender, threads, seconds, record)?
        }
        "okaywal" => {
            let contender = OkayWal {
                log: WriteAheadLog::recover(&path, NoCheckpoint)?,
            };
            let line = run("okaywal", &contender, threads, seconds, record)?;
            // Its checkpoint thread holds the files until the log is gone.
            drop(contender);
            line
        }
        _ => return Err(usage.into()),
    };
    println!("{line}");
    Ok(())
}
