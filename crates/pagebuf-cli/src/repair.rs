//! `pagebuf repair FILE`: a sample file whose writer died, resumed (`SampleWriter::resume`)
//! and ended (`end_writing`), so it has its index again; prints what was kept and what
//! was cut.

use std::io::Write;
use std::path::Path;

use pagebuf::stream::{
    RecordsEnd, ResumeReport, SampleReader, SampleWriter, WriteSummary, TICKS_PER_SECOND,
};
use serde_json::json;

use crate::format::bytes;
use crate::CliResult;

pub fn run(out: &mut impl Write, path: &Path, as_json: bool) -> CliResult {
    if SampleReader::open(path)?.has_index() {
        if as_json {
            let value = json!({ "path": path.display().to_string(), "repaired": false });
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        } else {
            writeln!(
                out,
                "{} is finished (its index is intact): nothing to repair",
                path.display()
            )?;
        }
        return Ok(());
    }
    let writer = SampleWriter::resume(path)?;
    let report = writer
        .resumed()
        .cloned()
        .ok_or("the writer was not resumed")?;
    let summary = writer.end_writing()?;
    drop(writer);
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "repaired": true,
            "kept_samples": report.samples(),
            "data_end": report.data_end,
            "resumed_at": report.resumed_at,
            "cut_bytes": report.cut_bytes,
            "torn": match &report.end {
                RecordsEnd::Torn { offset, detail } => json!({ "offset": offset, "detail": detail }),
                _ => serde_json::Value::Null,
            },
            "streams": report.streams.iter().enumerate().map(|(i, s)| json!({
                "number": i + 1,
                "samples": s.samples,
                "bytes": s.bytes,
                "last_time": s.last_time,
            })).collect::<Vec<_>>(),
            "file_bytes": summary.file_bytes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    write_report(out, path, &report, &summary)
}

fn write_report(
    out: &mut impl Write,
    path: &Path,
    report: &ResumeReport,
    summary: &WriteSummary,
) -> CliResult {
    writeln!(
        out,
        "repaired {}: kept {} samples in {} of records",
        path.display(),
        report.samples(),
        bytes(report.data_end),
    )?;
    for (i, stream) in report.streams.iter().enumerate() {
        writeln!(
            out,
            "  stream {}: {} samples, {}, up to {:.3} s",
            i + 1,
            stream.samples,
            bytes(stream.bytes),
            stream.last_time as f64 / TICKS_PER_SECOND as f64,
        )?;
    }
    match &report.end {
        RecordsEnd::Torn { offset, detail } => writeln!(
            out,
            "cut {} from offset {offset}: the record there was not whole ({detail})",
            bytes(report.cut_bytes + (report.resumed_at - report.data_end)),
        )?,
        _ => writeln!(
            out,
            "cut {} past the records (nothing was torn: space the writer had reserved)",
            bytes(report.cut_bytes),
        )?,
    }
    writeln!(
        out,
        "index written: the file is finished ({}, {} samples)",
        bytes(summary.file_bytes),
        summary.samples,
    )?;
    Ok(())
}
