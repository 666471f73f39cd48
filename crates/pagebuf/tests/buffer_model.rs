//! Model-based test of `BufferMut` / `Buffer`: random sequences of operations run
//! against the real buffers and against a simple model, compared after every step.
//!
//! The model keeps, per block of memory, every byte the block holds (zeros from a fresh
//! allocation, the owner's bytes, or what was last written), the reference count, the
//! base address and alignment; per live handle, which block it views, where in it, its
//! length and its `max_len`. After each operation every handle must show exactly the
//! model's bytes (`Deref`, and for a `BufferMut` also `whole_mut`, which covers the
//! bytes a longer length would expose), the model's `ref_count`, pointer, alignment and
//! origin, and each allocator's stats and the owners' drop counter must say that exactly
//! the blocks the model has released came back, once each.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pagebuf::{
    page_size, AllocatorStats, Buffer, BufferAllocator, BufferMut, Error, HeapAllocator,
    MemoryOrigin, PageAllocator,
};
use proptest::prelude::*;

mod support;
use support::CountedOwner;

// ---------------------------------------------------------------------------------
// Instrumented owners
// ---------------------------------------------------------------------------------

/// The initial bytes of an owner: never all zero, so they cannot be mistaken for a
/// fresh allocation.
fn owner_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1)
        .collect()
}

/// Bytes to write: a pattern that depends on the seed and the position.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ 0x5A)
        .collect()
}

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// `HeapAllocator::allocate` (alignment 64).
    Heap,
    /// `HeapAllocator::allocate_page_aligned`, through a clone of the allocator.
    HeapPage,
    /// `PageAllocator::allocate`.
    Page,
    /// `BufferMut::from_owner`.
    Owner,
    /// `Buffer::from_owner`: read-only, never becomes a `BufferMut`.
    OwnerReadOnly,
}

#[derive(Debug, Clone)]
enum SetLenTo {
    /// `0..=max_len`, picked by the index.
    Within(Pick),
    /// `max_len + 1 + k`.
    Past(usize),
    /// `usize::MAX`.
    Max,
}

#[derive(Debug, Clone)]
enum BoundSpec {
    Included(Pick),
    Excluded(Pick),
    /// A value far past any length (`usize::MAX`, the overflow edge for `..=` / `(x..`).
    IncludedMax,
    ExcludedMax,
    Unbounded,
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        source: Source,
        size: usize,
        seed: u8,
    },
    /// `allocate(0)` from each allocator: `InvalidArgument`, nothing allocated.
    AllocateZero,
    /// `extend_from_slice` of `room` picked by `amount`, or more than the room.
    Extend {
        h: Pick,
        amount: Pick,
        over: Option<usize>,
        seed: u8,
    },
    /// `whole_mut()[a..b] = pattern`, then `set_len(n)`.
    WriteWhole {
        h: Pick,
        a: Pick,
        b: Pick,
        n: Pick,
        seed: u8,
    },
    SetLen {
        h: Pick,
        to: SetLenTo,
    },
    Clear {
        h: Pick,
    },
    Freeze {
        h: Pick,
    },
    Clone {
        h: Pick,
    },
    Slice {
        h: Pick,
        start: BoundSpec,
        end: BoundSpec,
    },
    /// `slice(a..b)` with `a <= b <= len`, picked as fractions of the length.
    SliceWithin {
        h: Pick,
        a: Pick,
        b: Pick,
    },
    /// `buf = buf.slice(a..b)?`: a slice within, replacing the handle it was made from.
    Narrow {
        h: Pick,
        a: Pick,
        b: Pick,
    },
    Drop {
        h: Pick,
    },
    TryIntoMut {
        h: Pick,
    },
}

fn source_strategy() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Heap),
        Just(Source::HeapPage),
        Just(Source::Page),
        Just(Source::Owner),
        Just(Source::OwnerReadOnly),
    ]
}

fn size_strategy() -> impl Strategy<Value = usize> {
    let page = page_size();
    prop_oneof![
        8 => 1..=3 * page,
        2 => prop_oneof![Just(1usize), Just(page - 1), Just(page), Just(page + 1), Just(3 * page)],
        1 => (1usize << 20)..=(1usize << 20) + page,
    ]
}

/// Picks one of `n` things, as a fraction of the way through them (like
/// `proptest::sample::Index`, which cannot be built by hand for the fixed sequences):
/// shrinks toward the first.
#[derive(Debug, Clone, Copy)]
struct Pick(usize);

