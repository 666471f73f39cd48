//! The I/O engine: [`IoRing`], the one place transfers are issued.
//!
//! * **Engines.** [`Engine::Uring`]: io_uring (through the `io-uring` crate), with pool
//!   memory registered as fixed buffers ([`RingOptions::register`] for the ring's life,
//!   [`IoRing::register_pool`] while a [`PoolRegistration`] is held); [`Engine::Threads`]:
//!   positioned reads and writes on a few worker threads. [`Engine::Auto`] (the default)
//!   takes io_uring where it works and the threads where it is refused (the
//!   `kernel.io_uring_disabled` sysctl, a seccomp filter, an old kernel, a missing
//!   operation), and [`IoRing::note`] says which cause and what fixes it.
//! * **Eager submission, owned memory.** `read_at` takes a [`BufferMut`](crate::BufferMut)
//!   and gives it back filled; `write_at` takes a [`Buffer`](crate::Buffer) and drops it
//!   once written. Each returns a [`Pending`]: a `Future` for any runtime, and a blocking
//!   [`Pending::wait`]. Until the kernel is done, the ring owns the buffer and the file
//!   (a `Pending` dropped or forgotten cancels nothing and leaks nothing).
//! * **Random reads into the caller's memory** (a page cache over its own arena), three
//!   ways, by who owns the memory:
//!   - owned: [`IoRing::read_into_part`] reads into a range of a `BufferMut`, owned as
//!     `read_at` owns it, the bytes outside the range untouched;
//!   - borrowed, blocking: [`IoRing::read_into`] and [`IoRing::read_many`] read into
//!     `&mut [u8]` regions (all of a batch in flight at once) and return only once the
//!     kernel is done with every one of them, whatever happens;
//!   - `unsafe`: [`IoRing::read_into_raw`] reads into a pointer and returns a `Pending`;
//!     the caller keeps the memory valid and untouched until the ring is done with it
//!     (its `# Safety` section says how to know: the `Pending` resolved, or
//!     [`RingStats::running`] at 0).
//!
//!   A `Pending` never borrows: a safe form either owns the memory or blocks.
//! * **Checked before the kernel.** Misaligned address, offset or length is
//!   [`Error::Misaligned`](crate::Error::Misaligned) without a system call; a transfer
//!   above the device's largest request goes as one io_uring entry, which the block
//!   layer splits at the device's limits (faster than entries of the device's size:
//!   BENCHMARKS.md), or as pieces of that size on worker threads.
//!
//! ```
//! use pagebuf::direct::DirectFile;
//! use pagebuf::{BufferAllocator, IoRing, PageAllocator};
//!
//! # let path = std::env::temp_dir().join("pagebuf-doc-ring-mod.bin");
//! let ring = IoRing::new()?;
//! let file = DirectFile::create(&path)?;
//! let mut block = PageAllocator::default().allocate_page_aligned(4096)?;
//! block.extend_from_slice(&[1; 4096])?;
//! assert_eq!(ring.write_at(&file, block.freeze(), 0).wait()?, 4096);
//! ring.sync_data(&file).wait()?;
//! let back = ring.read_at(&file, PageAllocator::default().allocate_page_aligned(8192)?, 0);
//! assert_eq!(back.wait()?.len(), 4096); // short: the file ends there
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod completion;
mod fixed;
pub(crate) mod fork;
mod io_ring;
#[cfg(not(loom))]
mod leases;
mod op;
pub(crate) use op::Tearing;
mod options;
mod pending;
mod registration;
mod threads;
mod uring;

pub use io_ring::{IoRing, RingStats};
pub use options::{Engine, Posting, RingOptions, MAX_ENTRIES};
pub use pending::Pending;
pub use registration::PoolRegistration;
