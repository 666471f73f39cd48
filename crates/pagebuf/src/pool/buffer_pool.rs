//! `BufferPool`: page-aligned buffers of any size, recycled in size classes under a byte
//! budget. Where `FramePool` is one size and lock-free, this serves the mixed sizes of
//! a writer or reader (small audio packets next to 3 MiB video frames) from one bounded
//! amount of memory.
//!
//! * **Size classes.** A request is rounded up to whole pages, then to one of four
//!   steps per doubling (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... pages), so at
//!   most a quarter of a buffer is slack. Classes are made on demand.
//! * **Budget.** Bytes out plus bytes cached never exceed the budget. A request that
//!   finds no cached buffer of its class maps a new one if the budget allows, else
//!   evicts cached buffers of other classes (largest first) to make room, else waits
//!   (or fails, in the try form) until buffers come back.
//! * **Blocks.** Each buffer is its own `Region` with its control block (`PooledBlock`)
//!   boxed beside it; both are reused together, so a recycled buffer costs no system
//!   call and no allocation. A block holds an `Arc` to the pool only while it is out:
//!   cached blocks are owned by the pool, with no cycle.
//!
//! One mutex guards the classes: a `BufferPool` is for buffers that live for a
//! while (samples, read blocks), where the lock is noise next to the work; the
//! per-frame hot path is `FramePool`.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::alloc::BufferAllocator;
use crate::buffer::header::{Header, MemoryOrigin};
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::memory::{page_size, Region, RegionOptions};

/// Statistics of one size class of a [`BufferPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Bytes of each buffer of the class.
    pub size: usize,
    /// Buffers of the class out now.
    pub out: usize,
    /// Buffers of the class cached, ready for reuse.
    pub cached: usize,
    /// Requests served from the cache.
    pub reused: u64,
    /// Requests that mapped a new buffer.
    pub mapped: u64,
    /// Cached buffers unmapped to make room for another class.
    pub evicted: u64,
}

/// Statistics of a [`BufferPool`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferPoolStats {
    /// The byte budget.
    pub budget: usize,
    /// Bytes in buffers out now.
    pub bytes_out: usize,
    /// Bytes in cached buffers.
    pub bytes_cached: usize,
    /// Requests that found the budget spent (try forms that failed, and waits).
    pub exhausted: u64,
    /// Requests that waited for buffers to come back.
    pub waits: u64,
    /// Whether the pool was closed.
    pub closed: bool,
    /// Each size class, smallest first.
    pub classes: Vec<ClassStats>,
}

impl BufferPoolStats {
    /// Bytes of buffers mapped over the pool's life, each mapping counted once: with no
    /// evictions, the most memory the pool ever held.
    pub fn mapped_bytes(&self) -> usize {
        self.classes
            .iter()
            .map(|c| (c.mapped as usize).saturating_mul(c.size))
            .fold(0, usize::saturating_add)
    }
}

/// A buffer's control block; `header` must stay first (the release function casts).
#[repr(C)]
struct PooledBlock {
    header: Header,
    region: Region,
    class: usize,
    /// The pool, while the block is out.
    pool: Option<Arc<Shared>>,
}

#[derive(Default)]
struct Class {
    // Boxed on purpose: a block leaves the cache as the `Box` whose address becomes the
    // buffer's header pointer, so reuse costs no allocation.
    #[allow(clippy::vec_box)]
    cached: Vec<Box<PooledBlock>>,
    stats: ClassStats,
}

#[derive(Default)]
struct State {
    classes: BTreeMap<usize, Class>,
    bytes_out: usize,
    bytes_cached: usize,
    exhausted: u64,
    waits: u64,
    closed: bool,
}

struct Shared {
    budget: usize,
    options: RegionOptions,
    state: Mutex<State>,
    returned: Condvar,
}

/// Recycles page-aligned buffers in size classes under a byte budget; the default
/// allocator of the sample writer and reader.
///
/// ```
/// use pagebuf::{BufferAllocator, BufferPool};
///
/// let pool = BufferPool::new(8 << 20)?;                 // 8 MiB in all
/// let video = pool.allocate(3 << 20)?;                  // page-aligned, max_len exact
/// let audio = pool.allocate(4000)?;
/// assert_eq!(video.max_len(), 3 << 20);
/// assert_eq!(video.as_ptr() as usize % pagebuf::page_size(), 0);
/// assert!(pool.try_allocate(6 << 20)?.is_none());       // budget spent: no wait
/// drop((video, audio));
/// let again = pool.allocate(3 << 20)?;                  // reused, no new mapping
/// assert_eq!(pool.stats().classes.iter().map(|c| c.reused).sum::<u64>(), 1);
/// # drop(again);
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<Shared>,
}

/// The size class (in bytes) a request of `size` bytes is served from.
pub(crate) fn class_size(size: usize) -> Option<usize> {
    let page = page_size();
    let pages = size.checked_add(page - 1)? / page;
    let class_pages = if pages <= 4 {
        pages.max(1)
    } else {
        // (2^(top-1), 2^top] in four steps of 2^(top-3) pages.
        let top = usize::BITS - (pages - 1).leading_zeros();
        let step = 1usize << (top - 3);
        pages.checked_next_multiple_of(step)?
    };
    class_pages.checked_mul(page)
}

