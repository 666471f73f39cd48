//! [`PoolRegistration`]: a pool's memory registered with a ring while it is held.

use super::uring::Lent;

/// A [`FramePool`](crate::FramePool)'s memory registered as fixed buffers of an
/// [`IoRing`](super::IoRing), from [`IoRing::register_pool`](super::IoRing::register_pool)
/// until this is dropped (and then until no buffer of the pool is out).
///
/// Holds the pool's memory, not the ring: a ring closed first takes the registration
/// with it.
#[must_use = "the pool is unregistered when this is dropped"]
pub struct PoolRegistration {
    _lent: Lent,
}

impl PoolRegistration {
    pub(crate) fn new(lent: Lent) -> PoolRegistration {
        PoolRegistration { _lent: lent }
    }
}

impl std::fmt::Debug for PoolRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRegistration").finish_non_exhaustive()
    }
}
