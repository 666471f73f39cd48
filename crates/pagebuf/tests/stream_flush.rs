//! The recorder's second-edition flush (issue 14): it says what it made durable, and it
//! does not hold up other writers while it waits for the disk (proven with a gate that
//! holds the flush at its sync, not by timing).
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use pagebuf::stream::{SampleFlags, SampleReader, SampleWriter, StreamKind};

mod support;
use support::{pattern, within, ScratchDir};

const LIMIT: Duration = Duration::from_secs(60);

/// Writes sample `i` of `size` bytes to `stream` at time `i * 1000`.
fn write(writer: &SampleWriter, stream: u16, i: u64, size: usize) {
    let mut sample = writer.allocate_sample(size).unwrap();
    sample.extend_from_slice(&pattern(i, size)).unwrap();
    writer
        .write_sample(stream, i * 1000, SampleFlags::KEY_FRAME, sample)
        .unwrap();
}

#[test]
fn a_flush_waiting_for_the_disk_does_not_hold_up_writers() {
    let dir = ScratchDir::new("stream_flush", "no_stall");
    let path = dir.join("take.pbs");
    let writer = Arc::new(SampleWriter::create(&path).unwrap());
    let video = writer.add_stream(StreamKind::Video).unwrap();
    let audio = writer.add_stream(StreamKind::Audio).unwrap();
    assert_eq!(
        writer.flush().unwrap().streams.len(),
        2,
        "configuring: nothing yet"
    );
    writer.begin_writing().unwrap();
    for i in 0..10 {
        write(&writer, video, i, 300_000); // written from its own buffer
        write(&writer, audio, i, 4096); // copied into a chunk
    }

    writer.hold_flushes_before_sync(true);
    let flusher = {
        let writer = writer.clone();
        std::thread::spawn(move || writer.flush())
    };
    let held = writer.clone();
    within(LIMIT, "the flush reaching its sync", move || {
        while held.flushes_held() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    // The flush is waiting for the disk now. Were it holding the writer's lock, these
    // would block until it returns, which the gate keeps it from: the watchdog would
    // fail the test.
    let during = writer.clone();
    within(
        LIMIT,
        "writing while a flush waits for the disk",
        move || {
            for i in 10..20 {
                write(&during, video, i, 300_000);
                write(&during, audio, i, 4096);
            }
        },
    );
    writer.hold_flushes_before_sync(false);
    let mark = flusher.join().unwrap().unwrap();
    for stream in [video, audio] {
        let stream_mark = mark.stream(stream).unwrap();
        assert_eq!(stream_mark.samples, 10, "stream {stream}: {mark:?}");
        assert_eq!(
            stream_mark.last_time,
            Some(9_000),
            "stream {stream}: {mark:?}"
        );
    }
    let mark = writer.flush().unwrap();
    assert_eq!(mark.stream(audio).unwrap().samples, 20);
    assert_eq!(mark.stream(0), None);
    assert_eq!(mark.stream(3), None);
    writer.end_writing().unwrap();
    let after = writer.flush().unwrap();
    assert_eq!(
        after, mark,
        "after end_writing the watermark is everything written"
    );
    drop(writer);

    let samples: Vec<_> = SampleReader::open(&path)
        .unwrap()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(samples.len(), 40);
    for sample in samples {
        let i = sample.time / 1000;
        let size = if sample.stream == video {
            300_000
        } else {
            4096
        };
        assert!(
            sample.data[..] == pattern(i, size)[..],
            "sample {i} of {}",
            sample.stream
        );
    }
}