impl BufferPool {
    /// A pool that holds at most `budget_bytes` in buffers, out and cached together.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the budget is less than one page.
    pub fn new(budget_bytes: usize) -> Result<BufferPool> {
        BufferPool::with_options(budget_bytes, RegionOptions::default())
    }

    /// A pool with room for `count` buffers of `size` bytes out at once: its budget is
    /// counted in the size classes buffers are really served from (a buffer below a
    /// page still takes a page).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `what` if the budget overflows.
    pub(crate) fn with_room_for(count: usize, size: usize, what: &str) -> Result<BufferPool> {
        let budget = class_size(size.max(1))
            .and_then(|class| class.checked_mul(count.max(1)))
            .filter(|&budget| budget <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{what}: {count} buffers of {size} bytes do not fit in memory; ask for \
                     fewer or smaller"
                ))
            })?;
        BufferPool::new(budget)
    }

    /// As [`new`](Self::new), mapping buffers with `options` (huge pages, `mlock`,
    /// pre-faulting).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_options(budget_bytes: usize, options: RegionOptions) -> Result<BufferPool> {
        if budget_bytes < page_size() {
            return Err(Error::InvalidArgument(format!(
                "budget of {budget_bytes} bytes is less than one page ({}); give the pool \
                 at least one page",
                page_size()
            )));
        }
        Ok(BufferPool {
            shared: Arc::new(Shared {
                budget: budget_bytes,
                options,
                state: Mutex::new(State::default()),
                returned: Condvar::new(),
            }),
        })
    }

    /// A buffer of `size` bytes if the budget allows one now; `Ok(None)` if not.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 or a size whose class exceeds the whole budget;
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::OutOfMemory`] if the
    /// kernel refuses a mapping.
    pub fn try_allocate(&self, size: usize) -> Result<Option<BufferMut>> {
        let class = self.class_for(size)?;
        let mut state = self.shared.lock();
        let taken = self.take(&mut state, size, class)?;
        if taken.is_none() {
            state.exhausted += 1;
        }
        Ok(taken)
    }

    /// A buffer of `size` bytes, waiting for buffers to come back while the budget is
    /// spent.
    ///
    /// # Errors
    /// As [`try_allocate`](Self::try_allocate); `Closed` also when the pool is closed
    /// while waiting.
    pub fn allocate(&self, size: usize) -> Result<BufferMut> {
        self.allocate_until(size, None)
    }

    /// As [`allocate`](Self::allocate), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the time runs out; otherwise as `allocate`.
    pub fn allocate_timeout(&self, size: usize, timeout: Duration) -> Result<BufferMut> {
        self.allocate_until(size, Some((Instant::now(), timeout)))
    }

    fn allocate_until(&self, size: usize, limit: Option<(Instant, Duration)>) -> Result<BufferMut> {
        let class = self.class_for(size)?;
        let mut state = self.shared.lock();
        let mut counted = false;
        loop {
            if let Some(buf) = self.take(&mut state, size, class)? {
                return Ok(buf);
            }
            if !counted {
                state.exhausted += 1;
                state.waits += 1;
                counted = true;
            }
            state = match limit {
                None => self
                    .shared
                    .returned
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some((start, timeout)) => {
                    let left = timeout.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            what: format!("{class} bytes of the buffer pool's budget"),
                            waited: timeout,
                        });
                    }
                    self.shared
                        .returned
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Closes the pool: waiters wake with [`Error::Closed`], later requests fail, and
    /// cached buffers are unmapped; buffers out stay valid and are unmapped on return.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        Self::evict(&mut state, usize::MAX, None);
        drop(state);
        self.shared.returned.notify_all();
    }

    /// Unmaps every cached buffer, giving the memory back to the system; returns the
    /// bytes freed.
    pub fn trim(&self) -> usize {
        let mut state = self.shared.lock();
        let before = state.bytes_cached;
        Self::evict(&mut state, usize::MAX, None);
        before
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.shared.budget
    }

    /// Counts per class and in all.
    pub fn stats(&self) -> BufferPoolStats {
        let state = self.shared.lock();
        BufferPoolStats {
            budget: self.shared.budget,
            bytes_out: state.bytes_out,
            bytes_cached: state.bytes_cached,
            exhausted: state.exhausted,
            waits: state.waits,
            closed: state.closed,
            classes: state
                .classes
                .values()
                .map(|c| ClassStats {
                    cached: c.cached.len(),
                    ..c.stats
                })
                .collect(),
        }
    }

    fn class_for(&self, size: usize) -> Result<usize> {
        if size == 0 {
            return Err(Error::zero_size("size"));
        }
        match class_size(size) {
            Some(class) if class <= self.shared.budget => Ok(class),
            _ => Err(Error::InvalidArgument(format!(
                "a buffer of {size} bytes does not fit this pool's whole budget of {} bytes; \
                 ask for less or make a pool with a larger budget",
                self.shared.budget
            ))),
        }
    }

    /// Serves `size` from class `class` if the budget allows now.
    fn take(&self, state: &mut State, size: usize, class: usize) -> Result<Option<BufferMut>> {
        if state.closed {
            return Err(Error::Closed);
        }
        let cached = state
            .classes
            .get_mut(&class)
            .and_then(|c| c.cached.pop().map(|block| (block, &mut c.stats)));
        let block = match cached {
            Some((block, stats)) => {
                stats.reused += 1;
                state.bytes_cached -= class;
                block
            }
            None => {
                let room = self.shared.budget - state.bytes_out - state.bytes_cached;
                if room < class {
                    let free_after_eviction = self.shared.budget - state.bytes_out;
                    if free_after_eviction < class {
                        return Ok(None);
                    }
                    Self::evict(state, class - room, Some(class));
                }
                let region = Region::map(class, self.shared.options)?;
                let header = Header::new(
                    release_pooled,
                    region.non_null(),
                    class,
                    region.granule(),
                    MemoryOrigin::BufferPool,
                    true,
                );
                state.classes.entry(class).or_default().stats.mapped += 1;
                Box::new(PooledBlock {
                    header,
                    region,
                    class,
                    pool: None,
                })
            }
        };
        let mut block = block;
        block.pool = Some(Arc::clone(&self.shared));
        state.bytes_out += class;
        let entry = state.classes.entry(class).or_default();
        entry.stats.size = class;
        entry.stats.out += 1;
        let header = NonNull::from(Box::leak(block)).cast::<Header>();
        // SAFETY: the block's header has refs == 1 (new, or reset on return), describes
        // `class` initialized bytes of its own region, and the block is now owned only
        // by the buffer we return.
        let mut buf = unsafe { BufferMut::from_header(header) };
        buf.limit_max_len(size);
        Ok(Some(buf))
    }

    /// Unmaps cached buffers, largest first, until `needed` bytes are free, sparing
    /// class `keep`.
    fn evict(state: &mut State, needed: usize, keep: Option<usize>) {
        let mut freed = 0;
        let State {
            classes,
            bytes_cached,
            ..
        } = state;
        for (&size, class) in classes.iter_mut().rev() {
            if Some(size) == keep {
                continue;
            }
            while freed < needed {
                let Some(block) = class.cached.pop() else {
                    break;
                };
                drop(block);
                class.stats.evicted += 1;
                *bytes_cached -= size;
                freed += size;
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock completes before any call that could panic, so
        // a poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Release for a pooled buffer: the block goes back to its class (or is unmapped if the
/// pool is closed), and waiters are told.
///
/// # Safety
/// `header` is the header of a `PooledBlock` leaked by `BufferPool::take`, released once.
unsafe fn release_pooled(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` PooledBlock that `take`
    // leaked from a Box; the last view is gone, so we own it again.
    let mut block = unsafe { Box::from_raw(header.cast::<PooledBlock>().as_ptr()) };
    block.header.reset_for_reuse();
    let Some(pool) = block.pool.take() else {
        return; // unreachable: a block out always knows its pool
    };
    {
        let mut state = pool.lock();
        let class = block.class;
        let closed = state.closed;
        state.bytes_out -= class;
        if !closed {
            state.bytes_cached += class;
        }
        let entry = state.classes.entry(class).or_default();
        entry.stats.out -= 1;
        if !closed {
            entry.cached.push(block);
        }
    }
    pool.returned.notify_all();
    // `pool` may be the last reference: dropping it here frees the cached blocks.
}

