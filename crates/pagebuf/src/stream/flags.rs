//! `SampleFlags`: what a sample is, beyond its bytes and time (bitflags-style).

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// Flags of a sample (the reference's `WM_SF_CLEANPOINT`, `WM_SF_DISCONTINUITY`);
/// combine with `|`.
///
/// ```
/// use pagebuf::stream::SampleFlags;
/// let flags = SampleFlags::KEY_FRAME | SampleFlags::DISCONTINUITY;
/// assert!(flags.contains(SampleFlags::KEY_FRAME));
/// assert!(!SampleFlags::empty().contains(SampleFlags::DISCONTINUITY));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SampleFlags(u16);

impl SampleFlags {
    /// A point a decoder can start from (`CLEANPOINT`).
    pub const KEY_FRAME: SampleFlags = SampleFlags(1);
    /// The stream does not continue smoothly from the previous sample (a gap).
    pub const DISCONTINUITY: SampleFlags = SampleFlags(2);

    /// No flags.
    pub const fn empty() -> SampleFlags {
        SampleFlags(0)
    }

    /// The raw bits, as stored in the file.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Flags from raw bits, keeping bits this version does not name.
    pub const fn from_bits_retain(bits: u16) -> SampleFlags {
        SampleFlags(bits)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: SampleFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for SampleFlags {
    type Output = SampleFlags;
    fn bitor(self, rhs: SampleFlags) -> SampleFlags {
        SampleFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for SampleFlags {
    fn bitor_assign(&mut self, rhs: SampleFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for SampleFlags {
    type Output = SampleFlags;
    fn bitand(self, rhs: SampleFlags) -> SampleFlags {
        SampleFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for SampleFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(SampleFlags::KEY_FRAME) {
            names.push("KEY_FRAME".to_string());
        }
        if self.contains(SampleFlags::DISCONTINUITY) {
            names.push("DISCONTINUITY".to_string());
        }
        let rest = self.0 & !(SampleFlags::KEY_FRAME.0 | SampleFlags::DISCONTINUITY.0);
        if rest != 0 {
            names.push(format!("{rest:#x}"));
        }
        if names.is_empty() {
            f.write_str("SampleFlags(empty)")
        } else {
            write!(f, "SampleFlags({})", names.join(" | "))
        }
    }
}
