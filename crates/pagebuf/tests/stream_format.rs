//! Stream formats (format version 3): what `add_stream_with` is given comes back from
//! `SampleReader::streams`, from a finished file, an unfinished one and the backup
//! header; the file holds 63 streams beside all the codec data it allows; every bad
//! format is refused naming what to change; a forged format entry is `Corrupt`, never a
//! panic; files of versions 1 and 2 read as before, without formats.

mod support;

use std::path::Path;

use pagebuf::stream::{
    MediaFormat, SampleFlags, SampleReader, SampleWriter, StreamFormat, StreamKind,
    CODEC_DATA_BUDGET,
};
use pagebuf::Error;
use support::{pattern, ScratchDir};

const UNIT: usize = 4096;
const SAMPLES: u64 = 12;

/// The streams of the round-trip recording: each format kind, with and without codec
/// data, and a stream without a format between them.
fn mixed_streams() -> Vec<(StreamKind, Option<StreamFormat>)> {
    vec![
        (
            StreamKind::Video,
            Some(
                StreamFormat::video("avc1", 1920, 1080, (30_000, 1_001))
                    .unwrap()
                    .with_codec_data(pattern(7, 41)),
            ),
        ),
        (
            StreamKind::Audio,
            Some(
                StreamFormat::audio("mp4a", 48_000, 2)
                    .unwrap()
                    .with_codec_data([0x11, 0x90]),
            ),
        ),
        (StreamKind::Data, None),
        (
            StreamKind::Audio,
            Some(StreamFormat::audio(b"s16l", 44_100, 1).unwrap()),
        ),
        (
            StreamKind::Data,
            Some(
                StreamFormat::data("tx3g")
                    .unwrap()
                    .with_codec_data([1, 2, 3]),
            ),
        ),
    ]
}

/// Sample `i` of a recording of `streams` streams: (stream, time, size); every fifth
/// one large enough to be written without a copy. Its bytes are `pattern(i, size)`.
fn sample(i: u64, streams: u16) -> (u16, u64, usize) {
    let size = if i % 5 == 4 {
        70_000
    } else {
        100 + i as usize * 37
    };
    (1 + (i % u64::from(streams)) as u16, i * 1_000, size)
}

/// Records `streams` and some samples of each to `path`; finished with `end_writing`
/// when `finish`, otherwise flushed and dropped (the file a dead writer leaves).
fn record(path: &Path, streams: &[(StreamKind, Option<StreamFormat>)], finish: bool) {
    let writer = SampleWriter::create(path).unwrap();
    for (i, (kind, format)) in streams.iter().enumerate() {
        let number = match format {
            Some(format) => writer.add_stream_with(*kind, format.clone()),
            None => writer.add_stream(*kind),
        };
        assert_eq!(number.unwrap(), i as u16 + 1);
    }
    writer.begin_writing().unwrap();
    for i in 0..SAMPLES {
        let (stream, time, size) = sample(i, streams.len() as u16);
        let mut buf = writer.allocate_sample(size).unwrap();
        buf.extend_from_slice(&pattern(i, size)).unwrap();
        writer
            .write_sample(stream, time, SampleFlags::KEY_FRAME, buf)
            .unwrap();
    }
    writer.flush().unwrap();
    if finish {
        writer.end_writing().unwrap();
    }
}

