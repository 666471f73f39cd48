//! `SampleReader`: plays a sample file back with direct reads, each sample a slice of
//! the block it was read into.
//!
//! * **With an index** (a finished file) the reader plans its reads from the index
//!   points: each read covers whole records, several points at a time up to the window
//!   size, so no record is ever split across two reads and none is copied; the plan runs
//!   `depth` reads ahead.
//! * **Without one** (the writer died, or the index is damaged) it scans: it reads a
//!   window, walks the records in it, and reads again from the first record that did
//!   not fit. In a file whose writer died, the first header that was never written (all
//!   zero) ends the data cleanly; anything else that fails a check is reported.
//! * **Nothing unchecked is yielded.** Every record header carries its own CRC (so a
//!   damaged length is never followed) and every payload its CRC. The first failure is
//!   yielded as [`Error::Corrupt`] with the record's offset, and iteration ends there.

use std::path::Path;
use std::sync::Arc;

use crate::alloc::BufferAllocator;
use crate::blocks::{BlockSource, ReadBlock, ReadMemory, ReadPlan};
use crate::buffer::BufferMut;
use crate::caps;
use crate::direct::{DirectFile, DirectIo};
use crate::error::{Error, Result};
use crate::pool::BufferPool;
use crate::ring::IoRing;

use super::format::{
    payload_crc, round_up, FileHeader, HeaderFault, Index, RecordHeader, RecordKind, MAX_UNIT,
    MIN_UNIT, RECORD_HEADER,
};
use super::{Sample, StreamInfo};

/// How a [`SampleReader`] reads; methods take and return `Self`.
#[derive(Clone)]
pub struct ReaderOptions {
    depth: usize,
    window: usize,
    memory_budget: usize,
    direct: DirectIo,
    allocator: Option<Arc<dyn BufferAllocator>>,
    ring: Option<IoRing>,
}

/// The reader's own pool holds at most this much unless the file needs more.
const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

impl Default for ReaderOptions {
    fn default() -> ReaderOptions {
        ReaderOptions {
            depth: crate::direct::DEFAULT_DEPTH,
            window: 8 << 20,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            direct: DirectIo::Prefer,
            allocator: None,
            ring: None,
        }
    }
}

impl ReaderOptions {
    /// Reads in flight ahead of the caller, 1 to [`caps::MAX_DEPTH`] (default 4, as the
    /// sequential reader).
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }

    /// Bytes per read, rounded to the file's unit, at most [`caps::MAX_WINDOW`]
    /// (default 8 MiB); a record larger than this is read whole.
    pub fn window(mut self, bytes: usize) -> Self {
        self.window = bytes;
        self
    }

    /// The most memory the reader's own pool holds, at most
    /// [`caps::MAX_MEMORY_BUDGET`] (default 256 MiB), raised to twice the largest read
    /// a finished file's index says it needs. Samples the caller keeps hold their
    /// block; a read that finds the whole budget held by them fails with
    /// [`Error::OutOfMemory`] naming this option, instead of waiting for ever. Not used
    /// with [`allocator`](Self::allocator).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Whether to use `O_DIRECT` (default: where the file system allows it).
    pub fn direct(mut self, direct: DirectIo) -> Self {
        self.direct = direct;
        self
    }

    /// Where read blocks come from (default: a [`BufferPool`] of the reader's own, see
    /// [`memory_budget`](Self::memory_budget)). Samples the caller keeps hold their
    /// block; a host's pool blocks as that pool does (its back-pressure).
    pub fn allocator(mut self, allocator: Arc<dyn BufferAllocator>) -> Self {
        self.allocator = Some(allocator);
        self
    }

    /// The ring the reader's transfers go through (default:
    /// [`IoRing::process_default`]).
    pub fn ring(mut self, ring: IoRing) -> Self {
        self.ring = Some(ring);
        self
    }
}

impl std::fmt::Debug for ReaderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderOptions")
            .field("depth", &self.depth)
            .field("window", &self.window)
            .field("memory_budget", &self.memory_budget)
            .field("direct", &self.direct)
            .field("allocator", &self.allocator.is_some())
            .field("ring", &self.ring)
            .finish()
    }
}

