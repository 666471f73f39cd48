//! [`BlockSource`]: reads along a plan, `depth` in flight on an `IoRing`, delivered in
//! plan order.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::alloc::BufferAllocator;
use crate::buffer::{Buffer, BufferMut};
use crate::caps::MAX_DEPTH;
use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::pool::BufferPool;
use crate::ring::{IoRing, Pending};

/// Where the k-th read of a [`BlockSource`] goes: `(offset, len)`, or `None` past the
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
    /// The bytes read: fewer than the plan asked for only at end of file.
    pub(crate) data: Buffer,
    /// The file offset of `data[0]`.
    pub(crate) offset: u64,
}

/// Where a [`BlockSource`] gets its buffers, and whether it may wait for them.
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
    /// A buffer of `len` bytes, or `Ok(None)` for "not now" (own pool, `coming_back`
    /// buffers will be).
    pub(crate) fn take(&self, len: usize, coming_back: usize) -> Result<Option<BufferMut>> {
        match self {
            ReadMemory::Wait(alloc) => alloc.allocate_page_aligned(len).map(Some),
            ReadMemory::Own { pool, option } => match pool.try_allocate(len) {
                Ok(Some(buf)) => Ok(Some(buf)),
                Ok(None) if coming_back > 0 => Ok(None),
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

/// A read on the ring, and what the plan asked of it.
struct InFlight {
    read: Pending<BufferMut>,
    offset: u64,
    planned: usize,
}

/// Reads along a [`ReadPlan`], up to `depth` in flight on the ring, delivered in plan
/// order. The consumer allocates each read's buffer (see [`ReadMemory`]); the reads are
/// `Pending`s waited for oldest first (a thread waiting for one reaps completions
/// itself on io_uring: no thread switch). A short read (end of file) or an error ends
/// the plan; reads still in flight then are dropped, their buffers going home when
/// the kernel is done with them.
pub(crate) struct BlockSource {
    file: Arc<DirectFile>,
    ring: IoRing,
    memory: ReadMemory,
    plan: ReadPlan,
    depth: usize,
    /// The plan index of the next read to start.
    next: u64,
    /// Reads started and not yet delivered, oldest first.
    in_flight: VecDeque<InFlight>,
    /// No read is started after the plan ended, a short read or an error.
    ended: bool,
}

impl BlockSource {
    /// Reads `file` along `plan`, `depth` (1 to [`MAX_DEPTH`]) reads in flight on `ring`.
    pub(crate) fn new(
        file: Arc<DirectFile>,
        ring: IoRing,
        memory: ReadMemory,
        depth: usize,
        plan: ReadPlan,
    ) -> BlockSource {
        let depth = depth.clamp(1, MAX_DEPTH);
        BlockSource {
            file,
            ring,
            memory,
            plan,
            depth,
            next: 0,
            in_flight: VecDeque::with_capacity(depth),
            ended: false,
        }
    }

    /// The file read.
    pub(crate) fn file(&self) -> &Arc<DirectFile> {
        &self.file
    }

    /// Starts reads until `depth` are in flight, the plan ends, or (own pool) memory is
    /// not free now. `handed_out` counts blocks the consumer has just been given: while
    /// it holds one, an own pool with nothing free means "not yet", not "never".
    fn start_reads(&mut self, handed_out: usize) -> Result<()> {
        while !self.ended && self.in_flight.len() < self.depth {
            let Some((offset, planned)) = (self.plan)(self.next) else {
                self.ended = true;
                break;
            };
            let coming_back = self.in_flight.len() + handed_out;
            let Some(buf) = self.memory.take(planned, coming_back)? else {
                break;
            };
            let read = self.ring.read_at(&self.file, buf, offset);
            self.in_flight.push_back(InFlight {
                read,
                offset,
                planned,
            });
            self.next += 1;
        }
        Ok(())
    }

    /// Stops: no more reads are started or delivered (those in flight are dropped:
    /// their buffers go home when the kernel is done with them).
    fn end(&mut self) {
        self.ended = true;
        self.in_flight.clear();
    }

    /// The next read in plan order; `None` after the plan, a short read or an error.
    pub(crate) fn next_block(&mut self) -> Option<Result<ReadBlock>> {
        if let Err(err) = self.start_reads(0) {
            self.end();
            return Some(Err(err));
        }
        let InFlight {
            read,
            offset,
            planned,
        } = self.in_flight.pop_front()?;
        match read.wait() {
            Ok(buf) => {
                let block = ReadBlock {
                    data: buf.freeze(),
                    offset,
                };
                if block.data.len() < planned {
                    // End of file: reads started after it find nothing.
                    self.end();
                } else {
                    // Keep `depth` in flight while the caller works on this block. A
                    // refusal here is met again, and reported, by the next call.
                    let _ = self.start_reads(1);
                }
                Some(Ok(block))
            }
            Err(err) => {
                self.end();
                Some(Err(err))
            }
        }
    }
}
