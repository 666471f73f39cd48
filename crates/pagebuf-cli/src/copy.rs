//! `pagebuf copy SRC DST`: a direct-I/O copy of any file, reads and writes overlapping,
//! memory bounded by a pool (the library's `copy_file`).

use std::io::Write;
use std::path::Path;

use pagebuf::copy::{copy_file, CopyOptions, CopyReport, CopyRoad};
use serde_json::json;

use crate::{format, progress, CliResult};

/// Copies with a progress bar; the report for whoever prints it.
pub fn copy(
    src: &Path,
    dst: &Path,
    options: &CopyOptions,
    quiet: bool,
) -> pagebuf::Result<CopyReport> {
    // The library knows the total (a block device's size, where its metadata says 0)
    // and passes it with each block.
    let bar = progress::bytes(0, "copy", quiet);
    let report = copy_file(src, dst, options, &mut |done, total| {
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    report
}

pub fn run(
    out: &mut impl Write,
    src: &Path,
    dst: &Path,
    options: &CopyOptions,
    as_json: bool,
) -> CliResult {
    let report = copy(src, dst, options, as_json)?;
    if as_json {
        let value = json!({
            "source": src.display().to_string(),
            "destination": dst.display().to_string(),
            "bytes": report.bytes,
            "seconds": report.elapsed.as_secs_f64(),
            "bytes_per_second": report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9),
            "block_size": report.block_size,
            "depth": report.depth,
            "direct": { "source": report.direct.0, "destination": report.direct.1 },
            "road": match report.road {
                CopyRoad::Reflink => "reflink",
                _ => "blocks",
            },
            "note": report.note,
            "crc32c": report.checksum.map(|crc| format!("{crc:08x}")),
            "verified": report.verified,
            "memory_budget": report.pool.budget,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    write_report(out, src, dst, &report)
}

pub fn write_report(
    out: &mut impl Write,
    src: &Path,
    dst: &Path,
    report: &CopyReport,
) -> CliResult {
    let yes = |b: bool| if b { "yes" } else { "no (buffered)" };
    writeln!(
        out,
        "copied {} -> {}: {} in {} = {}",
        src.display(),
        dst.display(),
        format::bytes(report.bytes),
        format::seconds(report.elapsed),
        format::rate(report.bytes, report.elapsed)
    )?;
    if report.road == CopyRoad::Reflink {
        writeln!(
            out,
            "  reflink: the copy shares the source's blocks (nothing read or written; \
             --reflink never copies them)"
        )?;
    } else {
        writeln!(
            out,
            "  {} blocks, {} in flight each way; direct I/O: source {}, destination {}",
            format::bytes(report.block_size as u64),
            report.depth,
            yes(report.direct.0),
            yes(report.direct.1)
        )?;
        let mapped = report.pool.mapped_bytes();
        writeln!(
            out,
            "  memory: {} mapped, within the pool's budget of {} whatever the file size",
            format::bytes(mapped as u64),
            format::bytes(report.pool.budget as u64)
        )?;
    }
    if let Some(note) = &report.note {
        writeln!(out, "  note: {note}")?;
    }
    match (report.checksum, report.verified) {
        (Some(crc), true) => writeln!(out, "  verified: CRC32C {crc:08x} read back from the copy")?,
        (Some(crc), false) => writeln!(
            out,
            "  CRC32C {crc:08x} (add --verify to read the copy back)"
        )?,
        (None, _) => writeln!(out, "  add --verify to read both files back and compare")?,
    }
    Ok(())
}
