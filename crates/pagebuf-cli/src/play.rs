//! `pagebuf play FILE`: reads a sample file back through `SampleReader` and reports,
//! each stream's format included; with `--verify`, checks every sample (and every
//! stream format) against the synthetic capture `record` wrote.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use pagebuf::stream::{MediaFormat, SampleReader, StreamFormat, StreamKind, TICKS_PER_SECOND};
use serde_json::{json, Value};

use crate::synthetic::{self, VideoFormat, AUDIO_PACKET};
use crate::{format, progress, CliResult};

/// Per-stream totals seen while playing.
#[derive(Debug, Clone)]
pub struct Seen {
    pub number: u16,
    pub kind: StreamKind,
    /// What the file says the stream holds; `None` if its writer did not say.
    pub format: Option<StreamFormat>,
    pub samples: u64,
    pub bytes: u64,
    pub first: u64,
    pub last: u64,
}

/// What `play` did.
pub struct PlayReport {
    pub streams: Vec<Seen>,
    pub samples: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub indexed: bool,
    pub verified: bool,
}

/// Plays `path` (checking the synthetic content when `verify`), with a progress bar.
pub fn play(
    path: &Path,
    verify: bool,
    quiet: bool,
) -> Result<PlayReport, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let reader = SampleReader::open(path)?;
    let indexed = reader.has_index();
    let mut streams: Vec<Seen> = reader
        .streams()
        .iter()
        .map(|s| Seen {
            number: s.number,
            kind: s.kind,
            format: s.format.clone(),
            samples: 0,
            bytes: 0,
            first: 0,
            last: 0,
        })
        .collect();
    // The frame size and rate `record` wrote, where the file says them.
    let mut videos: Vec<Option<VideoFormat>> = vec![None; streams.len()];
    if verify {
        for (seen, video) in streams.iter().zip(&mut videos) {
            *video = check_synthetic_format(seen)?;
        }
    }
    let bar = progress::bytes(std::fs::metadata(path)?.len(), "play", quiet);
    let (mut samples, mut bytes) = (0u64, 0u64);
    for sample in reader {
        let sample = sample?;
        let at = usize::from(sample.stream) - 1;
        let seen = streams
            .get_mut(at)
            .ok_or("a sample of a stream the file does not declare")?;
        if verify {
            let index = seen.samples;
            let (size, time) = match (seen.kind, videos[at]) {
                (StreamKind::Audio, _) => (AUDIO_PACKET, Some(synthetic::packet_time(index))),
                (StreamKind::Video, Some(video)) => (
                    video.frame_bytes(),
                    Some(synthetic::frame_time(&video, index)),
                ),
                _ => (sample.data.len(), None),
            };
            let timely = time.is_none_or(|time| time == sample.time);
            if !timely || !synthetic::matches(seen.kind, index, size, &sample.data) {
                return Err(format!(
                    "sample {index} of stream {} ({:?}) at {:.3} s does not match the synthetic \
                     capture: this is not what `pagebuf record` wrote",
                    sample.stream,
                    seen.kind,
                    sample.time as f64 / TICKS_PER_SECOND as f64
                )
                .into());
            }
        }
        if seen.samples == 0 {
            seen.first = sample.time;
        }
        seen.last = sample.time;
        seen.samples += 1;
        seen.bytes += sample.data.len() as u64;
        samples += 1;
        bytes += sample.data.len() as u64;
        bar.set_position(bytes);
    }
    bar.finish_and_clear();
    Ok(PlayReport {
        streams,
        samples,
        bytes,
        elapsed: started.elapsed(),
        indexed,
        verified: verify,
    })
}

/// `Err` unless `seen`'s format, if it has one, is the one `record` gives its streams;
/// the video's frame size and rate, when it says them.
fn check_synthetic_format(seen: &Seen) -> Result<Option<VideoFormat>, String> {
    let Some(format) = &seen.format else {
        return Ok(None);
    };
    let (synthetic, video) = match seen.kind {
        StreamKind::Video => {
            let video = synthetic::video_format_of(format);
            (video.is_some(), video)
        }
        StreamKind::Audio => (
            synthetic::audio_stream_format().is_ok_and(|audio| audio == *format),
            None,
        ),
        _ => (false, None),
    };
    if !synthetic {
        return Err(format!(
            "stream {} ({:?}) is {format}, not a format `pagebuf record` writes: this is not \
             its synthetic capture",
            seen.number, seen.kind
        ));
    }
    Ok(video)
}

/// A stream's format as JSON: `null` without one.
fn format_json(format: Option<&StreamFormat>) -> Value {
    let Some(format) = format else {
        return Value::Null;
    };
    let mut value = json!({
        "codec": format.codec().escape_ascii().to_string(),
        "codec_data_bytes": format.codec_data().len(),
        "text": format.to_string(),
    });
    match format.media() {
        MediaFormat::Video {
            width,
            height,
            frame_rate,
        } => {
            value["width"] = json!(width);
            value["height"] = json!(height);
            value["frame_rate"] = json!([frame_rate.0, frame_rate.1]);
        }
        MediaFormat::Audio {
            sample_rate,
            channels,
        } => {
            value["sample_rate"] = json!(sample_rate);
            value["channels"] = json!(channels);
        }
        _ => {}
    }
    value
}

pub fn run(out: &mut impl Write, path: &Path, verify: bool, as_json: bool) -> CliResult {
    let report = play(path, verify, as_json)?;
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "samples": report.samples,
            "bytes": report.bytes,
            "seconds": report.elapsed.as_secs_f64(),
            "bytes_per_second": report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9),
            "indexed": report.indexed,
            "verified": report.verified,
            "streams": report.streams.iter().map(|s| json!({
                "number": s.number,
                "kind": format!("{:?}", s.kind).to_lowercase(),
                "samples": s.samples,
                "bytes": s.bytes,
                "first_time": s.first,
                "last_time": s.last,
                "format": format_json(s.format.as_ref()),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    write_report(out, path, &report)
}

pub fn write_report(out: &mut impl Write, path: &Path, report: &PlayReport) -> CliResult {
    writeln!(
        out,
        "played {}: {} samples, {} in {} = {}{}",
        path.display(),
        report.samples,
        format::bytes(report.bytes),
        format::seconds(report.elapsed),
        format::rate(report.bytes, report.elapsed),
        if report.indexed {
            ""
        } else {
            " (no index: recovered by scanning)"
        }
    )?;
    let secs = |t: u64| t as f64 / TICKS_PER_SECOND as f64;
    for s in &report.streams {
        writeln!(
            out,
            "  stream {} {:<6} {:>6} samples {:>10}  {:.3} s .. {:.3} s  {}",
            s.number,
            format!("{:?}", s.kind).to_lowercase(),
            s.samples,
            format::bytes(s.bytes),
            secs(s.first),
            secs(s.last),
            s.format
                .as_ref()
                .map_or_else(|| "(no format)".to_string(), |f| f.to_string())
        )?;
    }
    if report.verified {
        writeln!(
            out,
            "  verified: every sample is the synthetic capture, byte for byte"
        )?;
    }
    Ok(())
}
