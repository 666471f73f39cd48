//! `pagebuf demo`: the main job with no input. It probes the working directory,
//! records a few hundred MiB of synthetic video and audio, plays it back verified,
//! copies it with direct I/O, and reports throughput, pool statistics and device
//! limits; then it removes everything it made.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use pagebuf::copy::CopyOptions;
use pagebuf::memory::{self, HugePages, Region, RegionOptions};
use pagebuf::{page_size, BufferMut, BufferPool, DeviceLimits, FramePool, Framing};

use crate::record::Limit;
use crate::scratch::ScratchDir;
use crate::synthetic::VideoFormat;
use crate::{copy, format, play, record, CliResult};

type DemoResult = CliResult;

pub fn run(out: &mut impl Write, size: u64) -> DemoResult {
    let dir = ScratchDir::create("pagebuf-demo")?;
    writeln!(
        out,
        "pagebuf {} demo: record {} of video and audio, play it back, copy it (in ./{}, removed at the end)",
        env!("CARGO_PKG_VERSION"),
        format::bytes(size),
        dir.path().display()
    )?;
    writeln!(out)?;
    write_limits(out, Path::new("."))?;
    writeln!(out)?;

    let take = dir.path().join("take.pbs");
    let video: VideoFormat = "1920x1080@60".parse()?;
    let recorded = record::record(&take, Some(video), true, Limit::Size(size), false)?;
    record::write_report(out, &take, &recorded)?;
    writeln!(out)?;
    let played = play::play(&take, true, false)?;
    play::write_report(out, &take, &played)?;
    writeln!(out)?;
    let copied_path = dir.path().join("copy.pbs");
    let copied = copy::copy(
        &take,
        &copied_path,
        &CopyOptions::default().verify(true),
        false,
    )?;
    copy::write_report(out, &take, &copied_path, &copied)?;
    writeln!(out)?;
    write_machine(out)?;
    writeln!(out)?;
    write_pools(out)?;
    writeln!(out)?;
    writeln!(
        out,
        "removed ./{}; try `pagebuf probe .`, `pagebuf record take.pbs --audio`, `pagebuf bench`",
        dir.path().display()
    )?;
    Ok(())
}

fn write_limits(out: &mut impl Write, path: &Path) -> DemoResult {
    let limits = DeviceLimits::for_path(path)?;
    let device = limits
        .device
        .as_ref()
        .map_or("no block device".to_string(), |d| {
            format!("{} ({}:{})", d.name, d.major, d.minor)
        });
    writeln!(
        out,
        "device limits for the working directory (`pagebuf probe .` shows all)"
    )?;
    writeln!(
        out,
        "  {device}: align buffers to {}, offsets and lengths to {}; at most {} per request; direct I/O {}",
        format::bytes(limits.dio_mem_align.into()),
        format::bytes(limits.dio_offset_align.into()),
        format::bytes(limits.max_page_aligned_transfer),
        if limits.direct_io { "works" } else { "refused (buffered fallback)" }
    )?;
    Ok(())
}

fn write_machine(out: &mut impl Write) -> DemoResult {
    writeln!(out, "memory")?;
    writeln!(
        out,
        "  page size        {}",
        format::bytes(page_size() as u64)
    )?;
    let huge = memory::huge_page_size().map_or("none".to_string(), |s| format::bytes(s as u64));
    writeln!(out, "  huge page size   {huge}")?;
    let probe = Region::map(
        2 << 20,
        RegionOptions::default().huge_pages(HugePages::Prefer),
    )?;
    let huge_state = match probe.fallback_note() {
        None if probe.is_huge() => "granted (reserved huge pages)".to_string(),
        None => "not requested".to_string(),
        Some(note) => note.to_string(),
    };
    writeln!(out, "  huge pages       {huge_state}")?;
    let locked = match Region::map(64 << 10, RegionOptions::default().lock(true)) {
        Ok(_) => "available (64 KiB locked and released)".to_string(),
        Err(err) => format!("refused: {err}"),
    };
    writeln!(out, "  mlock            {locked}")?;
    Ok(())
}

fn write_pools(out: &mut impl Write) -> DemoResult {
    writeln!(
        out,
        "pools (memory allocated once, reused; back-pressure when all is out)"
    )?;
    let frames = FramePool::new(Framing::new(64 << 10, 16))?;
    let first = frames
        .try_allocate()
        .ok_or("a fresh pool has free frames")?;
    writeln!(
        out,
        "  FramePool   16 x {} frames, alignment {}, origin {}",
        format::bytes(first.max_len() as u64),
        first.alignment(),
        first.origin()
    )?;
    drop(first);
    // A producer thread fills frames while this thread consumes and drops them.
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let producer = {
        let frames = frames.clone();
        std::thread::spawn(move || -> pagebuf::Result<()> {
            for i in 0..100_000u32 {
                let mut frame = frames.allocate()?;
                frame.extend_from_slice(&i.to_le_bytes())?;
                if tx.send(frame.freeze()).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    let started = Instant::now();
    let mut received = 0u32;
    for frame in rx {
        if frame[..] != received.to_le_bytes() {
            return Err(format!("frame {received} arrived out of order").into());
        }
        received += 1;
    }
    producer
        .join()
        .map_err(|_| "the producer thread panicked")??;
    let elapsed = started.elapsed();
    let stats = frames.stats();
    writeln!(
        out,
        "  100,000 frames producer -> consumer thread in {:.1} ms ({:.0} ns per frame)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / f64::from(received)
    )?;
    writeln!(
        out,
        "  stats: {} allocations, high water {} of {}, {} waits, {} free now",
        stats.allocations, stats.high_water, stats.frames, stats.waits, stats.free
    )?;

    let buffers = BufferPool::new(16 << 20)?;
    let sizes = [3 << 20, 4000, 3 << 20, 200_000, 4000];
    for _round in 0..3 {
        let held: Vec<BufferMut> = sizes
            .iter()
            .map(|&size| buffers.allocate(size))
            .collect::<pagebuf::Result<_>>()?;
        drop(held);
    }
    let stats = buffers.stats();
    writeln!(
        out,
        "  BufferPool  budget {}, {} cached after 3 rounds of {} mixed buffers:",
        format::bytes(stats.budget as u64),
        format::bytes(stats.bytes_cached as u64),
        sizes.len()
    )?;
    for class in &stats.classes {
        writeln!(
            out,
            "    class {:>9}: {} mapped, {} reused",
            format::bytes(class.size as u64),
            class.mapped,
            class.reused
        )?;
    }
    Ok(())
}
