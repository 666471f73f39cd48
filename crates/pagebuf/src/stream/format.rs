//! The byte layout of a sample file (FORMAT.md is the prose; this is the code), and the
//! checks a reader makes before it believes a byte.
//!
//! * A file is a header of `unit` bytes, a backup of it in the next `unit` bytes
//!   (from version 2: written once, never rewritten, so a header torn while
//!   `end_writing` rewrote it loses nothing), then records, each at a 64-byte
//!   boundary, each starting with a 64-byte [`RecordHeader`] whose own CRC32C covers
//!   every field, including `record_len`, the distance to the next record; a record's
//!   payload has a second CRC32C. A reader therefore never follows a damaged length,
//!   and never yields a payload whose checksum fails.
//! * The header's stream table (version 3) carries each stream's media format, and
//!   the streams' codec data follows it; [`CODEC_DATA_BUDGET`] keeps the whole header
//!   within [`MIN_UNIT`], so it is read whole with the first direct read and its
//!   backup fits the next unit. Every format field is checked behind the CRC too: a
//!   header whose CRC holds over impossible values is damage, not a format.
//! * All integers are little-endian. Every field a writer leaves unused is zero, and a
//!   reader of this version ignores reserved bytes (they are still covered by the CRC).

use crate::error::{Error, Result};

use super::{MediaFormat, SampleFlags, StreamFormat, StreamKind, StreamSummary, CODEC_DATA_BUDGET};

/// The file's first eight bytes.
pub(crate) const FILE_MAGIC: [u8; 8] = *b"PBSTREAM";
/// The format version this code writes: 3, whose stream table carries each stream's
/// media format. It also reads versions 2 and 1.
pub(crate) const VERSION: u16 = VERSION_3;
/// The oldest version this code reads: no backup header, records from `unit`.
const VERSION_1: u16 = 1;
/// The first version with the backup header at `unit`, and records from `2 * unit`.
const VERSION_2: u16 = 2;
/// The first version whose stream table carries media formats (32-byte entries, then
/// the streams' codec data).
const VERSION_3: u16 = 3;
/// The first four bytes of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"PBRC";
/// Size of a record header, and the alignment of every record (and so of every payload).
pub(crate) const RECORD_HEADER: usize = 64;
/// The smallest alignment unit a writer uses, whatever the device allows: a file written
/// on a 512-byte device stays readable with direct I/O on a 4096-byte one.
pub(crate) const MIN_UNIT: usize = 4096;
/// Bytes of the fixed part of the file header, before the stream table.
const FILE_HEADER_FIXED: usize = 64;
/// Bytes per stream-table entry in the file header of versions 1 and 2.
const STREAM_ENTRY_V1: usize = 16;
/// Bytes per stream-table entry from version 3: the version-2 entry's first three bytes,
/// then the media format. With [`CODEC_DATA_BUDGET`] after 63 of them, a header is
/// at most [`MIN_UNIT`] bytes: any reader gets it whole in its first direct read.
const STREAM_ENTRY_V3: usize = 32;
/// A version-3 stream entry's format field: the stream has no format ...
const NO_FORMAT: u8 = 0;
/// ... or has one, whose fields are read as the stream's kind says.
const HAS_FORMAT: u8 = 1;
/// Bytes of the index payload's fixed part.
const INDEX_FIXED: usize = 16;
/// Bytes per stream summary in the index.
const INDEX_STREAM: usize = 40;
/// Bytes per index point.
const INDEX_POINT: usize = 16;
/// The most streams a file holds (stream numbers are 1..=63).
pub(crate) const MAX_STREAMS: usize = 63;
/// Header flag: `end_writing` completed; the index is valid.
const FLAG_FINALIZED: u32 = 1;
/// Header flag (from version 2): this is the backup at offset `unit`, written once by
/// `begin_writing`; never set in the header at offset 0, never with `FLAG_FINALIZED`.
const FLAG_BACKUP: u32 = 2;
/// The largest unit a header can state (a power of two in a `u32`).
pub(crate) const MAX_UNIT: u64 = 1 << 31;

