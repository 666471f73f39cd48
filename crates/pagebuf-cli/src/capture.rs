//! `pagebuf capture --share SOCKET`: a synthetic camera in its own process. It fills
//! the frames of a `SharedPool` and hands them over to the recorder that connects to
//! SOCKET (`pagebuf record OUT --from SOCKET`), which writes them to disk from the same
//! pages: no copy between the processes, and back-pressure across them (the camera
//! waits for a free frame while every frame is out).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use pagebuf::memory::{HugePages, RegionOptions};
use pagebuf::pool::FrameMemory;
use pagebuf::stream::{StreamKind, SAMPLE_HEADROOM};
use pagebuf::{Error, Framing, PoolStats, SharedPool};
use serde_json::json;

use crate::share::{self, Description, LOOK_EVERY, MAX_FRAMES};
use crate::synthetic::{self, VideoFormat};
use crate::{format, CliResult};

/// Frames in the shared pool unless given: enough for the recorder's writes in flight
/// and a few of slack (with 8, the recorder waited for frames and ran at 0.82x its
/// speed alone; BENCHMARKS.md, issue 16).
pub const POOL_FRAMES: usize = 16;
/// The most frames `--pool-frames` takes.
pub const MAX_POOL_FRAMES: usize = 1024;

/// What a capture did.
pub struct CaptureReport {
    pub description: Description,
    pub elapsed: Duration,
    pub pool: PoolStats,
    /// Whether the frames are on reserved huge pages, and if not why (when asked for).
    pub huge: bool,
    pub huge_note: Option<String>,
    /// What the recorder said it finished with (`done N`), if it said.
    pub recorded: Option<u64>,
}

/// Removes the socket's path when the capture ends, pass or fail.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Waits for one recorder on `socket`, then hands it `duration` seconds of `video`
/// (paced to the frame rate when `realtime`, else as fast as the recorder takes them).
pub fn capture(
    socket: &Path,
    video: VideoFormat,
    duration: f64,
    (pool_frames, realtime, huge_pages): (usize, bool, bool),
    mut waiting: impl FnMut(&Path),
) -> Result<CaptureReport, Box<dyn std::error::Error>> {
    if !(2..=MAX_POOL_FRAMES).contains(&pool_frames) {
        return Err(format!("--pool-frames {pool_frames}: give 2 to {MAX_POOL_FRAMES}").into());
    }
    let frames = (duration * f64::from(video.fps)).ceil() as u64;
    if !(1..=MAX_FRAMES).contains(&frames) {
        return Err(format!(
            "--duration {duration} at {} fps is {frames} frames; give 1 to {MAX_FRAMES}",
            video.fps
        )
        .into());
    }
    let description = Description { video, frames };
    let mut framing = Framing::new(description.frame_size(), pool_frames);
    if huge_pages {
        framing = framing.memory(FrameMemory::Pages(
            RegionOptions::default().huge_pages(HugePages::Prefer),
        ));
    }
    let pool = SharedPool::create(framing)?;
    if socket.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists; remove it or give another path for the capture's socket",
            socket.display()
        )
        .into());
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    let _remove = RemoveOnDrop(socket);
    waiting(socket);
    let (mut peer, _) = listener
        .accept()
        .map_err(|e| format!("accepting a recorder on {}: {e}", socket.display()))?;
    pool.send_to(&peer)?;
    description.send(&mut peer)?;

    let started = Instant::now();
    let bytes = video.frame_bytes();
    for index in 0..frames {
        if realtime {
            let due = Duration::from_nanos(synthetic::frame_time(&video, index) * 100);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut frame = loop {
            match pool.allocate_timeout(LOOK_EVERY) {
                Ok(frame) => break frame,
                // Every frame is out: with the recorder, or in the ring for it. If it is
                // gone, nobody will give them back.
                Err(Error::Timeout { .. }) if share::peer_gone(&peer) => {
                    return Err(
                        format!("the recorder went away after {index} of {frames} frames").into(),
                    )
                }
                Err(Error::Timeout { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        };
        frame.set_len(SAMPLE_HEADROOM + bytes)?;
        synthetic::fill(StreamKind::Video, index, &mut frame[SAMPLE_HEADROOM..]);
        pool.hand_over(frame)?;
    }
    // The recorder says when its file is finished (or the socket closes if it died).
    let reply = share::read_line(&mut peer)?;
    let recorded = reply
        .strip_prefix("done ")
        .and_then(|n| n.trim().parse().ok());
    Ok(CaptureReport {
        description,
        elapsed: started.elapsed(),
        pool: pool.stats(),
        huge: pool.is_huge(),
        huge_note: pool.fallback_note().map(str::to_string),
        recorded,
    })
}

pub fn run(
    out: &mut impl Write,
    socket: &Path,
    video: VideoFormat,
    duration: f64,
    options: (usize, bool, bool),
    as_json: bool,
) -> CliResult {
    let report = capture(socket, video, duration, options, |path| {
        if !as_json {
            let _ = writeln!(
                out,
                "waiting for a recorder: pagebuf record OUT --from {}",
                path.display()
            );
            let _ = out.flush();
        }
    })?;
    let d = report.description;
    let bytes = d.frames * d.video.frame_bytes() as u64;
    if as_json {
        let value = json!({
            "socket": socket.display().to_string(),
            "video": d.video.to_string(),
            "frames": d.frames,
            "frame_bytes": d.video.frame_bytes(),
            "seconds": report.elapsed.as_secs_f64(),
            "bytes_per_second": bytes as f64 / report.elapsed.as_secs_f64(),
            "pool_frames": report.pool.frames,
            "pool_frame_size": report.pool.frame_size,
            "waits_for_a_frame": report.pool.waits,
            "huge_pages": report.huge,
            "huge_pages_note": report.huge_note,
            "recorded": report.recorded,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(
            out,
            "captured {} frames of {} ({}) in {} = {}, handed over through {}",
            d.frames,
            d.video,
            format::bytes(d.video.frame_bytes() as u64),
            format::seconds(report.elapsed),
            format::rate(bytes, report.elapsed),
            socket.display()
        )?;
        writeln!(
            out,
            "  shared pool: {} frames of {} on {} pages; the camera waited for a free frame \
             {} times",
            report.pool.frames,
            format::bytes(report.pool.frame_size as u64),
            if report.huge { "huge" } else { "normal" },
            report.pool.waits
        )?;
        if let Some(note) = &report.huge_note {
            writeln!(out, "  note: {note}")?;
        }
    }
    match report.recorded {
        Some(n) if n == d.frames => Ok(()),
        Some(n) => Err(format!("the recorder finished with {n} of {} frames", d.frames).into()),
        None => Err("the recorder went away before it said its file was finished".into()),
    }
}
