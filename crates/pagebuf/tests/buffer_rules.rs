//! One test per rule of DESIGN.md's "Buffers" and "Allocators" sections.

use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pagebuf::{
    page_size, Buffer, BufferAllocator, BufferMut, Error, HeapAllocator, MemoryOrigin,
    PageAllocator,
};

mod support;
use support::{child_reached, in_child, run_child_within, CountedOwner};

/// Each allocator under test, with whether `allocate` is page-aligned too.
fn allocators() -> Vec<(&'static str, Arc<dyn BufferAllocator>)> {
    vec![
        ("heap", Arc::new(HeapAllocator::default())),
        ("pages", Arc::new(PageAllocator::default())),
        (
            "pages+prefault",
            Arc::new(PageAllocator::default().prefault(true)),
        ),
    ]
}

#[test]
fn buffer_and_buffer_mut_are_32_bytes() {
    assert!(size_of::<Buffer>() <= 32, "{}", size_of::<Buffer>());
    assert!(size_of::<BufferMut>() <= 32, "{}", size_of::<BufferMut>());
    assert_eq!(
        size_of::<Option<Buffer>>(),
        size_of::<Buffer>(),
        "niche lost"
    );
}

#[test]
fn new_buffers_are_empty_with_exact_max_len() {
    for (name, alloc) in allocators() {
        for size in [
            1,
            100,
            page_size() - 1,
            page_size(),
            page_size() + 1,
            1 << 20,
        ] {
            for buf in [
                alloc.allocate(size).unwrap(),
                alloc.allocate_page_aligned(size).unwrap(),
            ] {
                assert_eq!(buf.len(), 0, "{name} {size}");
                assert!(buf.is_empty());
                assert_eq!(buf.max_len(), size, "{name} {size}");
                assert_eq!(buf.whole_mut_len(), size);
            }
        }
    }
}

/// `whole_mut().len()` without needing `mut` at the call site above.
trait WholeLen {
    fn whole_mut_len(self) -> usize;
}
impl WholeLen for BufferMut {
    fn whole_mut_len(mut self) -> usize {
        self.whole_mut().len()
    }
}

#[test]
fn page_aligned_allocations_start_on_a_page() {
    for (name, alloc) in allocators() {
        for size in [1, 4095, 4096, 12345, 3 << 20] {
            let buf = alloc.allocate_page_aligned(size).unwrap();
            assert_eq!(buf.as_ptr() as usize % page_size(), 0, "{name} {size}");
            assert!(buf.alignment() >= page_size(), "{name} {size}");
        }
    }
}

#[test]
fn heap_allocate_honours_its_alignment() {
    let heap = HeapAllocator::default();
    for size in 1..200 {
        let buf = heap.allocate(size).unwrap();
        assert_eq!(buf.alignment(), 64);
        assert_eq!(buf.as_ptr() as usize % 64, 0);
    }
    let small = HeapAllocator::with_alignment(8).unwrap();
    assert_eq!(small.allocate(3).unwrap().alignment(), 8);
    for bad in [0, 3, 48, page_size() * 2] {
        let err = HeapAllocator::with_alignment(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
    }
}

#[test]
fn set_len_past_max_len_is_invalid_and_changes_nothing() {
    for (name, alloc) in allocators() {
        let mut buf = alloc.allocate(10).unwrap();
        buf.extend_from_slice(b"abc").unwrap();
        for n in [11, 4096, usize::MAX] {
            let err = buf.set_len(n).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{name}: {err}");
            assert!(err.to_string().contains("max_len"), "{err}");
            assert_eq!(&buf[..], b"abc", "{name}");
        }
        buf.set_len(10).unwrap();
        assert_eq!(buf.len(), 10);
        buf.set_len(0).unwrap();
        assert!(buf.is_empty());
    }
}

#[test]
fn growing_the_length_exposes_only_initialized_bytes() {
    for (name, alloc) in allocators() {
        let mut buf = alloc.allocate(3 * page_size()).unwrap();
        buf.set_len(buf.max_len()).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0),
            "{name}: fresh memory must read as zeroes"
        );
        buf[..4].copy_from_slice(b"data");
        buf.set_len(2).unwrap();
        buf.set_len(4).unwrap();
        assert_eq!(
            &buf[..],
            b"data",
            "{name}: shrinking then growing keeps the bytes"
        );
    }
}

