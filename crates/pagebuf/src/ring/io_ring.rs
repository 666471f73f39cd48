//! [`IoRing`]: the public handle, and the choice of engine behind it.
//!
//! Who owns the memory of a read, form by form:
//!
//! * [`read_at`](IoRing::read_at), [`read_into_part`](IoRing::read_into_part): owned. The
//!   ring takes the `BufferMut` and gives it back through the `Pending`; dropping or
//!   forgetting the `Pending` leaves the buffer with the ring until the kernel is done
//!   (then it goes home), so nobody can touch memory the kernel still writes.
//! * [`read_into`](IoRing::read_into), [`read_many`](IoRing::read_many): borrowed and
//!   blocking. The caller's `&mut [u8]` is lent for the call, which returns only when
//!   every transfer into it has completed (on a panic too).
//! * [`read_into_raw`](IoRing::read_into_raw): `unsafe`. The caller keeps the memory
//!   valid and untouched until the ring is done with it, and its `# Safety` section says
//!   how the caller knows when that is.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives": `read_into_raw`

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::completion::{Completions, OnDone};
use super::fixed::Registered;
use super::op::{
    finish_read, finish_read_part, finish_read_raw, finish_sync, finish_write, Finish, Op, Tearing,
    MAX_PIECES,
};
use super::options::{Engine, Posting, RingOptions, MAX_ENTRIES};
use super::pending::{Drive, Pending};
use super::registration::PoolRegistration;
use super::threads::ThreadEngine;
use super::uring::{Entering, Road, UringEngine};
use crate::buffer::{Buffer, BufferMut};
use crate::caps;
use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::pool::FramePool;
#[cfg(not(loom))]
use crate::shared::SharedPool;

/// The one place transfers are issued: io_uring with registered pool memory where the
/// kernel allows it, worker threads where it does not (see [the module](super)).
///
/// `Clone + Send + Sync`: clones share the ring. Submission is eager: `read_at`,
/// `write_at` and `sync_data` hand the transfer to the engine before they return, so N
/// calls then N waits keep N transfers in flight. Dropping the last handle waits for
/// every transfer still in flight.
///
/// ```
/// use pagebuf::direct::DirectFile;
/// use pagebuf::{FramePool, Framing, IoRing};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-ring.bin");
/// std::fs::write(&path, vec![7u8; 64 * 1024])?;
/// let ring = IoRing::new()?;
/// let file = DirectFile::open(&path)?;
/// let pool = FramePool::new(Framing::new(4096, 16))?;
/// // Sixteen reads in flight from one thread, then their outcomes.
/// let reads: Vec<_> = (0..16u64)
///     .map(|i| ring.read_at(&file, pool.try_allocate().unwrap(), i * 4096))
///     .collect();
/// for read in reads {
///     let block = read.wait()?;
///     assert!(block.len() == 4096 && block.iter().all(|&b| b == 7));
/// }
/// println!("engine {:?}{}", ring.engine(), ring.note().map(|n| format!(": {n}")).unwrap_or_default());
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct IoRing {
    inner: Arc<Inner>,
}

struct Inner {
    // First: dropping it waits for every transfer in flight.
    engine: EngineImpl,
    completions: Arc<Completions>,
    note: Option<String>,
    fixed_ops: AtomicU64,
    plain_ops: AtomicU64,
}

enum EngineImpl {
    Uring(UringEngine),
    Threads(ThreadEngine),
}

/// What went how on a ring ([`IoRing::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// The engine in use.
    pub engine: Engine,
    /// Transfers issued on registered memory (`READ_FIXED`/`WRITE_FIXED`).
    pub fixed_ops: u64,
    /// Transfers issued as plain operations (syncs included).
    pub plain_ops: u64,
    /// Transfers submitted whose outcome has not been taken (or, for a dropped
    /// `Pending`, that have not completed). Read after a `Pending` was dropped, 0 means
    /// that transfer has completed and what it wrote is visible to the reader.
    pub in_flight: usize,
    /// Transfers submitted that the engine has not completed yet, whatever became of
    /// their `Pending` (a forgotten one's included, which `in_flight` counts for ever).
    /// 0 means every transfer submitted before the read has completed, with what it
    /// wrote visible: how a caller of [`IoRing::read_into_raw`] who let go of the
    /// `Pending` knows that its memory is its own again.
    pub running: usize,
    /// Bytes of pool memory registered as fixed buffers.
    pub registered_bytes: usize,
}

impl IoRing {
    /// A ring with the default [`RingOptions`].
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new() -> Result<IoRing> {
        IoRing::with_options(RingOptions::default())
    }

