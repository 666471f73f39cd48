//! `pagebuf demo`: the tour with no input. For now it shows the allocators; it grows
//! into record / play / copy as the library gains pools, direct I/O and the writer.

use std::io::Write;

use std::time::Instant;

use pagebuf::memory::{self, HugePages, Region, RegionOptions};
use pagebuf::{
    page_size, BufferAllocator, BufferMut, BufferPool, FramePool, Framing, HeapAllocator,
    PageAllocator,
};

use crate::format;

type DemoResult = Result<(), Box<dyn std::error::Error>>;

pub fn run(out: &mut impl Write) -> DemoResult {
    writeln!(out, "pagebuf {} demo", env!("CARGO_PKG_VERSION"))?;
    writeln!(out)?;
    write_machine(out)?;
    writeln!(out)?;
    write_allocations(out)?;
    writeln!(out)?;
    write_sharing(out)?;
    writeln!(out)?;
    write_pools(out)?;
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

fn write_allocations(out: &mut impl Write) -> DemoResult {
    let heap = HeapAllocator::default();
    let pages = PageAllocator::default();
    let prefaulted = PageAllocator::default().prefault(true);
    let allocators: [(&str, &dyn BufferAllocator); 3] = [
        ("HeapAllocator", &heap),
        ("PageAllocator", &pages),
        ("PageAllocator+prefault", &prefaulted),
    ];
    writeln!(
        out,
        "allocations (a new buffer has len 0 and max_len exactly as asked)"
    )?;
    writeln!(
        out,
        "  {:<24}{:<23}{:>10}{:>10}{:>11}  {:<16}origin",
        "allocator", "call", "asked", "max_len", "alignment", "address"
    )?;
    let mut held = Vec::new();
    for (name, alloc) in allocators {
        for size in [1000, 1 << 20] {
            let calls: [(&str, pagebuf::Result<BufferMut>); 2] = [
                ("allocate", alloc.allocate(size)),
                ("allocate_page_aligned", alloc.allocate_page_aligned(size)),
            ];
            for (call, buf) in calls {
                let buf = buf?;
                writeln!(
                    out,
                    "  {name:<24}{call:<23}{:>10}{:>10}{:>11}  {:<16}{}",
                    format::bytes(size as u64),
                    format::bytes(buf.max_len() as u64),
                    buf.alignment(),
                    format!("{:#x}", buf.as_ptr() as usize),
                    buf.origin()
                )?;
                held.push(buf);
            }
        }
    }
    let out_now = |stats: pagebuf::AllocatorStats| {
        format!(
            "{} buffers, {} live",
            stats.live_buffers,
            format::bytes(stats.live_bytes as u64)
        )
    };
    writeln!(
        out,
        "  holding: heap {}; pages {}",
        out_now(heap.stats()),
        out_now(pages.stats())
    )?;
    drop(held);
    let (h, p) = (heap.stats(), pages.stats());
    writeln!(
        out,
        "  after drop: heap {}/{} returned, pages {}/{} returned, {} still live",
        h.releases,
        h.allocations,
        p.releases,
        p.allocations,
        format::bytes((h.live_bytes + p.live_bytes) as u64)
    )?;
    Ok(())
}

fn write_sharing(out: &mut impl Write) -> DemoResult {
    writeln!(
        out,
        "sharing (freeze, slice, clone: no copies, one release)"
    )?;
    let pages = PageAllocator::default();
    let mut frame = pages.allocate_page_aligned(64 << 10)?;
    frame.extend_from_slice(b"header|payload bytes")?;
    let address = frame.as_ptr() as usize;
    let frozen = frame.freeze();
    let header = frozen.slice(..6)?;
    let payload = frozen.slice(7..)?;
    writeln!(
        out,
        "  frozen {} at {address:#x}; slices at +{} and +{}; ref_count {}",
        format::bytes(frozen.len() as u64),
        header.as_ptr() as usize - address,
        payload.as_ptr() as usize - address,
        frozen.ref_count()
    )?;
    drop((frozen, header));
    let reclaimed = payload.try_into_mut();
    writeln!(
        out,
        "  last slice back to writable: {} (memory returned: {})",
        if reclaimed.is_ok() { "yes" } else { "no" },
        pages.stats().releases
    )?;
    drop(reclaimed);
    writeln!(
        out,
        "  memory returned after the last drop: {}",
        pages.stats().releases
    )?;
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
