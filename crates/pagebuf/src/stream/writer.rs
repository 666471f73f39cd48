//! `SampleWriter`: the recorder (`IWMWriter`). It owns each sample from `write_sample`
//! until the sample is on disk, lays records out as FORMAT.md says, and keeps the file
//! recoverable at every step.
//!
//! * **State.** Configuring (`add_stream`) → writing (`allocate_sample`,
//!   `write_sample`, `flush`) → ended (`end_writing`). A call in the wrong state is
//!   `InvalidRequest`; the state lives under one mutex with the layout, so several
//!   threads may write and the file order is the order `write_sample` calls took it.
//! * **Layout.** The writer keeps one *file offset*, the tail. A small sample is copied,
//!   with its record header, into the current *chunk* (a frame of a small pool), which is
//!   written when full. A large sample from `allocate_sample` already has 64 bytes of
//!   headroom in front and its padding behind, in one block from the sample pool: the
//!   writer seals the chunk (a pad record to the next unit), puts the record header in the
//!   headroom, and writes the sample's own block at the tail. Nothing is ever written
//!   twice, and a flush seals the chunk too, so acknowledged bytes are never rewritten.
//! * **Space** is reserved ahead of the tail (64 MiB at a time), so writes in flight
//!   are overwrites the file system runs side by side; the file is cut to the tail at
//!   the end. A writer that dies leaves zeroes after its records, which a reader takes
//!   for the end of the data.
//! * **Memory** is bounded by the sample pool's budget (`allocate_sample` waits while it
//!   is spent) plus the chunk pool; a buffer goes back as soon as its write completes.
//! * **Failure.** The first failed write stops all later ones (they would land beyond a
//!   hole) and is reported by the next call and by `end_writing`, every time after;
//!   everything up to the last successful `flush` stays readable.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[cfg(feature = "testing")]
use crate::blocks::WriteTrace;
use crate::blocks::{default_block_size, BlockSink, OwnPool};
use crate::buffer::BufferMut;
use crate::caps;
use crate::direct::{limits_before_open, DirectFile, DirectIo};
use crate::error::{Error, Result};
use crate::memory::{HugePages, RegionOptions};
use crate::pool::{class_size, BufferPool, BufferPoolStats, PoolStats};
use crate::ring::IoRing;

use super::format::{
    data_start, payload_crc, FileHeader, Index, IndexPoint, RecordHeader, RecordKind, MAX_STREAMS,
    MIN_UNIT, RECORD_HEADER, VERSION,
};
use super::resume::{self, ResumeReport};
use super::{
    SampleFlags, StreamFormat, StreamKind, StreamSummary, Watermark, WriteSummary, TICKS_PER_SECOND,
};

/// Samples at least this long, allocated by `allocate_sample`, are written from their
/// own buffer; shorter ones are copied into a chunk (a separate write of a few bytes
/// would cost more than the copy, and waste up to a unit of padding).
const ZERO_COPY_MIN: usize = 64 * 1024;
/// Copied records start a new index point after this many bytes.
const INDEX_SPAN: u64 = 1 << 20;
/// Zeroes for padding.
const ZEROES: [u8; RECORD_HEADER] = [0; RECORD_HEADER];

/// How a [`SampleWriter`] is set up; methods take and return `Self`.
///
/// ```
/// use std::time::Duration;
/// use pagebuf::stream::WriterOptions;
/// let options = WriterOptions::default()
///     .memory_budget(256 << 20)
///     .sync_tolerance(Duration::from_secs(1));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct WriterOptions {
    memory_budget: usize,
    sync_tolerance: Duration,
    depth: usize,
    direct: DirectIo,
    ring: Option<IoRing>,
    #[cfg(feature = "testing")]
    trace_writes: bool,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            memory_budget: 64 << 20,
            sync_tolerance: Duration::from_secs(3),
            depth: crate::direct::DEFAULT_DEPTH,
            direct: DirectIo::Prefer,
            ring: None,
            #[cfg(feature = "testing")]
            trace_writes: false,
        }
    }
}

impl WriterOptions {
    /// Bytes of samples allocated and not yet written, at most (default 64 MiB, cap
    /// [`caps::MAX_MEMORY_BUDGET`]): `allocate_sample` waits while they are out. A
    /// sample takes its record's size (64 bytes of header, padding to the file's
    /// unit) rounded to the pool's size class: a sample of 9 MiB needs a budget of
    /// 10 MiB. Samples under 64 KiB (copied into shared chunks as they are written)
    /// come from a pool of their own beside it, an eighth of this from 1 to 8 MiB, so
    /// a sound packet never waits for memory pictures on their way to the disk hold.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// How far behind another stream a sample may be before it is refused with
    /// [`Error::LateOperation`] (default 3 s, the reference's default).
    pub fn sync_tolerance(mut self, tolerance: Duration) -> Self {
        self.sync_tolerance = tolerance;
        self
    }

    /// Writes in flight, 1 to [`caps::MAX_DEPTH`] (default 4).
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// Whether to use `O_DIRECT` (default: where the file system allows it).
    pub fn direct(mut self, direct: DirectIo) -> Self {
        self.direct = direct;
        self
    }

