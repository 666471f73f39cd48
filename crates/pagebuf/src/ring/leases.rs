//! The leases an io_uring ring holds: for every shared pool whose frames it has
//! transferred on, the pool attachment's lease file (`shared/lease.rs`), registered
//! in the ring's file table before the first such transfer goes in.
//!
//! Why: a process may die with transfers in flight, and io_uring lets it go before
//! they complete. The ring's file table outlives the process until its last transfer
//! is done, so a lease registered there keeps the dead process's frames from being
//! reclaimed (and reused) while the kernel may still write into them.
//!
//! A slot is given up only when its lease is gone (the attachment dropped, so no
//! frame of it can be in a transfer of this ring), and reused for the next lease.
//! Weak references keep that test sound: a lease's address is never reused while the
//! table still names it.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};

use io_uring::IoUring;

use crate::error::{Error, Result};
use crate::shared::Lease;

/// Leases one ring can hold at once (distinct shared pools it transfers on).
const SLOTS: u32 = 64;

/// What a ring's file table holds.
#[derive(Default)]
pub(crate) struct Leases {
    table: Mutex<Table>,
}

#[derive(Default)]
enum Table {
    /// No transfer on a shared frame yet: no file table registered.
    #[default]
    Unregistered,
    /// The kernel refused a file table: transfers on shared frames fail, saying why.
    Refused(String),
    /// Registered, `SLOTS` long; each entry the lease its slot holds, if any.
    Registered(Vec<Option<Weak<Lease>>>),
}

impl Leases {
    /// Makes sure `ring` holds `lease` before a transfer on its memory is pushed;
    /// `Err` if it cannot, and the transfer must not go in.
    pub(crate) fn hold(&self, ring: &IoUring, lease: &Arc<Lease>) -> Result<()> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Table::Unregistered = *table {
            *table = match ring.submitter().register_files_sparse(SLOTS) {
                Ok(()) => Table::Registered(vec![None; SLOTS as usize]),
                Err(e) => Table::Refused(format!(
                    "this io_uring ring cannot hold a shared pool's lease: the kernel refused \
                     it a file table of {SLOTS} ({e}; sparse tables need Linux 5.19, and \
                     the table may not exceed RLIMIT_NOFILE). Raise the limit, or transfer \
                     on shared frames with a ring of Engine::Threads"
                )),
            };
        }
        let slots = match &mut *table {
            Table::Registered(slots) => slots,
            Table::Refused(why) => return Err(Error::Unsupported(why.clone())),
            Table::Unregistered => unreachable!("registered or refused just above"),
        };
        let wanted = Arc::downgrade(lease);
        if slots.iter().flatten().any(|held| held.ptr_eq(&wanted)) {
            return Ok(());
        }
        // A free slot, or one whose lease is gone.
        let Some(index) = slots
            .iter()
            .position(|slot| slot.as_ref().is_none_or(|held| held.strong_count() == 0))
        else {
            return Err(Error::InvalidRequest(format!(
                "this ring transfers on the frames of {SLOTS} shared pool attachments that \
                 are all still alive, the most one ring holds the leases of; use another \
                 IoRing for the frames of further pools"
            )));
        };
        let fd = lease.file().as_raw_fd();
        ring.submitter()
            .register_files_update(index as u32, &[fd])
            .map_err(|e| {
                Error::io(
                    "registering a shared pool's lease with the io_uring ring",
                    e,
                )
            })?;
        slots[index] = Some(wanted);
        Ok(())
    }
}