/// Where the first record starts in a file of `version` with alignment `unit`: after
/// the header (version 1), or after the header and its backup (version 2 on).
pub(crate) fn data_start(version: u16, unit: u64) -> u64 {
    if version == VERSION_1 {
        unit
    } else {
        2 * unit
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC32C of a payload (the checksum a record carries for its bytes).
pub(crate) fn payload_crc(bytes: &[u8]) -> u32 {
    crc(bytes)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Rounds `n` up to a multiple of `unit` (a power of two); `None` on overflow.
pub(crate) fn round_up(n: u64, unit: u64) -> Option<u64> {
    Some(n.checked_add(unit - 1)? & !(unit - 1))
}

/// The file header: what a reader needs before the first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileHeader {
    /// The format version: [`VERSION`] for a file this code writes; 1 for an older one.
    pub(crate) version: u16,
    /// Alignment unit of the file: records written without copying start at multiples
    /// of it, and the first record starts at [`data_start`](Self::data_start).
    pub(crate) unit: u32,
    /// Set by `end_writing`: `index_offset` is valid.
    pub(crate) finalized: bool,
    /// Offset of the index record (also where sample records end), if finalized.
    pub(crate) index_offset: u64,
    /// Sample records written, if finalized.
    pub(crate) samples: u64,
    /// The writer's sync tolerance, 100 ns units (informational).
    pub(crate) sync_tolerance: u64,
    /// Stream kinds; stream `n` is `streams[n - 1]`.
    pub(crate) streams: Vec<StreamKind>,
    /// Stream formats, as many as `streams`; all `None` before version 3.
    pub(crate) formats: Vec<Option<StreamFormat>>,
}

impl FileHeader {
    /// Bytes of the header that carry data (the rest of the unit is zero).
    fn used_len(&self) -> usize {
        if self.version < VERSION_3 {
            return FILE_HEADER_FIXED + STREAM_ENTRY_V1 * self.streams.len();
        }
        let codec_data: usize = self
            .formats
            .iter()
            .flatten()
            .map(|f| f.codec_data().len())
            .sum();
        FILE_HEADER_FIXED + STREAM_ENTRY_V3 * self.streams.len() + codec_data
    }

    /// Where the first record starts.
    pub(crate) fn data_start(&self) -> u64 {
        data_start(self.version, u64::from(self.unit))
    }

    /// Writes the header (the one at offset 0) into `out` (at least `used_len` bytes, at
    /// most [`MIN_UNIT`] with formats the writer checked; zeroed by the caller).
    pub(crate) fn encode(&self, out: &mut [u8]) {
        self.encode_flags(out, 0);
    }

    /// Writes the backup header (the one at offset `unit`, from version 2) into `out`: the
    /// same header with the backup flag. Only a header that is not finalized has one.
    pub(crate) fn encode_backup(&self, out: &mut [u8]) {
        debug_assert!(self.version >= VERSION_2 && !self.finalized);
        self.encode_flags(out, FLAG_BACKUP);
    }

    fn encode_flags(&self, out: &mut [u8], extra: u32) {
        let used = self.used_len();
        put(out, 0, &FILE_MAGIC);
        put(out, 8, &self.version.to_le_bytes());
        put(out, 12, &self.unit.to_le_bytes());
        put(out, 16, &(used as u32).to_le_bytes());
        let flags = extra | if self.finalized { FLAG_FINALIZED } else { 0 };
        put(out, 20, &flags.to_le_bytes());
        put(out, 24, &self.index_offset.to_le_bytes());
        put(out, 32, &self.samples.to_le_bytes());
        put(out, 40, &self.sync_tolerance.to_le_bytes());
        put(out, 48, &(self.streams.len() as u16).to_le_bytes());
        let entry = if self.version < VERSION_3 {
            STREAM_ENTRY_V1
        } else {
            STREAM_ENTRY_V3
        };
        let mut codec_data_at = FILE_HEADER_FIXED + entry * self.streams.len();
        for (i, kind) in self.streams.iter().enumerate() {
            let at = FILE_HEADER_FIXED + entry * i;
            put(out, at, &((i + 1) as u16).to_le_bytes());
            out[at + 2] = kind.code();
            let format = self.formats.get(i).and_then(Option::as_ref);
            debug_assert!(format.is_none() || self.version >= VERSION_3);
            if let Some(format) = format.filter(|_| self.version >= VERSION_3) {
                encode_format(&mut out[at..at + STREAM_ENTRY_V3], format);
                let data = format.codec_data();
                put(out, codec_data_at, data);
                codec_data_at += data.len();
            }
        }
        put(out, 60, &[0; 4]);
        let sum = crc(&out[..used]);
        put(out, 60, &sum.to_le_bytes());
    }

    /// Reads and checks the header from the first bytes of a file.
    pub(crate) fn decode(b: &[u8]) -> Result<FileHeader> {
        FileHeader::decode_slot(b, None)
    }

    /// Reads and checks `b` as the backup header of a file whose unit is `at`, read from
    /// offset `at`: as strictly as the header at 0, and it must say it is a backup
    /// (version 2 or later, the backup flag, not finalized) of unit `at`.
    pub(crate) fn decode_backup(b: &[u8], at: u64) -> Result<FileHeader> {
        FileHeader::decode_slot(b, Some(at))
    }

    /// `backup`: `None` for the header at 0, or the offset the backup was read from.
    fn decode_slot(b: &[u8], backup: Option<u64>) -> Result<FileHeader> {
        let base = backup.unwrap_or(0);
        let bad = |offset: u64, detail: String| Error::Corrupt {
            offset: base + offset,
            detail,
        };
        if b.len() < FILE_HEADER_FIXED {
            return Err(bad(
                0,
                format!("{} bytes are too short for a sample file header", b.len()),
            ));
        }
        if b[..8] != FILE_MAGIC {
            return Err(bad(
                0,
                "not a pagebuf sample file (the magic bytes differ); open a file SampleWriter wrote".into(),
            ));
        }
        // The first 64 bytes keep their places in every version: magic, version, the
        // used length at 16 and the checksum at 60. So damage is told from a newer file.
        let used = u32_at(b, 16) as usize;
        if used < FILE_HEADER_FIXED || used > b.len() {
            return Err(bad(16, format!("header length {used} is not possible")));
        }
        let mut scratch = b[..used].to_vec();
        put(&mut scratch, 60, &[0; 4]);
        if crc(&scratch) != u32_at(b, 60) {
            return Err(bad(0, "the file header's checksum does not match".into()));
        }
        if backup.is_some_and(|at| u64::from(u32_at(b, 12)) != at) {
            return Err(bad(
                12,
                format!(
                    "a header of unit {} cannot be the backup at offset {base}",
                    u32_at(b, 12)
                ),
            ));
        }
        let version = u16_at(b, 8);
        if !(VERSION_1..=VERSION).contains(&version) {
            return Err(Error::Unsupported(format!(
                "sample file version {version}; this pagebuf reads versions {VERSION_1} to \
                 {VERSION}: open it with a newer pagebuf"
            )));
        }
        if backup.is_some() && version < VERSION_2 {
            return Err(bad(
                8,
                format!("a version {version} file has no backup header"),
            ));
        }
        let count = u16_at(b, 48) as usize;
        let entry = if version < VERSION_3 {
            STREAM_ENTRY_V1
        } else {
            STREAM_ENTRY_V3
        };
        let table_end = FILE_HEADER_FIXED + entry * count;
        // Before version 3 the table ends the header; from 3 the codec data follows it.
        let fits = if version < VERSION_3 {
            used == table_end
        } else {
            used >= table_end
        };
        if count > MAX_STREAMS || !fits {
            return Err(bad(
                16,
                format!("header length {used} with {count} streams is inconsistent"),
            ));
        }
        let unit = u32_at(b, 12);
        if !unit.is_power_of_two() || (unit as usize) < MIN_UNIT {
            return Err(bad(
                12,
                format!("alignment unit {unit} is not a power of two >= {MIN_UNIT}"),
            ));
        }
        let mut streams = Vec::with_capacity(count);
        let mut formats = Vec::with_capacity(count);
        let mut codec_data_at = table_end;
        for i in 0..count {
            let at = FILE_HEADER_FIXED + entry * i;
            let kind = StreamKind::from_code(b[at + 2]).filter(|_| u16_at(b, at) as usize == i + 1);
            let kind = kind.ok_or_else(|| {
                bad(
                    at as u64,
                    format!("stream table entry {} is not valid", i + 1),
                )
            })?;
            let format = if version < VERSION_3 {
                None
            } else {
                decode_format(
                    &b[at..at + STREAM_ENTRY_V3],
                    kind,
                    &b[..used],
                    &mut codec_data_at,
                )
                .map_err(|(field, detail)| {
                    bad((at + field) as u64, format!("stream {}: {detail}", i + 1))
                })?
            };
            streams.push(kind);
            formats.push(format);
        }
        if codec_data_at - table_end > CODEC_DATA_BUDGET {
            return Err(bad(
                16,
                format!(
                    "the streams' codec data takes {} bytes, more than a writer stores \
                     ({CODEC_DATA_BUDGET})",
                    codec_data_at - table_end
                ),
            ));
        }
        if codec_data_at != used {
            return Err(bad(
                16,
                format!(
                    "header length {used} does not end where the streams' codec data ends \
                     ({codec_data_at})"
                ),
            ));
        }
        let flags = u32_at(b, 20);
        let finalized = flags & FLAG_FINALIZED != 0;
        // Version 1 knew only the finalized flag (and ignored the others, as it still
        // does); from version 2 the backup flag says which copy this is.
        if version >= VERSION_2 {
            let is_backup = flags & FLAG_BACKUP != 0;
            if is_backup != backup.is_some() {
                let detail = if is_backup {
                    "the header at offset 0 is marked as the backup header"
                } else {
                    "the backup header is not marked as one"
                };
                return Err(bad(20, detail.into()));
            }
            if backup.is_some() && (finalized || u64_at(b, 24) != 0 || u64_at(b, 32) != 0) {
                return Err(bad(
                    20,
                    "the backup header is finalized, and a backup never is".into(),
                ));
            }
        }
        Ok(FileHeader {
            version,
            unit,
            finalized,
            index_offset: u64_at(b, 24),
            samples: u64_at(b, 32),
            sync_tolerance: u64_at(b, 40),
            streams,
            formats,
        })
    }
}

/// Writes `format` into a version-3 stream entry (`entry`: its 32 bytes, number and
/// kind already in place); its codec data goes after the table, by the caller.
fn encode_format(entry: &mut [u8], format: &StreamFormat) {
    entry[3] = HAS_FORMAT;
    put(entry, 4, &format.codec());
    match format.media() {
        MediaFormat::Video {
            width,
            height,
            frame_rate: (num, den),
        } => {
            put(entry, 8, &width.to_le_bytes());
            put(entry, 12, &height.to_le_bytes());
            put(entry, 16, &num.to_le_bytes());
            put(entry, 20, &den.to_le_bytes());
        }
        MediaFormat::Audio {
            sample_rate,
            channels,
        } => {
            put(entry, 8, &sample_rate.to_le_bytes());
            put(entry, 12, &channels.to_le_bytes());
        }
        MediaFormat::Data => {}
    }
    let len = u16::try_from(format.codec_data().len()).expect("within CODEC_DATA_BUDGET");
    put(entry, 24, &len.to_le_bytes());
}

/// Reads the format of a version-3 stream entry of `kind`, taking its codec data from
/// `header` (the header's used bytes) at `*codec_data_at` and moving that past it.
/// `Err((offset in the entry, what is wrong))`: nothing a writer writes.
fn decode_format(
    entry: &[u8],
    kind: StreamKind,
    header: &[u8],
    codec_data_at: &mut usize,
) -> std::result::Result<Option<StreamFormat>, (usize, String)> {
    match entry[3] {
        NO_FORMAT => return Ok(None),
        HAS_FORMAT => {}
        other => return Err((3, format!("unknown format code {other}"))),
    }
    let codec: [u8; 4] = entry[4..8].try_into().expect("4 bytes");
    if codec == [0; 4] {
        return Err((4, "the format names no codec".into()));
    }
    let media = match kind {
        StreamKind::Video => MediaFormat::Video {
            width: u32_at(entry, 8),
            height: u32_at(entry, 12),
            frame_rate: (u32_at(entry, 16), u32_at(entry, 20)),
        },
        StreamKind::Audio => MediaFormat::Audio {
            sample_rate: u32_at(entry, 8),
            channels: u16_at(entry, 12),
        },
        StreamKind::Data => MediaFormat::Data,
    };
    let zero = match media {
        MediaFormat::Video { width: 0, .. } => Some((8, "width")),
        MediaFormat::Video { height: 0, .. } => Some((12, "height")),
        MediaFormat::Video {
            frame_rate: (0, _), ..
        } => Some((16, "frame rate numerator")),
        MediaFormat::Video {
            frame_rate: (_, 0), ..
        } => Some((20, "frame rate denominator")),
        MediaFormat::Audio { sample_rate: 0, .. } => Some((8, "sample rate")),
        MediaFormat::Audio { channels: 0, .. } => Some((12, "channel count")),
        _ => None,
    };
    if let Some((at, field)) = zero {
        return Err((at, format!("its {kind:?} format has a {field} of 0")));
    }
    let len = usize::from(u16_at(entry, 24));
    let end = codec_data_at
        .checked_add(len)
        .filter(|&end| end <= header.len());
    let Some(end) = end else {
        return Err((
            24,
            format!(
                "codec data of {len} bytes at header byte {} runs past the header's {} bytes",
                codec_data_at,
                header.len()
            ),
        ));
    };
    let codec_data = header[*codec_data_at..end].to_vec();
    *codec_data_at = end;
    Ok(Some(StreamFormat::from_parts(codec, media, codec_data)))
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A sample: stream, time, flags and payload.
    Sample = 1,
    /// Filler up to an alignment boundary; its bytes mean nothing.
    Pad = 2,
    /// The index written by `end_writing`.
    Index = 3,
}

/// The 64 bytes in front of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) kind: RecordKind,
    pub(crate) stream: u8,
    pub(crate) flags: SampleFlags,
    pub(crate) time: u64,
    /// Bytes from this header to the next record: a multiple of 64, at least
    /// `64 + payload_len`.
    pub(crate) record_len: u64,
    pub(crate) payload_len: u64,
    pub(crate) payload_crc: u32,
    /// Records written before this one (pads included).
    pub(crate) sequence: u64,
}

/// Why 64 bytes are not a record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderFault {
    /// All zero: nothing was ever written here.
    Unwritten,
    /// Anything else, described.
    Bad(String),
}

