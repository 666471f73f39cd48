//! A process killed with a direct-I/O read into a shared frame still in flight: the
//! kernel writes the frame when the read completes, which can be seconds after the
//! process is gone (io_uring lets a process exit with reads in flight). The survivor
//! must not get the frame back before that, or the dead process's read lands in a
//! frame someone else now owns.
//!
//! The read is held in flight by a blkio cgroup throttle (cgroup v1's
//! `blkio.throttle.read_bps_device`, or v2's `io.max`) on the disk the file is on, so
//! the test needs root and one of the two; without them it says so and passes. It
//! runs for both ring engines (io_uring, worker threads). Also: the limit on the
//! leases one ring holds.

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pagebuf::ring::{Engine, RingOptions};
use pagebuf::{BufferAllocator, DirectFile, Framing, IoRing, SharedPool};
use support::{in_child, ScratchDir};

const CHILD: &str = "dead_io_child";
/// The frame, and the read into it.
const FRAME: usize = 256 * 1024;
/// The throttle: the read takes `FRAME / RATE` = 4 s.
const RATE: u64 = 64 * 1024;
/// What the file holds, and what the survivor writes into the frame.
const FILE_BYTE: u8 = 0xC3;
const SURVIVOR_BYTE: u8 = 0x5E;

/// A throttled cgroup, removed on drop (once its processes are gone).
struct Throttle {
    dir: PathBuf,
}

impl Throttle {
    /// A cgroup that reads the disk holding `file` at `RATE` bytes a second, or why
    /// there can be none here.
    fn new(file: &Path, name: &str) -> Result<Throttle, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root".into());
        }
        let disk = disk_of(file)?;
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let name = format!("pagebuf-test-{}-{name}", std::process::id());
        let (dir, control, rule) = if v1.join("blkio.throttle.read_bps_device").exists() {
            let dir = v1.join(name);
            let rule = format!("{disk} {RATE}");
            (dir, "blkio.throttle.read_bps_device", rule)
        } else if Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists() {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+io");
            let dir = Path::new("/sys/fs/cgroup").join(name);
            (dir, "io.max", format!("{disk} rbps={RATE}"))
        } else {
            return Err("no blkio (v1) or io (v2) cgroup controller".into());
        };
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let throttle = Throttle { dir };
        std::fs::write(throttle.dir.join(control), &rule)
            .map_err(|e| format!("{control} <- {rule}: {e}"))?;
        Ok(throttle)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // rmdir fails while a process is still in the group: retry for a while.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}

/// `major:minor` of the whole disk that holds `file` (throttles take disks, not
/// partitions).
fn disk_of(file: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(file).map_err(|e| e.to_string())?.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return Err(format!(
            "{major}:{minor} is not a block device (tmpfs, overlay?)"
        ));
    }
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).map_err(|e| e.to_string())?;
        return Ok(parent.trim().to_string());
    }
    Ok(format!("{major}:{minor}"))
}

