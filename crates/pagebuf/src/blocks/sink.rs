//! [`BlockSink`]: positioned writes of whole blocks to one file, on an `IoRing`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Reservation;
use crate::buffer::Buffer;
use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::ring::{IoRing, Tearing};

/// One write handed to a sink: where the bytes came from and where they go (the sample
/// writer's optional trace, which proves that large samples are not copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTrace {
    /// Address of the first byte handed to the kernel.
    pub address: usize,
    /// Bytes written.
    pub len: usize,
    /// File offset written at.
    pub offset: u64,
    /// Whether it went as an untorn (`RWF_ATOMIC`) write.
    pub untorn: bool,
}

/// What the sink's callers and its completions share.
#[derive(Default)]
struct State {
    /// Writes handed to the ring whose outcome has not come back, by ticket.
    in_flight: BTreeSet<Ticket>,
    /// Of those, the ones set aside ([`BlockSink::submit_aside`]): not counted against
    /// the depth, and waited for only by `wait_aside_through` and `wait_idle`.
    aside: BTreeSet<Ticket>,
    /// The ticket of the last write submitted (0: none yet).
    last_ticket: Ticket,
    /// The first failure, kept for good: later writes are refused, every caller sees it.
    failure: Option<Error>,
    /// The end of the furthest write submitted (a padded tail reaches past the content).
    written_end: u64,
    trace: Option<Vec<WriteTrace>>,
}

/// Whether a submission waits while `depth` writes are in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    Wait,
    /// The caller waits for room later, outside a lock (`wait_for_room`).
    Ignore,
}

/// A write's number in submission order, from 1: what
/// [`BlockSink::sync_through`] waits for.
pub(crate) type Ticket = u64;

/// Whether ordered waits wait for a write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `wait_through`, `sync_through` and the depth count it.
    Ordered,
    /// Only `wait_aside_through` and `wait_idle` wait for it.
    Aside,
}

impl State {
    /// Whether every ordered write up to `ticket` has come back.
    fn done_through(&self, ticket: Ticket) -> bool {
        self.in_flight.first().is_none_or(|&oldest| oldest > ticket)
    }

    /// Whether every write set aside up to `ticket` has come back.
    fn aside_done_through(&self, ticket: Ticket) -> bool {
        self.aside.first().is_none_or(|&oldest| oldest > ticket)
    }