    /// A ring built as `options` say.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for entries or workers of 0 or past their caps, or a
    /// pool registered twice; [`Error::Unsupported`] for [`Engine::Uring`] where io_uring
    /// is refused, saying why.
    pub fn with_options(options: RingOptions) -> Result<IoRing> {
        caps::check(
            "RingOptions::entries",
            options.entries as usize,
            MAX_ENTRIES as usize,
        )?;
        let workers = caps::check("RingOptions::workers", options.workers, caps::MAX_DEPTH)?;
        for (i, pool) in options.pools.iter().enumerate() {
            if options.pools[..i].iter().any(|p| p.same_pool(pool)) {
                return Err(Error::InvalidArgument(
                    "RingOptions::register: the same pool is registered twice; register \
                     each pool once"
                        .into(),
                ));
            }
        }
        let completions = Arc::new(Completions::default());
        let uring = match options.engine {
            Engine::Threads => Err(None),
            Engine::Auto | Engine::Uring => {
                UringEngine::new(&options, completions.clone()).map_err(Some)
            }
        };
        let (engine, note) = match uring {
            Ok((engine, note)) => (EngineImpl::Uring(engine), note),
            Err(Some(why)) if options.engine == Engine::Uring => {
                return Err(Error::Unsupported(format!(
                    "{why}; or use Engine::Auto to fall back to worker threads"
                )))
            }
            Err(why) => {
                let mut note = why.map(|why| format!("{why}; using worker threads"));
                if !options.pools.is_empty() {
                    let plain = "registered pools are read and written plainly: fixed \
                                 buffers need io_uring";
                    note = Some(match note {
                        Some(note) => format!("{note}; {plain}"),
                        None => plain.to_string(),
                    });
                }
                let threads = ThreadEngine::new(workers, completions.clone());
                (EngineImpl::Threads(threads), note)
            }
        };
        Ok(IoRing {
            inner: Arc::new(Inner {
                engine,
                completions,
                note,
                fixed_ops: AtomicU64::new(0),
                plain_ops: AtomicU64::new(0),
            }),
        })
    }

    /// The ring the library's I/O types ([`DirectWriter`](crate::direct::DirectWriter),
    /// [`copy_file`](crate::copy::copy_file), the sample writer and reader) share unless
    /// their options give them one: made on first use with the default [`RingOptions`],
    /// and made anew in a forked child (a ring belongs to the process that made it).
    ///
    /// # Errors
    /// As [`new`](Self::new) (the default engine falls back to threads where io_uring
    /// is refused, so this fails only where threads cannot start).
    pub fn process_default() -> Result<IoRing> {
        static DEFAULT: Mutex<Option<(u64, IoRing)>> = Mutex::new(None);
        let generation = super::fork::generation();
        let mut slot = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((born, ring)) = &*slot {
            if *born == generation {
                return Ok(ring.clone());
            }
        }
        let ring = IoRing::new()?;
        // A parent's ring replaced in its child is dropped here, which is safe: a ring
        // knows it was forked and touches neither the parent's queue nor its threads.
        *slot = Some((generation, ring.clone()));
        Ok(ring)
    }

    /// `given`, or else the [`process_default`](Self::process_default): how every I/O
    /// type resolves its options' `ring`.
    pub(crate) fn given_or_default(given: Option<&IoRing>) -> Result<IoRing> {
        match given {
            Some(ring) => Ok(ring.clone()),
            None => IoRing::process_default(),
        }
    }

    /// The engine in use: [`Engine::Uring`] or [`Engine::Threads`].
    pub fn engine(&self) -> Engine {
        match self.inner.engine {
            EngineImpl::Uring(_) => Engine::Uring,
            EngineImpl::Threads(_) => Engine::Threads,
        }
    }

    /// When the kernel posts this ring's completions: as asked in
    /// [`RingOptions::posting`], unless the kernel refused [`Posting::Cooperative`] (the
    /// [`note`](Self::note) says so); [`Posting::Interrupt`] on the thread engine.
    pub fn posting(&self) -> Posting {
        match &self.inner.engine {
            EngineImpl::Uring(engine) => engine.posting(),
            EngineImpl::Threads(_) => Posting::Interrupt,
        }
    }

    /// Why the ring takes a slower road than asked for (worker threads instead of
    /// io_uring, plain operations instead of registered buffers), naming the cause and
    /// the fix; `None` when it takes none.
    pub fn note(&self) -> Option<&str> {
        self.inner.note.as_deref()
    }

    /// What went how, as of now. On io_uring, completions the kernel has posted are
    /// handed out first (no system call, no wait), so `running` falls as soon as the
    /// kernel is done even for a transfer nobody waits for (a forgotten `Pending`).
    pub fn stats(&self) -> RingStats {
        let mut registered_bytes = 0;
        if let EngineImpl::Uring(engine) = &self.inner.engine {
            if self.inner.completions.running() > 0 {
                engine.reap_ready();
            }
            registered_bytes = engine.registered_bytes();
        }
        RingStats {
            engine: self.engine(),
            fixed_ops: self.inner.fixed_ops.load(Ordering::Relaxed),
            plain_ops: self.inner.plain_ops.load(Ordering::Relaxed),
            in_flight: self.inner.completions.in_flight(),
            running: self.inner.completions.running(),
            registered_bytes,
        }
    }

    /// Registers `pool`'s memory as fixed buffers of this ring until the returned
    /// [`PoolRegistration`] is dropped: from now on its buffers go as
    /// `READ_FIXED`/`WRITE_FIXED` (no page pinning per transfer), as the pools of
    /// [`RingOptions::register`] do for the ring's life. The library's sequential types
    /// register the pool they make for themselves this way.
    ///
    /// Dropping the registration lets the slots go once no buffer of the pool is out
    /// (a transfer in flight may name them): until then `stats().registered_bytes` still
    /// counts them. Speed is all a registration changes: a caller may ignore an error and
    /// go on with plain transfers.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on the thread engine, or where the kernel cannot register
    /// after the ring is built (before Linux 5.19); [`Error::InvalidArgument`] for a pool
    /// already registered with this ring; [`Error::OutOfMemory`] when the kernel refuses
    /// to pin the memory (the message names `RLIMIT_MEMLOCK` and its value) or the
    /// ring's table is full.
    ///
    /// ```
    /// use pagebuf::{FramePool, Framing, IoRing};
    ///
    /// let ring = IoRing::new()?;
    /// let pool = FramePool::new(Framing::new(64 * 1024, 8))?;
    /// match ring.register_pool(&pool) {
    ///     Ok(registration) => {
    ///         assert_eq!(ring.stats().registered_bytes, 8 * 64 * 1024);
    ///         drop(registration); // no buffer of the pool is out: gone at once
    ///         assert_eq!(ring.stats().registered_bytes, 0);
    ///     }
    ///     Err(why) => println!("plain transfers: {why}"),
    /// }
    /// # Ok::<(), pagebuf::Error>(())
    /// ```
    pub fn register_pool(&self, pool: &FramePool) -> Result<PoolRegistration> {
        self.lend(Registered::Frames(pool.clone()))
    }

