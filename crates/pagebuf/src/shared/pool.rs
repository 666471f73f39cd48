//! `SharedPool`: the public handle of a pool whose frames and bookkeeping live in one
//! sealed memfd that several processes map.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frames::{self, Fresh};
use super::process::Attached;
use crate::buffer::{Buffer, BufferMut};
use crate::error::{Error, Result};
use crate::pool::{Framing, PoolStats};

/// How long a waiter sleeps before it looks for dead processes' frames again: frames
/// of a process that died come back without anyone releasing them, so nobody wakes
/// the waiter for them.
const RESCAN: Duration = Duration::from_millis(50);

/// How many times `receive` looks for a frame before it sleeps: a few microseconds of
/// looking (each look is a few loads of the ring's words), less than one sleep and wake.
const RECEIVE_SPINS: u32 = 256;

/// A pool of equal frames shared between processes: the frames *and* their
/// bookkeeping (free list, waiter count, which process holds which frame) live in one
/// sealed memfd, so every process that attaches allocates from, and returns to, the
/// same frames, without a copy.
///
/// * [`SharedPool::create`] makes the memfd (sealed against resizing, so a peer's
///   `ftruncate` can never turn our access into `SIGBUS`); [`SharedPool::as_fd`] is what
///   another process needs (inherit it, or pass it over a Unix socket with
///   [`SharedPool::send_to`] / [`SharedPool::receive_from`]); [`SharedPool::attach`]
///   joins it after checking the seals, the size
///   and the layout version.
/// * A frame filled in one process reaches another without a copy:
///   [`hand_over`](SharedPool::hand_over) puts its token in a ring in the shared
///   memory, [`receive`](SharedPool::receive) there gives a [`Buffer`] over the same
///   pages (a futex wake only when a receiver sleeps; every token checked).
/// * The last drop of a buffer, in whichever process, returns its frame; `allocate`
///   waits (a futex on the shared memory, so any process's release wakes it) while
///   every frame is out, in whichever process holds them.
/// * A process that dies holding frames (even by `SIGKILL`) does not lose them: a
///   waiting `allocate` (and every `attach`) finds processes that are gone (a pidfd
///   and the start time in `/proc`, so a reused pid is not mistaken for the dead one)
///   and returns their frames. Processes must share a pid namespace.
/// * Not before the kernel is done with them: io_uring lets a process exit while its
///   direct-I/O reads are in flight, and the kernel then writes the frames seconds
///   later. Each attachment holds a lease (an open file description of the memfd with
///   a lock on a byte naming it) that every [`IoRing`](crate::IoRing) transferring on
///   its frames holds too, and a dead process's frames come back only once its lease
///   is let go, which for a ring is after its last transfer. Rings of your own: see
///   [`lease`](SharedPool::lease).
/// * The shared memory is untrusted: a peer that writes garbage into the bookkeeping
///   gets this process [`Error::Corrupt`] from `allocate*` (and `None` from
///   `try_allocate`) for good, never an access out of bounds or a frame handed out
///   twice in this process. A peer *can* still write into the bytes of a frame this
///   process holds (the pages are shared); what it cannot do is make us read or write
///   outside the pool's memory.
///
/// A handle copied into a forked child is refused there ([`Error::InvalidRequest`]);
/// the child attaches on its own. A process killed at any instruction loses no frame:
/// each frame's owner word is the only record of who holds it, and every change of
/// hands (a take, a return, each step of a hand-over) is one compare-and-swap of it, so
/// what a death leaves is found and finished (or freed) by the next process that looks.
///
/// The frames are always the memfd's pages: of `Framing`'s memory source only the
/// choice of huge pages counts (see [`create`](SharedPool::create)). Alignment may be at
/// most the page size (each process maps the memfd at its own page-aligned address). A
/// [`IoRing`](crate::IoRing) can register the pool's mapping
/// ([`IoRing::register_shared_pool`](crate::IoRing::register_shared_pool)): frames
/// received from another process then go to a file as fixed-buffer writes.
///
/// ```
/// use pagebuf::{Framing, SharedPool};
/// use std::os::fd::AsFd;
///
/// let pool = SharedPool::create(Framing::new(4096, 2))?;
/// // Another process would receive this fd; a second attachment here shows the same.
/// let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned()?)?;
///
/// let mut frame = pool.allocate()?;
/// frame.extend_from_slice(b"hello")?;
/// let _second = peer.try_allocate().expect("one frame is still free");
/// assert!(peer.try_allocate().is_none()); // both frames are out, across attachments
/// drop(frame);
/// assert_eq!(peer.stats().free, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedPool {
    attached: Arc<Attached>,
    /// Why a pool that preferred huge pages is on normal ones.
    note: Option<Arc<str>>,
}

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SharedPool {
    /// Makes a pool of `framing`'s frames in a new sealed memfd and attaches this
    /// process to it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a framing that cannot work (as for
    /// [`FramePool::new`](crate::FramePool::new), and an alignment above the page
    /// size); [`Error::OutOfMemory`] or [`Error::Io`] when the memfd cannot be made,
    /// sized, sealed or mapped.
    ///
    /// `Framing`'s memory source chooses huge pages: with
    /// [`HugePages::Prefer`](crate::memory::HugePages::Prefer) or `Require` in its
    /// [`RegionOptions`](crate::memory::RegionOptions), the memfd is made on reserved
    /// huge pages (`MFD_HUGETLB`), whose physically contiguous 2 MiB runs a direct write
    /// from a frame takes in few pieces; `Require` fails with
    /// [`Error::Unsupported`] naming `vm.nr_hugepages` when not enough are reserved,
    /// `Prefer` falls back to normal pages ([`fallback_note`](Self::fallback_note)
    /// says why). Every other source gives normal shared pages.
    pub fn create(framing: Framing) -> Result<SharedPool> {
        let (attached, note) = Attached::create(&framing)?;
        Ok(SharedPool {
            attached,
            note: note.map(Arc::from),
        })
    }

    /// `(start address, length)` of the pool's mapping in this process: what a ring
    /// registers as fixed buffers.
    pub(crate) fn memory_extent(&self) -> (usize, usize) {
        self.attached.memory_extent()
    }

    /// Whether `other` is a handle of the same attachment.
    pub(crate) fn same_pool(&self, other: &SharedPool) -> bool {
        Arc::ptr_eq(&self.attached, &other.attached)
    }

    /// Whether the pool's memory is reserved huge pages (in any attached process).
    pub fn is_huge(&self) -> bool {
        self.attached.is_huge()
    }

    /// Why a pool made with [`HugePages::Prefer`](crate::memory::HugePages::Prefer) is
    /// on normal pages (`None` otherwise, and in an attached process).
    pub fn fallback_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Attaches this process to the pool behind `fd` (another process's
    /// [`SharedPool::as_fd`]). Nothing is mapped before the fd is known to be a memfd
    /// sealed against resizing; then the header (magic, layout version, geometry,
    /// checksum) is checked against the memfd's size. Frames of processes found dead
    /// are returned to the pool.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an fd that is not a pagebuf shared pool (not a
    /// memfd, unsealed, resized, another magic or another layout version);
    /// [`Error::Corrupt`] for a header that does not add up, or a pool a process
    /// already found corrupt; [`Error::InvalidRequest`] when every process slot (64)
    /// is held by a live process.
    pub fn attach(fd: OwnedFd) -> Result<SharedPool> {
        Ok(SharedPool {
            attached: Attached::attach(fd)?,
            note: None,
        })
    }

    /// The memfd, for another process to [`attach`](SharedPool::attach) to.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.attached.fd()
    }

    /// This attachment's lease: while any reference to this file description exists, in
    /// any process or io_uring ring, no survivor takes back this process's frames, even
    /// after it died. An [`IoRing`](crate::IoRing) holds it by itself; a ring of your
    /// own (tokio-uring, glommio, liburing) that transfers on this pool's frames must
    /// register it in its file table (`IORING_REGISTER_FILES`) first, or a read still
    /// in flight when this process dies lands in a frame someone else took. A forked
    /// child that does not exec holds it too, so its parent's frames come back only
    /// once the child is gone.
    pub fn lease(&self) -> BorrowedFd<'_> {
        self.attached.lease().file()
    }

    /// A frame if one is free now, else `None` (also `None` once the pool is known
    /// corrupt; `allocate` then says why). Never blocks and never scans for dead
    /// processes.
    pub fn try_allocate(&self) -> Option<BufferMut> {
        match self.take() {
            Ok(Some(buffer)) => Some(buffer),
            Ok(None) => {
                self.attached.count_exhausted();
                None
            }
            Err(_) => None,
        }
    }

    /// A frame, waiting as long as it takes for one to come back, from this process
    /// or another (back-pressure).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the shared bookkeeping is (or was earlier) found
    /// corrupt.
    pub fn allocate(&self) -> Result<BufferMut> {
        self.allocate_until(None)
    }

    /// As [`allocate`](SharedPool::allocate), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no frame came back in time; [`Error::Corrupt`] as for
    /// `allocate`.
    pub fn allocate_timeout(&self, timeout: Duration) -> Result<BufferMut> {
        let deadline = Instant::now().checked_add(timeout);
        let buffer = self.allocate_until(Some(deadline.ok_or(timeout)));
        buffer.map_err(|e| match e {
            Error::Timeout { .. } => Error::Timeout {
                what: format!(
                    "a frame of a SharedPool (all {} frames are out, in this process or \
                     others)",
                    self.attached.frames()
                ),
                waited: timeout,
            },
            other => other,
        })
    }

    /// What the pool says about itself, across every process attached: the fields
    /// mean what they mean for a [`FramePool`](crate::FramePool); `closed` is true once
    /// the pool is poisoned (corrupt).
    pub fn stats(&self) -> PoolStats {
        self.attached.stats()
    }

    /// Hands `frame` (allocated from this pool, in this process) to whichever process
    /// receives next, without a copy and, unless a receiver sleeps, without a syscall:
    /// its token goes into a ring in the shared memory. The receiver gets a [`Buffer`]
    /// of the same pages and length; the frame returns to the pool when the last view
    /// of it drops, there. A frame handed over must not be written again by the
    /// sender (it no longer holds a view, so safe code cannot).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a buffer that is not a frame of this pool (it is
    /// dropped as usual); [`Error::Corrupt`] when the bookkeeping is found corrupt (the
    /// pool is then poisoned and the frame lost); [`Error::InvalidRequest`] in a forked
    /// child.
    pub fn hand_over(&self, frame: BufferMut) -> Result<()> {
        // Refusals that need no frame come first, so the frame is dropped (and goes
        // back to the pool) as usual instead of being given up for nothing.
        self.attached.ready_to_hand_over()?;
        let (index, len) = frames::take_back(&self.attached, frame)?;
        self.attached.hand_over(index, len)
    }

    /// The next frame handed over (by any attached process, this one included), if one
    /// is waiting. Every token is checked before it is used: a frame out of range, not
    /// handed over, or handed twice is [`Error::Corrupt`], never a second view. A token
    /// whose sender is alive and still holds the frame (it is between putting the token
    /// and committing the frame, or a peer forged it) is not ready yet: `Ok(None)`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] as said; [`Error::InvalidRequest`] in a forked child.
    pub fn try_receive(&self) -> Result<Option<Buffer>> {
        let Some((index, len)) = self.attached.receive()? else {
            return Ok(None);
        };
        let mut frame = frames::hand_out(&self.attached, index, Fresh::Received)
            .map_err(|e| self.attached.poison(e))?;
        // `receive` checked len <= the frame size, which is the buffer's max_len.
        frame.set_len(len)?;
        Ok(Some(frame.freeze()))
    }

    /// The next frame handed over, waiting as long as it takes (it looks for a few
    /// microseconds before it sleeps on the futex: a peer that answers at once is found
    /// without a wake-up).
    ///
    /// # Errors
    /// As [`try_receive`](SharedPool::try_receive).
    pub fn receive(&self) -> Result<Buffer> {
        self.receive_until(None)
    }

    /// The next frame handed over, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none arrived in time; else as
    /// [`try_receive`](SharedPool::try_receive).
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Buffer> {
        let deadline = Instant::now().checked_add(timeout);
        self.receive_until(deadline).map_err(|e| match e {
            Error::Timeout { .. } => Error::Timeout {
                what: "a frame handed over to this SharedPool (no process handed one over)".into(),
                waited: timeout,
            },
            other => other,
        })
    }

    fn receive_until(&self, deadline: Option<Instant>) -> Result<Buffer> {
        // A peer that answers at once answers within microseconds: look a few times
        // before sleeping, since a futex sleep and the wake that ends it cost a
        // cross-CPU wake-up each (several microseconds in a VM) on both sides.
        for _ in 0..RECEIVE_SPINS {
            if let Some(frame) = self.try_receive()? {
                return Ok(frame);
            }
            std::hint::spin_loop();
        }
        loop {
            if let Some(frame) = self.try_receive()? {
                return Ok(frame);
            }
            let seen = self.attached.begin_receive_wait();
            let received = self.try_receive();
            let slice = deadline.map_or(RESCAN, |deadline| {
                RESCAN.min(deadline.saturating_duration_since(Instant::now()))
            });
            let mut woken = true;
            if matches!(received, Ok(None)) && !slice.is_zero() {
                self.attached.sleep_receive(seen, slice);
                woken = self.attached.delivered_since(seen);
            }
            self.attached.end_receive_wait();
            match received {
                Ok(Some(frame)) => return Ok(frame),
                Err(e) => return Err(e),
                Ok(None) if slice.is_zero() => {
                    return Err(Error::Timeout {
                        what: "a frame handed over".into(),
                        waited: Duration::ZERO,
                    })
                }
                // A whole slice without a hand-over: a sender that died between putting
                // its token and committing its frame holds the ring up until its table
                // entry is reclaimed (a look at every process: not after each wake).
                Ok(None) if !woken => {
                    self.attached.reclaim_dead();
                }
                Ok(None) => {}
            }
        }
    }

    fn take(&self) -> Result<Option<BufferMut>> {
        self.attached.check()?;
        match self.attached.take()? {
            None => Ok(None),
            Some(index) => frames::hand_out(&self.attached, index, Fresh::Allocated)
                .map(Some)
                .map_err(|e| self.attached.poison(e)),
        }
    }

    /// Waits until `deadline`: `None` is forever, `Some(Err(d))` a deadline past what
    /// `Instant` can hold (also forever, in practice).
    fn allocate_until(
        &self,
        deadline: Option<std::result::Result<Instant, Duration>>,
    ) -> Result<BufferMut> {
        if let Some(buffer) = self.take()? {
            return Ok(buffer);
        }
        self.attached.count_exhausted();
        self.attached.count_wait();
        loop {
            // Frames of dead processes come back only if someone looks.
            if self.attached.reclaim_dead() > 0 {
                if let Some(buffer) = self.take()? {
                    return Ok(buffer);
                }
            }
            let seen = self.attached.begin_wait();
            let taken = self.take();
            let slice = match deadline {
                Some(Ok(deadline)) => {
                    RESCAN.min(deadline.saturating_duration_since(Instant::now()))
                }
                _ => RESCAN,
            };
            match taken {
                Ok(None) if !slice.is_zero() => self.attached.sleep(seen, slice),
                _ => {}
            }
            self.attached.end_wait();
            match taken {
                Ok(Some(buffer)) => return Ok(buffer),
                Err(e) => return Err(e),
                Ok(None) if slice.is_zero() => {
                    return Err(Error::Timeout {
                        what: "a frame".into(),
                        waited: Duration::ZERO,
                    })
                }
                Ok(None) => {}
            }
        }
    }
}
