//! `SampleWriter::resume`: a died writer's file back in the writing state (issue 14).
//! What it keeps (every whole record, so every flushed sample), what it cuts (a torn
//! record and everything after it, never to return), that writing goes on under the
//! file's own rules and ends with an index of everything, and what it refuses.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pagebuf::stream::{
    RecordsEnd, SampleFlags, SampleReader, SampleWriter, StreamFormat, StreamKind, WriterOptions,
};
use pagebuf::Error;
use support::{
    in_child, read_planned, recording_plan as plan, scratch, two_stream_writer as new_writer,
    write_planned as write_one,
};

/// Samples `from..to` of the plan.
fn write_range(writer: &SampleWriter, from: u64, to: u64) {
    for i in from..to {
        write_one(writer, i).unwrap();
    }
}

/// Every sample of `path`, checked against the plan; their count, and the error if the
/// read ended with one.
fn read_back(path: &std::path::Path) -> (u64, Option<Error>, bool) {
    let mut reader = SampleReader::open(path).unwrap();
    let indexed = reader.has_index();
    let (count, err) = read_planned(&mut reader, plan);
    (count, err, indexed)
}

/// The file offset of sample `n`'s record.
fn record_offset(path: &std::path::Path, n: u64) -> u64 {
    let mut reader = SampleReader::open(path).unwrap();
    for _ in 0..=n {
        reader.next().unwrap().unwrap();
    }
    reader.last_offset().unwrap()
}

/// A writer that was dropped without `end_writing` (it wrote out and synced what it had,
/// but no index): resumed, every sample is kept, the report says so, writing goes on,
/// and `end_writing` indexes old and new alike (seek uses the index).
#[test]
fn a_dropped_writer_is_resumed_and_ended_with_an_index_of_everything() {
    let dir = scratch("resume-clean");
    let path = dir.join("take.pbs");
    let writer = new_writer(&path);
    write_range(&writer, 0, 250);
    writer.flush().unwrap();
    write_range(&writer, 250, 500);
    drop(writer);

    let writer = SampleWriter::resume(&path).unwrap();
    let report = writer.resumed().unwrap().clone();
    assert_eq!(report.end, RecordsEnd::Clean);
    assert_eq!(report.samples(), 500);
    assert_eq!(report.streams.len(), 2);
    assert_eq!(report.streams[0].samples, 250);
    assert_eq!(report.streams[1].last_time, plan(499).1);
    assert_eq!(report.resumed_at % writer.unit() as u64, 0);
    assert!(report.data_end <= report.resumed_at);
    // The file's rules go on: an earlier time on a stream is refused.
    let mut late = writer.allocate_sample(10).unwrap();
    late.set_len(10).unwrap();
    let refused = writer.write_sample(2, plan(497).1, SampleFlags::empty(), late);
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    write_range(&writer, 500, 800);
    let summary = writer.end_writing().unwrap();
    assert_eq!(summary.samples, 800);
    assert_eq!(summary.streams[0].samples, 400);

    let (count, err, indexed) = read_back(&path);
    assert_eq!(
        (count, err.is_none(), indexed),
        (800, true, true),
        "{err:?}"
    );
    let mut reader = SampleReader::open(&path).unwrap();
    assert_eq!(reader.sample_count(), Some(800));
    reader.seek(plan(600).1).unwrap();
    assert_eq!(reader.next().unwrap().unwrap().time, plan(600).1);
}

