//! One transfer as a ring owns it while it is in flight, cut into pieces of at most the
//! device's largest request, and how the pieces' results become the caller's outcome.
//!
//! Every transfer owns its memory (a buffer) except [`Op::ReadRaw`], which holds only an
//! address into memory the caller lends: the safe forms that make one
//! ([`IoRing::read_many`](super::IoRing::read_many)) block until it completes, and
//! [`IoRing::read_into_raw`](super::IoRing::read_into_raw) is `unsafe` with that contract.

use std::sync::Arc;

use crate::buffer::{Buffer, BufferMut};
use crate::direct::OpenFile;
use crate::error::{Error, Result};

/// A transfer and everything it touches: the file (shared, so a dropped `DirectFile`
/// cannot let the transfer reach a reused fd number) and the memory (owned, so nothing
/// else can use it until the kernel is done).
pub(crate) enum Op {
    /// Fill `buf` (up to its `max_len`) from `offset`.
    Read {
        file: Arc<OpenFile>,
        buf: BufferMut,
        offset: u64,
        chunk: usize,
    },
    /// Fill `len` bytes of `buf` from `start` (within its `max_len`) from `offset`; the
    /// rest of `buf` is left as it is.
    ReadPart {
        file: Arc<OpenFile>,
        buf: BufferMut,
        start: usize,
        len: usize,
        offset: u64,
        chunk: usize,
    },
    /// Fill `len` bytes at address `addr` from `offset`: memory the caller lends and the
    /// op does not own (an address, not a pointer, so the op stays `Send` without an
    /// `unsafe impl`; it becomes a pointer again only where the transfer is issued).
    ReadRaw {
        file: Arc<OpenFile>,
        addr: usize,
        len: usize,
        offset: u64,
        chunk: usize,
    },
    /// Write all of `data` at `offset`.
    Write {
        file: Arc<OpenFile>,
        data: Buffer,
        offset: u64,
        chunk: usize,
        tearing: Tearing,
    },
    /// `fdatasync`.
    Sync { file: Arc<OpenFile> },
}

/// Whether a crash may leave a write half done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tearing {
    /// An ordinary write: a crash may leave any mix of old and new sectors.
    Possible,
    /// `RWF_ATOMIC`: all of it or none of it (one piece, checked against the file's
    /// atomic write units before it is made).
    Impossible,
}

/// `RWF_ATOMIC` (Linux 6.11), which the crates do not name yet.
pub(crate) const RWF_ATOMIC: u32 = 0x40;

/// The most pieces one transfer is cut into (they share a completion slot, numbered in
/// the low bits of the kernel's user data).
pub(crate) const MAX_PIECES: usize = 1 << 20;

/// One piece of a transfer: `len` bytes at `offset` of the file, at `at` in the memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub(crate) at: usize,
    pub(crate) len: usize,
    pub(crate) offset: u64,
}

impl Op {
    /// The file the transfer goes to.
    pub(crate) fn file(&self) -> &Arc<OpenFile> {
        match self {
            Op::Read { file, .. }
            | Op::ReadPart { file, .. }
            | Op::ReadRaw { file, .. }
            | Op::Write { file, .. }
            | Op::Sync { file } => file,
        }
    }

    /// The lease of the shared pool whose frame the transfer uses, if it uses one: the
    /// ring holds it until the transfer is done (`leases.rs`). Lent memory is looked
    /// up among this process's shared mappings.
    #[cfg(not(loom))]
    pub(crate) fn lease(&self) -> Option<Arc<crate::shared::Lease>> {
        let header = match self {
            Op::Read { buf, .. } | Op::ReadPart { buf, .. } => buf.header(),
            Op::Write { data, .. } => data.header(),
            Op::ReadRaw { addr, len, .. } => return crate::shared::lease_at(*addr, *len),
            Op::Sync { .. } => return None,
        };
        crate::shared::lease_of(header)
    }

