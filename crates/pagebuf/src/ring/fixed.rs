//! The ring's table of registered pool memory: which fixed-buffer index covers which
//! addresses, and which pool keeps those addresses alive.
//!
//! The kernel's table is made sparse at start (`IORING_RSRC_REGISTER_SPARSE`, Linux
//! 5.19), so pools can come and go while the ring runs: the pools of
//! [`RingOptions::register`](super::RingOptions::register) for the ring's life, others
//! for the life of a [`PoolRegistration`](super::PoolRegistration). Each slot is in one
//! state:
//!
//! ```text
//!            register                 registration dropped
//!   Free ─────────────────▶ Lent ─────────────────────────▶ Retiring
//!    ▲                                                          │
//!    └──────────────── the pool has no buffer out ◀─────────────┘
//!                      (the kernel slot is cleared then)
//!   Kept: registered with the ring, for its life
//! ```
//!
//! Why `Retiring`: a buffer of the pool may still be in a transfer that was issued as
//! `READ_FIXED`/`WRITE_FIXED` on this index (its `Pending` owns the buffer, so the pool
//! counts it out). Clearing the slot under it would make the kernel refuse the transfer
//! if it had not started yet, and a slot reused for another pool would too. Once no
//! buffer of the pool is out, no transfer can name the index (a lookup happens while
//! the transfer's buffer is held), and the slot is cleared on the next sweep.
//!
//! Old kernels without sparse tables register the ring's pools once, as before, and
//! refuse registration afterwards with the reason.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use io_uring::IoUring;

use crate::error::{Error, Result};
use crate::pool::FramePool;
#[cfg(not(loom))]
use crate::shared::SharedPool;

/// The kernel's limit on one fixed buffer.
const MAX_FIXED: usize = 1 << 30;
/// Slots of the sparse table beyond those of the ring's own pools.
const SPARE_SLOTS: usize = 256;

/// A pool whose memory a slot registers; the slot's handle keeps that memory mapped.
#[derive(Clone)]
pub(crate) enum Registered {
    Frames(FramePool),
    /// The whole mapping of a shared pool in this process (its frames and bookkeeping).
    #[cfg(not(loom))]
    Shared(SharedPool),
}

impl Registered {
    /// `(start address, length)` of the memory to register.
    fn extent(&self) -> (usize, usize) {
        match self {
            Registered::Frames(pool) => pool.memory_extent(),
            #[cfg(not(loom))]
            Registered::Shared(pool) => pool.memory_extent(),
        }
    }

    fn same(&self, other: &Registered) -> bool {
        match (self, other) {
            (Registered::Frames(a), Registered::Frames(b)) => a.same_pool(b),
            #[cfg(not(loom))]
            (Registered::Shared(a), Registered::Shared(b)) => a.same_pool(b),
            #[cfg(not(loom))]
            _ => false,
        }
    }

    /// Frames out now: while any is, a transfer issued on the slot may be in flight.
    /// For a shared pool, frames out in any process (other processes cannot use this
    /// ring's slots, so this is more than needed, never less).
    fn frames_out(&self) -> usize {
        match self {
            Registered::Frames(pool) => pool.stats().in_use,
            #[cfg(not(loom))]
            Registered::Shared(pool) => pool.stats().in_use,
        }
    }
}

/// Registered memory `[start, end)`, and the pool it lies in.
struct Region {
    start: usize,
    end: usize,
    pool: Registered,
}

enum Slot {
    Free,
    /// One of the ring's own pools: registered until the ring closes.
    Kept(Region),
    /// Registered for a [`PoolRegistration`](super::PoolRegistration) still held.
    Lent(Region),
    /// Its registration was dropped; cleared once the pool has no buffer out.
    Retiring(Region),
}

impl Slot {
    fn region(&self) -> Option<&Region> {
        match self {
            Slot::Free => None,
            Slot::Kept(region) | Slot::Lent(region) | Slot::Retiring(region) => Some(region),
        }
    }
}

/// Whether pools can be registered after the ring was built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Growth {
    /// The kernel table is sparse: slots are filled and cleared one at a time.
    Sparse,
    /// The kernel has no sparse tables (before Linux 5.19): the ring's pools only.
    Fixed,
}

pub(crate) struct FixedTable {
    slots: RwLock<Vec<Slot>>,
    /// The registered slots alone, `(start, end, index)`: what a submission looks up,
    /// without walking the free slots of the table. Rebuilt (under the `slots` write
    /// lock) whenever a slot is filled or cleared.
    live: RwLock<Vec<(usize, usize, u16)>>,
    growth: Growth,
    bytes: AtomicUsize,
    retiring: AtomicUsize,
}

