//! `FrameMemory::Host` and `FrameMemory::SharedMemory`: a pool whose frames live in
//! memory the caller supplies (issue 16, "FrameMemory sources"): frames inside it, checked
//! before use, one pool at a time, and the host's owner dropped only once the pool and
//! every buffer from it are gone; or in a sealed memfd another process can map.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pagebuf::pool::{FrameMemory, FramePool, Framing, HostMemory};
use pagebuf::Error;

/// Host memory from the global allocator: freed, and `freed` set, when dropped.
struct Arena {
    base: NonNull<u8>,
    layout: Layout,
    freed: Arc<AtomicBool>,
}

// SAFETY (test): the arena's memory is only reached through the pool once handed over.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Drop for Arena {
    fn drop(&mut self) {
        self.freed.store(true, Ordering::SeqCst);
        // SAFETY: allocated in `arena` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// `len` bytes aligned to `align`, filled with `fill`, offset by `shift` bytes into the
/// allocation (to make misaligned memory); the `HostMemory` and the flag its drop sets.
fn arena(len: usize, align: usize, shift: usize, fill: u8) -> (HostMemory, Arc<AtomicBool>) {
    let layout = Layout::from_size_align(len + shift, align).unwrap();
    // SAFETY: a non-zero layout.
    let raw = unsafe { std::alloc::alloc(layout) };
    let base = NonNull::new(raw).expect("allocation");
    // SAFETY: `len + shift` bytes were just allocated.
    unsafe { std::ptr::write_bytes(raw, fill, len + shift) };
    let freed = Arc::new(AtomicBool::new(false));
    let owner = Arena {
        base,
        layout,
        freed: freed.clone(),
    };
    // SAFETY: the bytes are allocated, initialized and reached only through the pool
    // until `owner` drops, which frees them.
    let memory = unsafe { HostMemory::new(base.add(shift), len, owner) };
    (memory, freed)
}

#[test]
fn frames_live_in_the_host_memory_and_keep_its_bytes() {
    let (memory, _freed) = arena(8 * 4096, 4096, 0, 0x5A);
    let start = memory.base().as_ptr() as usize;
    let pool =
        FramePool::new(Framing::new(4096, 8).memory(FrameMemory::Host(memory.clone()))).unwrap();
    let mut frames: Vec<_> = (0..8).map(|_| pool.try_allocate().unwrap()).collect();
    assert!(pool.try_allocate().is_none(), "8 frames, no more");
    for (i, frame) in frames.iter_mut().enumerate() {
        let at = frame.as_ptr() as usize;
        assert!(
            at >= start && at + 4096 <= start + 8 * 4096,
            "frame {i} at {at:#x} lies outside the host memory at {start:#x}"
        );
        assert!(
            frame.whole_mut().iter().all(|&b| b == 0x5A),
            "frame {i} does not hold the host's bytes"
        );
        frame.extend_from_slice(&[i as u8; 100]).unwrap();
    }
    let mut starts: Vec<usize> = frames.iter().map(|f| f.as_ptr() as usize).collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), 8, "frames are distinct");
    // What was written through the pool is in the host's memory.
    for frame in &frames {
        let at = frame.as_ptr();
        // SAFETY: `at` is a frame of the host memory, still allocated (`memory` held).
        let byte = unsafe { at.read() };
        assert_eq!(byte, frame[0]);
    }
}

#[test]
fn too_small_or_misaligned_host_memory_is_refused_with_the_fix() {
    let (small, _) = arena(3 * 4096, 4096, 0, 0);
    match FramePool::new(Framing::new(4096, 4).memory(FrameMemory::Host(small))) {
        Err(Error::InvalidArgument(msg)) => {
            assert!(
                msg.contains("needs 16384 bytes") && msg.contains("12288"),
                "{msg}"
            )
        }
        other => panic!("4 frames in 3 frames' memory: {other:?}"),
    }
    let (shifted, _) = arena(4 * 4096, 4096, 512, 0);
    match FramePool::new(Framing::new(4096, 4).memory(FrameMemory::Host(shifted))) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("not aligned"), "{msg}"),
        other => panic!("memory 512 bytes off a page: {other:?}"),
    }
    // The same memory with an alignment it meets is fine.
    let (shifted, _) = arena(4 * 4096, 4096, 512, 0);
    let framing = Framing::new(4096, 3)
        .alignment(512)
        .memory(FrameMemory::Host(shifted));
    assert!(FramePool::new(framing).is_ok());
}

