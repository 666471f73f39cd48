//! `pagebuf bench`: side-by-side ratios on this machine, pagebuf's way against the
//! buffered or naive way, measured in one run. (The criterion benchmarks and scripts
//! in the repository measure more carefully; this is the quick look.)

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use pagebuf::copy::CopyOptions;
use pagebuf::direct::DirectFile;
use pagebuf::direct::DirectWriter;
use pagebuf::{BufferAllocator, FramePool, Framing, PageAllocator};

use crate::record::Limit;
use crate::scratch::ScratchDir;
use crate::synthetic::VideoFormat;
use crate::{copy, format, record, CliResult};

struct Row {
    what: String,
    ours: String,
    theirs: String,
    /// How many times better pagebuf's way is.
    ratio: f64,
}

fn time(ops: u32, mut f: impl FnMut() -> pagebuf::Result<()>) -> pagebuf::Result<Duration> {
    let started = Instant::now();
    for _ in 0..ops {
        f()?;
    }
    Ok(started.elapsed() / ops)
}

fn short(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

pub fn run(out: &mut impl Write, size: u64) -> CliResult {
    let dir = ScratchDir::create("pagebuf-bench")?;
    writeln!(
        out,
        "pagebuf bench: {} of I/O per row, in ./{} (removed at the end)\n",
        format::bytes(size),
        dir.path().display()
    )?;
    let rows = [
        pool_reuse()?,
        small_round_trip()?,
        copy_row(dir.path(), size)?,
        record_row(dir.path(), size)?,
    ];
    writeln!(out, "| comparison | pagebuf | the other way | pagebuf is |")?;
    writeln!(out, "|---|---|---|---|")?;
    for row in rows {
        let verdict = if row.ratio >= 1.0 {
            format!("{:.2}x faster", row.ratio)
        } else {
            format!("{:.2}x slower", 1.0 / row.ratio)
        };
        writeln!(
            out,
            "| {} | {} | {} | {verdict} |",
            row.what, row.ours, row.theirs
        )?;
    }
    Ok(())
}

/// 1 MiB page-aligned buffer, fully written, returned: pool vs fresh mapping.
fn pool_reuse() -> pagebuf::Result<Row> {
    const OPS: u32 = 300;
    let pool = FramePool::new(Framing::new(1 << 20, 4))?;
    let fresh = PageAllocator::default();
    let fill = |mut buf: pagebuf::BufferMut| -> pagebuf::Result<()> {
        buf.whole_mut().fill(0x5A);
        black_box(&buf);
        Ok(())
    };
    let reused = time(OPS, || fill(pool.allocate()?))?;
    let mapped = time(OPS, || fill(fresh.allocate_page_aligned(1 << 20)?))?;
    Ok(Row {
        what: "1 MiB buffer written and returned: FramePool vs fresh mmap each time".into(),
        ours: short(reused),
        theirs: short(mapped),
        ratio: mapped.as_secs_f64() / reused.as_secs_f64(),
    })
}

/// 64 KiB try_allocate + drop vs `Vec::with_capacity`.
fn small_round_trip() -> pagebuf::Result<Row> {
    const OPS: u32 = 1_000_000;
    let pool = FramePool::new(Framing::new(64 << 10, 8))?;
    let ours = time(OPS, || {
        black_box(pool.try_allocate());
        Ok(())
    })?;
    let theirs = time(OPS, || {
        black_box(Vec::<u8>::with_capacity(black_box(64 << 10)));
        Ok(())
    })?;
    Ok(Row {
        what: "64 KiB take + drop: FramePool::try_allocate vs Vec::with_capacity".into(),
        ours: short(ours),
        theirs: short(theirs),
        ratio: theirs.as_secs_f64() / ours.as_secs_f64(),
    })
}

/// Writes `size` bytes with the raw direct writer; returns MiB/s.
fn raw_write(path: &Path, size: u64) -> pagebuf::Result<f64> {
    let started = Instant::now();
    let mut out = DirectWriter::new(DirectFile::create(path)?)?;
    let block = vec![0x3Cu8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])
            .map_err(|e| pagebuf::Error::io("writing", e))?;
        left -= n as u64;
    }
    out.finish()?;
    Ok(mib_per_s(size, started.elapsed()))
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Direct pipelined copy vs `std::fs::copy` + fsync.
fn copy_row(dir: &Path, size: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let src = dir.join("source");
    raw_write(&src, size)?; // written with O_DIRECT: not in the page cache
    let direct = copy::copy(
        &src,
        &dir.join("direct-copy"),
        &CopyOptions::default(),
        true,
    )?;
    let ours = mib_per_s(direct.bytes, direct.elapsed);
    let started = Instant::now();
    let dst = dir.join("buffered-copy");
    std::fs::copy(&src, &dst)?;
    std::fs::File::open(&dst)?.sync_all()?;
    let theirs = mib_per_s(size, started.elapsed());
    Ok(Row {
        what: format!(
            "copy {}: copy_file (direct, pipelined) vs std::fs::copy + fsync",
            format::bytes(size)
        ),
        ours: format!("{ours:.0} MiB/s"),
        theirs: format!("{theirs:.0} MiB/s"),
        ratio: ours / theirs,
    })
}

/// Recording through SampleWriter vs writing the same amount raw.
fn record_row(dir: &Path, size: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let video: VideoFormat = "1920x1080@60".parse()?;
    let path = dir.join("take.pbs");
    let report = record::record(&path, Some(video), true, Limit::Size(size), true)?;
    let ours = mib_per_s(report.summary.file_bytes, report.summary.elapsed);
    let theirs = raw_write(&dir.join("raw"), report.summary.bytes)?;
    Ok(Row {
        what: format!(
            "record {} of 1080p60 + audio: SampleWriter vs raw DirectWriter",
            format::bytes(size)
        ),
        ours: format!("{ours:.0} MiB/s"),
        theirs: format!("{theirs:.0} MiB/s"),
        ratio: ours / theirs,
    })
}
