//! The log file's bytes (FORMAT.md, "Log file"): the header, and the frame every record
//! (and every stretch of padding) is written in. Encoding and checking only; no I/O.
//!
//! ```text
//! offset 0      header copy A  (one unit)
//! offset unit   header copy B  (one unit)
//! first_offset  frame frame ... pad | frame ... pad | ... jump ─┐  (each commit ends on a unit)
//! k × segment   frame ... pad | ...                     <───────┘  (a segment written again)
//!
//! frame:  len u32 | crc u32 | lsn u64 | data (len bytes) | zeros to a multiple of 8
//!         crc = CRC32C(data ‖ lsn ‖ len); lsn 0 = padding (data all zeros),
//!         lsn u64::MAX = jump (data: the u64 offset where the log goes on)
//! ```
//!
//! A frame never starts in the last 8 bytes of a unit: those are zero and skipped. A
//! header of 16 zero bytes where a frame would start is the clean end of the log.

use super::Lsn;
use crate::error::{Error, Result};

/// Bytes of a frame's header.
pub(crate) const FRAME_HEADER: usize = 16;
/// Frames start on multiples of this.
pub(crate) const FRAME_ALIGN: usize = 8;
/// The header's magic number.
const MAGIC: &[u8; 8] = b"PAGEBLOG";
/// The version written. Version 1 (no segments, no jumps) is still read, and a writer
/// opening one upgrades its header before it writes a jump.
pub(crate) const VERSION: u32 = 2;
/// Bytes of a version-2 header that carry meaning (the rest of its unit is zeros);
/// version 1 has no segment size and its checksum at 40.
const HEADER_BYTES: usize = 52;
const HEADER_BYTES_V1: usize = 44;
/// The `lsn` that marks a jump frame.
pub(crate) const JUMP_LSN: Lsn = u64::MAX;
/// Bytes of a jump frame (its data is the offset jumped to).
pub(crate) const JUMP_FRAME: usize = FRAME_HEADER + 8;
/// Segment sizes a header may name: multiples of 1 MiB (so of every unit) up to 1 TiB.
pub(crate) const MIN_SEGMENT: u64 = 1 << 20;
pub(crate) const MAX_SEGMENT: u64 = 1 << 40;

/// What a header copy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Bytes of the unit commits pad to and frames are laid out in.
    pub(crate) unit: u32,
    /// Which copy is newer: the valid copy with the higher generation counts.
    pub(crate) generation: u64,
    /// Where the first kept frame starts (a multiple of `unit`).
    pub(crate) first_offset: u64,
    /// The `Lsn` of the first kept record.
    pub(crate) first_lsn: Lsn,
    /// Bytes of a segment: segment `i` is the file's bytes from `i × segment` (segment
    /// 0 from past the header copies), and a jump goes to a segment's start. `None` for
    /// a version-1 header (written before segments; its frames lie end to end).
    pub(crate) segment: Option<u64>,
}