    /// As [`register_pool`](Self::register_pool), for a [`SharedPool`]: its mapping in
    /// this process (frames and bookkeeping, one region) becomes fixed buffers of this
    /// ring, so frames filled in another process are written from here as
    /// `WRITE_FIXED` (no page pinning per transfer: 768 pages for a 3 MiB frame on
    /// normal pages). The slots go once no frame of the pool is out *in any process*
    /// after the registration is dropped (more than needed, never less).
    ///
    /// # Errors
    /// As [`register_pool`](Self::register_pool).
    ///
    /// ```
    /// use pagebuf::{Framing, IoRing, SharedPool};
    ///
    /// let ring = IoRing::new()?;
    /// let pool = SharedPool::create(Framing::new(64 * 1024, 4))?;
    /// match ring.register_shared_pool(&pool) {
    ///     Ok(registration) => {
    ///         assert!(ring.stats().registered_bytes >= 4 * 64 * 1024);
    ///         drop(registration);
    ///         assert_eq!(ring.stats().registered_bytes, 0);
    ///     }
    ///     Err(why) => println!("plain transfers: {why}"),
    /// }
    /// # Ok::<(), pagebuf::Error>(())
    /// ```
    #[cfg(not(loom))]
    pub fn register_shared_pool(&self, pool: &SharedPool) -> Result<PoolRegistration> {
        self.lend(Registered::Shared(pool.clone()))
    }

    fn lend(&self, pool: Registered) -> Result<PoolRegistration> {
        match &self.inner.engine {
            EngineImpl::Uring(engine) => Ok(PoolRegistration::new(engine.lend(pool)?)),
            EngineImpl::Threads(_) => Err(Error::Unsupported(format!(
                "fixed buffers need io_uring, and this ring runs on worker threads{}",
                self.note().map(|n| format!(" ({n})")).unwrap_or_default()
            ))),
        }
    }

    /// Reads into `buf` from `offset` of `file`, up to `buf.max_len()` bytes; the
    /// `Pending` gives `buf` back with its length set to the bytes read (fewer only at
    /// end of file, 0 past it). The ring owns `buf` until the read is done.
    ///
    /// A misaligned address, offset or length (direct I/O) resolves the `Pending` to
    /// [`Error::Misaligned`] without a system call; `buf` is then dropped (back to its
    /// pool). A read above the device's largest request goes as one io_uring entry (the
    /// block layer splits it), or as pieces of that size on worker threads.
    pub fn read_at(&self, file: &DirectFile, buf: BufferMut, offset: u64) -> Pending<BufferMut> {
        if let Err(err) = check(file, buf.as_ptr(), offset, buf.max_len()) {
            return Pending::ready(Err(err));
        }
        let chunk = self.piece_size(file, buf.as_ptr());
        let op = Op::Read {
            file: file.shared(),
            buf,
            offset,
            chunk,
        };
        self.submit(op, finish_read, Entering::Now)
    }

    /// [`read_at`](Self::read_at) for many buffers at once: each `(buf, offset)` read as
    /// `read_at` reads one, all submitted with one system call on io_uring (where
    /// `read_at` makes one per read): what a thread with many reads in flight does when
    /// it replaces those that finished (take every `Pending` that
    /// [`is_ready`](Pending::is_ready), then submit their successors together), or a page
    /// cache reading ahead. The `Pending`s come back in the order of `reads`; a refused
    /// read (misaligned) is resolved in its place without a system call, as for
    /// `read_at`, and the others go on. Ownership as for `read_at`.
    ///
    /// ```
    /// use pagebuf::direct::DirectFile;
    /// use pagebuf::{BufferAllocator, IoRing, PageAllocator};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-read-at-batch.bin");
    /// let page = pagebuf::page_size();
    /// let data: Vec<u8> = (0..4 * page).map(|i| (i / page) as u8).collect();
    /// std::fs::write(&path, &data)?;
    /// let ring = IoRing::new()?;
    /// let file = DirectFile::open(&path)?;
    /// let pages = PageAllocator::default();
    /// let reads = (0..4).rev().map(|k| Ok((pages.allocate_page_aligned(page)?, (k * page) as u64)));
    /// let reads = reads.collect::<pagebuf::Result<Vec<_>>>()?;
    /// for (pending, k) in ring.read_at_batch(&file, reads).into_iter().zip((0..4).rev()) {
    ///     assert!(pending.wait()?.iter().all(|&b| b == k as u8));
    /// }
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at_batch(
        &self,
        file: &DirectFile,
        reads: impl IntoIterator<Item = (BufferMut, u64)>,
    ) -> Vec<Pending<BufferMut>> {
        let reads = reads.into_iter();
        // Per read, in order: its outcome if refused before the kernel, or a stand-in
        // that the read replaces once it is issued.
        let mut out = Vec::with_capacity(reads.size_hint().0);
        let mut ops = Vec::with_capacity(reads.size_hint().0);
        for (buf, offset) in reads {
            let checked = if self.inner.completions.forked() {
                Err(Completions::forked_error())
            } else {
                check(file, buf.as_ptr(), offset, buf.max_len())
            };
            if let Err(err) = checked {
                out.push(Pending::ready(Err(err)));
                continue;
            }
            let chunk = self.piece_size(file, buf.as_ptr());
            let op = Op::Read {
                file: file.shared(),
                buf,
                offset,
                chunk,
            };
            if let Err(err) = self.hold_lease(&op) {
                out.push(Pending::ready(Err(err)));
                continue;
            }
            ops.push(op);
            out.push(Pending::stand_in());
        }
        // Every op is issued, in order, so the n-th issued fills the n-th stand-in.
        let mut place = 0;
        self.issue_all(ops, |id, driver| {
            while out.get(place).is_some_and(|p| !p.is_stand_in()) {
                place += 1;
            }
            if let Some(stand_in) = out.get_mut(place) {
                *stand_in = Pending::in_flight(driver, id, finish_read);
            }
        });
        out
    }