#[test]
fn deref_covers_exactly_len() {
    let mut buf = HeapAllocator::default().allocate(100).unwrap();
    assert_eq!(buf.len(), 0);
    assert_eq!((*buf).len(), 0);
    buf.set_len(7).unwrap();
    assert_eq!((*buf).len(), 7);
    buf.fill(1);
    buf.set_len(8).unwrap();
    assert_eq!(&buf[..], &[1, 1, 1, 1, 1, 1, 1, 0]);
}

#[test]
fn get_buffer_copy_in_set_length_protocol() {
    let mut buf = PageAllocator::default().allocate(16).unwrap();
    let whole = buf.whole_mut();
    assert_eq!(whole.len(), 16);
    whole[..11].copy_from_slice(b"hello world");
    buf.set_len(11).unwrap();
    assert_eq!(&buf[..], b"hello world");
}

#[test]
fn extend_past_max_len_is_invalid_and_copies_nothing() {
    let mut buf = HeapAllocator::default().allocate(8).unwrap();
    buf.extend_from_slice(b"12345").unwrap();
    let err = buf.extend_from_slice(b"6789").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(&buf[..], b"12345");
    assert_eq!(&buf.whole_mut()[5..], &[0, 0, 0], "no partial copy");
    buf.extend_from_slice(b"678").unwrap();
    assert_eq!(&buf[..], b"12345678");
    buf.extend_from_slice(b"").unwrap();
}

#[test]
fn the_data_pointer_never_moves() {
    for (name, alloc) in allocators() {
        let mut buf = alloc.allocate(1000).unwrap();
        let ptr = buf.as_ptr();
        assert_eq!(buf.as_mut_ptr() as *const u8, ptr);
        buf.extend_from_slice(&[5; 500]).unwrap();
        buf.set_len(1000).unwrap();
        buf.clear();
        buf.set_len(10).unwrap();
        assert_eq!(buf.as_ptr(), ptr, "{name}");
        let frozen = buf.freeze();
        assert_eq!(frozen.as_ptr(), ptr, "{name}");
        let clone = frozen.clone();
        assert_eq!(clone.as_ptr(), ptr, "{name}");
        drop(clone);
        let back = frozen.try_into_mut().unwrap();
        assert_eq!(back.as_ptr(), ptr, "{name}");
        assert_eq!((back.len(), back.max_len()), (10, 1000));
    }
}

#[test]
fn freeze_keeps_content_and_lengths() {
    let mut buf = HeapAllocator::default().allocate(64).unwrap();
    buf.extend_from_slice(b"frozen").unwrap();
    let frozen: Buffer = buf.into();
    assert_eq!(&frozen[..], b"frozen");
    assert_eq!((frozen.len(), frozen.max_len()), (6, 64));
    assert_eq!(frozen.ref_count(), 1);
    assert!(frozen.is_unique());
}

#[test]
fn clone_is_add_ref_and_drop_is_release() {
    let heap = HeapAllocator::default();
    let frozen = heap.allocate(10).unwrap().freeze();
    let clones: Vec<Buffer> = (0..5).map(|_| frozen.clone()).collect();
    assert_eq!(frozen.ref_count(), 6);
    assert!(!frozen.is_unique());
    drop(clones);
    assert_eq!(frozen.ref_count(), 1);
    assert_eq!(heap.stats().live_buffers, 1);
    drop(frozen);
    let stats = heap.stats();
    assert_eq!(
        (stats.allocations, stats.releases, stats.live_bytes),
        (1, 1, 0)
    );
}