impl BufferAllocator for BufferPool {
    /// Blocks while the budget is spent, like [`BufferPool::allocate`].
    fn allocate(&self, max_size: usize) -> Result<BufferMut> {
        BufferPool::allocate(self, max_size)
    }

    /// Every pooled buffer is page-aligned: the same as `allocate`.
    fn allocate_page_aligned(&self, max_size: usize) -> Result<BufferMut> {
        BufferPool::allocate(self, max_size)
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stats = self.stats();
        f.debug_struct("BufferPool")
            .field("budget", &stats.budget)
            .field("bytes_out", &stats.bytes_out)
            .field("bytes_cached", &stats.bytes_cached)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_waste_at_most_a_quarter() {
        let page = page_size();
        assert_eq!(class_size(1), Some(page));
        assert_eq!(class_size(page), Some(page));
        assert_eq!(class_size(4 * page + 1), Some(5 * page));
        assert_eq!(class_size(8 * page + 1), Some(10 * page));
        assert_eq!(class_size(16 * page + 1), Some(20 * page));
        assert_eq!(class_size(usize::MAX), None);
        for size in (1..2000).map(|i| i * 7919) {
            let class = class_size(size).unwrap();
            assert!(class >= size && class % page == 0);
            assert!(class <= (size + page) * 5 / 4 + page, "{size} -> {class}");
        }
    }
}
