//! A frame pool where `membarrier` is refused, each case in a child copy of this binary
//! with a seccomp filter (as a sandbox installs): refused from the start, threads get
//! no parking slots and `try_allocate` stays exact; refused after frames were parked,
//! a reclaimer leaves other threads' frames to them (no frame taken twice), and they
//! come home when their owners take them or exit.

use std::sync::mpsc;
use std::time::Duration;

use pagebuf::pool::{FramePool, Framing};

mod support;
use support::{child_reached, in_child, refuse_syscall, run_child_within};

const FRAMES: usize = 4;

/// Runs test `name` in a child copy of this binary and checks that it reached `marker`.
fn run_in_child(name: &'static str, marker: &str) {
    child_reached(run_child_within(name, &[]), &[marker]);
}

/// Installs, on every thread of this process, a filter that refuses `membarrier`.
fn refuse_membarrier() {
    #[cfg(target_arch = "x86_64")]
    const MEMBARRIER: i64 = 324;
    #[cfg(target_arch = "aarch64")]
    const MEMBARRIER: i64 = 283;
    refuse_syscall(MEMBARRIER);
    use rustix::thread::{membarrier, MembarrierCommand};
    assert!(
        membarrier(MembarrierCommand::PrivateExpedited).is_err(),
        "the filter did not refuse membarrier"
    );
}

/// A thread that takes `count` frames of `pool` and drops them all (with a parking slot,
/// one stays parked on it), then waits for a word: `true` = take one frame and drop it
/// again, `false` = exit. Answers each word once done.
fn owner_thread(pool: FramePool, count: usize) -> (mpsc::Sender<bool>, mpsc::Receiver<()>) {
    let (to_owner, words) = mpsc::channel::<bool>();
    let (done, from_owner) = mpsc::channel();
    std::thread::spawn(move || {
        let frames: Vec<_> = (0..count)
            .map(|i| {
                let mut buf = pool.try_allocate().expect("a free frame");
                buf.extend_from_slice(&[i as u8; 64]).unwrap();
                buf
            })
            .collect();
        drop(frames);
        done.send(()).unwrap();
        while let Ok(again) = words.recv() {
            if !again {
                break;
            }
            drop(pool.try_allocate().expect("this thread's own frame"));
            done.send(()).unwrap();
        }
        drop(pool);
        // The thread's exit gives a parked frame back.
    });
    from_owner.recv().unwrap();
    (to_owner, from_owner)
}

/// How many frames `pool` gives this thread without waiting (all dropped afterwards).
fn frames_free(pool: &FramePool) -> usize {
    let mut taken = Vec::new();
    while let Some(buf) = pool.try_allocate() {
        assert!(buf.is_empty(), "a frame handed out twice or not released");
        taken.push(buf);
        assert!(taken.len() <= FRAMES, "more frames than the pool has");
    }
    taken.len()
}

#[test]
fn refused_from_the_start_parks_nothing_and_stays_exact() {
    const NAME: &str = "refused_from_the_start_parks_nothing_and_stays_exact";
    if !in_child(NAME) {
        run_in_child(NAME, "child: exact");
        return;
    }
    refuse_membarrier();
    let pool = FramePool::new(Framing::new(4096, FRAMES)).unwrap();
    let (owner, answers) = owner_thread(pool.clone(), FRAMES);
    // With parking, one frame would sit on the owner thread, out of reach without a
    // heavy barrier; without, every frame is on the lists.
    assert_eq!(frames_free(&pool), FRAMES);
    owner.send(true).unwrap();
    answers.recv().unwrap();
    assert_eq!(frames_free(&pool), FRAMES);
    // Threads hammering the pool still never share a frame.
    let workers: Vec<_> = (0..3u8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for round in 0..20_000u32 {
                    if let Some(mut buf) = pool.try_allocate() {
                        let tag = [t; 8];
                        buf.extend_from_slice(&tag).unwrap();
                        std::hint::black_box(&buf);
                        assert_eq!(&buf[..], &tag, "round {round}: a frame shared");
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    owner.send(false).unwrap();
    assert_eq!(pool.stats().in_use, 0);
    println!("child: exact");
}

#[test]
fn refused_later_leaves_parked_frames_to_their_owners() {
    const NAME: &str = "refused_later_leaves_parked_frames_to_their_owners";
    if !in_child(NAME) {
        run_in_child(NAME, "child: owners keep theirs");
        return;
    }
    let pool = FramePool::new(Framing::new(4096, FRAMES)).unwrap();
    let (owner, answers) = owner_thread(pool.clone(), FRAMES);
    // Before the filter, the heavy barrier works: the parked frame is reclaimed.
    assert_eq!(frames_free(&pool), FRAMES);
    owner.send(true).unwrap();
    answers.recv().unwrap();
    refuse_membarrier();
    // Now nothing orders the owner's slot against us: its frame stays its own.
    assert_eq!(frames_free(&pool), FRAMES - 1);
    // The owner still takes and parks it, and nobody else gets it meanwhile.
    owner.send(true).unwrap();
    answers.recv().unwrap();
    assert_eq!(frames_free(&pool), FRAMES - 1);
    // Its exit gives it back.
    owner.send(false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().in_use != 0 || frames_free(&pool) != FRAMES {
        assert!(
            std::time::Instant::now() < deadline,
            "the exited owner's frame never came back: {:?}",
            pool.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // A pool dropped while a frame is parked on a live thread is freed when that thread
    // exits (ASan and the debug poison would see a frame used after). This thread has a
    // frame parked too, out of the new owner's reach.
    let (owner, _answers) = owner_thread(pool.clone(), FRAMES - 1);
    drop(pool);
    owner.send(false).unwrap();
    println!("child: owners keep theirs");
}
