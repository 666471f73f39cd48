//! [`Pending`]: a transfer in flight, as a `Future` for any runtime and as a blocking
//! `wait()`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::completion::Completions;
use super::op::Finish;
use crate::error::{Error, Result};

/// What a [`Pending`] waits through: its engine's completion table, and how a thread
/// blocks for a transfer (the io_uring engine has it reap completions itself).
pub(crate) trait Drive: Send + Sync {
    /// The table the transfer's slot is in.
    fn completions(&self) -> &Completions;
    /// Blocks until transfer `id` may have completed (a spurious return is fine: the
    /// caller polls again).
    fn block(&self, id: usize);
    /// Hands out completions already posted, without waiting (where completions need
    /// taking: io_uring's queue; worker threads hand theirs out themselves).
    fn reap_ready(&self) {}
}

/// The thread engine's way: the worker that completes the transfer unparks the waiter.
impl Drive for Completions {
    fn completions(&self) -> &Completions {
        self
    }

    fn block(&self, _id: usize) {
        std::thread::park();
    }
}

/// A transfer submitted to an [`IoRing`](super::IoRing): `.await` it on any runtime, or
/// [`wait`](Self::wait) for it on a plain thread.
///
/// The ring owns the transfer's buffer and file until the kernel is done with them.
/// Dropping a `Pending` (or forgetting it) cancels nothing and leaks nothing: the
/// transfer completes, and its buffer then goes back to where it came from.
#[must_use = "a transfer's outcome (and, for reads, the buffer) comes back through its Pending"]
pub struct Pending<T> {
    state: State<T>,
}

enum State<T> {
    /// Decided before any submission (a misaligned request), or already taken.
    Ready(Option<Result<T>>),
    /// Waiting for slot `id`.
    InFlight {
        driver: Arc<dyn Drive>,
        id: usize,
        finish: Finish<T>,
    },
}

impl<T> Pending<T> {
    /// A transfer that never reached the engine.
    pub(crate) fn ready(outcome: Result<T>) -> Pending<T> {
        Pending {
            state: State::Ready(Some(outcome)),
        }
    }

    /// A place for a transfer about to be issued (`IoRing::read_at_batch` fills it in);
    /// one left unfilled reads as already taken.
    pub(crate) fn stand_in() -> Pending<T> {
        Pending {
            state: State::Ready(None),
        }
    }

    /// Whether this is a [`stand_in`](Self::stand_in) not filled in yet.
    pub(crate) fn is_stand_in(&self) -> bool {
        matches!(self.state, State::Ready(None))
    }

    /// A transfer in slot `id`.
    pub(crate) fn in_flight(driver: Arc<dyn Drive>, id: usize, finish: Finish<T>) -> Self {
        Pending {
            state: State::InFlight { driver, id, finish },
        }
    }

    /// Blocks this thread until the transfer is done; its outcome.
    ///
    /// # Errors
    /// The transfer's: [`Error::Misaligned`] before submission, [`Error::Io`] from the
    /// kernel.
    pub fn wait(mut self) -> Result<T> {
        self.wait_in_place()
    }

    /// [`wait`](Self::wait) without giving the `Pending` up: if this unwinds, the
    /// `Pending` is still there to be waited for again (what `IoRing::read_many` needs to
    /// keep borrowed memory until the kernel is done with it, whatever happens).
    pub(crate) fn wait_in_place(&mut self) -> Result<T> {
        loop {
            match &mut self.state {
                State::Ready(outcome) => return outcome.take().unwrap_or_else(taken),
                State::InFlight { driver, id, finish } => {
                    match driver.completions().poll_thread(*id, *finish) {
                        Some(outcome) => {
                            self.state = State::Ready(None);
                            return outcome;
                        }
                        None => driver.block(*id),
                    }
                }
            }
        }
    }

