//! [`LogWriter`]: records appended into staging blocks, made durable by group commit.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::format::{
    fill_padding, frame_header, frame_len, jump_frame, skip_before_frame, Header, ZeroCrcs,
    FRAME_ALIGN, FRAME_HEADER, JUMP_FRAME,
};
use super::options::LogOptions;
use super::scan::{read_header, Scanner, Step};
use super::segments::{Move, Segments, Space};
use super::{Lsn, MAX_RECORD};
use crate::alloc::{BufferAllocator, PageAllocator};
use crate::blocks::{BlockSink, OwnPool, Ticket};
use crate::buffer::{Buffer, BufferMut};
use crate::device::DeviceLimits;
use crate::direct::{limits_before_open, DirectFile};
use crate::error::{Error, Result};
use crate::memory::page_size;
use crate::ring::IoRing;

/// How many times a thread about to commit lets the threads woken with it run first
/// (`yield_now`): once took 4 threads from 2.2 to 3.0 commits per sync and 16 from 7.7
/// to 8.5 (`pagebuf log bench`, interleaved runs); four times was no better.
const MAX_YIELDS: u32 = 1;

/// A commit start is remembered (for [`LogWriter::truncate_before`]) at most this often.
const MARK_EVERY: u64 = 1 << 20;

/// Zeroes are written this far ahead of the records, this much at a time (see
/// [`ZeroedAhead`]).
const ZERO_AHEAD: u64 = 8 << 20;
const ZERO_STEP: u64 = 4 << 20;
/// One zero write's length (a clone of one shared buffer of zeroes).
const ZERO_WRITE: usize = 1 << 20;
/// Zeroes are written ahead only while commits average less than this many bytes. A
/// commit into zeroed blocks spares ext4 the conversion of unwritten extents (a journal
/// commit in every `fdatasync`), which is most of a small commit's cost; for large
/// commits the zeroes double the bytes written and cost more than they save (64 KiB
/// records, `pagebuf log bench`: 0.63-0.69x the peers with zeroes; see BENCHMARKS.md).
const ZERO_AHEAD_BELOW: u64 = 32 << 10;

/// An append-only log of records, made durable by group commit.
///
/// * [`append`](Self::append) copies a record into the log's staging block and returns
///   its [`Lsn`] (1, 2, 3, ... in call order); full blocks go to the disk as they fill.
/// * [`commit(lsn)`](Self::commit) returns once every record up to `lsn` is durable.
///   One committing thread at a time writes the staged tail and syncs; commits that
///   arrive meanwhile wait and are all served by the next write + sync (group commit).
///   Other threads go on appending while a commit waits for the disk.
/// * **Acknowledged is never torn.** A write that could tear never covers bytes an
///   earlier commit made durable, so a crash mid-write loses only what it was writing.
///   Which way is [`tail_write`](Self::tail_write):
///   - [`TailWrite::Pad`] (most file systems): a commit pads the log to the device's
///     unit (max of the physical block size and the direct-I/O offset alignment, 4 KiB
///     here) and the next records start on the next unit. The price is up to one unit
///     less one frame header of padding per commit (at most 4,080 bytes with 4 KiB
///     units; FORMAT.md, "Log file").
///   - [`TailWrite::RewriteUntorn`] where the file system promises untorn writes of the
///     unit (statx `STATX_WRITE_ATOMIC`: XFS on Linux 6.16+, devices with atomic
///     writes): a commit ends where its records end, and the next commit writes that
///     last unit again, whole, as an untorn write (`RWF_ATOMIC`). No space is lost to
///     padding; the price is writing up to one unit again per commit
///     ([`LogStats::rewritten_bytes`]). A padded commit still comes once per MiB, so
///     [`truncate_before`](Self::truncate_before) has unit boundaries to cut at.
/// * **Segments.** The log is written a segment at a time
///   ([`LogOptions::segment_size`], 64 MiB unless set). Once
///   [`truncate_before`](Self::truncate_before) has dropped every record of a segment,
///   the log writes that segment again (a jump frame says where it goes on), as
///   PostgreSQL and okaywal recycle theirs: a log that is checkpointed stays a few
///   segments long, and its commits overwrite blocks the file system has written
///   before, so their `fdatasync` has no extent conversion to journal
///   ([`LogStats::segments_reused`]).
/// * Direct I/O on the process's [`IoRing`] (or the one in [`LogOptions`]); where the
///   file system refuses `O_DIRECT`, buffered writes and `fdatasync`
///   ([`DirectFile::fallback_note`] says why). In a segment never written before,
///   zeroes are written ahead of the records (8 MiB ahead, in 4 MiB steps, up to the
///   segment's end, as PostgreSQL fills its WAL segments), for the same reason. They
///   cost write bandwidth once ([`LogStats::zeroed_bytes`]), not log space, and are
///   written only while commits average under 32 KiB: for larger ones the doubled
///   bytes cost more than the conversion they spare.
/// * **One writer per file:** a second `LogWriter` on it, here or in another process,
///   is [`Error::InvalidRequest`].
/// * Dropping the writer commits nothing that was not committed: records appended after
///   the last commit may or may not be in the file.
///
/// ```
/// use pagebuf::log::{LogReader, LogWriter};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-log.wal");
/// let log = LogWriter::create(&path)?;
/// let first = log.append(b"begin")?;
/// let second = log.append(b"set x = 1")?;
/// log.commit(second)?; // both records are on disk now
/// assert_eq!((first, second, log.durable_lsn()), (1, 2, 2));
/// drop(log);
///
/// let records: Vec<_> = LogReader::open(&path)?.collect::<Result<_, _>>()?;
/// assert_eq!(records.len(), 2);
/// assert_eq!(&records[1].data[..], b"set x = 1");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogWriter {
    sink: BlockSink,
    blocks: OwnPool,
    /// The frame layout's unit (the header's).
    unit: u64,
    /// Commits pad to multiples of this: the unit, or the device's if larger.
    pad_unit: usize,
    tail: TailWrite,
    block_size: usize,
    /// What zero writes are clones of; `None` on a block device (no extents to fill).
    zeroes: Option<Buffer>,
    /// The padding's checksums, up to a unit of it.
    zero_crcs: ZeroCrcs,
    /// A frame must end this far before its segment's end: room for the padding to the
    /// unit and a jump frame after it, should the log have to jump.
    room: u64,
    /// The largest frame a segment takes (records past it are refused).
    max_frame: u64,
    state: Mutex<State>,
    durable: AtomicU64,
    header: Mutex<Header>,
    counts: Counts,
}

