//! The bytes of a shared pool's memfd (layout version [`VERSION`]), and the checks an
//! attaching process makes before it trusts them.
//!
//! ```text
//! 0              Control: header words (magic, version, geometry, checksum), then the
//!                claim cursor, the futex words, counters, the process table
//! table_offset   one FrameEntry per frame: `next` (a hand-over's length), `owner`
//! ring_offset    the hand-over ring: one cell per frame, rounded up to a power of two
//! frames_offset  the frames, `stride` bytes apart, data at `headroom` inside each;
//!                page-aligned
//! total_len      = the memfd's size (sealed: it can never change)
//! ```
//!
//! Everything lives in atomics: another process may write any word at any time, so
//! nothing here is read as plain memory, and every value taken from it is checked
//! before it is used as an index or an offset.

use std::mem::size_of;

use crate::error::{Error, Result};
use crate::memory::{huge_page_size, page_size, round_up};
use crate::pool::Framing;
// `crate::sync`: std's atomics (plain words, as shared memory needs), or loom's when the
// protocol is model-checked in one process (tests/loom_shared.rs).
use crate::sync::{AtomicU32, AtomicU64};

/// "PGBFSHRD": the first word of every pagebuf shared pool.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"PGBFSHRD");
/// The layout version this build writes and reads. Bump it on any change to the
/// structs below or to the meaning of a word.
/// Version 2: a frame's owner word is the only record of who holds it (no free list).
pub(super) const VERSION: u64 = 2;
/// Processes that can have one pool attached at once.
pub(super) const MAX_PROCESSES: usize = 64;
/// Frame alignment a shared pool can promise: each process maps the memfd at its own
/// page-aligned address, so nothing stricter than a page holds in all of them.
pub(super) fn max_alignment() -> usize {
    page_size()
}
/// One past the largest frame count: frame indices travel as `index + 1` in the 24
/// bits of a ring cell (`ring.rs`).
pub(super) const FRAME_LIMIT: u32 = 1 << 24;

/// The header words, in order; the checksum covers all the others.
#[repr(C)]
pub(super) struct HeaderWords {
    pub(super) magic: AtomicU64,
    pub(super) version: AtomicU64,
    pub(super) frame_size: AtomicU64,
    pub(super) frames: AtomicU64,
    pub(super) alignment: AtomicU64,
    pub(super) headroom: AtomicU64,
    pub(super) stride: AtomicU64,
    pub(super) table_offset: AtomicU64,
    pub(super) frames_offset: AtomicU64,
    pub(super) total_len: AtomicU64,
    /// Bit 0: zero a frame before handing it out (`Framing::zero_on_reuse`).
    pub(super) flags: AtomicU64,
    pub(super) checksum: AtomicU64,
}

/// Bit of `HeaderWords::flags`: frames are zeroed before each hand-out.
pub(super) const FLAG_ZERO_ON_REUSE: u64 = 1;
/// The memfd is on reserved huge pages (`MFD_HUGETLB`): the frames start on a huge
/// page boundary and the size is a whole number of huge pages.
pub(super) const FLAG_HUGE_PAGES: u64 = 2;

/// A cache line of its own, so that the claim cursor and the futex words are not
/// dragged across by unrelated counters.
#[repr(C, align(64))]
pub(super) struct Line<T>(pub(super) T);

/// Claiming frames (`frame_table.rs`): where the next scan starts, and the counts
/// behind the high-water mark.
#[repr(C)]
pub(super) struct FreeWords {
    /// Where the next claim starts looking: a hint, any value is safe.
    pub(super) cursor: AtomicU64,
    /// Frames claimed and not yet freed, for the high-water mark (`stats` counts the
    /// owner words instead; this drifts only if a process dies between a claim or a
    /// release and its count).
    pub(super) out: AtomicU64,
    pub(super) high_water: AtomicU64,
}

