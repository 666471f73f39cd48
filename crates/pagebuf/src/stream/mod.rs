//! Recording and playing back timed samples (`IWMWriter`): [`SampleWriter`] owns every
//! sample it was handed until the sample is on disk, [`SampleReader`] gives them back
//! as [`Buffer`]s sliced from its direct reads. A stream may carry its media format
//! ([`StreamFormat`], given to [`SampleWriter::add_stream_with`] and read back in
//! [`StreamInfo::format`]). The file format is in `FORMAT.md`.
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
mod resume;
mod watermark;
mod writer;

use std::fmt;
use std::time::Duration;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub use crate::blocks::WriteTrace;
use crate::buffer::Buffer;
use crate::error::{Error, Result};
pub use flags::SampleFlags;
pub use reader::{ReaderOptions, SampleReader};
pub use resume::{RecordsEnd, ResumeReport};
pub use watermark::{StreamMark, Watermark};
pub use writer::{SampleWriter, WriterOptions};

/// Bytes in front of a sample's own bytes that
/// [`SampleWriter::write_sample`] writes the record header into. A sample of at least
/// 64 KiB whose bytes start this far into a block of memory aligned to the file's unit,
/// with room after them for the whole record (header and bytes, rounded up to the
/// unit), goes to the disk from that memory, without a copy: `allocate_sample` lays
/// samples out so, and a frame of any pool can be (a [`SharedPool`](crate::SharedPool)
/// frame filled by another process, received, sliced past this headroom and turned
/// back into a `BufferMut`). Any other sample is copied into the writer's blocks.
pub const SAMPLE_HEADROOM: usize = format::RECORD_HEADER;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream number samples carry (1..=63).
    pub number: u16,
    /// What the stream carries.
    pub kind: StreamKind,
    /// Totals from the index; `None` for a file without one (its writer did not finish).
    pub summary: Option<StreamSummary>,
    /// The media format the writer gave
    /// [`add_stream_with`](SampleWriter::add_stream_with); `None` for a stream added
    /// with [`add_stream`](SampleWriter::add_stream), and for every stream of a file of
    /// format version 1 or 2 (FORMAT.md, *Versions*).
    pub format: Option<StreamFormat>,
}

/// Bytes of codec data ([`StreamFormat::with_codec_data`]) one file holds, all its
/// streams together; one stream may take all of it.
///
/// The formats live in the file header, which must fit the smallest unit a file has
/// (4096 bytes) beside 63 stream entries, so that any reader can read it in one
/// direct read and its backup copy fits the unit after it: 63 streams of 32 bytes of
/// codec data each fit, as does one stream with an `avcC` or `hvcC` of a few hundred
/// bytes beside 62 others with less.
pub const CODEC_DATA_BUDGET: usize = 2016;

/// What a stream's samples hold, as the reference's `WM_MEDIA_TYPE` says it: the codec
/// (a four-character code), the picture or sound parameters, and the codec's private
/// data (an `avcC` or `esds` blob, a `WAVEFORMATEX`), which pagebuf stores and gives
/// back without looking inside.
///
/// Given to [`SampleWriter::add_stream_with`], stored in the file header, and read back
/// in [`StreamInfo::format`]. The constructors check the format's own values; the
/// writer checks what the file can hold (the stream's kind, [`CODEC_DATA_BUDGET`]).
///
/// ```
/// use pagebuf::stream::{MediaFormat, SampleReader, SampleWriter, StreamFormat, StreamKind};
///
/// # let dir = std::env::temp_dir().join(format!("pagebuf-doc-fmt-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("take.pbs");
/// let avcc = vec![0x01, 0x64, 0x00, 0x28, 0xFF, 0xE1]; // a decoder's configuration
/// let video = StreamFormat::video("avc1", 1920, 1080, (30_000, 1_001))?
///     .with_codec_data(avcc.clone());
/// let audio = StreamFormat::audio("mp4a", 48_000, 2)?.with_codec_data([0x11, 0x90]);
///
/// let writer = SampleWriter::create(&path)?;
/// writer.add_stream_with(StreamKind::Video, video.clone())?;
/// writer.add_stream_with(StreamKind::Audio, audio)?;
/// writer.add_stream(StreamKind::Data)?; // no format
/// writer.begin_writing()?;
/// writer.end_writing()?;
///
/// let reader = SampleReader::open(&path)?;
/// let streams = reader.streams();
/// assert_eq!(streams[0].format.as_ref(), Some(&video));
/// assert_eq!(streams[0].format.as_ref().unwrap().codec_data(), &avcc[..]);
/// assert!(matches!(
///     streams[1].format.as_ref().unwrap().media(),
///     MediaFormat::Audio { sample_rate: 48_000, channels: 2 }
/// ));
/// assert_eq!(streams[2].format, None);
/// assert_eq!(
///     video.to_string(),
///     "avc1 1920x1080 @ 29.97 fps (30000/1001), 6 bytes of codec data"
/// );
///
/// // A mistake is an error that says what to change, never a panic.
/// let err = StreamFormat::video("avc", 1920, 1080, (30, 1)).unwrap_err();
/// assert!(err.to_string().contains("codec"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamFormat {
    codec: [u8; 4],
    media: MediaFormat,
    codec_data: Vec<u8>,
}