/// How a commit ends the log's last, partly filled unit ([`LogWriter::tail_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailWrite {
    /// Padded to the unit; the next records start on the next unit. Nothing is ever
    /// written twice.
    Pad,
    /// Written as it is (zeroes after the records) and written again, untorn
    /// (`RWF_ATOMIC`), by the next commit, which adds to it.
    RewriteUntorn,
}

/// What a [`LogWriter`] has done ([`LogWriter::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LogStats {
    /// Records appended by this writer.
    pub appended: u64,
    /// Calls of `commit` (and `sync`) that had to wait for the disk.
    pub commits: u64,
    /// Write + sync rounds: fewer than `commits` when commits were grouped.
    pub syncs: u64,
    /// Bytes handed to the disk (frames, padding and skipped bytes).
    pub bytes_written: u64,
    /// Of those, padding at the end of commits and bytes skipped at unit ends: space
    /// in the file that holds no record.
    pub padding_bytes: u64,
    /// Of those, units written again by an untorn write ([`TailWrite::RewriteUntorn`]):
    /// disk bandwidth, not space.
    pub rewritten_bytes: u64,
    /// Zeroes written ahead of the records (not in `bytes_written`): the blocks commits
    /// then overwrite.
    pub zeroed_bytes: u64,
    /// Segments the log went on in that it had written before (freed by
    /// [`truncate_before`](LogWriter::truncate_before) and kept spare).
    pub segments_reused: u64,
}

impl LogStats {
    /// What was done between `earlier` (a reading of the same writer) and this reading.
    ///
    /// ```
    /// use pagebuf::log::LogWriter;
    ///
    /// # let path = std::env::temp_dir().join("pagebuf-doc-log-since.wal");
    /// let log = LogWriter::create(&path)?;
    /// log.commit(log.append(b"warm-up")?)?;
    /// let before = log.stats();
    /// for _ in 0..3 {
    ///     log.commit(log.append(b"measured")?)?;
    /// }
    /// let run = log.stats().since(&before);
    /// assert_eq!((run.appended, run.syncs), (3, 3));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), pagebuf::Error>(())
    /// ```
    pub fn since(&self, earlier: &LogStats) -> LogStats {
        LogStats {
            appended: self.appended.saturating_sub(earlier.appended),
            commits: self.commits.saturating_sub(earlier.commits),
            syncs: self.syncs.saturating_sub(earlier.syncs),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
            padding_bytes: self.padding_bytes.saturating_sub(earlier.padding_bytes),
            rewritten_bytes: self.rewritten_bytes.saturating_sub(earlier.rewritten_bytes),
            zeroed_bytes: self.zeroed_bytes.saturating_sub(earlier.zeroed_bytes),
            segments_reused: self.segments_reused.saturating_sub(earlier.segments_reused),
        }
    }
}

#[derive(Default)]
struct Counts {
    appended: AtomicU64,
    commits: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    padding_bytes: AtomicU64,
    rewritten_bytes: AtomicU64,
    zeroed_bytes: AtomicU64,
    segments_reused: AtomicU64,
}

/// The zeroes written ahead of the records: everything below `to` is zeroed, or being
/// zeroed by the writes in `unfinished`, and nothing below it will be zeroed again.
/// Records are never written over a zero write before it is done (two writes of one
/// place in flight land in any order); they wait for that one only, not for the zeroes
/// further ahead.
struct ZeroedAhead {
    to: u64,
    /// Zero writes not yet seen done, by offset: their tickets and where each starts.
    unfinished: VecDeque<(Ticket, u64)>,
    /// Where the last commit's records ended, and the bytes per commit, averaged (a
    /// moving average over about eight commits): whether zeroing ahead pays.
    commit_end: u64,
    commit_bytes: u64,
}

impl ZeroedAhead {
    fn new(at: u64) -> ZeroedAhead {
        ZeroedAhead {
            to: at,
            unfinished: VecDeque::new(),
            commit_end: at,
            commit_bytes: 0,
        }
    }

    /// A commit's records end at `end` (padding not counted).
    fn note_commit(&mut self, end: u64) {
        let bytes = end.saturating_sub(self.commit_end);
        self.commit_end = end;
        self.commit_bytes = (self.commit_bytes * 7 + bytes) / 8;
    }

    /// Whether commits are small enough for zeroes ahead to pay.
    fn pays(&self) -> bool {
        self.commit_bytes < ZERO_AHEAD_BELOW
    }
}

/// How a commit's staged records went to the disk.
enum Sealed {
    /// Nothing was staged: the full blocks already sent are all there is.
    Nothing,
    /// Through the sink, as the write with this ticket.
    Sent(Ticket),
    /// The padded tail, for the committing thread to write itself once it has let go of
    /// the lock (the next block starts past it: nothing orders the two).
    Waited(Buffer, u64),
}

/// Whether the staging block's first unit is on disk already (written by a commit that
/// ended inside it), and so must go as an untorn write, after that one.
#[derive(Clone, Copy)]
enum Carried {
    Nothing,
    /// Written by the write with this ticket, which must complete before the unit is
    /// written again (two writes of one place in flight land in any order).
    Unit(Ticket),
}

/// A thread waiting in `commit` for its `Lsn` to be durable.
struct Waiter {
    lsn: Lsn,
    thread: std::thread::Thread,
}

/// How long a waiting committer sleeps before it looks again by itself.
const PARK_LIMIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether a thread is writing and syncing a commit now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Idle,
    Running,
}

struct State {
    /// The staging block being filled; it starts at `block_at`, a multiple of
    /// `pad_unit`.
    block: Option<BufferMut>,
    block_at: u64,
    next_lsn: Lsn,
    commit: Commit,
    /// Threads waiting for a commit under way, each for its `Lsn`: a finished commit
    /// wakes those it covered and one more to lead the next, not all of them.
    waiters: Vec<Waiter>,
    /// Threads woken (covered, or to lead) that have yet to run.
    woken: usize,
    /// The first failure: every later call returns it (the log may have a hole).
    failure: Option<Error>,
    marks: Marks,
    carried: Carried,
    zeroed: ZeroedAhead,
    segments: Segments,
}

/// Where a writer starts: the first staging block's offset, the next `Lsn`, and the
/// marks of what is already in the file.
struct Tail {
    block_at: u64,
    next_lsn: Lsn,
    marks: Marks,
    segments: Segments,
}