/// The futex protocol: `released` counts pushes (it is the futex word); `waiters`
/// counts processes' threads inside a wait, so a release makes the wake syscall only
/// when someone may sleep.
#[repr(C)]
pub(super) struct WaitWords {
    pub(super) released: AtomicU32,
    pub(super) waiters: AtomicU32,
    /// Non-zero once any process found the bookkeeping corrupt: every process refuses
    /// to allocate from then on.
    pub(super) poisoned: AtomicU32,
    pub(super) spare: AtomicU32,
}

/// History counters, as `PoolStats` reports them.
#[repr(C)]
pub(super) struct Counters {
    pub(super) allocations: AtomicU64,
    pub(super) exhausted: AtomicU64,
    pub(super) waits: AtomicU64,
}

/// One process attached to the pool: `state` is `[generation:56][ProcessState:8]`;
/// `pid` and `start_time` (field 22 of `/proc/<pid>/stat`) say which process, so a
/// reused pid is not mistaken for the one that attached.
#[repr(C)]
pub(super) struct ProcessEntry {
    pub(super) state: AtomicU64,
    pub(super) pid: AtomicU64,
    pub(super) start_time: AtomicU64,
    /// This process's threads counted in `WaitWords::waiters`: a survivor that reclaims
    /// a dead entry takes them off the shared count, so a waiter killed in its sleep
    /// does not make every later release pay for a wake syscall.
    pub(super) waiting: AtomicU64,
}

/// The hand-over ring's positions (`ring.rs`): tokens are taken at `head` and put at
/// `tail`, each a count of cells ever used (the cell is `position % cells`).
#[repr(C)]
pub(super) struct RingWords {
    pub(super) head: AtomicU64,
    pub(super) tail: AtomicU64,
}

/// The receivers' futex, as `WaitWords` is the allocators': `delivered` counts tokens
/// put in the ring, `receivers` the threads inside a receive wait.
#[repr(C)]
pub(super) struct RingWaitWords {
    pub(super) delivered: AtomicU32,
    pub(super) receivers: AtomicU32,
}

/// The fixed part at offset 0.
#[repr(C)]
pub(super) struct Control {
    pub(super) header: HeaderWords,
    pub(super) free: Line<FreeWords>,
    pub(super) wait: Line<WaitWords>,
    pub(super) counters: Line<Counters>,
    pub(super) processes: [ProcessEntry; MAX_PROCESSES],
    pub(super) ring: Line<RingWords>,
    pub(super) ring_wait: Line<RingWaitWords>,
}

/// One frame's shared state: `owner` is its [`OwnerWord`] (`frame_table.rs`); `next`
/// holds a hand-over's length while the frame is in transit.
#[repr(C)]
pub(super) struct FrameEntry {
    pub(super) next: AtomicU64,
    pub(super) owner: AtomicU64,
}

impl FrameEntry {
    /// The entry of a free frame, in ordinary memory (models and unit tests; a new
    /// memfd's zeros are the same).
    #[cfg_attr(not(any(test, loom)), allow(dead_code))]
    pub(super) fn free() -> FrameEntry {
        FrameEntry {
            next: AtomicU64::new(0),
            owner: AtomicU64::new(FREE),
        }
    }
}

/// Where a process table entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum ProcessState {
    /// Nobody uses the entry.
    Free = 0,
    /// A process is writing its pid and start time into it.
    Claiming = 1,
    /// A process is attached; frames may name it as their owner.
    Live = 2,
    /// Its process died; a survivor is returning its frames.
    Reclaiming = 3,
}

impl ProcessState {
    pub(super) fn word(self, generation: u64) -> u64 {
        (generation << 8) | self as u64
    }

    /// The state and generation of a state word; `None` for a value no process writes.
    pub(super) fn parse(word: u64) -> Option<(ProcessState, u64)> {
        let state = match word & 0xff {
            0 => ProcessState::Free,
            1 => ProcessState::Claiming,
            2 => ProcessState::Live,
            3 => ProcessState::Reclaiming,
            _ => return None,
        };
        Some((state, word >> 8))
    }
}

/// The owner word of a frame held by process table entry `slot` in its `generation`:
/// the generation keeps a survivor that reclaims a dead entry from taking frames of the
/// next process to use the same entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) slot: usize,
    pub(super) generation: u64,
}

