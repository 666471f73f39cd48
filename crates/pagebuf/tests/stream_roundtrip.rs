//! Whole recordings read back byte-exact: several streams written from several threads
//! at once, samples from 1 byte to 8 MiB; files finished, unfinished, and on a
//! 4096-byte-sector device.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind, WriterOptions};
use pagebuf::{BufferAllocator, BufferPool};
use support::{fill_pattern, pattern, scratch, LoopMount};

/// What one stream's thread writes: (time, flags, size) of sample `i`; the content is
/// `pattern(seed(stream, i))`.
fn plan(stream: u16, i: u64) -> (u64, SampleFlags, usize) {
    let time = i * 10_000;
    match stream {
        // Video: key frames every 10, sizes 64 KiB .. 8 MiB.
        1 => {
            let flags = if i % 10 == 0 {
                SampleFlags::KEY_FRAME
            } else {
                SampleFlags::empty()
            };
            let size = [64 << 10, 700_001, 3 << 20, 8 << 20, 100_000][i as usize % 5];
            (time, flags, size)
        }
        // Audio: small packets, every size from 1 byte up.
        2 => (time, SampleFlags::empty(), 1 + (i as usize * 997) % 8_000),
        // Data: tiny, with the odd discontinuity.
        _ => {
            let flags = if i % 7 == 3 {
                SampleFlags::DISCONTINUITY
            } else {
                SampleFlags::empty()
            };
            (time, flags, 1 + (i as usize * 31) % 120)
        }
    }
}

fn seed(stream: u16, i: u64) -> u64 {
    (u64::from(stream) << 32) | i
}

const COUNTS: [(u16, u64); 3] = [(1, 40), (2, 2500), (3, 1500)];

/// Writes the three streams from three threads; returns nothing until all are written.
fn record(writer: &SampleWriter) {
    assert_eq!(writer.add_stream(StreamKind::Video).unwrap(), 1);
    assert_eq!(writer.add_stream(StreamKind::Audio).unwrap(), 2);
    assert_eq!(writer.add_stream(StreamKind::Data).unwrap(), 3);
    writer.begin_writing().unwrap();
    std::thread::scope(|s| {
        for (stream, count) in COUNTS {
            s.spawn(move || {
                for i in 0..count {
                    let (time, flags, size) = plan(stream, i);
                    let mut buf = writer.allocate_sample(size).unwrap();
                    buf.set_len(size).unwrap();
                    fill_pattern(seed(stream, i), &mut buf);
                    writer.write_sample(stream, time, flags, buf).unwrap();
                    if i % 500 == 499 {
                        writer.flush().unwrap();
                    }
                }
            });
        }
    });
}

/// Reads everything back and checks every sample of every stream, in order.
fn verify(reader: SampleReader) -> u64 {
    let mut next: BTreeMap<u16, u64> = BTreeMap::new();
    let mut total = 0;
    for sample in reader {
        let sample = sample.unwrap();
        let i = next.entry(sample.stream).or_default();
        let (time, flags, size) = plan(sample.stream, *i);
        assert_eq!(
            (sample.time, sample.flags),
            (time, flags),
            "stream {} sample {i}",
            sample.stream
        );
        assert_eq!(
            sample.data.len(),
            size,
            "stream {} sample {i}",
            sample.stream
        );
        assert!(
            sample.data[..] == pattern(seed(sample.stream, *i), size)[..],
            "stream {} sample {i}: bytes differ",
            sample.stream
        );
        *i += 1;
        total += 1;
    }
    for (stream, count) in COUNTS {
        assert_eq!(
            next.get(&stream).copied().unwrap_or(0),
            count,
            "stream {stream}"
        );
    }
    total
}

fn options() -> WriterOptions {
    // The three threads run at their own pace: no sync tolerance in this test.
    WriterOptions::default()
        .sync_tolerance(Duration::from_secs(1 << 30))
        .memory_budget(48 << 20)
}

fn round_trip(path: &Path) {
    let writer = SampleWriter::with_options(path, options()).unwrap();
    record(&writer);
    let summary = writer.end_writing().unwrap();
    let samples: u64 = COUNTS.iter().map(|c| c.1).sum();
    assert_eq!(summary.samples, samples);
    assert_eq!(summary.streams[1].samples, 2500);
    assert_eq!(
        summary.zero_copy_samples, 40,
        "every video frame went out without a copy"
    );
    assert_eq!(std::fs::metadata(path).unwrap().len(), summary.file_bytes);

    let reader = SampleReader::open(path).unwrap();
    assert!(reader.has_index());
    assert_eq!(reader.sample_count(), Some(samples));
    let kinds: Vec<_> = reader
        .streams()
        .iter()
        .map(|s| (s.number, s.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, StreamKind::Video),
            (2, StreamKind::Audio),
            (3, StreamKind::Data)
        ]
    );
    assert_eq!(reader.streams()[2].summary.unwrap().samples, 1500);
    assert_eq!(verify(reader), samples);
}