    /// Blocks until some of `pendings` are ready; `ready` then holds their indices, in
    /// order (at least one, unless `pendings` is empty). What a thread with many
    /// transfers in flight calls to take whichever are done first, as fio reaps, instead
    /// of waiting for the oldest while those behind it are in.
    ///
    /// Transfers of one ring are waited for together (on io_uring this thread reaps:
    /// it waits in the kernel for any completion). Where `pendings` span several rings,
    /// the wait is on the ring of the first one in flight, and the others are looked at
    /// each time it returns: when one of that ring's transfers completes (or, on
    /// io_uring, after a second at most).
    ///
    /// ```
    /// use pagebuf::direct::DirectFile;
    /// use pagebuf::ring::Pending;
    /// use pagebuf::{BufferAllocator, IoRing, PageAllocator};
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-wait-some.bin");
    /// std::fs::write(&path, vec![5u8; 4 * 4096])?;
    /// let ring = IoRing::new()?;
    /// let file = DirectFile::open(&path)?;
    /// let mut reads: Vec<_> = (0..4u64)
    ///     .map(|i| {
    ///         let buf = PageAllocator::default().allocate_page_aligned(4096)?;
    ///         Ok(ring.read_at(&file, buf, i * 4096))
    ///     })
    ///     .collect::<pagebuf::Result<_>>()?;
    /// let mut ready = Vec::new();
    /// let mut bytes = 0;
    /// while !reads.is_empty() {
    ///     Pending::wait_some(&reads, &mut ready);
    ///     // Highest index first, so the indices left stay valid.
    ///     for &i in ready.iter().rev() {
    ///         bytes += reads.swap_remove(i).wait()?.len();
    ///     }
    /// }
    /// assert_eq!(bytes, 4 * 4096);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_some(pendings: &[Pending<T>], ready: &mut Vec<usize>) {
        ready.clear();
        loop {
            // The ring waited on: that of the first transfer in flight.
            let mut first: Option<(&Arc<dyn Drive>, usize)> = None;
            for (index, pending) in pendings.iter().enumerate() {
                match &pending.state {
                    State::Ready(_) => ready.push(index),
                    State::InFlight { driver, id, .. } if first.is_none() => {
                        first = Some((driver, *id));
                    }
                    State::InFlight { .. } => {}
                }
            }
            let Some((driver, first_id)) = first else {
                return; // every one is ready (or there are none)
            };
            let completions = driver.completions();
            if completions.forked() {
                // `wait` gives each its error.
                ready.clear();
                ready.extend(0..pendings.len());
                return;
            }
            driver.reap_ready();
            let same_ring = |pending: &Pending<T>| match &pending.state {
                State::InFlight { driver: d, .. } => same_driver(d, driver),
                State::Ready(_) => false,
            };
            let on_this_ring =
                pendings
                    .iter()
                    .enumerate()
                    .filter_map(|(index, pending)| match &pending.state {
                        State::InFlight { driver: d, id, .. } if same_driver(d, driver) => {
                            Some((index, *id))
                        }
                        _ => None,
                    });
            completions.done_or_wait(on_this_ring, ready);
            for (index, pending) in pendings.iter().enumerate() {
                if matches!(pending.state, State::InFlight { .. })
                    && !same_ring(pending)
                    && pending.is_ready()
                {
                    ready.push(index);
                }
            }
            if !ready.is_empty() {
                ready.sort_unstable();
                return;
            }
            driver.block(first_id);
        }
    }

    /// Whether the outcome is in (a `wait` would not block): the transfer was refused
    /// before the kernel, or its completion has been handed out. No system call; what
    /// a thread with many transfers in flight checks to take whichever is done first.
    pub fn is_ready(&self) -> bool {
        match &self.state {
            State::Ready(_) => true,
            State::InFlight { driver, id, .. } => {
                let completions = driver.completions();
                if completions.is_done(*id) {
                    return true;
                }
                // Nobody may be reaping: take what the kernel has posted, then look again.
                driver.reap_ready();
                completions.is_done(*id)
            }
        }
    }
}

/// Whether two transfers are on one ring (their drivers are one object).
fn same_driver(a: &Arc<dyn Drive>, b: &Arc<dyn Drive>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

fn taken<T>() -> Result<T> {
    Err(Error::InvalidRequest(
        "this transfer's outcome was already taken".into(),
    ))
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        match &mut this.state {
            State::Ready(outcome) => Poll::Ready(outcome.take().unwrap_or_else(taken)),
            State::InFlight { driver, id, finish } => {
                match driver.completions().poll_task(*id, *finish, cx.waker()) {
                    Some(outcome) => {
                        this.state = State::Ready(None);
                        Poll::Ready(outcome)
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if let State::InFlight { driver, id, .. } = &self.state {
            driver.completions().abandon(*id);
        }
    }
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "taken",
            State::InFlight { .. } => "in flight",
        };
        f.debug_struct("Pending").field("state", &state).finish()
    }
}

// Unpin: no field is pinned (the slot lives in the table, not in the future).
impl<T> Unpin for Pending<T> {}
