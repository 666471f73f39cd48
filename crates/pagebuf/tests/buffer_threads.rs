//! Buffers across threads: shared `Buffer`s cloned, sliced and dropped on many threads,
//! `BufferMut`s moved to other threads and dropped there, and `try_into_mut` racing
//! with clones being dropped elsewhere. Every test checks that the content each thread
//! sees is the content written, and that the memory came back exactly once (allocator
//! stats, owner drop counters).

use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

use pagebuf::{page_size, Buffer, BufferAllocator, BufferMut, HeapAllocator, PageAllocator};

mod support;
use support::CountedOwner;

// Compile-time: both buffer types cross threads and stay four words.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Buffer>();
    send_sync::<BufferMut>();
    assert!(size_of::<Buffer>() <= 32);
    assert!(size_of::<BufferMut>() <= 32);
};

/// Threads besides the one that allocates.
const THREADS: usize = 4;

/// Where test buffers come from: each allocator once, plus owners, with the counts
/// needed to check that everything came back exactly once.
struct Sources {
    heap: HeapAllocator,
    heap_paged: HeapAllocator,
    pages: PageAllocator,
    owner_drops: Arc<AtomicUsize>,
    owners: AtomicUsize,
}

const KINDS: usize = 4;

impl Sources {
    fn new() -> Sources {
        Sources {
            heap: HeapAllocator::default(),
            heap_paged: HeapAllocator::default(),
            pages: PageAllocator::default(),
            owner_drops: Arc::new(AtomicUsize::new(0)),
            owners: AtomicUsize::new(0),
        }
    }

    /// A fresh, empty-content buffer of `size` bytes from source `kind % KINDS`.
    fn allocate(&self, kind: usize, size: usize) -> BufferMut {
        let mut buf = match kind % KINDS {
            0 => self.heap.allocate(size).unwrap(),
            1 => {
                let buf = self.heap_paged.allocate_page_aligned(size).unwrap();
                assert_eq!(buf.as_ptr() as usize % page_size(), 0);
                buf
            }
            2 => self.pages.allocate(size).unwrap(),
            _ => {
                self.owners.fetch_add(1, Ordering::SeqCst);
                BufferMut::from_owner(CountedOwner {
                    bytes: vec![0xEE; size],
                    drops: Arc::clone(&self.owner_drops),
                })
            }
        };
        buf.clear();
        assert_eq!(buf.max_len(), size);
        buf
    }

    /// Asserts that every allocation and every owner came back exactly once, and that
    /// there were `expected` of them in all.
    fn assert_all_returned(&self, expected: usize) {
        let mut total = 0;
        for (name, stats) in [
            ("heap", self.heap.stats()),
            ("heap_paged", self.heap_paged.stats()),
            ("pages", self.pages.stats()),
        ] {
            assert_eq!(stats.allocations, stats.releases, "{name}: {stats:?}");
            assert_eq!(stats.live_buffers, 0, "{name}: {stats:?}");
            assert_eq!(stats.live_bytes, 0, "{name}: {stats:?}");
            total += stats.allocations as usize;
        }
        let owners = self.owners.load(Ordering::SeqCst);
        assert_eq!(
            self.owner_drops.load(Ordering::SeqCst),
            owners,
            "each owner dropped exactly once"
        );
        assert_eq!(total + owners, expected, "allocations in all");
    }
}

/// The byte at position `i` of buffer number `n`.
fn byte(n: usize, i: usize) -> u8 {
    (n.wrapping_mul(131) ^ i.wrapping_mul(7)) as u8
}

fn fill(buf: &mut BufferMut, n: usize, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| byte(n, i)).collect();
    buf.extend_from_slice(&data).unwrap();
}

/// Asserts that `bytes` are bytes `from..` of buffer number `n`.
fn verify(bytes: &[u8], n: usize, from: usize) {
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(b, byte(n, from + i), "buffer {n}, byte {}", from + i);
    }
}

/// Whether `bytes` are bytes `from..` of buffer number `n` (for threads that must not
/// panic while others wait at a barrier).
fn holds(bytes: &[u8], n: usize, from: usize) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == byte(n, from + i))
}