impl Pick {
    const FIRST: Pick = Pick(0);
    const LAST: Pick = Pick(usize::MAX);
    const MIDDLE: Pick = Pick(usize::MAX / 2);

    /// A value in `0..n`; `n` must not be 0.
    fn index(self, n: usize) -> usize {
        assert!(n > 0);
        ((n as u128 * self.0 as u128) >> usize::BITS) as usize
    }

    /// The pick that yields `i` out of `n` (`i < n`).
    fn of(i: usize, n: usize) -> Pick {
        assert!(i < n);
        let pick = Pick((((i as u128) << usize::BITS).div_ceil(n as u128)) as usize);
        assert_eq!(pick.index(n), i);
        pick
    }

    fn get<T: Copy>(self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

fn index_strategy() -> impl Strategy<Value = Pick> {
    any::<usize>().prop_map(Pick)
}

fn bound_strategy() -> impl Strategy<Value = BoundSpec> {
    prop_oneof![
        4 => index_strategy().prop_map(BoundSpec::Included),
        4 => index_strategy().prop_map(BoundSpec::Excluded),
        1 => Just(BoundSpec::IncludedMax),
        1 => Just(BoundSpec::ExcludedMax),
        2 => Just(BoundSpec::Unbounded),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let h = index_strategy;
    prop_oneof![
        4 => (source_strategy(), size_strategy(), any::<u8>())
            .prop_map(|(source, size, seed)| Op::Allocate { source, size, seed }),
        1 => Just(Op::AllocateZero),
        5 => (h(), h(), prop::option::weighted(0.2, 1usize..64), any::<u8>())
            .prop_map(|(h, amount, over, seed)| Op::Extend { h, amount, over, seed }),
        4 => (h(), h(), h(), h(), any::<u8>())
            .prop_map(|(h, a, b, n, seed)| Op::WriteWhole { h, a, b, n, seed }),
        4 => (
            h(),
            prop_oneof![
                4 => h().prop_map(SetLenTo::Within),
                2 => (0usize..64).prop_map(SetLenTo::Past),
                1 => Just(SetLenTo::Max),
            ]
        )
            .prop_map(|(h, to)| Op::SetLen { h, to }),
        1 => h().prop_map(|h| Op::Clear { h }),
        4 => h().prop_map(|h| Op::Freeze { h }),
        4 => h().prop_map(|h| Op::Clone { h }),
        6 => (h(), bound_strategy(), bound_strategy())
            .prop_map(|(h, start, end)| Op::Slice { h, start, end }),
        4 => (h(), h(), h()).prop_map(|(h, a, b)| Op::SliceWithin { h, a, b }),
        2 => (h(), h(), h()).prop_map(|(h, a, b)| Op::Narrow { h, a, b }),
        5 => h().prop_map(|h| Op::Drop { h }),
        4 => h().prop_map(|h| Op::TryIntoMut { h }),
    ]
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

struct BlockModel {
    source: Source,
    /// Every byte of the block as the model knows it.
    mem: Vec<u8>,
    /// Address of the first byte (a view at offset `o` must have `as_ptr() == base + o`).
    base: usize,
    /// Alignment the origin guarantees for `base`.
    base_align: usize,
    refs: usize,
}

enum Real {
    Mut(BufferMut),
    Shared(Buffer),
}

struct Handle {
    real: Real,
    block: usize,
    offset: usize,
    len: usize,
    max_len: usize,
}

#[derive(Default, Clone, Copy, Debug)]
struct ExpectedStats {
    allocations: u64,
    releases: u64,
    live_bytes: usize,
}

struct Harness {
    heap: HeapAllocator,
    heap_paged: HeapAllocator,
    heap_paged_clone: HeapAllocator,
    pages: PageAllocator,
    owner_drops: Arc<AtomicUsize>,
    owners_created: usize,
    owners_dropped: usize,
    expected: BTreeMap<&'static str, ExpectedStats>,
    blocks: Vec<BlockModel>,
    handles: Vec<Handle>,
    /// How often each interesting outcome happened, to show the generator reaches them.
    outcomes: BTreeMap<&'static str, usize>,
}

/// The alignment a view at `offset` into a block aligned to `base_align` has.
fn view_alignment(base_align: usize, offset: usize) -> usize {
    if offset == 0 {
        base_align
    } else {
        base_align.min(1 << offset.trailing_zeros())
    }
}

fn allocator_of(source: Source) -> Option<&'static str> {
    match source {
        Source::Heap => Some("heap"),
        Source::HeapPage => Some("heap_paged"),
        Source::Page => Some("pages"),
        Source::Owner | Source::OwnerReadOnly => None,
    }
}

fn is_invalid_argument<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::InvalidArgument(msg)) if !msg.is_empty())
}

