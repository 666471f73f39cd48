//! Damaged files: random flipped bytes and truncations of a finished recording. The
//! reader yields only samples whose checksums hold, in order, then `Corrupt` with an
//! offset no later than the damage; it never panics and never yields a wrong sample.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind};
use pagebuf::Error;
use proptest::prelude::*;
use support::{fill_pattern, read_planned, scratch};

/// Sample `i` of the recording: stream, time, flags, size (every sixth one large).
fn plan(i: u64) -> (u16, u64, SampleFlags, usize) {
    let stream = 1 + (i % 3) as u16;
    let flags = if i % 4 == 0 {
        SampleFlags::KEY_FRAME
    } else {
        SampleFlags::empty()
    };
    let size = if i % 6 == 5 {
        70_000 + i as usize * 13
    } else {
        1 + (i as usize * 733) % 3000
    };
    (stream, i * 400_000, flags, size)
}

const SAMPLES: u64 = 48;

/// The pristine recording, written once: its directory, its bytes, and where the last
/// sample's payload ends.
fn original() -> &'static (PathBuf, Vec<u8>, u64) {
    static FILE: OnceLock<(PathBuf, Vec<u8>, u64)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = scratch("stream-corruption");
        let path = dir.join("original.pbs");
        let writer = SampleWriter::create(&path).unwrap();
        for kind in [StreamKind::Video, StreamKind::Audio, StreamKind::Data] {
            writer.add_stream(kind).unwrap();
        }
        writer.begin_writing().unwrap();
        for i in 0..SAMPLES {
            let (stream, time, flags, size) = plan(i);
            let mut buf = writer.allocate_sample(size).unwrap();
            buf.set_len(size).unwrap();
            fill_pattern(i, &mut buf);
            writer.write_sample(stream, time, flags, buf).unwrap();
            if i == SAMPLES / 2 {
                writer.flush().unwrap(); // a pad record in the middle
            }
        }
        writer.end_writing().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut reader = SampleReader::open(&path).unwrap();
        let last = reader.by_ref().last().unwrap().unwrap();
        let last_end = reader.last_offset().unwrap() + 64 + last.data.len() as u64;
        (dir, bytes, last_end)
    })
}

/// Opens a damaged copy and reads it to the end; checks every yielded sample and
/// returns (samples yielded, the error that ended it, if any).
fn read_damaged(bytes: &[u8]) -> (u64, Option<Error>) {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let path = original()
        .0
        .join(format!("case-{}.pbs", CASE.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    let outcome = match SampleReader::open(&path) {
        Ok(mut reader) => read_planned(&mut reader, plan),
        Err(err) => (0, Some(err)),
    };
    std::fs::remove_file(&path).unwrap();
    outcome
}

fn corrupt_offset(err: &Error) -> u64 {
    match err {
        Error::Corrupt { offset, .. } => *offset,
        other => panic!("damage must be reported as Corrupt, got {other}"),
    }
}

#[test]
fn the_pristine_file_reads_whole() {
    let (count, err) = read_damaged(&original().1);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(count, SAMPLES);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn flipped_bytes_never_yield_a_wrong_sample(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut bytes = original().1.clone();
        let mut last = 0;
        for (at, xor) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            last = last.max(at as u64);
        }
        let (count, err) = read_damaged(&bytes);
        if let Some(err) = &err {
            prop_assert!(corrupt_offset(err) <= last, "{err} reported past the damage at {last}");
        } else {
            // Undetected damage must be harmless: it hit padding, and every sample came.
            prop_assert_eq!(count, SAMPLES);
        }
    }

    #[test]
    fn truncated_files_yield_a_prefix_then_corrupt(cut in any::<prop::sample::Index>()) {
        let bytes = &original().1;
        let cut = cut.index(bytes.len());
        let (count, err) = read_damaged(&bytes[..cut]);
        let Some(err) = err else {
            // Only the padding after the index was cut: nothing is missing.
            prop_assert!(cut as u64 >= index_end(bytes), "a cut at {cut} went unnoticed");
            return Ok(());
        };
        prop_assert!(corrupt_offset(&err) <= cut as u64, "{err} reported past the cut at {cut}");
        // Samples after the cut never come; all of them only if it cut padding or index.
        prop_assert!(count < SAMPLES || cut as u64 >= original().2);
    }

    #[test]
    fn flips_and_a_cut_together(
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = original().1.clone();
        let cut = cut.index(bytes.len());
        let at = at.index(cut.max(1));
        bytes[at] ^= xor;
        bytes.truncate(cut);
        let (_, err) = read_damaged(&bytes);
        if let Some(err) = err {
            prop_assert!(corrupt_offset(&err) <= cut as u64);
        } else {
            prop_assert!(cut as u64 >= index_end(&original().1), "a cut at {cut} went unnoticed");
        }
    }
}

/// Where the original's index payload ends (from the header and the index record):
/// bytes after it are padding.
fn index_end(bytes: &[u8]) -> u64 {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let index = word(24);
    index + 64 + word(index as usize + 24)
}