#[test]
fn slices_share_memory_without_copying() {
    let mut buf = PageAllocator::default().allocate(4096).unwrap();
    buf.extend_from_slice(b"0123456789").unwrap();
    let frozen = buf.freeze();
    let base = frozen.as_ptr();
    let cases: [(Buffer, usize, &[u8]); 5] = [
        (frozen.slice(2..5).unwrap(), 2, b"234"),
        (frozen.slice(..=3).unwrap(), 0, b"0123"),
        (frozen.slice(8..).unwrap(), 8, b"89"),
        (frozen.slice(..).unwrap(), 0, b"0123456789"),
        (frozen.slice(10..10).unwrap(), 10, b""),
    ];
    for (slice, offset, content) in &cases {
        assert_eq!(slice.as_ptr(), base.wrapping_add(*offset));
        assert_eq!(&slice[..], *content);
        assert_eq!(slice.max_len(), content.len());
    }
    assert_eq!(frozen.ref_count(), 6);
    let nested = cases[0].0.slice(1..).unwrap();
    assert_eq!(&nested[..], b"34");
    assert_eq!(nested.as_ptr(), base.wrapping_add(3));
    assert_eq!(nested.alignment(), 1, "offset 3 is only byte-aligned");
    assert_eq!(frozen.slice(4..).unwrap().alignment(), 4);
    assert_eq!(frozen.alignment(), page_size());
}

#[test]
fn slices_out_of_range_are_invalid() {
    let frozen = Buffer::from_owner(*b"0123456789");
    let bad: Vec<pagebuf::Result<Buffer>> = vec![
        frozen.slice(0..11),
        frozen.slice(11..),
        frozen.slice(..=10),
        #[allow(clippy::reversed_empty_ranges)]
        frozen.slice(5..3),
        frozen.slice(..=usize::MAX),
        frozen.slice((
            std::ops::Bound::Excluded(usize::MAX),
            std::ops::Bound::Unbounded,
        )),
    ];
    for result in bad {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("10 bytes"), "{err}");
    }
    assert_eq!(
        frozen.ref_count(),
        1,
        "failed slices must not leak references"
    );
}

#[test]
fn try_into_mut_only_when_unique() {
    let heap = HeapAllocator::default();
    let mut buf = heap.allocate(32).unwrap();
    buf.extend_from_slice(b"abc").unwrap();
    let frozen = buf.freeze();
    let clone = frozen.clone();
    let frozen = frozen.try_into_mut().expect_err("shared: must refuse");
    assert_eq!(&frozen[..], b"abc", "given back unchanged");
    assert_eq!(frozen.ref_count(), 2);
    drop(clone);
    let mut unique = frozen.try_into_mut().expect("unique now");
    unique.extend_from_slice(b"def").unwrap();
    assert_eq!(&unique[..], b"abcdef");
    assert_eq!(unique.max_len(), 32);

    // A unique slice becomes a BufferMut over just that slice.
    let frozen = unique.freeze();
    let tail = frozen.slice(3..).unwrap();
    drop(frozen);
    let tail = tail
        .try_into_mut()
        .expect("the slice is the last reference");
    assert_eq!((&tail[..], tail.max_len()), (&b"def"[..], 3));
    drop(tail);
    assert_eq!(heap.stats().releases, 1);
}

#[test]
fn read_only_owners_never_become_writable() {
    let frozen = Buffer::from_owner(&b"in the binary's read-only data"[..]);
    assert!(frozen.is_unique());
    let frozen = frozen.try_into_mut().expect_err("read-only memory");
    assert_eq!(frozen.origin(), MemoryOrigin::Owner);
}

