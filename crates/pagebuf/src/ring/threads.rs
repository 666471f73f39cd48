//! The thread engine: positioned reads and writes (`pread`/`pwrite`/`fdatasync`) on a
//! small pool of worker threads, for where io_uring is refused. A transfer goes to one
//! worker whole (its pieces one after another), so `workers` transfers run at once.
//!
//! A read into memory the caller lends (`Op::ReadRaw`: an address, no owner) is a
//! `pread` into that address, which is the one `unsafe` here.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::completion::Completions;
use super::op::{Op, Tearing, RWF_ATOMIC};

/// Worker threads and the queue they take transfers from.
pub(crate) struct ThreadEngine {
    jobs: Option<SyncSender<(usize, Op)>>,
    workers: Vec<JoinHandle<()>>,
    completions: Arc<Completions>,
}

impl ThreadEngine {
    /// `workers` threads completing into `completions`.
    pub(crate) fn new(workers: usize, completions: Arc<Completions>) -> ThreadEngine {
        // Unbounded in practice (each waiting job owns only what its Pending gave it).
        let (tx, rx) = mpsc::sync_channel::<(usize, Op)>(1 << 16);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..workers.max(1))
            .map(|_| {
                let (rx, completions) = (rx.clone(), completions.clone());
                std::thread::spawn(move || work(&rx, &completions))
            })
            .collect();
        ThreadEngine {
            jobs: Some(tx),
            workers,
            completions,
        }
    }

    /// Hands transfer `id` to a worker; `false` if the workers are gone.
    pub(crate) fn submit(&self, id: usize, op: Op) -> Result<(), Op> {
        match &self.jobs {
            Some(jobs) => jobs.send((id, op)).map_err(|e| e.0 .1),
            None => Err(op),
        }
    }
}

fn work(jobs: &Mutex<Receiver<(usize, Op)>>, completions: &Completions) {
    let mut results = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((id, mut op)) = job else { break };
        run(&mut op, &mut results);
        completions.finish_all(id, op, &results).run();
    }
}

/// Runs every piece of `op`, one result each (bytes, or `-errno`); stops at a short or
/// failed piece (the rest are reported as 0 bytes, which the outcome ignores).
fn run(op: &mut Op, results: &mut Vec<i32>) {
    let pieces = op.piece_count();
    results.clear();
    results.resize(pieces, 0);
    for (i, result) in results.iter_mut().enumerate() {
        let piece = op.piece(i);
        let outcome = match op {
            Op::Read { file, buf, .. } => file.file.read_at(
                &mut buf.whole_mut()[piece.at..piece.at + piece.len],
                piece.offset,
            ),
            // `start + len <= max_len`, checked before the op was made.
            Op::ReadPart {
                file, buf, start, ..
            } => {
                let at = *start + piece.at;
                file.file
                    .read_at(&mut buf.whole_mut()[at..at + piece.len], piece.offset)
            }
            Op::ReadRaw { file, addr, .. } => {
                let dst = (*addr + piece.at) as *mut u8;
                // SAFETY: `[addr, addr + len)` is memory the caller of
                // `IoRing::read_into_raw` keeps valid for writes, and touches by no other
                // means, until this transfer completes (its safety contract; the safe
                // `read_many` blocks until then); this piece lies inside it (`Layout`), and
                // `pread` writes only its `piece.len` bytes, initialized or not.
                unsafe { pread(&file.file, dst, piece.len, piece.offset) }
            }
            Op::Write {
                file,
                data,
                tearing,
                ..
            } => {
                let bytes = &data[piece.at..piece.at + piece.len];
                match tearing {
                    Tearing::Possible => file.file.write_at(bytes, piece.offset),
                    Tearing::Impossible => rustix::io::pwritev2(
                        &file.file,
                        &[std::io::IoSlice::new(bytes)],
                        piece.offset,
                        rustix::io::ReadWriteFlags::from_bits_retain(RWF_ATOMIC),
                    )
                    .map_err(std::io::Error::from),
                }
            }
            Op::Sync { file } => file.file.sync_data().map(|()| 0),
        };
        *result = match outcome {
            Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
            Err(e) => e.raw_os_error().map_or(-libc::EIO, |errno| -errno),
        };
        if *result < 0 || (*result as usize) < piece.len {
            break;
        }
    }
}

/// `pread(2)` of up to `len` bytes at `offset` into `dst`, retried when interrupted.
///
/// # Safety
/// `dst` is valid for writes of `len` bytes, and nothing else accesses them meanwhile.
unsafe fn pread(
    file: &std::fs::File,
    dst: *mut u8,
    len: usize,
    offset: u64,
) -> std::io::Result<usize> {
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    loop {
        // SAFETY: `dst` is valid for writes of `len` bytes and not otherwise accessed
        // (this function's contract); the fd is open (the op holds the file).
        let n = unsafe { libc::pread(file.as_raw_fd(), dst.cast(), len, offset) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl Drop for ThreadEngine {
    /// Waits for every transfer handed to the workers (their buffers go back as each
    /// completes).
    fn drop(&mut self) {
        self.jobs = None;
        if self.completions.forked() {
            // The workers are the parent's: a forked child has none to join.
            std::mem::forget(std::mem::take(&mut self.workers));
            return;
        }
        let me = std::thread::current().id();
        for worker in self.workers.drain(..) {
            // A worker may drop the last handle (a buffer's owner holding it): it then
            // finishes the jobs left and stops on its own.
            if worker.thread().id() != me {
                let _ = worker.join();
            }
        }
    }
}
