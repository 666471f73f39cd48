//! Helpers shared by the integration tests (each test file that needs them says
//! `mod support;`; not every file uses every helper).
#![allow(dead_code)]

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Memory a caller owns, whose drops are counted: the instrumented origin that proves a
/// buffer's memory goes back exactly once.
pub struct CountedOwner {
    pub bytes: Vec<u8>,
    pub drops: Arc<AtomicUsize>,
}

impl AsMut<[u8]> for CountedOwner {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for CountedOwner {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for CountedOwner {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whether this process is the child copy of test `name` (see `run_child`).
pub fn in_child(name: &str) -> bool {
    std::env::var("PAGEBUF_TEST_CHILD").is_ok_and(|v| v == name)
}

/// Runs test `name` of this test binary alone in a child process (so it may change
/// process-wide limits, or die), with extra environment `env`; returns its exit status
/// and its stdout + stderr.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", name)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// As [`run_child`], with the child's file size capped at `max_file_bytes`
/// (`RLIMIT_FSIZE`) and `SIGXFSZ` ignored, so a write past the cap fails with `EFBIG`:
/// a write error on demand, without root. (`sh`'s `trap ""` ignores the signal, and an
/// ignored signal stays ignored across `exec`.)
pub fn run_child_with_file_size_limit(name: &str, max_file_bytes: u64) -> (ExitStatus, String) {
    // `ulimit -f` counts 512-byte blocks in dash and 1024-byte blocks in bash: ask in
    // 1024s and take whichever the shell gives; either way the cap is well below what
    // the tests write.
    let blocks = max_file_bytes / 1024;
    let output = Command::new("sh")
        .args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""),
        ])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// A loop device on an image file in `dir` (`sector`-byte sectors, `size` bytes), with
/// ext4 made and mounted on it; unmounted and detached on drop, pass or fail.
pub struct LoopMount {
    pub device: String,
    pub mount: std::path::PathBuf,
    mounted: bool,
}

impl LoopMount {
    /// `None` (with the reason printed) where loop devices cannot be made: not root, no
    /// `losetup`, no free loop device.
    pub fn new(dir: &std::path::Path, sector: u32, size: u64) -> Option<LoopMount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: making a loop device needs root");
            return None;
        }
        let image = dir.join("disk.img");
        std::fs::File::create(&image).ok()?.set_len(size).ok()?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "-b", &sector.to_string()])
            .arg(&image)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let mut guard = LoopMount {
            device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mount: dir.join("mnt"),
            mounted: false,
        };
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", &guard.device])
            .status()
            .ok()?;
        std::fs::create_dir_all(&guard.mount).ok()?;
        let mount = Command::new("mount")
            .arg(&guard.device)
            .arg(&guard.mount)
            .status()
            .ok()?;
        guard.mounted = mkfs.success() && mount.success();
        if !guard.mounted {
            eprintln!("skipped: mkfs.ext4 or mount failed");
        }
        guard.mounted.then_some(guard)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// A fresh directory for one test under cargo's temporary directory in `target/` (on
/// the real disk; `/tmp` may be tmpfs).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Makes a FIFO at `path` (opening one for reading blocks: tests check nothing does).
pub fn make_fifo(path: &std::path::Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Fills `out` with bytes that depend on `seed` and on each byte's position, so a
/// sample read back can be checked against its seed alone (and a shifted or swapped
/// one is caught).
pub fn fill_pattern(seed: u64, out: &mut [u8]) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// `len` bytes of [`fill_pattern`].
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    fill_pattern(seed, &mut out);
    out
}

/// What sample `i` of a test recording is: (stream, time, flags, size); its bytes are
/// `pattern(i, size)`.
pub type SamplePlan = fn(u64) -> (u16, u64, pagebuf::stream::SampleFlags, usize);

/// Reads `reader` to its end: every sample it yields must be the planned one, in order,
/// and nothing may follow an error. Returns how many it yielded and the error that ended
/// it, if any.
pub fn read_planned(
    reader: &mut pagebuf::stream::SampleReader,
    plan: SamplePlan,
) -> (u64, Option<pagebuf::Error>) {
    let mut count = 0;
    while let Some(sample) = reader.next() {
        match sample {
            Ok(sample) => {
                let (stream, time, flags, size) = plan(count);
                assert_eq!(
                    (sample.stream, sample.time, sample.flags),
                    (stream, time, flags),
                    "sample {count}"
                );
                assert!(
                    sample.data[..] == pattern(count, size)[..],
                    "sample {count}: bytes differ"
                );
                count += 1;
            }
            Err(err) => {
                assert!(reader.next().is_none(), "iteration ends after an error");
                return (count, Some(err));
            }
        }
    }
    (count, None)
}