/// The picture or sound parameters of a [`StreamFormat`]; its variant matches the
/// stream's [`StreamKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaFormat {
    /// Pictures: size in pixels and the nominal frame rate.
    Video {
        /// Pixels per row, at least 1.
        width: u32,
        /// Rows, at least 1.
        height: u32,
        /// Frames per second as (numerator, denominator), both at least 1: `(30, 1)`,
        /// or `(30_000, 1_001)` for NTSC's 29.97.
        frame_rate: (u32, u32),
    },
    /// Sound: sample rate and channel count.
    Audio {
        /// Samples per second per channel (Hz), at least 1.
        sample_rate: u32,
        /// Channels, at least 1.
        channels: u16,
    },
    /// Anything else: the codec and its data say it all.
    Data,
}

impl MediaFormat {
    /// The kind of stream this format describes.
    pub fn kind(&self) -> StreamKind {
        match self {
            MediaFormat::Video { .. } => StreamKind::Video,
            MediaFormat::Audio { .. } => StreamKind::Audio,
            MediaFormat::Data => StreamKind::Data,
        }
    }

    /// `Err` naming the first value that is zero.
    fn check(&self) -> Result<()> {
        let zero = match *self {
            MediaFormat::Video { width: 0, .. } => {
                Some("MediaFormat::Video width is 0; give the picture's width in pixels")
            }
            MediaFormat::Video { height: 0, .. } => {
                Some("MediaFormat::Video height is 0; give the picture's height in pixels")
            }
            MediaFormat::Video {
                frame_rate: (0, _), ..
            } => Some(
                "MediaFormat::Video frame_rate has a numerator of 0; give frames per second \
                 as (numerator, denominator), e.g. (30, 1) or (30000, 1001)",
            ),
            MediaFormat::Video {
                frame_rate: (_, 0), ..
            } => Some(
                "MediaFormat::Video frame_rate has a denominator of 0; give frames per \
                 second as (numerator, denominator), e.g. (30, 1) or (30000, 1001)",
            ),
            MediaFormat::Audio { sample_rate: 0, .. } => {
                Some("MediaFormat::Audio sample_rate is 0; give samples per second, e.g. 48000")
            }
            MediaFormat::Audio { channels: 0, .. } => {
                Some("MediaFormat::Audio channels is 0; give the channel count, e.g. 2")
            }
            _ => None,
        };
        zero.map_or(Ok(()), |why| Err(Error::InvalidArgument(why.into())))
    }
}

impl StreamFormat {
    /// A format of `codec` (exactly four bytes: `"avc1"`, `b"H264"`, `"raw "`) with the
    /// parameters `media`, and no codec data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the value to change: a codec that is not four
    /// bytes, or is four zero bytes; a width, height, frame rate term, sample rate or
    /// channel count of 0.
    pub fn new(codec: impl AsRef<[u8]>, media: MediaFormat) -> Result<StreamFormat> {
        let given = codec.as_ref();
        let codec: [u8; 4] = given.try_into().map_err(|_| {
            Error::InvalidArgument(format!(
                "StreamFormat codec \"{}\" is {} bytes; a codec is a four-character code of \
                 exactly 4 bytes (pad a shorter one with spaces, as \"raw \")",
                given.escape_ascii(),
                given.len()
            ))
        })?;
        if codec == [0; 4] {
            return Err(Error::InvalidArgument(
                "StreamFormat codec is four zero bytes; name the codec, e.g. \"avc1\", \
                 \"mp4a\" or \"I420\""
                    .into(),
            ));
        }
        media.check()?;
        Ok(StreamFormat {
            codec,
            media,
            codec_data: Vec::new(),
        })
    }

