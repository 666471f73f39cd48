//! `AllocateFuture`: `FramePool::allocate_async`, a future for any executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::frame_pool::FramePool;
use super::wait_queue::Wake;
use super::waiting::Enqueued;
use crate::buffer::BufferMut;
use crate::error::{Error, Result};
use crate::sync::Ordering;

/// The future of [`FramePool::allocate_async`].
#[must_use = "futures do nothing unless polled"]
pub struct AllocateFuture {
    pub(super) pool: FramePool,
    pub(super) waiter: Option<u64>,
}

impl Future for AllocateFuture {
    type Output = Result<BufferMut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = this.pool.shared();
        match this.waiter {
            None => {
                if shared.closed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(Error::Closed));
                }
                if let Some(buf) = this.pool.take_frame() {
                    return Poll::Ready(Ok(buf));
                }
                match shared.enqueue(Wake::Task(cx.waker().clone())) {
                    Ok(Enqueued::Got(buf)) => Poll::Ready(Ok(buf)),
                    Ok(Enqueued::Waiting(id)) => {
                        this.waiter = Some(id);
                        Poll::Pending
                    }
                    Err(err) => Poll::Ready(Err(err)),
                }
            }
            Some(id) => match shared.check(id) {
                Some(outcome) => {
                    this.waiter = None;
                    Poll::Ready(outcome)
                }
                None => {
                    shared.lock_queue().update_waker(id, cx.waker());
                    // A hand-off may have landed between `check` and the update.
                    match shared.check(id) {
                        Some(outcome) => {
                            this.waiter = None;
                            Poll::Ready(outcome)
                        }
                        None => Poll::Pending,
                    }
                }
            },
        }
    }
}

impl Drop for AllocateFuture {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            // A frame handed to us becomes a buffer and is dropped at once, which sends
            // it on to the next waiter or home: no frame and no wake-up is lost.
            drop(self.pool.shared().leave(id));
        }
    }
}