#[test]
fn one_pool_at_a_time_holds_a_host_memory() {
    let (memory, _freed) = arena(4 * 4096, 4096, 0, 0);
    let framing = Framing::new(4096, 4).memory(FrameMemory::Host(memory.clone()));
    let first = FramePool::new(framing.clone()).unwrap();
    let frame = first.try_allocate().unwrap();
    match FramePool::new(framing.clone()) {
        Err(Error::InvalidRequest(msg)) => assert!(msg.contains("already holds"), "{msg}"),
        other => panic!("a second pool on live frames: {other:?}"),
    }
    // The first pool's handle is gone but a frame is out: the memory is still its.
    drop(first);
    assert!(matches!(
        FramePool::new(framing.clone()),
        Err(Error::InvalidRequest(_))
    ));
    drop(frame);
    let second = FramePool::new(framing).expect("the memory is free again");
    assert!(second.try_allocate().is_some());
}

#[test]
fn the_owner_is_dropped_after_the_pool_and_its_last_buffer() {
    let (memory, freed) = arena(2 * 4096, 4096, 0, 0);
    let pool = FramePool::new(Framing::new(4096, 2).memory(FrameMemory::Host(memory))).unwrap();
    let mut frame = pool.try_allocate().unwrap();
    frame.extend_from_slice(b"still here").unwrap();
    let frozen = frame.freeze();
    drop(pool);
    assert!(!freed.load(Ordering::SeqCst), "freed while a buffer is out");
    assert_eq!(&frozen[..], b"still here");
    drop(frozen);
    assert!(
        freed.load(Ordering::SeqCst),
        "the host's owner outlived the pool and its buffers"
    );
}

/// `FrameMemory::SharedMemory`: the frames live in a sealed memfd (no resizing, no new
/// seals) that another process can map; what a frame holds is at `memfd_offset` in it
/// (read here through the fd, not the pool's mapping: the same pages). Pools of other
/// sources have no memfd, and bytes outside the frames have no offset.
#[test]
fn frames_in_shared_memory_are_read_through_the_memfd_at_their_offset() {
    use pagebuf::memory::{HugePages, RegionOptions};
    use rustix::fs::SealFlags;
    let framing = Framing::new(64 << 10, 4)
        .alignment(1 << 16)
        .memory(FrameMemory::SharedMemory(RegionOptions::default()));
    let pool = FramePool::new(framing).unwrap();
    let fd = pool.memfd().expect("a memfd");
    let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
    assert!(
        seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL),
        "{seals:?}"
    );
    let mut frames = Vec::new();
    for i in 0..4u8 {
        let mut frame = pool.try_allocate().unwrap();
        assert_eq!(frame.as_ptr() as usize % (1 << 16), 0, "aligned as framed");
        frame.extend_from_slice(&vec![i + 1; 64 << 10]).unwrap();
        frames.push(frame);
    }
    for (i, frame) in frames.iter().enumerate() {
        let offset = pool.memfd_offset(frame).unwrap();
        let mut seen = vec![0u8; 64 << 10];
        let read = rustix::io::pread(pool.memfd().unwrap(), &mut seen, offset).unwrap();
        assert_eq!(read, seen.len());
        assert!(
            seen.iter().all(|&b| b == i as u8 + 1),
            "frame {i} at {offset}"
        );
        // A part of a frame has its own offset.
        assert_eq!(pool.memfd_offset(&frame[100..200]), Some(offset + 100));
    }
    assert_eq!(pool.memfd_offset(b"not in the pool"), None);
    let plain = FramePool::new(Framing::new(4096, 2)).unwrap();
    assert!(plain.memfd().is_none());
    assert_eq!(plain.memfd_offset(&plain.try_allocate().unwrap()), None);
    // Huge pages required and none reserved: refused, naming vm.nr_hugepages (or made,
    // when this machine has some).
    let huge = Framing::new(1 << 20, 2).memory(FrameMemory::SharedMemory(
        RegionOptions::default().huge_pages(HugePages::Require),
    ));
    match FramePool::new(huge) {
        Ok(pool) => assert!(pool.memfd().is_some()),
        Err(pagebuf::Error::Unsupported(why)) => assert!(why.contains("nr_hugepages"), "{why}"),
        Err(other) => panic!("{other}"),
    }
}
