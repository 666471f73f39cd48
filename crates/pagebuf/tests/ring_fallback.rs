//! The ring's fallbacks, each proven in a child copy of this binary that is refused
//! something the way real systems refuse it (DESIGN.md "I/O engine", issue 13):
//! io_uring refused by a seccomp filter (as container runtimes install), io_uring
//! refused by the `kernel.io_uring_disabled` sysctl, and buffer registration refused
//! by `RLIMIT_MEMLOCK`. Each says why through `note()`, and the ring still moves the
//! right bytes.
//!
//! The sysctl is machine-wide: the tests of this binary take one lock, so none of them
//! runs while it is set, and the parent puts the old value back even when the child
//! fails.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pagebuf::pool::{FramePool, Framing};
use pagebuf::ring::{Engine, RingOptions};
use pagebuf::{BufferAllocator, DirectFile, Error, IoRing, PageAllocator};

mod support;
use support::{
    child_reached, in_child, patterned_file, refuse_syscall, run_child_within, within, ScratchDir,
};

/// Held by every test of this binary while it (or its child) runs.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const LIMIT: Duration = Duration::from_secs(60);

/// Runs test `name` in a child copy of this binary and checks that it succeeded and
/// either reached `marker` or skipped with a printed reason.
fn run_in_child(name: &'static str, marker: &str) {
    child_reached(run_child_within(name, &[]), &[marker, "skipped:"]);
}

/// Reads a patterned file through `ring` (whole, and in 4 KiB pieces) and checks every
/// byte; the file is made in `dir`.
fn reads_are_exact(ring: &IoRing, dir: &std::path::Path) {
    let path = dir.join("file");
    let len = 1 << 20;
    let bytes = patterned_file(&path, 21, len);
    let file = DirectFile::open(&path).unwrap();
    let ring = ring.clone();
    within(LIMIT, "reads on the fallback ring", move || {
        let pages = PageAllocator::default();
        let whole = ring
            .read_at(&file, pages.allocate_page_aligned(len).unwrap(), 0)
            .wait()
            .unwrap();
        assert!(whole[..] == bytes[..], "whole read: bytes differ");
        let pendings: Vec<_> = (0..len / 4096)
            .map(|i| {
                let buf = pages.allocate_page_aligned(4096).unwrap();
                ring.read_at(&file, buf, (i * 4096) as u64)
            })
            .collect();
        for (i, pending) in pendings.into_iter().enumerate() {
            let buf = pending.wait().unwrap();
            assert!(buf[..] == bytes[i * 4096..(i + 1) * 4096], "read {i}");
        }
    });
}

/// In a child where io_uring is refused (by whatever `cause` names): `Auto` takes the
/// thread engine and says why, naming `cause`; `Uring` is `Unsupported` naming it too;
/// the default ring falls back as well; reads are exact.
fn check_refused(cause: &str, dir: &std::path::Path) {
    let ring = IoRing::with_options(RingOptions::default().engine(Engine::Auto)).unwrap();
    assert_eq!(ring.engine(), Engine::Threads);
    let note = ring.note().expect("a fallback without a note");
    assert!(
        note.contains(cause),
        "the note does not name {cause}: {note}"
    );
    println!("child: note: {note}");
    reads_are_exact(&ring, dir);

    let default = IoRing::new().unwrap();
    assert_eq!(default.engine(), Engine::Threads);
    assert!(
        default.note().is_some_and(|n| n.contains(cause)),
        "{:?}",
        default.note()
    );

    match IoRing::with_options(RingOptions::default().engine(Engine::Uring)) {
        Err(Error::Unsupported(why)) => {
            assert!(
                why.contains(cause),
                "Unsupported does not name {cause}: {why}"
            );
            println!("child: asked for Uring: {why}");
        }
        Err(other) => panic!("asked for Uring: {other}, not Unsupported"),
        Ok(ring) => panic!(
            "asked for Uring where it is refused: got {:?}",
            ring.engine()
        ),
    }
    // Registration on the thread engine is fine (nothing to register) and works.
    let pool = FramePool::new(Framing::new(64 << 10, 2)).unwrap();
    let ring = IoRing::with_options(RingOptions::default().register(&pool)).unwrap();
    assert_eq!(ring.engine(), Engine::Threads);
    assert_eq!(ring.stats().fixed_ops, 0);
}

#[test]
fn seccomp_refusing_io_uring_falls_back_to_threads() {
    const NAME: &str = "seccomp_refusing_io_uring_falls_back_to_threads";
    if !in_child(NAME) {
        let _alone = alone();
        run_in_child(NAME, "child: fell back");
        return;
    }
    /// `io_uring_setup`: the same number on every architecture (the unified table).
    const IO_URING_SETUP: i64 = 425;
    refuse_syscall(IO_URING_SETUP);

    check_refused("seccomp", &ScratchDir::new("ring_fallback", "seccomp"));
    println!("child: fell back");
}

