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
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
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

/// Statistics of a [`BufferPool`]. The fields it shares with
/// [`PoolStats`](crate::pool::PoolStats) mean the same: `in_use`, `high_water`,
/// `allocations`, `exhausted`, `waits`, `waiting`, `closed` count buffers where a
/// `FramePool` counts frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferPoolStats {
    /// The byte budget.
    pub budget: usize,
    /// Bytes in buffers out now.
    pub bytes_out: usize,
    /// Bytes in cached buffers.
    pub bytes_cached: usize,
    /// Buffers out now.
    pub in_use: usize,
    /// The most buffers that were out at once.
    pub high_water: usize,
    /// Buffers handed out so far.
    pub allocations: u64,
    /// Times an allocation found the budget spent (try forms that found nothing, and
    /// waits).
    pub exhausted: u64,
    /// Allocations that had to wait for buffers to come back.
    pub waits: u64,
    /// Threads and tasks waiting now.
    pub waiting: usize,
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
    /// Bytes out, and bytes reserved for blocks being mapped outside the lock.
    bytes_out: usize,
    bytes_cached: usize,
    in_use: usize,
    high_water: usize,
    allocations: u64,
    exhausted: u64,
    waits: u64,
    /// Threads blocked in `allocate`/`allocate_timeout` now.
    sleepers: usize,
    /// Tasks waiting in `allocate_async`, woken (all) when buffers come back.
    tasks: Vec<(u64, Waker)>,
    next_task: u64,
    closed: bool,
}

impl State {
    /// Wakes every waiting task (they retry; the condvar wakes the threads).
    fn wake_tasks(&mut self) -> Vec<Waker> {
        self.tasks.drain(..).map(|(_, waker)| waker).collect()
    }
}

struct Shared {
    budget: usize,
    options: RegionOptions,
    state: Mutex<State>,
    returned: Condvar,
}

/// How the lock decided to serve a request; the slow part (mapping, unmapping) is done
/// after it is released.
enum Grant {
    /// A cached block of the class.
    Cached(Box<PooledBlock>),
    /// Room reserved in the budget for a new block, to map outside the lock; `evicted`
    /// are cached blocks of other classes given up to make that room, to unmap outside
    /// it too.
    Reserved { evicted: Vec<PooledBlock> },
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

    /// A buffer of `size` bytes if the budget allows one now; `Ok(None)` if not, or if the
    /// pool is closed (as [`FramePool::try_allocate`](crate::FramePool::try_allocate):
    /// nothing now; [`is_closed`](Self::is_closed) says which). Never waits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 or a size whose class exceeds the whole budget;
    /// [`Error::OutOfMemory`] if the kernel refuses a mapping.
    pub fn try_allocate(&self, size: usize) -> Result<Option<BufferMut>> {
        let class = self.class_for(size)?;
        let grant = {
            let mut state = self.shared.lock();
            if state.closed {
                return Ok(None);
            }
            let grant = self.grant(&mut state, class);
            if grant.is_none() {
                state.exhausted += 1;
            }
            grant
        };
        grant
            .map(|grant| self.hand_out(grant, size, class))
            .transpose()
    }

    /// A buffer of `size` bytes, waiting for buffers to come back while the budget is
    /// spent.
    ///
    /// # Errors
    /// As [`try_allocate`](Self::try_allocate); [`Error::Closed`] if the pool is or gets
    /// closed before the buffer is had.
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

    /// A future that resolves to a buffer of `size` bytes once the budget allows (or to
    /// [`Error::Closed`]), with any executor. Waiting tasks are all woken when buffers
    /// come back and try again (no order among them); dropping the future gives up its
    /// place without holding anything.
    ///
    /// ```
    /// use pagebuf::BufferPool;
    ///
    /// let pool = BufferPool::new(1 << 20)?;
    /// let held = pool.allocate(1 << 20)?;
    /// let later = pool.allocate_async(4096);   // nothing happens until polled
    /// drop(held);                               // the budget is free again
    /// # let buf = futures_lite_block_on(later)?;
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
    /// # }
    /// assert_eq!(buf.max_len(), 4096);
    /// # Ok::<(), pagebuf::Error>(())
    /// ```
    pub fn allocate_async(&self, size: usize) -> BufferFuture {
        BufferFuture {
            pool: self.clone(),
            size,
            task: None,
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    fn allocate_until(&self, size: usize, limit: Option<(Instant, Duration)>) -> Result<BufferMut> {
        let class = self.class_for(size)?;
        let mut state = self.shared.lock();
        let mut counted = false;
        let grant = loop {
            if state.closed {
                return Err(Error::Closed);
            }
            if let Some(grant) = self.grant(&mut state, class) {
                break grant;
            }
            if !counted {
                state.exhausted += 1;
                state.waits += 1;
                counted = true;
            }
            state.sleepers += 1;
            let woken = match limit {
                None => Ok(self
                    .shared
                    .returned
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner())),
                Some((start, timeout)) => {
                    let left = timeout.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        Err(state)
                    } else {
                        Ok(self
                            .shared
                            .returned
                            .wait_timeout(state, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0)
                    }
                }
            };
            state = match woken {
                Ok(state) => state,
                Err(mut state) => {
                    state.sleepers -= 1;
                    return Err(Error::Timeout {
                        what: format!("{class} bytes of the buffer pool's budget"),
                        waited: limit.map_or(Duration::ZERO, |(_, timeout)| timeout),
                    });
                }
            };
            state.sleepers -= 1;
        };
        drop(state);
        self.hand_out(grant, size, class)
    }

    /// Closes the pool: waiters wake with [`Error::Closed`], later requests fail, and
    /// cached buffers are unmapped; buffers out stay valid and are unmapped on return.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        let evicted = Self::evict(&mut state, usize::MAX, None);
        let tasks = state.wake_tasks();
        drop(state);
        drop(evicted); // unmapped outside the lock
        self.shared.returned.notify_all();
        tasks.into_iter().for_each(Waker::wake);
    }

