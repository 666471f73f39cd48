//! The sample writer's rules, one test each: the state machine, stream numbers, time
//! order, the sync tolerance, back-pressure, zero copy, and seeking.

mod support;

use std::time::Duration;

use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind, WriterOptions};
use pagebuf::{BufferMut, Error};
use support::{pattern, scratch};

fn is_invalid_request<T: std::fmt::Debug>(outcome: pagebuf::Result<T>) -> bool {
    matches!(outcome, Err(Error::InvalidRequest(_)))
}

fn sample(writer: &SampleWriter, bytes: &[u8]) -> BufferMut {
    let mut buf = writer.allocate_sample(bytes.len()).unwrap();
    buf.extend_from_slice(bytes).unwrap();
    buf
}

#[test]
fn every_call_in_the_wrong_state_is_invalid_request() {
    let dir = scratch("stream-states");
    let writer = SampleWriter::create(dir.join("s.pbs")).unwrap();
    // Configuring: no samples, no end.
    assert!(is_invalid_request(writer.allocate_sample(10)));
    assert!(is_invalid_request(writer.try_allocate_sample(10)));
    let foreign = BufferMut::from_owner(vec![1u8; 10]);
    assert!(is_invalid_request(writer.write_sample(
        1,
        0,
        SampleFlags::empty(),
        foreign
    )));
    assert!(is_invalid_request(writer.end_writing()));
    assert!(is_invalid_request(writer.begin_writing())); // no streams yet
    writer.flush().unwrap(); // Ok in every state but writing, where it is a barrier

    let stream = writer.add_stream(StreamKind::Data).unwrap();
    writer.begin_writing().unwrap();
    // Writing: no more streams, no second begin.
    assert!(is_invalid_request(writer.add_stream(StreamKind::Audio)));
    assert!(is_invalid_request(writer.begin_writing()));
    let kept = sample(&writer, b"late");
    writer
        .write_sample(stream, 0, SampleFlags::empty(), sample(&writer, b"x"))
        .unwrap();
    writer.flush().unwrap();
    writer.end_writing().unwrap();

    // Ended: nothing but flush.
    assert!(is_invalid_request(writer.allocate_sample(10)));
    assert!(is_invalid_request(writer.write_sample(
        stream,
        1,
        SampleFlags::empty(),
        kept
    )));
    assert!(is_invalid_request(writer.end_writing()));
    assert!(is_invalid_request(writer.add_stream(StreamKind::Video)));
    assert!(is_invalid_request(writer.begin_writing()));
    writer.flush().unwrap();
    let message = writer.allocate_sample(1).unwrap_err().to_string();
    assert!(message.contains("create a new SampleWriter"), "{message}");
}

#[test]
fn stream_numbers_run_from_1_to_63_and_unknown_ones_are_refused() {
    let dir = scratch("stream-numbers");
    let writer = SampleWriter::create(dir.join("s.pbs")).unwrap();
    for expected in 1..=63u16 {
        assert_eq!(writer.add_stream(StreamKind::Data).unwrap(), expected);
    }
    assert!(matches!(
        writer.add_stream(StreamKind::Data),
        Err(Error::InvalidArgument(m)) if m.contains("63")
    ));
    writer.begin_writing().unwrap();
    for bad in [0u16, 64, 1000] {
        let err = writer
            .write_sample(bad, 0, SampleFlags::empty(), sample(&writer, b"x"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("unknown stream")),
            "{err}"
        );
    }
    writer
        .write_sample(63, 0, SampleFlags::empty(), sample(&writer, b"x"))
        .unwrap();
    let summary = writer.end_writing().unwrap();
    assert_eq!(summary.samples, 1);
    let reader = SampleReader::open(dir.join("s.pbs")).unwrap();
    assert_eq!(reader.streams().len(), 63);
    let got: Vec<_> = reader.map(|s| s.unwrap().stream).collect();
    assert_eq!(got, vec![63]);
}

#[test]
fn time_goes_forward_within_a_stream() {
    let dir = scratch("stream-order");
    let writer = SampleWriter::create(dir.join("s.pbs")).unwrap();
    let a = writer.add_stream(StreamKind::Audio).unwrap();
    let b = writer.add_stream(StreamKind::Data).unwrap();
    writer.begin_writing().unwrap();
    writer
        .write_sample(a, 1000, SampleFlags::empty(), sample(&writer, b"1"))
        .unwrap();
    writer
        .write_sample(a, 1000, SampleFlags::empty(), sample(&writer, b"2"))
        .unwrap(); // equal is fine
    let err = writer
        .write_sample(a, 999, SampleFlags::empty(), sample(&writer, b"3"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("time order")),
        "{err}"
    );
    // Another stream has its own clock.
    writer
        .write_sample(b, 500, SampleFlags::empty(), sample(&writer, b"4"))
        .unwrap();
    let summary = writer.end_writing().unwrap();
    assert_eq!(summary.samples, 3);
    assert_eq!(summary.streams[0].samples, 2);
}