    /// [`read_at`](Self::read_at) and [`wait`](Pending::wait) in one: the read a thread
    /// makes when it has nothing else to do until the bytes are in (a page cache's miss,
    /// an index lookup). A thread that waits for one read gains nothing from a queue, so
    /// on either engine this is a positioned read (`pread`) on the calling thread: one
    /// system call and no thread switch, where `read_at(..).wait()` takes two system
    /// calls on io_uring (submit, then wait) and a switch to a worker and back on
    /// threads. Checked as `read_at` (alignment, split at the device's largest request);
    /// counted in [`stats`](Self::stats) as a plain op. `buf` comes back filled (short
    /// only at end of file), or is dropped (back to its pool) with the error.
    ///
    /// ```
    /// use pagebuf::direct::DirectFile;
    /// use pagebuf::{BufferAllocator, IoRing, PageAllocator};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-read-at-blocking.bin");
    /// let page = pagebuf::page_size();
    /// std::fs::write(&path, vec![7u8; 2 * page])?;
    /// let ring = IoRing::new()?;
    /// let file = DirectFile::open(&path)?;
    /// let page_buf = PageAllocator::default().allocate_page_aligned(page)?;
    /// let page_buf = ring.read_at_blocking(&file, page_buf, page as u64)?;
    /// assert_eq!(page_buf.len(), page);
    /// assert!(page_buf.iter().all(|&b| b == 7));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As `read_at`'s `Pending`: [`Error::Misaligned`] without a system call,
    /// [`Error::Io`] from the kernel; in a forked child, as every use of a ring made
    /// before the fork, [`Error::InvalidRequest`].
    pub fn read_at_blocking(
        &self,
        file: &DirectFile,
        mut buf: BufferMut,
        offset: u64,
    ) -> Result<BufferMut> {
        if self.inner.completions.forked() {
            return Err(Completions::forked_error());
        }
        file.read_at(&mut buf, offset)?;
        self.inner.plain_ops.fetch_add(1, Ordering::Relaxed);
        Ok(buf)
    }