    /// The ring the writer's transfers go through (default:
    /// [`IoRing::process_default`]).
    pub fn ring(mut self, ring: IoRing) -> Self {
        self.ring = Some(ring);
        self
    }

    /// Records every write's address, length and offset (`SampleWriter::write_trace`):
    /// a test hook (feature `testing`) that proves the zero-copy path.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn trace_writes(mut self, trace: bool) -> Self {
        self.trace_writes = trace;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Configuring,
    Writing,
    Ended,
}

/// Everything that changes, under one lock.
struct Inner {
    phase: Phase,
    kinds: Vec<StreamKind>,
    /// As many as `kinds`: what `add_stream_with` gave, for the header.
    formats: Vec<Option<StreamFormat>>,
    totals: Vec<StreamSummary>,
    /// The chunk being filled with copied records; `None` when sealed.
    chunk: Option<BufferMut>,
    /// File offset of the chunk's first byte, or (no chunk) of the next unit to write.
    chunk_offset: u64,
    sequence: u64,
    points: Vec<IndexPoint>,
    open_point: Option<IndexPoint>,
    started: Option<Instant>,
    zero_copy: u64,
    copied: u64,
}

impl Inner {
    fn tail(&self) -> u64 {
        self.chunk_offset + self.chunk.as_ref().map_or(0, |c| c.len() as u64)
    }

    /// Notes a sample record at `offset` for the index: a zero-copy record is a point
    /// of its own; copied records share one per `INDEX_SPAN` bytes.
    fn index_record(&mut self, offset: u64, time: u64, own_point: bool) {
        let reuse = !own_point
            && self
                .open_point
                .is_some_and(|p| offset < p.offset + INDEX_SPAN);
        if reuse {
            if let Some(p) = self.open_point.as_mut() {
                p.max_time = p.max_time.max(time);
            }
            return;
        }
        self.points.extend(self.open_point.take());
        let point = IndexPoint {
            offset,
            max_time: time,
        };
        if own_point {
            self.points.push(point);
        } else {
            self.open_point = Some(point);
        }
    }
}

/// Records timed samples of several streams to a file, owning each sample until it is
/// on disk (`IWMWriter`). `Send + Sync`: every method takes `&self`.
///
/// See the [module example](crate::stream) for a whole recording.
pub struct SampleWriter {
    file: Arc<DirectFile>,
    /// The file's format version: [`VERSION`], or an older file's when resumed.
    version: u16,
    /// What `resume` kept and cut; `None` for a writer that created its file.
    resumed: Option<ResumeReport>,
    unit: usize,
    budget: usize,
    tolerance: u64,
    samples: BufferPool,
    /// Samples shorter than `ZERO_COPY_MIN` (copied into a chunk by `write_sample`,
    /// their buffer free again at once): a pool of their own, so a sound packet never
    /// waits for memory held by pictures on their way to the disk.
    small_samples: BufferPool,
    /// The bytes of a partly filled chunk sealed before a zero-copy record (a picture
    /// after some sound): copied out, so the chunk stays to be filled again. Chunks are
    /// few (`depth + 2`); one sent half empty before every picture would run them out
    /// while the disk is slow, and the next sound packet would wait for one under the
    /// writer's lock.
    sealed_copies: BufferPool,
    chunks: OwnPool,
    sink: BlockSink,
    inner: Mutex<Inner>,
    #[cfg(feature = "testing")]
    sync_gate: Gate,
}

/// A gate flushes pass before their sync; closed only by tests.
#[cfg(feature = "testing")]
#[derive(Default)]
struct Gate {
    /// (closed, flushes waiting at it)
    state: Mutex<(bool, usize)>,
    changed: std::sync::Condvar,
}

