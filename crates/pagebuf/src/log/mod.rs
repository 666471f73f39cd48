//! A durable log: records appended with group commit ([`LogWriter`]) and read back in
//! order ([`LogReader`]), on direct I/O through the process's [`IoRing`](crate::IoRing).
//!
//! * **Numbers.** [`Lsn`]s start at 1 and grow by one per record; 0 means "none"
//!   ([`LogWriter::durable_lsn`] before any commit).
//! * **Durability.** [`LogWriter::commit`] returns once the records up to its `Lsn` are
//!   on disk; concurrent commits share one write and one sync. A commit never rewrites
//!   what an earlier one made durable with a write that could tear: each pads to the
//!   device's unit, or, where the file system promises untorn writes of the unit, the
//!   next commit writes the unit again untorn ([`TailWrite`]).
//! * **Recovery.** [`LogReader`] yields every whole record in order and stops at the
//!   first torn or corrupt one with its offset; [`LogWriter::open`] recovers the same
//!   way, cuts what follows, and appends after it.
//! * **Format:** FORMAT.md, "Log file".

mod format;
mod options;
mod reader;
mod scan;
mod segments;
mod writer;

pub use options::{
    LogOptions, DEFAULT_LOG_BLOCK, DEFAULT_LOG_DEPTH, DEFAULT_LOG_SEGMENT, DEFAULT_SPARE_SEGMENTS,
};
pub use reader::{LogReader, LogRecord};
pub use writer::{LogStats, LogWriter, TailWrite};

/// A record's number in its log: 1 for the first, one more for each after.
pub type Lsn = u64;

/// The largest record [`LogWriter::append`] takes: 16 MiB.
pub const MAX_RECORD: usize = 16 << 20;