    /// Reads into part of `buf`: up to `range.len()` bytes from `offset` of `file` into
    /// `buf.whole_mut()[range]`, the bytes outside `range` left as they are. The `Pending`
    /// gives `buf` back with its length set to `max(old length, range.start + bytes
    /// read)` (so `range.start` counts even when nothing was read); fewer bytes than
    /// `range.len()` are read only at end of file, 0 past it. Bytes of `range` after those
    /// read may have been written too (direct I/O reads the file's last block whole).
    ///
    /// Owned, as [`read_at`](Self::read_at): the ring holds `buf` until the read is done,
    /// and a `Pending` dropped or forgotten cancels nothing and leaks nothing. One big
    /// buffer can be filled piece by piece without a copy, each piece in flight in turn
    /// (a buffer is in one transfer at a time; for many reads into one arena at once, see
    /// [`read_many`](Self::read_many)). A part of a registered pool's buffer goes as
    /// `READ_FIXED` as the whole buffer would.
    ///
    /// Resolved without a system call (`buf` then dropped, back to its pool):
    /// [`Error::InvalidArgument`] for a reversed range or one that ends past
    /// `buf.max_len()`; [`Error::Misaligned`] for a misaligned address (`buf.as_ptr()` +
    /// `range.start`), offset or length (`range.len()`), checked as `read_at` checks them.
    /// An empty range reads nothing and makes no system call.
    ///
    /// ```
    /// use pagebuf::direct::DirectFile;
    /// use pagebuf::{BufferAllocator, IoRing, PageAllocator};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-read-into-part.bin");
    /// let page = pagebuf::page_size();
    /// let data: Vec<u8> = (0..4 * page).map(|i| (i / page) as u8).collect();
    /// std::fs::write(&path, &data)?;
    /// let ring = IoRing::new()?;
    /// let file = DirectFile::open(&path)?;
    /// // A four-page arena: the file's page 3 into its page 1, then page 0 into page 2.
    /// let mut arena = PageAllocator::default().allocate_page_aligned(4 * page)?;
    /// arena.whole_mut().fill(0xAA);
    /// let arena = ring.read_into_part(&file, arena, page..2 * page, 3 * page as u64).wait()?;
    /// assert_eq!(arena.len(), 2 * page);
    /// let arena = ring.read_into_part(&file, arena, 2 * page..3 * page, 0).wait()?;
    /// assert_eq!(arena.len(), 3 * page);
    /// assert!(arena[..page].iter().all(|&b| b == 0xAA)); // outside the ranges: untouched
    /// assert!(arena[page..2 * page].iter().all(|&b| b == 3));
    /// assert!(arena[2 * page..3 * page].iter().all(|&b| b == 0));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_into_part(
        &self,
        file: &DirectFile,
        mut buf: BufferMut,
        range: Range<usize>,
        offset: u64,
    ) -> Pending<BufferMut> {
        let max = buf.max_len();
        if range.start > range.end || range.end > max {
            return Pending::ready(Err(Error::InvalidArgument(format!(
                "read_into_part: the range {}..{} is not within this buffer's max_len of \
                 {max}; give a range with start <= end <= {max}",
                range.start, range.end
            ))));
        }
        if range.is_empty() {
            let len = buf.len().max(range.start);
            return Pending::ready(buf.set_len(len).map(|()| buf));
        }
        let address = buf.as_ptr().wrapping_add(range.start);
        if let Err(err) = check(file, address, offset, range.len()) {
            return Pending::ready(Err(err));
        }
        let op = Op::ReadPart {
            file: file.shared(),
            buf,
            start: range.start,
            len: range.len(),
            offset,
            chunk: self.piece_size(file, address),
        };
        self.submit(op, finish_read_part, Entering::Now)
    }

    /// Reads into the caller's own memory: up to `dst.len()` bytes from `offset` of
    /// `file` into `dst`; the bytes read (fewer only at end of file, 0 past it; bytes of
    /// `dst` after them may have been written too).
    ///
    /// Borrowed and blocking: it returns only once the kernel is done with `dst`, so the
    /// borrow outlives the transfer. One read of [`read_many`](Self::read_many), which
    /// says what happens if anything goes wrong meanwhile. An empty `dst` reads nothing
    /// and makes no system call.
    ///
    /// # Errors
    /// [`Error::Misaligned`] (direct I/O) for a misaligned address, offset or length,
    /// without a system call; [`Error::Io`] from the kernel.
    pub fn read_into(&self, file: &DirectFile, dst: &mut [u8], offset: u64) -> Result<usize> {
        self.read_many(file, &mut [(offset, dst)])
            .pop()
            .unwrap_or_else(|| Err(Error::InvalidRequest("a read gave no outcome".into())))
    }

    /// Reads into many regions of the caller's own memory at once: for each
    /// `(offset, dst)`, up to `dst.len()` bytes from `offset` of `file` into `dst`. Every
    /// read is submitted before any is waited for (queue depth `reads.len()` from this
    /// one thread on io_uring, as many as there are workers on threads); the outcomes come
    /// back in the order of `reads`, each as [`read_into`](Self::read_into)'s.
    ///
    /// Borrowed and blocking: it returns only when every read it submitted has
    /// completed, whatever happens, so no borrow of `reads` ends while the kernel may
    /// still write into it. A read refused before the kernel (misaligned: its entry is
    /// [`Error::Misaligned`]) or by it ([`Error::Io`]) fails alone; the others go on,
    /// and are waited for. A panic after the first submission (there is none to expect:
    /// it would take a bug, or a buffer owner's `Drop` run by the ring panicking) is held
    /// until every read submitted has completed, and a panic while a read is being handed
    /// to the engine aborts the process: either way the memory is never given back early.
    ///
    /// The regions are disjoint `&mut` borrows, so a page cache lends several pages of
    /// one arena at once (`chunks_mut`, `split_at_mut`):
    ///
    /// ```
    /// use pagebuf::direct::DirectFile;
    /// use pagebuf::{BufferAllocator, IoRing, PageAllocator};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-read-many.bin");
    /// let page = pagebuf::page_size();
    /// let data: Vec<u8> = (0..16 * page).map(|i| (i / page) as u8).collect();
    /// std::fs::write(&path, &data)?;
    /// let ring = IoRing::new()?;
    /// let file = DirectFile::open(&path)?;
    /// // The page cache's own arena (page-aligned, as direct I/O wants): eight frames.
    /// let mut arena = PageAllocator::default().allocate_page_aligned(8 * page)?;
    /// let mut reads: Vec<(u64, &mut [u8])> = arena
    ///     .whole_mut()
    ///     .chunks_mut(page)
    ///     .enumerate()
    ///     .map(|(frame, dst)| (((frame * 2) * page) as u64, dst)) // file pages 0, 2, 4, ...
    ///     .collect();
    /// let outcomes = ring.read_many(&file, &mut reads);
    /// assert!(outcomes.iter().all(|read| matches!(read, Ok(n) if *n == page)));
    /// for (frame, bytes) in arena.whole_mut().chunks(page).enumerate() {
    ///     assert!(bytes.iter().all(|&b| b as usize == frame * 2));
    /// }
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_many(
        &self,
        file: &DirectFile,
        reads: &mut [(u64, &mut [u8])],
    ) -> Vec<Result<usize>> {
        let mut lent = Lent {
            // Reserved first: pushing below neither reallocates nor fails.
            pendings: Vec::with_capacity(reads.len()),
        };
        let last = reads.len().saturating_sub(1);
        for (i, (offset, dst)) in reads.iter_mut().enumerate() {
            let handing_over = AbortOnUnwind;
            // The last read enters the kernel with the wait that follows at once.
            let entering = if i == last {
                Entering::WithWait
            } else {
                Entering::Now
            };
            // SAFETY: `dst` is memory valid for writes of `dst.len()` bytes, borrowed
            // mutably (so nothing else touches it) for this whole call, and this call
            // neither returns nor unwinds before the transfer completes: `lent` waits for
            // its `Pending` (on unwinding too), and a panic before the `Pending` is in
            // `lent` aborts (`handing_over`).
            let pending =
                unsafe { self.read_raw(file, dst.as_mut_ptr(), dst.len(), *offset, entering) };
            lent.pendings.push(pending);
            std::mem::forget(handing_over);
        }
        let mut outcomes = Vec::with_capacity(lent.pendings.len());
        for pending in &mut lent.pendings {
            outcomes.push(pending.wait_in_place());
        }
        outcomes
    }

    /// Reads up to `len` bytes from `offset` of `file` into the memory at `dst`; the
    /// `Pending` gives the bytes read (fewer only at end of file, 0 past it; bytes after
    /// them, up to `len`, may have been written too). For memory the type system cannot
    /// lend for long enough (an arena whose pages go to readers on other threads, a
    /// future that must not borrow): the safe forms are [`read_into`](Self::read_into)
    /// and [`read_many`](Self::read_many), which block.
    ///
    /// Checked as [`read_at`](Self::read_at), resolved without a system call: a
    /// misaligned address, offset or length is [`Error::Misaligned`], a null `dst` or one
    /// whose `len` bytes would wrap the address space [`Error::InvalidArgument`]. A `len`
    /// of 0 reads nothing and makes no system call.
    ///
    /// # Safety
    ///
    /// `[dst, dst + len)` must be valid for writes (initialized or not) and must not be
    /// read, written, moved or freed by anything else from this call until the ring is
    /// done with it, which is the first of:
    ///
    /// * the `Pending` resolves: [`wait`](Pending::wait) returns or the future is ready,
    ///   with any outcome (an error from the kernel included);
    /// * the `Pending` dropped: [`stats()`](Self::stats)`.in_flight` or `.running`, read
    ///   after the drop, is 0 (every transfer on this ring is then complete; on a busy
    ///   ring that may take a while);
    /// * the `Pending` forgotten (`mem::forget`): `.running`, read after this call, is 0
    ///   (`in_flight` counts a forgotten transfer for ever), or the last handle of this
    ///   ring was dropped by the caller's thread (that drop waits for every transfer).
    ///
    /// Until then the kernel, or a worker thread, may write into that memory at any time;
    /// a read of it meanwhile is a data race. When a `Pending` is dropped or forgotten the
    /// transfer is not cancelled: it runs to its end.
    pub unsafe fn read_into_raw(
        &self,
        file: &DirectFile,
        dst: *mut u8,
        len: usize,
        offset: u64,
    ) -> Pending<usize> {
        // SAFETY: forwarded: the caller keeps this function's contract.
        unsafe { self.read_raw(file, dst, len, offset, Entering::Now) }
    }

    /// [`read_into_raw`](Self::read_into_raw), entering the kernel as `entering` says.
    ///
    /// # Safety
    /// As `read_into_raw`.
    unsafe fn read_raw(
        &self,
        file: &DirectFile,
        dst: *mut u8,
        len: usize,
        offset: u64,
        entering: Entering,
    ) -> Pending<usize> {
        if len == 0 {
            return Pending::ready(Ok(0));
        }
        if dst.is_null() || (dst as usize).checked_add(len).is_none() {
            return Pending::ready(Err(Error::InvalidArgument(format!(
                "read_into_raw: {len} bytes at address {dst:p} are not memory (null, or \
                 past the end of the address space); pass memory you own"
            ))));
        }
        if let Err(err) = check(file, dst, offset, len) {
            return Pending::ready(Err(err));
        }
        let op = Op::ReadRaw {
            file: file.shared(),
            addr: dst as usize,
            len,
            offset,
            chunk: self.piece_size(file, dst),
        };
        self.submit(op, finish_read_raw, entering)
    }

    /// Writes all of `data` at `offset` of `file`; the `Pending` gives its length. The
    /// ring holds `data` until the write is done, then drops it (back to its pool).
    ///
    /// Misalignment is [`Error::Misaligned`] without a system call, as for `read_at`.
    pub fn write_at(&self, file: &DirectFile, data: Buffer, offset: u64) -> Pending<usize> {
        let chunk = self.piece_size(file, data.as_ptr());
        match write_op(file, data, offset, chunk, Tearing::Possible) {
            Ok(op) => self.submit(op, finish_write, Entering::Now),
            Err(err) => Pending::ready(Err(err)),
        }
    }

    /// [`write_at`](Self::write_at) and [`wait`](Pending::wait) in one, as
    /// [`read_at_blocking`](Self::read_at_blocking) is for reads: a positioned write
    /// (`pwrite`) on the calling thread, on either engine, for a write its thread waits
    /// for at once (a log's commit). Checked as `write_at`; `data` is dropped (back to
    /// its pool) when this returns; counted as a plain op.
    ///
    /// # Errors
    /// As `write_at`'s `Pending`: [`Error::Misaligned`] without a system call,
    /// [`Error::Io`] from the kernel (a full disk is `ENOSPC`); in a forked child,
    /// [`Error::InvalidRequest`].
    pub fn write_at_blocking(&self, file: &DirectFile, data: Buffer, offset: u64) -> Result<usize> {
        if self.inner.completions.forked() {
            return Err(Completions::forked_error());
        }
        let written = file.write_at(&data, offset)?;
        self.inner.plain_ops.fetch_add(1, Ordering::Relaxed);
        Ok(written)
    }

    /// Writes all of `data` at `offset` so that a crash leaves all of it or none of it
    /// on disk, never a torn mix (`RWF_ATOMIC`): how a block that already holds
    /// acknowledged bytes can be written again without risking them (a database page, a
    /// log's tail). Where the file system promises it: [`DeviceLimits::untorn_write`]
    /// of the length, which also needs the offset to be a multiple of the length and
    /// the file opened for direct I/O.
    ///
    /// # Errors
    /// Before any system call: [`Error::Unsupported`] where the file system promises no
    /// untorn writes (the message names `STATX_WRITE_ATOMIC` and what it reported),
    /// [`Error::InvalidArgument`] for a length or offset outside its rules, naming
    /// them; [`Error::Misaligned`] as for `write_at`.
    ///
    /// [`DeviceLimits::untorn_write`]: crate::DeviceLimits::untorn_write
    pub fn write_untorn_at(&self, file: &DirectFile, data: Buffer, offset: u64) -> Pending<usize> {
        let chunk = self.piece_size(file, data.as_ptr());
        match write_op(file, data, offset, chunk, Tearing::Impossible) {
            Ok(op) => self.submit(op, finish_write, Entering::Now),
            Err(err) => Pending::ready(Err(err)),
        }
    }

    /// `fdatasync` of `file`. It covers the writes whose `Pending` resolved before this
    /// call; writes still in flight may land after it (the kernel does not order them).
    pub fn sync_data(&self, file: &DirectFile) -> Pending<()> {
        self.submit(
            Op::Sync {
                file: file.shared(),
            },
            finish_sync,
            Entering::Now,
        )
    }

    /// The largest piece one entry of this ring carries for memory at `address` of
    /// `file`. On worker threads, the device's largest request, as `DirectFile` splits
    /// it. On io_uring, the whole transfer up to [`URING_PIECE`]: one entry whose bio
    /// the block layer splits at the device's limits itself, under one plug. Measured
    /// (BENCHMARKS.md, issue 13): 4 MiB registered reads at depth 4 ran 1.19x faster as
    /// one entry each than as five entries of the device's 1016 KiB.
    fn piece_size(&self, file: &DirectFile, address: *const u8) -> usize {
        match self.inner.engine {
            EngineImpl::Uring(_) => URING_PIECE,
            EngineImpl::Threads(_) => file.chunk_for(address),
        }
    }

    fn submit<T>(&self, op: Op, finish: Finish<T>, entering: Entering) -> Pending<T> {
        if self.inner.completions.forked() {
            return Pending::ready(Err(Completions::forked_error()));
        }
        if let Err(err) = self.hold_lease(&op) {
            return Pending::ready(Err(err)); // `op` drops: its buffer goes home
        }
        let (id, driver) = self.issue(op, None, entering);
        Pending::in_flight(driver, id, finish)
    }

    /// Writes all of `data` at `offset` of `file` with no `Pending`: once the kernel is
    /// done, `data` is dropped (back to its pool) and then `then` gets the outcome, on
    /// whichever thread reaped the completion (keep it short: no blocking).
    pub(crate) fn write_detached(
        &self,
        file: &DirectFile,
        data: Buffer,
        offset: u64,
        tearing: Tearing,
        then: impl FnOnce(Result<usize>) + Send + 'static,
    ) {
        if self.inner.completions.forked() {
            drop(data);
            return then(Err(Completions::forked_error()));
        }
        let chunk = self.piece_size(file, data.as_ptr());
        let op = match write_op(file, data, offset, chunk, tearing) {
            Ok(op) => op,
            Err(err) => return then(Err(err)), // the buffer went home with the refusal
        };
        if let Err(err) = self.hold_lease(&op) {
            drop(op); // the buffer home first, as for every outcome
            return then(Err(err));
        }
        // `finish_write` consumes the op: the buffer is home before `then` runs.
        let on_done: OnDone = Box::new(move |op, results| then(finish_write(op, results)));
        self.issue(op, Some(on_done), Entering::Now);
    }

    /// On io_uring, makes the ring hold the lease of the shared pool whose frame `op`
    /// uses (`leases.rs`): a process may exit with the ring's transfers in flight. The
    /// thread engine needs none: a worker blocked in a transfer keeps the process's
    /// files open, the lease among them, until it returns.
    fn hold_lease(&self, op: &Op) -> Result<()> {
        #[cfg(not(loom))]
        if let EngineImpl::Uring(engine) = &self.inner.engine {
            return engine.hold_lease(op);
        }
        let _ = op;
        Ok(())
    }

    /// Hands `op` to the engine: its completion slot, and what a `Pending` for it waits
    /// through.
    fn issue(
        &self,
        op: Op,
        on_done: Option<OnDone>,
        entering: Entering,
    ) -> (usize, Arc<dyn Drive>) {
        let inner = &*self.inner;
        let completions = inner.completions.clone();
        match &inner.engine {
            EngineImpl::Uring(engine) => {
                let (id, road) = engine.submit(op, on_done, entering);
                match road {
                    Road::Fixed => &inner.fixed_ops,
                    Road::Plain => &inner.plain_ops,
                }
                .fetch_add(1, Ordering::Relaxed);
                (id, engine.driver())
            }
            EngineImpl::Threads(engine) => {
                let id = completions.insert(None, op.piece_count(), on_done);
                inner.plain_ops.fetch_add(1, Ordering::Relaxed);
                if let Err(op) = engine.submit(id, op) {
                    let failed = vec![-libc::ECANCELED; op.piece_count()];
                    completions.finish_all(id, op, &failed).run();
                }
                (id, completions)
            }
        }
    }

    /// [`issue`](Self::issue) for many ops at once (on io_uring, one system call for
    /// all); `each` gets every op's slot and driver, in order.
    fn issue_all(&self, ops: Vec<Op>, mut each: impl FnMut(usize, Arc<dyn Drive>)) {
        if ops.is_empty() {
            // Nothing to enter the kernel for (and, in a forked child, no queue to touch).
            return;
        }
        let inner = &*self.inner;
        match &inner.engine {
            EngineImpl::Uring(engine) => engine.submit_all(ops, |id, road| {
                match road {
                    Road::Fixed => &inner.fixed_ops,
                    Road::Plain => &inner.plain_ops,
                }
                .fetch_add(1, Ordering::Relaxed);
                each(id, engine.driver());
            }),
            EngineImpl::Threads(_) => {
                for op in ops {
                    let (id, driver) = self.issue(op, None, Entering::Now);
                    each(id, driver);
                }
            }
        }
    }
}

