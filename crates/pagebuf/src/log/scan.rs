//! [`Scanner`]: the log read frame by frame from its first kept record, as
//! [`LogReader`](super::LogReader) yields it and [`LogWriter::open`](super::LogWriter::open)
//! recovers it.

use super::format::{
    frame_crc, frame_len, skip_before_frame, FrameHead, Header, FRAME_HEADER, JUMP_LSN,
};
use super::{Lsn, MAX_RECORD};
use crate::alloc::{BufferAllocator, PageAllocator};
use crate::buffer::Buffer;
use crate::direct::DirectFile;
use crate::error::{Error, Result};

/// Bytes read at a time (more for a larger record).
const WINDOW: usize = 1 << 20;
/// The largest padding frame (the largest unit).
const MAX_PADDING: u32 = 1 << 20;

/// What comes next in the log.
pub(crate) enum Step {
    /// A whole record whose checksum and number are right; its frame starts at `offset`.
    Record { lsn: Lsn, offset: u64, data: Buffer },
    /// The clean end (zeros, or the end of the file), at `offset`.
    End { offset: u64 },
    /// A torn or corrupt frame at `offset`: nothing after it is read.
    Torn { offset: u64, detail: String },
}

/// Reads frames in order, checking each, from a log's first kept record.
pub(crate) struct Scanner {
    file: DirectFile,
    unit: u64,
    /// Bytes of the file from `window_at` (a multiple of the file's alignment).
    window: Buffer,
    window_at: u64,
    /// Where the next frame starts.
    offset: u64,
    next_lsn: Lsn,
    /// Segment size (version 2), to check jump targets; `None`: no jump is valid.
    segment: Option<u64>,
    /// The jumps followed, in order: where each jump frame starts and its target.
    jumps: Vec<(u64, u64)>,
    /// Whether the last frame read was a jump (a jump must be followed by a record).
    after_jump: bool,
}

impl Scanner {
    /// A scanner over `file` from the first record its header names.
    pub(crate) fn new(file: DirectFile, header: &Header) -> Scanner {
        Scanner {
            file,
            unit: u64::from(header.unit),
            window: Buffer::from_owner(Vec::<u8>::new()),
            window_at: 0,
            offset: header.first_offset,
            next_lsn: header.first_lsn,
            segment: header.segment,
            jumps: Vec::new(),
            after_jump: false,
        }
    }

    /// The jumps followed so far: `(where the jump frame starts, where it goes)`.
    pub(crate) fn jumps(&self) -> &[(u64, u64)] {
        &self.jumps
    }

    /// The `Lsn` the next record must carry.
    pub(crate) fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub(crate) fn into_file(self) -> DirectFile {
        self.file
    }

