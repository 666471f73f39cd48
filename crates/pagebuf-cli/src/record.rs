//! `pagebuf record OUT`: records the synthetic audio + video capture through
//! `SampleWriter`, so that `play --verify` can check every byte.

use std::io::Write;
use std::path::Path;

use pagebuf::pool::BufferPoolStats;
use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind, WriteSummary, TICKS_PER_SECOND};
use serde_json::json;

use crate::synthetic::{self, Capture, Next, VideoFormat, AUDIO_PACKET};
use crate::{format, progress, CliResult};

/// When to stop recording.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// Media seconds.
    Duration(f64),
    /// Bytes of samples.
    Size(u64),
}

/// What `record` did.
pub struct RecordReport {
    pub summary: WriteSummary,
    pub video: Option<VideoFormat>,
    pub pool: BufferPoolStats,
    pub direct: bool,
    /// For `--from`: how the frames of the capture went to the file.
    pub shared: Option<SharedFrames>,
}

/// How `record --from` wrote the frames it received.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedFrames {
    /// Frames written from the shared pages themselves.
    pub in_place: u64,
    /// Frames copied into the writer's own buffers first (another view of the frame
    /// was alive).
    pub copied: u64,
    /// Transfers the ring made from registered memory (`WRITE_FIXED`), and plain ones,
    /// while recording (its own blocks' included).
    pub fixed_writes: u64,
    pub plain_writes: u64,
}

/// The capture up to `limit`, without content: what will be written.
fn plan(video: Option<VideoFormat>, audio: bool, limit: Limit) -> Vec<Next> {
    let frame = video.map_or(0, |v| v.frame_bytes() as u64);
    let mut bytes = 0u64;
    Capture::new(video, audio)
        .take_while(|next| {
            let (time, size) = match *next {
                Next::Video { time, .. } => (time, frame),
                Next::Audio { time, .. } => (time, AUDIO_PACKET as u64),
            };
            let within = match limit {
                Limit::Duration(secs) => (time as f64) < secs * TICKS_PER_SECOND as f64,
                Limit::Size(max) => bytes < max,
            };
            bytes += size;
            within
        })
        .collect()
}

/// Records the capture to `path` with a progress bar (hidden when `quiet`).
pub fn record(
    path: &Path,
    video: Option<VideoFormat>,
    audio: bool,
    limit: Limit,
    quiet: bool,
) -> Result<RecordReport, Box<dyn std::error::Error>> {
    if video.is_none() && !audio {
        return Err("nothing to record: give --video WxH@FPS, --audio, or both".into());
    }
    let schedule = plan(video, audio, limit);
    let frame = video.map_or(0, |v| v.frame_bytes());
    let total: u64 = schedule
        .iter()
        .map(|n| match n {
            Next::Video { .. } => frame as u64,
            Next::Audio { .. } => AUDIO_PACKET as u64,
        })
        .sum();
    let writer = SampleWriter::create(path)?;
    let video_stream = video
        .map(|v| writer.add_stream_with(StreamKind::Video, synthetic::video_stream_format(&v)?))
        .transpose()?;
    let audio_stream = audio
        .then(|| writer.add_stream_with(StreamKind::Audio, synthetic::audio_stream_format()?))
        .transpose()?;
    writer.begin_writing()?;
    let bar = progress::bytes(total, "record", quiet);
    let mut done = 0u64;
    for next in schedule {
        let (stream, kind, index, time, size, flags) = match next {
            Next::Video { index, time } => {
                let fps = u64::from(video.map_or(1, |v| v.fps));
                let key = if index % fps == 0 {
                    SampleFlags::KEY_FRAME
                } else {
                    SampleFlags::empty()
                };
                (video_stream, StreamKind::Video, index, time, frame, key)
            }
            Next::Audio { index, time } => (
                audio_stream,
                StreamKind::Audio,
                index,
                time,
                AUDIO_PACKET,
                SampleFlags::empty(),
            ),
        };
        let stream = stream.ok_or("a sample for a stream that was not added")?;
        let mut sample = writer.allocate_sample(size)?;
        sample.set_len(size)?;
        synthetic::fill(kind, index, &mut sample);
        writer.write_sample(stream, time, flags, sample)?;
        done += size as u64;
        bar.set_position(done);
    }
    let summary = writer.end_writing()?;
    bar.finish_and_clear();
    Ok(RecordReport {
        summary,
        video,
        pool: writer.sample_pool_stats(),
        direct: writer.is_direct(),
        shared: None,
    })
}

pub fn run(
    out: &mut impl Write,
    path: &Path,
    video: Option<VideoFormat>,
    audio: bool,
    limit: Limit,
    as_json: bool,
) -> CliResult {
    let report = record(path, video, audio, limit, as_json)?;
    print(out, path, &report, as_json)
}

/// The report, as text or JSON.
pub fn print(out: &mut impl Write, path: &Path, report: &RecordReport, as_json: bool) -> CliResult {
    let s = &report.summary;
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "samples": s.samples,
            "bytes": s.bytes,
            "file_bytes": s.file_bytes,
            "media_seconds": s.media_duration.as_secs_f64(),
            "seconds": s.elapsed.as_secs_f64(),
            "bytes_per_second": s.throughput(),
            "zero_copy_samples": s.zero_copy_samples,
            "copied_samples": s.copied_samples,
            "direct": report.direct,
            "shared_frames": report.shared.map(|f| json!({
                "in_place": f.in_place,
                "copied": f.copied,
                "fixed_writes": f.fixed_writes,
                "plain_writes": f.plain_writes,
            })),
            "streams": s.streams.iter().map(|t| json!({"samples": t.samples, "bytes": t.bytes})).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    write_report(out, path, report)
}

pub fn write_report(out: &mut impl Write, path: &Path, report: &RecordReport) -> CliResult {
    let s = &report.summary;
    writeln!(
        out,
        "recorded {}: {} samples, {} of media in {} = {}",
        path.display(),
        s.samples,
        format::seconds(s.media_duration),
        format::seconds(s.elapsed),
        format::rate(s.file_bytes, s.elapsed)
    )?;
    let mut stream = s.streams.iter();
    if let Some(format) = report.video {
        let t = stream.next().copied().unwrap_or_default();
        writeln!(
            out,
            "  video {format}: {} frames of {}",
            t.samples,
            format::bytes(format.frame_bytes() as u64)
        )?;
    }
    if let Some(t) = stream.next() {
        writeln!(
            out,
            "  audio 48 kHz stereo: {} packets of {}",
            t.samples,
            format::bytes(AUDIO_PACKET as u64)
        )?;
    }
    writeln!(
        out,
        "  file {}; {} samples written from their own buffers, {} copied into shared blocks; direct I/O: {}",
        format::bytes(s.file_bytes),
        s.zero_copy_samples,
        s.copied_samples,
        if report.direct { "yes" } else { "no (buffered)" }
    )?;
    if let Some(f) = report.shared {
        writeln!(
            out,
            "  frames from the capture: {} written from the shared pages, {} copied; ring \
             writes: {} from registered memory, {} plain",
            f.in_place, f.copied, f.fixed_writes, f.plain_writes
        )?;
    }
    let mapped = report.pool.mapped_bytes();
    let reused: u64 = report.pool.classes.iter().map(|c| c.reused).sum();
    writeln!(
        out,
        "  sample pool: budget {}, {} mapped, buffers reused {} times, {} waits for memory",
        format::bytes(report.pool.budget as u64),
        format::bytes(mapped as u64),
        reused,
        report.pool.waits
    )?;
    Ok(())
}