impl FixedTable {
    /// The table of a new ring, with `pools` registered for its life; the note says why
    /// they could not be (they then go plain).
    pub(crate) fn new(ring: &IoUring, pools: &[FramePool]) -> (FixedTable, Option<String>) {
        let pieces: Vec<Region> = pools
            .iter()
            .flat_map(|pool| pieces_of(Registered::Frames(pool.clone())))
            .collect();
        let capacity = pieces.len() + SPARE_SLOTS;
        let Ok(capacity_u32) = u32::try_from(capacity) else {
            return (FixedTable::empty(Growth::Fixed), Some(too_many()));
        };
        if capacity > usize::from(u16::MAX) + 1 {
            return (FixedTable::empty(Growth::Fixed), Some(too_many()));
        }
        let mut table = match ring.submitter().register_buffers_sparse(capacity_u32) {
            Ok(()) => FixedTable {
                slots: RwLock::new((0..capacity).map(|_| Slot::Free).collect()),
                ..FixedTable::empty(Growth::Sparse)
            },
            Err(_) => FixedTable::empty(Growth::Fixed),
        };
        if pieces.is_empty() {
            return (table, None);
        }
        let result = match table.growth {
            Growth::Sparse => table.fill(ring, pieces, Slot::Kept).map(drop),
            Growth::Fixed => table.register_at_once(ring, pieces),
        };
        (table, result.err())
    }

    fn empty(growth: Growth) -> FixedTable {
        FixedTable {
            slots: RwLock::new(Vec::new()),
            live: RwLock::new(Vec::new()),
            growth,
            bytes: AtomicUsize::new(0),
            retiring: AtomicUsize::new(0),
        }
    }

    /// The fixed-buffer index whose memory holds all of `[base, base + len)`.
    pub(crate) fn index_of(&self, base: usize, len: usize) -> Option<u16> {
        if len == 0 || self.bytes.load(Ordering::Acquire) == 0 {
            return None;
        }
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.iter()
            .find(|&&(start, end, _)| start <= base && base.saturating_add(len) <= end)
            .map(|&(_, _, index)| index)
    }

