//! The transfers in flight behind the sequential writer and reader and the sample
//! writer and reader: a [`WriteQueue`] of positioned writes and a [`ReadAhead`] of
//! positioned reads, each served by `depth` threads that keep one transfer apiece in the
//! kernel. This is the one seam where an io_uring queue will go; nothing outside this
//! file knows how transfers are issued.
//!
//! * **Writes** are whole buffers at chosen offsets, in any order: callers lay out the
//!   file, the queue only issues. A buffer larger than the device's largest request is
//!   cut (zero-copy slices) into pieces of that size, which different threads write at
//!   once, as the kernel would issue the pieces of one large `O_DIRECT` write; a
//!   thread issuing them one after another would keep one request in flight. A buffer
//!   is dropped (back to its pool) before its last piece's completion is counted, so a
//!   caller woken by [`WriteQueue::wait_idle`] finds the memory already free. After the
//!   first failure the queue stops writing (later writes would land beyond a hole) and
//!   the failure is **sticky**: every later `check`, `submit`, `wait_idle` and
//!   `shutdown` returns it (a clone of the original), so no caller can be told `Ok`
//!   over a file with a hole in it. A failure met outside the queue (the sync after
//!   the writes) is recorded with [`WriteQueue::fail`] and is sticky the same way.
//! * **Reads** follow a plan, a function from the k-th transfer to its `(offset, len)`.
//!   The consumer allocates each read's buffer and hands it to a worker with a reply
//!   channel of its own, keeping the replies in plan order, so transfers come out in
//!   plan order with at most `depth` buffers read ahead. A short read (end of file) or
//!   an error ends it. Allocating in the consumer is what lets a reader whose caller
//!   keeps its buffers fail with an error instead of waiting for ever ([`ReadMemory`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::alloc::BufferAllocator;
use crate::buffer::{Buffer, BufferMut};
use crate::caps::MAX_DEPTH;
use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::pool::BufferPool;

/// One write handed to the queue: where the bytes came from and where they go (the
/// sample writer's optional trace, which proves that large samples are not copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTrace {
    /// Address of the first byte handed to the kernel.
    pub address: usize,
    /// Bytes written.
    pub len: usize,
    /// File offset written at.
    pub offset: u64,
}

#[derive(Default)]
struct WriteState {
    in_flight: usize,
    /// The first failure, kept for good: later writes are skipped, every caller sees it.
    failure: Option<Error>,
    trace: Option<Vec<WriteTrace>>,
}