impl Owner {
    pub(super) fn word(self) -> u64 {
        (self.generation << 8) | (self.slot as u64 + 1)
    }
}

/// The owner word of a free frame.
pub(super) const FREE: u64 = 0;

/// What a frame's owner word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnerWord {
    Free,
    Held(Owner),
    /// Handed over with the token at this ring position, not yet received.
    InTransit(u64),
}

impl OwnerWord {
    /// `None` for a value no process writes.
    pub(super) fn parse(word: u64) -> Option<OwnerWord> {
        match word {
            FREE => Some(OwnerWord::Free),
            _ if word & 0xff == TRANSIT => Some(OwnerWord::InTransit(word >> 8)),
            _ => match (word & 0xff) as usize {
                slot @ 1..=MAX_PROCESSES => Some(OwnerWord::Held(Owner {
                    slot: slot - 1,
                    generation: word >> 8,
                })),
                _ => None,
            },
        }
    }
}

/// The low byte of the owner word of a frame handed over and not yet received.
const TRANSIT: u64 = 0xff;

/// The owner word of a frame handed over with the token at ring `position`, not yet
/// received: no process owns it, its token is in the ring, and its `next` word holds
/// its length. Naming the position ties the word to that one token: a stale or
/// replayed token names another.
pub(super) fn in_transit(position: u64) -> u64 {
    (position << 8) | TRANSIT
}

/// A validated geometry: where everything is, in bytes from the start of the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) frame_size: usize,
    pub(super) frames: usize,
    pub(super) alignment: usize,
    pub(super) headroom: usize,
    pub(super) stride: usize,
    pub(super) table_offset: usize,
    /// Derived (not stored): the ring's cells follow the frame table.
    pub(super) ring_offset: usize,
    pub(super) ring_cells: usize,
    pub(super) frames_offset: usize,
    pub(super) total_len: usize,
    pub(super) flags: u64,
}

impl Geometry {
    /// The geometry of a new pool for `framing`, its frames starting on a page boundary
    /// and its size whole pages: huge pages (`huge`), or the normal page size.
    pub(super) fn for_framing(framing: &Framing, huge: bool) -> Result<Geometry> {
        let granule = if huge {
            huge_page_size().ok_or_else(|| {
                Error::Unsupported(
                    "this kernel reports no huge page size (no Hugepagesize in \
                     /proc/meminfo)"
                        .into(),
                )
            })?
        } else {
            page_size()
        };
        let layout = framing.layout()?;
        if layout.alignment > max_alignment() {
            return Err(Error::InvalidArgument(format!(
                "alignment {} is more than a SharedPool can promise: each process maps the \
                 pool at its own address, aligned to the page size ({}); use an alignment \
                 of at most {}",
                layout.alignment,
                max_alignment(),
                max_alignment()
            )));
        }
        if framing.frames() >= FRAME_LIMIT as usize {
            return Err(Error::InvalidArgument(format!(
                "frames {} is over a SharedPool's limit of {}",
                framing.frames(),
                FRAME_LIMIT - 1
            )));
        }
        let too_big = || {
            Error::InvalidArgument(format!(
                "{} frames of {} bytes do not fit one shared mapping; use fewer or smaller \
                 frames",
                framing.frames(),
                framing.frame_size()
            ))
        };
        let table_offset = round_up(size_of::<Control>(), 64).ok_or_else(too_big)?;
        let table_end = framing
            .frames()
            .checked_mul(size_of::<FrameEntry>())
            .and_then(|t| t.checked_add(table_offset))
            .ok_or_else(too_big)?;
        let ring_cells = framing
            .frames()
            .checked_next_power_of_two()
            .ok_or_else(too_big)?;
        let ring_end = ring_cells
            .checked_mul(size_of::<u64>())
            .and_then(|r| r.checked_add(table_end))
            .ok_or_else(too_big)?;
        let frames_offset = round_up(ring_end, granule).ok_or_else(too_big)?;
        let total_len = frames_offset
            .checked_add(layout.total)
            .and_then(|t| round_up(t, granule))
            .ok_or_else(too_big)?;
        Ok(Geometry {
            frame_size: framing.frame_size(),
            frames: framing.frames(),
            alignment: layout.alignment,
            headroom: layout.headroom,
            stride: layout.stride,
            table_offset,
            ring_offset: table_end,
            ring_cells,
            frames_offset,
            total_len,
            flags: if framing.is_zero_on_reuse() {
                FLAG_ZERO_ON_REUSE
            } else {
                0
            } | if huge { FLAG_HUGE_PAGES } else { 0 },
        })
    }