#[test]
fn a_stream_more_than_the_tolerance_behind_another_is_late() {
    let dir = scratch("stream-late");
    let options = WriterOptions::default().sync_tolerance(Duration::from_secs(1));
    let writer = SampleWriter::with_options(dir.join("s.pbs"), options).unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    let audio = writer.add_stream(StreamKind::Audio).unwrap();
    writer.begin_writing().unwrap();
    let second = 10_000_000;
    writer
        .write_sample(
            video,
            5 * second,
            SampleFlags::KEY_FRAME,
            sample(&writer, b"v"),
        )
        .unwrap();
    // Exactly the tolerance behind: accepted.
    writer
        .write_sample(
            audio,
            4 * second,
            SampleFlags::empty(),
            sample(&writer, b"a"),
        )
        .unwrap();
    let half = second / 2;
    writer
        .write_sample(
            video,
            5 * second + half,
            SampleFlags::empty(),
            sample(&writer, b"v"),
        )
        .unwrap();
    // Audio at 4 s is now 1.5 s behind video.
    let err = writer
        .write_sample(
            audio,
            4 * second,
            SampleFlags::empty(),
            sample(&writer, b"a"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::LateOperation(m) if m.contains("sync tolerance")),
        "{err}"
    );
    // Catching up within the tolerance is accepted again.
    writer
        .write_sample(
            audio,
            4 * second + half,
            SampleFlags::empty(),
            sample(&writer, b"a"),
        )
        .unwrap();
    let summary = writer.end_writing().unwrap();
    assert_eq!(summary.samples, 4, "the late sample is not written");
}

#[test]
fn allocate_sample_waits_while_the_budget_is_out_and_the_try_form_does_not() {
    let dir = scratch("stream-budget");
    let options = WriterOptions::default().memory_budget(1 << 20);
    let writer = SampleWriter::with_options(dir.join("s.pbs"), options).unwrap();
    let stream = writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let too_big = writer.allocate_sample(2 << 20).unwrap_err();
    assert!(
        matches!(&too_big, Error::InvalidArgument(m) if m.contains("memory_budget")),
        "{too_big}"
    );
    let held = writer.allocate_sample(900 << 10).unwrap();
    assert!(writer.try_allocate_sample(512 << 10).unwrap().is_none());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| writer.allocate_sample(512 << 10).map(|b| b.max_len()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "allocate_sample must wait for memory"
        );
        // Writing the held sample gives its memory back once it is on disk.
        let mut held = held;
        held.set_len(held.max_len()).unwrap();
        writer
            .write_sample(stream, 0, SampleFlags::empty(), held)
            .unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 512 << 10);
    });
    writer.end_writing().unwrap();
    let stats = writer.sample_pool_stats();
    assert_eq!(
        stats.bytes_out, 0,
        "every sample's memory went back: {stats:?}"
    );
}

#[test]
fn end_writing_wakes_a_waiting_allocation_with_invalid_request() {
    let dir = scratch("stream-end-wakes");
    let options = WriterOptions::default().memory_budget(1 << 20);
    let writer = SampleWriter::with_options(dir.join("s.pbs"), options).unwrap();
    writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let held = writer.allocate_sample(900 << 10).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| writer.allocate_sample(512 << 10));
        std::thread::sleep(Duration::from_millis(100));
        writer.end_writing().unwrap();
        assert!(is_invalid_request(waiter.join().unwrap()));
    });
    drop(held);
}

#[cfg(feature = "testing")]
#[test]
fn large_samples_are_written_from_their_own_buffer_and_small_ones_copied() {
    let dir = scratch("stream-zero-copy");
    let options = WriterOptions::default().trace_writes(true);
    let writer = SampleWriter::with_options(dir.join("s.pbs"), options).unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let unit = writer.unit();

    let frame_bytes = pattern(1, 3 << 20);
    let frame = sample(&writer, &frame_bytes);
    let frame_address = frame.as_ptr() as usize;
    assert_eq!(frame_address % 64, 0, "payloads are 64-byte aligned");
    let small_bytes = pattern(2, 1000);
    let small = sample(&writer, &small_bytes);
    let small_address = small.as_ptr() as usize;
    writer
        .write_sample(video, 0, SampleFlags::KEY_FRAME, small)
        .unwrap();
    writer
        .write_sample(video, 1, SampleFlags::KEY_FRAME, frame)
        .unwrap();
    let summary = writer.end_writing().unwrap();
    assert_eq!((summary.zero_copy_samples, summary.copied_samples), (1, 1));

    let trace = writer.write_trace();
    // The frame's record is the frame's own memory, header in the headroom in front.
    let record = (3 << 20) + 64usize;
    let frame_write = trace
        .iter()
        .find(|w| w.address == frame_address - 64)
        .unwrap_or_else(|| panic!("no write from the frame's buffer in {trace:?}"));
    assert_eq!(frame_write.len, record.div_ceil(unit) * unit);
    assert_eq!(frame_write.offset % unit as u64, 0);
    let small_range = small_address - 64..small_address + 1000;
    assert!(
        !trace.iter().any(|w| small_range.contains(&w.address)),
        "the small sample was copied, not written from its buffer"
    );

    let got: Vec<_> = SampleReader::open(dir.join("s.pbs"))
        .unwrap()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(&got[0].data[..], &small_bytes[..]);
    assert_eq!(&got[1].data[..], &frame_bytes[..]);
}