impl RecordHeader {
    /// The smallest record holding `payload_len` bytes, rounded to `align`.
    pub(crate) fn span(payload_len: u64, align: u64) -> Option<u64> {
        round_up(payload_len.checked_add(RECORD_HEADER as u64)?, align)
    }

    /// Writes the header into `out[..64]`, checksum last.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..RECORD_HEADER];
        out.fill(0);
        put(out, 0, &RECORD_MAGIC);
        out[4] = self.kind as u8;
        out[5] = self.stream;
        put(out, 6, &self.flags.bits().to_le_bytes());
        put(out, 8, &self.time.to_le_bytes());
        put(out, 16, &self.record_len.to_le_bytes());
        put(out, 24, &self.payload_len.to_le_bytes());
        put(out, 32, &self.payload_crc.to_le_bytes());
        put(out, 40, &self.sequence.to_le_bytes());
        let sum = crc(&out[..60]);
        put(out, 60, &sum.to_le_bytes());
    }

    /// Reads and checks the header in `b[..64]`.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<RecordHeader, HeaderFault> {
        let b = &b[..RECORD_HEADER];
        if b.iter().all(|&x| x == 0) {
            return Err(HeaderFault::Unwritten);
        }
        if b[..4] != RECORD_MAGIC {
            return Err(HeaderFault::Bad(
                "no record starts here (magic bytes differ)".into(),
            ));
        }
        if crc(&b[..60]) != u32_at(b, 60) {
            return Err(HeaderFault::Bad(
                "the record header's checksum does not match".into(),
            ));
        }
        let kind = match b[4] {
            1 => RecordKind::Sample,
            2 => RecordKind::Pad,
            3 => RecordKind::Index,
            other => return Err(HeaderFault::Bad(format!("unknown record kind {other}"))),
        };
        let header = RecordHeader {
            kind,
            stream: b[5],
            flags: SampleFlags::from_bits_retain(u16_at(b, 6)),
            time: u64_at(b, 8),
            record_len: u64_at(b, 16),
            payload_len: u64_at(b, 24),
            payload_crc: u32_at(b, 32),
            sequence: u64_at(b, 40),
        };
        let fits = RecordHeader::span(header.payload_len, RECORD_HEADER as u64)
            .is_some_and(|need| need <= header.record_len);
        if !fits || header.record_len % RECORD_HEADER as u64 != 0 {
            return Err(HeaderFault::Bad(format!(
                "record length {} cannot hold a {}-byte payload",
                header.record_len, header.payload_len
            )));
        }
        Ok(header)
    }
}

