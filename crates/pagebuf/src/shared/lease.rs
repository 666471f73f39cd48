//! A process's lease on its table entry: proof, visible to every process attached to the
//! pool, that nothing of the process can still be transferring into or out of its frames.
//!
//! Death is not enough. io_uring lets a process exit with direct-I/O reads in flight:
//! the kernel finishes them later, into the pinned pages of the frame, which a survivor
//! may have reclaimed and filled by then (measured: a throttled read landed 4 s after
//! its process was reaped). So each attachment opens its own open file description of
//! the memfd and holds an OFD read lock on one byte that names its entry and
//! generation. The kernel releases such a lock only when the last reference to the
//! file description goes: the process's fd table (with its last thread, so a worker
//! thread blocked in a read holds it too), and every io_uring ring the process made
//! hold it for a transfer on a shared frame (`ring::leases`: the ring registers the
//! file, and a ring torn down after its process died lets go of its files only once
//! its last transfer has completed). A survivor reclaims a dead entry's frames only
//! once its byte is unlocked.
//!
//! The byte lies far past the memfd's end (locks may), at
//! `2^62 + slot * 2^48 + generation mod 2^48`: a ring that still holds an old
//! generation's lease never stands in the way of the next process on the entry.
//!
//! A forked child that does not exec shares the file description, and so holds its
//! parent's lease until it exits: the parent's frames then come back late, never early.
//!
//! A transfer on a buffer finds its lease through the frame's header
//! (`frames::lease_of`); one on lent memory (a `&mut [u8]` that may lie in a frame)
//! through the process's list of attached mappings ([`lease_at`]).
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use super::layout::Owner;
use crate::error::{Error, Result};

/// Where the lease bytes start.
const BASE: i64 = 1 << 62;
/// Bits of the generation a lease byte names.
const GENERATION_BITS: u32 = 48;

/// One attachment's lease: its own open file description of the pool's memfd, holding
/// the lock on its entry's byte for as long as anything refers to it.
#[derive(Debug)]
pub(crate) struct Lease {
    file: OwnedFd,
}

impl Lease {
    /// Takes the lease of table entry `owner` (just claimed by this process) on the
    /// pool behind `memfd`.
    pub(super) fn take(memfd: BorrowedFd<'_>, owner: Owner) -> Result<Lease> {
        // A new open file description (not a `dup`, which would share the one a peer
        // may have passed us, lock and all). std opens it close-on-exec.
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        let file: OwnedFd = std::fs::File::open(&path)
            .map_err(|e| {
                Error::io(
                    format!("opening {path} for the pool's lease (mount /proc)"),
                    e,
                )
            })?
            .into();
        let mut lock = byte_of(owner, libc::F_RDLCK);
        fcntl_lock(file.as_fd(), libc::F_OFD_SETLK, &mut lock).map_err(|e| {
            Error::io(
                format!(
                    "locking the lease byte of process slot {} of a shared pool (the kernel \
                     needs open file description locks, Linux 3.15)",
                    owner.slot
                ),
                e,
            )
        })?;
        Ok(Lease { file })
    }