#[test]
fn buffer_types_are_send_sync_and_small() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Buffer>();
    send_sync::<BufferMut>();
    assert!(size_of::<Buffer>() <= 32, "{}", size_of::<Buffer>());
    assert!(size_of::<BufferMut>() <= 32, "{}", size_of::<BufferMut>());
}

/// One thread allocates, fills and freezes; each of the others gets its own reference,
/// clones it and slices the clones, checks every byte, keeps a few buffers a while so
/// the last reference is dropped on any thread, and drops them.
#[test]
fn frozen_buffers_are_cloned_sliced_and_dropped_on_other_threads() {
    const BUFFERS: usize = 2_000;
    let sources = Sources::new();
    let checked = AtomicUsize::new(0);
    thread::scope(|s| {
        let mut senders = Vec::new();
        for t in 0..THREADS {
            let (tx, rx) = mpsc::sync_channel::<(usize, Buffer)>(8);
            senders.push(tx);
            let checked = &checked;
            s.spawn(move || {
                // Held back for a while, so releases happen out of order and on any thread.
                let mut kept: Vec<Buffer> = Vec::new();
                for (n, buf) in rx {
                    let len = buf.len();
                    verify(&buf, n, 0);
                    let clone = buf.clone();
                    assert!(clone.ref_count() >= 2);
                    assert_eq!(clone.as_ptr(), buf.as_ptr());
                    let (a, b) = ((n + t) % (len + 1), (n * 7 + t) % (len + 1));
                    let (a, b) = (a.min(b), a.max(b));
                    let slice = clone.slice(a..b).unwrap();
                    verify(&slice, n, a);
                    let inner = slice.slice(..(b - a) / 2).unwrap();
                    verify(&inner, n, a);
                    assert!(inner.ref_count() >= 4);
                    assert!(clone.slice(a..len + 1).is_err());
                    drop(clone);
                    verify(&slice, n, a);
                    drop(buf);
                    verify(&inner, n, a);
                    kept.push(inner);
                    kept.push(slice);
                    if kept.len() > 2 * (n % 5) {
                        let k = n % kept.len();
                        kept.swap_remove(k);
                    }
                    if kept.len() > 8 {
                        kept.drain(..4);
                    }
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for n in 0..BUFFERS {
            let size = 1 + (n * 997) % (2 * page_size());
            let mut buf = sources.allocate(n, size);
            fill(&mut buf, n, size.saturating_sub(n % 3));
            let shared = buf.freeze();
            for tx in &senders {
                tx.send((n, shared.clone())).unwrap();
            }
            // Usually dropped here before the others are done; sometimes last.
            if n % 16 == 0 {
                thread::yield_now();
            }
            drop(shared);
        }
    });
    assert_eq!(checked.load(Ordering::Relaxed), BUFFERS * THREADS);
    sources.assert_all_returned(BUFFERS);
}

/// Many threads clone and slice the *same* `Buffer` (through `&Buffer`) at once; no
/// increment or decrement may be lost: afterwards the count is exactly one again and
/// `try_into_mut` succeeds.
#[test]
fn concurrent_clones_of_one_buffer_keep_an_exact_count() {
    const ROUNDS: usize = 8;
    const PER_THREAD: usize = 50_000;
    let sources = Sources::new();
    for round in 0..ROUNDS {
        let mut buf = sources.allocate(round, 3000);
        fill(&mut buf, round, 3000);
        let ptr = buf.as_ptr();
        let shared = buf.freeze();
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (shared, start) = (&shared, &start);
                s.spawn(move || {
                    start.wait();
                    let mut held = Vec::with_capacity(4);
                    for i in 0..PER_THREAD {
                        let c = if i % 2 == 0 {
                            shared.clone()
                        } else {
                            shared.slice(i % 3000..).unwrap()
                        };
                        assert!(c.ref_count() >= 2);
                        assert_eq!(c[0], byte(round, if i % 2 == 0 { 0 } else { i % 3000 }));
                        held.push(c);
                        if held.len() == 4 || (i + t) % 3 == 0 {
                            held.clear();
                        }
                    }
                    drop(held);
                    verify(shared, round, 0);
                });
            }
        });
        assert_eq!(shared.ref_count(), 1, "round {round}: lost count");
        let mut back = shared
            .try_into_mut()
            .expect("the only reference after all threads are done");
        assert_eq!(back.as_ptr(), ptr);
        back.whole_mut()[0] = 0xFF;
        assert_eq!(back[0], 0xFF);
    }
    sources.assert_all_returned(ROUNDS);
}

/// `BufferMut`s made on one thread, moved to others, written there, and dropped there
/// (or handed back once written).
#[test]
fn buffer_mut_moves_to_another_thread_and_is_dropped_there() {
    const BUFFERS: usize = 4_000;
    let sources = Sources::new();
    thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<(usize, BufferMut)>();
        let mut senders = Vec::new();
        for _ in 0..THREADS {
            let (tx, rx) = mpsc::sync_channel::<(usize, BufferMut)>(4);
            senders.push(tx);
            let back_tx = back_tx.clone();
            s.spawn(move || {
                for (n, mut buf) in rx {
                    let half = buf.len();
                    verify(&buf, n, 0);
                    // Written on this thread: the rest of the pattern.
                    let rest: Vec<u8> = (half..buf.max_len()).map(|i| byte(n, i)).collect();
                    buf.extend_from_slice(&rest).unwrap();
                    assert_eq!(buf.len(), buf.max_len());
                    verify(&buf, n, 0);
                    if n % 4 == 0 {
                        back_tx.send((n, buf)).unwrap();
                    } else {
                        drop(buf);
                    }
                }
            });
        }
        drop(back_tx);
        let checker = s.spawn(move || {
            let mut returned = 0;
            for (n, buf) in back_rx {
                verify(&buf, n, 0);
                assert_eq!(buf.len(), buf.max_len());
                returned += 1;
            }
            returned
        });
        for n in 0..BUFFERS {
            let size = 2 + (n * 31) % (page_size() + 100);
            let mut buf = sources.allocate(n, size);
            fill(&mut buf, n, size / 2);
            senders[n % THREADS].send((n, buf)).unwrap();
        }
        drop(senders);
        assert_eq!(checker.join().unwrap(), BUFFERS / 4);
    });
    sources.assert_all_returned(BUFFERS);
}