impl Harness {
    fn new() -> Harness {
        let heap_paged = HeapAllocator::default();
        Harness {
            heap: HeapAllocator::default(),
            heap_paged_clone: heap_paged.clone(),
            heap_paged,
            pages: PageAllocator::default(),
            owner_drops: Arc::new(AtomicUsize::new(0)),
            owners_created: 0,
            owners_dropped: 0,
            expected: ["heap", "heap_paged", "pages"]
                .into_iter()
                .map(|name| (name, ExpectedStats::default()))
                .collect(),
            blocks: Vec::new(),
            handles: Vec::new(),
            outcomes: BTreeMap::new(),
        }
    }

    fn note(&mut self, outcome: &'static str) {
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    fn stats(&self, name: &str) -> AllocatorStats {
        match name {
            "heap" => self.heap.stats(),
            // Stats are per instance and shared by clones: read them through the
            // original although the clone does the allocating.
            "heap_paged" => self.heap_paged.stats(),
            "pages" => self.pages.stats(),
            _ => unreachable!(),
        }
    }

    /// Indices of handles of one kind, to pick from with a `Pick`.
    fn pick(&self, h: &Pick, want_mut: Option<bool>) -> Option<usize> {
        let candidates: Vec<usize> = self
            .handles
            .iter()
            .enumerate()
            .filter(|(_, handle)| match want_mut {
                None => true,
                Some(true) => matches!(handle.real, Real::Mut(_)),
                Some(false) => matches!(handle.real, Real::Shared(_)),
            })
            .map(|(i, _)| i)
            .collect();
        (!candidates.is_empty()).then(|| h.get(&candidates))
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Allocate { source, size, seed } => self.allocate(*source, *size, *seed),
            Op::AllocateZero => {
                assert!(is_invalid_argument(&self.heap.allocate(0)));
                assert!(is_invalid_argument(&self.heap.allocate_page_aligned(0)));
                assert!(is_invalid_argument(&self.pages.allocate(0)));
                assert!(is_invalid_argument(&self.pages.allocate_page_aligned(0)));
                // The stats check after this op proves nothing was counted.
            }
            Op::Extend {
                h,
                amount,
                over,
                seed,
            } => {
                let Some(i) = self.pick(h, Some(true)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let room = handle.max_len - handle.len;
                let n = match over {
                    Some(extra) => room + extra,
                    None => amount.index(room + 1),
                };
                let data = pattern(n, *seed);
                let Real::Mut(buf) = &mut handle.real else {
                    unreachable!()
                };
                let result = buf.extend_from_slice(&data);
                if n > room {
                    assert!(
                        is_invalid_argument(&result),
                        "extend by {n} with room {room}: {result:?}"
                    );
                    assert_eq!(buf.len(), handle.len, "failed extend changed the length");
                    self.note("extend past max_len refused");
                } else {
                    result.expect("extend within max_len");
                    let at = handle.offset + handle.len;
                    self.blocks[handle.block].mem[at..at + n].copy_from_slice(&data);
                    handle.len += n;
                    self.note("extend");
                }
            }
            Op::WriteWhole { h, a, b, n, seed } => {
                let Some(i) = self.pick(h, Some(true)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let Real::Mut(buf) = &mut handle.real else {
                    unreachable!()
                };
                let whole = buf.whole_mut();
                assert_eq!(whole.len(), handle.max_len, "whole_mut covers max_len");
                let (x, y) = (a.index(handle.max_len + 1), b.index(handle.max_len + 1));
                let (from, to) = (x.min(y), x.max(y));
                let data = pattern(to - from, *seed);
                whole[from..to].copy_from_slice(&data);
                let at = handle.offset;
                self.blocks[handle.block].mem[at + from..at + to].copy_from_slice(&data);
                let new_len = n.index(handle.max_len + 1);
                buf.set_len(new_len).expect("set_len within max_len");
                handle.len = new_len;
                self.note("whole_mut write + set_len");
            }
            Op::SetLen { h, to } => {
                let Some(i) = self.pick(h, Some(true)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let Real::Mut(buf) = &mut handle.real else {
                    unreachable!()
                };
                let n = match to {
                    SetLenTo::Within(ix) => ix.index(handle.max_len + 1),
                    SetLenTo::Past(k) => handle.max_len + 1 + k,
                    SetLenTo::Max => usize::MAX,
                };
                let result = buf.set_len(n);
                if n > handle.max_len {
                    assert!(is_invalid_argument(&result), "set_len({n}): {result:?}");
                    assert_eq!(buf.len(), handle.len, "failed set_len changed the length");
                    self.note("set_len past max_len refused");
                } else {
                    result.expect("set_len within max_len");
                    let grows = n > handle.len;
                    handle.len = n;
                    if grows {
                        self.note("set_len grows");
                    }
                }
            }
            Op::Clear { h } => {
                let Some(i) = self.pick(h, Some(true)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let Real::Mut(buf) = &mut handle.real else {
                    unreachable!()
                };
                buf.clear();
                assert!(buf.is_empty());
                handle.len = 0;
            }
            Op::Freeze { h } => {
                let Some(i) = self.pick(h, Some(true)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let real = std::mem::replace(&mut handle.real, Real::Shared(dummy_buffer()));
                let Real::Mut(buf) = real else { unreachable!() };
                let ptr = buf.as_ptr();
                let frozen = buf.freeze();
                assert_eq!(frozen.as_ptr(), ptr, "freeze moved the data");
                handle.real = Real::Shared(frozen); // drops the placeholder
                self.note("freeze");
            }
            Op::Clone { h } => {
                let Some(i) = self.pick(h, Some(false)) else {
                    return;
                };
                let handle = &self.handles[i];
                let Real::Shared(buf) = &handle.real else {
                    unreachable!()
                };
                let clone = buf.clone();
                assert_eq!(clone.as_ptr(), buf.as_ptr(), "a clone copied the data");
                let new = Handle {
                    real: Real::Shared(clone),
                    block: handle.block,
                    offset: handle.offset,
                    len: handle.len,
                    max_len: handle.max_len,
                };
                self.blocks[new.block].refs += 1;
                self.handles.push(new);
                self.note("clone");
            }
            Op::Slice { h, start, end } => {
                let Some(i) = self.pick(h, Some(false)) else {
                    return;
                };
                let handle = &self.handles[i];
                let Real::Shared(buf) = &handle.real else {
                    unreachable!()
                };
                let len = handle.len;
                // Bound values range over 0..=len + 2, so just-past-the-end is common.
                let value = |ix: &Pick| ix.index(len + 3);
                let start_bound = match start {
                    BoundSpec::Included(ix) => Bound::Included(value(ix)),
                    BoundSpec::Excluded(ix) => Bound::Excluded(value(ix)),
                    BoundSpec::IncludedMax => Bound::Included(usize::MAX),
                    BoundSpec::ExcludedMax => Bound::Excluded(usize::MAX),
                    BoundSpec::Unbounded => Bound::Unbounded,
                };
                let end_bound = match end {
                    BoundSpec::Included(ix) => Bound::Included(value(ix)),
                    BoundSpec::Excluded(ix) => Bound::Excluded(value(ix)),
                    BoundSpec::IncludedMax => Bound::Included(usize::MAX),
                    BoundSpec::ExcludedMax => Bound::Excluded(usize::MAX),
                    BoundSpec::Unbounded => Bound::Unbounded,
                };
                let from = match start_bound {
                    Bound::Included(s) => Some(s),
                    Bound::Excluded(s) => s.checked_add(1),
                    Bound::Unbounded => Some(0),
                };
                let to = match end_bound {
                    Bound::Included(e) => e.checked_add(1),
                    Bound::Excluded(e) => Some(e),
                    Bound::Unbounded => Some(len),
                };
                let result = buf.slice((start_bound, end_bound));
                match (from, to) {
                    (Some(from), Some(to)) if from <= to && to <= len => {
                        let slice = result.unwrap_or_else(|e| {
                            panic!("slice {start_bound:?}..{end_bound:?} of {len}: {e}")
                        });
                        assert_eq!(
                            slice.as_ptr() as usize,
                            buf.as_ptr() as usize + from,
                            "a slice copied the data"
                        );
                        let new = Handle {
                            real: Real::Shared(slice),
                            block: handle.block,
                            offset: handle.offset + from,
                            len: to - from,
                            max_len: to - from,
                        };
                        self.blocks[new.block].refs += 1;
                        self.handles.push(new);
                        self.note("slice");
                    }
                    _ => {
                        assert!(
                            is_invalid_argument(&result),
                            "slice {start_bound:?}..{end_bound:?} of {len} bytes: {result:?}"
                        );
                        match (from, to) {
                            (Some(from), Some(to)) if from > to && to <= len => {
                                self.note("slice start > end refused")
                            }
                            (_, Some(to)) if to > len => self.note("slice end > len refused"),
                            _ => self.note("slice bound overflow refused"),
                        }
                    }
                }
            }
            Op::SliceWithin { h, a, b } => {
                let Some(i) = self.pick(h, Some(false)) else {
                    return;
                };
                let handle = &self.handles[i];
                let Real::Shared(buf) = &handle.real else {
                    unreachable!()
                };
                let (x, y) = (a.index(handle.len + 1), b.index(handle.len + 1));
                let (from, to) = (x.min(y), x.max(y));
                let slice = buf
                    .slice(from..to)
                    .unwrap_or_else(|e| panic!("slice {from}..{to} of {}: {e}", handle.len));
                assert_eq!(slice.as_ptr() as usize, buf.as_ptr() as usize + from);
                let new = Handle {
                    real: Real::Shared(slice),
                    block: handle.block,
                    offset: handle.offset + from,
                    len: to - from,
                    max_len: to - from,
                };
                self.blocks[new.block].refs += 1;
                self.handles.push(new);
                self.note("slice");
            }
            Op::Narrow { h, a, b } => {
                let Some(i) = self.pick(h, Some(false)) else {
                    return;
                };
                let shared: Vec<usize> = (0..self.handles.len())
                    .filter(|&j| matches!(self.handles[j].real, Real::Shared(_)))
                    .collect();
                let h = Pick::of(shared.iter().position(|&j| j == i).unwrap(), shared.len());
                self.apply(&Op::SliceWithin { h, a: *a, b: *b });
                // Drop the handle the slice was made from (the slice is the last one).
                let n = self.handles.len();
                self.apply(&Op::Drop { h: Pick::of(i, n) });
                self.note("narrow");
            }
            Op::Drop { h } => {
                let Some(i) = self.pick(h, None) else {
                    return;
                };
                let handle = self.handles.swap_remove(i);
                let block = handle.block;
                drop(handle.real);
                self.blocks[block].refs -= 1;
                if self.blocks[block].refs == 0 {
                    self.released(block);
                    self.note("drop releases");
                } else {
                    self.note("drop keeps");
                }
            }
            Op::TryIntoMut { h } => {
                let Some(i) = self.pick(h, Some(false)) else {
                    return;
                };
                let handle = &mut self.handles[i];
                let block = &self.blocks[handle.block];
                let should_succeed = block.refs == 1 && block.source != Source::OwnerReadOnly;
                let real = std::mem::replace(&mut handle.real, Real::Shared(dummy_buffer()));
                let Real::Shared(buf) = real else {
                    unreachable!()
                };
                let (ptr, len, max_len) = (buf.as_ptr(), buf.len(), buf.max_len());
                let before = buf.to_vec();
                let new_real = match buf.try_into_mut() {
                    Ok(mut m) => {
                        assert!(
                            should_succeed,
                            "try_into_mut succeeded with {} references ({:?})",
                            block.refs, block.source
                        );
                        assert_eq!(m.as_ptr(), ptr, "try_into_mut moved the data");
                        assert_eq!(m.as_mut_ptr().cast_const(), ptr);
                        assert_eq!((m.len(), m.max_len()), (len, max_len));
                        assert_eq!(&m[..], &before[..]);
                        self.outcomes
                            .entry(if handle.offset > 0 || max_len < block.mem.len() {
                                "try_into_mut ok (slice)"
                            } else {
                                "try_into_mut ok"
                            })
                            .and_modify(|n| *n += 1)
                            .or_insert(1);
                        Real::Mut(m)
                    }
                    Err(back) => {
                        assert!(
                            !should_succeed,
                            "try_into_mut refused the only reference ({:?})",
                            block.source
                        );
                        assert_eq!(back.as_ptr(), ptr);
                        assert_eq!((back.len(), back.max_len()), (len, max_len));
                        assert_eq!(&back[..], &before[..]);
                        *self
                            .outcomes
                            .entry(if block.refs == 1 {
                                "try_into_mut refused (read-only)"
                            } else {
                                "try_into_mut refused (shared)"
                            })
                            .or_default() += 1;
                        Real::Shared(back)
                    }
                };
                handle.real = new_real; // drops the placeholder
            }
        }
    }

    fn allocate(&mut self, source: Source, size: usize, seed: u8) {
        let page = page_size();
        let (real, mem, base_align) = match source {
            Source::Heap => {
                let buf = self.heap.allocate(size).expect("heap allocate");
                assert_eq!(buf.alignment(), 64, "heap allocate aligns to 64");
                assert_eq!(buf.origin(), MemoryOrigin::Heap);
                (Real::Mut(buf), vec![0; size], 64)
            }
            Source::HeapPage => {
                let buf = self
                    .heap_paged_clone
                    .allocate_page_aligned(size)
                    .expect("heap allocate_page_aligned");
                assert!(buf.alignment() >= page);
                assert_eq!(buf.origin(), MemoryOrigin::Heap);
                let align = buf.alignment();
                (Real::Mut(buf), vec![0; size], align)
            }
            Source::Page => {
                let buf = self.pages.allocate(size).expect("page allocate");
                assert!(buf.alignment() >= page);
                assert_eq!(
                    buf.origin(),
                    MemoryOrigin::Mapped {
                        huge_pages: false,
                        locked: false,
                        prefaulted: false
                    }
                );
                let align = buf.alignment();
                (Real::Mut(buf), vec![0; size], align)
            }
            Source::Owner | Source::OwnerReadOnly => {
                // Owners may be empty, and are never big.
                let size = size % (2 * page);
                let bytes = owner_bytes(size, seed);
                let owner = CountedOwner {
                    bytes: bytes.clone(),
                    drops: Arc::clone(&self.owner_drops),
                };
                self.owners_created += 1;
                let real = if source == Source::Owner {
                    let buf = BufferMut::from_owner(owner);
                    assert_eq!(buf.origin(), MemoryOrigin::Owner);
                    Real::Mut(buf)
                } else {
                    let buf = Buffer::from_owner(owner);
                    assert_eq!(buf.origin(), MemoryOrigin::Owner);
                    assert_eq!(buf.ref_count(), 1);
                    Real::Shared(buf)
                };
                let ptr = match &real {
                    Real::Mut(b) => b.as_ptr(),
                    Real::Shared(b) => b.as_ptr(),
                } as usize;
                // The owner's bytes, wherever they are: as aligned as the address is,
                // capped at a page.
                let align = (1usize << ptr.trailing_zeros().min(63)).min(page);
                (real, bytes, align)
            }
        };
        let len = match &real {
            Real::Mut(b) => b.len(),
            Real::Shared(b) => b.len(),
        };
        let (base, max_len) = match &real {
            Real::Mut(b) => (b.as_ptr() as usize, b.max_len()),
            Real::Shared(b) => (b.as_ptr() as usize, b.max_len()),
        };
        let expected_len = match source {
            Source::Owner | Source::OwnerReadOnly => mem.len(),
            _ => 0,
        };
        assert_eq!(len, expected_len, "{source:?}: a new buffer's length");
        assert_eq!(
            max_len,
            mem.len(),
            "{source:?}: max_len is the size asked for"
        );
        if let Some(name) = allocator_of(source) {
            let e = self.expected.get_mut(name).unwrap();
            e.allocations += 1;
            e.live_bytes += mem.len();
        }
        self.blocks.push(BlockModel {
            source,
            mem,
            base,
            base_align,
            refs: 1,
        });
        self.handles.push(Handle {
            real,
            block: self.blocks.len() - 1,
            offset: 0,
            len,
            max_len,
        });
        self.note("allocate");
    }

    fn released(&mut self, block: usize) {
        let b = &self.blocks[block];
        match allocator_of(b.source) {
            Some(name) => {
                let e = self.expected.get_mut(name).unwrap();
                e.releases += 1;
                e.live_bytes -= b.mem.len();
            }
            None => self.owners_dropped += 1,
        }
    }

    /// Everything the model says, compared with everything the buffers and stats say.
    fn check(&mut self, step: usize, op: &Op) {
        let page = page_size();
        let ctx = |h: usize| format!("after step {step} ({op:?}), handle {h}");
        // The model's own bookkeeping: refs are the number of handles per block.
        let mut counted = vec![0usize; self.blocks.len()];
        for handle in &self.handles {
            counted[handle.block] += 1;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            assert_eq!(block.refs, counted[i], "model refs of block {i}");
        }
        for (i, handle) in self.handles.iter_mut().enumerate() {
            let block = &self.blocks[handle.block];
            let expected = &block.mem[handle.offset..handle.offset + handle.len];
            let spare = &block.mem[handle.offset..handle.offset + handle.max_len];
            let want_ptr = block.base + handle.offset;
            let want_align = view_alignment(block.base_align, handle.offset);
            let (ptr, len, max_len, align, origin) = match &mut handle.real {
                Real::Mut(buf) => {
                    assert_eq!(block.refs, 1, "{}: a BufferMut is always unique", ctx(i));
                    // Every byte a longer length could expose is one the model knows.
                    assert!(buf.whole_mut() == spare, "{}: whole_mut bytes", ctx(i));
                    assert!(&buf[..] == expected, "{}: content", ctx(i));
                    assert_eq!(buf.is_empty(), handle.len == 0);
                    (
                        buf.as_ptr(),
                        buf.len(),
                        buf.max_len(),
                        buf.alignment(),
                        buf.origin(),
                    )
                }
                Real::Shared(buf) => {
                    assert_eq!(buf.ref_count(), block.refs, "{}: ref_count", ctx(i));
                    assert_eq!(buf.is_unique(), block.refs == 1, "{}: is_unique", ctx(i));
                    assert!(&buf[..] == expected, "{}: content", ctx(i));
                    assert_eq!(buf.is_empty(), handle.len == 0);
                    (
                        buf.as_ptr(),
                        buf.len(),
                        buf.max_len(),
                        buf.alignment(),
                        buf.origin(),
                    )
                }
            };
            assert_eq!(len, handle.len, "{}: len", ctx(i));
            assert_eq!(max_len, handle.max_len, "{}: max_len", ctx(i));
            assert_eq!(ptr as usize, want_ptr, "{}: as_ptr", ctx(i));
            assert_eq!(align, want_align, "{}: alignment", ctx(i));
            assert!(align.is_power_of_two(), "{}: alignment {align}", ctx(i));
            assert_eq!(ptr as usize % align, 0, "{}: as_ptr % alignment", ctx(i));
            match block.source {
                Source::Heap => assert!(matches!(origin, MemoryOrigin::Heap)),
                Source::HeapPage => assert!(matches!(origin, MemoryOrigin::Heap)),
                Source::Page => assert!(matches!(origin, MemoryOrigin::Mapped { .. })),
                Source::Owner | Source::OwnerReadOnly => {
                    assert!(matches!(origin, MemoryOrigin::Owner))
                }
            }
            if matches!(block.source, Source::HeapPage | Source::Page) && handle.offset == 0 {
                assert_eq!(ptr as usize % page, 0, "{}: page-aligned", ctx(i));
                assert!(align >= page, "{}: page alignment {align}", ctx(i));
            }
            if block.source == Source::Heap && handle.offset == 0 {
                assert_eq!(align, 64, "{}: heap alignment", ctx(i));
            }
        }
        for (name, e) in &self.expected {
            let s = self.stats(name);
            let live = e.allocations - e.releases;
            assert_eq!(
                (s.allocations, s.releases, s.live_buffers, s.live_bytes),
                (e.allocations, e.releases, live, e.live_bytes),
                "after step {step} ({op:?}): {name} stats {s:?}"
            );
        }
        // The clone of the page-aligned heap allocator sees the same counters.
        assert_eq!(self.heap_paged_clone.stats(), self.heap_paged.stats());
        assert_eq!(
            self.owner_drops.load(Ordering::SeqCst),
            self.owners_dropped,
            "after step {step} ({op:?}): owners dropped"
        );
    }

    /// Drops every handle (in the order `order` picks, then first to last), checking
    /// each release, then checks that every allocation came back exactly once.
    fn finish(mut self, first_step: usize, order: &[Pick]) -> BTreeMap<&'static str, usize> {
        let mut order = order.iter().copied();
        let mut step = first_step;
        while !self.handles.is_empty() {
            let op = Op::Drop {
                h: order.next().unwrap_or(Pick::FIRST),
            };
            self.apply(&op);
            self.check(step, &op);
            step += 1;
        }
        assert!(self.blocks.iter().all(|b| b.refs == 0));
        for name in ["heap", "heap_paged", "pages"] {
            let s = self.stats(name);
            let e = self.expected[name];
            assert_eq!(s.allocations, e.allocations, "{name}: {s:?}");
            assert_eq!(s.releases, s.allocations, "{name}: one release each: {s:?}");
            assert_eq!(s.live_buffers, 0, "{name}: {s:?}");
            assert_eq!(s.live_bytes, 0, "{name}: {s:?}");
        }
        assert_eq!(
            self.owner_drops.load(Ordering::SeqCst),
            self.owners_created,
            "every owner dropped exactly once"
        );
        self.outcomes
    }
}

/// A placeholder `Buffer` to stand in a handle slot while the real one is moved out.
fn dummy_buffer() -> Buffer {
    Buffer::from_owner(&[][..])
}

fn run(ops: &[Op], drop_order: &[Pick]) -> BTreeMap<&'static str, usize> {
    let mut harness = Harness::new();
    harness.check(0, &Op::AllocateZero);
    for (step, op) in ops.iter().enumerate() {
        harness.apply(op);
        harness.check(step + 1, op);
    }
    harness.finish(ops.len() + 1, drop_order)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn buffers_follow_the_model(
        ops in prop::collection::vec(op_strategy(), 1..80),
        drop_order in prop::collection::vec(index_strategy(), 0..40),
    ) {
        run(&ops, &drop_order);
    }
}

/// The generator reaches every interesting outcome: a model test whose operations never
/// hit, say, a successful `try_into_mut` of a slice would pass without checking it.
#[test]
fn generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (
        prop::collection::vec(op_strategy(), 1..80),
        prop::collection::vec(index_strategy(), 0..40),
    );
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..128 {
        let (ops, order) = strategy.new_tree(&mut runner).unwrap().current();
        for (k, v) in run(&ops, &order) {
            *totals.entry(k).or_default() += v;
        }
    }
    for outcome in [
        "allocate",
        "extend",
        "extend past max_len refused",
        "whole_mut write + set_len",
        "set_len grows",
        "set_len past max_len refused",
        "freeze",
        "clone",
        "slice",
        "narrow",
        "slice start > end refused",
        "slice end > len refused",
        "slice bound overflow refused",
        "drop keeps",
        "drop releases",
        "try_into_mut ok",
        "try_into_mut ok (slice)",
        "try_into_mut refused (shared)",
        "try_into_mut refused (read-only)",
    ] {
        assert!(
            totals.get(outcome).copied().unwrap_or(0) > 0,
            "never reached: {outcome}; reached: {totals:?}"
        );
    }
}

/// A fixed sequence the random ones take a while to find: a slice that outlives its
/// parent turns into a `BufferMut` over just the slice's bytes, writing through it
/// lands where the model says, and once shared again it stays shared.
#[test]
fn slice_outliving_its_parent_becomes_writable() {
    let outcomes = run(
        &[
            Op::Allocate {
                source: Source::Heap,
                size: 100,
                seed: 1,
            },
            Op::Extend {
                h: Pick::FIRST,
                amount: Pick::LAST,
                over: None,
                seed: 9,
            },
            Op::Freeze { h: Pick::FIRST },
            // 10..60 of 100 bytes (bound values pick from 0..len + 3).
            Op::Slice {
                h: Pick::FIRST,
                start: BoundSpec::Included(Pick::of(10, 103)),
                end: BoundSpec::Excluded(Pick::of(60, 103)),
            },
            Op::TryIntoMut { h: Pick::FIRST },
            Op::Drop { h: Pick::FIRST }, // the parent; the slice is now alone
            Op::TryIntoMut { h: Pick::FIRST },
            Op::WriteWhole {
                h: Pick::FIRST,
                a: Pick::FIRST,
                b: Pick::LAST,
                n: Pick::MIDDLE,
                seed: 3,
            },
            Op::SetLen {
                h: Pick::FIRST,
                to: SetLenTo::Past(0),
            },
            Op::Freeze { h: Pick::FIRST },
            Op::Clone { h: Pick::FIRST },
            Op::TryIntoMut { h: Pick::LAST },
        ],
        &[],
    );
    assert_eq!(
        outcomes.get("try_into_mut ok (slice)"),
        Some(&1),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("try_into_mut refused (shared)"),
        Some(&2),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.get("set_len past max_len refused"), Some(&1));
}