impl WriteState {
    fn check(&self) -> Result<()> {
        match &self.failure {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

struct WriteShared {
    state: Mutex<WriteState>,
    /// Whether `state.trace` is kept: read without the lock, so a queue that does not
    /// trace pays nothing per write for the feature.
    tracing: AtomicBool,
    done: Condvar,
}

impl WriteShared {
    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Positioned writes to one file, `threads` requests in flight.
pub(crate) struct WriteQueue {
    file: Arc<DirectFile>,
    jobs: Option<SyncSender<(Buffer, u64)>>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<WriteShared>,
}

impl WriteQueue {
    /// `threads` (at least 1) writer threads over `file`.
    pub(crate) fn new(file: Arc<DirectFile>, threads: usize) -> WriteQueue {
        let depth = threads.max(1);
        let (tx, rx) = mpsc::sync_channel::<(Buffer, u64)>(depth);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(WriteShared {
            state: Mutex::new(WriteState::default()),
            tracing: AtomicBool::new(false),
            done: Condvar::new(),
        });
        let workers = (0..depth)
            .map(|_| {
                let (file, rx, shared) = (file.clone(), rx.clone(), shared.clone());
                std::thread::spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((data, offset)) = job else { break };
                    let outcome = if shared.lock().failure.is_some() {
                        Ok(0)
                    } else {
                        file.write_at(&data, offset)
                    };
                    drop(data); // back to its pool before anyone is woken
                    let mut st = shared.lock();
                    if let Err(err) = outcome {
                        st.failure.get_or_insert(err);
                    }
                    st.in_flight -= 1;
                    shared.done.notify_all();
                })
            })
            .collect();
        WriteQueue {
            file,
            jobs: Some(tx),
            workers,
            shared,
        }
    }

    /// Starts recording every completed write (see [`WriteTrace`]).
    #[cfg(feature = "testing")]
    pub(crate) fn enable_trace(&self) {
        self.shared.lock().trace.get_or_insert_with(Vec::new);
        self.shared.tracing.store(true, Ordering::Release);
    }

    /// The writes handed to the queue since tracing was enabled.
    #[cfg(feature = "testing")]
    pub(crate) fn trace(&self) -> Vec<WriteTrace> {
        self.shared.lock().trace.clone().unwrap_or_default()
    }

    /// Queues `data` to be written at `offset`, in pieces of the device's largest
    /// request; waits while the queue is full.
    pub(crate) fn submit(&self, data: Buffer, offset: u64) -> Result<()> {
        if self.shared.tracing.load(Ordering::Acquire) {
            let mut state = self.shared.lock();
            let trace = state.trace.get_or_insert_with(Vec::new);
            trace.push(WriteTrace {
                address: data.as_ptr() as usize,
                len: data.len(),
                offset,
            });
        }
        let piece = self.file.chunk_for(data.as_ptr());
        if data.len() <= piece {
            return self.send(data, offset);
        }
        let mut at = 0;
        while at < data.len() {
            let end = data.len().min(at + piece);
            self.send(data.slice(at..end)?, offset + at as u64)?;
            at = end;
        }
        Ok(())
    }

    fn send(&self, data: Buffer, offset: u64) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(|| {
            Error::InvalidRequest(
                "a write after the writer finished; make a new writer for more data".into(),
            )
        })?;
        {
            let mut st = self.shared.lock();
            st.check()?;
            st.in_flight += 1;
        }
        if jobs.send((data, offset)).is_err() {
            // Not queued: it must not be waited for.
            self.shared.lock().in_flight -= 1;
            return Err(Error::InvalidRequest(
                "the writer threads are gone; make a new writer".into(),
            ));
        }
        Ok(())
    }

    /// The sticky failure, if a write (or a [`fail`](Self::fail)ed step) ever failed.
    pub(crate) fn check(&self) -> Result<()> {
        self.shared.lock().check()
    }

    /// Records `err` as the queue's failure unless it already has one (the first stays),
    /// and returns `err`: for a step after the writes, such as the sync, whose failure
    /// means acknowledged data may not be on disk.
    pub(crate) fn fail(&self, err: Error) -> Error {
        self.shared
            .lock()
            .failure
            .get_or_insert_with(|| err.clone());
        err
    }

    /// Waits until every queued write has completed; then reports the sticky failure.
    pub(crate) fn wait_idle(&self) -> Result<()> {
        let mut st = self.shared.lock();
        while st.in_flight > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.check()
    }

    /// Waits for every write, stops the threads, and reports the sticky failure.
    pub(crate) fn shutdown(&mut self) -> Result<()> {
        self.jobs = None; // the threads drain the queue, then stop
        let outcome = self.wait_idle();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        outcome
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Disk space reserved ahead of a sequential writer (see [`DirectFile::allocate`]), so
/// that its writes are overwrites the file system runs side by side instead of
/// allocating writes it serializes. A refusal (no `fallocate`, or not room for a whole
/// step) turns reserving off: the writes then allocate as they go, and a full disk
/// shows on the write that meets it.
pub(crate) struct Reservation {
    /// The file's length before the writer began.
    initial_len: u64,
    /// Everything below this is reserved.
    end: u64,
    enabled: bool,
}

impl Reservation {
    /// Space is reserved this much at a time.
    const STEP: u64 = 64 << 20;

    pub(crate) fn new(file: &DirectFile) -> Reservation {
        let initial_len = file.len().unwrap_or(0);
        Reservation {
            initial_len,
            end: 0,
            enabled: true,
        }
    }

    /// Makes sure the bytes below `upto` are reserved.
    pub(crate) fn cover(&mut self, file: &DirectFile, upto: u64) {
        if !self.enabled || upto <= self.end {
            return;
        }
        let target = upto.max(self.end.saturating_add(Reservation::STEP));
        match file.allocate(self.end, target - self.end) {
            Ok(()) => self.end = target,
            Err(_) => self.enabled = false,
        }
    }

    /// The length to cut the file to once `written` bytes are its content, if the
    /// reservation left it longer.
    pub(crate) fn cut_to(&self, written: u64) -> Option<u64> {
        let keep = written.max(self.initial_len);
        (self.end > keep).then_some(keep)
    }
}

/// Where the k-th read of a [`ReadAhead`] goes: `(offset, len)`, or `None` past the
/// end (and for every later k).
pub(crate) type ReadPlan = Arc<dyn Fn(u64) -> Option<(u64, usize)> + Send + Sync>;

/// Consecutive blocks of `block` bytes from offset 0, up to `end` (or, without one,
/// until a read comes back short at end of file).
pub(crate) fn block_plan(block: usize, end: Option<u64>) -> ReadPlan {
    let step = block as u64;
    Arc::new(move |k| {
        let offset = k.checked_mul(step)?;
        end.is_none_or(|end| offset < end)
            .then_some((offset, block))
    })
}

/// One completed read.
pub(crate) struct ReadBlock {
    /// The bytes read: fewer than `planned` only at end of file.
    pub(crate) data: Buffer,
    /// The file offset of `data[0]`.
    pub(crate) offset: u64,
    /// The length the plan asked for.
    pub(crate) planned: usize,
}

/// Where a [`ReadAhead`] gets its buffers, and whether it may wait for them.
#[derive(Clone)]
pub(crate) enum ReadMemory {
    /// The caller's allocator, or a pool that only the pipeline itself holds from (a
    /// copy's blocks come back as their writes complete): waiting for it ends.
    Wait(Arc<dyn BufferAllocator>),
    /// The reader's own pool, whose buffers the caller may keep (a sample is a slice of
    /// its block): reads ahead are taken only while memory is free, and when none is
    /// free with nothing in flight, the memory is all in the caller's hands, so the read
    /// fails with an error naming `option`, instead of waiting for ever.
    Own {
        /// The pool.
        pool: BufferPool,
        /// The option that sizes it, as the caller writes it.
        option: &'static str,
    },
}

impl ReadMemory {
    /// A buffer of `len` bytes, or `Ok(None)` for "not now" (own pool, reads in flight).
    pub(crate) fn take(&self, len: usize, in_flight: usize) -> Result<Option<BufferMut>> {
        match self {
            ReadMemory::Wait(alloc) => alloc.allocate_page_aligned(len).map(Some),
            ReadMemory::Own { pool, option } => match pool.try_allocate(len) {
                Ok(Some(buf)) => Ok(Some(buf)),
                Ok(None) if in_flight > 0 => Ok(None),
                Ok(None) => Err(Error::OutOfMemory(format!(
                    "a read of {len} bytes finds the reader's whole memory budget of {} \
                     bytes held by buffers it handed out and that are still kept; drop them \
                     sooner or raise {option}",
                    pool.budget()
                ))),
                Err(Error::InvalidArgument(_)) => Err(Error::OutOfMemory(format!(
                    "a read of {len} bytes is larger than the reader's memory budget of {} \
                     bytes; raise {option} to at least {}",
                    pool.budget(),
                    len.saturating_mul(2)
                ))),
                Err(err) => Err(err),
            },
        }
    }
}

/// One read handed to a worker: into `buf` at `offset`; its outcome goes back tagged
/// with `seq`, its place in the plan.
struct ReadJob {
    buf: BufferMut,
    offset: u64,
    seq: u64,
}

/// A finished read: its place in the plan and its outcome.
type ReadReply = (u64, Result<ReadBlock>);

/// Reads along a [`ReadPlan`], up to `depth` in flight, delivered in plan order. The
/// consumer allocates each read's buffer (see [`ReadMemory`]) and hands it to one of
/// `min(depth, MAX_DEPTH)` worker threads; replies come back on one channel in any
/// order and are put back in plan order. A short read (end of file) or an error ends
/// the plan.
pub(crate) struct ReadAhead {
    file: Arc<DirectFile>,
    memory: ReadMemory,
    plan: ReadPlan,
    depth: usize,
    /// The plan index of the next read to start.
    next: u64,
    /// The plan index of the next read to deliver: reads `delivered..next` are in flight.
    delivered: u64,
    /// Replies that came before their turn, at `seq - delivered`.
    early: VecDeque<Option<Result<ReadBlock>>>,
    replies: Receiver<ReadReply>,
    jobs: Option<SyncSender<ReadJob>>,
    workers: Vec<JoinHandle<()>>,
    /// No read is started after the plan ended, a short read or an error.
    ended: bool,
}

impl ReadAhead {
    /// Reads `file` along `plan`, `depth` (1 to [`MAX_DEPTH`]) reads in flight.
    pub(crate) fn new(
        file: Arc<DirectFile>,
        memory: ReadMemory,
        depth: usize,
        plan: ReadPlan,
    ) -> ReadAhead {
        let depth = depth.clamp(1, MAX_DEPTH);
        let (tx, rx) = mpsc::sync_channel::<ReadJob>(depth);
        // Room for every read in flight: a worker never waits to reply.
        let (reply, replies) = mpsc::sync_channel::<ReadReply>(depth);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..depth)
            .map(|_| {
                let (file, rx, reply) = (file.clone(), rx.clone(), reply.clone());
                std::thread::spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(ReadJob {
                        mut buf,
                        offset,
                        seq,
                    }) = job
                    else {
                        break;
                    };
                    let planned = buf.max_len();
                    let outcome = file.read_at(&mut buf, offset).map(|_| ReadBlock {
                        data: buf.freeze(),
                        offset,
                        planned,
                    });
                    // The consumer may be gone: the buffer then goes home with the reply.
                    let _ = reply.send((seq, outcome));
                })
            })
            .collect();
        ReadAhead {
            file,
            memory,
            plan,
            depth,
            next: 0,
            delivered: 0,
            early: VecDeque::with_capacity(depth),
            replies,
            jobs: Some(tx),
            workers,
            ended: false,
        }
    }

