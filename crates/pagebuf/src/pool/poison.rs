//! Poisoning of returned frames, so a use after return shows.
//!
//! * Debug builds fill a returned frame with `0xDB` ("dead buffer"): stale reads
//!   through a leaked raw pointer see garbage, not plausible old data.
//! * Under AddressSanitizer (build with `RUSTFLAGS="-Zsanitizer=address --cfg
//!   pagebuf_asan"`, as `.ci/run` does), a returned frame is also poisoned for ASan,
//!   which then reports any access to it as `use-after-poison`; handing the frame out
//!   again unpoisons it.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

/// The byte debug builds fill returned frames with.
pub(crate) const POISON_BYTE: u8 = 0xDB;

#[cfg(pagebuf_asan)]
extern "C" {
    fn __asan_poison_memory_region(addr: *const u8, size: usize);
    fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
}

/// Marks `len` bytes at `ptr` as returned.
///
/// # Safety
/// The caller owns the bytes exclusively (the frame was just released).
pub(crate) unsafe fn poison(ptr: *mut u8, len: usize) {
    if cfg!(debug_assertions) {
        // SAFETY: the caller owns these bytes; nothing else reads or writes them now.
        unsafe { ptr.write_bytes(POISON_BYTE, len) };
    }
    #[cfg(pagebuf_asan)]
    // SAFETY: only changes ASan's shadow memory for a range this process owns.
    unsafe {
        __asan_poison_memory_region(ptr, len)
    };
}

/// Marks `len` bytes at `ptr` as handed out again.
///
/// # Safety
/// The caller owns the bytes exclusively (the frame was just taken from the free list).
pub(crate) unsafe fn unpoison(ptr: *mut u8, len: usize) {
    #[cfg(pagebuf_asan)]
    // SAFETY: only changes ASan's shadow memory for a range this process owns.
    unsafe {
        __asan_unpoison_memory_region(ptr, len)
    };
    let _ = (ptr, len);
}
