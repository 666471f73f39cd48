//! `pagebuf record OUT --from SOCKET`: records the frames a capture process
//! (`pagebuf capture --share SOCKET`) hands over through a `SharedPool`. Each frame is
//! written to the sample file straight from the shared pages (direct I/O, no copy):
//! its bytes start `SAMPLE_HEADROOM` into the frame, where the writer puts the record
//! header.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind, SAMPLE_HEADROOM};
use pagebuf::{Error, IoRing, SharedPool};

use crate::record::{RecordReport, SharedFrames};
use crate::share::{self, Description, LOOK_EVERY};
use crate::{progress, synthetic, CliResult};

/// How long to keep trying to connect while no capture listens yet (both commands
/// may be started at once).
const CONNECT_FOR: Duration = Duration::from_secs(10);

fn connect(socket: &Path) -> Result<UnixStream, String> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                    && started.elapsed() < CONNECT_FOR =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                return Err(format!(
                    "no capture at {}: {e}; start `pagebuf capture --share {}` first",
                    socket.display(),
                    socket.display()
                ))
            }
        }
    }
}

/// The next frame, or `None` once the capture is gone with nothing more handed over.
fn next_frame(
    pool: &SharedPool,
    peer: &mut UnixStream,
) -> pagebuf::Result<Option<pagebuf::Buffer>> {
    loop {
        match pool.receive_timeout(LOOK_EVERY) {
            Ok(frame) => return Ok(Some(frame)),
            Err(Error::Timeout { .. }) if share::peer_gone(peer) => return pool.try_receive(),
            Err(Error::Timeout { .. }) => {}
            Err(other) => return Err(other),
        }
    }
}

/// Records what the capture at `socket` hands over into `path`.
pub fn record_from(
    path: &Path,
    socket: &Path,
    quiet: bool,
) -> Result<RecordReport, Box<dyn std::error::Error>> {
    let mut peer = connect(socket)?;
    let pool = SharedPool::receive_from(&peer)?;
    let description = Description::receive(&mut peer)?;
    let video = description.video;
    let bytes = video.frame_bytes();
    let frame_size = pool.stats().frame_size;
    if frame_size < SAMPLE_HEADROOM + bytes {
        return Err(format!(
            "the capture's frames are {frame_size} bytes, too small for {video} frames after \
             {SAMPLE_HEADROOM} bytes of headroom"
        )
        .into());
    }
    // The writer's ring (the process's) takes the frames as fixed buffers where it can:
    // no page pinning per write. Speed only: a refusal leaves plain writes.
    let ring = IoRing::process_default()?;
    let _registration = ring.register_shared_pool(&pool).ok();
    let ring_before = ring.stats();
    let mut frames = SharedFrames::default();
    let writer = SampleWriter::create(path)?;
    let stream =
        writer.add_stream_with(StreamKind::Video, synthetic::video_stream_format(&video)?)?;
    writer.begin_writing()?;
    let bar = progress::bytes(description.frames * bytes as u64, "record", quiet);
    let mut received = 0u64;
    while received < description.frames {
        let Some(frame) = next_frame(&pool, &mut peer)? else {
            break;
        };
        if frame.len() != SAMPLE_HEADROOM + bytes {
            return Err(format!(
                "frame {received} from the capture holds {} bytes, not {}; {} is left \
                 unfinished (pagebuf repair finishes it)",
                frame.len(),
                SAMPLE_HEADROOM + bytes,
                path.display()
            )
            .into());
        }
        // The view past the headroom, and no other: unique, so writable again.
        let past_headroom = frame.slice(SAMPLE_HEADROOM..)?;
        drop(frame);
        let sample = match past_headroom.try_into_mut() {
            Ok(sample) => {
                frames.in_place += 1;
                sample
            }
            // Another view of it is alive (never, with this loop): write a copy.
            Err(shared) => {
                frames.copied += 1;
                let mut copy = writer.allocate_sample(bytes)?;
                copy.extend_from_slice(&shared)?;
                copy
            }
        };
        let key = if received % u64::from(video.fps) == 0 {
            SampleFlags::KEY_FRAME
        } else {
            SampleFlags::empty()
        };
        writer.write_sample(stream, synthetic::frame_time(&video, received), key, sample)?;
        received += 1;
        bar.set_position(received * bytes as u64);
    }
    let summary = writer.end_writing()?;
    let ring_after = ring.stats();
    frames.fixed_writes = ring_after.fixed_ops - ring_before.fixed_ops;
    frames.plain_writes = ring_after.plain_ops - ring_before.plain_ops;
    bar.finish_and_clear();
    // Best effort: the capture reports and exits on this, or on the socket closing.
    let _ = writeln!(peer, "done {received}");
    if received < description.frames {
        return Err(format!(
            "the capture went away after {received} of {} frames; {} holds those, finished",
            description.frames,
            path.display()
        )
        .into());
    }
    Ok(RecordReport {
        summary,
        video: Some(video),
        pool: writer.sample_pool_stats(),
        direct: writer.is_direct(),
        shared: Some(frames),
    })
}

pub fn run(out: &mut impl Write, path: &Path, socket: &Path, as_json: bool) -> CliResult {
    let report = record_from(path, socket, as_json)?;
    crate::record::print(out, path, &report, as_json)
}