/// The largest piece one io_uring entry carries: 1 GiB, a multiple of every alignment,
/// under the kernel's limit for one read or write (2 GiB less a page) and its limit for
/// one fixed buffer.
const URING_PIECE: usize = 1 << 30;

/// A write of `data` at `offset` of `file` in pieces of `chunk` (an untorn one in one
/// piece), checked (refused: `data` is dropped).
fn write_op(
    file: &DirectFile,
    data: Buffer,
    offset: u64,
    chunk: usize,
    tearing: Tearing,
) -> Result<Op> {
    check(file, data.as_ptr(), offset, data.len())?;
    let chunk = match tearing {
        Tearing::Possible => chunk,
        Tearing::Impossible => {
            check_untorn(file, offset, data.len())?;
            data.len()
        }
    };
    Ok(Op::Write {
        file: file.shared(),
        data,
        offset,
        chunk,
        tearing,
    })
}

/// The rules of `RWF_ATOMIC`, checked before the kernel would refuse them.
fn check_untorn(file: &DirectFile, offset: u64, len: usize) -> Result<()> {
    let limits = file.limits();
    let (min, max) = (limits.atomic_write_unit_min, limits.atomic_write_unit_max);
    if max == 0 || !file.is_direct() {
        return Err(Error::Unsupported(format!(
            "{} promises no untorn writes ({}); write whole new blocks instead, or use a              file system and device that report atomic writes (XFS, ext4 on a device              with atomic write support, Linux 6.11+)",
            file.path().display(),
            if file.is_direct() {
                format!("statx STATX_WRITE_ATOMIC: {min}..={max} bytes")
            } else {
                "the file is not open for direct I/O".to_string()
            }
        )));
    }
    if !limits.untorn_write(len) {
        return Err(Error::InvalidArgument(format!(
            "an untorn write of {len} bytes: its length must be a power of two from {min}              to {max} bytes on {}",
            file.path().display()
        )));
    }
    if offset % len as u64 != 0 {
        return Err(Error::InvalidArgument(format!(
            "an untorn write of {len} bytes at offset {offset}: the offset must be a              multiple of the length"
        )));
    }
    Ok(())
}

