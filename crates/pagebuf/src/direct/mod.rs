//! Direct I/O: [`DirectFile`], positioned reads and writes with `O_DIRECT`, checked
//! before the kernel sees them (the reference's "page-aligned reads"), and the sequential
//! [`DirectWriter`] (`io::Write`) and [`DirectReader`] (`io::Read`, `io::BufRead`) over
//! one, which keep several whole, aligned blocks in flight on an [`IoRing`](crate::IoRing).
//!
//! * **Alignment.** With direct I/O on, the buffer address must be a multiple of the
//!   device's `dio_mem_align`, and the file offset and the length multiples of its
//!   `dio_offset_align` ([`DeviceLimits`](crate::DeviceLimits)). A request that breaks a rule is refused with
//!   [`Error::Misaligned`] naming which of the three, its value and the alignment, before
//!   any system call, instead of the kernel's bare `EINVAL`.
//! * **Splitting.** A transfer larger than the device takes in one request
//!   (`max_page_aligned_transfer`, or `max_non_page_aligned_transfer` for a buffer that
//!   is not page-aligned) is issued in pieces of that size, so the block layer does not
//!   split it again.
//! * **End of file.** Reads return the short count at end of file. Direct writes are
//!   whole blocks; a file whose length is not a block multiple is finished by **pad and
//!   truncate**: write the last block padded, then `set_len` to the true length. That
//!   keeps every write on the fast path (no buffered tail mixing page-cache and direct
//!   I/O on one file, whose coherence the kernel only guarantees at great cost).
//! * **Policy.** Where the file system refuses `O_DIRECT`, [`DirectIo`] decides:
//!   `Require` fails with [`Error::Unsupported`], `Prefer` falls back to buffered I/O
//!   and says so ([`DirectFile::is_direct`], [`DirectFile::fallback_note`]), `Off`
//!   never asks.

//! * **Sequential.** [`DirectWriter`] and [`DirectReader`] move whole blocks of
//!   `block_size` bytes, `depth` in flight, buffers from any
//!   [`BufferAllocator`](crate::BufferAllocator) (by default a pool sized to the
//!   pipeline), on the ring their [`SequentialOptions`] give (by default
//!   [`IoRing::process_default`](crate::IoRing::process_default)). The writer reserves
//!   space ahead of itself, so its writes are overwrites the file system runs side by
//!   side, finishes an odd length by pad and truncate, and reports a failed write on
//!   every later call; both give their file back (`get_ref`, `into_file`).

mod file;
mod options;
mod reader;
mod writer;

pub(crate) use file::{limits_before_open, OpenFile};
pub use file::{DirectFile, DirectFileOptions, DirectIo};
pub use options::{DirectReaderOptions, DirectWriterOptions, SequentialOptions, DEFAULT_DEPTH};
pub use reader::DirectReader;
pub use writer::DirectWriter;

use std::sync::Arc;

use crate::error::{Error, Result};

/// The file alone, once every transfer that shared it is gone.
fn unshare(file: Arc<DirectFile>) -> Result<DirectFile> {
    Arc::try_unwrap(file).map_err(|file| {
        Error::InvalidRequest(format!(
            "{} is still in use by transfers in flight; finish them first",
            file.path().display()
        ))
    })
}
