//! A use of a frame after it went back to its pool shows.
//!
//! * Built with `RUSTFLAGS="-Zsanitizer=address --cfg pagebuf_asan"` (nightly), the pool
//!   poisons every returned frame for AddressSanitizer. Each test re-runs this binary as
//!   a child that reads a byte of a returned frame through a raw pointer (the pool still
//!   alive), and asserts that the child died of ASan's `use-after-poison` report for
//!   exactly that address. A control child reads a frame that was handed out again and
//!   must survive: handing a frame out unpoisons it.
//! * Otherwise, debug builds fill a returned frame with `POISON_BYTE` (0xDB), and the
//!   tests read that through the raw pointer instead. Release builds do neither; the
//!   tests then say they were skipped.
//!
//! Reading a returned frame through a raw pointer is a bug in real code. It is defined
//! behaviour here only because of how the test holds the pool: a live `FramePool` handle
//! keeps the pool's whole block mapped (or allocated), the bytes of every frame are
//! always initialized, and no other thread or buffer touches the frame while the test
//! reads it (the pool is not shared, and the frame is not handed out again until the
//! reads are done). It is a use after *return*, never a use after *free*.
//!
//! Run under ASan with:
//! `RUSTFLAGS="-Zsanitizer=address --cfg pagebuf_asan" cargo +nightly test -p pagebuf
//! --all-features --target x86_64-unknown-linux-gnu --test pool_asan`

// The pool's atomics are loom's under `--cfg loom` (usable only inside `loom::model`),
// and tokio is not built then: these tests are for normal builds.
#![cfg(not(loom))]

use std::thread;

use pagebuf::pool::{FrameMemory, FramePool, Framing};

fn pool(memory: FrameMemory) -> FramePool {
    FramePool::new(Framing::new(4096, 2).memory(memory)).unwrap()
}

/// A frame of `pool`, filled, returned through its last view (a `BufferMut`, or the last
/// of several `Buffer`s dropped on two threads); its address.
fn returned_frame(pool: &FramePool, shared: bool) -> *const u8 {
    let mut frame = pool.try_allocate().unwrap();
    frame.whole_mut().fill(0xA5);
    let at = frame.as_ptr();
    if shared {
        let frozen = frame.freeze();
        let other = frozen.clone();
        thread::spawn(move || drop(other)).join().unwrap();
        drop(frozen);
    } else {
        drop(frame);
    }
    assert_eq!(pool.stats().free, 2, "the frame is home");
    at
}

/// Reads `len` bytes of a returned frame of a live pool (see the module documentation
/// for why this is defined behaviour here).
#[cfg(not(pagebuf_asan))]
fn read_returned(at: *const u8, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: `at..at + len` is a frame of a pool the caller keeps alive: mapped,
        // initialized, and touched by nobody else while this reads.
        .map(|i| unsafe { at.add(i).read_volatile() })
        .collect()
}

mod support;

#[cfg(pagebuf_asan)]
mod asan {
    use super::*;

    use crate::support::{in_child, run_child};

    /// Runs test `name` of this binary alone in a child process; its exit status and
    /// its stdout + stderr.
    fn run_in_child(name: &str) -> (std::process::ExitStatus, String) {
        run_child(name, &[("ASAN_OPTIONS", "detect_leaks=0")])
    }

    /// The child: read one byte of a returned frame. ASan must stop it right there.
    fn child_reads_returned_frame(memory: FrameMemory, shared: bool) {
        let pool = pool(memory);
        let at = returned_frame(&pool, shared);
        println!("child: reading {at:p}");
        // SAFETY: see `read_returned`; under ASan the read is reported and never returns.
        let byte = unsafe { at.add(7).read_volatile() };
        println!("child: read {byte:#x} unnoticed");
        drop(pool);
    }

    /// The parent: the child must have died of exactly that report.
    fn expect_use_after_poison(name: &str) {
        let (status, text) = run_in_child(name);
        assert!(!status.success(), "the child survived:\n{text}");
        assert!(!text.contains("unnoticed"), "ASan missed the read:\n{text}");
        let at = text
            .lines()
            .find_map(|l| l.split_once("child: reading ").map(|(_, at)| at))
            .unwrap_or_else(|| panic!("the child did not get to the read:\n{text}"));
        let at = usize::from_str_radix(at.trim().trim_start_matches("0x"), 16).unwrap() + 7;
        assert!(
            text.contains("ERROR: AddressSanitizer: use-after-poison"),
            "no use-after-poison report:\n{text}"
        );
        assert!(
            text.contains(&format!("READ of size 1 at {at:#x}")),
            "the report is not about the frame's byte at {at:#x}:\n{text}"
        );
        eprintln!("child died as expected: {}", status);
    }

    #[test]
    fn reading_a_returned_page_frame_is_use_after_poison() {
        const NAME: &str = "asan::reading_a_returned_page_frame_is_use_after_poison";
        if in_child(NAME) {
            return child_reads_returned_frame(FrameMemory::default(), false);
        }
        expect_use_after_poison(NAME);
    }

    #[test]
    fn reading_a_returned_heap_frame_is_use_after_poison() {
        const NAME: &str = "asan::reading_a_returned_heap_frame_is_use_after_poison";
        if in_child(NAME) {
            return child_reads_returned_frame(FrameMemory::Heap, true);
        }
        expect_use_after_poison(NAME);
    }

    /// The control: once handed out again, every byte of every frame, the returned one
    /// among them, reads without a report: handing a frame out unpoisons it.
    #[test]
    fn a_frame_handed_out_again_is_not_poisoned() {
        const NAME: &str = "asan::a_frame_handed_out_again_is_not_poisoned";
        if in_child(NAME) {
            for memory in [FrameMemory::default(), FrameMemory::Heap] {
                let pool = pool(memory.clone());
                let at = returned_frame(&pool, true);
                let mut both = [pool.try_allocate().unwrap(), pool.try_allocate().unwrap()];
                assert!(both.iter().any(|f| f.as_ptr() == at), "the frame came back");
                let sum: u64 = both
                    .iter_mut()
                    .flat_map(|f| f.whole_mut().iter())
                    .map(|&b| u64::from(b))
                    .sum();
                println!("child: read both frames of {memory:?} (sum {sum})");
            }
            println!("child: survived");
            return;
        }
        let (status, text) = run_in_child(NAME);
        assert!(
            status.success() && text.contains("child: survived"),
            "a frame handed out again is still poisoned ({status}):\n{text}"
        );
    }
}

/// Without ASan: debug builds fill a returned frame with `POISON_BYTE`.
#[cfg(not(pagebuf_asan))]
#[test]
fn a_returned_frame_reads_the_poison_byte() {
    if !cfg!(debug_assertions) {
        eprintln!(
            "skipped: release build without --cfg pagebuf_asan: returned frames are not \
             poisoned"
        );
        return;
    }
    for memory in [FrameMemory::default(), FrameMemory::Heap] {
        for shared in [false, true] {
            let pool = pool(memory.clone());
            let at = returned_frame(&pool, shared);
            let bytes = read_returned(at, 4096);
            assert!(
                bytes.iter().all(|&b| b == support::POISON_BYTE),
                "{memory:?}, shared {shared}: a returned frame still holds old bytes"
            );
            // The pool is still whole: both frames come back, the returned one among them.
            let both = [pool.try_allocate().unwrap(), pool.try_allocate().unwrap()];
            assert!(both.iter().any(|f| f.as_ptr() == at));
            drop(both);
            drop(pool);
        }
    }
}