#[test]
fn owner_is_dropped_exactly_once_by_the_last_view() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut buf = BufferMut::from_owner(CountedOwner {
        bytes: vec![1, 2, 3, 4],
        drops: drops.clone(),
    });
    assert_eq!((buf.len(), buf.max_len()), (4, 4));
    buf[0] = 9;
    let frozen = buf.freeze();
    let a = frozen.slice(1..).unwrap();
    let b = frozen.clone();
    drop(frozen);
    drop(a);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(&b[..], &[9, 2, 3, 4]);
    drop(b);
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    let read_only = Buffer::from_owner(CountedOwner {
        bytes: vec![7; 3],
        drops: drops.clone(),
    });
    drop(read_only.clone());
    drop(read_only);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn memory_returns_exactly_once_per_allocator() {
    let heap = HeapAllocator::default();
    let pages = PageAllocator::default();
    let mut held = Vec::new();
    for size in [1, 4096, 70_000] {
        held.push(heap.allocate(size).unwrap().freeze());
        held.push(heap.allocate_page_aligned(size).unwrap().freeze());
        held.push(pages.allocate(size).unwrap().freeze());
    }
    let slices: Vec<Buffer> = held.iter().map(|b| b.slice(..).unwrap()).collect();
    assert_eq!(heap.stats().live_buffers, 6);
    assert_eq!(heap.stats().live_bytes, 2 * (1 + 4096 + 70_000));
    assert_eq!(pages.stats().live_buffers, 3);
    drop(held);
    assert_eq!(heap.stats().releases, 0, "slices still hold the memory");
    drop(slices);
    for stats in [heap.stats(), pages.stats()] {
        assert_eq!(stats.allocations, stats.releases);
        assert_eq!((stats.live_buffers, stats.live_bytes), (0, 0));
    }
}

#[test]
fn release_is_counted_even_after_the_allocator_is_gone() {
    let heap = HeapAllocator::default();
    let observer = heap.clone();
    let buf = heap.allocate(10).unwrap();
    drop(heap);
    drop(buf);
    assert_eq!(observer.stats().releases, 1);
}

#[test]
fn zero_and_impossible_sizes_are_invalid_arguments() {
    for (name, alloc) in allocators() {
        let sizes = [
            0,
            usize::MAX,
            isize::MAX as usize,
            usize::MAX - page_size() + 2,
        ];
        for size in sizes {
            for result in [alloc.allocate(size), alloc.allocate_page_aligned(size)] {
                let err = result.unwrap_err();
                assert!(
                    matches!(err, Error::InvalidArgument(_)),
                    "{name} {size}: {err}"
                );
            }
        }
    }
}

#[test]
fn configured_limits_refuse_with_invalid_argument() {
    let limited: [Box<dyn BufferAllocator>; 2] = [
        Box::new(HeapAllocator::default().max_size(1000)),
        Box::new(PageAllocator::default().max_size(1000)),
    ];
    for alloc in &limited {
        assert_eq!(alloc.allocate(1000).unwrap().max_len(), 1000);
        let err = alloc.allocate_page_aligned(1001).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("limit of 1000"), "{err}");
    }
}

#[test]
fn origins_say_where_memory_came_from() {
    let heap = HeapAllocator::default().allocate(1).unwrap();
    assert_eq!(heap.origin(), MemoryOrigin::Heap);
    let mapped = PageAllocator::default().prefault(true).allocate(1).unwrap();
    assert!(matches!(
        mapped.origin(),
        MemoryOrigin::Mapped {
            huge_pages: false,
            prefaulted: true,
            ..
        }
    ));
    assert_eq!(mapped.origin().to_string(), "anonymous mmap (pre-faulted)");
}

/// Runs test `name` in a child copy of this binary (it changes process-wide limits) and
/// checks that it succeeded and reached `marker`.
fn run_in_child(name: &'static str, marker: &str) -> String {
    let env = &[("ASAN_OPTIONS", "allocator_may_return_null=1")];
    child_reached(run_child_within(name, env), &[marker])
}

