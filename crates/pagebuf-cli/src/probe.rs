//! `pagebuf probe PATH`: the device limits for a path, where each figure came from, and
//! what they mean for a caller.

use std::io::Write;
use std::path::Path;

use pagebuf::{DeviceLimits, Engine, IoRing};
use serde_json::json;

use crate::format;
use crate::CliResult;

pub fn run(out: &mut impl Write, path: &Path, as_json: bool) -> CliResult {
    let limits = DeviceLimits::for_path(path)?;
    let engine = engine_here()?;
    if as_json {
        let mut value = to_json(path, &limits);
        value["engine"] = json!({ "engine": engine.0, "note": engine.1 });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        write_table(out, path, &limits)?;
        writeln!(out, "I/O engine: {}", engine.0)?;
        if let Some(note) = engine.1 {
            writeln!(out, "  why: {note}")?;
        }
    }
    Ok(())
}

/// Which engine a ring gets in this process, and why where it is not io_uring.
fn engine_here() -> pagebuf::Result<(&'static str, Option<String>)> {
    let ring = IoRing::new()?;
    let name = match ring.engine() {
        Engine::Uring => "io_uring",
        _ => "worker threads",
    };
    Ok((name, ring.note().map(str::to_string)))
}

/// The figures, each with its source and meaning, in display order.
fn figures(limits: &DeviceLimits) -> Vec<(&'static str, String, String, &'static str)> {
    let s = &limits.sources;
    let size = |v: u64| format::bytes(v);
    vec![
        (
            "logical block size",
            size(limits.logical_block_size.into()),
            s.logical_block_size.to_string(),
            "smallest unit the device addresses",
        ),
        (
            "physical block size",
            size(limits.physical_block_size.into()),
            s.physical_block_size.to_string(),
            "smaller writes cost a read-modify-write",
        ),
        (
            "buffer alignment",
            size(limits.dio_mem_align.into()),
            s.dio_mem_align.to_string(),
            "O_DIRECT buffer addresses must be multiples of this",
        ),
        (
            "offset alignment",
            size(limits.dio_offset_align.into()),
            s.dio_offset_align.to_string(),
            "O_DIRECT offsets and lengths must be multiples of this",
        ),
        (
            "max transfer (page-aligned)",
            size(limits.max_page_aligned_transfer),
            s.max_transfer.to_string(),
            "largest single request from a page-aligned buffer",
        ),
        (
            "max transfer (unaligned)",
            size(limits.max_non_page_aligned_transfer),
            s.max_transfer.to_string(),
            "largest single request from any other buffer",
        ),
        (
            "optimal I/O size",
            if limits.optimal_io_size == 0 {
                "none".into()
            } else {
                size(limits.optimal_io_size)
            },
            s.optimal_io_size.to_string(),
            "the device's preferred transfer, if it states one",
        ),
        (
            "direct I/O",
            if limits.direct_io {
                "yes".into()
            } else {
                "no".into()
            },
            s.direct_io.to_string(),
            "whether O_DIRECT works here (tried)",
        ),
        (
            "untorn writes",
            if limits.atomic_write_unit_max == 0 {
                "none".into()
            } else {
                format!(
                    "{} to {}",
                    size(limits.atomic_write_unit_min.into()),
                    size(limits.atomic_write_unit_max.into())
                )
            },
            s.atomic_write.to_string(),
            "RWF_ATOMIC write sizes never torn by a crash (the log rewrites its tail with them)",
        ),
    ]
}

fn write_table(out: &mut impl Write, path: &Path, limits: &DeviceLimits) -> CliResult {
    let device = match &limits.device {
        Some(d) => format!(
            "{} ({}:{}{}), queue {}",
            d.name,
            d.major,
            d.minor,
            if d.partition {
                ", a partition of it"
            } else {
                ""
            },
            d.queue.display()
        ),
        None => "no block device behind this path".into(),
    };
    writeln!(out, "device limits for {}", path.display())?;
    writeln!(out, "  device: {device}")?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<28} {:>10}  {:<9} meaning",
        "figure", "value", "source"
    )?;
    for (name, value, source, meaning) in figures(limits) {
        writeln!(out, "  {name:<28} {value:>10}  {source:<9} {meaning}")?;
    }
    writeln!(out)?;
    writeln!(out, "for a caller:")?;
    for line in advice(limits) {
        writeln!(out, "  {line}")?;
    }
    if let Some(note) = &limits.note {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

/// What the figures mean for someone about to do I/O at the path.
fn advice(limits: &DeviceLimits) -> Vec<String> {
    let align = format::bytes(limits.alignment().into());
    let mut lines = Vec::new();
    if limits.direct_io {
        lines.push(format!(
            "use page-aligned buffers (PageAllocator, a pool), and offsets and lengths in \
             multiples of {align}"
        ));
    } else {
        lines.push("O_DIRECT is refused here: DirectIo::Prefer falls back to buffered I/O".into());
    }
    lines.push(format!(
        "transfers up to {} go to the device as one request; DirectFile splits larger ones",
        format::bytes(limits.max_page_aligned_transfer)
    ));
    if limits.physical_block_size > limits.logical_block_size {
        lines.push(format!(
            "write in multiples of {} to avoid read-modify-write",
            format::bytes(limits.physical_block_size.into())
        ));
    }
    lines
}

fn to_json(path: &Path, limits: &DeviceLimits) -> serde_json::Value {
    let s = &limits.sources;
    let figure = |value: serde_json::Value, source: pagebuf::device::Source| json!({ "value": value, "source": source.to_string() });
    json!({
        "path": path.display().to_string(),
        "device": limits.device.as_ref().map(|d| json!({
            "name": d.name,
            "major": d.major,
            "minor": d.minor,
            "partition": d.partition,
            "queue": d.queue.display().to_string(),
        })),
        "logical_block_size": figure(limits.logical_block_size.into(), s.logical_block_size),
        "physical_block_size": figure(limits.physical_block_size.into(), s.physical_block_size),
        "dio_mem_align": figure(limits.dio_mem_align.into(), s.dio_mem_align),
        "dio_offset_align": figure(limits.dio_offset_align.into(), s.dio_offset_align),
        "max_page_aligned_transfer": figure(limits.max_page_aligned_transfer.into(), s.max_transfer),
        "max_non_page_aligned_transfer": figure(limits.max_non_page_aligned_transfer.into(), s.max_transfer),
        "optimal_io_size": figure(limits.optimal_io_size.into(), s.optimal_io_size),
        "direct_io": figure(limits.direct_io.into(), s.direct_io),
        "atomic_write_unit_min": figure(limits.atomic_write_unit_min.into(), s.atomic_write),
        "atomic_write_unit_max": figure(limits.atomic_write_unit_max.into(), s.atomic_write),
        "alignment": limits.alignment(),
        "note": limits.note,
        "advice": advice(limits),
    })
}
