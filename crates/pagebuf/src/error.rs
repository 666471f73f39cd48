//! The one error type of pagebuf.
//!
//! Each variant stands for one of the reference documents' result codes (named on the
//! variant), and every message is written for the person who has to act on it: it
//! says what was wrong *and what to change*. Constructors below keep the wording in
//! one place so the modules that fail do not each invent their own.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// `Result<T, pagebuf::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in pagebuf.
///
/// Match on the variant to react; print it (`Display`) to tell a person what to do.
///
/// ```
/// use pagebuf::{BufferAllocator, Error, HeapAllocator};
///
/// let err = HeapAllocator::default().allocate(0).unwrap_err();
/// assert!(matches!(err, Error::InvalidArgument(_)));
/// assert!(err.to_string().contains("at least 1 byte"));
///
/// // Errors travel: cloned to every caller of a sticky failure, and into `std::io`.
/// let again = err.clone();
/// let io: std::io::Error = again.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// assert_eq!(io.to_string(), err.to_string());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is out of range or inconsistent (`E_INVALIDARG`). The message names
    /// the argument, its value, and the accepted range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Memory could not be obtained (`E_OUTOFMEMORY`): the allocator returned null, or
    /// the kernel refused a mapping or a lock. The process keeps running.
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// The call is not valid in the object's current state (`NS_E_INVALID_REQUEST`),
    /// for example writing a sample before `begin_writing`.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A bounded wait ran out before the resource became available.
    #[error(
        "timed out after {waited:?} waiting for {what}; wait longer, or return buffers sooner"
    )]
    Timeout {
        /// What the caller was waiting for.
        what: String,
        /// How long it waited.
        waited: Duration,
    },

    /// The pool was closed (decommitted) while, or before, the caller asked it for memory.
    #[error("the pool is closed (decommitted): no more allocations are served; create a new pool")]
    Closed,

    /// An address, file offset or length does not meet the alignment direct I/O needs.
    /// Reported before any system call, instead of the kernel's bare `EINVAL`.
    #[error("{}", misaligned_message(*what, *value, *required))]
    Misaligned {
        /// Which of the three is misaligned.
        what: Misalignment,
        /// The offending value.
        value: u64,
        /// The alignment it must be a multiple of.
        required: u64,
    },

    /// The platform, file system or configuration cannot do what was asked.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An operation arrived too late to be honoured, such as a sample whose time has
    /// drifted past the writer's sync tolerance.
    #[error("late operation: {0}")]
    LateOperation(String),

    /// Data failed a consistency check. `offset` says where, `detail` what was wrong.
    #[error("corrupt data at byte offset {offset}: {detail}")]
    Corrupt {
        /// Byte offset, in the file or buffer being read, of the bad data.
        offset: u64,
        /// What check failed.
        detail: String,
    },

    /// An operating-system I/O error, with what pagebuf was doing when it happened.
    /// The `io::Error` is shared, so a sticky failure can be handed to every caller
    /// that meets it (`Error: Clone`).
    #[error("{context}: {source}")]
    Io {
        /// What pagebuf was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
}

/// Which part of a direct-I/O request broke the alignment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Misalignment {
    /// The memory address of the buffer.
    Address,
    /// The offset in the file.
    Offset,
    /// The length of the transfer.
    Length,
}

impl fmt::Display for Misalignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misalignment::Address => "buffer address",
            Misalignment::Offset => "file offset",
            Misalignment::Length => "transfer length",
        })
    }
}

fn misaligned_message(what: Misalignment, value: u64, required: u64) -> String {
    let (shown, fix) = match what {
        Misalignment::Address => (
            format!("{value:#x}"),
            "allocate the buffer with allocate_page_aligned, a PageAllocator or a FramePool",
        ),
        Misalignment::Offset => (
            value.to_string(),
            "round the offset down to a block boundary and read the surrounding block",
        ),
        Misalignment::Length => (
            value.to_string(),
            "round the length up to whole blocks (pad the tail) or use buffered I/O for it",
        ),
    };
    format!("misaligned {what}: {shown} is not a multiple of {required}; {fix}")
}

