//! The pipe contender: two pipes (the child's stdin and stdout), the bytes copied through them.

use crate::stream::{child_side, dup_std, finish, parent_side};
use crate::watchdog::{spawn, Watchdog};
use crate::{Contender, Job, Measured, Res};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Stdio;
use std::time::Duration;

/// The child's stdin and stdout are the two pipes.
pub fn parent(job: Job, bound: Duration, what: String) -> Res<Measured> {
    let mut child = spawn(Contender::Pipe, job, "-", Stdio::piped(), Stdio::piped())?;
    let (Some(mut writer), Some(mut reader)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err("the child's pipes were not set up".into());
    };
    let dog = Watchdog::start(child, bound, what);
    // A pipe holds 64 KiB by default, which splits a 3 MiB frame into 48 hand-overs
    // between the processes; grow both pipes to the largest size an unprivileged process
    // may ask for (/proc/sys/fs/pipe-max-size, 1 MiB by default), the pipe at its best.
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_int>().ok())
        .unwrap_or(1 << 20);
    for fd in [writer.as_raw_fd(), reader.as_raw_fd()] {
        // SAFETY: fcntl on a pipe fd we own; F_SETPIPE_SZ takes an int and touches no memory.
        if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, max) } < 0 {
            let err = std::io::Error::last_os_error();
            drop(writer);
            dog.abort();
            return Err(format!("growing a pipe to {max} bytes: {err}"));
        }
    }
    let res = parent_side(job, &mut reader, &mut writer);
    // Close our end so a child still reading sees end of file rather than waiting.
    drop(writer);
    finish(dog, res)
}

pub fn child(job: Job) -> Res<()> {
    let mut r = File::from(dup_std(std::io::stdin().as_fd(), "stdin")?);
    let mut w = File::from(dup_std(std::io::stdout().as_fd(), "stdout")?);
    child_side(job, &mut r, &mut w)
}
