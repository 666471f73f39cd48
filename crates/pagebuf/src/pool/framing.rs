//! `Framing`: what a frame pool holds (the reference's allocator framing: frame size,
//! frame count, alignment, prefix), validated into a concrete layout.

use crate::error::{Error, Result};
use crate::memory::{page_size, round_up, RegionOptions};

/// The most frames one pool can hold (frame indices share a 64-bit word with a tag).
pub const MAX_FRAMES: usize = (1 << 30) - 2;

/// Where a pool's frames live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameMemory {
    /// One anonymous mapping (the default, pre-faulted so no frame takes a page fault
    /// on first use); the options choose huge pages and `mlock`.
    Pages(RegionOptions),
    /// One zero-filled block from the global allocator.
    Heap,
    /// Memory the host supplies (a driver's or another library's mapping): see
    /// [`HostMemory`](super::HostMemory), whose constructor states the contract.
    Host(super::HostMemory),
    /// One mapping of a sealed memfd (`MAP_SHARED`, sealed against resizing), which
    /// another process can map too: [`FramePool::memfd`](super::FramePool::memfd) gives
    /// the fd, [`FramePool::memfd_offset`](super::FramePool::memfd_offset) where a frame
    /// lies in it (GStreamer's `memfd` memory, passed with an offset per frame). The
    /// options choose reserved huge pages (`MFD_HUGETLB`), prefault and `mlock`. For
    /// frames *and* their bookkeeping shared, allocated and returned by several
    /// processes, see [`SharedPool`](crate::SharedPool).
    SharedMemory(RegionOptions),
}

impl Default for FrameMemory {
    fn default() -> FrameMemory {
        FrameMemory::Pages(RegionOptions::default().prefault(true))
    }
}

/// The framing of a [`FramePool`](super::FramePool): frame size, number of frames,
/// alignment, headroom (`prefix`), zeroing, memory source. Builder methods take and
/// return `Self`; [`FramePool::new`](super::FramePool::new) validates the whole.
///
/// ```
/// use pagebuf::pool::Framing;
///
/// // 8 frames of 188 * 7 bytes (MPEG-TS), 16-byte headroom, 512-byte aligned via a
/// // FILE_512_BYTE_ALIGNMENT-style mask.
/// let framing = Framing::new(188 * 7, 8).alignment_mask(511).prefix(16);
/// assert_eq!(framing.alignment_value(), 512);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    frame_size: usize,
    frames: usize,
    alignment: Option<usize>,
    alignment_error: Option<String>,
    prefix: usize,
    zero_on_reuse: bool,
    memory: FrameMemory,
}

impl Framing {
    /// `frames` frames of `frame_size` bytes each, page-aligned, no prefix.
    pub fn new(frame_size: usize, frames: usize) -> Framing {
        Framing {
            frame_size,
            frames,
            alignment: None,
            alignment_error: None,
            prefix: 0,
            zero_on_reuse: false,
            memory: FrameMemory::default(),
        }
    }

