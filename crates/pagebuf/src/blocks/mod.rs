//! The block-I/O core every pipeline sits on: a [`BlockSink`] of positioned writes and a
//! [`BlockSource`] of planned reads, both on an [`IoRing`](crate::IoRing), plus the
//! space [`Reservation`] ahead of a sequential writer, and the [`OwnPool`] of blocks a
//! pipeline makes for itself, registered with its ring. `DirectWriter`/`DirectReader`,
//! `copy_file` and the sample writer and reader lay out their files and checks; how
//! blocks reach the disk, how many are in flight, how a failure sticks and how a
//! written file is finished (length, sync, its directory) lives here once.

mod own_pool;
mod reservation;
mod sink;
mod source;

pub(crate) use own_pool::OwnPool;
pub(crate) use reservation::Reservation;
#[cfg(feature = "testing")]
pub use sink::WriteTrace;
pub(crate) use sink::{BlockSink, Ticket};
pub(crate) use source::{block_plan, BlockSource, ReadBlock, ReadMemory, ReadPlan};

use crate::caps;
use crate::direct::DirectFile;
use crate::error::{Error, Result};

/// Checks a block size and depth against their caps and `file`'s alignment, naming the
/// options as the caller spells them (`what` is e.g. `DirectWriterOptions`).
pub(crate) fn check_blocks(
    file: &DirectFile,
    block_size: usize,
    depth: usize,
    what: &str,
) -> Result<()> {
    caps::check(&format!("{what}::depth"), depth, caps::MAX_DEPTH)?;
    caps::check(
        &format!("{what}::block_size"),
        block_size,
        caps::MAX_BLOCK_SIZE,
    )?;
    let unit = file.limits().alignment().max(1) as usize;
    if block_size % unit != 0 {
        return Err(Error::InvalidArgument(format!(
            "{what}::block_size({block_size}) is not a multiple of the alignment {unit} of \
             {}; use a multiple of {unit}",
            file.path().display()
        )));
    }
    Ok(())
}

/// Block size unless configured: the device's largest single request, capped at 1 MiB
/// and rounded to its alignment.
pub(crate) fn default_block_size(file: &DirectFile) -> usize {
    let unit = file.limits().alignment().max(1) as u64;
    let max = file.limits().max_page_aligned_transfer.min(1 << 20);
    usize::try_from((max / unit * unit).max(unit)).unwrap_or(1 << 20)
}