    /// A video format: `width` × `height` pixels at `frame_rate` (numerator,
    /// denominator) frames per second.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn video(
        codec: impl AsRef<[u8]>,
        width: u32,
        height: u32,
        frame_rate: (u32, u32),
    ) -> Result<StreamFormat> {
        StreamFormat::new(
            codec,
            MediaFormat::Video {
                width,
                height,
                frame_rate,
            },
        )
    }

    /// An audio format: `sample_rate` Hz, `channels` channels.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn audio(codec: impl AsRef<[u8]>, sample_rate: u32, channels: u16) -> Result<StreamFormat> {
        StreamFormat::new(
            codec,
            MediaFormat::Audio {
                sample_rate,
                channels,
            },
        )
    }

    /// A format for a data stream (captions, telemetry): the codec alone says what it
    /// holds.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn data(codec: impl AsRef<[u8]>) -> Result<StreamFormat> {
        StreamFormat::new(codec, MediaFormat::Data)
    }

    /// The same format carrying `codec_data`, the codec's private configuration (what
    /// a decoder needs before the first sample), stored as given. How much a file
    /// holds is checked by [`SampleWriter::add_stream_with`]: at most
    /// [`CODEC_DATA_BUDGET`] bytes, all streams together.
    pub fn with_codec_data(mut self, codec_data: impl Into<Vec<u8>>) -> StreamFormat {
        self.codec_data = codec_data.into();
        self
    }

    /// The codec's four-character code.
    pub fn codec(&self) -> [u8; 4] {
        self.codec
    }

    /// The picture or sound parameters.
    pub fn media(&self) -> MediaFormat {
        self.media
    }

    /// The codec's private data (empty if none was given).
    pub fn codec_data(&self) -> &[u8] {
        &self.codec_data
    }

    /// The kind of stream this format describes.
    pub fn kind(&self) -> StreamKind {
        self.media.kind()
    }

    /// Whether a stream of `kind` may carry this format in a file whose other streams'
    /// codec data take `taken` bytes.
    pub(crate) fn check_for_stream(&self, kind: StreamKind, taken: usize) -> Result<()> {
        if self.kind() != kind {
            return Err(Error::InvalidArgument(format!(
                "add_stream_with(StreamKind::{kind:?}, ..) with a {:?} format: a stream's \
                 format describes its kind; give a StreamFormat::{} or add the stream as \
                 StreamKind::{:?}",
                self.kind(),
                format!("{kind:?}").to_lowercase(),
                self.kind()
            )));
        }
        let room = CODEC_DATA_BUDGET.saturating_sub(taken);
        if self.codec_data.len() > room {
            return Err(Error::InvalidArgument(format!(
                "StreamFormat codec data of {} bytes does not fit: a file holds \
                 CODEC_DATA_BUDGET = {CODEC_DATA_BUDGET} bytes of codec data, all streams \
                 together, and the streams added before take {taken}; shorten it to at most \
                 {room} bytes (keep what a decoder needs to start)",
                self.codec_data.len()
            )));
        }
        Ok(())
    }

    /// Assembles a format read from a file, whose reader has checked every value.
    pub(crate) fn from_parts(codec: [u8; 4], media: MediaFormat, codec_data: Vec<u8>) -> Self {
        StreamFormat {
            codec,
            media,
            codec_data,
        }
    }
}

impl fmt::Display for StreamFormat {
    /// `avc1 1920x1080 @ 29.97 fps (30000/1001), 38 bytes of codec data`,
    /// `mp4a 48000 Hz, 2 channels`, `tx3g`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.codec.escape_ascii())?;
        match self.media {
            MediaFormat::Video {
                width,
                height,
                frame_rate: (num, den),
            } => {
                write!(f, " {width}x{height} @ ")?;
                if den == 1 {
                    write!(f, "{num} fps")?;
                } else {
                    let rate = f64::from(num) / f64::from(den);
                    write!(f, "{} fps ({num}/{den})", (rate * 100.0).round() / 100.0)?;
                }
            }
            MediaFormat::Audio {
                sample_rate,
                channels,
            } => {
                let noun = if channels == 1 { "channel" } else { "channels" };
                write!(f, " {sample_rate} Hz, {channels} {noun}")?;
            }
            MediaFormat::Data => {}
        }
        if !self.codec_data.is_empty() {
            write!(f, ", {} bytes of codec data", self.codec_data.len())?;
        }
        Ok(())
    }
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