    /// Align every frame's data pointer to `alignment` bytes (a power of two; default:
    /// the page size, which direct I/O needs).
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = Some(alignment);
        self.alignment_error = None;
        self
    }

    /// Align to `mask + 1` bytes, for a Windows `FILE_*_ALIGNMENT`-style mask such as
    /// `FILE_512_BYTE_ALIGNMENT` (511). `mask + 1` must be a power of two.
    pub fn alignment_mask(mut self, mask: usize) -> Self {
        match mask.checked_add(1) {
            Some(alignment) => self.alignment = Some(alignment),
            None => {
                self.alignment_error = Some(format!(
                    "alignment mask {mask:#x} + 1 overflows; a mask is alignment - 1, such as 511"
                ))
            }
        }
        self
    }

    /// Reserve `prefix` bytes of headroom before each frame's data (DirectShow `cbPrefix`),
    /// for headers written in front of the payload without a copy.
    pub fn prefix(mut self, prefix: usize) -> Self {
        self.prefix = prefix;
        self
    }

    /// Zero a frame's bytes before it is handed out again, so no data leaks from one
    /// user of a frame to the next.
    pub fn zero_on_reuse(mut self, zero_on_reuse: bool) -> Self {
        self.zero_on_reuse = zero_on_reuse;
        self
    }

    /// Where the frames live (default: pre-faulted anonymous pages).
    pub fn memory(mut self, memory: FrameMemory) -> Self {
        self.memory = memory;
        self
    }

    /// Bytes of data per frame.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The alignment of each frame's data pointer.
    pub fn alignment_value(&self) -> usize {
        self.alignment.unwrap_or_else(page_size)
    }

    /// Headroom asked for before each frame.
    pub fn prefix_value(&self) -> usize {
        self.prefix
    }

    /// Whether frames are zeroed before reuse.
    pub fn is_zero_on_reuse(&self) -> bool {
        self.zero_on_reuse
    }

    /// The memory source.
    pub fn memory_source(&self) -> FrameMemory {
        self.memory.clone()
    }

    /// Checks the framing and computes where frame `i` lives.
    pub(crate) fn layout(&self) -> Result<FrameLayout> {
        let invalid = |message: String| Err(Error::InvalidArgument(message));
        if let Some(message) = &self.alignment_error {
            return invalid(message.clone());
        }
        if self.frame_size == 0 {
            return invalid("frame_size is 0: a frame needs at least 1 byte".into());
        }
        if self.frames == 0 {
            return invalid("frames is 0: a pool needs at least 1 frame".into());
        }
        if self.frames > MAX_FRAMES {
            return invalid(format!(
                "frames {} is over the limit of {MAX_FRAMES}; use larger frames or several pools",
                self.frames
            ));
        }
        let alignment = self.alignment_value();
        if !alignment.is_power_of_two() {
            return invalid(format!(
                "alignment {alignment} is not a power of two; use 1, 2, 4, ..., 4096 (or a \
                 mask such as 511 with alignment_mask)"
            ));
        }
        if self.prefix > self.frame_size {
            return invalid(format!(
                "prefix {} is larger than the frame ({} bytes); the headroom must not \
                 exceed the frame size",
                self.prefix, self.frame_size
            ));
        }
        let overflow = || {
            Error::InvalidArgument(format!(
                "{} frames of {} bytes (prefix {}, alignment {alignment}) do not fit the \
                 address space; use fewer or smaller frames",
                self.frames, self.frame_size, self.prefix
            ))
        };
        // Headroom is rounded up so that the data after it stays aligned.
        let headroom = round_up(self.prefix, alignment).ok_or_else(overflow)?;
        let stride = headroom
            .checked_add(self.frame_size)
            .and_then(|end| round_up(end, alignment))
            .ok_or_else(overflow)?;
        let total = stride
            .checked_mul(self.frames)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        Ok(FrameLayout {
            headroom,
            stride,
            total,
            alignment,
        })
    }
}

/// Where the frames of a validated framing lie in the pool's one block of memory:
/// frame `i`'s data starts at `base + i * stride + headroom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameLayout {
    pub(crate) headroom: usize,
    pub(crate) stride: usize,
    pub(crate) total: usize,
    pub(crate) alignment: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(framing: Framing, needle: &str) {
        match framing.layout() {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected InvalidArgument containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn bad_framings_are_invalid_arguments() {
        invalid(Framing::new(0, 4), "frame_size is 0");
        invalid(Framing::new(4096, 0), "frames is 0");
        invalid(Framing::new(4096, 4).alignment(3), "power of two");
        invalid(Framing::new(4096, 4).alignment(0), "power of two");
        invalid(Framing::new(4096, 4).alignment_mask(510), "power of two");
        invalid(
            Framing::new(4096, 4).alignment_mask(usize::MAX),
            "overflows",
        );
        invalid(Framing::new(100, 4).prefix(101), "larger than the frame");
        invalid(Framing::new(usize::MAX / 2, 4), "do not fit");
        invalid(Framing::new(usize::MAX, 1), "do not fit");
        invalid(Framing::new(1, MAX_FRAMES + 1), "over the limit");
    }

    #[test]
    fn layout_keeps_data_aligned_after_the_prefix() {
        let layout = Framing::new(1000, 3)
            .alignment(64)
            .prefix(10)
            .layout()
            .unwrap();
        assert_eq!(layout.headroom, 64);
        assert_eq!(layout.stride, 1088);
        assert_eq!(layout.total, 3 * 1088);
        let page = Framing::new(65536, 2).layout().unwrap();
        assert_eq!((page.headroom, page.stride), (0, 65536));
        assert_eq!(
            Framing::new(1, 1).alignment_mask(511).alignment_value(),
            512
        );
    }
}