/// A record that is not whole (its payload damaged, as a torn write leaves it) ends what
/// is kept: the report names its offset, the whole records before it stay, and the
/// records after it (stale, from the dead writer) never come back, not even if the
/// resumed writer dies in turn before it has written that far.
#[test]
fn a_torn_record_is_cut_and_what_followed_it_never_returns() {
    let dir = scratch("resume-torn");
    let path = dir.join("take.pbs");
    let writer = new_writer(&path);
    write_range(&writer, 0, 400);
    drop(writer);
    let torn_at = record_offset(&path, 300);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[torn_at as usize + 64 + 3] ^= 0x55; // the payload, not its checksum
    std::fs::write(&path, &bytes).unwrap();

    let writer = SampleWriter::resume(&path).unwrap();
    let report = writer.resumed().unwrap().clone();
    match &report.end {
        RecordsEnd::Torn { offset, detail } => {
            assert_eq!(*offset, torn_at);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("a torn record reported as {other:?}"),
    }
    assert_eq!((report.samples(), report.data_end), (300, torn_at));
    assert!(report.cut_bytes > 0, "{report:?}");
    // A few small samples, flushed, then the writer dies again.
    write_range(&writer, 300, 310);
    writer.flush().unwrap();
    drop(writer);
    let (count, err, indexed) = read_back(&path);
    assert_eq!(
        (count, indexed),
        (310, false),
        "stale records came back: {err:?}"
    );
    assert!(err.is_none(), "{err:?}");

    let writer = SampleWriter::resume(&path).unwrap();
    assert_eq!(writer.resumed().unwrap().end, RecordsEnd::Clean);
    assert_eq!(writer.resumed().unwrap().samples(), 310);
    write_range(&writer, 310, 350);
    assert_eq!(writer.end_writing().unwrap().samples, 350);
    let (count, err, indexed) = read_back(&path);
    assert_eq!(
        (count, err.is_none(), indexed),
        (350, true, true),
        "{err:?}"
    );
}

/// Formats, stream numbers and the format version are the file's after a resume.
#[test]
fn formats_survive_a_resume() {
    let dir = scratch("resume-formats");
    let path = dir.join("take.pbs");
    let writer = SampleWriter::create(&path).unwrap();
    let video = StreamFormat::video(*b"I420", 64, 48, (25, 1)).unwrap();
    let audio = StreamFormat::audio(*b"s16l", 48_000, 2)
        .unwrap()
        .with_codec_data(vec![1, 2, 3, 4]);
    writer
        .add_stream_with(StreamKind::Video, video.clone())
        .unwrap();
    writer
        .add_stream_with(StreamKind::Audio, audio.clone())
        .unwrap();
    writer.begin_writing().unwrap();
    write_range(&writer, 0, 20);
    drop(writer);
    let writer = SampleWriter::resume(&path).unwrap();
    write_range(&writer, 20, 40);
    writer.end_writing().unwrap();
    let reader = SampleReader::open(&path).unwrap();
    let formats: Vec<_> = reader.streams().iter().map(|s| s.format.clone()).collect();
    assert_eq!(formats, vec![Some(video), Some(audio)]);
    assert_eq!(std::fs::read(&path).unwrap()[8], 3, "the version changed");
}

/// What cannot be resumed is refused with the reason, and the file is left as it was.
#[test]
fn what_cannot_be_resumed_is_refused_and_left_alone() {
    let dir = scratch("resume-refused");
    // Finished by end_writing: nothing to resume.
    let done = dir.join("done.pbs");
    let writer = new_writer(&done);
    write_range(&writer, 0, 10);
    writer.end_writing().unwrap();
    drop(writer);
    let before = std::fs::read(&done).unwrap();
    match SampleWriter::resume(&done) {
        Err(Error::InvalidRequest(why)) => assert!(why.contains("end_writing"), "{why}"),
        other => panic!("resuming a finished file: {:?}", other.map(|_| ())),
    }
    assert!(
        std::fs::read(&done).unwrap() == before,
        "a refusal changed the file"
    );
    // Not a sample file.
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, vec![0x5A; 64 << 10]).unwrap();
    let outcome = SampleWriter::resume(&junk).map(|_| ());
    assert!(matches!(outcome, Err(Error::Corrupt { .. })), "{outcome:?}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5A; 64 << 10]);
    // Empty (a writer that died before begin_writing wrote its header).
    let empty = dir.join("empty.pbs");
    std::fs::write(&empty, b"").unwrap();
    let outcome = SampleWriter::resume(&empty).map(|_| ());
    assert!(matches!(outcome, Err(Error::Corrupt { .. })), "{outcome:?}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    // Missing.
    match SampleWriter::resume(dir.join("missing.pbs")) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("resuming a missing file: {:?}", other.map(|_| ())),
    }
    // Its writer is alive.
    let live = dir.join("live.pbs");
    let writer = new_writer(&live);
    write_range(&writer, 0, 10);
    writer.flush().unwrap();
    let outcome = SampleWriter::resume(&live).map(|_| ());
    assert!(
        matches!(outcome, Err(Error::InvalidRequest(_))),
        "{outcome:?}"
    );
    write_range(&writer, 10, 20);
    writer.end_writing().unwrap();
    // Options past their caps: refused before the file is opened.
    let crashed = dir.join("crashed.pbs");
    let writer = new_writer(&crashed);
    write_range(&writer, 0, 10);
    drop(writer);
    let before = std::fs::read(&crashed).unwrap();
    let outcome =
        SampleWriter::resume_with(&crashed, WriterOptions::default().depth(0)).map(|_| ());
    assert!(
        matches!(outcome, Err(Error::InvalidArgument(_))),
        "{outcome:?}"
    );
    assert!(std::fs::read(&crashed).unwrap() == before);
}

const KILLED: &str = "a_writer_killed_again_and_again_is_resumed_with_every_flushed_sample";

/// The child: resumes the file (or creates it), then writes the plan on from where the
/// file ends, flushing every 200 samples and printing `flushed N` (N samples in the
/// file are durable), until it is killed.
fn child_resumes_and_writes(path: &std::path::Path) {
    let started = Instant::now();
    let writer = loop {
        match SampleWriter::resume(path) {
            Ok(writer) => break writer,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                break new_writer(path)
            }
            // A killed writer's lock outlives it while the kernel ends its I/O.
            Err(Error::InvalidRequest(_)) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(err) => panic!("resuming: {err}"),
        }
    };
    let mut i = writer.resumed().map_or(0, |r| r.samples());
    println!("resumed {i}");
    while started.elapsed() < Duration::from_secs(60) {
        write_one(&writer, i).unwrap();
        i += 1;
        if i % 200 == 0 {
            writer.flush().unwrap();
            println!("flushed {i}");
        }
    }
}