    /// Unmaps every cached buffer, giving the memory back to the system; returns the
    /// bytes freed.
    pub fn trim(&self) -> usize {
        let mut state = self.shared.lock();
        let before = state.bytes_cached;
        let evicted = Self::evict(&mut state, usize::MAX, None);
        drop(state);
        drop(evicted); // unmapped outside the lock
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
            in_use: state.in_use,
            high_water: state.high_water,
            allocations: state.allocations,
            exhausted: state.exhausted,
            waits: state.waits,
            waiting: state.sleepers + state.tasks.len(),
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

    /// Decides, under the lock, how a request of class `class` is served: a cached
    /// block, or room reserved for a new one (evicting cached blocks of other classes if
    /// need be), or `None`: the budget is spent. The buffer is counted out from here.
    fn grant(&self, state: &mut State, class: usize) -> Option<Grant> {
        let cached = state.classes.get_mut(&class).and_then(|c| c.cached.pop());
        let grant = match cached {
            Some(block) => {
                state.bytes_cached -= class;
                Grant::Cached(block)
            }
            None => {
                let room = self.shared.budget - state.bytes_out - state.bytes_cached;
                let evicted = if room < class {
                    let free_after_eviction = self.shared.budget - state.bytes_out;
                    if free_after_eviction < class {
                        return None;
                    }
                    Self::evict(state, class - room, Some(class))
                } else {
                    Vec::new()
                };
                Grant::Reserved { evicted }
            }
        };
        state.bytes_out += class;
        state.in_use += 1;
        state.high_water = state.high_water.max(state.in_use);
        state.allocations += 1;
        let entry = state.classes.entry(class).or_default();
        entry.stats.size = class;
        entry.stats.out += 1;
        match &grant {
            Grant::Cached(_) => entry.stats.reused += 1,
            Grant::Reserved { .. } => entry.stats.mapped += 1,
        }
        Some(grant)
    }

    /// Turns a grant into a buffer of `size` bytes, outside the lock: evicted blocks
    /// unmapped, a reserved block mapped (a refused mapping gives its reservation back).
    fn hand_out(&self, grant: Grant, size: usize, class: usize) -> Result<BufferMut> {
        let mut block = match grant {
            Grant::Cached(block) => block,
            Grant::Reserved { evicted } => {
                drop(evicted);
                #[cfg(test)]
                tests::before_map();
                match Region::map(class, self.shared.options) {
                    Ok(region) => Box::new(PooledBlock {
                        header: Header::new(
                            release_pooled,
                            region.non_null(),
                            class,
                            region.granule(),
                            MemoryOrigin::BufferPool,
                            true,
                        ),
                        region,
                        class,
                        pool: None,
                    }),
                    Err(err) => {
                        let mut state = self.shared.lock();
                        state.bytes_out -= class;
                        state.in_use -= 1;
                        state.allocations -= 1;
                        let entry = state.classes.entry(class).or_default();
                        entry.stats.out -= 1;
                        entry.stats.mapped -= 1;
                        let tasks = state.wake_tasks();
                        drop(state);
                        self.shared.returned.notify_all();
                        tasks.into_iter().for_each(Waker::wake);
                        return Err(err);
                    }
                }
            }
        };
        block.pool = Some(Arc::clone(&self.shared));
        let header = NonNull::from(Box::leak(block)).cast::<Header>();
        // SAFETY: the block's header has refs == 1 (new, or left at 1 by its last
        // release), describes `class` initialized bytes of its own region, and the block
        // is now owned only by the buffer we return.
        let mut buf = unsafe { BufferMut::from_header(header) };
        buf.limit_max_len(size);
        Ok(buf)
    }

    /// Takes cached buffers out of the cache, largest first, until `needed` bytes are
    /// free, sparing class `keep`; the caller unmaps them (drops them) once it has let
    /// go of the lock.
    fn evict(state: &mut State, needed: usize, keep: Option<usize>) -> Vec<PooledBlock> {
        let mut freed = 0;
        let mut evicted = Vec::new();
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
                evicted.push(*block);
                class.stats.evicted += 1;
                *bytes_cached -= size;
                freed += size;
            }
        }
        evicted
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
    let Some(pool) = block.pool.take() else {
        return; // unreachable: a block out always knows its pool
    };
    let tasks = {
        let mut state = pool.lock();
        let class = block.class;
        let closed = state.closed;
        state.bytes_out -= class;
        state.in_use -= 1;
        if !closed {
            state.bytes_cached += class;
        }
        let entry = state.classes.entry(class).or_default();
        entry.stats.out -= 1;
        if !closed {
            entry.cached.push(block);
        }
        state.wake_tasks()
    };
    // A block of a closed pool (not cached) is unmapped here, outside the lock.
    pool.returned.notify_all();
    tasks.into_iter().for_each(Waker::wake);
    // `pool` may be the last reference: dropping it here frees the cached blocks.
}

