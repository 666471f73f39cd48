//! What [`SampleWriter::resume`](super::SampleWriter::resume) finds in a file whose writer
//! died, and how it closes the torn tail before appending goes on.
//!
//! The file is read exactly as a [`SampleReader`] recovers it (FORMAT.md, *Recovery*):
//! every whole record from the data start, up to zeroes, the end of the file, an index
//! record (a writer that died between its index and its header), or the first record that
//! is not whole. Those records are kept; everything after them is cut. The unit they end
//! in keeps its bytes and is closed with a pad record, so appending goes on at a unit
//! boundary, and the file is cut there: stale records of the dead writer beyond it can
//! never be read as if they followed the new ones.

use crate::alloc::{BufferAllocator, PageAllocator};
use crate::direct::{DirectFile, DirectIo};
use crate::error::{Error, Result};
use crate::ring::IoRing;

use super::format::{payload_crc, FileHeader, RecordHeader, RecordKind, RECORD_HEADER};
use super::reader::{ReaderOptions, SampleReader};
use super::{SampleFlags, StreamSummary};

/// What [`SampleWriter::resume`](super::SampleWriter::resume) kept of a file and what it
/// cut ([`SampleWriter::resumed`](super::SampleWriter::resumed)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeReport {
    /// Totals of the samples kept, per stream (stream `n` is `streams[n - 1]`).
    pub streams: Vec<StreamSummary>,
    /// Where the kept records end.
    pub data_end: u64,
    /// Where appending goes on: `data_end` rounded up to the file's unit (the rest of
    /// that unit is a pad record now).
    pub resumed_at: u64,
    /// Bytes the file held past `resumed_at` that are gone: a torn record, what the dead
    /// writer had in flight, space it had reserved ahead.
    pub cut_bytes: u64,
    /// Why the records end at `data_end`.
    pub end: RecordsEnd,
}

impl ResumeReport {
    /// Samples kept, all streams.
    pub fn samples(&self) -> u64 {
        self.streams.iter().map(|s| s.samples).sum()
    }
}

/// Why a resumed file's records end where they do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordsEnd {
    /// Zeroes, the end of the file, or an index record where the next record would be:
    /// nothing was torn.
    Clean,
    /// A record that was not whole (torn by the crash, or damaged), and what was wrong
    /// with it.
    Torn {
        /// The record's file offset (= `data_end`).
        offset: u64,
        /// What the reader found wrong.
        detail: String,
    },
}

/// A sample record kept: where it is, whose, when, and how long its payload.
pub(crate) struct KeptSample {
    pub(crate) offset: u64,
    pub(crate) stream: u16,
    pub(crate) time: u64,
    pub(crate) len: u64,
}

/// What a died writer's file holds.
pub(crate) struct Recovered {
    pub(crate) header: FileHeader,
    pub(crate) samples: Vec<KeptSample>,
    pub(crate) next_sequence: u64,
    pub(crate) data_end: u64,
    pub(crate) end: RecordsEnd,
}

/// Reads `file` as a reader recovers it, on `ring`.
///
/// # Errors
/// [`Error::InvalidRequest`] for a file `end_writing` finished (it has its index: read
/// it); the reader's errors for a file that is not a sample file or whose header (and
/// backup) is damaged; [`Error::Io`].
pub(crate) fn recover(file: &DirectFile, ring: &IoRing, direct: DirectIo) -> Result<Recovered> {
    let mut reader = SampleReader::with_options(
        file.path(),
        ReaderOptions::default().ring(ring.clone()).direct(direct),
    )?;
    if reader.header().finalized {
        return Err(Error::InvalidRequest(format!(
            "{} was finished by end_writing (its index is written): there is nothing to \
             resume; read it with SampleReader, or record to a new file",
            file.path().display()
        )));
    }
    let mut samples = Vec::new();
    let mut torn = None;
    while let Some(item) = reader.next() {
        match item {
            Ok(sample) => samples.push(KeptSample {
                offset: reader.last_offset().unwrap_or(0),
                stream: sample.stream,
                time: sample.time,
                len: sample.data.len() as u64,
            }),
            Err(Error::Corrupt { offset, detail }) => {
                torn = Some((offset, detail));
                break;
            }
            Err(err) => return Err(err),
        }
    }
    let (data_end, end) = match torn {
        Some((offset, detail)) => (offset, RecordsEnd::Torn { offset, detail }),
        None => (reader.records_end(), RecordsEnd::Clean),
    };
    Ok(Recovered {
        header: reader.header().clone(),
        samples,
        next_sequence: reader.next_sequence(),
        data_end,
        end,
    })
}

/// Closes the records ending at `data_end` (records are 64-byte multiples, so a gap to
/// the unit boundary holds a pad record's header): the unit they end in is written back
/// with its bytes before `data_end` as they are (a torn write of them leaves the same
/// bytes) and a pad record, numbered `sequence`, to its end; the file is cut at the
/// boundary (a block device keeps its length) and synced. Returns the boundary and
/// whether a pad record was written.
pub(crate) fn close_tail(
    file: &DirectFile,
    data_end: u64,
    unit: u64,
    sequence: u64,
) -> Result<(u64, bool)> {
    let boundary = data_end.next_multiple_of(unit);
    let padded = boundary != data_end;
    if padded {
        let from = data_end / unit * unit;
        let len = unit as usize;
        let mut block = PageAllocator::default().allocate_page_aligned(len)?;
        file.read_at(&mut block, from)?;
        let kept = (data_end - from) as usize;
        block.set_len(len)?;
        block[kept..].fill(0);
        RecordHeader {
            kind: RecordKind::Pad,
            stream: 0,
            flags: SampleFlags::empty(),
            time: 0,
            record_len: boundary - data_end,
            payload_len: 0,
            payload_crc: payload_crc(&[]),
            sequence,
        }
        .encode(&mut block[kept..kept + RECORD_HEADER]);
        file.write_at(&block, from)?;
    }
    if !file.is_block_device() {
        file.set_len(boundary)?;
    }
    file.sync_data()?;
    Ok((boundary, padded))
}