/// A writer killed with SIGKILL mid-stream, resumed by the next run, killed again, five
/// times: every resume keeps at least every sample flushed before the kill, samples go
/// on in plan order, and a last resume ends the file with an index of all of them.
#[test]
fn a_writer_killed_again_and_again_is_resumed_with_every_flushed_sample() {
    if in_child(KILLED) {
        let path = std::env::var("PAGEBUF_CRASH_FILE").unwrap();
        child_resumes_and_writes(path.as_ref());
        return;
    }
    let dir = scratch("resume-killed");
    let path = dir.join("take.pbs");
    let mut flushed = 0u64;
    for run in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([KILLED, "--exact", "--nocapture", "--test-threads=1"])
            .env("PAGEBUF_TEST_CHILD", KILLED)
            .env("PAGEBUF_CRASH_FILE", &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut target = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            // (The harness's `test NAME ... ` has no newline: a report may share it.)
            if let Some((_, n)) = line.split_once("resumed ") {
                let resumed: u64 = n.trim().parse().unwrap();
                assert!(
                    resumed >= flushed,
                    "run {run}: resumed {resumed} < flushed {flushed}"
                );
                target = Some(resumed + 600);
            } else if let Some((_, n)) = line.split_once("flushed ") {
                flushed = n.trim().parse().unwrap();
                if target.is_some_and(|t| flushed >= t) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(7 * run + 3));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in lines {
            if let Some((_, n)) = line.unwrap().split_once("flushed ") {
                flushed = flushed.max(n.trim().parse().unwrap());
            }
        }
        let (count, err, _) = read_back(&path);
        assert!(err.is_none(), "run {run}: {err:?}");
        assert!(
            count >= flushed,
            "run {run}: {count} read < {flushed} flushed"
        );
    }
    let writer = SampleWriter::resume(&path).unwrap();
    let kept = writer.resumed().unwrap().samples();
    assert!(kept >= flushed);
    write_range(&writer, kept, kept + 100);
    assert_eq!(writer.end_writing().unwrap().samples, kept + 100);
    let (count, err, indexed) = read_back(&path);
    assert_eq!(
        (count, err.is_none(), indexed),
        (kept + 100, true, true),
        "{err:?}"
    );
    eprintln!("5 kills: {flushed} flushed, {kept} kept, {count} in the finished file");
}