/// Records that start on a unit boundary, `(lsn, offset)`, one per `MARK_EVERY` bytes:
/// where the log can be cut by `truncate_before`.
#[derive(Default)]
struct Marks {
    marks: VecDeque<(Lsn, u64)>,
}

impl Marks {
    /// (Distances wrap: a position behind the last mark, past a jump back to a segment
    /// written again, is far.)
    fn mark(&mut self, lsn: Lsn, offset: u64) {
        let far = match self.marks.back() {
            Some(&(_, last)) => offset.wrapping_sub(last) >= MARK_EVERY,
            None => true,
        };
        if far {
            self.marks.push_back((lsn, offset));
        }
    }

    /// Whether a commit ending at `end` should pad, to give `truncate_before` a unit
    /// boundary to cut at.
    fn due(&self, end: u64) -> bool {
        self.marks
            .back()
            .is_none_or(|&(_, last)| end.wrapping_sub(last) >= MARK_EVERY)
    }
}

impl State {
    fn check(&self) -> Result<()> {
        match &self.failure {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

impl LogWriter {
    /// Creates (or truncates) the log at `path` with the default [`LogOptions`].
    ///
    /// # Errors
    /// As [`create_with`](Self::create_with).
    pub fn create(path: impl AsRef<Path>) -> Result<LogWriter> {
        LogWriter::create_with(path, LogOptions::default())
    }

    /// Creates (or truncates) the log at `path`: its header is on disk, and a new file's
    /// directory synced, before this returns.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if another writer has the file; [`Error::InvalidArgument`]
    /// for options past their caps; [`Error::Io`] from the system.
    pub fn create_with(path: impl AsRef<Path>, options: LogOptions) -> Result<LogWriter> {
        let unit = device_unit(&limits_before_open(path.as_ref())?);
        let resolved = options.resolve(unit)?;
        let segment = options.resolve_segment()?;
        let file = DirectFile::create(path.as_ref())?;
        // The file's own figures, in case they differ from its directory's.
        let unit = device_unit(file.limits()).max(unit);
        let header = Header {
            unit: unit as u32,
            generation: 1,
            first_offset: 2 * unit as u64,
            first_lsn: 1,
            segment: Some(segment),
        };
        let mut block = PageAllocator::default().allocate_page_aligned(2 * unit)?;
        block.set_len(2 * unit)?;
        header.encode(&mut block[..unit]);
        header.encode(&mut block[unit..]);
        file.write_at(&block, 0)?;
        file.sync_data()?;
        if file.created() {
            file.sync_directory()?;
        }
        let tail = Tail {
            block_at: header.first_offset,
            next_lsn: 1,
            marks: Marks::default(),
            segments: Segments::new(segment, unit as u64, options.spare_segments),
        };
        LogWriter::start(file, header, &options, resolved, tail)
    }

    /// Opens the log at `path` to append to it, with the default [`LogOptions`].
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<LogWriter> {
        LogWriter::open_with(path, LogOptions::default())
    }

    /// Opens the log at `path` to append to it. It is recovered as
    /// [`LogReader`](super::LogReader) reads it: every whole record up to the first torn
    /// or corrupt one is kept (and durable: [`durable_lsn`](Self::durable_lsn) is the
    /// last of them), what follows is cut, and appending goes on after it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if neither header copy is valid (not a log, or another
    /// version); [`Error::InvalidRequest`] if another writer has the file; [`Error::Io`]
    /// from the system (a missing file is `NotFound`).
    pub fn open_with(path: impl AsRef<Path>, options: LogOptions) -> Result<LogWriter> {
        let file = DirectFile::options()
            .read(true)
            .write(true)
            .exclusive(true)
            .open(path.as_ref())?;
        let mut header = read_header(&file)?;
        let unit = u64::from(header.unit);
        let mut scanner = Scanner::new(file, &header);
        let mut marks = Marks::default();
        let end = loop {
            match scanner.step()? {
                Step::Record { lsn, offset, .. } if offset % unit == 0 => marks.mark(lsn, offset),
                Step::Record { .. } => {}
                Step::End { offset } | Step::Torn { offset, .. } => break offset,
            }
        };
        let next_lsn = scanner.next_lsn();
        // The log's stretches of contiguous frames, in log order.
        let mut stretches = Vec::new();
        let mut from = header.first_offset;
        for &(jump, target) in scanner.jumps() {
            stretches.push((from, jump + JUMP_FRAME as u64));
            from = target;
        }
        stretches.push((from, end.max(from)));
        let file = scanner.into_file();
        let pad_unit = (unit as usize).max(device_unit(file.limits()));
        let resolved = options.resolve(pad_unit)?;
        if header.segment.is_none() {
            // A version-1 log: segments from now on (the header says so before any
            // jump is written).
            header = Header {
                generation: header.generation + 1,
                segment: Some(options.resolve_segment()?),
                ..header
            };
            write_header(&file, &header)?;
        }
        let segment = header.segment.expect("set above");
        let mut segments = Segments::recovered(segment, unit, options.spare_segments, &stretches);
        let block_at = close_tail(&file, end, unit, pad_unit, &mut segments)?;
        let tail = Tail {
            block_at,
            next_lsn,
            marks,
            segments,
        };
        LogWriter::start(file, header, &options, resolved, tail)
    }

    fn start(
        file: DirectFile,
        header: Header,
        options: &LogOptions,
        (block_size, depth): (usize, usize),
        tail: Tail,
    ) -> Result<LogWriter> {
        let unit = u64::from(header.unit);
        let pad_unit = (unit as usize).max(device_unit(file.limits()));
        let tail_write = if options.untorn_rewrites && file.limits().untorn_write(pad_unit) {
            TailWrite::RewriteUntorn
        } else {
            TailWrite::Pad
        };
        let ring = IoRing::given_or_default(options.ring.as_ref())?;
        let blocks = OwnPool::new(&ring, block_size, depth + 2, page_size())?;
        let zeroes = if file.is_block_device() {
            None
        } else {
            // Fresh anonymous pages: zero already.
            let mut zeroes = PageAllocator::default().allocate_page_aligned(ZERO_WRITE)?;
            zeroes.set_len(ZERO_WRITE)?;
            Some(zeroes.freeze())
        };
        // Space reserved a segment at a time: a log reusing its segments needs no more.
        let sink =
            BlockSink::new(Arc::new(file), ring, depth).reserving_in_steps_of(tail.segments.size());
        let room = (pad_unit + JUMP_FRAME + FRAME_ALIGN) as u64;
        let max_frame = tail.segments.size() - 2 * unit - room;
        Ok(LogWriter {
            sink,
            blocks,
            unit,
            pad_unit,
            tail: tail_write,
            block_size,
            zeroes,
            // A table of 32 KiB at most: units past 64 KiB compute theirs.
            zero_crcs: ZeroCrcs::up_to(pad_unit.min(64 << 10)),
            room,
            max_frame,
            state: Mutex::new(State {
                block: None,
                block_at: tail.block_at,
                next_lsn: tail.next_lsn,
                commit: Commit::Idle,
                waiters: Vec::new(),
                woken: 0,
                failure: None,
                marks: tail.marks,
                carried: Carried::Nothing,
                zeroed: ZeroedAhead::new(tail.block_at),
                segments: tail.segments,
            }),
            durable: AtomicU64::new(tail.next_lsn - 1),
            header: Mutex::new(header),
            counts: Counts::default(),
        })
    }

    /// Appends `record` (up to [`MAX_RECORD`] bytes, empty allowed) and returns its
    /// `Lsn`. Not durable until a [`commit`](Self::commit) covers it. Waits while the
    /// staging blocks are all on their way to the disk (back-pressure).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a record past the cap; the log's failure, if an
    /// earlier write or sync failed.
    pub fn append(&self, record: &[u8]) -> Result<Lsn> {
        let len = u32::try_from(record.len())
            .ok()
            .filter(|&len| len as usize <= MAX_RECORD)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "LogWriter::append: a record of {} bytes is past the cap of {MAX_RECORD} \
                     (log::MAX_RECORD); split it",
                    record.len()
                ))
            })?;
        if frame_len(record.len()) as u64 > self.max_frame {
            return Err(Error::InvalidArgument(format!(
                "LogWriter::append: a record of {} bytes does not fit in a segment of this \
                 log (at most {} bytes); create the log with a larger \
                 LogOptions::segment_size, or split the record",
                record.len(),
                self.max_frame - FRAME_HEADER as u64
            )));
        }
        let data_crc = crc32c::crc32c(record);
        let mut state = self.lock();
        state.check()?;
        let lsn = state.next_lsn;
        let mut at = self.position(&state);
        let mut skip = skip_before_frame(at, self.unit) as usize;
        let tail = frame_len(record.len()) - FRAME_HEADER - record.len();
        let end = at + (skip + frame_len(record.len())) as u64;
        if end + self.room > state.segments.current_end() {
            if let Err(err) = self.leave_segment(&mut state) {
                state.failure.get_or_insert_with(|| err.clone());
                return Err(err);
            }
            at = self.position(&state);
            skip = skip_before_frame(at, self.unit) as usize;
        }
        let result = self
            .put_zeros(&mut state, skip)
            .and_then(|()| self.put(&mut state, &frame_header(lsn, len, data_crc)))
            .and_then(|()| self.put(&mut state, record))
            .and_then(|()| self.put_zeros(&mut state, tail));
        if let Err(err) = result {
            // Part of the frame may be staged: nothing after it can be trusted.
            state.failure.get_or_insert_with(|| err.clone());
            return Err(err);
        }
        state.next_lsn += 1;
        drop(state);
        self.counts.appended.fetch_add(1, Ordering::Relaxed);
        self.counts
            .padding_bytes
            .fetch_add(skip as u64, Ordering::Relaxed);
        Ok(lsn)
    }

    /// Returns once every record up to `lsn` is durable. Concurrent commits share one
    /// write + sync: the first to arrive writes the staged tail (padded to the unit) and
    /// syncs; those that arrive meanwhile wait, and the next of them commits everything
    /// appended by then. `commit(0)`, and a commit of a record already durable, return
    /// at once.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an `lsn` not yet appended; [`Error::Io`] when the
    /// write or the sync fails (a full disk is `ENOSPC`): nothing past
    /// [`durable_lsn`](Self::durable_lsn) is acknowledged, and every later call returns
    /// the same error.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        let mut state = self.lock();
        if lsn >= state.next_lsn {
            return Err(Error::InvalidArgument(format!(
                "LogWriter::commit({lsn}): the last record appended is {}; commit an Lsn \
                 that append returned",
                state.next_lsn - 1
            )));
        }
        if self.durable_lsn() < lsn {
            self.counts.commits.fetch_add(1, Ordering::Relaxed);
        }
        let mut yields = 0;
        loop {
            if self.durable_lsn() >= lsn {
                return Ok(());
            }
            state.check()?;
            match state.commit {
                // Another thread is writing: its commit, or the next, covers ours.
                Commit::Running => {
                    let me = std::thread::current();
                    state.waiters.push(Waiter {
                        lsn,
                        thread: me.clone(),
                    });
                    drop(state);
                    // Bounded: a wake missed in a race is made up for by looking again.
                    std::thread::park_timeout(PARK_LIMIT);
                    state = self.lock();
                    match state.waiters.iter().position(|w| w.thread.id() == me.id()) {
                        Some(i) => drop(state.waiters.swap_remove(i)),
                        None => state.woken = state.woken.saturating_sub(1),
                    }
                }
                // Others were woken with this thread by the last commit: let them
                // append first (once), so this commit takes them along.
                Commit::Idle if state.woken > 0 && yields < MAX_YIELDS => {
                    yields += 1;
                    drop(state);
                    std::thread::yield_now();
                    state = self.lock();
                }
                Commit::Idle => break,
            }
        }
        // This thread commits everything appended so far. The tail is sealed under the
        // lock: a unit the next block starts with again (carried) is written before that
        // block's; a padded tail, which nothing overlaps, this thread writes itself once
        // the lock is let go.
        let target = state.next_lsn - 1;
        // Every full block of these records was handed to the sink before this point.
        let before = self.sink.last_ticket();
        let sealed = match self.seal(&mut state) {
            Ok(sealed) => sealed,
            Err(err) => {
                state.failure.get_or_insert_with(|| err.clone());
                self.wake_waiters(&mut state);
                return Err(err);
            }
        };
        state.commit = Commit::Running;
        drop(state);
        self.counts.syncs.fetch_add(1, Ordering::Relaxed);
        // Appends go on meanwhile; the sync waits only for what these records need.
        let written = match sealed {
            Sealed::Nothing => self.sink.sync_through(before),
            Sealed::Sent(ticket) => self.sink.sync_through(ticket),
            Sealed::Waited(tail, at) => self
                .sink
                .write_waited(tail, at)
                .and_then(|_| self.sink.sync_through(before)),
        };
        let mut state = self.lock();
        state.commit = Commit::Idle;
        match written {
            Ok(()) => {
                self.durable.fetch_max(target, Ordering::AcqRel);
            }
            Err(err) => {
                state.failure.get_or_insert(err);
            }
        }
        self.wake_waiters(&mut state);
        if self.durable_lsn() >= lsn {
            Ok(())
        } else {
            state.check()
        }
    }

    /// After a commit: wakes the waiters it covered (all of them if the log failed) and
    /// the first of the others, to lead the next commit.
    fn wake_waiters(&self, state: &mut State) {
        let durable = self.durable_lsn();
        let failed = state.failure.is_some();
        let mut leader = false;
        let mut woken = 0;
        state.waiters.retain(|w| {
            let covered = failed || w.lsn <= durable;
            let wake = covered || !leader;
            if wake {
                leader |= !covered;
                woken += 1;
                w.thread.unpark();
            }
            !wake
        });
        state.woken += woken;
    }

    /// Commits every record appended so far; returns the last one's `Lsn` (0 for an empty
    /// log).
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub fn sync(&self) -> Result<Lsn> {
        let last = self.lock().next_lsn - 1;
        self.commit(last)?;
        Ok(last)
    }

    /// What this writer has done so far.
    pub fn stats(&self) -> LogStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LogStats {
            appended: load(&self.counts.appended),
            commits: load(&self.counts.commits),
            syncs: load(&self.counts.syncs),
            bytes_written: load(&self.counts.bytes_written),
            padding_bytes: load(&self.counts.padding_bytes),
            rewritten_bytes: load(&self.counts.rewritten_bytes),
            zeroed_bytes: load(&self.counts.zeroed_bytes),
            segments_reused: load(&self.counts.segments_reused),
        }
    }

    /// How commits end the last unit on this file.
    pub fn tail_write(&self) -> TailWrite {
        self.tail
    }

    /// Starts recording every write handed to the disk (tests of the never-rewritten
    /// rule).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn trace_writes(&self) {
        self.sink.enable_trace();
    }

    /// The writes of records recorded since [`trace_writes`](Self::trace_writes):
    /// `(offset, len, untorn)` (zeroes written ahead are left out: they only ever go
    /// past everything written before them).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn traced_writes(&self) -> Vec<(u64, usize, bool)> {
        let zeroes = self.zeroes.as_ref().map(|z| z.as_ptr() as usize);
        self.sink
            .trace()
            .iter()
            .filter(|w| Some(w.address) != zeroes)
            .map(|w| (w.offset, w.len, w.untorn))
            .collect()
    }

    /// The last `Lsn` known durable: 0 before any commit (of a new log).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::Acquire)
    }

    /// Drops the records before `lsn` (after a checkpoint): the log's header is
    /// rewritten (the copy not in use, then synced) to start at a record at or before
    /// `lsn` (at least once per MiB of log a record starts on a unit boundary; the cut
    /// is at the last such record at or before `lsn`), and readers then start there.
    /// The segments wholly before it are freed: up to [`LogOptions::spare_segments`]
    /// are kept for the log to write again (commits over written blocks spare the file
    /// system an extent conversion in their sync), and holes are punched in the others,
    /// their space given back. Records before `lsn` that share a segment with kept ones
    /// stay readable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an `lsn` past [`durable_lsn`](Self::durable_lsn)
    /// (only durable records may be dropped); [`Error::Io`] from the system.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<()> {
        if lsn > self.durable_lsn() {
            return Err(Error::InvalidArgument(format!(
                "LogWriter::truncate_before({lsn}): only durable records may be dropped, \
                 and the last durable one is {}",
                self.durable_lsn()
            )));
        }
        let cut = {
            let mut state = self.lock();
            let mut cut = None;
            let marks = &mut state.marks.marks;
            while let Some(&(mark_lsn, offset)) = marks.front() {
                if mark_lsn > lsn {
                    break;
                }
                cut = Some((mark_lsn, offset));
                marks.pop_front();
            }
            // The cut record stays a mark: a later cut may not pass it.
            if let Some(mark) = cut {
                marks.push_front(mark);
            }
            cut
        };
        let Some((first_lsn, first_offset)) = cut else {
            return Ok(());
        };
        let mut header = self.header.lock().unwrap_or_else(|p| p.into_inner());
        // Numbers, not offsets: a later record may lie lower in the file.
        if first_lsn <= header.first_lsn {
            return Ok(());
        }
        let new = Header {
            generation: header.generation + 1,
            first_offset,
            first_lsn,
            ..*header
        };
        let file = self.sink.file();
        write_header(file, &new)?;
        *header = new;
        // Only now, with no reader sent to them, may the segments before be written
        // again; those past the spares are given back before anyone can take them.
        let (given_back, bytes): (Vec<u64>, Vec<(u64, u64)>) = {
            let mut state = self.lock();
            let given_back = state.segments.release_before(first_offset);
            let bytes = given_back
                .iter()
                .map(|&i| state.segments.bytes_of(i))
                .collect();
            (given_back, bytes)
        };
        for (start, len) in bytes {
            clear(file, start, len)?;
        }
        self.lock().segments.add_holes(&given_back);
        Ok(())
    }

    /// The file written (its path, limits, whether it is direct).
    pub fn file(&self) -> &DirectFile {
        self.sink.file()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the next staged byte goes in the file.
    fn position(&self, state: &State) -> u64 {
        state.block_at + state.block.as_ref().map_or(0, |b| b.len() as u64)
    }

    /// The next frame would come within `room` of the segment's end: the log goes on in
    /// the next segment of the file (frames run on), or jumps to another: a jump frame
    /// where the next frame would have started, the unit padded with zeros (nothing
    /// reads past a jump), and the block sent; the next block starts at the target.
    fn leave_segment(&self, state: &mut State) -> Result<()> {
        let next = state.segments.advance();
        if state.segments.current_space() == Space::Reused {
            self.counts.segments_reused.fetch_add(1, Ordering::Relaxed);
        }
        let Move::Jump(target) = next else {
            return Ok(());
        };
        let at = self.position(state);
        let skip = skip_before_frame(at, self.unit) as usize;
        self.put_zeros(state, skip)?;
        self.put(state, &jump_frame(target))?;
        if let Some(mut block) = state.block.take() {
            let len = block.len();
            let whole = len.next_multiple_of(self.pad_unit);
            block
                .set_len(whole)
                .expect("blocks are multiples of the unit");
            block[len..].fill(0);
            self.counts
                .padding_bytes
                .fetch_add((whole - len) as u64, Ordering::Relaxed);
            let block_at = state.block_at;
            self.send(state, block.freeze(), block_at)?;
        }
        self.counts
            .padding_bytes
            .fetch_add((skip + JUMP_FRAME) as u64, Ordering::Relaxed);
        state.block_at = target;
        // A segment's start is a unit boundary to cut at.
        let next = state.next_lsn;
        state.marks.mark(next, target);
        Ok(())
    }

    /// Stages `bytes`, sending each block that fills to the disk.
    fn put(&self, state: &mut State, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let block = self.current(state)?;
            let n = (block.max_len() - block.len()).min(bytes.len());
            block.extend_from_slice(&bytes[..n])?;
            bytes = &bytes[n..];
            self.send_if_full(state)?;
        }
        Ok(())
    }

    /// Stages `n` zero bytes.
    fn put_zeros(&self, state: &mut State, mut n: usize) -> Result<()> {
        while n > 0 {
            let block = self.current(state)?;
            let k = (block.max_len() - block.len()).min(n);
            let len = block.len();
            block.set_len(len + k)?;
            block[len..].fill(0);
            n -= k;
            self.send_if_full(state)?;
        }
        Ok(())
    }

    /// The staging block, taken from the pool if there is none (waiting for one to come
    /// back from the disk if all are out).
    fn current<'s>(&self, state: &'s mut State) -> Result<&'s mut BufferMut> {
        if state.block.is_none() {
            let block = BufferAllocator::allocate(&self.blocks, self.block_size)?;
            state.block = Some(block);
        }
        Ok(state.block.as_mut().expect("just made"))
    }

    fn send_if_full(&self, state: &mut State) -> Result<()> {
        if state.block.as_ref().is_some_and(|b| b.len() == b.max_len()) {
            let block = state.block.take().expect("checked");
            let at = state.block_at;
            state.block_at += block.len() as u64;
            self.send(state, block.freeze(), at)?;
        }
        Ok(())
    }

    /// Hands `block` (file offset `at`) to the disk. A carried first unit goes alone as
    /// an untorn write, once the write it replaces is done; the rest as one plain write.
    /// The ticket covers the whole block.
    fn send(&self, state: &mut State, block: Buffer, at: u64) -> Result<Ticket> {
        self.zero_ahead(state, at + block.len() as u64)?;
        self.counts
            .bytes_written
            .fetch_add(block.len() as u64, Ordering::Relaxed);
        let Carried::Unit(previous) = std::mem::replace(&mut state.carried, Carried::Nothing)
        else {
            return self.sink.submit(block, at);
        };
        let unit = self.pad_unit;
        self.sink.wait_through(previous)?;
        self.counts
            .rewritten_bytes
            .fetch_add(unit as u64, Ordering::Relaxed);
        let first = self.sink.submit_untorn(block.slice(..unit)?, at)?;
        if block.len() == unit {
            return Ok(first);
        }
        self.sink.submit(block.slice(unit..)?, at + unit as u64)
    }

    /// Before records are written up to `end`: keeps zeroes written `ZERO_AHEAD` past it
    /// (a step at a time, ahead of need, so the wait below is rare), and waits for the
    /// zero writes below `end` to be done.
    fn zero_ahead(&self, state: &mut State, end: u64) -> Result<()> {
        let Some(zeroes) = &self.zeroes else {
            return Ok(());
        };
        // Only in fresh space: past the start of the segment being written, the highest
        // ever used (a segment written again needs none, and zeroes must never reach
        // one that holds records).
        let fresh =
            state.segments.writing_top() && end > state.segments.start(state.segments.top() - 1);
        // Not past the segment: the log may go on in a spare one instead.
        let limit = state.segments.current_end();
        let zeroed = &mut state.zeroed;
        if fresh && zeroed.pays() && end + ZERO_AHEAD / 2 > zeroed.to {
            // After a pause (large commits) the records may have passed the zeroes:
            // zeroing resumes at their end, never behind it.
            zeroed.to = zeroed.to.max(end);
            let stop = (end + ZERO_AHEAD).max(zeroed.to + ZERO_STEP).min(limit);
            while zeroed.to < stop {
                // Both ends are multiples of the unit.
                let len = (stop - zeroed.to).min(ZERO_WRITE as u64);
                let ticket = self
                    .sink
                    .submit_aside(zeroes.slice(..len as usize)?, zeroed.to)?;
                zeroed.unfinished.push_back((ticket, zeroed.to));
                zeroed.to += len;
                self.counts.zeroed_bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
        // Zero writes that start below `end` may overlap the records: those must land
        // first. The ones past it are left to run.
        while let Some(&(ticket, start)) = zeroed.unfinished.front() {
            if start >= end {
                break;
            }
            self.sink.wait_aside_through(ticket)?;
            zeroed.unfinished.pop_front();
        }
        Ok(())
    }

    /// Ends the staged records for a commit and hands them to the disk. With
    /// [`TailWrite::Pad`] (and with `RewriteUntorn` once per `MARK_EVERY`, or when the
    /// records end on a unit), the tail is padded to the next `pad_unit` boundary, where
    /// the next record starts, and written as a transfer the committing thread waits for
    /// itself (it reaps its own completion: no hop through the reaper thread). Otherwise
    /// the last unit is written as it is (zeroes after the records) and copied into the
    /// next staging block, to be written again, untorn, with what follows.
    fn seal(&self, state: &mut State) -> Result<Sealed> {
        let Some(mut block) = state.block.take().filter(|b| !b.is_empty()) else {
            return Ok(Sealed::Nothing);
        };
        let len = block.len();
        let at = state.block_at;
        // Every commit that seals records counts, whichever way its tail goes below.
        state.zeroed.note_commit(at + len as u64);
        let unit = self.pad_unit;
        let carry = self.tail == TailWrite::RewriteUntorn
            && len % unit != 0
            && !state.marks.due(at + len as u64);
        let whole = len.next_multiple_of(unit);
        // Room: blocks are multiples of `pad_unit`, so the padded tail fits.
        block
            .set_len(whole)
            .expect("blocks are multiples of the unit");
        if !carry {
            fill_padding(&mut block[len..], &self.zero_crcs);
            self.counts
                .padding_bytes
                .fetch_add((whole - len) as u64, Ordering::Relaxed);
            state.block_at = at + whole as u64;
            let (next, start) = (state.next_lsn, state.block_at);
            state.marks.mark(next, start);
            if let Carried::Unit(_) = state.carried {
                return self.send(state, block.freeze(), at).map(Sealed::Sent);
            }
            self.zero_ahead(state, at + whole as u64)?;
            self.counts
                .bytes_written
                .fetch_add(whole as u64, Ordering::Relaxed);
            return Ok(Sealed::Waited(block.freeze(), at));
        }
        block[len..].fill(0); // a clean end for readers until the records go on
        let last = whole - unit;
        let mut next = BufferAllocator::allocate(&self.blocks, self.block_size)?;
        next.extend_from_slice(&block[last..len])?;
        let ticket = self.send(state, block.freeze(), at)?;
        state.block = Some(next);
        state.block_at = at + last as u64;
        state.carried = Carried::Unit(ticket);
        Ok(Sealed::Sent(ticket))
    }
}

impl Drop for LogWriter {
    /// In a segment written again, the records end on stale frames of its earlier use,
    /// which a reader would report as a torn frame: a unit of zeros after the last
    /// records written makes it a clean end. (Staged records not committed are
    /// dropped; best effort: a failure leaves the torn-looking end, nothing is lost.)
    fn drop(&mut self) {
        let state = self.lock();
        if state.failure.is_some() || state.segments.current_space() != Space::Reused {
            return;
        }
        let at = match state.carried {
            Carried::Unit(_) => state.block_at + self.pad_unit as u64,
            Carried::Nothing => state.block_at,
        };
        let fits = at + self.pad_unit as u64 <= state.segments.current_end();
        drop(state);
        if !fits || self.sink.wait_idle().is_err() {
            return;
        }
        if let Ok(mut zeros) = PageAllocator::default().allocate_page_aligned(self.pad_unit) {
            if zeros.set_len(self.pad_unit).is_ok() {
                let _ = self.sink.file().write_at(&zeros, at);
            }
        }
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.file().path())
            .field("unit", &self.pad_unit)
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

/// The unit a commit pads to on `file`'s device: max of the physical block size and the
/// direct-I/O alignment, a power of two from 512 bytes to 1 MiB.
fn device_unit(limits: &DeviceLimits) -> usize {
    let unit = limits
        .physical_block_size
        .max(limits.alignment())
        .clamp(512, 1 << 20);
    (unit as usize).next_power_of_two()
}

/// Closes a recovered log's tail at `end` (where its last whole record ends, or where a
/// torn one starts): the space up to the next `pad_unit` boundary becomes padding (the
/// unit's bytes before `end` written back as they are: a torn write of them leaves the
/// same bytes), and what lies past it is cleared: the file cut there (the segment
/// being written is the highest) or the rest of the segment given back, and every
/// segment not live given back too. Stale frames of a commit never acknowledged (a
/// crash mid-commit leaves them, numbered past the end) can so never be read as records
/// once new ones are written before them. Synced. Returns where appending goes on.
fn close_tail(
    file: &DirectFile,
    end: u64,
    unit: u64,
    pad_unit: usize,
    segments: &mut Segments,
) -> Result<u64> {
    let pad_unit = pad_unit as u64;
    let start = end.next_multiple_of(pad_unit);
    if start != end {
        let from = end / unit * unit;
        let len = (start - from) as usize;
        let mut block = PageAllocator::default().allocate_page_aligned(len)?;
        file.read_at(&mut block, from)?;
        let kept = (end - from) as usize;
        block.set_len(len)?;
        fill_padding(&mut block[kept..], &ZeroCrcs::up_to(0));
        file.write_at(&block, from)?;
    }
    // Free segments first: the one after the tail's may be one of them (a writer runs
    // on into a freed neighbour without a jump, and may have filled its segment to the
    // last byte just before it died).
    let free_runs = segments.free_after_recovery();
    if start + (JUMP_FRAME + FRAME_ALIGN) as u64 > segments.current_end() {
        // No room for a jump here (a version-1 log, or a larger unit than the writer
        // before had): frames run on into the next segment of the file.
        if !segments.next_is_free() {
            return Err(Error::InvalidRequest(format!(
                "{}: the log's tail at {start} has no room left in its segment and the \
                 next segment holds records; reopen it on a device with the unit it was \
                 written with",
                file.path().display()
            )));
        }
        segments.advance_adjacent();
    }
    if segments.writing_top() {
        file.set_len(start)?;
    } else {
        clear(file, start, segments.current_end() - start)?;
    }
    // (A run may hold the segment the tail just moved into: cleared above and again
    // here, a second punch of a segment already empty.)
    for run in free_runs {
        let (at, len) = segments.bytes_of_run(&run);
        clear(file, at, len)?;
    }
    file.sync_data()?;
    Ok(start)
}

/// Writes `header` to the copy its generation names (the other one, holding the
/// header in force, stays whole if the write tears) and syncs it.
fn write_header(file: &DirectFile, header: &Header) -> Result<()> {
    let unit = header.unit as usize;
    let mut block = PageAllocator::default().allocate_page_aligned(unit)?;
    block.set_len(unit)?;
    header.encode(&mut block);
    file.write_at(&block, (header.generation % 2) * unit as u64)?;
    file.sync_data()
}

/// Makes `len` bytes at `offset` read as zeros: a hole punched (the space given back),
/// or zeros written where the file system cannot punch.
fn clear(file: &DirectFile, offset: u64, len: u64) -> Result<()> {
    if file.punch_hole(offset, len)? {
        return Ok(());
    }
    let chunk = len.min(1 << 20) as usize;
    let mut zeros = PageAllocator::default().allocate_page_aligned(chunk)?;
    zeros.set_len(chunk)?;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk as u64) as usize;
        file.write_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogReader;

    const MIB: u64 = 1 << 20;

    fn scratch(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("pagebuf-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn record(lsn: Lsn) -> Vec<u8> {
        let len = 200 + (lsn as usize * 7_919) % 6_000;
        (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
    }

    fn read_all(path: &Path) -> (Vec<Lsn>, bool) {
        let mut lsns = Vec::new();
        for item in LogReader::open(path).unwrap() {
            match item {
                Ok(rec) => {
                    assert!(rec.data[..] == record(rec.lsn)[..], "record {}", rec.lsn);
                    lsns.push(rec.lsn);
                }
                Err(_) => return (lsns, false),
            }
        }
        (lsns, true)
    }

    fn options() -> LogOptions {
        LogOptions::default().segment_size(MIB).spare_segments(2)
    }

    /// A log written by an older pagebuf (version 1: no segments, frames end to end) is
    /// read as it is; a writer reopening it says "segments" in its header first, then
    /// goes on, reusing segments once records are dropped.
    #[test]
    fn a_version_1_log_reads_and_goes_on_in_segments() {
        let path = scratch("v1");
        let log = LogWriter::create_with(&path, options()).unwrap();
        for lsn in 1..=900 {
            log.append(&record(lsn)).unwrap();
        }
        log.sync().unwrap();
        // More than 2 MiB of frames end to end, no jump: the bytes of version 1, once
        // both header copies say version 1.
        assert_eq!(log.stats().segments_reused, 0);
        drop(log);
        let header = Header {
            segment: None,
            ..Header::decode(&std::fs::read(&path).unwrap(), 0).unwrap()
        };
        let mut copy = vec![0; header.unit as usize];
        header.encode(&mut copy);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..copy.len()].copy_from_slice(&copy);
        bytes[copy.len()..2 * copy.len()].copy_from_slice(&copy);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(read_all(&path), ((1..=900).collect(), true));

        let log = LogWriter::open_with(&path, options()).unwrap();
        assert_eq!(log.header.lock().unwrap().segment, Some(MIB));
        for lsn in 901..=3_000 {
            log.append(&record(lsn)).unwrap();
            if lsn % 50 == 0 {
                log.commit(lsn).unwrap();
                log.truncate_before(lsn - 100).unwrap();
            }
        }
        log.sync().unwrap();
        assert!(log.stats().segments_reused > 0);
        drop(log);
        let (lsns, clean) = read_all(&path);
        assert!(clean && lsns.last() == Some(&3_000) && lsns[0] <= 2_900);
        std::fs::remove_file(&path).unwrap();
    }

    /// A jump frame whose checksum holds but whose target lies far past the end of the
    /// file (a hostile or corrupt log): the reader stops there with `Corrupt`, and a
    /// writer reopening the log keeps every record before it, at once, without
    /// accounting (or punching) a million segments up to the target.
    #[test]
    fn a_jump_past_the_end_of_the_file_is_torn_not_followed() {
        let path = scratch("far-jump");
        let log = LogWriter::create_with(&path, options()).unwrap();
        for lsn in 1..=20 {
            log.append(&record(lsn)).unwrap();
        }
        log.sync().unwrap();
        let end = log.position(&log.lock());
        drop(log);
        let far = 1u64 << 40; // a segment start of the 1 MiB segments, 1 TiB in
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end as usize..end as usize + JUMP_FRAME].copy_from_slice(&jump_frame(far));
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        let mut torn = None;
        for item in LogReader::open(&path).unwrap() {
            match item {
                Ok(rec) => seen.push(rec.lsn),
                Err(err) => torn = Some(err.to_string()),
            }
        }
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
        let torn = torn.expect("the far jump is reported");
        assert!(torn.contains("past the end of the file"), "{torn}");
        let started = std::time::Instant::now();
        let log = LogWriter::open_with(&path, options()).unwrap();
        assert_eq!(log.durable_lsn(), 20);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        log.commit(log.append(&record(21)).unwrap()).unwrap();
        drop(log);
        assert_eq!(read_all(&path), ((1..=21).collect(), true));
        assert!(std::fs::metadata(&path).unwrap().len() < 4 * MIB);
        std::fs::remove_file(&path).unwrap();
    }

    /// Reopened after damage in a segment written again: the rest of that segment and
    /// every segment not live read as zeros before anything is written, so no frame of
    /// a commit never acknowledged (numbered past the new end) can be read later.
    #[test]
    fn a_reopened_log_clears_what_lies_past_its_end() {
        let path = scratch("clear");
        let log = LogWriter::create_with(&path, options()).unwrap();
        let mut lsn = 0;
        while log.stats().segments_reused == 0 || log.position(&log.lock()) % MIB < MIB / 2 {
            lsn += 1;
            log.append(&record(lsn)).unwrap();
            if lsn % 20 == 0 {
                log.commit(lsn).unwrap();
                // About 1 MB kept: the first record lies in the segment before.
                log.truncate_before(lsn.saturating_sub(300).max(1)).unwrap();
            }
        }
        log.sync().unwrap();
        let (current_end, top) = {
            let state = log.lock();
            (state.segments.current_end(), state.segments.top())
        };
        let segment_start = current_end - MIB;
        assert!(
            current_end < top * MIB,
            "the log should be in a reused segment"
        );
        drop(log);
        // A unit in the middle of the records written in this segment lost: the records
        // after it are stale now, numbered past the end recovery will find.
        let damaged = segment_start + MIB / 4;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[damaged as usize..damaged as usize + 4096].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let log = LogWriter::open_with(&path, options()).unwrap();
        let (start, live) = {
            let state = log.lock();
            (state.block_at, state.segments.live.clone())
        };
        assert!(
            start <= damaged + 4096 && start > segment_start,
            "start {start}"
        );
        assert!(
            live.len() == 2 && live[1] == segment_start / MIB,
            "{live:?}"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes[start as usize..current_end as usize]
                .iter()
                .all(|&b| b == 0),
            "stale frames left past the end"
        );
        let free: Vec<u64> = (0..top).filter(|i| !live.contains(i)).collect();
        assert!(
            !free.is_empty(),
            "no segment free to check (top {top}, {live:?})"
        );
        for index in free {
            let from = (index * MIB).max(8192) as usize;
            let to = ((index + 1) * MIB) as usize;
            assert!(
                bytes[from..to.min(bytes.len())].iter().all(|&b| b == 0),
                "segment {index}, not live, not cleared"
            );
        }
        let durable = log.durable_lsn();
        for more in durable + 1..durable + 400 {
            log.append(&record(more)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let (lsns, clean) = read_all(&path);
        assert!(clean && lsns.last() == Some(&(durable + 399)));
        std::fs::remove_file(&path).unwrap();
    }
}