    /// The file description to keep open while a transfer on one of the attachment's
    /// frames may be in flight.
    pub(crate) fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// This process's attachments: each mapping's `[start, end)` and its lease (an entry
/// whose lease is gone is an attachment dropped; its addresses may be mapped again).
/// Written at attach, read by every transfer on lent memory: a read lock, so that
/// threads reading into their own memory do not queue behind each other.
static MAPPINGS: RwLock<Vec<(usize, usize, Weak<Lease>)>> = RwLock::new(Vec::new());
/// `MAPPINGS.len()`, so that a process with no shared pool never takes the lock.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Notes that `len` bytes at `start` are a mapping of the pool `lease` belongs to.
pub(super) fn note_mapping(start: usize, len: usize, lease: &Arc<Lease>) {
    let mut mappings = MAPPINGS.write().unwrap_or_else(|p| p.into_inner());
    mappings.retain(|(_, _, lease)| lease.strong_count() > 0);
    mappings.push((start, start.saturating_add(len), Arc::downgrade(lease)));
    MAPPED.store(mappings.len(), Ordering::Relaxed);
}

/// The lease of the attachment whose mapping holds all `len` bytes at `addr`, if one
/// does.
pub(crate) fn lease_at(addr: usize, len: usize) -> Option<Arc<Lease>> {
    if MAPPED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let end = addr.checked_add(len)?;
    let mappings = MAPPINGS.read().unwrap_or_else(|p| p.into_inner());
    mappings
        .iter()
        .filter(|(start, stop, _)| *start <= addr && end <= *stop)
        .find_map(|(_, _, lease)| lease.upgrade())
}

/// Whether the lease of entry `owner` is still held by anything, asked through any
/// file description of the pool's memfd but the lease's own. An error counts as held:
/// reclaiming a frame the kernel may still write is the one mistake not to make.
pub(super) fn is_held(memfd: BorrowedFd<'_>, owner: Owner) -> bool {
    // F_WRLCK: conflicts with (so reports) any lock on the byte.
    let mut probe = byte_of(owner, libc::F_WRLCK);
    match fcntl_lock(memfd, libc::F_OFD_GETLK, &mut probe) {
        Ok(()) => probe.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => true,
    }
}

/// The lock request for `owner`'s lease byte.
fn byte_of(owner: Owner, kind: libc::c_int) -> libc::flock {
    let generation = (owner.generation & ((1 << GENERATION_BITS) - 1)) as i64;
    let slot = owner.slot as i64;
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: BASE + (slot << GENERATION_BITS) + generation,
        l_len: 1,
        // Must be 0 for the OFD commands.
        l_pid: 0,
    }
}

/// `fcntl(fd, command, lock)` for the OFD lock commands.
fn fcntl_lock(
    fd: BorrowedFd<'_>,
    command: libc::c_int,
    lock: &mut libc::flock,
) -> std::io::Result<()> {
    // SAFETY: `fd` is open for the call's duration; `lock` is a valid, initialized
    // `struct flock` that the kernel reads (SETLK) or overwrites (GETLK) and does not
    // keep.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), command, lock as *mut libc::flock) };
    if result == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd() -> OwnedFd {
        rustix::fs::memfd_create("lease-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn a_lease_is_held_until_its_last_reference_goes() {
        let pool = memfd();
        let owner = Owner {
            slot: 3,
            generation: 7,
        };
        assert!(!is_held(pool.as_fd(), owner));
        let lease = Lease::take(pool.as_fd(), owner).unwrap();
        assert!(is_held(pool.as_fd(), owner));
        // Another entry, or the next generation of this one, is not leased.
        assert!(!is_held(
            pool.as_fd(),
            Owner {
                slot: 4,
                generation: 7
            }
        ));
        assert!(!is_held(
            pool.as_fd(),
            Owner {
                slot: 3,
                generation: 8
            }
        ));
        // A second reference to the description (what a ring's registration is) keeps
        // the lock after the lease itself is gone.
        let kept = rustix::io::dup(lease.file()).unwrap();
        drop(lease);
        assert!(is_held(pool.as_fd(), owner));
        drop(kept);
        assert!(!is_held(pool.as_fd(), owner));
    }

    #[test]
    fn lent_memory_finds_the_lease_of_the_mapping_it_lies_in_while_it_is_attached() {
        let pool = memfd();
        let lease = Arc::new(
            Lease::take(
                pool.as_fd(),
                Owner {
                    slot: 9,
                    generation: 1,
                },
            )
            .unwrap(),
        );
        // An address range no real mapping has (this test's own, not a pool's).
        let start = usize::MAX - (1 << 20);
        note_mapping(start, 4096, &lease);
        let found = lease_at(start + 100, 200).expect("inside the mapping");
        assert!(Arc::ptr_eq(&found, &lease));
        assert!(
            lease_at(start + 4000, 200).is_none(),
            "reaches past the end"
        );
        assert!(lease_at(start - 1, 2).is_none(), "starts before it");
        assert!(lease_at(usize::MAX - 1, 10).is_none(), "wraps around");
        drop(found);
        drop(lease);
        assert!(
            lease_at(start + 100, 200).is_none(),
            "the attachment is gone"
        );
    }

    #[test]
    fn the_next_process_on_an_entry_takes_its_lease_while_an_old_one_lingers() {
        let pool = memfd();
        let old = Lease::take(
            pool.as_fd(),
            Owner {
                slot: 0,
                generation: 1,
            },
        )
        .unwrap();
        let new = Lease::take(
            pool.as_fd(),
            Owner {
                slot: 0,
                generation: 2,
            },
        );
        assert!(new.is_ok(), "{new:?}");
        drop(old);
    }
}