#[test]
fn kernel_refusal_is_out_of_memory_not_an_abort() {
    const NAME: &str = "kernel_refusal_is_out_of_memory_not_an_abort";
    if !in_child(NAME) {
        run_in_child(NAME, "child: survived");
        return;
    }
    // Cap the address space a little above what the process already uses, then ask
    // each allocator for far more.
    support::cap_address_space(256 << 20);

    let huge = 4usize << 30;
    let heap = HeapAllocator::default();
    let pages = PageAllocator::default();
    let attempts = [
        ("heap", heap.allocate(huge)),
        ("heap page-aligned", heap.allocate_page_aligned(huge)),
        ("pages", pages.allocate(huge)),
    ];
    for (name, result) in attempts {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{name}: {err}");
        println!("child: {name}: {err}");
    }
    let err = pages.allocate(huge).unwrap_err();
    assert!(err.to_string().contains("RLIMIT_AS"), "{err}");
    // Still alive, and small allocations still work.
    assert_eq!(heap.allocate(4096).unwrap().max_len(), 4096);
    assert_eq!(pages.allocate(4096).unwrap().max_len(), 4096);
    assert_eq!(heap.stats().live_buffers, 0);
    println!("child: survived");
}

#[test]
fn refused_mlock_names_rlimit_memlock() {
    const NAME: &str = "refused_mlock_names_rlimit_memlock";
    if !in_child(NAME) {
        run_in_child(NAME, "child: refused");
        return;
    }
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    // Root bypasses RLIMIT_MEMLOCK through CAP_IPC_LOCK: drop it for this thread first.
    let mut caps = capabilities(None).unwrap();
    caps.effective.remove(CapabilitySet::IPC_LOCK);
    caps.permitted.remove(CapabilitySet::IPC_LOCK);
    set_capabilities(None, caps).unwrap();
    let limit = rustix::process::Rlimit {
        current: Some(64 << 10),
        maximum: Some(64 << 10),
    };
    rustix::process::setrlimit(rustix::process::Resource::Memlock, limit).unwrap();

    let pages = PageAllocator::default().lock(true);
    let err = pages.allocate(1 << 20).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory(_) | Error::Unsupported(_)),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("RLIMIT_MEMLOCK is 65536 bytes"), "{text}");
    assert_eq!(
        pages.stats().live_buffers,
        0,
        "a refused buffer is not counted"
    );
    // Within the limit, locking works and says so.
    let small = pages.allocate(4096).unwrap();
    assert!(matches!(
        small.origin(),
        MemoryOrigin::Mapped { locked: true, .. }
    ));
    println!("child: refused: {text}");
}

#[cfg(feature = "bytes")]
mod with_bytes {
    use super::*;
    use bytes::{Buf, BufMut, Bytes};

    #[test]
    fn into_bytes_is_zero_copy_and_releases_once() {
        let heap = HeapAllocator::default();
        let mut buf = heap.allocate(100).unwrap();
        buf.extend_from_slice(b"shared with bytes").unwrap();
        let frozen = buf.freeze();
        let ptr = frozen.as_ptr();
        let bytes = Bytes::from(frozen);
        assert_eq!(bytes.as_ptr(), ptr);
        let part = bytes.slice(7..11);
        assert_eq!(&part[..], b"with");
        drop(bytes);
        assert_eq!(heap.stats().releases, 0);
        drop(part);
        assert_eq!(heap.stats().releases, 1);
    }

    #[test]
    fn buffer_is_a_buf_and_buffer_mut_a_buf_mut() {
        let mut buf = PageAllocator::default().allocate(16).unwrap();
        assert_eq!(buf.remaining_mut(), 16);
        buf.put_u32(0xDEAD_BEEF);
        buf.put_slice(b"tail");
        assert_eq!(buf.len(), 8);
        assert_eq!(buf.remaining_mut(), 8);
        let mut frozen = buf.freeze();
        assert_eq!(frozen.get_u32(), 0xDEAD_BEEF);
        assert_eq!(frozen.remaining(), 4);
        assert_eq!(frozen.chunk(), b"tail");
        frozen.advance(4);
        assert!(frozen.is_empty());
    }
}