    fn check(&self) -> Result<()> {
        match &self.failure {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// A write came back (`in_flight` fell).
    done: Condvar,
    /// Whether `state.trace` is kept: read without the lock, so a sink that does not
    /// trace pays nothing per write for the feature.
    tracing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whole blocks written at chosen offsets, in any order, at most `depth` in flight on
/// the ring (callers lay out the file; the sink only issues and finishes).
///
/// * **Memory goes home at completion.** Writes are detached from any `Pending`: when
///   the kernel is done, the buffer is dropped (back to its pool) by whichever thread
///   reaped the completion, before the write is counted done, so a caller woken by
///   [`wait_idle`](Self::wait_idle) finds the memory free, and a writer waiting for
///   pool memory is never waiting on a completion nobody takes.
/// * **One sticky failure.** After the first failure no write is issued (it would land
///   beyond a hole) and every later `check`, `submit`, `wait_idle`, `sync` and `finish`
///   returns a clone of it, so no caller is told `Ok` over a file with a hole in it. A
///   failed sync or length change is recorded the same way.
/// * **Finishing** ([`finish`](Self::finish)): wait for every write, cut the file to its
///   content (a padded tail, or space reserved past the end), sync, and sync the
///   directory of a file the writer created.
pub(crate) struct BlockSink {
    file: Arc<DirectFile>,
    ring: IoRing,
    depth: usize,
    shared: Arc<Shared>,
    reservation: Mutex<Reservation>,
}

impl BlockSink {
    /// A sink over `file` keeping up to `depth` (at least 1) writes in flight on `ring`.
    pub(crate) fn new(file: Arc<DirectFile>, ring: IoRing, depth: usize) -> BlockSink {
        let reservation = Mutex::new(Reservation::new(&file));
        BlockSink {
            file,
            ring,
            depth: depth.max(1),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                done: Condvar::new(),
                tracing: AtomicBool::new(false),
            }),
            reservation,
        }
    }

    /// The sink, reserving space `step` bytes at a time (64 MiB unless set).
    pub(crate) fn reserving_in_steps_of(self, step: u64) -> BlockSink {
        self.reservation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_step(step);
        self
    }

    /// The file written.
    pub(crate) fn file(&self) -> &Arc<DirectFile> {
        &self.file
    }

    /// Starts recording every write submitted (see [`WriteTrace`]).
    #[cfg(feature = "testing")]
    pub(crate) fn enable_trace(&self) {
        self.shared.lock().trace.get_or_insert_with(Vec::new);
        self.shared.tracing.store(true, Ordering::Release);
    }

    /// The writes submitted since tracing was enabled.
    #[cfg(feature = "testing")]
    pub(crate) fn trace(&self) -> Vec<WriteTrace> {
        self.shared.lock().trace.clone().unwrap_or_default()
    }

    /// Reserves space for the bytes below `upto` now (a copy knows its whole size).
    pub(crate) fn reserve(&self, upto: u64) {
        self.reservation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cover(&self.file, upto);
    }

    /// Writes `data` at `offset`: reserves space ahead, waits while `depth` writes are in
    /// flight, and hands it to the ring (one entry on io_uring; pieces of the device's
    /// largest request, side by side, on worker threads).
    pub(crate) fn submit(&self, data: Buffer, offset: u64) -> Result<Ticket> {
        self.submit_as(data, offset, Tearing::Possible, Room::Wait, Wait::Ordered)
    }

    /// As [`submit`](Self::submit), for a write no later one needs done or durable
    /// (zeroes written ahead of a log's records): `wait_through`, `sync_through` and the
    /// depth leave it out, so a commit never waits for it;
    /// [`wait_aside_through`](Self::wait_aside_through) and `wait_idle` wait for it. The
    /// caller bounds how many it keeps in flight.
    pub(crate) fn submit_aside(&self, data: Buffer, offset: u64) -> Result<Ticket> {
        self.submit_as(data, offset, Tearing::Possible, Room::Ignore, Wait::Aside)
    }

    /// Waits until every write set aside up to `ticket` has completed; then reports the
    /// sticky failure.
    pub(crate) fn wait_aside_through(&self, ticket: Ticket) -> Result<()> {
        self.wait_until(|state| state.aside_done_through(ticket))
            .check()
    }

    /// As [`submit`](Self::submit) without waiting for room and without reserving space:
    /// for a caller that submits under a lock others need, and reserves
    /// ([`reserve`](Self::reserve)) and waits for room ([`wait_for_room`](Self::wait_for_room))
    /// once it has let go of it. Writes in flight may then pass `depth` by the number of
    /// such callers at once; memory stays bounded by their pools.
    pub(crate) fn submit_unbounded(&self, data: Buffer, offset: u64) -> Result<Ticket> {
        self.submit_as(data, offset, Tearing::Possible, Room::Ignore, Wait::Ordered)
    }

    /// Waits while `depth` or more writes are in flight; then reports the sticky failure.
    pub(crate) fn wait_for_room(&self) -> Result<()> {
        self.wait_until(|state| state.failure.is_some() || state.in_flight.len() < self.depth)
            .check()
    }

    /// Waits, as completions come in, until `ready` holds; the state, locked.
    fn wait_until(&self, ready: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let mut state = self.shared.lock();
        while !ready(&state) {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state
    }

    /// As [`submit`](Self::submit), as one untorn write (`RWF_ATOMIC`; the caller has
    /// checked the file's atomic write units): for bytes written again over ones an
    /// earlier write made durable. A refusal is sticky, as any failed write.
    pub(crate) fn submit_untorn(&self, data: Buffer, offset: u64) -> Result<Ticket> {
        self.submit_as(data, offset, Tearing::Impossible, Room::Wait, Wait::Ordered)
    }

    /// Writes `data` at `offset` on the calling thread and returns when it is done
    /// (`IoRing::write_at_blocking`: one `pwrite`, no queue, no thread switch): for a
    /// commit's last write, which its thread waits for at once. Space is reserved and
    /// the write traced as for `submit`, but it is not numbered, not counted against
    /// `depth`, and its failure is the caller's to record: `sync_through` covers only
    /// numbered writes.
    pub(crate) fn write_waited(&self, data: Buffer, offset: u64) -> Result<usize> {
        self.reserve(offset.saturating_add(data.len() as u64));
        if self.shared.tracing.load(Ordering::Acquire) {
            self.shared
                .lock()
                .trace
                .get_or_insert_with(Vec::new)
                .push(WriteTrace {
                    address: data.as_ptr() as usize,
                    len: data.len(),
                    offset,
                    untorn: false,
                });
        }
        self.ring.write_at_blocking(&self.file, data, offset)
    }

    fn submit_as(
        &self,
        data: Buffer,
        offset: u64,
        tearing: Tearing,
        room: Room,
        wait: Wait,
    ) -> Result<Ticket> {
        let end = offset.saturating_add(data.len() as u64);
        if room == Room::Wait || wait == Wait::Aside {
            self.reserve(end);
        }
        let mut state = self.wait_until(|state| {
            room == Room::Ignore || state.failure.is_some() || state.in_flight.len() < self.depth
        });
        state.check()?;
        state.last_ticket += 1;
        let ticket = state.last_ticket;
        match wait {
            Wait::Ordered => state.in_flight.insert(ticket),
            Wait::Aside => state.aside.insert(ticket),
        };
        state.written_end = state.written_end.max(end);
        if self.shared.tracing.load(Ordering::Acquire) {
            state.trace.get_or_insert_with(Vec::new).push(WriteTrace {
                address: data.as_ptr() as usize,
                len: data.len(),
                offset,
                untorn: tearing == Tearing::Impossible,
            });
        }
        drop(state);
        let shared = self.shared.clone();
        self.ring
            .write_detached(&self.file, data, offset, tearing, move |outcome| {
                let mut state = shared.lock();
                if let Err(err) = outcome {
                    state.failure.get_or_insert(err);
                }
                match wait {
                    Wait::Ordered => state.in_flight.remove(&ticket),
                    Wait::Aside => state.aside.remove(&ticket),
                };
                drop(state);
                shared.done.notify_all();
            });
        Ok(ticket)
    }

    /// The sticky failure, if a write (or a [`fail`](Self::fail)ed step) ever failed.
    pub(crate) fn check(&self) -> Result<()> {
        self.shared.lock().check()
    }

    /// Records `err` as the sink's failure unless it already has one (the first stays),
    /// and returns `err`: for a step whose failure means acknowledged data may not be
    /// on disk.
    pub(crate) fn fail(&self, err: Error) -> Error {
        self.shared
            .lock()
            .failure
            .get_or_insert_with(|| err.clone());
        err
    }

    /// Waits until every write submitted has completed; then reports the sticky failure.
    pub(crate) fn wait_idle(&self) -> Result<()> {
        let last = self.last_ticket();
        self.wait_until(|state| state.done_through(last) && state.aside_done_through(last))
            .check()
    }

    /// The ticket of the last write submitted so far (0: none).
    pub(crate) fn last_ticket(&self) -> Ticket {
        self.shared.lock().last_ticket
    }

    /// Waits until every write up to `ticket` has completed (later ones may still be in
    /// flight: a writer that goes on submitting never holds this up); then reports the
    /// sticky failure.
    pub(crate) fn wait_through(&self, ticket: Ticket) -> Result<()> {
        self.wait_until(|state| state.done_through(ticket)).check()
    }

    /// A durability barrier: every write submitted before the call is on disk
    /// (`fdatasync` on the ring, once they have all completed).
    pub(crate) fn sync(&self) -> Result<()> {
        self.sync_through(self.last_ticket())
    }

    /// Makes every write up to `ticket` durable: waits for those (not for later ones),
    /// then `fdatasync`. What a flush or a commit taken under a lock and finished
    /// outside it uses, while other threads go on submitting.
    ///
    /// The sync is made on the calling thread, which waits for it anyway: through the
    /// ring, io_uring hands every fsync to a kernel worker thread and its completion to
    /// the reaper, two thread switches per commit (`pagebuf log bench`, 1 thread:
    /// BENCHMARKS.md, issue 14).
    pub(crate) fn sync_through(&self, ticket: Ticket) -> Result<()> {
        self.wait_through(ticket)?;
        self.file.sync_data().map_err(|err| self.fail(err))
    }

    /// Finishes a file whose content is its first `end` bytes: waits for every write,
    /// cuts what lies past `end` (a tail padded to the alignment, or space reserved
    /// ahead; a block device is never cut), syncs, and syncs the directory of a file the
    /// writer created. May be called again after more writes (the sample writer's
    /// header goes last).
    pub(crate) fn finish(&self, end: u64) -> Result<()> {
        self.wait_idle()?;
        let written_end = self.shared.lock().written_end;
        let cut = if written_end > end {
            Some(end)
        } else {
            let reservation = self.reservation.lock().unwrap_or_else(|p| p.into_inner());
            reservation.cut_to(end)
        };
        if let Some(len) = cut.filter(|_| !self.file.is_block_device()) {
            self.file.set_len(len).map_err(|err| self.fail(err))?;
        }
        self.sync()?;
        if self.file.created() {
            self.file.sync_directory().map_err(|err| self.fail(err))?;
        }
        Ok(())
    }
}

impl Drop for BlockSink {
    /// Waits for the writes in flight: their buffers go home, and nothing reaches the
    /// file after its writer is gone.
    fn drop(&mut self) {
        let _ = self.wait_idle();
    }
}