impl Error {
    /// An [`Error::Io`] with what pagebuf was doing when `source` happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The `std::io::ErrorKind` this error stands for: the system's own for
    /// [`Error::Io`], the nearest for the others.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidArgument(_) | Error::Misaligned { .. } => io::ErrorKind::InvalidInput,
            Error::OutOfMemory(_) => io::ErrorKind::OutOfMemory,
            Error::InvalidRequest(_) | Error::LateOperation(_) => io::ErrorKind::Other,
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::Io { source, .. } => source.kind(),
        }
    }

    /// The operating system's error number, for [`Error::Io`] errors that carry one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The [`Error::InvalidArgument`] for a size that must be at least one byte.
    pub(crate) fn zero_size(what: &str) -> Error {
        Error::InvalidArgument(format!(
            "{what} is 0: a buffer needs at least 1 byte; ask for 1 or more"
        ))
    }

    /// The [`Error::InvalidArgument`] for size arithmetic that would overflow.
    pub(crate) fn size_overflow(what: &str, size: usize, rounding: usize) -> Error {
        Error::InvalidArgument(format!(
            "{what} of {size} bytes cannot be rounded up to a multiple of {rounding} \
             without exceeding the address space; ask for at most {} bytes",
            max_rounded_size(rounding)
        ))
    }
}

/// The largest size that still rounds up to a multiple of `granule` within `isize::MAX`
/// (the most any allocation may span).
pub(crate) fn max_rounded_size(granule: usize) -> usize {
    (isize::MAX as usize) & !(granule - 1)
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::io("I/O error", source)
    }
}

/// Keeps the kind and the whole message; the pagebuf error stays reachable as the
/// `io::Error`'s inner error (`get_ref`, `into_inner` then `downcast`).
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_names_part_value_and_alignment() {
        let e = Error::Misaligned {
            what: Misalignment::Offset,
            value: 512,
            required: 4096,
        };
        let text = e.to_string();
        assert!(text.contains("file offset"), "{text}");
        assert!(text.contains("512"), "{text}");
        assert!(text.contains("4096"), "{text}");
        let e = Error::Misaligned {
            what: Misalignment::Address,
            value: 0x1010,
            required: 4096,
        };
        assert!(e.to_string().contains("0x1010"), "{e}");
    }

    #[test]
    fn into_io_error_keeps_kind_message_and_errno() {
        let e = Error::io("reading x", io::Error::from_raw_os_error(28));
        let copy = e.clone();
        assert_eq!(copy.raw_os_error(), Some(28));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::StorageFull);
        assert_eq!(io.to_string(), copy.to_string());
        let inner = io.into_inner().unwrap().downcast::<Error>().unwrap();
        assert_eq!(inner.raw_os_error(), Some(28));
        for (err, kind) in [
            (Error::Closed, io::ErrorKind::BrokenPipe),
            (Error::Unsupported("x".into()), io::ErrorKind::Unsupported),
            (
                Error::Corrupt {
                    offset: 1,
                    detail: "x".into(),
                },
                io::ErrorKind::InvalidData,
            ),
        ] {
            let text = err.to_string();
            let io = io::Error::from(err);
            assert_eq!((io.kind(), io.to_string()), (kind, text));
        }
    }

    #[test]
    fn io_error_keeps_source_and_context() {
        let e = Error::io("reading the header", io::Error::from_raw_os_error(5));
        assert!(e.to_string().starts_with("reading the header: "));
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn size_overflow_suggests_a_size_that_works() {
        let text = Error::size_overflow("max_size", usize::MAX, 4096).to_string();
        assert!(text.contains(&max_rounded_size(4096).to_string()), "{text}");
        assert_eq!(max_rounded_size(4096) % 4096, 0);
    }
}