/// Kills and reaps the child if the test fails first.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child: joins the cgroup, attaches to the pool, starts a direct read of the
/// file into a frame, says so, and waits to be killed.
#[test]
fn dead_io_child() {
    if !in_child(CHILD) {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap();
    std::fs::write(
        Path::new(&var("PAGEBUF_CGROUP")).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .unwrap();
    let pool = support::attach_inherited_pool();
    let engine = match var("PAGEBUF_ENGINE").as_str() {
        "threads" => Engine::Threads,
        _ => Engine::Uring,
    };
    let ring = IoRing::with_options(RingOptions::default().engine(engine)).unwrap();
    let file = DirectFile::open(var("PAGEBUF_FILE")).unwrap();
    let mut frame = pool.allocate_timeout(Duration::from_secs(10)).unwrap();
    if var("PAGEBUF_ENGINE") == "lent" {
        // The frame's bytes lent as a slice: the call blocks until the read is done,
        // or the process is killed in it.
        let lender = std::thread::spawn(move || {
            let _ = ring.read_into(&file, frame.whole_mut(), 0);
        });
        std::thread::sleep(Duration::from_millis(100));
        println!("reading");
        let _ = lender.join();
        return;
    }
    let read = ring.read_at(&file, frame, 0);
    println!("reading");
    std::thread::sleep(Duration::from_secs(60));
    drop(read);
}

/// Kills a child whose read into the pool's only frame is in flight, takes the frame
/// back, writes it, and checks after the read must have landed that nothing else did.
fn survivor_keeps_its_frame(engine: &str) {
    let dir = ScratchDir::new("shared_dead_io", engine);
    let path = dir.join("source");
    std::fs::write(&path, vec![FILE_BYTE; FRAME]).unwrap();
    let throttle = match Throttle::new(&path, engine) {
        Ok(throttle) => throttle,
        Err(why) => {
            eprintln!("skipped: no throttled cgroup here ({why})");
            return;
        }
    };
    let pool = SharedPool::create(Framing::new(FRAME, 1)).unwrap();
    let inherited = rustix::io::dup(pool.as_fd()).unwrap();
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([CHILD, "--exact", "--nocapture", "--test-threads=1"])
            .env("PAGEBUF_TEST_CHILD", CHILD)
            .env("PAGEBUF_SHARED_FD", inherited.as_raw_fd().to_string())
            .env("PAGEBUF_CGROUP", &throttle.dir)
            .env("PAGEBUF_FILE", &path)
            .env("PAGEBUF_ENGINE", engine)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    drop(inherited);
    let stdout = child.0.stdout.take().unwrap();
    let said = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("reading"));
    assert!(said.is_some(), "the child never started its read");
    let started = Instant::now();
    // Into the throttle's queue, well inside the 4 s the read takes.
    std::thread::sleep(Duration::from_millis(300));
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let mut frame = pool
        .allocate_timeout(Duration::from_secs(60))
        .expect("the dead child's frame came back");
    let got_back = started.elapsed();
    // The whole frame is content from here on (a new buffer's length is 0).
    frame.whole_mut().fill(SURVIVOR_BYTE);
    frame.set_len(FRAME).unwrap();
    // Past the moment the throttle lets the read through, with a margin.
    let landed = Duration::from_secs(FRAME as u64 / RATE + 3);
    if let Some(left) = landed.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    assert_eq!(frame.len(), FRAME);
    let stray = frame.iter().position(|&b| b != SURVIVOR_BYTE);
    assert_eq!(
        stray,
        None,
        "byte {:?} of the frame changed after the survivor took it back ({} ms after the \
         kill): the dead child's read landed in a reused frame",
        stray,
        got_back.as_millis()
    );
    eprintln!(
        "{engine}: the frame came back {} ms after the kill",
        got_back.as_millis()
    );
    drop(frame);
    drop(child);
    drop(throttle);
}

#[test]
fn a_read_in_flight_when_its_process_dies_never_lands_in_a_reused_frame_uring() {
    survivor_keeps_its_frame("uring");
}

#[test]
fn a_read_in_flight_when_its_process_dies_never_lands_in_a_reused_frame_threads() {
    survivor_keeps_its_frame("threads");
}

/// The same with the frame's bytes lent to the ring as a `&mut [u8]` (`read_into`).
#[test]
fn a_read_in_flight_when_its_process_dies_never_lands_in_a_reused_frame_lent() {
    survivor_keeps_its_frame("lent");
}

/// A ring holds the leases of at most 64 live attachments: a transfer on a 65th pool's
/// frame is refused with an error saying so (never issued unprotected), its buffer goes
/// home, and a slot comes free once its pool is gone.
#[test]
fn a_ring_holding_64_leases_refuses_a_65th_until_one_is_gone() {
    let ring = IoRing::with_options(RingOptions::default().engine(Engine::Uring));
    let Ok(ring) = ring else {
        eprintln!("skipped: no io_uring here");
        return;
    };
    if ring.engine() != Engine::Uring {
        eprintln!("skipped: no io_uring here");
        return;
    }
    let dir = ScratchDir::new("shared_dead_io", "leases");
    let file = DirectFile::create(dir.join("out")).unwrap();
    let write_frame = |pool: &SharedPool| {
        let mut frame = pool.try_allocate().unwrap();
        frame.whole_mut().fill(1);
        frame.set_len(4096).unwrap();
        ring.write_at(&file, frame.freeze(), 0).wait()
    };
    let mut pools: Vec<SharedPool> = (0..64)
        .map(|_| SharedPool::create(Framing::new(4096, 1)).unwrap())
        .collect();
    for pool in &pools {
        assert_eq!(write_frame(pool).unwrap(), 4096);
    }
    let extra = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let refused = write_frame(&extra).unwrap_err();
    assert!(
        matches!(&refused, pagebuf::Error::InvalidRequest(m) if m.contains("64 shared pool")),
        "{refused:?}"
    );
    assert_eq!(extra.stats().free, 1, "the refused frame went home");
    // The same pools again: their leases are held already.
    assert_eq!(write_frame(&pools[0]).unwrap(), 4096);
    drop(pools.pop());
    assert_eq!(write_frame(&extra).unwrap(), 4096);
}

const LOW_FD_LIMIT: &str = "a_ring_refused_a_file_table_refuses_shared_transfers_saying_why";

/// Where the kernel refuses a ring the file table leases live in (here: an fd limit
/// below the table's 64 slots), a transfer on a shared frame is refused with an error
/// naming the limit, never issued without its lease, on each road a transfer takes
/// into the ring (one transfer, a detached write, a batch); other transfers go on.
#[test]
fn a_ring_refused_a_file_table_refuses_shared_transfers_saying_why() {
    if !in_child(LOW_FD_LIMIT) {
        support::child_reached(
            support::run_child_within(LOW_FD_LIMIT, &[]),
            &["low fd limit: done", "skipped:"],
        );
        return;
    }
    let dir = ScratchDir::new("shared_dead_io", "fd-limit");
    let file = DirectFile::create(dir.join("out")).unwrap();
    let pool = SharedPool::create(Framing::new(4096, 1)).unwrap();
    let Ok(ring) = IoRing::with_options(RingOptions::default().engine(Engine::Uring)) else {
        println!("skipped: no io_uring here");
        return;
    };
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(48),
            maximum: hard,
        },
    )
    .unwrap();
    let mut frame = pool.try_allocate().unwrap();
    frame.whole_mut().fill(2);
    frame.set_len(4096).unwrap();
    let refused = ring.write_at(&file, frame.freeze(), 0).wait().unwrap_err();
    assert!(
        matches!(&refused, pagebuf::Error::Unsupported(m) if m.contains("RLIMIT_NOFILE")),
        "{refused:?}"
    );
    assert_eq!(pool.stats().free, 1, "the refused frame went home");
    // The same refusal on the road `record --from` takes: a sample writer sends a
    // large sample, a frame's bytes past the record header, out detached.
    use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind, WriterOptions, SAMPLE_HEADROOM};
    // Room for the record's padding to the file's unit too: else the writer copies.
    let frames = SharedPool::create(Framing::new((1 << 20) + 4096, 1)).unwrap();
    let writer = SampleWriter::with_options(
        dir.join("take.pbs"),
        WriterOptions::default().ring(ring.clone()),
    )
    .unwrap();
    let video = writer.add_stream(StreamKind::Video).unwrap();
    writer.begin_writing().unwrap();
    let mut frame = frames.try_allocate().unwrap();
    frame.set_len(SAMPLE_HEADROOM + (1 << 20)).unwrap();
    let past_header = frame.freeze().slice(SAMPLE_HEADROOM..).unwrap();
    let sample = past_header.try_into_mut().unwrap();
    let refused = writer
        .write_sample(video, 0, SampleFlags::KEY_FRAME, sample)
        .and_then(|()| writer.end_writing().map(drop))
        .unwrap_err();
    assert!(refused.to_string().contains("RLIMIT_NOFILE"), "{refused:?}");
    assert_eq!(frames.stats().free, 1, "the refused frame went home");
    // And a batch of reads into a shared frame.
    let into = pool.try_allocate().unwrap();
    let mut batch = ring.read_at_batch(&file, vec![(into, 0)]);
    let refused = batch.pop().unwrap().wait().unwrap_err();
    assert!(
        matches!(&refused, pagebuf::Error::Unsupported(m) if m.contains("RLIMIT_NOFILE")),
        "{refused:?}"
    );
    assert_eq!(pool.stats().free, 1, "the refused frame went home");
    let mut own = pagebuf::PageAllocator::default()
        .allocate_page_aligned(4096)
        .unwrap();
    own.extend_from_slice(&[3; 4096]).unwrap();
    assert_eq!(ring.write_at(&file, own.freeze(), 0).wait().unwrap(), 4096);
    println!("low fd limit: done");
}
