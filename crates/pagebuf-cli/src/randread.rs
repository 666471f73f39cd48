//! `pagebuf randread FILE`: random direct reads of one block size from one thread, a
//! fixed number in flight (an `IoRing` at a queue depth), for as long as asked; IOPS,
//! latency percentiles and CPU time per GiB read, as fio reports them.
//!
//! Whichever reads are in are taken (`Pending::wait_some`, as fio reaps), and their
//! successors go in groups (`IoRing::read_at_batch`: one system call a group): the queue
//! stays at `depth`.
//! The ring posts completions cooperatively by default (`--posting`): this one thread
//! submits and waits in a loop, so the kernel need not interrupt it.
//! A read's latency runs from its submission to the moment it is taken. At depth 1 each
//! read is `IoRing::read_at_blocking` (a `pread` on this thread: one system call).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use pagebuf::direct::DirectFile;
use pagebuf::ring::{Engine, Pending, Posting, RingOptions};
use pagebuf::{BufferMut, FramePool, Framing, IoRing};
use serde_json::json;

use crate::usage::process_cpu_seconds;
use crate::{format, CliResult};

/// What to read, how.
pub struct Plan {
    /// Reads in flight.
    pub depth: usize,
    /// Bytes per read.
    pub block: usize,
    pub seconds: f64,
    pub engine: Engine,
    pub posting: Posting,
}

/// What one run measured.
pub struct Report {
    pub engine: Engine,
    /// The posting the ring got (the kernel may refuse the one asked for).
    pub posting: Posting,
    pub note: Option<String>,
    pub depth: usize,
    pub block: usize,
    pub reads: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// User + system CPU seconds of the whole process during the run.
    pub cpu: f64,
    pub fixed: bool,
}

impl Report {
    fn iops(&self) -> f64 {
        self.reads as f64 / self.elapsed.as_secs_f64()
    }

    fn gib(&self) -> f64 {
        (self.reads * self.block as u64) as f64 / (1u64 << 30) as f64
    }
}