    /// The memory the transfer goes to or from: its address and length (0, 0 for a
    /// sync). Piece `i` is `piece(i).len` bytes at `address + piece(i).at`.
    pub(crate) fn memory(&self) -> (usize, usize) {
        match self {
            Op::Read { buf, .. } => (buf.as_ptr() as usize, buf.max_len()),
            // `start + len <= max_len` (checked before the op is made): inside the block.
            Op::ReadPart {
                buf, start, len, ..
            } => (buf.as_ptr() as usize + start, *len),
            Op::ReadRaw { addr, len, .. } => (*addr, *len),
            Op::Write { data, .. } => (data.as_ptr() as usize, data.len()),
            Op::Sync { .. } => (0, 0),
        }
    }

    /// How the transfer is cut into pieces.
    pub(crate) fn layout(&self) -> Layout {
        let (len, chunk, offset) = match self {
            Op::Read {
                buf, chunk, offset, ..
            } => (buf.max_len(), *chunk, *offset),
            Op::ReadPart {
                len, chunk, offset, ..
            }
            | Op::ReadRaw {
                len, chunk, offset, ..
            } => (*len, *chunk, *offset),
            Op::Write {
                data,
                chunk,
                offset,
                ..
            } => (data.len(), *chunk, *offset),
            Op::Sync { .. } => (0, 1, 0),
        };
        Layout {
            len,
            chunk: chunk.max(1),
            offset,
        }
    }

    /// How many pieces the transfer is cut into (a sync, or an empty transfer, is one).
    pub(crate) fn piece_count(&self) -> usize {
        self.layout().pieces()
    }

    /// Piece `i` of [`piece_count`](Self::piece_count).
    pub(crate) fn piece(&self, i: usize) -> Piece {
        self.layout().piece(i)
    }
}

/// `len` bytes from file offset `offset`, in pieces of `chunk`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    len: usize,
    chunk: usize,
    offset: u64,
}

impl Layout {
    /// How many pieces (at least one).
    pub(crate) fn pieces(&self) -> usize {
        self.len.div_ceil(self.chunk).max(1)
    }

    /// Piece `i`.
    pub(crate) fn piece(&self, i: usize) -> Piece {
        let at = i.saturating_mul(self.chunk);
        Piece {
            at,
            len: self.len.saturating_sub(at).min(self.chunk),
            offset: self.offset.saturating_add(at as u64),
        }
    }
}

/// Turns a finished transfer and its pieces' results (bytes, or `-errno`) into what the
/// caller gets back.
pub(crate) type Finish<T> = fn(Op, &[i32]) -> Result<T>;

/// The error of a piece that failed with `-errno`.
fn piece_error(op: &Op, doing: &str, piece: Piece, errno: i32) -> Error {
    op.file().io_error(
        doing,
        piece.offset,
        std::io::Error::from_raw_os_error(errno.saturating_neg()),
    )
}

/// The bytes a read brought in: up to the first short piece (end of file), or the first
/// failure.
fn bytes_read(op: &Op, results: &[i32]) -> Result<usize> {
    let mut done = 0usize;
    for (i, &res) in results.iter().enumerate() {
        let piece = op.piece(i);
        if res < 0 {
            return Err(piece_error(op, "reading", piece, res));
        }
        done += res as usize;
        if (res as usize) < piece.len {
            break; // end of file: later pieces read past it
        }
    }
    Ok(done)
}

fn not_a_read() -> Error {
    Error::InvalidRequest("a read finished as another op".into())
}

/// A read: bytes up to the first short piece (end of file), `len` set to them.
pub(crate) fn finish_read(op: Op, results: &[i32]) -> Result<BufferMut> {
    let done = bytes_read(&op, results)?;
    match op {
        Op::Read { mut buf, .. } => {
            buf.set_len(done)?;
            Ok(buf)
        }
        _ => Err(not_a_read()),
    }
}

