//! What survives when things go wrong: a writer killed with SIGKILL, and a disk that
//! fills up. In both, every sample acknowledged by a `flush` is read back intact.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pagebuf::stream::SampleReader;
use pagebuf::Error;
use support::{
    in_child, read_planned, recording_plan as plan, scratch, two_stream_writer as open_writer,
    write_planned as write_one, LoopMount,
};

/// Reads `path` back: every sample it yields must be the planned one, in order; returns
/// how many it yielded before it ended (cleanly or with `Corrupt`), and the error.
fn read_back(path: &std::path::Path) -> (u64, Option<Error>) {
    let mut reader = SampleReader::open(path).unwrap();
    assert!(
        !reader.has_index(),
        "the writer never finished, so there is no index"
    );
    read_planned(&mut reader, plan)
}

const KILLED: &str = "a_writer_killed_with_sigkill_loses_nothing_it_flushed";
const KILLED_TORN: &str = "a_killed_writer_whose_header_sector_is_lost_loses_nothing_it_flushed";

/// Runs test `name`'s writer in a child process and kills it with SIGKILL mid-stream,
/// after it reported at least 900 samples flushed. In the child (which writes until it
/// is killed) returns `None`; in the parent, the file and the most samples the child
/// reported flushed.
fn killed_writer(name: &str) -> Option<(std::path::PathBuf, u64)> {
    if in_child(name) {
        // The child: write, flush, report, write more, until killed (or a minute passes).
        let path = std::env::var("PAGEBUF_CRASH_FILE").unwrap();
        let writer = open_writer(path.as_ref());
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(60) {
            write_one(&writer, i).unwrap();
            i += 1;
            if i % 300 == 0 {
                writer.flush().unwrap();
                println!("flushed {i}");
            }
        }
        return None;
    }
    let dir = scratch(name);
    let path = dir.join("take.pbs");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", name)
        .env("PAGEBUF_CRASH_FILE", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut flushed = 0u64;
    // Let it flush a few times, then kill it mid-stream.
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("flushed ") {
            flushed = n.parse().unwrap();
            if flushed >= 900 {
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Reports printed before the kill landed count too.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("flushed ") {
            flushed = flushed.max(n.parse().unwrap());
        }
    }
    assert!(flushed >= 900, "the child never reported a flush");
    Some((path, flushed))
}

#[test]
fn a_writer_killed_with_sigkill_loses_nothing_it_flushed() {
    let Some((path, flushed)) = killed_writer(KILLED) else {
        return;
    };
    let (recovered, error) = read_back(&path);
    assert!(
        error.is_none(),
        "a killed writer leaves nothing corrupt: {error:?}"
    );
    assert!(
        recovered >= flushed,
        "recovered {recovered} < flushed {flushed}"
    );
    eprintln!("flushed {flushed}, recovered {recovered}");
}

#[test]
fn a_killed_writer_whose_header_sector_is_lost_loses_nothing_it_flushed() {
    let Some((path, flushed)) = killed_writer(KILLED_TORN) else {
        return;
    };
    // The first 512-byte sector of the file header lost (as a torn write leaves it).
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..512].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let (recovered, error) = read_back(&path);
    assert!(
        error.is_none(),
        "the backup header stands in for the lost one: {error:?}"
    );
    assert!(
        recovered >= flushed,
        "recovered {recovered} < flushed {flushed}"
    );
    eprintln!("header sector zeroed: flushed {flushed}, recovered {recovered}");
}

#[test]
fn a_full_disk_is_an_io_error_and_flushed_samples_survive() {
    let dir = scratch("stream-disk-full");
    let Some(disk) = LoopMount::new(&dir, 4096, 32 << 20) else {
        return;
    };
    let path = disk.mount.join("take.pbs");
    let writer = open_writer(&path);
    assert!(writer.is_direct());
    let mut flushed = 0;
    let mut failure = None;
    for i in 0..100_000u64 {
        let outcome = write_one(&writer, i).and_then(|()| {
            if i % 20 == 19 {
                writer.flush()?;
                flushed = i + 1;
            }
            Ok(())
        });
        if let Err(err) = outcome {
            failure = Some(err);
            break;
        }
    }
    let failure = failure.expect("a 32 MiB file system fills up");
    let full = |err: &Error| match err {
        Error::Io { source, .. } => source.raw_os_error() == Some(28), // ENOSPC
        _ => false,
    };
    assert!(full(&failure), "{failure}");
    // Reported again by every later call, and by end_writing; never swallowed.
    let again = write_one(&writer, 1 << 40).unwrap_err();
    assert!(matches!(&again, Error::Io { .. }), "{again}");
    assert!(full(&writer.flush().unwrap_err()));
    let end = writer.end_writing().unwrap_err();
    assert!(full(&end), "{end}");
    drop(writer);

    assert!(flushed > 0);
    let (recovered, error) = read_back(&path);
    assert!(
        recovered >= flushed,
        "recovered {recovered} < flushed {flushed}"
    );
    if let Some(err) = &error {
        // Whatever the failed write left behind is reported, never yielded.
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
    eprintln!("flushed {flushed}, recovered {recovered}, then {error:?}");
}