#[cfg(feature = "testing")]
impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 += 1;
        self.changed.notify_all();
        while state.0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.1 -= 1;
    }

    fn hold(&self, closed: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = closed;
        self.changed.notify_all();
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

impl SampleWriter {
    /// Creates (or truncates) `path` with the default [`WriterOptions`].
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn create(path: impl AsRef<Path>) -> Result<SampleWriter> {
        SampleWriter::with_options(path, WriterOptions::default())
    }

    /// Creates (or truncates) `path`.
    ///
    /// The file is the writer's alone: an exclusive lock is taken before it is
    /// truncated, and held until the writer drops; a file this call creates has its
    /// directory synced before the writer reports anything durable.
    ///
    /// # Errors
    /// Before the file is touched: [`Error::InvalidArgument`] for a depth or memory
    /// budget of 0 or past its cap ([`caps`]), or a budget below one sample record.
    /// Then [`Error::InvalidRequest`] if another writer holds the file; [`Error::Io`] if
    /// it cannot be created; [`Error::Unsupported`] with `DirectIo::Require` where the
    /// file system refuses direct I/O.
    pub fn with_options(path: impl AsRef<Path>, options: WriterOptions) -> Result<SampleWriter> {
        let path = path.as_ref();
        let (depth, budget) = checked(&options)?;
        let limits = limits_before_open(path)?;
        let unit = (limits.alignment() as usize).max(MIN_UNIT);
        check_budget(budget, unit)?;
        let file = DirectFile::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .exclusive(true)
            .direct(options.direct)
            .open(path)?;
        // The file's own figures, in case they differ from what was there before.
        let unit = (file.limits().alignment() as usize).max(MIN_UNIT);
        if file.created() {
            file.sync_directory()?;
        }
        let ring = IoRing::given_or_default(options.ring.as_ref())?;
        let inner = Inner {
            phase: Phase::Configuring,
            kinds: Vec::new(),
            formats: Vec::new(),
            totals: Vec::new(),
            chunk: None,
            chunk_offset: 0,
            sequence: 0,
            points: Vec::new(),
            open_point: None,
            started: None,
            zero_copy: 0,
            copied: 0,
        };
        let layout = Layout {
            version: VERSION,
            unit,
            depth,
            budget,
        };
        SampleWriter::assemble(file, ring, layout, &options, inner, None)
    }

    /// Reopens, with the default [`WriterOptions`], a file whose writer died before
    /// `end_writing`: see [`resume_with`](Self::resume_with).
    ///
    /// # Errors
    /// As `resume_with`.
    pub fn resume(path: impl AsRef<Path>) -> Result<SampleWriter> {
        SampleWriter::resume_with(path, WriterOptions::default())
    }

    /// Reopens a file whose writer died before `end_writing`, in the writing state.
    ///
    /// The file is read as a [`SampleReader`](super::SampleReader) recovers it: every
    /// whole record is kept (every sample acknowledged by a `flush`, and whatever else
    /// reached the disk whole), up to the first that is not whole. The unit the kept
    /// records end in is closed with a pad record, the file is cut there (the torn
    /// tail, and any stale record of the dead writer beyond it, are gone), and samples
    /// go on after it: the streams, their numbers and formats, totals, sync-tolerance
    /// rule and index points are the file's, so `write_sample` goes on where the dead
    /// writer was and [`end_writing`](Self::end_writing) writes an index of every
    /// sample, old and new. [`resumed`](Self::resumed) says what was kept and cut. The
    /// file keeps its format version. The options are as for a new writer (the unit is
    /// the file's).
    ///
    /// ```
    /// use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind};
    ///
    /// # let path = std::env::temp_dir().join(format!("pagebuf-doc-resume-{}.pbs", std::process::id()));
    /// let writer = SampleWriter::create(&path)?;
    /// let audio = writer.add_stream(StreamKind::Audio)?;
    /// writer.begin_writing()?;
    /// let mut sound = writer.allocate_sample(480)?;
    /// sound.extend_from_slice(&[1; 480])?;
    /// writer.write_sample(audio, 0, SampleFlags::empty(), sound)?;
    /// writer.flush()?;
    /// drop(writer); // no end_writing: as if the process had died
    ///
    /// let writer = SampleWriter::resume(&path)?;
    /// assert_eq!(writer.resumed().unwrap().samples(), 1);
    /// let mut sound = writer.allocate_sample(480)?;
    /// sound.extend_from_slice(&[2; 480])?;
    /// writer.write_sample(audio, 100_000, SampleFlags::empty(), sound)?;
    /// assert_eq!(writer.end_writing()?.samples, 2);
    /// assert!(SampleReader::open(&path)?.has_index());
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), pagebuf::Error>(())
    /// ```
    ///
    /// # Errors
    /// Before the file is touched: [`Error::InvalidArgument`] for options past their
    /// caps; [`Error::InvalidRequest`] if another writer holds the file, or if
    /// `end_writing` finished it (nothing to resume); what
    /// [`SampleReader::open`](super::SampleReader::open) says of a file that is not a
    /// sample file, of another version, or whose header and backup are both damaged.
    /// [`Error::Io`] from the system (a missing file is `NotFound`).
    pub fn resume_with(path: impl AsRef<Path>, options: WriterOptions) -> Result<SampleWriter> {
        let (depth, budget) = checked(&options)?;
        let file = DirectFile::options()
            .read(true)
            .write(true)
            .exclusive(true)
            .direct(options.direct)
            .open(path.as_ref())?;
        let ring = IoRing::given_or_default(options.ring.as_ref())?;
        let found = resume::recover(&file, &ring, options.direct)?;
        let header = &found.header;
        let unit = header.unit as usize;
        let alignment = file.limits().alignment() as usize;
        if unit % alignment.max(1) != 0 {
            return Err(Error::Unsupported(format!(
                "{} was laid out in units of {unit} bytes, but direct I/O here needs \
                 multiples of {alignment}: resume it where it was written, or copy it \
                 there",
                file.path().display()
            )));
        }
        check_budget(budget, unit)?;
        let file_len = file.len()?;
        let (resumed_at, padded) =
            resume::close_tail(&file, found.data_end, unit as u64, found.next_sequence)?;
        let mut inner = Inner {
            phase: Phase::Writing,
            kinds: header.streams.clone(),
            formats: header.formats.clone(),
            totals: vec![StreamSummary::default(); header.streams.len()],
            chunk: None,
            chunk_offset: resumed_at,
            sequence: found.next_sequence + u64::from(padded),
            points: Vec::new(),
            open_point: None,
            started: Some(Instant::now()),
            zero_copy: 0,
            copied: 0,
        };
        for kept in &found.samples {
            // Only the writer's zero-copy records start on a unit and are this long.
            let own_point = kept.offset % unit as u64 == 0 && kept.len >= ZERO_COPY_MIN as u64;
            inner.index_record(kept.offset, kept.time, own_point);
            inner.totals[usize::from(kept.stream) - 1].record(kept.time, kept.len);
            if own_point {
                inner.zero_copy += 1;
            } else {
                inner.copied += 1;
            }
        }
        let report = ResumeReport {
            streams: inner.totals.clone(),
            data_end: found.data_end,
            resumed_at,
            cut_bytes: file_len.saturating_sub(resumed_at),
            end: found.end,
        };
        let layout = Layout {
            version: header.version,
            unit,
            depth,
            budget,
        };
        SampleWriter::assemble(file, ring, layout, &options, inner, Some(report))
    }

    /// What [`resume`](Self::resume) kept of the file and what it cut; `None` for a
    /// writer that created its file.
    pub fn resumed(&self) -> Option<&ResumeReport> {
        self.resumed.as_ref()
    }

    /// The writer over `file` (open, its layout decided), in the state `inner` says.
    fn assemble(
        file: DirectFile,
        ring: IoRing,
        layout: Layout,
        options: &WriterOptions,
        inner: Inner,
        resumed: Option<ResumeReport>,
    ) -> Result<SampleWriter> {
        let Layout {
            version,
            unit,
            depth,
            budget,
        } = layout;
        let chunk_size = (default_block_size(&file) / unit * unit).max(unit);
        let chunks = OwnPool::new(&ring, chunk_size, depth + 2, unit)?;
        let file = Arc::new(file);
        let sink = BlockSink::new(file.clone(), ring, depth);
        #[cfg(feature = "testing")]
        if options.trace_writes {
            sink.enable_trace();
        }
        let tolerance = u64::try_from(options.sync_tolerance.as_nanos() / 100).unwrap_or(u64::MAX);
        Ok(SampleWriter {
            file,
            version,
            resumed,
            unit,
            budget,
            tolerance,
            // Transparent huge pages: a picture's pages then come in physically
            // contiguous runs, few segments per request (as the pipelines' own blocks:
            // `OwnPool`).
            samples: BufferPool::with_options(
                budget,
                RegionOptions::default().huge_pages(HugePages::Transparent),
            )?,
            small_samples: BufferPool::new(small_budget(budget))?,
            sealed_copies: BufferPool::new(SEALED_COPIES_BUDGET)?,
            chunks,
            sink,
            inner: Mutex::new(inner),
            #[cfg(feature = "testing")]
            sync_gate: Gate::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether writes bypass the page cache (see [`DirectFile::is_direct`]).
    pub fn is_direct(&self) -> bool {
        self.file.is_direct()
    }

    /// The alignment unit of the file: large records start at multiples of it.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Statistics of the pool samples are allocated from.
    pub fn sample_pool_stats(&self) -> BufferPoolStats {
        self.samples.stats()
    }

    /// Statistics of the pool of chunks small samples are copied into.
    pub fn chunk_pool_stats(&self) -> PoolStats {
        self.chunks.stats()
    }

    /// Every write so far, if `WriterOptions::trace_writes` was set (feature `testing`).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn write_trace(&self) -> Vec<WriteTrace> {
        self.sink.trace()
    }

    /// Adds a stream and returns its number (1, 2, ... up to 63).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] once writing has begun; [`Error::InvalidArgument`]
    /// beyond 63 streams.
    pub fn add_stream(&self, kind: StreamKind) -> Result<u16> {
        self.add("add_stream", kind, None)
    }

    /// Adds a stream that carries its media `format` (codec, picture or sound
    /// parameters, codec data), which readers give back in
    /// [`StreamInfo::format`](super::StreamInfo::format); returns its number as
    /// [`add_stream`](Self::add_stream) does.
    ///
    /// # Errors
    /// As `add_stream`, and [`Error::InvalidArgument`] for a format of another kind
    /// than `kind`, or codec data past what the file still holds
    /// ([`CODEC_DATA_BUDGET`](super::CODEC_DATA_BUDGET), all streams together). A
    /// refused call adds no stream.
    pub fn add_stream_with(&self, kind: StreamKind, format: StreamFormat) -> Result<u16> {
        self.add("add_stream_with", kind, Some(format))
    }

    /// `add_stream` and `add_stream_with`, called `call` in errors.
    fn add(&self, call: &str, kind: StreamKind, format: Option<StreamFormat>) -> Result<u16> {
        let mut inner = self.lock();
        if inner.phase != Phase::Configuring {
            return Err(Error::InvalidRequest(format!(
                "{call} after begin_writing: add every stream before writing begins"
            )));
        }
        if inner.kinds.len() == MAX_STREAMS {
            return Err(Error::InvalidArgument(format!(
                "a sample file holds at most {MAX_STREAMS} streams; combine some"
            )));
        }
        if let Some(format) = &format {
            let taken = inner
                .formats
                .iter()
                .flatten()
                .map(|f| f.codec_data().len())
                .sum();
            format.check_for_stream(kind, taken)?;
        }
        inner.kinds.push(kind);
        inner.formats.push(format);
        inner.totals.push(StreamSummary::default());
        Ok(inner.kinds.len() as u16)
    }

    /// Writes the file header and starts accepting samples.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if not configuring or without streams; [`Error::Io`].
    pub fn begin_writing(&self) -> Result<()> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Configuring if inner.kinds.is_empty() => {
                return Err(Error::InvalidRequest(
                    "begin_writing without streams: call add_stream first".into(),
                ))
            }
            Phase::Configuring => {}
            Phase::Writing => {
                return Err(Error::InvalidRequest("begin_writing called twice".into()))
            }
            Phase::Ended => return Err(ended()),
        }
        self.write_header(&inner, None)?;
        inner.phase = Phase::Writing;
        inner.chunk_offset = data_start(self.version, self.unit as u64);
        inner.started = Some(Instant::now());
        Ok(())
    }

    /// Writes the file header at offset 0, synchronously; `finished` = (index offset,
    /// samples) once the index is on disk. The first time (`begin_writing`), also its
    /// backup at offset `unit`, in a unit of its own that nothing writes again: a tear of
    /// the header's rewrite at `end_writing` cannot reach it.
    fn write_header(&self, inner: &Inner, finished: Option<(u64, u64)>) -> Result<()> {
        let header = FileHeader {
            version: self.version,
            unit: self.unit as u32,
            finalized: finished.is_some(),
            index_offset: finished.map_or(0, |f| f.0),
            samples: finished.map_or(0, |f| f.1),
            sync_tolerance: self.tolerance,
            streams: inner.kinds.clone(),
            formats: inner.formats.clone(),
        };
        let mut block = self.chunks.allocate()?;
        block.set_len(self.unit)?;
        block.fill(0);
        header.encode(&mut block);
        if finished.is_none() {
            let mut backup = self.chunks.allocate()?;
            backup.set_len(self.unit)?;
            backup.fill(0);
            header.encode_backup(&mut backup);
            self.sink.submit(backup.freeze(), self.unit as u64)?;
        }
        self.sink.submit(block.freeze(), 0)?;
        self.sink.wait_idle()
    }

    /// Checks that samples may be allocated or written now.
    fn check_writing(&self, inner: &mut Inner, doing: &str) -> Result<()> {
        match inner.phase {
            Phase::Configuring => Err(Error::InvalidRequest(format!(
                "{doing} before begin_writing: add streams, call begin_writing, then write"
            ))),
            Phase::Ended => Err(ended()),
            // A failed write or sync: the original error, to every caller after it.
            Phase::Writing => self.sink.check(),
        }
    }

    /// A buffer for a sample of up to `size` bytes, with the room its record needs
    /// around it so that `write_sample` writes it without a copy. Waits while the
    /// memory budget is spent (samples still being written).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] unless writing; [`Error::InvalidArgument`] for a size
    /// beyond the memory budget; the original [`Error::Io`] after a failed write.
    pub fn allocate_sample(&self, size: usize) -> Result<BufferMut> {
        let span = self.prepare_allocation(size)?;
        self.finish_allocation(self.pool_for(size).allocate(span), size)
    }

    /// The pool a sample of `size` bytes comes from.
    fn pool_for(&self, size: usize) -> &BufferPool {
        if size < ZERO_COPY_MIN {
            &self.small_samples
        } else {
            &self.samples
        }
    }

    /// As [`allocate_sample`](Self::allocate_sample) without waiting: `Ok(None)` while
    /// the memory budget is spent.
    ///
    /// # Errors
    /// As `allocate_sample`.
    pub fn try_allocate_sample(&self, size: usize) -> Result<Option<BufferMut>> {
        let span = self.prepare_allocation(size)?;
        match self.pool_for(size).try_allocate(span) {
            Ok(Some(buf)) => self.finish_allocation(Ok(buf), size).map(Some),
            Ok(None) => Ok(None),
            Err(err) => self.finish_allocation(Err(err), size).map(Some),
        }
    }

    fn prepare_allocation(&self, size: usize) -> Result<usize> {
        self.check_writing(&mut self.lock(), "allocate_sample")?;
        match sample_footprint(size, self.unit) {
            Some(footprint) if footprint <= self.budget => {
                // The record's span; the pool serves it from the footprint's class.
                Ok(RecordHeader::span(size as u64, self.unit as u64).unwrap_or(0) as usize)
            }
            footprint => Err(Error::InvalidArgument(format!(
                "a sample of {size} bytes takes {} of the writer's memory (its record \
                 header, padding to {} bytes and the pool's size class), more than \
                 WriterOptions::memory_budget({}); raise the budget to at least that, or \
                 write smaller samples",
                footprint.map_or_else(
                    || "more than the address space".into(),
                    |f| format!("{f} bytes")
                ),
                self.unit,
                self.budget
            ))),
        }
    }

    fn finish_allocation(&self, outcome: Result<BufferMut>, size: usize) -> Result<BufferMut> {
        let mut buf = outcome.map_err(|err| match err {
            Error::Closed => ended(),
            other => other,
        })?;
        let reserved = buf.reserve_headroom(RECORD_HEADER);
        debug_assert!(reserved, "span >= RECORD_HEADER");
        buf.limit_max_len(size);
        Ok(buf)
    }

    /// Hands a sample to the writer, which owns it from now on and returns its memory
    /// to the pool once it is written. `time` is in 100 ns units.
    ///
    /// # Errors
    /// * [`Error::InvalidRequest`] unless writing.
    /// * [`Error::InvalidArgument`] for a stream `add_stream` did not return, or a time
    ///   before the stream's previous sample.
    /// * [`Error::LateOperation`] for a time more than the sync tolerance behind the
    ///   newest sample of another stream.
    /// * The original [`Error::Io`] (and a reminder every time after) once a write
    ///   failed.
    ///
    /// The sample is dropped (not written) on any error.
    pub fn write_sample(
        &self,
        stream: u16,
        time: u64,
        flags: SampleFlags,
        sample: BufferMut,
    ) -> Result<()> {
        let len = sample.len();
        let mut block = sample;
        let headroom = block.expand_to_block();
        let unit = self.unit as u64;
        let span = RecordHeader::span(len as u64, unit);
        let zero_copy = span.filter(|&span| {
            len >= ZERO_COPY_MIN
                && headroom == RECORD_HEADER
                && block.max_len() as u64 >= span
                && block.as_ptr() as usize % self.unit == 0
        });
        let crc = payload_crc(&block[headroom..headroom + len]);

        let sent =
            self.write_record(stream, time, flags, block, (len, headroom, zero_copy, crc))?;
        // Outside the lock, by a thread that sent a write: space reserved ahead (an
        // `fallocate` of 64 MiB can take tens of milliseconds), and back-pressure (it
        // waits for the disk while `depth` writes are in flight). A thread whose
        // sample was only copied, and the writers waiting for the lock, are not held
        // up by either.
        if let Some(tail) = sent {
            self.sink.reserve(tail + RESERVE_LEAD);
            self.sink.wait_for_room()?;
        }
        Ok(())
    }

    /// `write_sample` under the writer's lock: the record laid out and handed over.
    /// The tail after it if this record sent a write (the tail moves past every
    /// write sent, and only then), `None` if it was only copied into the chunk.
    fn write_record(
        &self,
        stream: u16,
        time: u64,
        flags: SampleFlags,
        mut block: BufferMut,
        (len, headroom, zero_copy, crc): (usize, usize, Option<u64>, u32),
    ) -> Result<Option<u64>> {
        let mut inner = self.lock();
        let sent_before = inner.chunk_offset;
        self.check_writing(&mut inner, "write_sample")?;
        self.check_sample(&inner, stream, time)?;
        let mut header = RecordHeader {
            kind: RecordKind::Sample,
            stream: stream as u8,
            flags,
            time,
            record_len: 0,
            payload_len: len as u64,
            payload_crc: crc,
            sequence: inner.sequence,
        };
        match zero_copy {
            Some(span) => {
                self.seal(&mut inner)?;
                let offset = inner.chunk_offset;
                header.record_len = span;
                header.encode(&mut block.whole_mut()[..RECORD_HEADER]);
                let end = span as usize;
                block.whole_mut()[RECORD_HEADER + len..end].fill(0);
                block.set_len(end)?;
                self.sink.submit_unbounded(block.freeze(), offset)?;
                inner.chunk_offset += span;
                inner.index_record(offset, time, true);
                inner.zero_copy += 1;
            }
            None => {
                header.record_len = RecordHeader::span(len as u64, RECORD_HEADER as u64)
                    .ok_or_else(|| Error::InvalidArgument(format!("sample of {len} bytes")))?;
                let offset = inner.tail();
                let mut bytes = [0u8; RECORD_HEADER];
                header.encode(&mut bytes);
                let pad = (header.record_len as usize) - RECORD_HEADER - len;
                self.append(
                    &mut inner,
                    &[&bytes, &block[headroom..headroom + len], &ZEROES[..pad]],
                )?;
                drop(block);
                inner.index_record(offset, time, false);
                inner.copied += 1;
            }
        }
        inner.sequence += 1;
        inner.totals[usize::from(stream) - 1].record(time, len as u64);
        Ok((inner.chunk_offset != sent_before).then(|| inner.tail()))
    }

    /// The rules a sample must meet before it is accepted.
    fn check_sample(&self, inner: &Inner, stream: u16, time: u64) -> Result<()> {
        let count = inner.kinds.len();
        if stream == 0 || usize::from(stream) > count {
            return Err(Error::InvalidArgument(format!(
                "unknown stream {stream}: this writer's streams are 1..={count}, the numbers \
                 add_stream returned"
            )));
        }
        let own = &inner.totals[usize::from(stream) - 1];
        if own.samples > 0 && time < own.last_time {
            return Err(Error::InvalidArgument(format!(
                "stream {stream}: time {time} is before the stream's previous sample at {}; \
                 write each stream's samples in time order",
                own.last_time
            )));
        }
        let newest = inner
            .totals
            .iter()
            .enumerate()
            .filter(|(i, s)| *i + 1 != usize::from(stream) && s.samples > 0)
            .max_by_key(|(_, s)| s.last_time);
        if let Some((other, s)) = newest {
            if s.last_time > time && s.last_time - time > self.tolerance {
                return Err(Error::LateOperation(format!(
                    "stream {stream}: time {time} is {:.3} s behind stream {} (at {}), beyond \
                     the sync tolerance of {:.3} s; deliver streams closer together or raise \
                     WriterOptions::sync_tolerance",
                    (s.last_time - time) as f64 / TICKS_PER_SECOND as f64,
                    other + 1,
                    s.last_time,
                    self.tolerance as f64 / TICKS_PER_SECOND as f64,
                )));
            }
        }
        Ok(())
    }

    /// Appends bytes to the chunk, writing each chunk as it fills.
    fn append(&self, inner: &mut Inner, parts: &[&[u8]]) -> Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let chunk = match &mut inner.chunk {
                    Some(chunk) => chunk,
                    none => none.insert(self.chunks.allocate()?),
                };
                let take = (chunk.max_len() - chunk.len()).min(rest.len());
                chunk.extend_from_slice(&rest[..take])?;
                rest = &rest[take..];
                if chunk.len() == chunk.max_len() {
                    self.submit_chunk(inner)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the chunk (a whole number of units) and moves past it.
    fn submit_chunk(&self, inner: &mut Inner) -> Result<()> {
        let Some(mut chunk) = inner.chunk.take() else {
            return Ok(());
        };
        let len = chunk.len();
        if len == 0 {
            return Ok(());
        }
        let offset = inner.chunk_offset;
        inner.chunk_offset += len as u64;
        // Less than half full: its bytes are sent in a copy (if one is to be had now)
        // and the chunk is kept.
        if len < chunk.max_len() / 2 {
            if let Some(mut copy) = self.sealed_copies.try_allocate(len)? {
                copy.extend_from_slice(&chunk)?;
                chunk.clear();
                inner.chunk = Some(chunk);
                self.sink.submit_unbounded(copy.freeze(), offset)?;
                return Ok(());
            }
        }
        self.sink.submit_unbounded(chunk.freeze(), offset)?;
        Ok(())
    }

    /// Pads the chunk to a unit boundary with a pad record and writes it.
    fn seal(&self, inner: &mut Inner) -> Result<()> {
        let used = inner.chunk.as_ref().map_or(0, |c| c.len());
        let gap = (self.unit - used % self.unit) % self.unit;
        if gap > 0 {
            // Records are 64-byte multiples and a unit is too, so a gap holds a header.
            let pad = RecordHeader {
                kind: RecordKind::Pad,
                stream: 0,
                flags: SampleFlags::empty(),
                time: 0,
                record_len: gap as u64,
                payload_len: 0,
                payload_crc: payload_crc(&[]),
                sequence: inner.sequence,
            };
            inner.sequence += 1;
            let mut bytes = [0u8; RECORD_HEADER];
            pad.encode(&mut bytes);
            let chunk = inner.chunk.as_mut().expect("a gap means a chunk");
            chunk.extend_from_slice(&bytes)?;
            let new_len = chunk.len() + gap - RECORD_HEADER;
            let start = chunk.len();
            chunk.set_len(new_len)?;
            chunk[start..].fill(0);
        }
        self.submit_chunk(inner)
    }

    /// A durability barrier: returns once every sample written before the call is on
    /// disk, with the [`Watermark`] of what that is.
    ///
    /// Other threads are not held up: the pending copied samples are sealed under the
    /// writer's lock (a moment), then the wait for the disk and the `fdatasync` happen
    /// without it, so `write_sample` and `allocate_sample` go on during a flush (what they
    /// write then is not in this watermark). The sync waits only for the writes this
    /// flush covers, not for those issued after it. Not writing: the watermark of what
    /// was written (all of it durable once `end_writing` returned; none before
    /// `begin_writing`).
    ///
    /// # Errors
    /// The original [`Error::Io`] of a failed write or of the sync.
    pub fn flush(&self) -> Result<Watermark> {
        let mut inner = self.lock();
        let mark = Watermark::of(&inner.totals);
        if inner.phase != Phase::Writing {
            return Ok(mark);
        }
        self.sink.check()?;
        self.seal(&mut inner)?;
        let covered = self.sink.last_ticket();
        drop(inner);
        #[cfg(feature = "testing")]
        self.sync_gate.pass();
        self.sink.sync_through(covered)?;
        Ok(mark)
    }

    /// Holds every flush at the point where it has let go of the writer's lock and is
    /// about to wait for the disk, until called again with `false` (tests of the
    /// flush that must not stall writers).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn hold_flushes_before_sync(&self, hold: bool) {
        self.sync_gate.hold(hold);
    }

    /// Flushes held now by [`hold_flushes_before_sync`](Self::hold_flushes_before_sync).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn flushes_held(&self) -> usize {
        self.sync_gate.held()
    }

    /// Drains every sample, writes the index, finalizes the header, syncs, and reports.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] unless writing; the [`Error::Io`] of any failed write
    /// (the file then has no index and is read in recovery mode).
    pub fn end_writing(&self) -> Result<WriteSummary> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Writing => {}
            Phase::Configuring => {
                return Err(Error::InvalidRequest(
                    "end_writing before begin_writing: there is nothing to end".into(),
                ))
            }
            Phase::Ended => return Err(ended()),
        }
        inner.phase = Phase::Ended;
        let outcome = self.finalize(&mut inner);
        // Wake anyone waiting in allocate_sample: writing is over.
        self.samples.close();
        self.small_samples.close();
        self.sealed_copies.close();
        let samples = outcome?;
        let streams = inner.totals.clone();
        let first = streams
            .iter()
            .filter(|s| s.samples > 0)
            .map(|s| s.first_time)
            .min();
        let last = streams.iter().map(|s| s.last_time).max();
        let media = match (first, last) {
            (Some(first), Some(last)) => Duration::from_nanos((last - first).saturating_mul(100)),
            _ => Duration::ZERO,
        };
        Ok(WriteSummary {
            samples,
            bytes: streams.iter().map(|s| s.bytes).sum(),
            file_bytes: inner.chunk_offset,
            streams,
            media_duration: media,
            elapsed: inner.started.map_or(Duration::ZERO, |s| s.elapsed()),
            zero_copy_samples: inner.zero_copy,
            copied_samples: inner.copied,
        })
    }

    /// The steps of `end_writing` that can fail; returns the sample count.
    fn finalize(&self, inner: &mut Inner) -> Result<u64> {
        self.sink.check()?;
        self.seal(inner)?;
        inner.points.extend(inner.open_point.take());
        let index_offset = inner.chunk_offset;
        let payload = Index {
            data_end: index_offset,
            streams: inner.totals.clone(),
            points: inner.points.clone(),
        }
        .encode();
        let header = RecordHeader {
            kind: RecordKind::Index,
            stream: 0,
            flags: SampleFlags::empty(),
            time: 0,
            record_len: RecordHeader::span(payload.len() as u64, RECORD_HEADER as u64)
                .expect("an index is far smaller than the address space"),
            payload_len: payload.len() as u64,
            payload_crc: payload_crc(&payload),
            sequence: inner.sequence,
        };
        inner.sequence += 1;
        let mut bytes = [0u8; RECORD_HEADER];
        header.encode(&mut bytes);
        let pad = header.record_len as usize - RECORD_HEADER - payload.len();
        self.append(inner, &[&bytes, &payload, &ZEROES[..pad]])?;
        self.seal(inner)?;
        self.sink.finish(inner.chunk_offset)?;
        let samples: u64 = inner.totals.iter().map(|s| s.samples).sum();
        // Only now that the index is on disk may the header point at it.
        self.write_header(inner, Some((index_offset, samples)))?;
        self.sink.sync()?;
        Ok(samples)
    }
}