/// A place a reader may start: the first record at or after `offset` that the writer
/// chose as a boundary, and the newest sample time between it and the next point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexPoint {
    pub(crate) offset: u64,
    pub(crate) max_time: u64,
}

/// The index record's payload: per-stream totals and the index points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    /// Where sample records end (the index record's own offset).
    pub(crate) data_end: u64,
    /// Totals for stream `n` at `streams[n - 1]`.
    pub(crate) streams: Vec<StreamSummary>,
    /// In file order; each point's region runs to the next point (the last to `data_end`).
    pub(crate) points: Vec<IndexPoint>,
}

impl Index {
    /// The payload bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let len = INDEX_FIXED + INDEX_STREAM * self.streams.len() + INDEX_POINT * self.points.len();
        let mut out = vec![0u8; len];
        put(&mut out, 0, &(self.streams.len() as u32).to_le_bytes());
        put(&mut out, 4, &(self.points.len() as u32).to_le_bytes());
        put(&mut out, 8, &self.data_end.to_le_bytes());
        let mut at = INDEX_FIXED;
        for (i, s) in self.streams.iter().enumerate() {
            put(&mut out, at, &((i + 1) as u16).to_le_bytes());
            put(&mut out, at + 8, &s.samples.to_le_bytes());
            put(&mut out, at + 16, &s.bytes.to_le_bytes());
            put(&mut out, at + 24, &s.first_time.to_le_bytes());
            put(&mut out, at + 32, &s.last_time.to_le_bytes());
            at += INDEX_STREAM;
        }
        for p in &self.points {
            put(&mut out, at, &p.offset.to_le_bytes());
            put(&mut out, at + 8, &p.max_time.to_le_bytes());
            at += INDEX_POINT;
        }
        out
    }

    /// Parses a payload whose CRC already held; `Err` says what is inconsistent.
    pub(crate) fn decode(b: &[u8], streams: usize) -> std::result::Result<Index, String> {
        if b.len() < INDEX_FIXED {
            return Err("index too short".into());
        }
        let count = u32_at(b, 0) as usize;
        let points = u32_at(b, 4) as usize;
        let expected = (INDEX_POINT as u64)
            .checked_mul(points as u64)
            .and_then(|p| p.checked_add((INDEX_FIXED + INDEX_STREAM * count) as u64));
        if count != streams || expected != Some(b.len() as u64) {
            return Err(format!(
                "index of {} bytes does not hold {count} streams and {points} points",
                b.len()
            ));
        }
        let mut at = INDEX_FIXED;
        let mut summaries = Vec::with_capacity(count);
        for _ in 0..count {
            summaries.push(StreamSummary {
                samples: u64_at(b, at + 8),
                bytes: u64_at(b, at + 16),
                first_time: u64_at(b, at + 24),
                last_time: u64_at(b, at + 32),
            });
            at += INDEX_STREAM;
        }
        let mut list = Vec::with_capacity(points);
        for _ in 0..points {
            list.push(IndexPoint {
                offset: u64_at(b, at),
                max_time: u64_at(b, at + 8),
            });
            at += INDEX_POINT;
        }
        let data_end = u64_at(b, 8);
        let ordered = list.windows(2).all(|w| w[0].offset < w[1].offset)
            && list.last().is_none_or(|p| p.offset < data_end);
        if !ordered {
            return Err("index points are out of order".into());
        }
        Ok(Index {
            data_end,
            streams: summaries,
            points: list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_catches_every_flipped_bit() {
        let header = RecordHeader {
            kind: RecordKind::Sample,
            stream: 3,
            flags: SampleFlags::KEY_FRAME,
            time: 123_456_789,
            record_len: 4096,
            payload_len: 4000,
            payload_crc: 0xDEAD_BEEF,
            sequence: 42,
        };
        let mut bytes = [0u8; 64];
        header.encode(&mut bytes);
        assert_eq!(RecordHeader::decode(&bytes), Ok(header));
        for bit in 0..64 * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(RecordHeader::decode(&flipped).is_err(), "bit {bit}");
        }
        assert_eq!(RecordHeader::decode(&[0; 64]), Err(HeaderFault::Unwritten));
    }

    /// Sets `bytes`' header CRC to match its content (as a forger would).
    fn reseal(bytes: &mut [u8]) {
        let used = u32_at(bytes, 16) as usize;
        put(bytes, 60, &[0; 4]);
        let sum = crc(&bytes[..used]);
        put(bytes, 60, &sum.to_le_bytes());
    }

    #[test]
    fn file_header_round_trips() {
        let header = FileHeader {
            version: VERSION,
            unit: 4096,
            finalized: true,
            index_offset: 1 << 30,
            samples: 77,
            sync_tolerance: 30_000_000,
            streams: vec![StreamKind::Video, StreamKind::Audio, StreamKind::Data],
            formats: vec![
                Some(
                    StreamFormat::video("avc1", 1920, 1080, (30_000, 1_001))
                        .unwrap()
                        .with_codec_data(vec![1, 2, 3, 4, 5]),
                ),
                None,
                Some(
                    StreamFormat::data("tx3g")
                        .unwrap()
                        .with_codec_data(vec![9; 7]),
                ),
            ],
        };
        let mut bytes = vec![0u8; 4096];
        header.encode(&mut bytes);
        assert_eq!(FileHeader::decode(&bytes).unwrap(), header);
        bytes[20] ^= 1;
        assert!(matches!(
            FileHeader::decode(&bytes),
            Err(Error::Corrupt { .. })
        ));
        // A newer version with a good checksum is refused as such, not as damage.
        bytes[20] ^= 1;
        put(&mut bytes, 8, &(VERSION + 1).to_le_bytes());
        reseal(&mut bytes);
        assert!(matches!(
            FileHeader::decode(&bytes),
            Err(Error::Unsupported(_))
        ));
        // Versions 1 and 2 still read: 16-byte entries, no formats; version 1's data
        // starts at `unit`, the others' after the backup.
        for version in [VERSION_1, VERSION_2] {
            let old = FileHeader {
                version,
                formats: vec![None; 3],
                ..header.clone()
            };
            bytes.fill(0);
            old.encode(&mut bytes);
            assert_eq!(u32_at(&bytes, 16), 64 + 16 * 3);
            assert_eq!(FileHeader::decode(&bytes).unwrap(), old);
        }
        assert_eq!(
            FileHeader {
                version: VERSION_1,
                ..header.clone()
            }
            .data_start(),
            4096
        );
        assert_eq!(header.data_start(), 8192);
    }

    #[test]
    fn a_version_3_header_lays_formats_out_as_format_md_says() {
        let avcc = vec![0xA5; 5];
        let header = FileHeader {
            version: VERSION_3,
            unit: 4096,
            finalized: false,
            index_offset: 0,
            samples: 0,
            sync_tolerance: 0,
            streams: vec![StreamKind::Video, StreamKind::Audio, StreamKind::Data],
            formats: vec![
                Some(
                    StreamFormat::video("avc1", 640, 360, (30, 1))
                        .unwrap()
                        .with_codec_data(avcc.clone()),
                ),
                Some(StreamFormat::audio("mp4a", 48_000, 2).unwrap()),
                None,
            ],
        };
        let mut bytes = vec![0u8; 4096];
        header.encode(&mut bytes);
        assert_eq!(u32_at(&bytes, 16) as usize, 64 + 3 * 32 + 5);
        let video = &bytes[64..96];
        assert_eq!((u16_at(video, 0), video[2], video[3]), (1, 2, HAS_FORMAT));
        assert_eq!(&video[4..8], b"avc1");
        assert_eq!(
            [
                u32_at(video, 8),
                u32_at(video, 12),
                u32_at(video, 16),
                u32_at(video, 20)
            ],
            [640, 360, 30, 1]
        );
        assert_eq!(u16_at(video, 24), 5);
        let audio = &bytes[96..128];
        assert_eq!((u16_at(audio, 0), audio[2], audio[3]), (2, 1, HAS_FORMAT));
        assert_eq!(&audio[4..8], b"mp4a");
        assert_eq!((u32_at(audio, 8), u16_at(audio, 12)), (48_000, 2));
        assert_eq!(u16_at(audio, 24), 0);
        let data = &bytes[128..160];
        assert_eq!((u16_at(data, 0), data[2], data[3]), (3, 3, NO_FORMAT));
        assert_eq!(&bytes[160..165], &avcc[..]);
        assert_eq!(FileHeader::decode(&bytes).unwrap(), header);
        for bit in 0..header.used_len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(FileHeader::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_backup_header_is_told_apart_and_checked_as_strictly() {
        let header = FileHeader {
            version: VERSION,
            unit: 8192,
            finalized: false,
            index_offset: 0,
            samples: 0,
            sync_tolerance: 30_000_000,
            streams: vec![StreamKind::Video, StreamKind::Audio],
            formats: vec![None, Some(StreamFormat::audio("Opus", 48_000, 2).unwrap())],
        };
        let mut backup = vec![0u8; 4096];
        header.encode_backup(&mut backup);
        assert_eq!(FileHeader::decode_backup(&backup, 8192).unwrap(), header);
        // Not where a backup of its unit belongs; not a header at offset 0.
        assert!(matches!(
            FileHeader::decode_backup(&backup, 4096),
            Err(Error::Corrupt { offset: 4108, .. })
        ));
        assert!(matches!(
            FileHeader::decode(&backup),
            Err(Error::Corrupt { offset: 20, .. })
        ));
        // Every flipped bit is caught.
        for bit in 0..header.used_len() * 8 {
            let mut flipped = backup.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                FileHeader::decode_backup(&flipped, 8192).is_err(),
                "bit {bit}"
            );
        }
        // A header at offset 0 is no backup, even with a good CRC.
        let mut primary = vec![0u8; 4096];
        header.encode(&mut primary);
        assert!(FileHeader::decode_backup(&primary, 8192).is_err());
        // A backup that claims to be finalized (CRC made to match) is refused.
        for (at, value) in [(20, FLAG_BACKUP | FLAG_FINALIZED), (24, 8192), (32, 1)] {
            let mut forged = backup.clone();
            put(
                &mut forged,
                at,
                &u64::from(value).to_le_bytes()[..if at == 20 { 4 } else { 8 }],
            );
            reseal(&mut forged);
            assert!(
                matches!(
                    FileHeader::decode_backup(&forged, 8192),
                    Err(Error::Corrupt { .. })
                ),
                "field at {at}"
            );
        }
        // A version-1 file has no backup; a newer one is refused as such.
        let mut old = backup.clone();
        put(&mut old, 8, &1u16.to_le_bytes());
        reseal(&mut old);
        assert!(matches!(
            FileHeader::decode_backup(&old, 8192),
            Err(Error::Corrupt { .. })
        ));
        put(&mut old, 8, &(VERSION + 1).to_le_bytes());
        reseal(&mut old);
        assert!(matches!(
            FileHeader::decode_backup(&old, 8192),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn crc_is_castagnoli_as_format_md_says() {
        assert_eq!(crc(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn index_round_trips_and_rejects_wrong_lengths() {
        let index = Index {
            data_end: 1 << 20,
            streams: vec![StreamSummary {
                samples: 2,
                bytes: 10,
                first_time: 5,
                last_time: 9,
            }],
            points: vec![
                IndexPoint {
                    offset: 4096,
                    max_time: 5,
                },
                IndexPoint {
                    offset: 8192,
                    max_time: 9,
                },
            ],
        };
        let bytes = index.encode();
        assert_eq!(Index::decode(&bytes, 1), Ok(index));
        assert!(Index::decode(&bytes[..bytes.len() - 1], 1).is_err());
        assert!(Index::decode(&bytes, 2).is_err());
    }
}