    /// Reads started and not yet delivered.
    fn in_flight(&self) -> usize {
        (self.next - self.delivered) as usize
    }

    /// The file read.
    pub(crate) fn file(&self) -> &Arc<DirectFile> {
        &self.file
    }

    /// Starts reads until `depth` are in flight, the plan ends, or (own pool) memory is
    /// not free now. `handed_out` counts blocks the consumer has just been given: while
    /// it holds one, an own pool with nothing free means "not yet", not "never".
    fn start_reads(&mut self, handed_out: usize) -> Result<()> {
        while !self.ended && self.in_flight() < self.depth {
            let Some((offset, len)) = (self.plan)(self.next) else {
                self.ended = true;
                break;
            };
            let coming_back = self.in_flight() + handed_out;
            let Some(buf) = self.memory.take(len, coming_back)? else {
                break;
            };
            let Some(jobs) = &self.jobs else { break };
            let seq = self.next;
            if jobs.send(ReadJob { buf, offset, seq }).is_err() {
                return Err(Error::InvalidRequest(format!(
                    "the reader threads of {} are gone; open a new reader",
                    self.file.path().display()
                )));
            }
            self.next += 1;
        }
        Ok(())
    }

    /// The reply of read `self.delivered`, waiting for it; `None` if the workers are gone.
    fn take_reply(&mut self) -> Option<Result<ReadBlock>> {
        loop {
            if let Some(Some(_)) = self.early.front() {
                return self.early.pop_front().flatten();
            }
            let (seq, outcome) = self.replies.recv().ok()?;
            let at = (seq - self.delivered) as usize;
            if self.early.len() <= at {
                self.early.resize_with(at + 1, || None);
            }
            self.early[at] = Some(outcome);
        }
    }

    /// Stops: no more reads are started or delivered (replies still coming are dropped
    /// with the channel, their buffers going home).
    fn end(&mut self) {
        self.ended = true;
        self.delivered = self.next;
        self.early.clear();
    }

    /// The next read in plan order; `None` after the plan, a short read or an error.
    pub(crate) fn next_block(&mut self) -> Option<Result<ReadBlock>> {
        if let Err(err) = self.start_reads(0) {
            self.end();
            return Some(Err(err));
        }
        if self.in_flight() == 0 {
            return None;
        }
        let outcome = self.take_reply();
        self.delivered += 1;
        match outcome {
            Some(Ok(block)) => {
                if block.data.len() < block.planned {
                    // End of file: reads started after it found nothing.
                    self.end();
                } else {
                    // Keep `depth` in flight while the caller works on this block. A
                    // refusal here is met again, and reported, by the next call.
                    let _ = self.start_reads(1);
                }
                Some(Ok(block))
            }
            Some(Err(err)) => {
                self.end();
                Some(Err(err))
            }
            None => {
                self.end();
                None
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the job channel stops the workers once the reads in it are done.
        self.jobs = None;
        self.end();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
