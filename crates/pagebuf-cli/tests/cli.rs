//! End-to-end: the built `pagebuf` binary, each subcommand's success path with its
//! output checked, byte-exact copies, corruption caught by `play --verify`, and every
//! error as one line with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind};

/// A fresh directory under cargo's target directory (on the real disk, not /tmp).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `pagebuf ARGS` in `dir`.
fn pagebuf(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pagebuf"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The command failed with exactly one line on stderr, which is returned.
fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    let err = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.starts_with("pagebuf: "), "{err}");
    err
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

#[test]
fn demo_records_plays_copies_reports_and_cleans_up() {
    let dir = scratch("demo");
    let out = stdout(&pagebuf(&dir, &["demo", "--size", "24MiB"]));
    for expected in [
        "device limits for the working directory",
        "recorded ",
        "samples written from their own buffers",
        "verified: every sample is the synthetic capture",
        "copied ",
        "verified: CRC32C",
        "pools",
        "removed ./pagebuf-demo-",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
}

#[test]
fn probe_reports_limits_with_sources_as_text_and_json() {
    let dir = scratch("probe");
    let text = stdout(&pagebuf(&dir, &["probe", "."]));
    for expected in [
        "offset alignment",
        "max transfer (page-aligned)",
        "direct I/O",
        "for a caller:",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    let value = json(&pagebuf(&dir, &["probe", ".", "--json"]));
    let align = value["dio_offset_align"]["value"].as_u64().unwrap();
    assert!(align.is_power_of_two());
    assert_eq!(value["direct_io"]["source"], "probe");
    assert_eq!(value["alignment"].as_u64().unwrap() % align, 0);
    // Against the library, which the tests of `device` check against sysfs and statx.
    let limits = pagebuf::DeviceLimits::for_path(&dir).unwrap();
    assert_eq!(u64::from(limits.dio_offset_align), align);
    assert_eq!(
        value["max_page_aligned_transfer"]["value"].as_u64(),
        Some(limits.max_page_aligned_transfer)
    );
}

#[test]
fn record_then_play_verifies_and_reports_the_same_samples() {
    let dir = scratch("record-play");
    let recorded = json(&pagebuf(
        &dir,
        &[
            "record",
            "take.pbs",
            "--video",
            "640x360@30",
            "--audio",
            "--duration",
            "2",
            "--json",
        ],
    ));
    // 2 s: 60 frames and 94 packets (48000 / 1024 per second).
    assert_eq!(recorded["streams"][0]["samples"], 60);
    assert_eq!(recorded["streams"][1]["samples"], 94);
    assert_eq!(recorded["samples"], 154);
    let played = json(&pagebuf(&dir, &["play", "take.pbs", "--verify", "--json"]));
    assert_eq!(played["samples"], recorded["samples"]);
    assert_eq!(played["bytes"], recorded["bytes"]);
    assert_eq!(played["verified"], true);
    assert_eq!(played["indexed"], true);
    assert_eq!(played["streams"][0]["kind"], "video");

    let text = stdout(&pagebuf(&dir, &["play", "take.pbs", "--verify"]));
    assert!(text.contains("154 samples"), "{text}");
    assert!(text.contains("verified: every sample"), "{text}");
    let text = stdout(&pagebuf(
        &dir,
        &[
            "record",
            "audio.pbs",
            "--video",
            "none",
            "--audio",
            "--size",
            "64K",
        ],
    ));
    assert!(text.contains("audio 48 kHz stereo: 16 packets"), "{text}");
}

#[test]
fn copy_of_odd_sizes_is_byte_exact() {
    let dir = scratch("copy");
    for (i, len) in [0usize, 1, 511, 4097, (1 << 20) + 1, (3 << 20) + 77]
        .into_iter()
        .enumerate()
    {
        let bytes: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let (src, dst) = (format!("src{i}"), format!("dst{i}"));
        std::fs::write(dir.join(&src), &bytes).unwrap();
        let out = stdout(&pagebuf(&dir, &["copy", &src, &dst, "--verify"]));
        assert!(out.contains("verified: CRC32C"), "{out}");
        assert!(
            std::fs::read(dir.join(&dst)).unwrap() == bytes,
            "length {len}"
        );
    }
    let value = json(&pagebuf(
        &dir,
        &[
            "copy",
            "src5",
            "dst5",
            "--block-size",
            "256K",
            "--depth",
            "2",
            "--json",
        ],
    ));
    assert_eq!(value["bytes"], (3 << 20) + 77);
    assert_eq!(value["block_size"], 256 << 10);
    assert_eq!(value["memory_budget"], (256 << 10) * 8);
}

#[test]
fn play_verify_catches_a_corrupted_or_foreign_recording() {
    let dir = scratch("corrupt");
    stdout(&pagebuf(
        &dir,
        &[
            "record",
            "take.pbs",
            "--video",
            "320x240@25",
            "--duration",
            "1",
        ],
    ));
    // Flip one byte inside a frame (not in the header, not in padding).
    let path = dir.join("take.pbs");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 4096 + 64 + 1000] ^= 0x40; // records start after the header and its backup
    std::fs::write(&path, &bytes).unwrap();
    let err = one_line_error(&pagebuf(&dir, &["play", "take.pbs", "--verify"]));
    assert!(err.contains("corrupt data at byte offset 8192"), "{err}");

    // Checksums that hold over content `record` never wrote.
    let foreign = dir.join("foreign.pbs");
    let writer = SampleWriter::create(&foreign).unwrap();
    let audio = writer.add_stream(StreamKind::Audio).unwrap();
    writer.begin_writing().unwrap();
    let mut packet = writer.allocate_sample(4096).unwrap();
    packet.extend_from_slice(&[0u8; 4096]).unwrap();
    writer
        .write_sample(audio, 0, SampleFlags::empty(), packet)
        .unwrap();
    writer.end_writing().unwrap();
    stdout(&pagebuf(&dir, &["play", "foreign.pbs"])); // readable
    let err = one_line_error(&pagebuf(&dir, &["play", "foreign.pbs", "--verify"]));
    assert!(
        err.contains("does not match the synthetic capture"),
        "{err}"
    );
}

#[test]
fn errors_are_one_line_and_a_non_zero_exit() {
    let dir = scratch("errors");
    std::fs::write(dir.join("file"), b"data").unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    let cases: [(&[&str], &str); 12] = [
        (&["play", "missing.pbs"], "No such file"),
        (&["copy", "missing", "out"], "No such file"),
        (&["probe", "missing"], "No such file"),
        (&["copy", "file", "subdir"], "Is a directory"),
        (
            &["copy", "file", "/proc/pagebuf-cannot-write-here"],
            "/proc/pagebuf-cannot-write-here",
        ),
        (&["copy", "subdir", "out"], "not a regular file"),
        (&["copy", "file", "out", "--depth", "0"], "depth `0`"),
        (
            &["copy", "file", "out", "--block-size", "1000"],
            "multiple of",
        ),
        (&["record", "x.pbs", "--video", "12x"], "not a video format"),
        (&["record", "x.pbs", "--size", "lots"], "not a size"),
        (&["record", "x.pbs", "--video", "none"], "nothing to record"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let err = one_line_error(&pagebuf(&dir, args));
        assert!(
            err.contains(expected),
            "{args:?}: `{expected}` not in `{err}`"
        );
    }
    assert!(
        pagebuf(&dir, &["copy", "file", "out", "--depth", "0"])
            .status
            .code()
            == Some(2)
    );
}

#[test]
fn help_shows_examples_for_every_subcommand() {
    let dir = scratch("help");
    for sub in ["demo", "probe", "copy", "record", "play", "bench"] {
        let out = stdout(&pagebuf(&dir, &[sub, "--help"]));
        assert!(
            out.contains("Example"),
            "{sub} --help has no example:\n{out}"
        );
    }
}

#[test]
fn bench_prints_a_table_of_ratios() {
    let dir = scratch("bench");
    let out = stdout(&pagebuf(&dir, &["bench", "--size", "16MiB"]));
    let rows: Vec<_> = out
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("x "))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows.iter()
            .all(|r| r.contains("faster") || r.contains("slower")),
        "{out}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "bench left files behind: {left:?}");
}
