//! Damaged files: random flipped bytes and truncations of a finished recording. The
//! reader yields only samples whose checksums hold, in order, then `Corrupt` with an
//! offset no later than the damage; it never panics and never yields a wrong sample.
//! A torn, reverted or zeroed file header loses no sample: the backup header stands in.

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
        // Named by the process: nextest runs each test of this file in a process of
        // its own, side by side, and a shared name let one clobber another's file.
        let dir = scratch(&format!("stream-corruption-{}", std::process::id()));
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

// A torn or zeroed file header (the header at offset 0 is written twice, so a power cut
// during `end_writing` can tear it): every flushed sample still comes back, from the
// backup header the writer wrote once at `begin_writing` and never rewrote.

/// Streams in the torn-header recordings: enough that the header's used bytes
/// (64 + 16 per stream) run past 512, so a tear at a 512-byte sector breaks its CRC.
const MANY_STREAMS: usize = 32;

/// Sample `i` of the 8 MiB recording with 5 samples (three large, two small).
fn big_plan(i: u64) -> (u16, u64, SampleFlags, usize) {
    const SIZES: [usize; 5] = [2 << 20, 100, 3 << 20, 3_000, (3 << 20) - 4_000];
    let flags = if i == 0 {
        SampleFlags::KEY_FRAME
    } else {
        SampleFlags::empty()
    };
    (1 + (i % 3) as u16, i * 400_000, flags, SIZES[i as usize])
}