/// Opens `path` and checks that it holds `streams` (kinds and formats) and every
/// sample `record` wrote; returns whether it had an index.
fn check(path: &Path, streams: &[(StreamKind, Option<StreamFormat>)]) -> bool {
    let reader = SampleReader::open(path).unwrap();
    let seen: Vec<_> = reader
        .streams()
        .iter()
        .map(|s| (s.kind, s.format.clone()))
        .collect();
    assert_eq!(seen, streams);
    for (i, info) in reader.streams().iter().enumerate() {
        assert_eq!(usize::from(info.number), i + 1);
    }
    let indexed = reader.has_index();
    let mut count = 0;
    for got in reader {
        let got = got.unwrap();
        let (stream, time, size) = sample(count, streams.len() as u16);
        assert_eq!((got.stream, got.time), (stream, time), "sample {count}");
        assert!(got.data[..] == pattern(count, size)[..], "sample {count}");
        count += 1;
    }
    assert_eq!(count, SAMPLES);
    indexed
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Sets a header's CRC (at 60, over its used bytes) to match its content, as a forger
/// (or a writer) would.
fn reseal(header: &mut [u8]) {
    let used = u32_at(header, 16) as usize;
    header[60..64].fill(0);
    let sum = crc32c::crc32c(&header[..used]);
    header[60..64].copy_from_slice(&sum.to_le_bytes());
}

/// Zeroes the header at offset 0, as a disk that lost its first sector would.
fn lose_main_header(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[..UNIT].fill(0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn formats_of_several_streams_round_trip_through_a_finished_file() {
    let dir = ScratchDir::new("stream-format", "finished");
    let path = dir.join("take.pbs");
    let streams = mixed_streams();
    record(&path, &streams, true);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u16_at(&bytes, 8), 3, "the writer writes format version 3");
    assert!(check(&path, &streams), "read with its index");
    // The header lost: the backup, written once at begin_writing, holds the formats too.
    lose_main_header(&path);
    assert!(!check(&path, &streams), "read by scanning, from the backup");
}

#[test]
fn formats_come_back_from_an_unfinished_file_and_its_backup_header() {
    let dir = ScratchDir::new("stream-format", "unfinished");
    let path = dir.join("take.pbs");
    let streams = mixed_streams();
    record(&path, &streams, false);
    assert!(
        !check(&path, &streams),
        "no index: the writer did not finish"
    );
    lose_main_header(&path);
    assert!(!check(&path, &streams));
}

/// Stream `i` of 63 with a format of each kind in turn, carrying `codec_data`.
fn format_for(i: usize, codec_data: Vec<u8>) -> (StreamKind, Option<StreamFormat>) {
    let format = match i % 3 {
        0 => StreamFormat::video("H264", 640 + i as u32, 360, (25, 1)),
        1 => StreamFormat::audio("mp4a", 8_000 * i as u32, 1 + i as u16),
        _ => StreamFormat::data("json"),
    };
    let format = format.unwrap().with_codec_data(codec_data);
    (format.kind(), Some(format))
}

#[test]
fn the_whole_codec_data_budget_fits_beside_63_streams() {
    let dir = ScratchDir::new("stream-format", "biggest");
    let path = dir.join("take.pbs");
    // Each of 63 streams with an equal share of the budget, the most all of them can
    // have: the header fills its 4096 bytes exactly, and its backup too.
    let share = CODEC_DATA_BUDGET / 63;
    let streams: Vec<_> = (0..63)
        .map(|i| format_for(i, pattern(i as u64, share)))
        .collect();
    record(&path, &streams, true);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(share * 63, CODEC_DATA_BUDGET);
    assert_eq!(u32_at(&bytes, 16) as usize, UNIT, "header_len");
    assert_eq!(
        u32_at(&bytes, UNIT + 16) as usize,
        UNIT,
        "backup header_len"
    );
    assert!(check(&path, &streams));
    lose_main_header(&path);
    assert!(!check(&path, &streams));

    // One stream may take the whole budget; then the other 62 still have formats, but
    // not one more byte of codec data fits.
    let mut streams: Vec<_> = (0..63).map(|i| format_for(i, Vec::new())).collect();
    streams[0] = format_for(0, pattern(99, CODEC_DATA_BUDGET));
    let writer = SampleWriter::create(dir.join("refused.pbs")).unwrap();
    let first = streams[0].1.clone().unwrap();
    writer.add_stream_with(StreamKind::Video, first).unwrap();
    let one_more = streams[1].1.clone().unwrap().with_codec_data([0]);
    let err = writer
        .add_stream_with(StreamKind::Audio, one_more)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("CODEC_DATA_BUDGET"), "{err}");
    drop(writer);
    record(&path, &streams, true);
    assert!(check(&path, &streams));
}

/// The message of an `InvalidArgument`, which must name `what`.
fn refused<T: std::fmt::Debug>(outcome: pagebuf::Result<T>, what: &str) -> String {
    match outcome {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(what), "`{what}` not named in: {message}");
            message
        }
        other => panic!("expected InvalidArgument naming {what}, got {other:?}"),
    }
}

