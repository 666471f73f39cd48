//! [`Watermark`]: what a [`SampleWriter::flush`](super::SampleWriter::flush) made
//! durable.

use super::StreamSummary;

/// What is durable after a [`SampleWriter::flush`](super::SampleWriter::flush): per
/// stream, in the order the streams were added, how many samples and up to what time.
/// A crash from then on loses none of them (they are read back, with or without the
/// index).
///
/// ```
/// use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-watermark.pbs");
/// let writer = SampleWriter::create(&path)?;
/// let audio = writer.add_stream(StreamKind::Audio)?;
/// writer.begin_writing()?;
/// for i in 0..3u64 {
///     let mut sample = writer.allocate_sample(4096)?;
///     sample.extend_from_slice(&[i as u8; 4096])?;
///     writer.write_sample(audio, i * 100_000, SampleFlags::empty(), sample)?;
/// }
/// let mark = writer.flush()?;
/// assert_eq!(mark.stream(audio).map(|m| m.samples), Some(3));
/// assert_eq!(mark.stream(audio).and_then(|m| m.last_time), Some(200_000));
/// writer.end_writing()?;
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watermark {
    /// One entry per stream: `streams[i]` is stream number `i + 1`.
    pub streams: Vec<StreamMark>,
}

/// One stream's part of a [`Watermark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamMark {
    /// Samples of the stream now durable (the first this many written).
    pub samples: u64,
    /// The time of the last of them (100 ns units); `None` before the first.
    pub last_time: Option<u64>,
}

impl Watermark {
    /// Stream `number`'s part (the number `add_stream` returned); `None` for a number
    /// the writer never gave.
    pub fn stream(&self, number: u16) -> Option<StreamMark> {
        let index = usize::from(number).checked_sub(1)?;
        self.streams.get(index).copied()
    }

    /// The watermark of streams whose totals are `totals`.
    pub(crate) fn of(totals: &[StreamSummary]) -> Watermark {
        Watermark {
            streams: totals
                .iter()
                .map(|t| StreamMark {
                    samples: t.samples,
                    last_time: (t.samples > 0).then_some(t.last_time),
                })
                .collect(),
        }
    }
}