impl Header {
    /// The header's bytes, zero-padded to `out.len()` (at least [`HEADER_BYTES`]).
    /// A version-1 header (no segment) is written as version 1: tests of reading old
    /// logs make them so; writers upgrade before they jump.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        out[0..8].copy_from_slice(MAGIC);
        let version = if self.segment.is_some() { VERSION } else { 1 };
        out[8..12].copy_from_slice(&version.to_le_bytes());
        out[12..16].copy_from_slice(&self.unit.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc_at = match self.segment {
            Some(segment) => {
                out[40..48].copy_from_slice(&segment.to_le_bytes());
                48
            }
            None => 40,
        };
        let crc = crc32c::crc32c(&out[0..crc_at]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The header in `bytes` (a copy read at `offset`), checked: `Corrupt` names what is
    /// wrong with it.
    pub(crate) fn decode(bytes: &[u8], offset: u64) -> Result<Header> {
        let corrupt = |detail: String| Error::Corrupt { offset, detail };
        if bytes.len() < HEADER_BYTES_V1 {
            return Err(corrupt("the log header is cut short".into()));
        }
        if &bytes[0..8] != MAGIC {
            return Err(corrupt(
                "not a pagebuf log (no PAGEBLOG magic at the start)".into(),
            ));
        }
        let version = u32_at(bytes, 8);
        let crc_at = match version {
            1 => 40,
            VERSION if bytes.len() >= HEADER_BYTES => 48,
            VERSION => return Err(corrupt("the log header is cut short".into())),
            _ => {
                return Err(corrupt(format!(
                    "log format version {version}; this pagebuf reads versions 1 and \
                     {VERSION}"
                )))
            }
        };
        let crc = u32_at(bytes, crc_at);
        if crc32c::crc32c(&bytes[0..crc_at]) != crc {
            return Err(corrupt("the log header's checksum does not match".into()));
        }
        let header = Header {
            unit: u32_at(bytes, 12),
            generation: u64_at(bytes, 16),
            first_offset: u64_at(bytes, 24),
            first_lsn: u64_at(bytes, 32),
            segment: (version == VERSION).then(|| u64_at(bytes, 40)),
        };
        let unit = u64::from(header.unit);
        if !header.unit.is_power_of_two() || !(512..=1 << 20).contains(&header.unit) {
            return Err(corrupt(format!(
                "the log header's unit {unit} is not a power of two from 512 to 1 MiB"
            )));
        }
        if header.first_offset < 2 * unit || header.first_offset % unit != 0 {
            return Err(corrupt(format!(
                "the log header's first record offset {} is not a unit boundary past \
                 both header copies",
                header.first_offset
            )));
        }
        if header.first_lsn == 0 {
            return Err(corrupt("the log header's first LSN is 0".into()));
        }
        if let Some(segment) = header.segment {
            if segment % MIN_SEGMENT != 0 || !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment) {
                return Err(corrupt(format!(
                    "the log header's segment size {segment} is not a multiple of 1 MiB \
                     from 1 MiB to 1 TiB"
                )));
            }
        }
        Ok(header)
    }
}

/// Bytes a frame of `len` data bytes takes, padding to [`FRAME_ALIGN`] included.
pub(crate) fn frame_len(len: usize) -> usize {
    (FRAME_HEADER + len).next_multiple_of(FRAME_ALIGN)
}

/// A frame's header for record `lsn` (0: padding) of `len` bytes whose data has
/// checksum `data_crc` (`crc32c(data)`: taken before the record is numbered, so the
/// writer computes it outside its lock).
pub(crate) fn frame_header(lsn: Lsn, len: u32, data_crc: u32) -> [u8; FRAME_HEADER] {
    let mut header = [0; FRAME_HEADER];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&seal_crc(data_crc, lsn, len).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header
}

/// Fills `gap`, the rest of a commit's last unit after its last frame, as padding: one
/// padding frame over zeros, or only zeros where the gap is 8 bytes (the skip rule
/// covers those: a frame never starts in the last 8 bytes of a unit).
pub(crate) fn fill_padding(gap: &mut [u8], zeros: &ZeroCrcs) {
    debug_assert!(gap.len() % FRAME_ALIGN == 0, "frames keep 8-byte alignment");
    gap.fill(0);
    if gap.len() >= FRAME_HEADER {
        let len = u32::try_from(gap.len() - FRAME_HEADER).expect("padding is at most a unit");
        let crc = zeros.crc_of(&gap[FRAME_HEADER..]);
        gap[..FRAME_HEADER].copy_from_slice(&frame_header(0, len, crc));
    }
}

/// The CRC32C of runs of zero bytes, looked up rather than computed: a commit's padding
/// is up to a unit of zeros, whose checksum would otherwise be most of the commit's
/// work in user space.
pub(crate) struct ZeroCrcs {
    /// `by_words[i]`: the CRC32C of `8 * i` zero bytes (padding is a multiple of 8).
    by_words: Vec<u32>,
}

impl ZeroCrcs {
    /// The table for runs up to `max` bytes (longer ones are computed over the zeros).
    pub(crate) fn up_to(max: usize) -> ZeroCrcs {
        let words = max / FRAME_ALIGN;
        let mut by_words = Vec::with_capacity(words + 1);
        let mut crc = crc32c::crc32c(&[]);
        by_words.push(crc);
        for _ in 0..words {
            crc = crc32c::crc32c_append(crc, &[0; FRAME_ALIGN]);
            by_words.push(crc);
        }
        ZeroCrcs { by_words }
    }

    /// The CRC32C of `zeros` (all zero bytes): looked up by length, or computed over
    /// them where the table stops.
    pub(crate) fn crc_of(&self, zeros: &[u8]) -> u32 {
        debug_assert!(zeros.iter().all(|&b| b == 0), "padding is zeros");
        let n = zeros.len();
        match self.by_words.get(n / FRAME_ALIGN) {
            Some(&crc) if n % FRAME_ALIGN == 0 => crc,
            _ => crc32c::crc32c(zeros),
        }
    }
}

/// The checksum of a frame: CRC32C of its data, then its `lsn` and `len`.
pub(crate) fn frame_crc(lsn: Lsn, len: u32, data: &[u8]) -> u32 {
    seal_crc(crc32c::crc32c(data), lsn, len)
}

/// A frame's checksum from the checksum of its data.
fn seal_crc(data_crc: u32, lsn: Lsn, len: u32) -> u32 {
    let crc = crc32c::crc32c_append(data_crc, &lsn.to_le_bytes());
    crc32c::crc32c_append(crc, &len.to_le_bytes())
}

/// A frame's header as read: what comes next in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameHead {
    /// Sixteen zero bytes: the clean end of the log.
    End,
    /// Padding of `len` bytes after the header (their checksum `crc`).
    Padding { len: u32, crc: u32 },
    /// Record `lsn` of `len` bytes, checksum `crc`.
    Record { lsn: Lsn, len: u32, crc: u32 },
    /// A jump: its `len` bytes of data (8 in a good one, checksum `crc`) say where the
    /// log goes on.
    Jump { len: u32, crc: u32 },
}

