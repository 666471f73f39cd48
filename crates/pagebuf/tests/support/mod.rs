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

/// The shared pool a parent passed this child as an inherited fd (its number in
/// environment variable `PAGEBUF_SHARED_FD`), attached. Opening `/proc/self/fd/N`
/// gives an fd of the same memfd without unsafe code.
pub fn attach_inherited_pool() -> pagebuf::SharedPool {
    let fd: i32 = std::env::var("PAGEBUF_SHARED_FD").unwrap().parse().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap();
    pagebuf::SharedPool::attach(file.into()).unwrap()
}

/// Whether this process is the child copy of test `name` (see `run_child`).
pub fn in_child(name: &str) -> bool {
    std::env::var("PAGEBUF_TEST_CHILD").is_ok_and(|v| v == name)
}

/// Runs test `name` of this test binary alone in a child process (so it may change
/// process-wide limits, or die), with extra environment `env`; returns its exit status
/// and its stdout + stderr.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.envs(env.iter().copied());
    run_as_child(child, name)
}

/// As [`run_child`], failing the test (instead of hanging the suite) if the child has not
/// finished within two minutes.
pub fn run_child_within(
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
) -> (ExitStatus, String) {
    within(std::time::Duration::from_secs(120), name, move || {
        run_child(name, env)
    })
}

/// Checks that a child (from [`run_child`] or [`run_child_within`]) succeeded and printed
/// one of `markers` (its last line, or a reason it skipped); prints and returns its
/// output.
pub fn child_reached((status, text): (ExitStatus, String), markers: &[&str]) -> String {
    eprintln!("{text}");
    assert!(status.success(), "child failed ({status:?}):\n{text}");
    assert!(
        markers.iter().any(|marker| text.contains(marker)),
        "child did not reach its end:\n{text}"
    );
    text
}

/// Runs `command` (this test binary, or a wrapper that execs it with the arguments
/// appended here) as the child copy of test `name`; its exit status and its stdout +
/// stderr.
fn run_as_child(mut command: Command, name: &str) -> (ExitStatus, String) {
    let output = command
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

/// As [`run_child`], with the child's file size capped at `max_file_bytes`
/// (`RLIMIT_FSIZE`) and `SIGXFSZ` ignored, so a write past the cap fails with `EFBIG`:
/// a write error on demand, without root. (`sh`'s `trap ""` ignores the signal, and an
/// ignored signal stays ignored across `exec`.)
pub fn run_child_with_file_size_limit(name: &str, max_file_bytes: u64) -> (ExitStatus, String) {
    // `ulimit -f` counts 512-byte blocks in dash and 1024-byte blocks in bash: ask in
    // 1024s and take whichever the shell gives; either way the cap is well below what
    // the tests write.
    let blocks = max_file_bytes / 1024;
    let mut shell = Command::new("sh");
    shell
        .args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""),
        ])
        .arg(std::env::current_exe().unwrap());
    run_as_child(shell, name)
}

/// Whether the kernel has file system `fs` (`/proc/filesystems`, after a `modprobe`
/// where it is not listed yet); `Err` says why not.
pub fn filesystem_available(fs: &str) -> Result<(), String> {
    let listed = || {
        std::fs::read_to_string("/proc/filesystems")
            .map(|text| {
                text.lines()
                    .any(|line| line.split_whitespace().last() == Some(fs))
            })
            .unwrap_or(false)
    };
    if listed() {
        return Ok(());
    }
    let _ = Command::new("modprobe").arg(fs).output();
    if listed() {
        Ok(())
    } else {
        Err(format!(
            "the kernel has no {fs} (not in /proc/filesystems, and `modprobe {fs}` did not add it)"
        ))
    }
}

/// Loop devices on image files in `dir` with a file system made and mounted on them;
/// unmounted, forgotten (btrfs), their changed queue settings restored and detached on
/// drop, pass or fail.
pub struct LoopMount {
    /// The first loop device (the one mounted).
    pub device: String,
    /// Every loop device, in the order of the `sectors` given.
    pub devices: Vec<String>,
    pub mount: std::path::PathBuf,
    fs: String,
    mounted: bool,
    /// sysfs files written, with the values to put back.
    restore: Vec<(std::path::PathBuf, String)>,
}

