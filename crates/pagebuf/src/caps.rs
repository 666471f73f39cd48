//! The cap of every knob: the largest depth, block, window or budget an option accepts.
//!
//! A value past its cap is [`Error::InvalidArgument`] naming the option and the cap,
//! checked when the object is built (`with_options`, `create`, the entry of
//! [`copy_file`](crate::copy::copy_file)), before any file is touched. So no argument
//! makes pagebuf start unbounded threads or reserve unbounded memory.
//!
//! ```
//! use pagebuf::copy::{copy_file, CopyOptions};
//! use pagebuf::Error;
//!
//! let too_deep = CopyOptions::default().depth(1 << 40);
//! let err = copy_file("in", "out", &too_deep, &mut |_, _| {}).unwrap_err();
//! assert!(matches!(err, Error::InvalidArgument(_)));
//! assert!(err.to_string().contains(&pagebuf::caps::MAX_DEPTH.to_string()));
//! ```

use crate::error::{Error, Result};

/// Transfers in flight for a sequential writer or reader, a sample writer or reader, or
/// a copy (each side). Past a few dozen, more transfers in flight only queue in the
/// device; each is a worker thread today.
pub const MAX_DEPTH: usize = 64;

/// Bytes per transfer block of a sequential writer or reader or a copy.
pub const MAX_BLOCK_SIZE: usize = 64 << 20;

/// Bytes per read of a [`SampleReader`](crate::SampleReader) (`ReaderOptions::window`).
/// A record larger than the window is still read whole.
pub const MAX_WINDOW: usize = 256 << 20;

/// Bytes of a memory budget (`WriterOptions::memory_budget`,
/// `ReaderOptions::memory_budget`): 1 TiB.
pub const MAX_MEMORY_BUDGET: usize = 1 << 40;

/// Bytes of buffers a copy holds at once (`block_size × (3 × depth + 2)`): 4 GiB.
pub const MAX_COPY_MEMORY: usize = 4 << 30;

/// `value` if it lies in `1..=cap`; otherwise the error that names `option` (as the
/// caller writes it, e.g. `CopyOptions::depth`), the value and the range.
pub(crate) fn check(option: &str, value: usize, cap: usize) -> Result<usize> {
    if (1..=cap).contains(&value) {
        return Ok(value);
    }
    let why = if value == 0 {
        "is 0"
    } else {
        "is past its cap"
    };
    Err(Error::InvalidArgument(format!(
        "{option}({value}) {why}; use 1..={cap}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_one_to_cap_and_names_option_and_range() {
        assert_eq!(check("X::depth", 1, 8).unwrap(), 1);
        assert_eq!(check("X::depth", 8, 8).unwrap(), 8);
        for bad in [0, 9, usize::MAX] {
            let text = check("X::depth", bad, 8).unwrap_err().to_string();
            assert!(
                text.contains("X::depth") && text.contains("1..=8"),
                "{text}"
            );
        }
    }
}