/// The allocating thread keeps one reference and spins on `try_into_mut` while the
/// other threads read their clones and drop them. It may succeed only once every other
/// thread has let go; then it writes the next round's content into the same memory and
/// shares it again. A premature success would show up as a thread that had not yet
/// started dropping, or as a reader seeing the next round's bytes.
#[test]
fn try_into_mut_waits_for_clones_dropped_on_other_threads() {
    const ROUNDS: usize = 2_000;
    const SIZE: usize = 1024;
    let sources = Sources::new();
    for kind in 0..KINDS {
        let first = sources.allocate(kind, SIZE);
        let ptr = first.as_ptr();
        // Per round, how many readers are done reading (counted before they drop).
        let done = Arc::new(AtomicUsize::new(0));
        thread::scope(|s| {
            let mut senders = Vec::new();
            for t in 0..THREADS {
                let (tx, rx) = mpsc::sync_channel::<(usize, Buffer)>(1);
                senders.push(tx);
                let done = Arc::clone(&done);
                s.spawn(move || {
                    for (round, buf) in rx {
                        // Read a few times, for a round- and thread-dependent while.
                        for _ in 0..1 + (round + t) % 3 {
                            verify(&buf, round, 0);
                            let slice = buf.slice(round % SIZE..).unwrap();
                            verify(&slice, round, round % SIZE);
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                        drop(buf);
                    }
                });
            }
            let mut buf = first;
            let mut refusals = 0usize;
            for round in 0..ROUNDS {
                buf.clear();
                fill(&mut buf, round, SIZE);
                let shared = buf.freeze();
                done.store(0, Ordering::SeqCst);
                for tx in &senders {
                    tx.send((round, shared.clone())).unwrap();
                }
                let mut shared = shared;
                buf = loop {
                    match shared.try_into_mut() {
                        Ok(m) => break m,
                        Err(again) => {
                            assert!(again.ref_count() >= 1);
                            refusals += 1;
                            shared = again;
                            std::hint::spin_loop();
                            if refusals % 64 == 0 {
                                thread::yield_now();
                            }
                        }
                    }
                };
                assert_eq!(
                    done.load(Ordering::SeqCst),
                    THREADS,
                    "round {round}: try_into_mut succeeded while a reader held a clone"
                );
                assert_eq!(buf.as_ptr(), ptr, "the memory is reused, not copied");
                assert_eq!((buf.len(), buf.max_len()), (SIZE, SIZE));
                verify(&buf, round, 0);
                // The writer can write, and reads back what it wrote.
                buf.whole_mut().fill(0xA5);
                assert!(buf.iter().all(|&b| b == 0xA5));
            }
            drop(senders);
            assert!(refusals > 0, "kind {kind}: never raced with a reader");
            drop(buf);
        });
    }
    sources.assert_all_returned(KINDS);
}

/// Every thread holds a clone; at a barrier they all race: try `try_into_mut`, and drop
/// the clone if refused. At most one may win per buffer, and only once every other
/// thread has at least started to drop its clone; the winner writes and reads back.
/// Whether someone wins or the last drop frees it, the memory comes back once.
///
/// The threads record violations instead of panicking, so that one failing thread
/// cannot leave the others waiting at the barrier forever.
#[test]
fn try_into_mut_races_between_holders() {
    const ROUNDS: usize = 2_000;
    let sources = Sources::new();
    let winners: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
    let let_go: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
    let early_wins = AtomicUsize::new(0);
    let bad_content = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        let mut senders = Vec::new();
        for t in 0..THREADS {
            let (tx, rx) = mpsc::sync_channel::<(usize, Buffer)>(2);
            senders.push(tx);
            let (winners, let_go, barrier) = (&winners, &let_go, &barrier);
            let (early_wins, bad_content) = (&early_wins, &bad_content);
            let bad = move |ok: bool| {
                if !ok {
                    bad_content.fetch_add(1, Ordering::SeqCst);
                }
            };
            s.spawn(move || {
                for (round, buf) in rx {
                    bad(holds(&buf, round, 0));
                    barrier.wait();
                    if (round + t) % 2 == 0 {
                        thread::yield_now();
                    }
                    match buf.try_into_mut() {
                        Ok(mut m) => {
                            winners[round].fetch_add(1, Ordering::SeqCst);
                            if let_go[round].load(Ordering::SeqCst) != THREADS - 1 {
                                early_wins.fetch_add(1, Ordering::SeqCst);
                            }
                            bad(holds(&m, round, 0));
                            let marker = [t as u8; 16];
                            m.clear();
                            bad(m.extend_from_slice(&marker).is_ok());
                            bad(m[..] == marker);
                        }
                        Err(back) => {
                            bad(holds(&back, round, 0));
                            let_go[round].fetch_add(1, Ordering::SeqCst);
                            drop(back);
                        }
                    }
                }
            });
        }
        for round in 0..ROUNDS {
            let size = 64 + round % 4000;
            let mut buf = sources.allocate(round, size);
            fill(&mut buf, round, size);
            let shared = buf.freeze();
            for tx in &senders[1..] {
                tx.send((round, shared.clone())).unwrap();
            }
            senders[0].send((round, shared)).unwrap();
        }
    });
    assert_eq!(
        early_wins.load(Ordering::SeqCst),
        0,
        "try_into_mut succeeded while another thread still held a clone"
    );
    assert_eq!(
        bad_content.load(Ordering::SeqCst),
        0,
        "a thread saw wrong bytes"
    );
    let mut won = 0;
    for (round, w) in winners.iter().enumerate() {
        let w = w.load(Ordering::SeqCst);
        assert!(
            w <= 1,
            "round {round}: {w} threads got the same memory mutably"
        );
        won += w;
    }
    // Not a rule, but the test would check nothing if no one ever won.
    assert!(
        won > 0,
        "no thread ever won try_into_mut in {ROUNDS} rounds"
    );
    eprintln!("try_into_mut won in {won} of {ROUNDS} rounds");
    sources.assert_all_returned(ROUNDS);
}
