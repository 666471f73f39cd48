//! [`LogReader`]: a log's committed records, in order.

use std::path::Path;

use super::scan::{read_header, Scanner, Step};
use super::Lsn;
use crate::buffer::Buffer;
use crate::direct::DirectFile;
use crate::error::{Error, Result};

/// One record of a log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// What [`LogWriter::append`](super::LogWriter::append) returned for it.
    pub lsn: Lsn,
    /// Its bytes (a view of the block read, not a copy, where the record lies in one).
    pub data: Buffer,
}

/// A log's records in order, from the first kept one
/// ([`LogWriter::truncate_before`](super::LogWriter::truncate_before)), each checked
/// (length, number, CRC32C).
///
/// The iteration ends (`None`) at the clean end of the log (zeros, preallocated space,
/// or the end of the file). A torn or corrupt record (a crash mid-write, damage) yields
/// one `Err(Error::Corrupt)` naming its offset and what is wrong, then `None`: never a
/// wrong record, never a panic. Opening takes no lock: a log may be read while it is
/// written (records committed by then are read; where the writer is writing a segment
/// again, its records end on stale frames of the segment's earlier use, read as one
/// `Err(Corrupt)` at the end; a writer that is dropped leaves a clean end there).
///
/// ```
/// use pagebuf::log::{LogReader, LogWriter};
///
/// # let path = std::env::temp_dir().join("pagebuf-doc-log-reader.wal");
/// let log = LogWriter::create(&path)?;
/// for i in 0..3u32 {
///     log.append(&i.to_le_bytes())?;
/// }
/// log.sync()?;
/// for record in LogReader::open(&path)? {
///     let record = record?;
///     assert_eq!(record.data[..], (record.lsn as u32 - 1).to_le_bytes());
/// }
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), pagebuf::Error>(())
/// ```
pub struct LogReader {
    scanner: Option<Scanner>,
}

impl LogReader {
    /// Opens the log at `path` for reading.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if neither header copy is valid (not a pagebuf log, another
    /// version, or both copies damaged); [`Error::Io`] from the system.
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader> {
        let file = DirectFile::open(path.as_ref())?;
        let header = read_header(&file)?;
        Ok(LogReader {
            scanner: Some(Scanner::new(file, &header)),
        })
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Result<LogRecord>> {
        let scanner = self.scanner.as_mut()?;
        let step = scanner.step();
        match step {
            Ok(Step::Record { lsn, data, .. }) => Some(Ok(LogRecord { lsn, data })),
            Ok(Step::End { .. }) => {
                self.scanner = None;
                None
            }
            Ok(Step::Torn { offset, detail }) => {
                self.scanner = None;
                Some(Err(Error::Corrupt { offset, detail }))
            }
            Err(err) => {
                self.scanner = None;
                Some(Err(err))
            }
        }
    }
}

impl std::iter::FusedIterator for LogReader {}