impl LoopMount {
    /// One loop device (`sector`-byte sectors, `size` bytes) with ext4. `None` (with the
    /// reason printed) where loop devices cannot be made: not root, no `losetup`, no
    /// free loop device.
    pub fn new(dir: &std::path::Path, sector: u32, size: u64) -> Option<LoopMount> {
        LoopMount::with_fs(dir, "ext4", &[sector], size)
    }

    /// One loop device per entry of `sectors` (that many bytes a sector, `size` bytes
    /// each), file system `fs` (`ext4`, `xfs` or `btrfs`; btrfs spans all the devices,
    /// data and metadata `single`) made on them, mounted at `dir/mnt`. `None` (with the
    /// reason printed as `skipped: ...`) where not root, where `mkfs.<fs>` is missing,
    /// where the kernel lacks `fs`, or where a step fails.
    pub fn with_fs(
        dir: &std::path::Path,
        fs: &str,
        sectors: &[u32],
        size: u64,
    ) -> Option<LoopMount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: making a loop device needs root");
            return None;
        }
        let mkfs = format!("mkfs.{fs}");
        if Command::new(&mkfs).arg("-V").output().is_err() {
            eprintln!("skipped: {mkfs} is not installed (apt-get install btrfs-progs xfsprogs)");
            return None;
        }
        if let Err(why) = filesystem_available(fs) {
            eprintln!("skipped: {why}");
            return None;
        }
        let mut guard = LoopMount {
            device: String::new(),
            devices: Vec::new(),
            mount: dir.join("mnt"),
            fs: fs.to_string(),
            mounted: false,
            restore: Vec::new(),
        };
        for (i, sector) in sectors.iter().enumerate() {
            let image = dir.join(format!("disk{i}.img"));
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
            guard
                .devices
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        guard.device = guard.devices.first()?.clone();
        let mut mkfs_cmd = Command::new(&mkfs);
        match fs {
            "ext4" => mkfs_cmd.args(["-q", "-F"]),
            "btrfs" if guard.devices.len() > 1 => {
                mkfs_cmd.args(["-q", "-f", "-d", "single", "-m", "single"])
            }
            "btrfs" => mkfs_cmd.args(["-q", "-f"]),
            _ => mkfs_cmd.args(["-q", "-f"]),
        };
        let made = mkfs_cmd.args(&guard.devices).output().ok()?;
        if !made.status.success() {
            eprintln!(
                "skipped: {mkfs} failed: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            return None;
        }
        std::fs::create_dir_all(&guard.mount).ok()?;
        let mut mount = Command::new("mount");
        if fs == "btrfs" && guard.devices.len() > 1 {
            let devices: Vec<String> = guard
                .devices
                .iter()
                .map(|d| format!("device={d}"))
                .collect();
            mount.args(["-o", &devices.join(",")]);
        }
        let out = mount.arg(&guard.device).arg(&guard.mount).output().ok()?;
        guard.mounted = out.status.success();
        if !guard.mounted {
            eprintln!(
                "skipped: mounting {fs} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        guard.mounted.then_some(guard)
    }

    /// The kernel name of loop device `index` (`loop3`).
    pub fn name(&self, index: usize) -> String {
        self.devices[index].trim_start_matches("/dev/").to_string()
    }

    /// The sysfs queue directory of loop device `index`, by its kernel name.
    pub fn queue(&self, index: usize) -> std::path::PathBuf {
        std::path::Path::new("/sys/block")
            .join(self.name(index))
            .join("queue")
    }

    /// Lowers loop device `index`'s `max_sectors_kb` to `kb`; put back on drop.
    pub fn set_max_sectors_kb(&mut self, index: usize, kb: u64) {
        let file = self.queue(index).join("max_sectors_kb");
        let old = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, kb.to_string()).unwrap();
        self.restore.push((file, old.trim().to_string()));
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let unmounted = Command::new("umount")
                .arg(&self.mount)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                // Busy (a failed test's thread or ring still holds a file there): gone
                // from the tree now, and from the kernel once the last file closes; the
                // loop device below then detaches itself (`losetup -d` of a busy device
                // sets autoclear).
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        for (file, value) in self.restore.drain(..).rev() {
            let _ = std::fs::write(file, value);
        }
        for device in &self.devices {
            if self.fs == "btrfs" {
                // btrfs remembers scanned devices; a reused loop device must not carry
                // this file system's registration.
                let _ = Command::new("btrfs")
                    .args(["device", "scan", "--forget", device])
                    .output();
            }
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}

/// An overlay mount of `lower` under `upper` (with `work`) at `point`; unmounted on
/// drop. `None` (with the reason printed) where the kernel has no overlayfs or the
/// mount fails.
pub struct OverlayMount {
    pub point: std::path::PathBuf,
}

impl OverlayMount {
    /// `lower` under `upper` (with `work`) at `point`.
    pub fn new(
        lower: &std::path::Path,
        upper: &std::path::Path,
        work: &std::path::Path,
        point: &std::path::Path,
    ) -> Option<OverlayMount> {
        for dir in [upper, work] {
            std::fs::create_dir_all(dir).ok()?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        OverlayMount::mount(&options, point)
    }

    /// A read-only overlay of `lowers` (the first on top) at `point`: no upper layer.
    pub fn read_only(lowers: &[&std::path::Path], point: &std::path::Path) -> Option<OverlayMount> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        OverlayMount::mount(&format!("lowerdir={}", lowers.join(":")), point)
    }

    fn mount(options: &str, point: &std::path::Path) -> Option<OverlayMount> {
        if let Err(why) = filesystem_available("overlay") {
            eprintln!("skipped: {why}");
            return None;
        }
        std::fs::create_dir_all(point).ok()?;
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", options])
            .arg(point)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: mounting overlay failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(OverlayMount {
            point: point.to_path_buf(),
        })
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
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

impl LoopMount {
    /// A loop device with `sector`-byte sectors over the existing file `image`, with no
    /// file system and nothing mounted: a raw block device to read and write, detached
    /// on drop, pass or fail. `None` (with the reason printed as `skipped: ...`) where
    /// not root or where `losetup` fails.
    pub fn raw(image: &std::path::Path, sector: u32) -> Option<LoopMount> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: making a loop device needs root");
            return None;
        }
        let out = match Command::new("losetup")
            .args(["--find", "--show", "-b", &sector.to_string()])
            .arg(image)
            .output()
        {
            Ok(out) => out,
            Err(err) => {
                eprintln!("skipped: losetup cannot be run: {err}");
                return None;
            }
        };
        if !out.status.success() {
            eprintln!(
                "skipped: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(LoopMount {
            device: device.clone(),
            devices: vec![device],
            mount: image.to_path_buf(),
            fs: String::new(),
            mounted: false,
            restore: Vec::new(),
        })
    }
}

/// Runs `f` on a thread of its own and returns what it returns, or fails the test (it
/// does not hang the suite) if `f` has not finished within `limit`. A panic in `f` is
/// the test's panic.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} has not finished after {limit:?}: it hangs")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it ends"),
        },
    }
}