#[test]
fn concurrent_streams_round_trip_byte_exact() {
    round_trip(&scratch("stream-round-trip").join("take.pbs"));
}

#[test]
fn a_host_allocator_supplies_the_read_blocks() {
    let dir = scratch("stream-host-allocator");
    let path = dir.join("take.pbs");
    let writer = SampleWriter::with_options(&path, options()).unwrap();
    record(&writer);
    writer.end_writing().unwrap();
    let pool = BufferPool::new(128 << 20).unwrap();
    let host: Arc<dyn BufferAllocator> = Arc::new(pool.clone());
    verify(SampleReader::open_with(&path, host).unwrap());
    let reused: u64 = pool.stats().classes.iter().map(|c| c.reused).sum();
    assert!(
        reused > 0,
        "the reader recycled the host's blocks: {:?}",
        pool.stats()
    );
}

#[test]
fn an_unfinished_file_is_recovered_by_scanning() {
    let dir = scratch("stream-unfinished");
    let path = dir.join("take.pbs");
    {
        let writer = SampleWriter::with_options(&path, options()).unwrap();
        record(&writer);
    } // dropped without end_writing: no index
    let reader = SampleReader::open(&path).unwrap();
    assert!(!reader.has_index());
    verify(reader);
}

#[test]
fn a_4096_byte_sector_device_round_trips() {
    let dir = scratch("stream-4k-device");
    let Some(disk) = LoopMount::new(&dir, 4096, 512 << 20) else {
        return;
    };
    let path = disk.mount.join("take.pbs");
    round_trip(&path);
    let writer = SampleWriter::create(disk.mount.join("probe.pbs")).unwrap();
    assert!(writer.is_direct());
    assert_eq!(writer.unit(), 4096);
}

/// Sample `i` of `tests/fixtures/stream_v1.pbs`, a version-1 file (no backup header,
/// records from `unit`) that the version-1 writer recorded: 5 samples of 2 streams, the
/// second one written without a copy.
fn v1_plan(i: u64) -> (u16, u64, SampleFlags, usize) {
    let stream = 1 + (i % 2) as u16;
    let flags = if i % 2 == 0 {
        SampleFlags::KEY_FRAME
    } else {
        SampleFlags::empty()
    };
    let size = [100, 65_536, 3_000, 1, 500][i as usize];
    (stream, 1_000 + i * 1_000, flags, size)
}

/// Sets a header's CRC (at 60, over its used bytes) to match its content.
fn reseal_header(header: &mut [u8]) {
    let used = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
    header[60..64].fill(0);
    let sum = crc32c::crc32c(&header[..used]);
    header[60..64].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn a_version_1_file_still_reads_with_and_without_its_index() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stream_v1.pbs");
    let bytes = std::fs::read(fixture).unwrap();
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        1,
        "a version-1 file"
    );
    let dir = scratch("stream-version-1");
    let path = dir.join("v1.pbs");
    let read = |bytes: &[u8], indexed: bool| {
        std::fs::write(&path, bytes).unwrap();
        let mut reader = SampleReader::open(&path).unwrap();
        assert_eq!(reader.has_index(), indexed);
        assert_eq!(reader.streams().len(), 2);
        assert_eq!(reader.unit(), 4096);
        let all = support::read_planned(&mut reader, v1_plan);
        assert!(matches!(all, (5, None)), "{all:?}");
        // Seeking (from the first index point, or the start of the data) finds the
        // first record at `unit`, where version 1 puts it.
        for (time, first) in [(0, 0), (1_000, 0), (1_500, 1), (3_000, 2), (5_000, 4)] {
            reader.seek(time).unwrap();
            let times: Vec<u64> = reader.by_ref().map(|s| s.unwrap().time).collect();
            let want: Vec<u64> = (first..5).map(|i| v1_plan(i).1).collect();
            assert_eq!(times, want, "seek to {time}");
        }
    };
    // As written: finalized, with its index.
    read(&bytes, true);
    {
        let reader = SampleReader::open(&path).unwrap();
        assert_eq!(reader.sample_count(), Some(5));
    }
    // The header as it was before `end_writing` (the writer died after its index).
    let mut unfinished = bytes.clone();
    let index_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    unfinished[20] &= !1;
    unfinished[24..40].fill(0);
    reseal_header(&mut unfinished[..4096]);
    read(&unfinished, false);
    // ... and before its index (the writer died after its last flush).
    unfinished[index_offset..].fill(0);
    read(&unfinished, false);
    // A version-1 file has no backup header: its first sector lost, it is refused.
    let mut torn = bytes.clone();
    torn[..512].fill(0);
    std::fs::write(&path, &torn).unwrap();
    assert!(matches!(
        SampleReader::open(&path),
        Err(pagebuf::Error::Corrupt { offset: 0, .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
