//! `SharedPool`: the attach checks (each bad fd refused with a message naming what is
//! wrong), exhaustion, timeouts and wake-ups, garbage in the shared bookkeeping, and
//! two real processes (this test binary re-run as the child): frames written in one
//! are seen in the other, back-pressure crosses the boundary, and the frames of a
//! child killed with SIGKILL come back.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pagebuf::{BufferMut, Error, Framing, SharedPool};
use rustix::fs::{self, MemfdFlags, SealFlags};
use support::in_child;

/// Byte offset of the claim cursor in layout version 2 (after the 12 header words, on
/// its own 64-byte line).
const CURSOR_OFFSET: u64 = 128;
/// Byte offset of the frame table in layout version 2 (the control block's size).
const TABLE_OFFSET: u64 = 2496;
/// Byte offset of frame `i`'s owner word.
fn owner_offset(i: u64) -> u64 {
    TABLE_OFFSET + i * 16 + 8
}
/// Byte offset of hand-over ring cell `i` of a pool of `frames` frames.
fn ring_cell_offset(frames: u64, i: u64) -> u64 {
    TABLE_OFFSET + frames * 16 + i * 8
}
/// A ring cell as `ring.rs` lays it out, in lap 0: frame `index` sent by process
/// table entry `slot` in generation `generation` (a pool's creator is entry 0,
/// generation 1).
fn token(slot: u64, generation: u64, index: u64) -> u64 {
    (generation & 0xffff) << 32 | (slot + 1) << 25 | (index + 1)
}
/// Byte offset of the layout version word.
const VERSION_OFFSET: u64 = 8;

fn invalid(result: pagebuf::Result<SharedPool>, needle: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected InvalidArgument containing {needle:?}, got {other:?}"),
    }
}