/// A recording of `big_plan`'s 5 samples, flushed, then finished by `end_writing` (or
/// dropped without it): its bytes, the header as `begin_writing` wrote it (read back
/// before the writer ended), and the unit.
fn big_recording(finished: bool) -> (Vec<u8>, Vec<u8>, usize) {
    static RECORDING: AtomicU64 = AtomicU64::new(0);
    let dir = scratch(&format!(
        "stream-torn-{}-{}",
        std::process::id(),
        RECORDING.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join("take.pbs");
    let writer = SampleWriter::create(&path).unwrap();
    let kinds = [StreamKind::Video, StreamKind::Audio, StreamKind::Data];
    for i in 0..MANY_STREAMS {
        writer.add_stream(kinds[i % 3]).unwrap();
    }
    writer.begin_writing().unwrap();
    let unit = writer.unit();
    for i in 0..5 {
        let (stream, time, flags, size) = big_plan(i);
        let mut buf = writer.allocate_sample(size).unwrap();
        buf.set_len(size).unwrap();
        fill_pattern(i, &mut buf);
        writer.write_sample(stream, time, flags, buf).unwrap();
    }
    writer.flush().unwrap();
    let begun = std::fs::read(&path).unwrap()[..unit].to_vec();
    if finished {
        writer.end_writing().unwrap();
    }
    drop(writer);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() >= 8 << 20, "an 8 MiB recording");
    std::fs::remove_dir_all(&dir).unwrap();
    (bytes, begun, unit)
}

/// Reads `bytes` as a file: (samples of `big_plan` yielded, whether it had an index, the
/// error that ended it), or the error `open` returned.
fn read_big(bytes: &[u8]) -> Result<(u64, bool, Option<Error>), Error> {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let path = original()
        .0
        .join(format!("torn-{}.pbs", CASE.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    let outcome = SampleReader::open(&path).map(|mut reader| {
        let indexed = reader.has_index();
        let (count, err) = read_planned(&mut reader, big_plan);
        (count, indexed, err)
    });
    std::fs::remove_file(&path).unwrap();
    outcome
}

/// Asserts that `bytes` yield all 5 samples (byte-exact, checked by `read_planned`) and
/// no error, with an index or (read by scanning) without.
fn assert_whole(bytes: &[u8], indexed: bool, case: &str) {
    let failures = whole_failures(&[(case, bytes.to_vec())], indexed);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The cases of `cases` that do not yield all 5 samples (byte-exact) and no error, with
/// an index or without, and what they yielded instead.
fn whole_failures(cases: &[(&str, Vec<u8>)], indexed: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for (case, bytes) in cases {
        let outcome = read_big(bytes);
        if !matches!(outcome, Ok((5, has_index, None)) if has_index == indexed) {
            failures.push(format!(
                "{case}: wanted all 5 samples and no error (index: {indexed}), got {outcome:?}"
            ));
        }
    }
    failures
}

/// The header damage a torn or lost first sector leaves, each applied to `bytes`.
fn torn_headers(bytes: &[u8], begun: &[u8], unit: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = Vec::new();
    let mut reverted = bytes.to_vec();
    reverted[20] &= !1; // finalized
    reverted[24..40].fill(0); // index offset, samples; the CRC at 60 is the finalized one
    cases.push(("finalized fields reverted, CRC stale", reverted));
    let mut crc = bytes.to_vec();
    crc[60..64].fill(0);
    cases.push(("header CRC zeroed", crc));
    let mut sector = bytes.to_vec();
    sector[..512].fill(0);
    cases.push(("first 512 bytes zeroed", sector));
    let mut whole = bytes.to_vec();
    whole[..unit].fill(0);
    cases.push(("first unit zeroed", whole));
    let mut torn = bytes.to_vec();
    torn[..512].copy_from_slice(&begun[..512]);
    cases.push((
        "torn at 512: begin_writing's sector, then the finalized one",
        torn,
    ));
    cases
}

#[test]
fn a_torn_header_of_a_finished_file_loses_no_sample() {
    let (bytes, begun, unit) = big_recording(true);
    assert_ne!(bytes[..unit], begun[..], "end_writing rewrote the header");
    assert_whole(&bytes, true, "as written");
    let failures = whole_failures(&torn_headers(&bytes, &begun, unit), false);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_torn_header_of_an_unfinished_file_loses_no_sample() {
    let (bytes, begun, unit) = big_recording(false);
    assert_eq!(bytes[..unit], begun[..], "no end_writing, no rewrite");
    assert_whole(&bytes, false, "as written");
    let mut half = bytes.clone();
    half[20] |= 1; // claims to be finalized; the CRC says otherwise
    let mut cases = vec![("finalized flag set, CRC stale", half)];
    cases.extend(torn_headers(&bytes, &begun, unit));
    let failures = whole_failures(&cases, false);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_damaged_backup_header_changes_nothing_while_the_header_holds() {
    let (bytes, _, unit) = big_recording(true);
    let mut zeroed = bytes.clone();
    zeroed[unit..2 * unit].fill(0);
    assert_whole(&zeroed, true, "backup zeroed");
    let mut flipped = bytes.clone();
    flipped[unit + 30] ^= 0x10;
    assert_whole(&flipped, true, "a byte of the backup flipped");
}

#[test]
fn both_headers_damaged_is_corrupt_at_offset_zero() {
    let (bytes, _, unit) = big_recording(true);
    let mut cases = Vec::new();
    let mut zeroed = bytes.clone();
    zeroed[..2 * unit].fill(0);
    cases.push(zeroed);
    let mut sectors = bytes.clone();
    sectors[..512].fill(0);
    sectors[unit..unit + 512].fill(0);
    cases.push(sectors);
    let mut crcs = bytes.clone();
    crcs[60] ^= 1;
    crcs[unit + 60] ^= 1;
    cases.push(crcs);
    // A backup that claims to be finalized (CRC made to match) is no backup.
    let mut finalized = bytes.clone();
    finalized[..512].fill(0);
    finalized[unit + 20] |= 1;
    let used = u32::from_le_bytes(finalized[unit + 16..unit + 20].try_into().unwrap()) as usize;
    finalized[unit + 60..unit + 64].fill(0);
    let sum = crc32c::crc32c(&finalized[unit..unit + used]);
    finalized[unit + 60..unit + 64].copy_from_slice(&sum.to_le_bytes());
    cases.push(finalized);
    for damaged in cases {
        let outcome = read_big(&damaged);
        assert!(
            matches!(outcome, Err(Error::Corrupt { offset: 0, .. })),
            "{outcome:?}"
        );
    }
}

/// The original's alignment unit, from its header.
fn original_unit() -> usize {
    u32::from_le_bytes(original().1[12..16].try_into().unwrap()) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Damage in the two header units: confined to one of them it loses nothing; in
    /// both it is `Corrupt` at the start of the file; never a wrong sample.
    #[test]
    fn damage_in_the_header_units_never_yields_a_wrong_sample(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        zeroed in prop::option::of((any::<prop::sample::Index>(), 1usize..4096)),
    ) {
        let unit = original_unit();
        let mut bytes = original().1.clone();
        let mut touched = Vec::new();
        for (at, xor) in &flips {
            let at = at.index(2 * unit);
            bytes[at] ^= xor;
            touched.push(at);
        }
        if let Some((start, len)) = zeroed {
            let start = start.index(2 * unit);
            let end = (start + len).min(2 * unit);
            if bytes[start..end].iter().any(|&b| b != 0) {
                touched.extend([start, end - 1]);
            }
            bytes[start..end].fill(0);
        }
        let (count, err) = read_damaged(&bytes);
        let one_unit = touched.iter().all(|&at| at < unit) || touched.iter().all(|&at| at >= unit);
        if one_unit {
            prop_assert!(err.is_none(), "damage in one header unit at {touched:?}: {err:?}");
            prop_assert_eq!(count, SAMPLES);
        } else if let Some(err) = &err {
            prop_assert_eq!(corrupt_offset(err), 0, "{}", err);
        } else {
            prop_assert_eq!(count, SAMPLES);
        }
    }
}

/// A version-2 file built byte by byte from FORMAT.md, with a unit of 8192 (which the
/// writer uses only on devices that need it): a header, its backup at 8192, and one
/// sample of stream 1 at 16384, not finalized.
fn hand_built_8192() -> Vec<u8> {
    const UNIT: usize = 8192;
    let mut file = vec![0u8; 3 * UNIT];
    let header = |flags: u32| {
        let mut h = vec![0u8; 80];
        h[..8].copy_from_slice(b"PBSTREAM");
        h[8..10].copy_from_slice(&2u16.to_le_bytes());
        h[12..16].copy_from_slice(&(UNIT as u32).to_le_bytes());
        h[16..20].copy_from_slice(&80u32.to_le_bytes());
        h[20..24].copy_from_slice(&flags.to_le_bytes());
        h[48..50].copy_from_slice(&1u16.to_le_bytes());
        h[64..66].copy_from_slice(&1u16.to_le_bytes());
        h[66] = 3; // data
        let sum = crc32c::crc32c(&h);
        h[60..64].copy_from_slice(&sum.to_le_bytes());
        h
    };
    file[..80].copy_from_slice(&header(0));
    file[UNIT..UNIT + 80].copy_from_slice(&header(2));
    let payload = support::pattern(0, 1000);
    let record = &mut file[2 * UNIT..];
    record[..4].copy_from_slice(b"PBRC");
    record[4] = 1; // sample
    record[5] = 1; // stream 1
    record[8..16].copy_from_slice(&7u64.to_le_bytes());
    record[16..24].copy_from_slice(&1088u64.to_le_bytes()); // 64 + 1000, rounded to 64
    record[24..32].copy_from_slice(&1000u64.to_le_bytes());
    record[32..36].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let sum = crc32c::crc32c(&record[..60]);
    record[60..64].copy_from_slice(&sum.to_le_bytes());
    record[64..1064].copy_from_slice(&payload);
    file
}

#[test]
fn the_backup_of_a_larger_unit_is_found_past_the_blank_rest_of_the_header() {
    let dir = scratch("stream-unit-8192");
    let path = dir.join("take.pbs");
    let read = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        SampleReader::open(&path).map(|reader| {
            assert_eq!(reader.unit(), 8192);
            reader
                .map(|s| {
                    let s = s.unwrap();
                    (
                        s.stream,
                        s.time,
                        s.data[..] == support::pattern(0, 1000)[..],
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    let file = hand_built_8192();
    assert_eq!(read(&file).unwrap(), [(1, 7, true)]);
    let mut torn = file.clone();
    torn[..512].fill(0);
    assert_eq!(read(&torn).unwrap(), [(1, 7, true)]);
    // The first bytes that are not blank past the header decide: here, not a backup.
    let mut stray = torn.clone();
    stray[4096] = 1;
    assert!(matches!(
        read(&stray),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    let mut both = torn.clone();
    both[8192..8192 + 512].fill(0);
    assert!(matches!(read(&both), Err(Error::Corrupt { offset: 0, .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