#[test]
fn each_bad_format_is_refused_naming_what_to_change() {
    refused(StreamFormat::video("avc", 640, 360, (30, 1)), "3 bytes");
    refused(StreamFormat::video("avc1 ", 640, 360, (30, 1)), "5 bytes");
    refused(StreamFormat::data(""), "0 bytes");
    refused(StreamFormat::data([0; 4]), "four zero bytes");
    refused(StreamFormat::video("avc1", 0, 360, (30, 1)), "width");
    refused(StreamFormat::video("avc1", 640, 0, (30, 1)), "height");
    refused(StreamFormat::video("avc1", 640, 360, (0, 1)), "numerator");
    refused(
        StreamFormat::video("avc1", 640, 360, (30, 0)),
        "denominator",
    );
    refused(StreamFormat::audio("mp4a", 0, 2), "sample_rate");
    refused(StreamFormat::audio("mp4a", 48_000, 0), "channels");
    let zero_width = MediaFormat::Video {
        width: 0,
        height: 1,
        frame_rate: (1, 1),
    };
    refused(StreamFormat::new("avc1", zero_width), "width");

    let dir = ScratchDir::new("stream-format", "refused");
    let writer = SampleWriter::create(dir.join("take.pbs")).unwrap();
    let video = StreamFormat::video("avc1", 640, 360, (30, 1)).unwrap();
    let audio = StreamFormat::audio("mp4a", 48_000, 2).unwrap();
    let data = StreamFormat::data("tx3g").unwrap();
    let message = refused(
        writer.add_stream_with(StreamKind::Audio, video.clone()),
        "StreamKind::Audio",
    );
    assert!(message.contains("Video"), "{message}");
    refused(
        writer.add_stream_with(StreamKind::Video, data.clone()),
        "StreamKind::Video",
    );
    refused(
        writer.add_stream_with(StreamKind::Data, audio.clone()),
        "StreamKind::Data",
    );
    let message = refused(
        writer.add_stream_with(
            StreamKind::Video,
            video
                .clone()
                .with_codec_data(vec![1; CODEC_DATA_BUDGET + 1]),
        ),
        "CODEC_DATA_BUDGET",
    );
    assert!(
        message.contains(&CODEC_DATA_BUDGET.to_string()),
        "{message}"
    );
    // Refused calls added nothing; the budget is shared by the streams as they come.
    let big = video
        .clone()
        .with_codec_data(vec![1; CODEC_DATA_BUDGET - 16]);
    assert_eq!(writer.add_stream_with(StreamKind::Video, big).unwrap(), 1);
    let message = refused(
        writer.add_stream_with(StreamKind::Audio, audio.clone().with_codec_data([2; 17])),
        "at most 16 bytes",
    );
    assert!(message.contains("codec data"), "{message}");
    let fits = audio.clone().with_codec_data([2; 16]);
    assert_eq!(writer.add_stream_with(StreamKind::Audio, fits).unwrap(), 2);
    for n in 3..=63 {
        let number = writer.add_stream_with(StreamKind::Data, data.clone());
        assert_eq!(number.unwrap(), n);
    }
    refused(
        writer.add_stream_with(StreamKind::Data, data.clone()),
        "at most 63 streams",
    );
    writer.begin_writing().unwrap();
    match writer.add_stream_with(StreamKind::Data, data) {
        Err(Error::InvalidRequest(message)) => {
            assert!(message.contains("add_stream_with"), "{message}")
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

/// Header bytes: where stream `n`'s version-3 entry starts.
fn entry(n: usize) -> usize {
    64 + 32 * (n - 1)
}

/// `forge` applied to both header copies of `original` (each resealed, so only the
/// checks behind the CRC can catch it), written to `path`, then opened.
fn open_forged(
    path: &Path,
    original: &[u8],
    forge: &dyn Fn(&mut [u8]),
) -> pagebuf::Result<SampleReader> {
    let mut bytes = original.to_vec();
    for at in [0, UNIT] {
        let header = &mut bytes[at..at + UNIT];
        forge(header);
        reseal(header);
    }
    std::fs::write(path, &bytes).unwrap();
    SampleReader::open(path)
}

#[test]
fn a_forged_format_entry_is_corrupt_never_a_panic() {
    let dir = ScratchDir::new("stream-format", "forged");
    let original_path = dir.join("original.pbs");
    let streams = mixed_streams();
    record(&original_path, &streams, true);
    let original = std::fs::read(&original_path).unwrap();
    let used = u32_at(&original, 16) as usize;
    assert_eq!(used, 64 + 5 * 32 + 41 + 2 + 3);
    let path = dir.join("forged.pbs");

    type Forgery = (&'static str, Box<dyn Fn(&mut [u8])>, &'static str);
    let set_u16 =
        |at: usize, v: u16| move |h: &mut [u8]| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let set_u32 =
        |at: usize, v: u32| move |h: &mut [u8]| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let forgeries: Vec<Forgery> = vec![
        (
            "format code 2",
            Box::new(|h: &mut [u8]| h[entry(1) + 3] = 2),
            "unknown format code",
        ),
        (
            "format code 255",
            Box::new(|h: &mut [u8]| h[entry(3) + 3] = 255),
            "unknown format code",
        ),
        (
            "zero codec",
            Box::new(set_u32(entry(1) + 4, 0)),
            "names no codec",
        ),
        (
            "zero width",
            Box::new(set_u32(entry(1) + 8, 0)),
            "width of 0",
        ),
        (
            "zero height",
            Box::new(set_u32(entry(1) + 12, 0)),
            "height of 0",
        ),
        (
            "zero rate numerator",
            Box::new(set_u32(entry(1) + 16, 0)),
            "numerator of 0",
        ),
        (
            "zero rate denominator",
            Box::new(set_u32(entry(1) + 20, 0)),
            "denominator of 0",
        ),
        (
            "zero sample rate",
            Box::new(set_u32(entry(2) + 8, 0)),
            "sample rate of 0",
        ),
        (
            "zero channels",
            Box::new(set_u16(entry(2) + 12, 0)),
            "channel count of 0",
        ),
        (
            "codec data past the header",
            Box::new(set_u16(entry(1) + 24, u16::MAX)),
            "runs past",
        ),
        (
            "codec data one byte longer",
            Box::new(set_u16(entry(5) + 24, 4)),
            "runs past",
        ),
        (
            "codec data one byte shorter",
            Box::new(set_u16(entry(5) + 24, 2)),
            "does not end",
        ),
        (
            "header one byte longer",
            Box::new(set_u32(16, used as u32 + 1)),
            "does not end",
        ),
        (
            "header shorter than its table",
            Box::new(set_u32(16, 64 + 5 * 32 - 1)),
            "inconsistent",
        ),
        (
            "a stream without a format given codec data",
            Box::new(set_u16(entry(3) + 24, 7)),
            // A stream without a format has none: its length field is reserved.
            "",
        ),
        (
            "more codec data than a writer stores",
            Box::new(|h: &mut [u8]| {
                let extra = CODEC_DATA_BUDGET + 1 - (41 + 2 + 3);
                let len = 41 + extra as u16;
                h[entry(1) + 24..entry(1) + 26].copy_from_slice(&len.to_le_bytes());
                let used = u32::from_le_bytes(h[16..20].try_into().unwrap()) as usize;
                h[16..20].copy_from_slice(&((used + extra) as u32).to_le_bytes());
            }),
            "more than a writer stores",
        ),
    ];
    for (what, forge, detail) in &forgeries {
        match open_forged(&path, &original, forge.as_ref()) {
            Err(Error::Corrupt {
                offset,
                detail: got,
            }) if !detail.is_empty() => {
                assert_eq!(offset, 0, "{what}: neither header holds");
                assert!(got.contains(detail), "{what}: `{detail}` not in: {got}");
            }
            Ok(reader) if detail.is_empty() => {
                assert_eq!(reader.streams()[2].format, None, "{what}");
            }
            other => panic!("{what}: {:?}", other.map(|_| "opened")),
        }
    }

    // One header forged, the other intact: the intact one is read, formats and all.
    let mut bytes = original.clone();
    bytes[entry(1) + 8..entry(1) + 12].fill(0);
    reseal(&mut bytes[..UNIT]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(!check(&path, &streams), "read from the backup");

    // Every byte of the stream table and codec data, forged to a few values: opened or
    // `Corrupt`, never a panic, never anything else.
    for at in 64..used {
        for value in [0x00, 0x01, 0x80, 0xFF] {
            let forge = |h: &mut [u8]| h[at] = value;
            match open_forged(&path, &original, &forge) {
                Ok(reader) => assert_eq!(reader.streams().len(), streams.len()),
                Err(Error::Corrupt { offset: 0, .. }) => {}
                Err(other) => panic!("byte {at} = {value:#x}: {other}"),
            }
        }
    }
}

/// Rewrites a version-3 header of streams without formats (`header`: its unit) as the
/// version-2 header FORMAT.md describes: 16-byte entries whose reserved bytes hold
/// junk (a version-2 reader ignores them; read as version 3 they would be damage).
fn as_version_2(header: &mut [u8]) {
    let count = usize::from(u16_at(header, 48));
    let kinds: Vec<u8> = (1..=count).map(|n| header[entry(n) + 2]).collect();
    assert!((1..=count).all(|n| header[entry(n) + 3] == 0), "no formats");
    header[64..].fill(0);
    header[8..10].copy_from_slice(&2u16.to_le_bytes());
    header[16..20].copy_from_slice(&(64 + 16 * count as u32).to_le_bytes());
    for (i, kind) in kinds.into_iter().enumerate() {
        let at = 64 + 16 * i;
        header[at..at + 2].copy_from_slice(&(i as u16 + 1).to_le_bytes());
        header[at + 2] = kind;
        header[at + 3..at + 16].fill(0xEE);
    }
    reseal(header);
}

#[test]
fn versions_1_and_2_still_read_without_formats() {
    let dir = ScratchDir::new("stream-format", "versions");
    let path = dir.join("v2.pbs");
    let streams = vec![(StreamKind::Video, None), (StreamKind::Audio, None)];
    record(&path, &streams, true);
    let mut bytes = std::fs::read(&path).unwrap();
    as_version_2(&mut bytes[..UNIT]);
    as_version_2(&mut bytes[UNIT..2 * UNIT]);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(u16_at(&bytes, 8), 2);
    assert!(check(&path, &streams), "a version-2 file with its index");
    {
        let mut reader = SampleReader::open(&path).unwrap();
        assert_eq!(reader.sample_count(), Some(SAMPLES));
        reader.seek(sample(6, 2).1).unwrap();
        assert_eq!(reader.next().unwrap().unwrap().time, sample(6, 2).1);
    }
    lose_main_header(&path);
    assert!(!check(&path, &streams), "a version-2 backup header");

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stream_v1.pbs");
    let v1 = dir.join("v1.pbs");
    std::fs::copy(fixture, &v1).unwrap();
    let reader = SampleReader::open(&v1).unwrap();
    assert_eq!(u16_at(&std::fs::read(&v1).unwrap(), 8), 1);
    let kinds: Vec<_> = reader
        .streams()
        .iter()
        .map(|s| (s.kind, s.format.clone()))
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.iter().all(|(_, format)| format.is_none()));
    assert_eq!(reader.count(), 5);
}

/// A version-2 file whose writer died is resumed as version 2: the resumed writer's
/// header (written by `end_writing`) keeps the version and its stream table, and the
/// file reads back whole with its index.
#[test]
fn a_version_2_file_is_resumed_as_version_2() {
    let dir = ScratchDir::new("stream-format", "resume-v2");
    let path = dir.join("v2.pbs");
    let streams = vec![(StreamKind::Video, None), (StreamKind::Audio, None)];
    record(&path, &streams, false);
    let mut bytes = std::fs::read(&path).unwrap();
    as_version_2(&mut bytes[..UNIT]);
    as_version_2(&mut bytes[UNIT..2 * UNIT]);
    std::fs::write(&path, &bytes).unwrap();

    let writer = SampleWriter::resume(&path).unwrap();
    assert_eq!(writer.resumed().unwrap().samples(), SAMPLES);
    for i in SAMPLES..2 * SAMPLES {
        let (stream, time, size) = sample(i, 2);
        let mut buf = writer.allocate_sample(size).unwrap();
        buf.extend_from_slice(&pattern(i, size)).unwrap();
        writer
            .write_sample(stream, time, SampleFlags::KEY_FRAME, buf)
            .unwrap();
    }
    assert_eq!(writer.end_writing().unwrap().samples, 2 * SAMPLES);
    drop(writer);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u16_at(&bytes, 8), 2, "the header's version changed");
    let reader = SampleReader::open(&path).unwrap();
    assert!(reader.has_index());
    assert!(reader.streams().iter().all(|s| s.format.is_none()));
    let mut count = 0;
    for (i, item) in reader.enumerate() {
        let got = item.unwrap();
        let (stream, time, size) = sample(i as u64, 2);
        assert_eq!((got.stream, got.time), (stream, time), "sample {i}");
        assert!(got.data[..] == pattern(i as u64, size)[..], "sample {i}");
        count += 1;
    }
    assert_eq!(count, 2 * SAMPLES);
}