#[test]
fn samples_from_any_allocator_are_accepted_and_copied() {
    let dir = scratch("stream-foreign");
    let writer = SampleWriter::create(dir.join("s.pbs")).unwrap();
    let data = writer.add_stream(StreamKind::Data).unwrap();
    writer.begin_writing().unwrap();
    let big = pattern(3, 5 << 20);
    writer
        .write_sample(
            data,
            0,
            SampleFlags::DISCONTINUITY,
            BufferMut::from_owner(big.clone()),
        )
        .unwrap();
    let summary = writer.end_writing().unwrap();
    assert_eq!((summary.zero_copy_samples, summary.copied_samples), (0, 1));
    let got: Vec<_> = SampleReader::open(dir.join("s.pbs"))
        .unwrap()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].flags, SampleFlags::DISCONTINUITY);
    assert_eq!(&got[0].data[..], &big[..]);
}

#[test]
fn seek_yields_exactly_the_samples_from_a_time_on() {
    let dir = scratch("stream-seek");
    let path = dir.join("s.pbs");
    let writer = SampleWriter::create(&path).unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    let audio = writer.add_stream(StreamKind::Audio).unwrap();
    writer.begin_writing().unwrap();
    let frame = 166_667u64;
    for i in 0..120u64 {
        let size = if i % 10 == 0 { 300_000 } else { 90_000 };
        writer
            .write_sample(
                video,
                i * frame,
                SampleFlags::KEY_FRAME,
                sample(&writer, &pattern(i, size)),
            )
            .unwrap();
        writer
            .write_sample(
                audio,
                i * frame + 7,
                SampleFlags::empty(),
                sample(&writer, &pattern(1000 + i, 700)),
            )
            .unwrap();
    }
    writer.end_writing().unwrap();

    let mut reader = SampleReader::open(&path).unwrap();
    assert!(reader.has_index());
    let all: Vec<_> = reader.by_ref().map(|s| s.unwrap()).collect();
    assert_eq!(all.len(), 240);
    for target in [
        0,
        1,
        frame * 33 + 7,
        frame * 60,
        frame * 119 + 7,
        frame * 119 + 8,
        u64::MAX,
    ] {
        reader.seek(target).unwrap();
        let got: Vec<_> = reader
            .by_ref()
            .map(|s| s.unwrap())
            .map(|s| (s.stream, s.time))
            .collect();
        let want: Vec<_> = all
            .iter()
            .filter(|s| s.time >= target)
            .map(|s| (s.stream, s.time))
            .collect();
        assert_eq!(got, want, "seek to {target}");
    }
    // Without an index (the writer never finished) seeking scans, with the same result.
    let unfinished = dir.join("unfinished.pbs");
    {
        let writer = SampleWriter::create(&unfinished).unwrap();
        let data = writer.add_stream(StreamKind::Data).unwrap();
        writer.begin_writing().unwrap();
        for i in 0..50u64 {
            writer
                .write_sample(
                    data,
                    i,
                    SampleFlags::empty(),
                    sample(&writer, &pattern(i, 100)),
                )
                .unwrap();
        }
    } // dropped without end_writing
    let mut reader = SampleReader::open(&unfinished).unwrap();
    assert!(!reader.has_index());
    assert_eq!(reader.streams()[0].summary, None);
    reader.seek(20).unwrap();
    let times: Vec<_> = reader.map(|s| s.unwrap().time).collect();
    assert_eq!(times, (20..50).collect::<Vec<_>>());
}

#[test]
fn the_reader_refuses_what_is_not_a_sample_file() {
    let dir = scratch("stream-not-a-file");
    let path = dir.join("junk");
    std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    assert!(matches!(
        SampleReader::open(&path),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        SampleReader::open(&path),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    assert!(matches!(
        SampleReader::open(dir.join("missing")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn the_writer_is_send_and_sync_and_the_reader_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<SampleWriter>();
    send::<SampleReader>();
}