/// Writes `len` bytes of [`pattern`]`(seed)` to a new file at `path` (buffered, then
/// synced) and returns them: a file to read back through direct I/O and compare.
pub fn patterned_file(path: &std::path::Path, seed: u64, len: usize) -> Vec<u8> {
    let bytes = pattern(seed, len);
    std::fs::write(path, &bytes).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
    bytes
}

/// Runs future `f` to its end on the calling thread with a waker that unparks it: no
/// runtime at all, to prove a future needs none (a `Pending` wakes whoever polls it).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(value) = f.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// The CPU time (user + system) this process has used so far, every thread counted
/// (`/proc/self/stat` fields 14 and 15, in clock ticks).
pub fn process_cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second();
    std::time::Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// A scratch directory (on the real disk, as [`scratch`]) for this process alone,
/// `group/<pid>/name` under cargo's temporary directory, removed when dropped, pass or
/// fail: two runs of one test binary at once (two people on one work tree) never take
/// each other's files, and nothing piles up.
pub struct ScratchDir {
    path: std::path::PathBuf,
}

impl ScratchDir {
    pub fn new(group: &str, name: &str) -> ScratchDir {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(group)
            .join(std::process::id().to_string())
            .join(name);
        let _ = std::fs::remove_dir_all(&path);
        // Another test's drop may remove an empty parent while this one is made: retry.
        let mut attempts = 0;
        while let Err(err) = std::fs::create_dir_all(&path) {
            attempts += 1;
            assert!(attempts < 10, "cannot make {}: {err}", path.display());
        }
        ScratchDir { path }
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        // The empty directories above it too, up to the process's own (one still in
        // use by another test is not empty, and stays).
        let pid = std::process::id().to_string();
        let mut dir = self.path.parent();
        while let Some(parent) = dir {
            let _ = std::fs::remove_dir(parent);
            if parent.file_name() == Some(std::ffi::OsStr::new(&pid)) {
                break;
            }
            dir = parent.parent();
        }
    }
}