/// A read into part of a buffer: `len` becomes `max(len, start + bytes read)`.
pub(crate) fn finish_read_part(op: Op, results: &[i32]) -> Result<BufferMut> {
    let done = bytes_read(&op, results)?;
    match op {
        Op::ReadPart { mut buf, start, .. } => {
            let end = start.saturating_add(done).max(buf.len());
            buf.set_len(end)?;
            Ok(buf)
        }
        _ => Err(not_a_read()),
    }
}

/// A read into lent memory: the bytes read.
pub(crate) fn finish_read_raw(op: Op, results: &[i32]) -> Result<usize> {
    bytes_read(&op, results)
}

/// A write: all of it, or the first failure; a short piece is an error (no space).
pub(crate) fn finish_write(op: Op, results: &[i32]) -> Result<usize> {
    let mut done = 0usize;
    for (i, &res) in results.iter().enumerate() {
        let piece = op.piece(i);
        if res < 0 {
            return Err(piece_error(&op, "writing", piece, res));
        }
        if (res as usize) < piece.len {
            if let Op::Write {
                tearing: Tearing::Impossible,
                ..
            } = &op
            {
                // All or nothing was promised: finishing it with a plain write would
                // break that, so the caller learns it did not happen whole.
                return Err(piece_error(&op, "writing (untorn)", piece, -libc::EIO));
            }
            // The kernel may write part of a request (the disk filling up, a quota, a file
            // size limit): write the rest, as a `pwrite` loop would, to finish it or to
            // learn the real cause (ENOSPC, EDQUOT, EFBIG). Rare, so done here, blocking.
            finish_short_write(&op, piece, res as usize)?;
        }
        done += piece.len;
    }
    Ok(done)
}

/// Writes what a short write left of `piece` (`written` of it done), synchronously.
fn finish_short_write(op: &Op, piece: Piece, written: usize) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let Op::Write { file, data, .. } = op else {
        return Err(Error::InvalidRequest(
            "a write finished as another op".into(),
        ));
    };
    let rest = &data[piece.at + written..piece.at + piece.len];
    let at = piece.offset + written as u64;
    file.file.write_all_at(rest, at).map_err(|e| {
        let e = if e.kind() == std::io::ErrorKind::WriteZero {
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!(
                    "wrote {written} of {} bytes, then nothing more (a full disk or a \
                     quota)",
                    piece.len
                ),
            )
        } else {
            e
        };
        file.io_error("writing", at, e)
    })
}

/// A sync: done, or the failure (data may be lost: do not acknowledge it).
pub(crate) fn finish_sync(op: Op, results: &[i32]) -> Result<()> {
    match results.first() {
        Some(&res) if res < 0 => Err(Error::io(
            format!("syncing {}", op.file().path.display()),
            std::io::Error::from_raw_os_error(res.saturating_neg()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::{BufferAllocator, PageAllocator};
    use crate::direct::{DirectFile, DirectIo};

    /// A piece the kernel wrote only part of is finished by writing the rest: the caller
    /// gets the whole length, and the file holds every byte.
    #[test]
    fn a_short_piece_is_finished_not_reported_as_lost() {
        let path = std::env::temp_dir().join(format!("pagebuf-short-{}", std::process::id()));
        let file = DirectFile::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .direct(DirectIo::Off)
            .open(&path)
            .unwrap();
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        // What the kernel took: the first 4096 bytes.
        std::os::unix::fs::FileExt::write_all_at(&file_handle(&path), &bytes[..4096], 0).unwrap();
        let mut data = PageAllocator::default()
            .allocate_page_aligned(8192)
            .unwrap();
        data.extend_from_slice(&bytes).unwrap();
        let op = Op::Write {
            file: file.shared(),
            data: data.freeze(),
            offset: 0,
            chunk: 8192,
            tearing: Tearing::Possible,
        };
        assert_eq!(finish_write(op, &[4096]).unwrap(), 8192);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(&path).unwrap();
    }

    fn file_handle(path: &std::path::Path) -> std::fs::File {
        std::fs::OpenOptions::new().write(true).open(path).unwrap()
    }
}