    /// Writes the header of a new pool (before any other process can see it).
    pub(super) fn write(&self, header: &HeaderWords) {
        use crate::sync::Ordering::Relaxed;
        header.magic.store(MAGIC, Relaxed);
        header.version.store(VERSION, Relaxed);
        header.frame_size.store(self.frame_size as u64, Relaxed);
        header.frames.store(self.frames as u64, Relaxed);
        header.alignment.store(self.alignment as u64, Relaxed);
        header.headroom.store(self.headroom as u64, Relaxed);
        header.stride.store(self.stride as u64, Relaxed);
        header.table_offset.store(self.table_offset as u64, Relaxed);
        header
            .frames_offset
            .store(self.frames_offset as u64, Relaxed);
        header.total_len.store(self.total_len as u64, Relaxed);
        header.flags.store(self.flags, Relaxed);
        header.checksum.store(checksum(&words(header)), Relaxed);
    }

    /// Reads and checks the header of a pool someone else made, whose memfd is
    /// `file_len` bytes long. Every refusal names what is wrong.
    pub(super) fn read(header: &HeaderWords, file_len: u64) -> Result<Geometry> {
        use crate::sync::Ordering::Relaxed;
        let corrupt = |offset: u64, detail: String| Error::Corrupt { offset, detail };
        let words = words(header);
        if words[0] != MAGIC {
            return Err(Error::InvalidArgument(format!(
                "the fd is not a pagebuf shared pool (its first 8 bytes are {:#018x}, not \
                 the pool magic \"PGBFSHRD\"); pass the fd of SharedPool::as_fd",
                words[0]
            )));
        }
        if words[1] != VERSION {
            return Err(Error::InvalidArgument(format!(
                "the shared pool has layout version {}, this pagebuf reads version \
                 {VERSION}; attach with the same pagebuf version as the process that \
                 created it",
                words[1]
            )));
        }
        let stored = header.checksum.load(Relaxed);
        let computed = checksum(&words);
        if stored != computed {
            return Err(corrupt(
                88,
                format!(
                    "shared pool header checksum is {stored:#x}, its words sum to \
                     {computed:#x}: the header was overwritten"
                ),
            ));
        }
        let field = |i: usize, name: &str| -> Result<usize> {
            usize::try_from(words[i]).map_err(|_| {
                corrupt(
                    i as u64 * 8,
                    format!("shared pool {name} {} does not fit this machine", words[i]),
                )
            })
        };
        let flags = words[10];
        if flags & !(FLAG_ZERO_ON_REUSE | FLAG_HUGE_PAGES) != 0 {
            return Err(corrupt(
                80,
                format!("shared pool header has unknown flags {flags:#x}"),
            ));
        }
        let framing = Framing::new(field(2, "frame size")?, field(3, "frame count")?)
            .alignment(field(4, "alignment")?)
            .prefix(field(5, "headroom")?)
            .zero_on_reuse(flags & FLAG_ZERO_ON_REUSE != 0);
        let expected =
            Geometry::for_framing(&framing, flags & FLAG_HUGE_PAGES != 0).map_err(|e| {
                corrupt(
                    16,
                    format!("shared pool header describes an impossible geometry: {e}"),
                )
            })?;
        let stated = Geometry {
            frame_size: framing.frame_size(),
            frames: framing.frames(),
            alignment: field(4, "alignment")?,
            headroom: field(5, "headroom")?,
            stride: field(6, "stride")?,
            table_offset: field(7, "table offset")?,
            ring_offset: expected.ring_offset,
            ring_cells: expected.ring_cells,
            frames_offset: field(8, "frames offset")?,
            total_len: field(9, "total length")?,
            flags,
        };
        if stated != expected {
            return Err(corrupt(
                16,
                format!(
                    "shared pool header is inconsistent: it states {stated:?}, its frame \
                     size, count and alignment give {expected:?}"
                ),
            ));
        }
        if file_len != stated.total_len as u64 {
            return Err(Error::InvalidArgument(format!(
                "the shared pool's memfd is {file_len} bytes, its header says {}: it was \
                 resized, or is not the pool it claims to be",
                stated.total_len
            )));
        }
        Ok(stated)
    }
}