/// What the kernel would refuse, refused first: misalignment, and a transfer that runs
/// past the largest file offset (`loff_t`, 2^63 - 1).
fn check(file: &DirectFile, address: *const u8, offset: u64, len: usize) -> Result<()> {
    file.check(address, offset, len)?;
    let pieces = len.div_ceil(file.chunk_for(address).max(1));
    if pieces > MAX_PIECES {
        return Err(Error::InvalidArgument(format!(
            "a transfer of {len} bytes is {pieces} requests of this device's largest, more \
             than the {MAX_PIECES} one transfer may be; split it"
        )));
    }
    let fits = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= i64::MAX as u64);
    if !fits {
        return Err(Error::InvalidArgument(format!(
            "a transfer of {len} bytes at offset {offset} runs past the largest file offset \
             ({}); use a smaller offset",
            i64::MAX
        )));
    }
    Ok(())
}

impl std::fmt::Debug for IoRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoRing")
            .field("engine", &self.engine())
            .field("note", &self.note())
            .field("in_flight", &self.inner.completions.in_flight())
            .finish()
    }
}

/// The transfers of a [`IoRing::read_many`] into borrowed memory: dropped, it waits for
/// every one of them still in flight, so even a panic unwinding out of `read_many` leaves
/// only after the kernel is done with the memory (a second panic while it waits aborts,
/// as any panic while unwinding does).
struct Lent {
    pendings: Vec<Pending<usize>>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        for pending in &mut self.pendings {
            if !pending.is_ready() {
                let _ = pending.wait_in_place();
            }
        }
    }
}

/// Aborts the process if dropped while a panic unwinds: held while a read into borrowed
/// memory is handed to the engine, when a panic would leave a transfer in flight with no
/// `Pending` to wait for it.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "pagebuf: a panic while a read into borrowed memory was being submitted;                  aborting, as the kernel may still write into that memory"
            );
            std::process::abort();
        }
    }
}
