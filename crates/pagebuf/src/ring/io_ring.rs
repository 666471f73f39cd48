//! [`IoRing`]: the public handle, and the choice of engine behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::completion::{Completions, OnDone};
use super::op::{finish_read, finish_sync, finish_write, Finish, Op, MAX_PIECES};
use super::options::{Engine, RingOptions, MAX_ENTRIES};
use super::pending::{Drive, Pending};
use super::threads::ThreadEngine;
use super::uring::{Road, UringEngine};
use crate::buffer::{Buffer, BufferMut};
use crate::caps;
use crate::direct::DirectFile;
use crate::error::{Error, Result};

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
    registered_bytes: usize,
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
    /// `Pending`, that have not completed).
    pub in_flight: usize,
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
                UringEngine::new(options.entries, &options.pools, completions.clone()).map_err(Some)
            }
        };
        let (engine, note, registered_bytes) = match uring {
            Ok((engine, note)) => {
                let bytes = match note {
                    Some(_) => 0,
                    None => options.pools.iter().map(|p| p.memory_extent().1).sum(),
                };
                (EngineImpl::Uring(engine), note, bytes)
            }
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
                (EngineImpl::Threads(threads), note, 0)
            }
        };
        Ok(IoRing {
            inner: Arc::new(Inner {
                engine,
                completions,
                note,
                registered_bytes,
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

    /// The engine in use: [`Engine::Uring`] or [`Engine::Threads`].
    pub fn engine(&self) -> Engine {
        match self.inner.engine {
            EngineImpl::Uring(_) => Engine::Uring,
            EngineImpl::Threads(_) => Engine::Threads,
        }
    }

    /// Why the ring takes a slower road than asked for (worker threads instead of
    /// io_uring, plain operations instead of registered buffers), naming the cause and
    /// the fix; `None` when it takes none.
    pub fn note(&self) -> Option<&str> {
        self.inner.note.as_deref()
    }

    /// What went how, as of now.
    pub fn stats(&self) -> RingStats {
        RingStats {
            engine: self.engine(),
            fixed_ops: self.inner.fixed_ops.load(Ordering::Relaxed),
            plain_ops: self.inner.plain_ops.load(Ordering::Relaxed),
            in_flight: self.inner.completions.in_flight(),
            registered_bytes: self.inner.registered_bytes,
        }
    }

    /// Reads into `buf` from `offset` of `file`, up to `buf.max_len()` bytes; the
    /// `Pending` gives `buf` back with its length set to the bytes read (fewer only at
    /// end of file, 0 past it). The ring owns `buf` until the read is done.
    ///
    /// A misaligned address, offset or length (direct I/O) resolves the `Pending` to
    /// [`Error::Misaligned`] without a system call; `buf` is then dropped (back to its
    /// pool). A read above the device's largest request goes as pieces of that size.
    pub fn read_at(&self, file: &DirectFile, buf: BufferMut, offset: u64) -> Pending<BufferMut> {
        if let Err(err) = check(file, buf.as_ptr(), offset, buf.max_len()) {
            return Pending::ready(Err(err));
        }
        let chunk = file.chunk_for(buf.as_ptr());
        let op = Op::Read {
            file: file.shared(),
            buf,
            offset,
            chunk,
        };
        self.submit(op, finish_read)
    }

    /// Writes all of `data` at `offset` of `file`; the `Pending` gives its length. The
    /// ring holds `data` until the write is done, then drops it (back to its pool).
    ///
    /// Misalignment is [`Error::Misaligned`] without a system call, as for `read_at`.
    pub fn write_at(&self, file: &DirectFile, data: Buffer, offset: u64) -> Pending<usize> {
        if let Err(err) = check(file, data.as_ptr(), offset, data.len()) {
            return Pending::ready(Err(err));
        }
        let chunk = file.chunk_for(data.as_ptr());
        let op = Op::Write {
            file: file.shared(),
            data,
            offset,
            chunk,
        };
        self.submit(op, finish_write)
    }

    /// `fdatasync` of `file`. It covers the writes whose `Pending` resolved before this
    /// call; writes still in flight may land after it (the kernel does not order them).
    pub fn sync_data(&self, file: &DirectFile) -> Pending<()> {
        self.submit(
            Op::Sync {
                file: file.shared(),
            },
            finish_sync,
        )
    }

    fn submit<T>(&self, op: Op, finish: Finish<T>) -> Pending<T> {
        if self.inner.completions.forked() {
            return Pending::ready(Err(Completions::forked_error()));
        }
        let (id, driver) = self.issue(op, None);
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
        then: impl FnOnce(Result<usize>) + Send + 'static,
    ) {
        if let Err(err) = check(file, data.as_ptr(), offset, data.len()) {
            drop(data);
            return then(Err(err));
        }
        if self.inner.completions.forked() {
            drop(data);
            return then(Err(Completions::forked_error()));
        }
        let chunk = file.chunk_for(data.as_ptr());
        let op = Op::Write {
            file: file.shared(),
            data,
            offset,
            chunk,
        };
        // `finish_write` consumes the op: the buffer is home before `then` runs.
        let on_done: OnDone = Box::new(move |op, results| then(finish_write(op, results)));
        self.issue(op, Some(on_done));
    }

    /// Hands `op` to the engine: its completion slot, and what a `Pending` for it waits
    /// through.
    fn issue(&self, op: Op, on_done: Option<OnDone>) -> (usize, Arc<dyn Drive>) {
        let inner = &*self.inner;
        let completions = inner.completions.clone();
        match &inner.engine {
            EngineImpl::Uring(engine) => {
                let (id, road) = engine.submit(op, on_done);
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
