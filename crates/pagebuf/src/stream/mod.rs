//! Recording and playing back timed samples (`IWMWriter`): [`SampleWriter`] owns every
//! sample it was handed until the sample is on disk, [`SampleReader`] gives them back
//! as [`Buffer`]s sliced from its direct reads. The file format is in `FORMAT.md`.
//!
//! ```
//! use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind};
//!
//! # let dir = std::env::temp_dir().join(format!("pagebuf-doc-stream-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("take1.pbs");
//! let writer = SampleWriter::create(&path)?;
//! let video = writer.add_stream(StreamKind::Video)?;
//! let audio = writer.add_stream(StreamKind::Audio)?;
//! writer.begin_writing()?;
//! for frame in 0..10u64 {
//!     let time = frame * 166_667; // 100 ns units: 60 frames a second
//!     let mut picture = writer.allocate_sample(100_000)?;
//!     picture.whole_mut().fill(frame as u8);
//!     picture.set_len(100_000)?;
//!     writer.write_sample(video, time, SampleFlags::KEY_FRAME, picture)?;
//!     let mut sound = writer.allocate_sample(3_840)?;
//!     sound.extend_from_slice(&[7; 3_840])?;
//!     writer.write_sample(audio, time, SampleFlags::empty(), sound)?;
//! }
//! let summary = writer.end_writing()?;
//! assert_eq!(summary.samples, 20);
//!
//! let reader = SampleReader::open(&path)?;
//! assert_eq!(reader.streams().len(), 2);
//! let mut frames = 0;
//! for sample in reader {
//!     let sample = sample?;
//!     if sample.stream == video {
//!         assert_eq!(sample.data.len(), 100_000);
//!         frames += 1;
//!     }
//! }
//! assert_eq!(frames, 10);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), pagebuf::Error>(())
//! ```

mod flags;
pub(crate) mod format;
mod reader;
mod watermark;
mod writer;

use std::time::Duration;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub use crate::blocks::WriteTrace;
use crate::buffer::Buffer;
pub use flags::SampleFlags;
pub use reader::{ReaderOptions, SampleReader};
pub use watermark::{StreamMark, Watermark};
pub use writer::{SampleWriter, WriterOptions};

/// Time in 100-nanosecond units (the reference's `QWORD cnsSampleTime`) per second.
pub const TICKS_PER_SECOND: u64 = 10_000_000;

/// What a stream carries; stored in the file so a player knows what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKind {
    /// Sound: packets of samples.
    Audio,
    /// Pictures: frames.
    Video,
    /// Anything else (captions, telemetry, logs).
    Data,
}

impl StreamKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            StreamKind::Audio => 1,
            StreamKind::Video => 2,
            StreamKind::Data => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<StreamKind> {
        match code {
            1 => Some(StreamKind::Audio),
            2 => Some(StreamKind::Video),
            3 => Some(StreamKind::Data),
            _ => None,
        }
    }
}

/// Totals for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSummary {
    /// Samples written.
    pub samples: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Time of the first sample (100 ns units; 0 if none).
    pub first_time: u64,
    /// Time of the last sample (100 ns units; 0 if none).
    pub last_time: u64,
}

impl StreamSummary {
    pub(crate) fn record(&mut self, time: u64, bytes: u64) {
        if self.samples == 0 {
            self.first_time = time;
        }
        self.samples += 1;
        self.bytes += bytes;
        self.last_time = time;
    }
}

/// A stream of a sample file as a reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream number samples carry (1..=63).
    pub number: u16,
    /// What the stream carries.
    pub kind: StreamKind,
    /// Totals from the index; `None` for a file without one (its writer did not finish).
    pub summary: Option<StreamSummary>,
}

/// One sample read back.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The stream it belongs to.
    pub stream: u16,
    /// Presentation time, 100 ns units.
    pub time: u64,
    /// Key frame, discontinuity.
    pub flags: SampleFlags,
    /// The payload: a slice of the block the reader read, not a copy.
    pub data: Buffer,
}

/// What [`SampleWriter::end_writing`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// Samples written.
    pub samples: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// The file's length, headers, index and padding included.
    pub file_bytes: u64,
    /// Totals per stream, in stream-number order (stream `n` at `n - 1`).
    pub streams: Vec<StreamSummary>,
    /// Media time from the earliest to the latest sample.
    pub media_duration: Duration,
    /// Wall time from `begin_writing` to the end of `end_writing`.
    pub elapsed: Duration,
    /// Samples written straight from their own buffer (no copy).
    pub zero_copy_samples: u64,
    /// Samples copied into a shared block (small ones, and any not from
    /// `allocate_sample`).
    pub copied_samples: u64,
}

impl WriteSummary {
    /// File bytes per second of wall time.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.file_bytes as f64 / secs
        } else {
            0.0
        }
    }
}
