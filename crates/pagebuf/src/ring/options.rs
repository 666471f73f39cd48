//! How an [`IoRing`](super::IoRing) is built: [`RingOptions`] and the [`Engine`] choice.

use crate::pool::FramePool;

/// Which engine issues a ring's transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Engine {
    /// io_uring where it works, the worker threads where it is refused (the ring's
    /// [`note`](super::IoRing::note) says why).
    #[default]
    Auto,
    /// io_uring, or [`Error::Unsupported`](crate::Error::Unsupported) with the reason.
    Uring,
    /// Positioned reads and writes on a small pool of worker threads.
    Threads,
}

/// When the kernel posts an io_uring transfer's completion where the ring's threads see
/// it. The kernel finishes a read or write in the context of the thread that submitted
/// it; this says whether it may interrupt that thread to do so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Posting {
    /// At once: a submitting thread that is running is interrupted (an inter-processor
    /// interrupt) to post its completions. Right for rings whose threads submit and then
    /// compute for long stretches without system calls while others wait for those
    /// transfers.
    #[default]
    Interrupt,
    /// When the submitting thread next enters the kernel (any system call, a wait, or at
    /// the latest the next timer tick), without interrupts
    /// (`IORING_SETUP_COOP_TASKRUN`): less CPU per transfer and more transfers per
    /// second from a thread that submits and waits in a loop, as a page cache's reader
    /// or a benchmark does (BENCHMARKS.md). [`Pending::is_ready`](super::Pending::is_ready)
    /// enters the kernel when the ring says completions wait to be posted, so polling
    /// still sees them. Kernels before 5.19 lack it: the ring then interrupts, and its
    /// [`note`](super::IoRing::note) says so.
    Cooperative,
}

/// The most submission entries a ring takes (the kernel's own cap).
pub const MAX_ENTRIES: u32 = 32768;

/// How an [`IoRing`](super::IoRing) is built; methods take and return `Self`.
///
/// ```
/// use pagebuf::ring::{Engine, RingOptions};
/// use pagebuf::{FramePool, Framing, IoRing};
///
/// let pool = FramePool::new(Framing::new(64 * 1024, 16))?;
/// let ring = IoRing::with_options(RingOptions::default().entries(64).register(&pool))?;
/// assert!(matches!(ring.engine(), Engine::Uring | Engine::Threads));
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RingOptions {
    pub(crate) entries: u32,
    pub(crate) engine: Engine,
    pub(crate) pools: Vec<FramePool>,
    pub(crate) workers: usize,
    pub(crate) posting: Posting,
}

impl Default for RingOptions {
    fn default() -> RingOptions {
        RingOptions {
            entries: 256,
            engine: Engine::Auto,
            pools: Vec::new(),
            workers: 4,
            posting: Posting::Interrupt,
        }
    }
}

impl RingOptions {
    /// Submission entries, 1 to [`MAX_ENTRIES`] (default 256; the kernel rounds up to a
    /// power of two). More transfers than this may be in flight: a full queue is
    /// submitted and refilled.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// The engine (default [`Engine::Auto`]).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Registers `pool`'s memory with the kernel as fixed buffers (io_uring only):
    /// transfers into or from its frames then skip pinning pages on every call. The ring
    /// keeps the pool alive as long as it lives. Registering the same pool twice is
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn register(mut self, pool: &FramePool) -> Self {
        self.pools.push(pool.clone());
        self
    }

    /// Worker threads of the thread engine, 1 to
    /// [`caps::MAX_DEPTH`](crate::caps::MAX_DEPTH) (default 4): how many of its
    /// transfers run at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// When io_uring completions are posted (default [`Posting::Interrupt`]; the thread
    /// engine has nothing to post).
    pub fn posting(mut self, posting: Posting) -> Self {
        self.posting = posting;
        self
    }

    /// The entries asked for.
    pub fn entries_value(&self) -> u32 {
        self.entries
    }

    /// The engine asked for.
    pub fn engine_value(&self) -> Engine {
        self.engine
    }

    /// The posting asked for.
    pub fn posting_value(&self) -> Posting {
        self.posting
    }
}