/// One planned read: the aligned range read, and the records inside it.
#[derive(Debug, Clone, Copy)]
struct Window {
    read_at: u64,
    read_len: usize,
    /// The first record's offset.
    start: u64,
    /// Where the last record ends (the next window's `start`).
    end: u64,
}

enum Source {
    /// Reads planned from the index.
    Planned {
        ahead: BlockSource,
        windows: Arc<Vec<Window>>,
        /// The window the current block holds.
        current: Option<usize>,
    },
    /// Reads chosen as the records are walked.
    Scan,
}

/// Reads a sample file back: an iterator of `Result<Sample>` in file order.
///
/// See the [module example](crate::stream).
pub struct SampleReader {
    file: Arc<DirectFile>,
    ring: IoRing,
    unit: u64,
    window: usize,
    depth: usize,
    header: FileHeader,
    streams: Vec<StreamInfo>,
    index: Option<Arc<Index>>,
    /// Why an index the header promises cannot be used; yielded after the last sample.
    index_fault: Option<Error>,
    /// Where sample records end: the index (finished file) or the file's end.
    end: u64,
    file_len: u64,
    memory: ReadMemory,
    source: Source,
    block: Option<ReadBlock>,
    /// Offset of the next record.
    pos: u64,
    /// Samples before this time are skipped (set by `seek`).
    from_time: u64,
    done: bool,
    last_offset: Option<u64>,
    /// One past the sequence number of the last whole record passed (pads included).
    next_sequence: u64,
}

impl SampleReader {
    /// Opens `path` with the default [`ReaderOptions`].
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn open(path: impl AsRef<Path>) -> Result<SampleReader> {
        SampleReader::with_options(path, ReaderOptions::default())
    }

    /// Opens `path`, taking read blocks from `allocator` (the host's pool).
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn open_with(
        path: impl AsRef<Path>,
        allocator: Arc<dyn BufferAllocator>,
    ) -> Result<SampleReader> {
        SampleReader::with_options(path, ReaderOptions::default().allocator(allocator))
    }

    /// Opens `path` and checks its header and index.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Corrupt`] (offset 0) if it is
    /// not a sample file, or its header and the backup header are both damaged;
    /// [`Error::Unsupported`] for a newer format version; [`Error::InvalidArgument`] for
    /// a depth, window or memory budget of 0 or past its cap ([`caps`]). A damaged
    /// *index* is not an error here: the reader scans instead and yields the damage
    /// after the last sample. Nor is a torn or zeroed header where the backup holds
    /// (format version 2 and later): the reader then scans, without an index.
    pub fn with_options(path: impl AsRef<Path>, options: ReaderOptions) -> Result<SampleReader> {
        let depth = caps::check("ReaderOptions::depth", options.depth, caps::MAX_DEPTH)?;
        caps::check("ReaderOptions::window", options.window, caps::MAX_WINDOW)?;
        caps::check(
            "ReaderOptions::memory_budget",
            options.memory_budget,
            caps::MAX_MEMORY_BUDGET,
        )?;
        let file = DirectFile::options()
            .read(true)
            .direct(options.direct)
            .open(path)?;
        let file_len = file.len()?;
        // Until the index says what the file needs: enough for the header and index.
        let mut memory = match &options.allocator {
            Some(alloc) => ReadMemory::Wait(alloc.clone()),
            None => own_memory(options.memory_budget)?,
        };
        let ring = IoRing::given_or_default(options.ring.as_ref())?;
        let first = (file.limits().alignment() as usize).max(MIN_UNIT);
        let header = read_header(&ring, &file, &memory, first, file_len)?;
        let unit = u64::from(header.unit);
        let data_start = header.data_start();
        let file = Arc::new(file);
        let window = round_up(options.window as u64, unit).unwrap_or(unit) as usize;
        let mut reader = SampleReader {
            file,
            ring,
            unit,
            window,
            depth,
            streams: Vec::new(),
            index: None,
            index_fault: None,
            end: file_len,
            file_len,
            memory: memory.clone(),
            source: Source::Scan,
            block: None,
            pos: data_start,
            from_time: 0,
            done: false,
            last_offset: None,
            next_sequence: 0,
            header,
        };
        if reader.header.finalized {
            reader.end = reader.header.index_offset;
            match reader.load_index() {
                Ok(index) => reader.index = Some(Arc::new(index)),
                Err(err) => reader.index_fault = Some(err),
            }
        }
        if let (Some(index), None) = (&reader.index, &options.allocator) {
            // The file says what its largest read is: the own pool holds two of them.
            let largest = plan_windows(index, data_start, unit, reader.window as u64)
                .iter()
                .map(|w| w.read_len)
                .max()
                .unwrap_or(0);
            let needed = largest.saturating_mul(2).min(caps::MAX_MEMORY_BUDGET);
            if needed > options.memory_budget {
                memory = own_memory(needed)?;
                reader.memory = memory;
            }
        }
        reader.streams = reader
            .header
            .streams
            .iter()
            .enumerate()
            .map(|(i, &kind)| StreamInfo {
                number: (i + 1) as u16,
                kind,
                summary: reader.index.as_ref().map(|x| x.streams[i]),
                format: reader.header.formats.get(i).cloned().flatten(),
            })
            .collect();
        reader.restart(data_start);
        Ok(reader)
    }