/// Runs `plan.depth` random reads of `plan.block` bytes in flight on `path` for
/// `plan.seconds`.
pub fn measure(path: &Path, plan: &Plan) -> pagebuf::Result<Report> {
    let &Plan {
        depth,
        block,
        seconds,
        engine,
        posting,
    } = plan;
    let file = DirectFile::open(path)?;
    let blocks = file.len()? / block as u64;
    if blocks == 0 {
        return Err(pagebuf::Error::InvalidArgument(format!(
            "{} is smaller than one {block}-byte block; read a larger file",
            path.display()
        )));
    }
    let align = (file.limits().alignment() as usize).max(1);
    let pool = FramePool::new(Framing::new(block, depth).alignment(align.max(4096)))?;
    let options = RingOptions::default()
        .engine(engine)
        .entries(u32::try_from(depth).unwrap_or(u32::MAX).max(8))
        .workers(depth.min(pagebuf::caps::MAX_DEPTH))
        .posting(posting)
        .register(&pool);
    let ring = IoRing::with_options(options)?;
    let mut random = Xorshift(0x9E37_79B9_7F4A_7C15 ^ blocks);
    let mut latencies = Vec::with_capacity(1 << 20);
    // The reads in flight, and when each was issued (one index for both).
    let mut in_flight: Vec<Pending<BufferMut>> = Vec::with_capacity(depth);
    let mut issued_at: Vec<Instant> = Vec::with_capacity(depth);
    // Submits `count` reads at random blocks, together (one system call on io_uring).
    let submit = |random: &mut Xorshift,
                  in_flight: &mut Vec<Pending<BufferMut>>,
                  issued_at: &mut Vec<Instant>,
                  count: usize| {
        let mut reads = Vec::with_capacity(count);
        for _ in 0..count {
            // A frame per read in flight: one is always free when a read was just taken.
            let frame = pool
                .try_allocate()
                .ok_or_else(|| pagebuf::Error::InvalidRequest("every frame is in flight".into()))?;
            reads.push((frame, random.below(blocks) * block as u64));
        }
        let issued = Instant::now();
        for read in ring.read_at_batch(&file, reads) {
            in_flight.push(read);
            issued_at.push(issued);
        }
        Ok::<(), pagebuf::Error>(())
    };
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    if depth == 1 {
        // Nothing else to do while the one read is out: the blocking form (a `pread` on
        // this thread).
        loop {
            let issued = Instant::now();
            if issued >= until {
                break;
            }
            let frame = pool.try_allocate().ok_or_else(|| {
                pagebuf::Error::InvalidRequest("the one frame is in flight".into())
            })?;
            let offset = random.below(blocks) * block as u64;
            let frame = ring.read_at_blocking(&file, frame, offset)?;
            latencies.push(issued.elapsed());
            drop(frame);
        }
    } else {
        // Successors go in groups of depth / 16: small groups keep a shallow queue fed
        // (depth 32 on this VM: 153k IOPS in twos, 115k all at once), large ones save
        // system calls where the one thread is the bottleneck (depth 128: 160-170k in
        // eights, 129-145k one by one; BENCHMARKS.md).
        let batch = (depth / 16).max(1);
        submit(&mut random, &mut in_flight, &mut issued_at, depth)?;
        let mut ready = Vec::with_capacity(depth);
        while !in_flight.is_empty() {
            // Whichever reads are in, as fio reaps: none waits behind a slow one.
            Pending::wait_some(&in_flight, &mut ready);
            let mut now = Instant::now();
            // Highest index first: the indices still to take stay where they are.
            for &i in ready.iter().rev() {
                drop(in_flight.swap_remove(i).wait()?);
                now = Instant::now();
                latencies.push(now - issued_at.swap_remove(i));
            }
            if now < until {
                let mut done = ready.len();
                while done > 0 {
                    let n = done.min(batch);
                    submit(&mut random, &mut in_flight, &mut issued_at, n)?;
                    done -= n;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Report {
        engine: ring.engine(),
        posting: ring.posting(),
        note: ring.note().map(str::to_string),
        depth,
        block,
        reads: latencies.len() as u64,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        cpu,
        fixed: ring.stats().fixed_ops > 0,
    })
}

/// The subcommand.
pub fn run(out: &mut impl Write, path: &Path, plan: &Plan, json: bool) -> CliResult {
    let r = measure(path, plan)?;
    let engine = match r.engine {
        Engine::Uring => "io_uring",
        _ => "threads",
    };
    let cooperative = r.posting == Posting::Cooperative;
    if json {
        let value = json!({
            "file": path.display().to_string(),
            "engine": engine,
            "cooperative": cooperative,
            "note": r.note,
            "registered_buffers": r.fixed,
            "depth": r.depth,
            "block": r.block,
            "reads": r.reads,
            "seconds": r.elapsed.as_secs_f64(),
            "iops": r.iops(),
            "p50_us": r.p50.as_secs_f64() * 1e6,
            "p99_us": r.p99.as_secs_f64() * 1e6,
            "cpu_seconds": r.cpu,
            "cpu_seconds_per_gib": r.cpu / r.gib(),
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(
        out,
        "random {} reads of {}, depth {}, {}: {:.0} IOPS ({}/s)",
        format::bytes(r.block as u64),
        path.display(),
        r.depth,
        if cooperative {
            "io_uring, cooperative posting"
        } else {
            engine
        },
        r.iops(),
        format::bytes((r.iops() * r.block as f64) as u64)
    )?;
    writeln!(
        out,
        "  latency p50 {:.1} µs, p99 {:.1} µs over {} reads in {}",
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6,
        r.reads,
        format::seconds(r.elapsed)
    )?;
    writeln!(
        out,
        "  CPU {:.2} s ({:.2} s per GiB read); registered buffers: {}",
        r.cpu,
        r.cpu / r.gib(),
        if r.fixed { "yes" } else { "no" }
    )?;
    if let Some(note) = &r.note {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

/// xorshift64*: offsets spread over the file, the same sequence every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