impl FrameHead {
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER]) -> FrameHead {
        if bytes.iter().all(|&b| b == 0) {
            return FrameHead::End;
        }
        let len = u32_at(bytes, 0);
        let crc = u32_at(bytes, 4);
        match u64_at(bytes, 8) {
            0 => FrameHead::Padding { len, crc },
            JUMP_LSN => FrameHead::Jump { len, crc },
            lsn => FrameHead::Record { lsn, len, crc },
        }
    }
}

/// A jump frame: the log goes on at `target` (a segment's start).
pub(crate) fn jump_frame(target: u64) -> [u8; JUMP_FRAME] {
    let data = target.to_le_bytes();
    let mut frame = [0; JUMP_FRAME];
    frame[..FRAME_HEADER].copy_from_slice(&frame_header(JUMP_LSN, 8, crc32c::crc32c(&data)));
    frame[FRAME_HEADER..].copy_from_slice(&data);
    frame
}

/// Bytes to skip at `offset` before a frame may start: the zeros at the end of a unit
/// with no room for a frame header, or none.
pub(crate) fn skip_before_frame(offset: u64, unit: u64) -> u64 {
    let left = unit - offset % unit;
    if left < FRAME_HEADER as u64 {
        left
    } else {
        0
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_caught() {
        // Version 2 (with segments) and version 1 (as older writers left it).
        for (segment, meaningful) in [(Some(64 << 20), HEADER_BYTES), (None, HEADER_BYTES_V1)] {
            let header = Header {
                unit: 4096,
                generation: 7,
                first_offset: 3 * 4096,
                first_lsn: 42,
                segment,
            };
            let mut bytes = vec![0; 4096];
            header.encode(&mut bytes);
            assert_eq!(Header::decode(&bytes, 0).unwrap(), header);
            for bit in 0..meaningful * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    matches!(
                        Header::decode(&bad, 4096),
                        Err(Error::Corrupt { offset: 4096, .. })
                    ),
                    "bit {bit} flipped went unnoticed ({segment:?})"
                );
            }
        }
    }

    #[test]
    fn headers_that_check_but_make_no_sense_are_refused() {
        let mib = 1 << 20;
        for (unit, first_offset, first_lsn, segment) in [
            (4000, 8000, 1, Some(mib)),
            (4096, 4096, 1, Some(mib)),
            (4096, 8192 + 8, 1, None),
            (4096, 8192, 0, Some(mib)),
            (256, 512, 1, Some(mib)),
            (4096, 8192, 1, Some(0)),
            (4096, 8192, 1, Some(mib / 2)),
            (4096, 8192, 1, Some(mib + 4096)),
            (4096, 8192, 1, Some(MAX_SEGMENT * 2)),
        ] {
            let mut bytes = vec![0; 4096];
            Header {
                unit,
                generation: 1,
                first_offset,
                first_lsn,
                segment,
            }
            .encode(&mut bytes);
            let err = Header::decode(&bytes, 0).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { .. }),
                "{unit} {first_offset} {first_lsn} {segment:?}"
            );
        }
    }

    #[test]
    fn frames_decode_as_end_padding_jump_or_record() {
        assert_eq!(FrameHead::decode(&[0; 16]), FrameHead::End);
        let data = b"hello";
        let header = frame_header(9, 5, crc32c::crc32c(data));
        assert_eq!(
            FrameHead::decode(&header),
            FrameHead::Record {
                lsn: 9,
                len: 5,
                crc: frame_crc(9, 5, data)
            }
        );
        let pad = frame_header(0, 100, crc32c::crc32c(&[0; 100]));
        assert_eq!(
            FrameHead::decode(&pad),
            FrameHead::Padding {
                len: 100,
                crc: frame_crc(0, 100, &[0; 100])
            }
        );
        let jump = jump_frame(5 << 20);
        assert_eq!(
            FrameHead::decode(jump[..16].try_into().unwrap()),
            FrameHead::Jump {
                len: 8,
                crc: frame_crc(JUMP_LSN, 8, &(5u64 << 20).to_le_bytes())
            }
        );
        assert_eq!(frame_len(8), JUMP_FRAME);
        assert_eq!(frame_len(0), 16);
        assert_eq!(frame_len(1), 24);
        assert_eq!(frame_len(8), 24);
        assert_eq!(skip_before_frame(4096 - 8, 4096), 8);
        assert_eq!(skip_before_frame(4096 - 16, 4096), 0);
        assert_eq!(skip_before_frame(4096, 4096), 0);
    }

    #[test]
    fn padding_checksums_looked_up_match_computed_ones() {
        let zeros = ZeroCrcs::up_to(4096);
        for n in (0..=4096).step_by(8).chain([4104, 8192, 13]) {
            let run = vec![0; n];
            assert_eq!(zeros.crc_of(&run), crc32c::crc32c(&run), "{n} zeros");
        }
        let mut gap = vec![0xAB; 4096];
        fill_padding(&mut gap, &zeros);
        assert_eq!(
            FrameHead::decode(gap[..16].try_into().unwrap()),
            FrameHead::Padding {
                len: 4080,
                crc: frame_crc(0, 4080, &[0; 4080])
            }
        );
        assert!(gap[16..].iter().all(|&b| b == 0));
    }
}