    /// Rebuilds `live` from `slots` (the caller holds the `slots` write lock).
    fn publish(&self, slots: &[Slot]) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live_of(slots);
    }

    /// Bytes of pool memory registered now.
    pub(crate) fn registered_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Registers `pool` for the life of a registration: the slots it took.
    pub(crate) fn lend(&self, ring: &IoUring, pool: Registered) -> Result<Vec<u16>> {
        if self.growth == Growth::Fixed {
            return Err(Error::Unsupported(format!(
                "registering a pool on a ring already built needs sparse fixed-buffer \
                 tables (Linux 5.19; this is {}); register it through \
                 RingOptions::register instead",
                super::uring::kernel_release()
            )));
        }
        let held = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            slots.iter().any(|slot| match slot {
                Slot::Kept(region) | Slot::Lent(region) => region.pool.same(&pool),
                Slot::Free | Slot::Retiring(_) => false,
            })
        };
        if held {
            return Err(Error::InvalidArgument(
                "IoRing::register_pool: this pool is already registered with this ring; \
                 keep the first registration"
                    .into(),
            ));
        }
        self.sweep(ring);
        self.fill(ring, pieces_of(pool).collect(), Slot::Lent)
            .map_err(Error::OutOfMemory)
    }

    /// Marks the slots of a dropped registration `Retiring`, then clears what it can.
    pub(crate) fn retire(&self, ring: &IoUring, indices: &[u16]) {
        {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            for &index in indices {
                let slot = &mut slots[usize::from(index)];
                if let Slot::Lent(_) = slot {
                    let Slot::Lent(region) = std::mem::replace(slot, Slot::Free) else {
                        unreachable!("matched just above")
                    };
                    *slot = Slot::Retiring(region);
                    self.retiring.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        self.sweep(ring);
    }

    /// Clears every retiring slot whose pool has no buffer out.
    pub(crate) fn sweep(&self, ring: &IoUring) {
        if self.retiring.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        // Held across the clearing: no submission may look up a slot that is being
        // cleared (it would reach the kernel naming an empty one).
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        for (index, slot) in slots.iter_mut().enumerate() {
            let Slot::Retiring(region) = slot else {
                continue;
            };
            // A buffer out may be in a transfer issued on this index (see the module).
            if region.pool.frames_out() > 0 {
                continue;
            }
            if clear(ring, index).is_ok() {
                self.bytes
                    .fetch_sub(region.end - region.start, Ordering::AcqRel);
                self.retiring.fetch_sub(1, Ordering::AcqRel);
                *slot = Slot::Free;
            }
        }
        *live = live_of(&slots);
    }

    /// Puts `pieces` into free slots of the sparse table, each made `state`; all or
    /// none (a refusal clears the ones already filled).
    fn fill(
        &self,
        ring: &IoUring,
        pieces: Vec<Region>,
        state: fn(Region) -> Slot,
    ) -> std::result::Result<Vec<u16>, String> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let free: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, Slot::Free))
            .map(|(index, _)| index)
            .take(pieces.len())
            .collect();
        if free.len() < pieces.len() {
            return Err(format!(
                "the ring's fixed-buffer table is full ({} slots); drop registrations no \
                 longer needed",
                slots.len()
            ));
        }
        let bytes: usize = pieces.iter().map(|r| r.end - r.start).sum();
        for (done, (&index, region)) in free.iter().zip(&pieces).enumerate() {
            let iovec = libc::iovec {
                iov_base: region.start as *mut libc::c_void,
                iov_len: region.end - region.start,
            };
            // SAFETY: the iovec is a piece of a pool's one block of memory; the table
            // holds the pool (and so the memory) until the slot is cleared again.
            // One slot per call: the crate's update hides how many of several took.
            let filled = unsafe {
                ring.submitter()
                    .register_buffers_update(index as u32, &[iovec], None)
            };
            if let Err(e) = filled {
                for &index in &free[..done] {
                    let _ = clear(ring, index);
                }
                return Err(refused(bytes, &e));
            }
        }
        for (&index, region) in free.iter().zip(pieces) {
            slots[index] = state(region);
        }
        self.publish(&slots);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(free.into_iter().map(|index| index as u16).collect())
    }

    /// Before sparse tables: the ring's pools in one `IORING_REGISTER_BUFFERS`.
    fn register_at_once(
        &mut self,
        ring: &IoUring,
        pieces: Vec<Region>,
    ) -> std::result::Result<(), String> {
        let iovecs: Vec<libc::iovec> = pieces
            .iter()
            .map(|region| libc::iovec {
                iov_base: region.start as *mut libc::c_void,
                iov_len: region.end - region.start,
            })
            .collect();
        let bytes = pieces.iter().map(|r| r.end - r.start).sum();
        // SAFETY: each iovec is a piece of a pool's one block of memory, which the table
        // keeps alive (it holds the pools) until the ring, and so the registration, is
        // gone.
        unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| refused(bytes, &e))?;
        let slots: Vec<Slot> = pieces.into_iter().map(Slot::Kept).collect();
        *self.live.get_mut().unwrap_or_else(|p| p.into_inner()) = live_of(&slots);
        *self.slots.get_mut().unwrap_or_else(|p| p.into_inner()) = slots;
        self.bytes.store(bytes, Ordering::Release);
        Ok(())
    }
}

/// The registered slots of `slots`, as `(start, end, index)`.
fn live_of(slots: &[Slot]) -> Vec<(usize, usize, u16)> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| {
            let region = slot.region()?;
            // Below 65,536: the table is never made larger.
            Some((region.start, region.end, index as u16))
        })
        .collect()
}

/// A pool's memory in pieces of at most 1 GiB (the kernel's limit per fixed buffer).
fn pieces_of(pool: Registered) -> impl Iterator<Item = Region> {
    let (start, len) = pool.extent();
    (0..len.div_ceil(MAX_FIXED)).map(move |i| {
        let at = i * MAX_FIXED;
        Region {
            start: start + at,
            end: start + at + (len - at).min(MAX_FIXED),
            pool: pool.clone(),
        }
    })
}

/// Empties kernel slot `index` (an iovec of nothing).
fn clear(ring: &IoUring, index: usize) -> std::io::Result<()> {
    let nothing = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    // SAFETY: an empty iovec registers no memory.
    unsafe {
        ring.submitter()
            .register_buffers_update(index as u32, &[nothing], None)
    }
}

fn too_many() -> String {
    "more than 65,536 fixed buffers asked for; register fewer pools".into()
}

/// Why registering `bytes` of pool memory was refused, naming the limit.
fn refused(bytes: usize, e: &std::io::Error) -> String {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock)
        .current
        .map_or_else(|| "unlimited".to_string(), |l| format!("{l} bytes"));
    format!(
        "registering {bytes} bytes of pool memory as fixed buffers was refused ({e}); \
         RLIMIT_MEMLOCK is {limit}: raise it (`ulimit -l`, LimitMEMLOCK= for a systemd \
         service) or grant CAP_IPC_LOCK; using plain reads and writes"
    )
}