/// A memfd holding a copy of `pool`'s bytes, resized to `len` and then changed by
/// `edit`, sealed as a pool is.
fn forged_copy(pool: &SharedPool, len: u64, edit: impl FnOnce(&OwnedFd)) -> OwnedFd {
    let size = fs::fstat(pool.as_fd()).unwrap().st_size as usize;
    let mut bytes = vec![0u8; size];
    let read = rustix::io::pread(pool.as_fd(), &mut bytes, 0).unwrap();
    assert_eq!(read, size);
    let fd = fs::memfd_create("forged", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fs::ftruncate(&fd, len).unwrap();
    let keep = size.min(len as usize);
    rustix::io::pwrite(&fd, &bytes[..keep], 0).unwrap();
    edit(&fd);
    fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
    fd
}

#[test]
fn attach_refuses_a_regular_file() {
    let path = std::env::temp_dir().join(format!("pagebuf-shared-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 65536]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    invalid(SharedPool::attach(file.into()), "not a memfd");
}

#[test]
fn attach_refuses_an_unsealed_memfd() {
    let fd = fs::memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fs::ftruncate(&fd, 1 << 20).unwrap();
    invalid(SharedPool::attach(fd), "not sealed");
    // Sealing only some of what is needed is not enough either.
    let fd = fs::memfd_create("half", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fs::ftruncate(&fd, 1 << 20).unwrap();
    fs::fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
    invalid(SharedPool::attach(fd), "not sealed");
}

#[test]
fn attach_refuses_a_memfd_that_is_not_a_pool() {
    let fd = fs::memfd_create("zeros", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fs::ftruncate(&fd, 1 << 20).unwrap();
    fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
    invalid(SharedPool::attach(fd), "not a pagebuf shared pool");
    let fd = fs::memfd_create("tiny", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fs::ftruncate(&fd, 16).unwrap();
    fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
    invalid(
        SharedPool::attach(fd),
        "smaller than a shared pool's header",
    );
}

#[test]
fn attach_refuses_a_resized_pool() {
    let pool = SharedPool::create(Framing::new(4096, 4)).unwrap();
    let size = fs::fstat(pool.as_fd()).unwrap().st_size as u64;
    for len in [size - 4096, size + 4096] {
        let fd = forged_copy(&pool, len, |_| {});
        invalid(SharedPool::attach(fd), "resized");
    }
    // The same bytes at the right size attach fine: the check is the size.
    let fd = forged_copy(&pool, size, |_| {});
    assert_eq!(SharedPool::attach(fd).unwrap().stats().frames, 4);
}

#[test]
fn attach_refuses_another_layout_version() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let size = fs::fstat(pool.as_fd()).unwrap().st_size as u64;
    let fd = forged_copy(&pool, size, |fd| {
        rustix::io::pwrite(fd, &1u64.to_le_bytes(), VERSION_OFFSET).unwrap();
    });
    invalid(SharedPool::attach(fd), "layout version 1");
}

#[test]
fn attach_refuses_a_header_with_a_bad_checksum() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let size = fs::fstat(pool.as_fd()).unwrap().st_size as u64;
    // Frame size 4096 -> 4097: still a valid geometry, but not what the checksum covers.
    let fd = forged_copy(&pool, size, |fd| {
        rustix::io::pwrite(fd, &4097u64.to_le_bytes(), 16).unwrap();
    });
    match SharedPool::attach(fd) {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("checksum"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn create_refuses_what_it_cannot_promise() {
    let page = pagebuf::page_size();
    let err = SharedPool::create(Framing::new(4096, 2).alignment(page * 2)).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    assert!(matches!(
        SharedPool::create(Framing::new(0, 2)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn frames_are_aligned_exclusive_and_shared_between_attachments() {
    let pool = SharedPool::create(Framing::new(10_000, 3)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let mut frames: Vec<_> = (0..3).map(|_| pool.try_allocate().unwrap()).collect();
    assert!(pool.try_allocate().is_none());
    assert!(peer.try_allocate().is_none());
    for (i, frame) in frames.iter_mut().enumerate() {
        assert_eq!(frame.max_len(), 10_000);
        assert_eq!(frame.as_ptr() as usize % pagebuf::page_size(), 0);
        frame.whole_mut().fill(0x40 + i as u8);
    }
    let stats = peer.stats();
    assert_eq!((stats.frames, stats.free, stats.in_use), (3, 0, 3));
    assert_eq!(stats.high_water, 3);
    assert_eq!(stats.allocations, 3);
    assert_eq!(
        stats.exhausted, 2,
        "one per try_allocate that found nothing"
    );
    drop(frames);
    assert_eq!(pool.stats().free, 3);
    // The peer's mapping shows the bytes written through the creator's (all frames
    // held at once, so each is a different frame).
    let mut again: Vec<_> = (0..3).map(|_| peer.try_allocate().unwrap()).collect();
    assert_eq!(fill_bytes(&mut again), [0x40, 0x41, 0x42]);
}

#[test]
fn zero_on_reuse_holds_for_every_attachment() {
    let pool = SharedPool::create(Framing::new(4096, 1).zero_on_reuse(true)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let mut frame = pool.allocate().unwrap();
    frame.whole_mut().fill(0xEE);
    drop(frame);
    let mut again = peer.allocate().unwrap();
    assert!(again.whole_mut().iter().all(|&b| b == 0));
}

#[test]
fn allocate_timeout_says_every_frame_is_out() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let _held = (pool.allocate().unwrap(), pool.allocate().unwrap());
    let started = Instant::now();
    let err = pool
        .allocate_timeout(Duration::from_millis(120))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(120));
    match &err {
        Error::Timeout { what, waited } => {
            assert!(what.contains("all 2 frames are out"), "{what}");
            assert_eq!(*waited, Duration::from_millis(120));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!(stats.waiting, 0);
    assert_eq!(
        (stats.waits, stats.exhausted),
        (1, 1),
        "counted once per allocation"
    );
}

#[test]
fn a_release_on_another_thread_wakes_a_blocked_allocate() {
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let held = pool.allocate().unwrap();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let frame = pool.allocate_timeout(Duration::from_secs(20));
            (frame.map(|f| f.max_len()), started.elapsed())
        })
    };
    // Wait until it sleeps, then release.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.stats().waiting == 0 {
        assert!(
            Instant::now() < deadline,
            "the waiter never started waiting"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(held);
    let (frame, waited) = waiter.join().unwrap();
    assert_eq!(frame.unwrap(), 4096);
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn garbage_in_an_owner_word_is_corrupt_not_a_crash() {
    let pool = SharedPool::create(Framing::new(4096, 4)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let held = pool.allocate().unwrap();
    // A "peer" writes a word no state has (process table entry 0x77, past the 64) into
    // frame 2's owner word, which the next claim passes.
    let garbage: u64 = 0x1234_5677;
    rustix::io::pwrite(pool.as_fd(), &garbage.to_le_bytes(), owner_offset(2)).unwrap();
    rustix::io::pwrite(pool.as_fd(), &1u64.to_le_bytes(), CURSOR_OFFSET).unwrap();
    let _one = pool
        .try_allocate()
        .expect("frame 1 is free and ahead of the garbage");
    assert!(pool.try_allocate().is_none());
    match pool.allocate() {
        Err(Error::Corrupt { offset, detail }) => {
            assert_eq!(offset, owner_offset(2));
            assert!(
                detail.contains("frame 2's owner word is 0x12345677"),
                "{detail}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Sticky, and seen by the other attachment and by a new one.
    assert!(matches!(
        pool.allocate_timeout(Duration::from_secs(1)),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(peer.allocate(), Err(Error::Corrupt { .. })));
    assert!(peer.stats().closed);
    let late = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap());
    assert!(matches!(late, Err(Error::Corrupt { .. })), "{late:?}");
    drop(held); // returning a frame to a poisoned pool is harmless
}

#[test]
fn a_scribbled_claim_cursor_only_moves_where_claims_start() {
    let pool = SharedPool::create(Framing::new(4096, 3)).unwrap();
    for garbage in [u64::MAX, 3, 0xdead_beef_0000_0007] {
        rustix::io::pwrite(pool.as_fd(), &garbage.to_le_bytes(), CURSOR_OFFSET).unwrap();
        let mut frames: Vec<BufferMut> = (0..3).map(|_| pool.try_allocate().unwrap()).collect();
        assert!(pool.try_allocate().is_none());
        let mut at: Vec<_> = frames.iter_mut().map(|f| f.as_mut_ptr()).collect();
        at.sort_unstable();
        at.dedup();
        assert_eq!(at.len(), 3, "a frame handed out twice");
    }
    assert_eq!(pool.stats().free, 3);
}

#[test]
fn a_pool_passed_over_a_socket_pair_is_the_same_pool() {
    let (here, there) = UnixStream::pair().unwrap();
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    pool.send_to(&here).unwrap();
    let received = SharedPool::receive_from(&there).unwrap();
    let _held = pool.allocate().unwrap();
    assert_eq!(received.stats().in_use, 1);
    let _second = received.try_allocate().expect("one frame left");
    assert!(pool.try_allocate().is_none());
}

#[test]
fn receive_refuses_what_is_not_a_pool() {
    let (here, there) = UnixStream::pair().unwrap();
    drop(here);
    let err = SharedPool::receive_from(&there).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert!(err.to_string().contains("closed before"), "{err}");

    let (mut here, there) = UnixStream::pair().unwrap();
    here.write_all(b"P").unwrap();
    let err = SharedPool::receive_from(&there).unwrap_err();
    assert!(err.to_string().contains("carries no fd"), "{err}");

    let (mut here, there) = UnixStream::pair().unwrap();
    here.write_all(b"x").unwrap();
    let err = SharedPool::receive_from(&there).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

// ---- two processes --------------------------------------------------------------

const CHILD: &str = "shared_child";

/// A child process that is killed (and reaped) if the test fails before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this test binary as the child in `role`, with `pool`'s memfd inherited.
fn spawn_child(pool: &SharedPool, role: &str) -> (ChildGuard, mpsc::Receiver<String>) {
    // `dup` clears close-on-exec on the copy, so the child inherits it.
    let inherited = rustix::io::dup(pool.as_fd()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", CHILD)
        .env("PAGEBUF_SHARED_ROLE", role)
        .env("PAGEBUF_SHARED_FD", inherited.as_raw_fd().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(inherited);
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (guard, lines)
}

/// Waits (at most 30 s: the watchdog) for the child to print a line containing `word`.
fn expect_line(lines: &mpsc::Receiver<String>, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(word) => return,
            Ok(_) => {}
            Err(e) => panic!("the child never said {word:?} ({e})"),
        }
    }
}

fn wait_child(mut child: ChildGuard) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the child did not exit in 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child side: attaches to the inherited memfd and plays `PAGEBUF_SHARED_ROLE`.
#[test]
fn shared_child() {
    if !in_child(CHILD) {
        return;
    }
    if let Ok(path) = std::env::var("PAGEBUF_SHARED_SOCKET") {
        let socket = UnixStream::connect(path).unwrap();
        let pool = SharedPool::receive_from(&socket).unwrap();
        let mut frame = pool.allocate_timeout(Duration::from_secs(10)).unwrap();
        frame.whole_mut().fill(0x5A);
        drop(frame);
        println!("received");
        return;
    }
    if std::env::var("PAGEBUF_SHARED_ROLE").is_ok_and(|r| r == "fork") {
        fork_after_attach();
        return;
    }
    let pool = support::attach_inherited_pool();
    match std::env::var("PAGEBUF_SHARED_ROLE").unwrap().as_str() {
        "write" => {
            let frames = pool.stats().frames;
            let mut held = Vec::new();
            for k in 0..frames {
                let mut frame = pool.allocate_timeout(Duration::from_secs(10)).unwrap();
                frame.whole_mut().fill(0xA0 + k as u8);
                held.push(frame);
            }
            drop(held);
            println!("written");
        }
        "hold" => {
            let frames = pool.stats().frames;
            let mut held: Vec<_> = (0..frames)
                .map(|_| pool.allocate_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            println!("holding");
            // Drop one only once the parent waits for it (the shared waiter count).
            let deadline = Instant::now() + Duration::from_secs(20);
            while pool.stats().waiting == 0 {
                assert!(Instant::now() < deadline, "the parent never waited");
                std::thread::sleep(Duration::from_millis(2));
            }
            held.pop();
            println!("dropped one");
            std::thread::sleep(Duration::from_millis(500));
        }
        "wait" => {
            let _held: Vec<_> = (0..pool.stats().frames)
                .map(|_| pool.allocate_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            let waiter = {
                let pool = pool.clone();
                std::thread::spawn(move || pool.allocate())
            };
            while pool.stats().waiting == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("waiting");
            // The parent kills us with SIGKILL while the thread sleeps in the futex.
            let _ = waiter.join();
        }
        "receive" => {
            // Three frames of growing size, each byte-exact, then held until killed.
            let mut held = Vec::new();
            for len in [1usize, 4096 + 1, 8 << 20] {
                let frame = pool.receive_timeout(Duration::from_secs(20)).unwrap();
                assert_eq!(frame.len(), len);
                assert!(frame.iter().enumerate().all(|(i, &b)| b == pattern(len, i)));
                held.push(frame);
            }
            println!("received all");
            std::thread::sleep(Duration::from_secs(60));
        }
        "churn" => {
            // Two threads take and return frames as fast as they can until SIGKILL
            // lands, at whatever instruction.
            let churner = {
                let pool = pool.clone();
                std::thread::spawn(move || loop {
                    if let Some(mut frame) = pool.try_allocate() {
                        frame.whole_mut()[0] = 1;
                    }
                })
            };
            println!("churning");
            loop {
                let held: Vec<_> = (0..2).filter_map(|_| pool.try_allocate()).collect();
                drop(held);
                if churner.is_finished() {
                    panic!("the churning thread stopped");
                }
            }
        }
        "send" => {
            println!("storming");
            loop {
                if let Some(mut frame) = pool.try_allocate() {
                    frame.extend_from_slice(&[0x5e]).unwrap();
                    pool.hand_over(frame).unwrap();
                }
            }
        }
        "receive-storm" => {
            println!("storming");
            loop {
                if let Ok(Some(frame)) = pool.try_receive() {
                    assert_eq!(frame[0], 0x5e);
                }
            }
        }
        "die" => {
            let _held: Vec<_> = (0..3)
                .map(|_| pool.allocate_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            println!("holding");
            // The parent kills us with SIGKILL long before this ends.
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn frames_written_in_a_child_are_seen_by_the_parent() {
    let pool = SharedPool::create(Framing::new(64 * 1024, 2)).unwrap();
    let (child, lines) = spawn_child(&pool, "write");
    expect_line(&lines, "written");
    assert!(wait_child(child).success());
    let stats = pool.stats();
    assert_eq!((stats.free, stats.allocations), (2, 2));
    let mut frames: Vec<_> = (0..2).map(|_| pool.try_allocate().unwrap()).collect();
    assert_eq!(fill_bytes(&mut frames), [0xA0, 0xA1]);
}

#[test]
fn back_pressure_crosses_the_process_boundary() {
    let pool = SharedPool::create(Framing::new(4096, 3)).unwrap();
    let (child, lines) = spawn_child(&pool, "hold");
    expect_line(&lines, "holding");
    assert!(pool.try_allocate().is_none(), "the child holds every frame");
    let waits = pool.stats().waits;
    // The child drops one frame once it sees us waiting.
    let frame = pool.allocate_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(frame.max_len(), 4096);
    // It had to wait (no timing assumption: the stats say so), and got the one frame.
    assert_eq!(pool.stats().waits, waits + 1);
    assert!(pool.try_allocate().is_none());
    assert!(wait_child(child).success());
    drop(frame);
    assert_eq!(pool.stats().free, 3, "the exiting child returned the rest");
}

#[test]
fn frames_of_a_killed_child_come_back() {
    let pool = SharedPool::create(Framing::new(4096, 4)).unwrap();
    let (mut child, lines) = spawn_child(&pool, "die");
    expect_line(&lines, "holding");
    assert_eq!(pool.stats().in_use, 3);
    child.0.kill().unwrap(); // SIGKILL; not reaped yet: a zombie is dead too
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(pool.allocate_timeout(Duration::from_secs(20)).unwrap());
    }
    assert!(pool.try_allocate().is_none());
    drop(frames);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use), (4, 0));
}

#[test]
fn a_child_killed_at_any_instant_of_taking_and_returning_loses_no_frame() {
    const FRAMES: usize = 4;
    let pool = SharedPool::create(Framing::new(4096, FRAMES)).unwrap();
    for round in 0..24u64 {
        let (mut child, lines) = spawn_child(&pool, "churn");
        expect_line(&lines, "churning");
        // A different instant each round (the churn's own pace varies too).
        std::thread::sleep(Duration::from_micros(200 + (round * 7919) % 5000));
        child.0.kill().unwrap();
        let _ = child.0.wait();
        // Every frame comes back: those the child held, and any it was between taking
        // and returning.
        let frames: Vec<_> = (0..FRAMES)
            .map(|k| {
                pool.allocate_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("round {round}: frame {k} never came back: {e}"))
            })
            .collect();
        assert!(pool.try_allocate().is_none());
        drop(frames);
        assert_eq!(pool.stats().free, FRAMES, "round {round}");
    }
}

#[test]
fn a_pool_sent_over_a_named_socket_reaches_another_process() {
    let dir = std::env::temp_dir().join(format!("pagebuf-shared-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("pool.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let pool = SharedPool::create(Framing::new(8192, 1)).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", CHILD)
        .env("PAGEBUF_SHARED_SOCKET", &path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = ChildGuard(child);
    // Watchdog: a child that never connects fails the test instead of hanging it.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let socket = loop {
        match listener.accept() {
            Ok((socket, _)) => break socket,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the child never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    socket.set_nonblocking(false).unwrap();
    pool.send_to(&socket).unwrap();
    assert!(wait_child(child).success());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(pool.stats().allocations, 1);
    let mut frame = pool.try_allocate().unwrap();
    assert!(frame.whole_mut().iter().all(|&b| b == 0x5A));
}

#[test]
fn handles_are_send_sync_clone_and_debug() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<SharedPool>();
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let text = format!("{pool:?}");
    assert!(text.contains("frames: 1"), "{text}");
}

/// In a child process of its own (so the fork happens in a process with no busy
/// threads): a pool with one frame out, forked; the forked copy may neither allocate in
/// the parent's name nor return the parent's frame by dropping its copy.
fn fork_after_attach() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let held = pool.allocate().unwrap();
    // SAFETY: the forked child only checks results and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let refused =
            matches!(pool.allocate(), Err(Error::InvalidRequest(m)) if m.contains("fork"));
        let none = pool.try_allocate().is_none();
        drop(held);
        drop(pool);
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(if refused && none { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    assert_eq!(
        pool.stats().in_use,
        1,
        "the forked copy's drop returned our frame"
    );
    drop(held);
    assert_eq!(pool.stats().in_use, 0);
    println!("fork ok");
}

#[test]
fn a_forked_child_neither_allocates_for_nor_returns_the_parents_frames() {
    let (status, output) = support::run_child(CHILD, &[("PAGEBUF_SHARED_ROLE", "fork")]);
    assert!(status.success() && output.contains("fork ok"), "{output}");
}

#[test]
fn attach_alone_returns_the_frames_of_a_killed_child() {
    let pool = SharedPool::create(Framing::new(4096, 4)).unwrap();
    let (mut child, lines) = spawn_child(&pool, "die");
    expect_line(&lines, "holding");
    assert_eq!(pool.stats().in_use, 3);
    child.0.kill().unwrap();
    child.0.wait().unwrap(); // reaped: no such process any more
    let late = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let stats = late.stats();
    assert_eq!((stats.free, stats.in_use), (4, 0));
}

#[test]
fn the_process_table_has_a_stated_limit() {
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    // The creator holds one of the 64 entries; each attachment takes another.
    let mut peers = Vec::new();
    for _ in 1..64 {
        peers.push(SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap());
    }
    match SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()) {
        Err(Error::InvalidRequest(m)) => assert!(m.contains("all 64 process slots"), "{m}"),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    // A handle dropped gives its entry back.
    peers.pop();
    SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
}

#[test]
fn threads_of_two_attachments_never_share_a_frame() {
    let pool = SharedPool::create(Framing::new(256, 3)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let pool = if t % 2 == 0 {
                pool.clone()
            } else {
                peer.clone()
            };
            std::thread::spawn(move || {
                for round in 0..2000u32 {
                    let mut frame = pool.allocate_timeout(Duration::from_secs(20)).unwrap();
                    let mark = t.wrapping_mul(61).wrapping_add(round as u8);
                    frame.whole_mut().fill(mark);
                    std::thread::yield_now();
                    assert!(
                        frame.whole_mut().iter().all(|&b| b == mark),
                        "another thread wrote into a frame this one holds"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use, stats.allocations), (3, 0, 8000));
    assert!(stats.high_water <= 3);
}

#[test]
fn a_waiter_killed_in_its_sleep_is_no_longer_counted() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let (mut child, lines) = spawn_child(&pool, "wait");
    expect_line(&lines, "waiting");
    assert_eq!(pool.stats().waiting, 1);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // The next allocation that runs out reclaims the dead child's frames and its
    // count of waiters.
    let frames = (
        pool.allocate_timeout(Duration::from_secs(20)).unwrap(),
        pool.allocate_timeout(Duration::from_secs(20)).unwrap(),
    );
    let stats = pool.stats();
    assert_eq!((stats.waiting, stats.in_use), (0, 2));
    drop(frames);
}

fn pattern(len: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ len) as u8
}

#[test]
fn a_frame_handed_over_arrives_byte_exact_in_another_attachment() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let mut frame = pool.allocate().unwrap();
    frame.extend_from_slice(b"hello, peer").unwrap();
    pool.hand_over(frame).unwrap();
    assert_eq!(pool.stats().in_use, 1, "a frame in transit is out");
    let got = peer
        .try_receive()
        .unwrap()
        .expect("a frame was handed over");
    assert_eq!(&got[..], b"hello, peer");
    assert!(peer.try_receive().unwrap().is_none());
    let copy = got.clone();
    drop(got);
    assert_eq!(pool.stats().in_use, 1, "a view is still alive");
    drop(copy);
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn receive_timeout_says_nothing_was_handed_over() {
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let err = pool.receive_timeout(Duration::from_millis(50)).unwrap_err();
    match err {
        Error::Timeout { what, .. } => assert!(what.contains("handed over"), "{what}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn a_hand_over_wakes_a_blocked_receiver() {
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let receiver = {
        let pool = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
        std::thread::spawn(move || {
            pool.receive_timeout(Duration::from_secs(20))
                .map(|b| b.to_vec())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut frame = pool.allocate().unwrap();
    frame.extend_from_slice(&[9, 8, 7]).unwrap();
    pool.hand_over(frame).unwrap();
    assert_eq!(receiver.join().unwrap().unwrap(), [9, 8, 7]);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn handing_over_a_foreign_buffer_is_refused() {
    use pagebuf::BufferAllocator;
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let other = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let heap = pagebuf::HeapAllocator::default().allocate(100).unwrap();
    match pool.hand_over(heap) {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains("not a frame of this SharedPool"), "{m}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let foreign = other.allocate().unwrap();
    assert!(matches!(
        pool.hand_over(foreign),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        other.stats().free,
        1,
        "the refused frame was dropped back to its pool"
    );
    assert!(pool.try_receive().unwrap().is_none());
}

#[test]
fn a_token_out_of_range_is_corrupt() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    rustix::io::pwrite(
        pool.as_fd(),
        &token(0, 1, 1000).to_le_bytes(),
        ring_cell_offset(2, 0),
    )
    .unwrap();
    match pool.try_receive() {
        Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("frame 1000"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(pool.try_allocate().is_none(), "the pool is poisoned");
}

/// Puts a forged token in cell 0 of `pool` (2 frames), from this process (entry 0,
/// generation 1), naming frame `index`.
fn forge_token(pool: &SharedPool, index: u64) {
    let cell = token(0, 1, index).to_le_bytes();
    rustix::io::pwrite(pool.as_fd(), &cell, ring_cell_offset(2, 0)).unwrap();
}

fn expect_not_handed_over(result: pagebuf::Result<Option<pagebuf::Buffer>>) {
    match result {
        Err(Error::Corrupt { detail, .. }) => {
            assert!(detail.contains("not handed over"), "{detail}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_token_for_a_frame_not_handed_over_is_corrupt() {
    // Frame 1 is free: a token naming it (from this live process) is forged.
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let _held = pool.allocate().unwrap();
    forge_token(&pool, 1);
    expect_not_handed_over(pool.try_receive());
    // Frame 0 is held by the process the token names: as far as anyone can tell, that
    // sender is between putting its token and committing the frame. Nothing to
    // receive yet; once it returns the frame instead, the token is plainly forged.
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let held = pool.allocate().unwrap();
    forge_token(&pool, 0);
    assert!(pool.try_receive().unwrap().is_none());
    drop(held);
    expect_not_handed_over(pool.try_receive());
}

#[test]
fn a_token_handed_twice_is_corrupt() {
    let pool = SharedPool::create(Framing::new(4096, 2)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let frame = pool.allocate().unwrap();
    pool.hand_over(frame).unwrap();
    // The token as it sits in cell 0 (lap 0), copied before it is taken.
    let mut copy = [0u8; 8];
    rustix::io::pread(pool.as_fd(), &mut copy, ring_cell_offset(2, 0)).unwrap();
    assert_ne!(u64::from_le_bytes(copy), 0);
    let got = peer.try_receive().unwrap().unwrap();
    // A hostile peer replays it in the next cell (also lap 0).
    rustix::io::pwrite(pool.as_fd(), &copy, ring_cell_offset(2, 1)).unwrap();
    expect_not_handed_over(peer.try_receive());
    // The frame received first is still this process's one view of it.
    assert_eq!(got.ref_count(), 1);
    // A poisoned pool refuses a hand-over before it looks at the frame, which is
    // dropped as usual (here one of another pool: it goes back there).
    let peer_pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let frame = peer_pool.allocate().unwrap();
    drop(got);
    let err = pool.hand_over(frame).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(
        peer_pool.stats().free,
        1,
        "the refused frame went back to its pool"
    );
}

/// Receives (and drops) every frame handed over until none comes for 200 ms.
fn drain(pool: &SharedPool) {
    while pool.receive_timeout(Duration::from_millis(200)).is_ok() {}
}

/// Kills a child playing `role` (a hand-over storm against `parent`, which runs
/// beside it here) at 16 instants, and checks that every frame comes back each time.
fn kill_mid_hand_over(role: &str, parent: fn(&SharedPool, &std::sync::atomic::AtomicBool)) {
    use std::sync::atomic::{AtomicBool, Ordering};
    const FRAMES: usize = 4;
    let pool = SharedPool::create(Framing::new(4096, FRAMES)).unwrap();
    for round in 0..16u64 {
        let (mut child, lines) = spawn_child(&pool, role);
        expect_line(&lines, "storming");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| parent(&pool, &stop));
            std::thread::sleep(Duration::from_micros(300 + (round * 7919) % 6000));
            child.0.kill().unwrap();
            let _ = child.0.wait();
            stop.store(true, Ordering::Relaxed);
        });
        // Frames in transit are delivered to the next receiver (here, us); those the
        // child held, or was between two steps with, are freed as a dead process's.
        drain(&pool);
        let frames: Vec<_> = (0..FRAMES)
            .map(|k| {
                pool.allocate_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|e| {
                        panic!("{role} round {round}: frame {k} never came back: {e}")
                    })
            })
            .collect();
        drop(frames);
        assert_eq!(pool.stats().free, FRAMES, "{role} round {round}");
    }
}

#[test]
fn a_sender_killed_at_any_instant_of_a_hand_over_loses_no_frame() {
    kill_mid_hand_over("send", |pool, stop| {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Some(frame)) = pool.try_receive() {
                assert_eq!(frame[0], 0x5e, "a frame received before it was written");
            }
        }
    });
}

#[test]
fn a_receiver_killed_at_any_instant_of_a_hand_over_loses_no_frame() {
    kill_mid_hand_over("receive-storm", |pool, stop| {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(mut frame) = pool.try_allocate() {
                frame.extend_from_slice(&[0x5e]).unwrap();
                pool.hand_over(frame).unwrap();
            }
        }
    });
}

#[test]
fn frames_handed_to_another_process_arrive_byte_exact_and_come_back_when_it_is_killed() {
    let pool = SharedPool::create(Framing::new(8 << 20, 3)).unwrap();
    let (mut child, lines) = spawn_child(&pool, "receive");
    for len in [1usize, 4096 + 1, 8 << 20] {
        let mut frame = pool.allocate_timeout(Duration::from_secs(20)).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| pattern(len, i)).collect();
        frame.extend_from_slice(&bytes).unwrap();
        pool.hand_over(frame).unwrap();
    }
    expect_line(&lines, "received all");
    assert_eq!(pool.stats().in_use, 3);
    assert!(pool.try_allocate().is_none(), "the child holds every frame");
    child.0.kill().unwrap();
    let back: Vec<_> = (0..3)
        .map(|_| pool.allocate_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    drop(back);
    assert_eq!(pool.stats().free, 3);
}

#[test]
fn threads_handing_over_through_two_attachments_lose_and_duplicate_nothing() {
    const PER_SENDER: u32 = 1500;
    let pool = SharedPool::create(Framing::new(64, 4)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let senders: Vec<_> = (0..2u32)
        .map(|s| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for n in 0..PER_SENDER {
                    let mut frame = pool.allocate_timeout(Duration::from_secs(20)).unwrap();
                    frame
                        .extend_from_slice(&(s * PER_SENDER + n).to_le_bytes())
                        .unwrap();
                    pool.hand_over(frame).unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let peer = peer.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < PER_SENDER as usize {
                    let frame = peer.receive_timeout(Duration::from_secs(20)).unwrap();
                    assert_eq!(frame.len(), 4);
                    seen.push(u32::from_le_bytes(frame[..4].try_into().unwrap()));
                }
                seen
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let mut all: Vec<u32> = receivers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..2 * PER_SENDER).collect::<Vec<_>>());
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use), (4, 0));
}

/// The byte each frame is filled with (every byte of a frame the same), sorted: which
/// fills the frames carry, whatever order the pool handed them out in.
fn fill_bytes(frames: &mut [BufferMut]) -> Vec<u8> {
    let mut fills: Vec<u8> = frames
        .iter_mut()
        .map(|frame| {
            let bytes = frame.whole_mut();
            assert!(
                bytes.iter().all(|&b| b == bytes[0]),
                "a frame of mixed bytes"
            );
            bytes[0]
        })
        .collect();
    fills.sort_unstable();
    fills
}

/// `vm.nr_hugepages` raised for a test and put back after (as root only).
struct ReservedHugePages(u64);

impl ReservedHugePages {
    const PATH: &str = "/proc/sys/vm/nr_hugepages";

    fn raise_by(pages: u64) -> Option<ReservedHugePages> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let before: u64 = std::fs::read_to_string(Self::PATH)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::fs::write(Self::PATH, (before + pages).to_string()).ok()?;
        Some(ReservedHugePages(before))
    }
}

impl Drop for ReservedHugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.to_string());
    }
}

fn huge(choice: pagebuf::memory::HugePages) -> pagebuf::pool::FrameMemory {
    pagebuf::pool::FrameMemory::Pages(pagebuf::memory::RegionOptions::default().huge_pages(choice))
}

/// A pool on reserved huge pages (`MFD_HUGETLB`): its frames start on huge-page
/// boundaries, another attachment maps and checks it, and a frame handed over arrives
/// byte-exact. Without reserved pages, `Require` is `Unsupported` naming
/// `vm.nr_hugepages` and `Prefer` falls back to normal pages with a note saying why.
#[test]
fn a_pool_on_huge_pages_or_a_refusal_naming_nr_hugepages() {
    use pagebuf::memory::HugePages;
    let framing = |choice| Framing::new(3 << 20, 4).memory(huge(choice));
    let free = pagebuf::memory::huge_page_size().is_some()
        && std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("HugePages_Free:") && !l.ends_with(" 0"));
    if !free {
        match SharedPool::create(framing(HugePages::Require)) {
            Err(Error::Unsupported(why)) => assert!(why.contains("nr_hugepages"), "{why}"),
            Ok(pool) => assert!(pool.is_huge(), "pages reserved meanwhile"),
            Err(other) => panic!("{other}"),
        }
        let pool = SharedPool::create(framing(HugePages::Prefer)).unwrap();
        if !pool.is_huge() {
            let note = pool.fallback_note().expect("a fallback says why");
            assert!(note.contains("nr_hugepages"), "{note}");
        }
    }
    // 4 frames of 3 MiB, the bookkeeping's own huge page: 7 pages of 2 MiB; 8 reserved.
    let Some(_reserved) = ReservedHugePages::raise_by(8) else {
        eprintln!("skipped the huge-page pool itself: not root");
        return;
    };
    let pool = SharedPool::create(framing(HugePages::Require)).unwrap();
    assert!(pool.is_huge() && pool.fallback_note().is_none());
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    assert!(peer.is_huge());
    let mut frame = pool.allocate().unwrap();
    let huge_page = pagebuf::memory::huge_page_size().unwrap();
    let base = frame.as_ptr() as usize;
    assert_eq!(base % huge_page, 0, "a frame starts on a huge page");
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: usize| (i * 7 + i / 4096) as u8)
        .collect();
    frame.extend_from_slice(&data).unwrap();
    pool.hand_over(frame).unwrap();
    let received = peer.receive_timeout(Duration::from_secs(5)).unwrap();
    assert!(received[..] == data[..], "the frame arrives byte-exact");
    drop(received);
    assert_eq!(pool.stats().free, 4);
}

/// A ring registers a shared pool's mapping as fixed buffers: a frame received from
/// another attachment is written to a file as `WRITE_FIXED` and read back into a frame
/// as `READ_FIXED`, byte-exact; registering it twice is refused; dropping the
/// registration gives the slots back once no frame is out.
#[test]
fn a_ring_writes_received_frames_from_registered_shared_memory() {
    use pagebuf::{DirectFile, IoRing};
    let Ok(ring) =
        IoRing::with_options(pagebuf::RingOptions::default().engine(pagebuf::Engine::Uring))
    else {
        eprintln!("skipped: io_uring is refused here");
        return;
    };
    let frame = 64 << 10;
    let pool = SharedPool::create(Framing::new(frame, 4)).unwrap();
    let peer = SharedPool::attach(pool.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let registration = ring.register_shared_pool(&peer).unwrap();
    assert!(ring.stats().registered_bytes >= 4 * frame);
    match ring.register_shared_pool(&peer.clone()) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("already registered"), "{why}"),
        other => panic!("registered twice: {other:?}"),
    }
    let dir = std::env::temp_dir().join(format!("pagebuf-shared-fixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = DirectFile::create(dir.join("frames")).unwrap();
    let data: Vec<u8> = (0..frame).map(|i| (i * 13 + 5) as u8).collect();
    let mut filled = pool.allocate().unwrap();
    filled.extend_from_slice(&data).unwrap();
    pool.hand_over(filled).unwrap();
    let received = peer.receive_timeout(Duration::from_secs(5)).unwrap();
    let before = ring.stats();
    ring.write_at(&file, received, 0).wait().unwrap();
    let back = ring
        .read_at(&file, peer.allocate().unwrap(), 0)
        .wait()
        .unwrap();
    assert!(back[..] == data[..], "read back byte-exact");
    let after = ring.stats();
    assert!(
        after.fixed_ops >= before.fixed_ops + 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.plain_ops, before.plain_ops, "{before:?} -> {after:?}");
    drop(registration);
    assert!(
        ring.stats().registered_bytes > 0,
        "let go under a frame still out"
    );
    drop(back);
    assert_eq!(
        ring.stats().registered_bytes,
        0,
        "kept after the frames came home"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
