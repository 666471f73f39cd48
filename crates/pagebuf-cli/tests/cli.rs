//! End-to-end: the built `pagebuf` binary, each subcommand's success path with its
//! output checked, byte-exact copies, corruption caught by `play --verify`, and every
//! error as one line with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pagebuf::stream::{SampleFlags, SampleWriter, StreamFormat, StreamKind};

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
    // The stream formats `record` gave: raw frames of the asked size and rate, and PCM
    // with its WAVEFORMATEX.
    let video = &played["streams"][0]["format"];
    assert_eq!(video["codec"], "I420", "{played}");
    assert_eq!(
        (&video["width"], &video["height"]),
        (&640.into(), &360.into())
    );
    assert_eq!(video["frame_rate"], serde_json::json!([30, 1]));
    let audio = &played["streams"][1]["format"];
    assert_eq!(audio["codec"], "s16l", "{played}");
    assert_eq!(
        (&audio["sample_rate"], &audio["channels"]),
        (&48_000.into(), &2.into())
    );
    assert_eq!(audio["codec_data_bytes"], 18);

    let text = stdout(&pagebuf(&dir, &["play", "take.pbs", "--verify"]));
    assert!(text.contains("154 samples"), "{text}");
    assert!(text.contains("verified: every sample"), "{text}");
    for format in [
        "I420 640x360 @ 30 fps",
        "s16l 48000 Hz, 2 channels, 18 bytes of codec data",
    ] {
        assert!(text.contains(format), "no `{format}` in:\n{text}");
    }
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
    // A stream format `record` never writes, though the samples would match.
    let writer = SampleWriter::create(dir.join("mp4a.pbs")).unwrap();
    let mp4a = StreamFormat::audio("mp4a", 48_000, 2).unwrap();
    writer.add_stream_with(StreamKind::Audio, mp4a).unwrap();
    writer.begin_writing().unwrap();
    writer.end_writing().unwrap();
    let text = stdout(&pagebuf(&dir, &["play", "mp4a.pbs"]));
    assert!(text.contains("mp4a 48000 Hz, 2 channels"), "{text}");
    let err = one_line_error(&pagebuf(&dir, &["play", "mp4a.pbs", "--verify"]));
    assert!(
        err.contains("not a format `pagebuf record` writes"),
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
    for sub in [
        "demo", "probe", "copy", "record", "play", "bench", "randread", "repair",
    ] {
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

/// Runs `pagebuf ARGS` in `dir`, killed and failed (not left to hang the suite) if it
/// has not exited within `limit`.
fn pagebuf_within(dir: &Path, args: &[&str], limit: Duration) -> Output {
    wait_within(
        spawn_pagebuf(dir, args),
        &format!("pagebuf {args:?}"),
        limit,
    )
}

/// Bytes that depend on `seed` and on each byte's position.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

// Issue 12, defects 1-4, through the built binary.

#[test]
fn copy_in_blocks_under_a_page_completes_byte_exact() {
    let dir = scratch("copy-small-blocks");
    let bytes = pattern(1, 10_000);
    std::fs::write(dir.join("src"), &bytes).unwrap();
    let alignment = pagebuf::DeviceLimits::for_path(&dir).unwrap().alignment();
    let mut ran = 0;
    for (block, size) in [("512", 512), ("1KiB", 1024)] {
        if size % alignment != 0 {
            eprintln!("skipped --block-size {block}: the alignment here is {alignment}");
            continue;
        }
        let dst = format!("dst-{block}");
        let out = stdout(&pagebuf_within(
            &dir,
            &["copy", "src", &dst, "--block-size", block, "--verify"],
            Duration::from_secs(60),
        ));
        assert!(out.contains("verified: CRC32C"), "{out}");
        assert!(
            std::fs::read(dir.join(&dst)).unwrap() == bytes,
            "--block-size {block}"
        );
        ran += 1;
    }
    if ran == 0 {
        eprintln!("skipped: this file system's alignment {alignment} refuses blocks under a page");
    }
}

#[test]
fn copy_refuses_a_pseudo_file_and_leaves_no_output() {
    let dir = scratch("copy-proc");
    let err = one_line_error(&pagebuf(&dir, &["copy", "/proc/self/status", "out"]));
    assert!(
        err.contains("/proc/self/status") && err.contains("procfs"),
        "{err}"
    );
    assert!(!dir.join("out").exists(), "a refused copy left `out`");
}

#[test]
fn copy_refused_by_its_options_leaves_an_existing_destination_unchanged() {
    let dir = scratch("copy-refused");
    std::fs::write(dir.join("src"), pattern(2, 100_000)).unwrap();
    let kept = pattern(3, 12_345);
    std::fs::write(dir.join("dst"), &kept).unwrap();
    let err = one_line_error(&pagebuf(
        &dir,
        &["copy", "src", "dst", "--block-size", "513"],
    ));
    assert!(
        std::fs::read(dir.join("dst")).unwrap() == kept,
        "a refused copy changed the destination: {err}"
    );
    assert!(err.contains("513") && err.contains("multiple of"), "{err}");
    // A block size whose buffers would be past the copy's memory cap: refused up front.
    let err = one_line_error(&pagebuf(
        &dir,
        &[
            "copy",
            "src",
            "dst",
            "--block-size",
            "64MiB",
            "--depth",
            "64",
        ],
    ));
    assert!(std::fs::read(dir.join("dst")).unwrap() == kept, "{err}");
}

/// `copy --reflink`: where the file system cannot clone, `auto` copies the blocks and
/// says why (`road`, `note` in JSON), and `require` fails in one line naming the way out.
#[test]
fn copy_says_which_road_it_took() {
    let dir = scratch("copy-road");
    let bytes = pattern(4, 300_000);
    std::fs::write(dir.join("src"), &bytes).unwrap();
    let value = json(&pagebuf(&dir, &["copy", "src", "dst", "--json"]));
    assert!(std::fs::read(dir.join("dst")).unwrap() == bytes);
    if value["road"] == "reflink" {
        eprintln!("skipped: this file system clones (the library's xfs/btrfs tests cover it)");
        return;
    }
    assert_eq!(value["road"], "blocks", "{value}");
    assert!(
        value["note"].as_str().unwrap().contains("reflink"),
        "{value}"
    );
    let value = json(&pagebuf(
        &dir,
        &["copy", "src", "dst2", "--reflink", "never", "--json"],
    ));
    assert_eq!(
        (&value["road"], &value["note"]),
        (&"blocks".into(), &serde_json::Value::Null)
    );
    let err = one_line_error(&pagebuf(
        &dir,
        &["copy", "src", "dst3", "--reflink", "require"],
    ));
    assert!(
        err.contains("reflink") && err.contains("Reflink::Auto"),
        "{err}"
    );
    assert!(!dir.join("dst3").exists());
}

/// Whether this process runs as root (effective uid 0, from /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A loop device over an image file, detached on drop, pass or fail.
struct LoopDevice(String);

impl LoopDevice {
    /// A loop device (4096-byte sectors) over `image`; `None` (reason printed) where
    /// one cannot be made.
    fn new(image: &Path) -> Option<LoopDevice> {
        if !is_root() {
            eprintln!("skipped: making a loop device needs root");
            return None;
        }
        let out = Command::new("losetup")
            .args(["--find", "--show", "-b", "4096"])
            .arg(image)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(LoopDevice(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn copy_of_a_block_device_copies_its_whole_size() {
    let dir = scratch("copy-device");
    let bytes = pattern(4, (4 << 20) + 4096);
    let image = dir.join("device.img");
    std::fs::write(&image, &bytes).unwrap();
    let Some(device) = LoopDevice::new(&image) else {
        return;
    };
    let out = stdout(&pagebuf_within(
        &dir,
        &["copy", &device.0, "out", "--verify"],
        Duration::from_secs(60),
    ));
    assert!(out.contains("4.0 MiB") && !out.contains(" 0 B "), "{out}");
    assert!(out.contains("verified: CRC32C"), "{out}");
    assert!(
        std::fs::read(dir.join("out")).unwrap() == bytes,
        "the copy is the device's bytes"
    );
    let value = json(&pagebuf(&dir, &["copy", &device.0, "out2", "--json"]));
    assert_eq!(value["bytes"], bytes.len());
}

#[test]
fn randread_reports_iops_latency_and_cpu_on_both_engines() {
    let dir = scratch("randread");
    std::fs::write(dir.join("data"), pattern(77, 4 << 20)).unwrap();
    for engine in ["auto", "threads"] {
        let args = [
            "randread",
            "data",
            "--depth",
            "8",
            "--seconds",
            "0.3",
            "--engine",
            engine,
            "--json",
        ];
        let report = json(&pagebuf_within(&dir, &args, Duration::from_secs(60)));
        assert!(report["reads"].as_u64().unwrap() > 0, "{report}");
        assert!(report["iops"].as_f64().unwrap() > 0.0, "{report}");
        let (p50, p99) = (report["p50_us"].as_f64(), report["p99_us"].as_f64());
        assert!(
            p50.unwrap() > 0.0 && p99.unwrap() >= p50.unwrap(),
            "{report}"
        );
        assert!(report["cpu_seconds_per_gib"].as_f64().is_some(), "{report}");
        if engine == "threads" {
            assert_eq!(report["engine"], "threads");
        }
        // One thread submits and waits: posting is cooperative unless asked otherwise
        // (or the kernel is older than 5.19, which the note then says).
        let refused = report["note"]
            .as_str()
            .is_some_and(|note| note.contains("COOP_TASKRUN"));
        let cooperative = report["engine"] == "io_uring" && !refused;
        assert_eq!(report["cooperative"], cooperative, "{report}");
    }
    let interrupt = json(&pagebuf_within(
        &dir,
        &[
            "randread",
            "data",
            "--depth",
            "4",
            "--seconds",
            "0.2",
            "--posting",
            "interrupt",
            "--json",
        ],
        Duration::from_secs(60),
    ));
    assert_eq!(interrupt["cooperative"], false, "{interrupt}");
    assert!(interrupt["reads"].as_u64().unwrap() > 0, "{interrupt}");
    let text = stdout(&pagebuf_within(
        &dir,
        &["randread", "data", "--depth", "1", "--seconds", "0.2"],
        Duration::from_secs(60),
    ));
    assert!(text.contains("IOPS") && text.contains("p99"), "{text}");
    // Bad input: one line each.
    std::fs::write(dir.join("tiny"), [1u8; 100]).unwrap();
    for args in [
        &["randread", "data", "--depth", "0"][..],
        &["randread", "data", "--depth", "2000"],
        &["randread", "missing"],
        &["randread", "tiny"],
        &["randread", "data", "--block", "1000"],
        &["randread", "data", "--posting", "sometimes"],
    ] {
        let err = one_line_error(&pagebuf_within(&dir, args, Duration::from_secs(60)));
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn probe_says_which_engine_a_ring_gets() {
    let dir = scratch("probe-engine");
    let text = stdout(&pagebuf(&dir, &["probe", "."]));
    assert!(text.contains("I/O engine: "), "{text}");
    let report = json(&pagebuf(&dir, &["probe", ".", "--json"]));
    let engine = report["engine"]["engine"].as_str().unwrap();
    assert!(matches!(engine, "io_uring" | "worker threads"), "{report}");
    if engine != "io_uring" {
        assert!(report["engine"]["note"].is_string(), "{report}");
    }
}

#[test]
fn log_bench_reports_group_commit_and_removes_its_log() {
    let dir = scratch("log-bench");
    let args = [
        "log",
        "bench",
        "--threads",
        "2",
        "--seconds",
        "1",
        "--record",
        "150",
        "--json",
    ];
    let r = json(&pagebuf_within(&dir, &args, Duration::from_secs(60)));
    let num = |key: &str| {
        r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number `{key}` in {r}"))
    };
    assert_eq!(r["threads"], 2, "{r}");
    assert_eq!(r["record_bytes"], 150, "{r}");
    assert!(num("commits") > 0.0, "{r}");
    // One record per commit in this loop.
    assert_eq!(num("records"), num("commits"), "{r}");
    assert!(num("commits_per_s") > 0.0, "{r}");
    assert!(num("syncs") >= 1.0, "{r}");
    assert!(num("commits_per_sync") >= 1.0, "{r}");
    assert!(num("waiting_commits") <= num("commits"), "{r}");
    let (p50, p99, max) = (num("p50_us"), num("p99_us"), num("max_us"));
    assert!(p50 > 0.0 && p99 >= p50 && max >= p99, "{r}");
    // A record's frame (16 bytes of header), plus padding or units written again.
    let log = num("log_bytes_per_commit");
    assert!(log >= 166.0 && log <= num("bytes_per_commit"), "{r}");
    assert!(num("padding_bytes_per_commit") < log, "{r}");
    assert!(
        matches!(r["tail_write"].as_str(), Some("pad" | "rewrite_untorn")),
        "{r}"
    );
    assert!(num("cpu_us_per_commit") >= 0.0, "{r}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "log bench left files behind: {left:?}");

    // The table, at a path of the caller's choosing, removed afterwards too.
    let text = stdout(&pagebuf_within(
        &dir,
        &[
            "log",
            "bench",
            "chosen.wal",
            "--threads",
            "1",
            "--seconds",
            "0.2",
        ],
        Duration::from_secs(60),
    ));
    for expected in [
        "commits/s",
        "p99",
        "commits per sync",
        "bytes per commit",
        "CPU",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(!dir.join("chosen.wal").exists(), "{text}");
    let help = stdout(&pagebuf(&dir, &["log", "bench", "--help"]));
    assert!(help.contains("Example"), "{help}");
}

#[test]
fn log_bench_refuses_bad_input_in_one_line() {
    let dir = scratch("log-bench-errors");
    std::fs::write(dir.join("precious.wal"), b"keep me").unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["log", "bench", "--threads", "0"], "threads `0`"),
        (&["log", "bench", "--threads", "5000"], "threads `5000`"),
        (&["log", "bench", "--seconds", "0"], "duration `0`"),
        (&["log", "bench", "--record", "0"], "record size `0`"),
        (
            &["log", "bench", "--record", "17MiB"],
            "record size `17MiB`",
        ),
        (&["log", "bench", "--dir", "missing"], "not a directory"),
        (&["log", "bench", "--dir", "/proc"], "/proc"),
        (&["log", "bench", "precious.wal"], "exists"),
        (&["log"], "subcommand"),
    ];
    for (args, expected) in cases {
        let err = one_line_error(&pagebuf_within(&dir, args, Duration::from_secs(60)));
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{args:?}: `{expected}` not in `{err}`"
        );
    }
    assert_eq!(std::fs::read(dir.join("precious.wal")).unwrap(), b"keep me");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "only the existing file: {left:?}");
}

/// A recording killed with SIGKILL mid-stream has no index; `repair` keeps every whole
/// sample, says what it kept and cut, and writes the index, after which `play --verify`
/// checks every sample and finds the index. A second `repair` has nothing to do; a file
/// that is not a recording is one line of error.
#[test]
fn repair_finishes_a_killed_recording_that_then_verifies() {
    let dir = scratch("repair");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagebuf"))
        .args([
            "record",
            "take.pbs",
            "--size",
            "8GiB",
            "--video",
            "320x240@30",
            "--audio",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until it has written a few MiB, then SIGKILL.
    let started = Instant::now();
    while std::fs::metadata(dir.join("take.pbs")).map_or(0, |m| m.len()) < 80 << 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "record never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    let before = stdout(&pagebuf(&dir, &["play", "take.pbs", "--json"]));
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["indexed"], false);
    let report = json(&pagebuf(&dir, &["repair", "take.pbs", "--json"]));
    assert_eq!(report["repaired"], true);
    let kept = report["kept_samples"].as_u64().unwrap();
    assert!(
        kept > 0 && kept >= before["samples"].as_u64().unwrap(),
        "{report}"
    );
    assert!(report["resumed_at"].as_u64() >= report["data_end"].as_u64());
    let played = json(&pagebuf(&dir, &["play", "take.pbs", "--verify", "--json"]));
    assert_eq!(
        (played["indexed"].clone(), played["verified"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(played["samples"].as_u64(), Some(kept));
    let again = stdout(&pagebuf(&dir, &["repair", "take.pbs"]));
    assert!(again.contains("nothing to repair"), "{again}");
    std::fs::write(dir.join("junk.pbs"), vec![7u8; 10_000]).unwrap();
    let err = one_line_error(&pagebuf(&dir, &["repair", "junk.pbs"]));
    assert!(
        err.contains("junk.pbs") || err.contains("corrupt") || err.contains("header"),
        "{err}"
    );
}

/// Starts `pagebuf ARGS` in `dir` in the background (output captured).
fn spawn_pagebuf(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pagebuf"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, killed and failed if it has not exited within `limit`.
fn wait_within(mut child: std::process::Child, what: &str, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} has not exited after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `capture --share` and `record --from`: two processes, the frames filled in one and
/// written to the file by the other from the same shared pages (every sample zero-copy),
/// and `play --verify` finds every byte of the synthetic video.
#[test]
fn capture_and_record_from_hand_frames_between_processes() {
    let dir = scratch("share");
    let capture = spawn_pagebuf(
        &dir,
        &[
            "capture",
            "--share",
            "cam.sock",
            "--video",
            "320x240@30",
            "--duration",
            "2",
            "--json",
        ],
    );
    let recorded = pagebuf_within(
        &dir,
        &["record", "take.pbs", "--from", "cam.sock", "--json"],
        Duration::from_secs(60),
    );
    let recorded = json(&recorded);
    assert_eq!(recorded["samples"], 60, "{recorded}");
    assert_eq!(recorded["zero_copy_samples"], 60, "{recorded}");
    // Written from the shared pages themselves (not copied into the writer's buffers
    // and written from there), through the ring's registered memory where io_uring is.
    let shared = &recorded["shared_frames"];
    assert_eq!(shared["in_place"], 60, "{shared}");
    assert_eq!(shared["copied"], 0, "{shared}");
    let fixed = shared["fixed_writes"].as_u64().unwrap();
    let engine = stdout(&pagebuf(&dir, &["probe", ".", "--json"]));
    if engine.contains("\"io_uring\"") {
        assert!(
            fixed >= 60,
            "frames not written from registered memory: {shared}"
        );
    }
    let captured = json(&wait_within(capture, "capture", Duration::from_secs(30)));
    assert_eq!(captured["frames"], 60, "{captured}");
    assert_eq!(captured["recorded"], 60, "{captured}");
    assert!(!dir.join("cam.sock").exists(), "the socket is removed");
    let played = stdout(&pagebuf(&dir, &["play", "take.pbs", "--verify"]));
    assert!(played.contains("verified"), "{played}");
    assert!(played.contains("I420 320x240 @ 30 fps"), "{played}");
    // The socket's path is refused while it exists; garbage options in one line.
    std::fs::write(dir.join("busy.sock"), b"").unwrap();
    let err = one_line_error(&pagebuf(&dir, &["capture", "--share", "busy.sock"]));
    assert!(err.contains("exists"), "{err}");
    let err = one_line_error(&pagebuf(
        &dir,
        &["capture", "--share", "x.sock", "--pool-frames", "1"],
    ));
    assert!(err.contains("--pool-frames"), "{err}");
}

/// A dead peer on either side: the recorder killed while the camera waits for frames
/// makes the capture fail (not hang); the capture killed mid-stream leaves the recorder
/// a finished file of the frames it got, which verifies.
#[test]
fn a_killed_capture_or_recorder_ends_the_other_cleanly() {
    let dir = scratch("share-killed");
    let slow = [
        "--video",
        "320x240@30",
        "--duration",
        "60",
        "--realtime",
        "--pool-frames",
        "4",
    ];
    // The recorder dies.
    let capture = spawn_pagebuf(
        &dir,
        &[&["capture", "--share", "a.sock"][..], &slow].concat(),
    );
    let mut recorder = spawn_pagebuf(&dir, &["record", "a.pbs", "--from", "a.sock"]);
    std::thread::sleep(Duration::from_millis(1500));
    recorder.kill().unwrap();
    recorder.wait().unwrap();
    let captured = wait_within(
        capture,
        "capture after its recorder died",
        Duration::from_secs(10),
    );
    let err = one_line_error(&captured);
    assert!(err.contains("recorder went away"), "{err}");
    // The capture dies.
    let mut capture = spawn_pagebuf(
        &dir,
        &[&["capture", "--share", "b.sock"][..], &slow].concat(),
    );
    let recorder = spawn_pagebuf(&dir, &["record", "b.pbs", "--from", "b.sock"]);
    std::thread::sleep(Duration::from_millis(1500));
    capture.kill().unwrap();
    capture.wait().unwrap();
    let recorded = wait_within(
        recorder,
        "recorder after its capture died",
        Duration::from_secs(10),
    );
    let err = one_line_error(&recorded);
    assert!(err.contains("capture went away after"), "{err}");
    let played = stdout(&pagebuf(&dir, &["play", "b.pbs", "--verify"]));
    assert!(played.contains("verified"), "{played}");
}