    /// The streams in the file, in number order.
    pub fn streams(&self) -> &[StreamInfo] {
        &self.streams
    }

    /// Whether the file has a usable index (it was finished by `end_writing` and is
    /// intact); without one the reader recovers the samples by scanning.
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// Samples in the file, from the header of a finished file.
    pub fn sample_count(&self) -> Option<u64> {
        self.index.as_ref().map(|_| self.header.samples)
    }

    /// The file's alignment unit.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// The file offset of the record of the sample the iterator yielded last.
    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    /// Where the next record would start: once iteration has ended cleanly, where the
    /// whole records end (an index record in an unfinished file counts as their end).
    pub(crate) fn records_end(&self) -> u64 {
        self.pos
    }

    /// The sequence number the next record would carry (FORMAT.md: pads included).
    pub(crate) fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The file's header, as read (or its backup's).
    pub(crate) fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Moves so that iteration yields exactly the samples with `time` or later, in file
    /// order. With an index the reader starts at the last point that can hold such a
    /// sample; without one it scans from the start.
    ///
    /// # Errors
    /// None today; kept fallible for readers that must read to seek.
    pub fn seek(&mut self, time: u64) -> Result<()> {
        self.from_time = time;
        let start = match &self.index {
            Some(index) => match index.points.iter().position(|p| p.max_time >= time) {
                Some(0) => self.header.data_start(),
                Some(i) => index.points[i].offset,
                None => index.data_end,
            },
            None => self.header.data_start(),
        };
        self.restart(start);
        Ok(())
    }

    /// Reads the index record the header points at.
    fn load_index(&self) -> Result<Index> {
        let at = self.header.index_offset;
        // Past a cut, the damage is where the file ends.
        let offset = at.min(self.file_len);
        let bad = |detail: String| Error::Corrupt { offset, detail };
        if at < self.header.data_start() || at % self.unit != 0 || at >= self.file_len {
            return Err(bad(format!(
                "the header puts the index at {at}, outside the file of {} bytes",
                self.file_len
            )));
        }
        let len = usize::try_from(round_up(self.file_len - at, self.unit).unwrap_or(u64::MAX))
            .map_err(|_| bad("the index is larger than memory".into()))?;
        let buf = read_block(&self.ring, &self.file, &self.memory, len, at)?;
        if buf.len() < RECORD_HEADER {
            return Err(bad("the file ends inside the index".into()));
        }
        let header = RecordHeader::decode(&buf).map_err(|fault| bad(describe(fault)))?;
        if header.kind != RecordKind::Index {
            return Err(bad(
                "the header points at a record that is not the index".into()
            ));
        }
        let payload = RECORD_HEADER as u64..RECORD_HEADER as u64 + header.payload_len;
        if payload.end > buf.len() as u64 {
            return Err(bad("the file ends inside the index".into()));
        }
        let bytes = &buf[payload.start as usize..payload.end as usize];
        if payload_crc(bytes) != header.payload_crc {
            return Err(bad("the index's checksum does not match".into()));
        }
        let index = Index::decode(bytes, self.header.streams.len()).map_err(bad)?;
        let inside = index
            .points
            .first()
            .is_none_or(|p| p.offset >= self.header.data_start());
        if index.data_end != at || !inside {
            return Err(bad(
                "the index disagrees with the header about where data lies".into(),
            ));
        }
        Ok(index)
    }

    /// Restarts iteration at the record at `start`.
    fn restart(&mut self, start: u64) {
        self.block = None;
        self.pos = start;
        self.done = false;
        self.source = Source::Scan;
        if let Some(index) = &self.index {
            let windows = Arc::new(plan_windows(index, start, self.unit, self.window as u64));
            let plan_windows = windows.clone();
            let plan: ReadPlan = Arc::new(move |k| {
                let w = plan_windows.get(usize::try_from(k).ok()?)?;
                Some((w.read_at, w.read_len))
            });
            let ahead = BlockSource::new(
                self.file.clone(),
                self.ring.clone(),
                self.memory.clone(),
                self.depth,
                plan,
            );
            self.source = Source::Planned {
                ahead,
                windows,
                current: None,
            };
        }
    }

    fn corrupt(&mut self, offset: u64, detail: impl Into<String>) -> Option<Result<Sample>> {
        self.done = true;
        self.block = None;
        Some(Err(Error::Corrupt {
            offset,
            detail: detail.into(),
        }))
    }

    /// Makes `self.block` hold the record header at `self.pos`, reading as needed.
    /// `Ok(false)`: no more data (the caller decides whether that is clean).
    fn fetch_for_header(&mut self) -> Result<bool> {
        let pos = self.pos;
        let covered = |b: &ReadBlock| {
            pos >= b.offset && pos + RECORD_HEADER as u64 <= b.offset + b.data.len() as u64
        };
        match &mut self.source {
            Source::Planned {
                ahead,
                windows,
                current,
            } => {
                let in_window = current.is_some_and(|i| pos < windows[i].end);
                if in_window && self.block.as_ref().is_some_and(covered) {
                    return Ok(true);
                }
                if in_window {
                    return Ok(false); // the window's block ended early: truncated file
                }
                let next = current.map_or(0, |i| i + 1);
                let Some(window) = windows.get(next).copied() else {
                    return Ok(false);
                };
                if window.start != pos {
                    return Err(Error::Corrupt {
                        offset: pos,
                        detail: format!(
                            "the records end at {pos} but the index has the next one at {}",
                            window.start
                        ),
                    });
                }
                *current = Some(next);
                // The last window's block goes first: its memory may be the next read's.
                self.block = None;
                self.block = ahead.next_block().transpose()?;
                Ok(self.block.as_ref().is_some_and(covered))
            }
            Source::Scan => {
                if self.block.as_ref().is_some_and(covered) {
                    return Ok(true);
                }
                self.read_scan_window(RECORD_HEADER as u64)?;
                Ok(self.block.as_ref().is_some_and(covered))
            }
        }
    }

    /// Scan mode: reads from the unit holding `self.pos`, at least `need` bytes past it.
    fn read_scan_window(&mut self, need: u64) -> Result<()> {
        let start = self.pos / self.unit * self.unit;
        let stop = self
            .end
            .min(round_up(self.file_len, self.unit).unwrap_or(u64::MAX));
        let wanted = round_up(self.pos.saturating_add(need), self.unit)
            .unwrap_or(u64::MAX)
            .max(start + self.window as u64)
            .min(round_up(stop, self.unit).unwrap_or(u64::MAX));
        self.block = None;
        if wanted <= start {
            return Ok(());
        }
        let len = usize::try_from(wanted - start).map_err(|_| Error::Corrupt {
            offset: self.pos,
            detail: "a record larger than memory".into(),
        })?;
        let buf = read_block(&self.ring, &self.file, &self.memory, len, start)?;
        self.block = Some(ReadBlock {
            data: buf.freeze(),
            offset: start,
        });
        Ok(())
    }

    /// At the end of the data: clean, or the index's damage.
    fn finish(&mut self) -> Option<Result<Sample>> {
        self.done = true;
        self.block = None;
        self.index_fault.take().map(Err)
    }

    fn next_sample(&mut self) -> Option<Result<Sample>> {
        loop {
            if self.done {
                return None;
            }
            let pos = self.pos;
            if pos >= self.end {
                return self.finish();
            }
            match self.fetch_for_header() {
                Ok(true) => {}
                Ok(false) if !self.header.finalized && pos >= self.file_len => {
                    return self.finish()
                }
                Ok(false) => {
                    let detail = format!(
                        "the file ends at {} inside the data (which runs to {}): it was cut short",
                        self.file_len, self.end
                    );
                    return self.corrupt(pos.min(self.file_len), detail);
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
            let block = self.block.as_ref().expect("fetched");
            let at = (pos - block.offset) as usize;
            let header = match RecordHeader::decode(&block.data[at..]) {
                Ok(header) => header,
                Err(HeaderFault::Unwritten) if !self.header.finalized => return self.finish(),
                Err(fault) => return self.corrupt(pos, describe(fault)),
            };
            let record_end = pos.saturating_add(header.record_len);
            if record_end > self.end {
                let detail = format!(
                    "a record of {} bytes runs past the end of the data at {}",
                    header.record_len, self.end
                );
                return self.corrupt(pos, detail);
            }
            let payload_end = pos + RECORD_HEADER as u64 + header.payload_len;
            if payload_end > block.offset + block.data.len() as u64 {
                if payload_end > self.file_len {
                    let detail = format!("the file ends at {} inside this record", self.file_len);
                    return self.corrupt(pos, detail);
                }
                if matches!(self.source, Source::Planned { .. }) {
                    return self.corrupt(pos, "the record crosses an index point");
                }
                // Scan: read again from this record, all of it.
                if let Err(err) = self.read_scan_window(payload_end - pos) {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            }
            let data_at = at + RECORD_HEADER;
            let data_end = data_at + header.payload_len as usize;
            if payload_crc(&block.data[data_at..data_end]) != header.payload_crc {
                return self.corrupt(pos, "the payload's checksum does not match");
            }
            let data = match block.data.slice(data_at..data_end) {
                Ok(data) => data,
                Err(err) => return Some(Err(err)),
            };
            self.pos = record_end;
            match header.kind {
                RecordKind::Pad => {
                    self.next_sequence = header.sequence + 1;
                    continue;
                }
                RecordKind::Index if !self.header.finalized => {
                    // The writer died after its index, before its header: data ends here.
                    self.pos = pos;
                    return self.finish();
                }
                RecordKind::Index => {
                    return self.corrupt(pos, "an index record inside the data");
                }
                RecordKind::Sample => {}
            }
            let stream = u16::from(header.stream);
            if stream == 0 || usize::from(stream) > self.streams.len() {
                return self.corrupt(pos, format!("stream {stream} is not in the stream table"));
            }
            self.next_sequence = header.sequence + 1;
            if header.time < self.from_time {
                continue;
            }
            self.last_offset = Some(pos);
            return Some(Ok(Sample {
                stream,
                time: header.time,
                flags: header.flags,
                data,
            }));
        }
    }
}

/// The reader's own pool of `budget` bytes.
fn own_memory(budget: usize) -> Result<ReadMemory> {
    Ok(ReadMemory::Own {
        pool: BufferPool::new(budget)?,
        option: "ReaderOptions::memory_budget",
    })
}

/// `len` bytes of `file` from `at`, read on `ring` into a buffer from `memory` with
/// nothing else in flight (short at end of file).
fn read_block(
    ring: &IoRing,
    file: &DirectFile,
    memory: &ReadMemory,
    len: usize,
    at: u64,
) -> Result<BufferMut> {
    let buf = memory.take(len, 0)?.ok_or_else(|| {
        Error::OutOfMemory(format!(
            "no memory for a read of {len} bytes; raise ReaderOptions::memory_budget"
        ))
    })?;
    ring.read_at(file, buf, at).wait()
}

/// Reads and checks the file header at offset 0 (`block`: the bytes of one direct read,
/// a multiple of the device's alignment). Where that header fails its checks (torn,
/// zeroed, damaged), the backup a writer of version 2 or later put at offset `unit`
/// stands in for it; it is never finalized, so the file is then read by scanning. Only
/// the damaged header states `unit`, so the backup is looked for at each power of two
/// from 4096 on (a file holds both headers, so within its first half) whose first bytes
/// are not blank: the first such place is the backup, or there is none (it never
/// reaches past the first record).
fn read_header(
    ring: &IoRing,
    file: &DirectFile,
    memory: &ReadMemory,
    block: usize,
    file_len: u64,
) -> Result<FileHeader> {
    let head = read_block(ring, file, memory, block, 0)?;
    let (offset, detail) = match FileHeader::decode(&head) {
        Err(Error::Corrupt { offset, detail }) => (offset, detail),
        decoded => return decoded,
    };
    drop(head);
    let block = block as u64;
    let mut unit = MIN_UNIT as u64;
    while unit <= MAX_UNIT && unit.saturating_mul(2) <= file_len {
        let at = unit / block * block;
        let skip = (unit - at) as usize;
        let len = round_up(skip as u64 + RECORD_HEADER as u64, block).unwrap_or(block);
        let buf = read_block(ring, file, memory, len as usize, at)?;
        let bytes = buf.get(skip..).unwrap_or_default();
        if bytes.len() >= RECORD_HEADER && bytes[..RECORD_HEADER].iter().any(|&b| b != 0) {
            match FileHeader::decode_backup(bytes, unit) {
                Ok(backup) => return Ok(backup),
                Err(Error::Unsupported(why)) => return Err(Error::Unsupported(why)),
                Err(_) => break,
            }
        }
        unit *= 2;
    }
    Err(Error::Corrupt {
        offset: 0,
        detail: format!(
            "{detail} (file header, byte {offset}); no intact backup header follows it \
             either (files of format version 1 have none), so this is not a readable \
             sample file"
        ),
    })
}

fn describe(fault: HeaderFault) -> String {
    match fault {
        HeaderFault::Unwritten => "a record header of zeroes inside the data".into(),
        HeaderFault::Bad(detail) => detail,
    }
}

/// Groups the index's regions from the point at `start` into reads of about `window`
/// bytes, each ending where a region (and so a record) ends.
fn plan_windows(index: &Index, start: u64, unit: u64, window: u64) -> Vec<Window> {
    let mut bounds: Vec<u64> = index
        .points
        .iter()
        .map(|p| p.offset)
        .filter(|&o| o > start && o < index.data_end)
        .collect();
    bounds.push(index.data_end);
    let mut windows = Vec::new();
    let mut from = start;
    let mut i = 0;
    while from < index.data_end && i < bounds.len() {
        let mut to = bounds[i];
        i += 1;
        while i < bounds.len() && bounds[i] - from <= window {
            to = bounds[i];
            i += 1;
        }
        let read_at = from / unit * unit;
        let read_end = round_up(to, unit).unwrap_or(to);
        windows.push(Window {
            read_at,
            read_len: (read_end - read_at) as usize,
            start: from,
            end: to,
        });
        from = to;
    }
    windows
}

impl Iterator for SampleReader {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Result<Sample>> {
        self.next_sample()
    }
}

impl std::fmt::Debug for SampleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleReader")
            .field("path", &self.file.path())
            .field("streams", &self.streams)
            .field("has_index", &self.has_index())
            .field("position", &self.pos)
            .finish()
    }
}
