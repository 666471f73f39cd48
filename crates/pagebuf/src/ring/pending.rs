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
                        None if driver.completions().forked() => {
                            self.state = State::Ready(None);
                            return Err(Completions::forked_error());
                        }
                        None => driver.block(*id),
                    }
                }
            }
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
                    None if driver.completions().forked() => {
                        this.state = State::Ready(None);
                        Poll::Ready(Err(Completions::forked_error()))
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
