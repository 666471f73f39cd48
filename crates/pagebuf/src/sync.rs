//! The atomics the concurrency cores use, swapped for loom's model-checked ones when
//! built with `RUSTFLAGS="--cfg loom"` (see ARCHITECTURE.md, "Testing the cores").

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicUsize, Ordering};