/// How a writer's file is laid out and its memory sized.
struct Layout {
    version: u16,
    unit: usize,
    depth: usize,
    budget: usize,
}

/// The depth and memory budget of `options`, checked against their caps.
fn checked(options: &WriterOptions) -> Result<(usize, usize)> {
    let depth = caps::check("WriterOptions::depth", options.depth, caps::MAX_DEPTH)?;
    let budget = caps::check(
        "WriterOptions::memory_budget",
        options.memory_budget,
        caps::MAX_MEMORY_BUDGET,
    )?;
    Ok((depth, budget))
}

/// Refuses a memory budget that cannot hold one sample record in units of `unit`.
fn check_budget(budget: usize, unit: usize) -> Result<()> {
    let smallest = sample_footprint(1, unit).unwrap_or(usize::MAX);
    if budget < smallest {
        return Err(Error::InvalidArgument(format!(
            "WriterOptions::memory_budget({budget}) cannot hold one sample record \
             ({smallest} bytes); give the writer at least a few MiB"
        )));
    }
    Ok(())
}

/// Space is kept reserved at least this far past the tail (see `write_sample`).
const RESERVE_LEAD: u64 = 32 << 20;

/// The budget of the pool partly filled chunks are copied into when sealed: 128 seals of
/// 32 KiB in flight at once.
const SEALED_COPIES_BUDGET: usize = 4 << 20;