    /// The next record, or where and how the log ends.
    pub(crate) fn step(&mut self) -> Result<Step> {
        loop {
            let offset = self.offset + skip_before_frame(self.offset, self.unit);
            let Some(head) = self.bytes(offset, FRAME_HEADER)? else {
                // The file ends where a frame would start: a clean end.
                return Ok(Step::End { offset });
            };
            let head: [u8; FRAME_HEADER] = head[..].try_into().expect("a frame header");
            let torn = |detail: String| Ok(Step::Torn { offset, detail });
            let (lsn, len, crc) = match FrameHead::decode(&head) {
                FrameHead::End => return Ok(Step::End { offset }),
                FrameHead::Padding { .. } if self.after_jump => {
                    return torn("padding where the record after a jump was due".into())
                }
                FrameHead::Padding { len, .. } if len > MAX_PADDING => {
                    return torn(format!("padding of {len} bytes, past the largest unit"))
                }
                FrameHead::Padding { len, crc } => (0, len, crc),
                FrameHead::Jump { len, .. } if len != 8 => {
                    return torn(format!("a jump frame of {len} bytes, not 8"))
                }
                // A writer writes a record right after every jump: two in a row are
                // stale frames of space written before.
                FrameHead::Jump { .. } if self.after_jump => {
                    return torn("a jump where the record after a jump was due".into())
                }
                FrameHead::Jump { len, crc } => (JUMP_LSN, len, crc),
                FrameHead::Record { lsn, .. } if lsn != self.next_lsn => {
                    return torn(format!(
                        "record {lsn} where record {} was due",
                        self.next_lsn
                    ))
                }
                FrameHead::Record { len, .. } if len as usize > MAX_RECORD => {
                    return torn(format!(
                        "a record of {len} bytes, past the cap of {MAX_RECORD}"
                    ))
                }
                FrameHead::Record { lsn, len, crc } => (lsn, len, crc),
            };
            let Some(data) = self.bytes(offset + FRAME_HEADER as u64, len as usize)? else {
                return torn(format!(
                    "a frame of {len} bytes cut short by the end of the file"
                ));
            };
            if frame_crc(lsn, len, &data) != crc {
                return torn("a frame whose checksum does not match (torn or corrupt)".into());
            }
            self.offset = offset + frame_len(len as usize) as u64;
            if lsn == JUMP_LSN {
                let target = u64::from_le_bytes(data[..].try_into().expect("8 bytes"));
                if !self
                    .segment
                    .is_some_and(|s| is_segment_start(target, s, self.unit))
                {
                    return torn(format!(
                        "a jump to {target}, not the start of a segment of this log"
                    ));
                }
                // A writer reserves (or writes) a segment before its jump there can be
                // durable: a target past the end is a frame that cannot be trusted (and
                // would have a reopening writer account for segments up to it).
                let len = self.file.len()?;
                if target >= len {
                    return torn(format!(
                        "a jump to {target}, past the end of the file ({len} bytes)"
                    ));
                }
                self.jumps.push((offset, target));
                self.offset = target;
                self.after_jump = true;
            } else if lsn != 0 {
                self.next_lsn += 1;
                self.after_jump = false;
                return Ok(Step::Record { lsn, offset, data });
            }
        }
    }

    /// `len` bytes at `at`, or `None` where the file ends first. A slice of the window
    /// when they lie in it (no copy); otherwise the window moves to `at`.
    fn bytes(&mut self, at: u64, len: usize) -> Result<Option<Buffer>> {
        let end = at.saturating_add(len as u64);
        let window_end = self.window_at + self.window.len() as u64;
        if at < self.window_at || end > window_end {
            let align = u64::from(self.file.limits().alignment().max(1));
            let start = at / align * align;
            let size = usize::try_from(end - start)
                .map_err(|_| Error::InvalidArgument("a frame past the address space".into()))?
                .next_multiple_of(align as usize)
                .max(WINDOW);
            let mut window = PageAllocator::default().allocate_page_aligned(size)?;
            self.file.read_at(&mut window, start)?;
            self.window = window.freeze();
            self.window_at = start;
            if end > start + self.window.len() as u64 {
                return Ok(None);
            }
        }
        let from = (at - self.window_at) as usize;
        self.window.slice(from..from + len).map(Some)
    }
}

/// Whether `offset` is where a segment of `segment` bytes starts in a log of `unit`:
/// segment 0 starts past the two header copies, segment `i` at `i × segment`.
pub(crate) fn is_segment_start(offset: u64, segment: u64, unit: u64) -> bool {
    offset == 2 * unit || (offset != 0 && offset % segment == 0)
}

/// The newer valid copy of the header of the log in `file`; `Corrupt` when neither
/// copy is valid (the first copy's complaint).
pub(crate) fn read_header(file: &DirectFile) -> Result<Header> {
    let align = file.limits().alignment().max(1) as usize;
    // Copy A is at 0; copy B one unit in, and the unit is in the header: with A
    // unreadable, B is looked for at every unit the format allows.
    let size = (2usize << 20).next_multiple_of(align);
    let mut start = PageAllocator::default().allocate_page_aligned(size)?;
    file.read_at(&mut start, 0)?;
    let first = Header::decode(&start, 0);
    let second = (9..=20)
        .map(|shift| 1usize << shift)
        .filter(|&unit| match &first {
            Ok(a) => unit == a.unit as usize,
            Err(_) => true,
        })
        .filter_map(|unit| {
            let bytes = start.get(unit..)?;
            Header::decode(bytes, unit as u64)
                .ok()
                .filter(|b| b.unit as usize == unit)
        })
        .next();
    match (first, second) {
        (Ok(a), Some(b)) => Ok(if b.generation > a.generation { b } else { a }),
        (Ok(a), None) => Ok(a),
        (Err(_), Some(b)) => Ok(b),
        (Err(err), None) => Err(err),
    }
}