/// The header words the checksum covers (all but the checksum).
fn words(header: &HeaderWords) -> [u64; 11] {
    use crate::sync::Ordering::Relaxed;
    [
        header.magic.load(Relaxed),
        header.version.load(Relaxed),
        header.frame_size.load(Relaxed),
        header.frames.load(Relaxed),
        header.alignment.load(Relaxed),
        header.headroom.load(Relaxed),
        header.stride.load(Relaxed),
        header.table_offset.load(Relaxed),
        header.frames_offset.load(Relaxed),
        header.total_len.load(Relaxed),
        header.flags.load(Relaxed),
    ]
}

fn checksum(words: &[u64; 11]) -> u64 {
    let mut bytes = [0u8; 88];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    u64::from(crc32c::crc32c(&bytes))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn geometry_puts_frames_on_pages_after_the_table() {
        let g = Geometry::for_framing(&Framing::new(1000, 3).alignment(64), false).unwrap();
        assert_eq!(g.table_offset % 64, 0);
        assert!(g.table_offset >= size_of::<Control>());
        assert!(g.frames_offset >= g.table_offset + 3 * size_of::<FrameEntry>());
        assert_eq!(g.frames_offset % page_size(), 0);
        assert_eq!(g.total_len % page_size(), 0);
        assert!(g.total_len >= g.frames_offset + 3 * g.stride);
    }

    #[test]
    fn layout_version_2_is_frozen() {
        // Changing any of these changes the bytes another build reads: bump VERSION.
        assert_eq!(VERSION, 2);
        assert_eq!(size_of::<HeaderWords>(), 96);
        assert_eq!(std::mem::offset_of!(Control, free), 128);
        assert_eq!(std::mem::offset_of!(Control, processes), 320);
        assert_eq!(size_of::<Control>(), 2496);
        let g = Geometry::for_framing(&Framing::new(4096, 3), false).unwrap();
        assert_eq!(
            (g.table_offset, g.ring_offset, g.ring_cells),
            (2496, 2544, 4)
        );
    }

    #[test]
    fn alignment_above_a_page_is_refused() {
        let err = Geometry::for_framing(&Framing::new(4096, 2).alignment(page_size() * 2), false)
            .unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn process_state_words_round_trip() {
        for state in [
            ProcessState::Free,
            ProcessState::Claiming,
            ProcessState::Live,
            ProcessState::Reclaiming,
        ] {
            assert_eq!(ProcessState::parse(state.word(7)), Some((state, 7)));
        }
        assert_eq!(ProcessState::parse(9), None);
    }

    #[test]
    fn owner_words_round_trip_and_garbage_is_none() {
        let held = Owner {
            slot: 63,
            generation: 9,
        };
        assert_eq!(OwnerWord::parse(held.word()), Some(OwnerWord::Held(held)));
        assert_eq!(OwnerWord::parse(FREE), Some(OwnerWord::Free));
        assert_eq!(
            OwnerWord::parse(in_transit(77)),
            Some(OwnerWord::InTransit(77))
        );
        for garbage in [65, 0x1fe, 0x100, 0xff00] {
            assert_eq!(OwnerWord::parse(garbage), None, "{garbage:#x}");
        }
    }
}