/// The future of [`BufferPool::allocate_async`].
#[must_use = "futures do nothing unless polled"]
pub struct BufferFuture {
    pool: BufferPool,
    size: usize,
    /// Its entry among the pool's waiting tasks, once it has waited.
    task: Option<u64>,
}

impl Future for BufferFuture {
    type Output = Result<BufferMut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let class = match this.pool.class_for(this.size) {
            Ok(class) => class,
            Err(err) => return Poll::Ready(Err(err)),
        };
        let grant = {
            let mut state = this.pool.shared.lock();
            if let Some(task) = this.task {
                state.tasks.retain(|(id, _)| *id != task);
            }
            if state.closed {
                this.task = None;
                return Poll::Ready(Err(Error::Closed));
            }
            match this.pool.grant(&mut state, class) {
                None => {
                    let task = match this.task {
                        Some(task) => task,
                        None => {
                            state.exhausted += 1;
                            state.waits += 1;
                            state.next_task += 1;
                            state.next_task
                        }
                    };
                    state.tasks.push((task, cx.waker().clone()));
                    this.task = Some(task);
                    return Poll::Pending;
                }
                Some(grant) => grant,
            }
        };
        this.task = None;
        Poll::Ready(this.pool.hand_out(grant, this.size, class))
    }
}

impl Drop for BufferFuture {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.pool.shared.lock().tasks.retain(|(id, _)| *id != task);
        }
    }
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
    use std::cell::RefCell;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    thread_local! {
        /// Run by `hand_out` on this thread just before it maps a new block: after the
        /// reservation, where the pool's lock must already be let go.
        static BEFORE_MAP: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    pub(super) fn before_map() {
        if let Some(hook) = BEFORE_MAP.with(|hook| hook.borrow_mut().take()) {
            hook();
        }
    }

    #[test]
    fn releases_and_cached_takes_go_on_while_another_thread_maps() {
        let page = page_size();
        let pool = BufferPool::new(64 * page).unwrap();
        let cached = pool.allocate(page).unwrap();
        let out = pool.allocate(page).unwrap();
        drop(cached);
        // The mapper reserves a block of a new class and stops just before mapping it,
        // until told to go on.
        let (mapping, in_mapping) = mpsc::channel();
        let (go, go_on) = mpsc::channel::<()>();
        let mapper = thread::spawn({
            let pool = pool.clone();
            move || {
                BEFORE_MAP.with(|hook| {
                    *hook.borrow_mut() = Some(Box::new(move || {
                        mapping.send(()).unwrap();
                        go_on.recv().unwrap();
                    }))
                });
                pool.allocate(4 * page)
            }
        });
        in_mapping.recv().unwrap();
        // Meanwhile, on a third thread (so that a lock the mapper held would show as a
        // timeout here, not as a test that hangs): a release, a take of the cached
        // block, its release, the statistics.
        let (done, finished) = mpsc::channel();
        let worker = thread::spawn({
            let pool = pool.clone();
            move || {
                drop(out);
                let again = pool.try_allocate(page).unwrap().expect("a cached block");
                drop(again);
                done.send(pool.stats().in_use).unwrap();
            }
        });
        let went_on = finished.recv_timeout(Duration::from_secs(30));
        go.send(()).unwrap();
        let mapped = mapper.join().unwrap().unwrap();
        worker.join().unwrap();
        assert_eq!(
            went_on,
            Ok(1),
            "a release and a take of a cached block waited for another thread's mapping \
             (or the mapper's reservation was not counted in use)"
        );
        assert_eq!(mapped.max_len(), 4 * page);
    }

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