/// The budget of the small samples' pool: an eighth of the large samples', from 1 MiB
/// to 8 MiB (their buffers are out only between `allocate_sample` and `write_sample`).
fn small_budget(budget: usize) -> usize {
    (budget / 8).clamp(1 << 20, 8 << 20)
}

/// The bytes of the sample pool's budget a sample of `size` bytes takes: its record
/// (header and padding to `unit`), rounded to the pool's size class; `None` past the
/// address space.
fn sample_footprint(size: usize, unit: usize) -> Option<usize> {
    let span = RecordHeader::span(size as u64, unit as u64)?;
    class_size(usize::try_from(span).ok()?)
}

fn ended() -> Error {
    Error::InvalidRequest(
        "writing has ended (end_writing was called); create a new SampleWriter".into(),
    )
}

impl Drop for SampleWriter {
    /// Without `end_writing`, writes out what was accepted and syncs, but writes no
    /// index: readers recover the file by scanning it.
    fn drop(&mut self) {
        let mut inner = self.lock();
        if inner.phase == Phase::Writing {
            inner.phase = Phase::Ended;
            if self.seal(&mut inner).is_ok() {
                let _ = self.sink.finish(inner.chunk_offset);
            }
        }
        self.samples.close();
        self.small_samples.close();
        self.sealed_copies.close();
    }
}

impl std::fmt::Debug for SampleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("SampleWriter")
            .field("path", &self.path())
            .field("phase", &inner.phase)
            .field("streams", &inner.kinds)
            .field("tail", &inner.tail())
            .finish()
    }
}