/// Sample `i` of the recordings the recovery and resume tests make: stream (1 or 2),
/// time, flags, size. Every fifth is large (written without a copy) and a key frame.
pub fn recording_plan(i: u64) -> (u16, u64, pagebuf::stream::SampleFlags, usize) {
    use pagebuf::stream::SampleFlags;
    let stream = 1 + (i % 2) as u16;
    let flags = if i % 5 == 0 {
        SampleFlags::KEY_FRAME
    } else {
        SampleFlags::empty()
    };
    let size = if i % 5 == 0 {
        256 << 10
    } else {
        1 + (i as usize * 379) % 6000
    };
    (stream, i * 1000, flags, size)
}

/// Writes sample `i` of [`recording_plan`], its bytes [`fill_pattern`]ed.
pub fn write_planned(writer: &pagebuf::stream::SampleWriter, i: u64) -> pagebuf::Result<()> {
    let (stream, time, flags, size) = recording_plan(i);
    let mut buf = writer.allocate_sample(size)?;
    buf.set_len(size)?;
    fill_pattern(i, &mut buf);
    writer.write_sample(stream, time, flags, buf)
}

/// A new recording at `path` with a video and an audio stream, writing.
pub fn two_stream_writer(path: &std::path::Path) -> pagebuf::stream::SampleWriter {
    use pagebuf::stream::{SampleWriter, StreamKind};
    let writer = SampleWriter::create(path).unwrap();
    writer.add_stream(StreamKind::Video).unwrap();
    writer.add_stream(StreamKind::Audio).unwrap();
    writer.begin_writing().unwrap();
    writer
}

/// Caps this process's address space (`RLIMIT_AS`) `extra` bytes above what it maps now,
/// so that a larger mapping or allocation is refused: for a child process (see
/// [`run_child`]), never the test runner itself.
pub fn cap_address_space(extra: u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let limit = rustix::process::Rlimit {
        current: Some(vm_kib * 1024 + extra),
        maximum: None,
    };
    rustix::process::setrlimit(rustix::process::Resource::As, limit).unwrap();
}

/// What debug builds fill a returned pool frame with (`pool/poison.rs` documents 0xDB).
pub const POISON_BYTE: u8 = 0xDB;

/// Installs, on every thread of this process (TSYNC, as a container runtime does), a
/// seccomp filter that refuses the system call `number` with `EPERM`; checks that the
/// filter is in place. For child copies of a test binary only: it cannot be undone.
pub fn refuse_syscall(number: i64) {
    use seccompiler::{apply_filter_all_threads, BpfProgram, SeccompAction, SeccompFilter};
    let arch = std::env::consts::ARCH.try_into().unwrap();
    let filter = SeccompFilter::new(
        [(number, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(rustix::io::Errno::PERM.raw_os_error() as u32),
        arch,
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    apply_filter_all_threads(&program).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "no filter installed:\n{status}"
    );
}