/// Sets `kernel.io_uring_disabled` and puts the old value back when dropped, pass or
/// fail.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> std::io::Result<Sysctl> {
        let old = std::fs::read_to_string(path)?;
        std::fs::write(path, value)?;
        Ok(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(self.path, &self.old) {
            eprintln!("could not put {} back to {}: {err}", self.path, self.old);
        }
    }
}

#[test]
fn io_uring_disabled_sysctl_falls_back_to_threads() {
    const NAME: &str = "io_uring_disabled_sysctl_falls_back_to_threads";
    const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";
    if !in_child(NAME) {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: setting kernel.io_uring_disabled needs root");
            return;
        }
        if !std::path::Path::new(SYSCTL).exists() {
            eprintln!("skipped: this kernel has no kernel.io_uring_disabled (before 6.6)");
            return;
        }
        let _alone = alone();
        // 2 refuses everyone (1 still lets root in).
        let guard = match Sysctl::set(SYSCTL, "2") {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("skipped: cannot set kernel.io_uring_disabled: {err}");
                return;
            }
        };
        // A child that hangs fails the test, and the guard still puts the value back.
        let child = run_child_within(NAME, &[]);
        drop(guard);
        child_reached(child, &["child: fell back"]);
        return;
    }
    assert_eq!(std::fs::read_to_string(SYSCTL).unwrap().trim(), "2");
    check_refused(
        "kernel.io_uring_disabled",
        &ScratchDir::new("ring_fallback", "sysctl"),
    );
    println!("child: fell back");
}

#[test]
fn refused_registration_goes_plain_and_names_rlimit_memlock() {
    const NAME: &str = "refused_registration_goes_plain_and_names_rlimit_memlock";
    if !in_child(NAME) {
        let _alone = alone();
        run_in_child(NAME, "child: plain");
        return;
    }
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    // Root passes RLIMIT_MEMLOCK through CAP_IPC_LOCK, and io_uring looks at the
    // capability of the thread that creates the ring: drop it here, on this thread,
    // which then creates the ring.
    let mut caps = capabilities(None).unwrap();
    caps.effective.remove(CapabilitySet::IPC_LOCK);
    caps.permitted.remove(CapabilitySet::IPC_LOCK);
    set_capabilities(None, caps).unwrap();
    let limit = 64 << 10;
    rustix::process::setrlimit(
        rustix::process::Resource::Memlock,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .unwrap();

    let frame = 1 << 20;
    let pool = FramePool::new(Framing::new(frame, 16)).unwrap();
    let options = RingOptions::default().engine(Engine::Uring).register(&pool);
    let ring = match IoRing::with_options(options) {
        Ok(ring) => ring,
        Err(Error::Unsupported(why)) => {
            println!("skipped: io_uring is refused here: {why}");
            return;
        }
        Err(err) => panic!("a ring whose registration is refused: {err}"),
    };
    assert_eq!(ring.engine(), Engine::Uring);
    let note = ring.note().expect("registration refused without a note");
    assert!(note.contains("RLIMIT_MEMLOCK"), "{note}");
    assert!(
        note.contains(&limit.to_string()) || note.contains("64 KiB"),
        "the note does not give the limit's value: {note}"
    );
    println!("child: note: {note}");

    let dir = ScratchDir::new("ring_fallback", "memlock");
    let path = dir.join("file");
    let bytes = patterned_file(&path, 22, 4 * frame);
    let file = DirectFile::open(&path).unwrap();
    let ring2 = ring.clone();
    let expected = bytes.clone();
    within(LIMIT, "reads into refused frames", move || {
        let pendings: Vec<_> = (0..4)
            .map(|i| ring2.read_at(&file, pool.try_allocate().unwrap(), (i * frame) as u64))
            .collect();
        for (i, pending) in pendings.into_iter().enumerate() {
            let buf = pending.wait().unwrap();
            assert!(buf[..] == expected[i * frame..(i + 1) * frame], "read {i}");
        }
    });
    let stats = ring.stats();
    assert_eq!(
        stats.fixed_ops, 0,
        "fixed ops without a registration: {stats:?}"
    );
    assert!(stats.plain_ops >= 4, "{stats:?}");

    // Registered on the built ring: refused the same way, with the limit named.
    let other = FramePool::new(Framing::new(frame, 4)).unwrap();
    match ring.register_pool(&other) {
        Err(Error::OutOfMemory(why)) => {
            assert!(why.contains("RLIMIT_MEMLOCK"), "{why}");
            assert!(why.contains(&limit.to_string()), "{why}");
        }
        other => panic!("a registration past RLIMIT_MEMLOCK: {other:?}"),
    }
    assert_eq!(ring.stats().registered_bytes, 0);
    // A reader's own blocks, refused too, go plain and read exact.
    let options = pagebuf::direct::DirectReaderOptions::default().ring(ring.clone());
    let mut input =
        pagebuf::direct::DirectReader::with_options(DirectFile::open(&path).unwrap(), options)
            .unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut input, &mut back).unwrap();
    assert!(back == bytes, "the reader's bytes differ");
    assert_eq!(ring.stats().fixed_ops, 0);
    println!("child: plain: {stats:?}");
}
