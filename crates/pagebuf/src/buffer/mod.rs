//! Buffers with a length and a fixed maximum length (the reference's `INSSBuffer`).
//!
//! Two types, one memory model:
//!
//! * [`BufferMut`]: uniquely owned and writable. It is what every allocator returns.
//! * [`Buffer`]: shared and immutable, `Clone` (AddRef) and `Drop` (Release).
//!
//! Both are a window `(ptr, len, max_len)` onto memory described by a shared control
//! block (`header.rs`), which counts the windows and knows how to give the memory back
//! to where it came from. [`BufferMut::freeze`] and [`Buffer::try_into_mut`] move
//! between the two without copying; the data pointer never moves.
//!
//! Guarantees, each covered by tests in `tests/buffer_rules.rs` and `tests/buffer_model.rs`:
//!
//! * `size_of::<Buffer>() == size_of::<BufferMut>() == 32`.
//! * Every byte a buffer can expose (`0..max_len`) is initialized.
//! * The memory returns to its origin exactly once, when the last view drops, from any
//!   thread; a pool frame does so without any heap allocation.

mod buffer_mut;
#[cfg(feature = "bytes")]
mod bytes_interop;
mod frozen;
pub(crate) mod header;
mod owner;
mod view;

pub use buffer_mut::BufferMut;
pub use frozen::Buffer;
pub use header::MemoryOrigin;
