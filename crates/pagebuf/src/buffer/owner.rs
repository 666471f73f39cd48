//! The origin for memory a caller owns (`BufferMut::from_owner`, `Buffer::from_owner`):
//! the owner moves into a box next to the header and is dropped on release.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ptr::NonNull;

use super::header::{Header, MemoryOrigin};
use crate::memory::page_size;

#[repr(C)]
struct OwnerBlock<T> {
    header: Header,
    owner: T,
}

/// Release for an `OwnerBlock<T>`: drops the owner and the header together.
///
/// # Safety
/// `header` is the header of a block made by `wrap::<T>` and this is its one release.
unsafe fn release_owner<T>(header: NonNull<Header>) {
    // SAFETY: the header is the first field of a `#[repr(C)]` `OwnerBlock<T>` that
    // `wrap` leaked from a Box; rebuilding the Box gives that allocation back once.
    drop(unsafe { Box::from_raw(header.cast::<OwnerBlock<T>>().as_ptr()) });
}

/// Boxes `owner` with a header and asks `lend` for its bytes once, after the move into
/// the box, so the pointer stays valid for as long as the box lives.
fn wrap<T: Send + 'static>(
    owner: T,
    writable: bool,
    lend: impl FnOnce(&mut T) -> (NonNull<u8>, usize),
) -> NonNull<Header> {
    let placeholder = Header::new(
        release_owner::<T>,
        NonNull::dangling(),
        0,
        1,
        MemoryOrigin::Owner,
        writable,
    );
    let block = Box::into_raw(Box::new(OwnerBlock {
        header: placeholder,
        owner,
    }));
    // SAFETY: `block` is a live, exclusively held allocation; the owner is borrowed only
    // for the call to `lend`, and then never touched again until release.
    let (base, len) = lend(unsafe { &mut (*block).owner });
    // The alignment that holds for the owner's bytes, capped at a page: enough for
    // every direct-I/O check, and honest for any address.
    let alignment = (1usize << (base.as_ptr() as usize).trailing_zeros().min(63)).min(page_size());
    // SAFETY: still exclusively held; writing the real header over the placeholder.
    unsafe {
        (*block).header = Header::new(
            release_owner::<T>,
            base,
            len,
            alignment,
            MemoryOrigin::Owner,
            writable,
        );
    }
    // SAFETY: Box::into_raw never returns null; the header is at offset 0 (repr(C)).
    unsafe { NonNull::new_unchecked(block.cast::<Header>()) }
}

pub(super) fn wrap_writable<T: AsMut<[u8]> + Send + 'static>(owner: T) -> NonNull<Header> {
    wrap(owner, true, |owner| {
        let bytes = owner.as_mut();
        (NonNull::from(&mut *bytes).cast(), bytes.len())
    })
}

pub(super) fn wrap_read_only<T: AsRef<[u8]> + Send + 'static>(owner: T) -> NonNull<Header> {
    wrap(owner, false, |owner| {
        let bytes = owner.as_ref();
        (NonNull::from(bytes).cast(), bytes.len())
    })
}
