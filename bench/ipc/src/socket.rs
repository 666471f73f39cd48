//! The Unix stream socket contender: one socket pair, the bytes copied through it.

use crate::stream::{child_side, dup_std, finish, io, parent_side};
use crate::watchdog::spawn_on_socket;
use crate::{Contender, Job, Measured, Res};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The socket pair's child end becomes the child's stdin (one bidirectional fd), so no
/// fd needs to survive `exec` by other means.
pub fn parent(job: Job, bound: Duration, what: String) -> Res<Measured> {
    let (mine, dog) = spawn_on_socket(Contender::Socket, job, bound, what)?;
    let mut reader = match mine.try_clone() {
        Ok(r) => r,
        Err(e) => {
            dog.abort();
            return Err(format!("cloning the socket: {e}"));
        }
    };
    let mut writer = mine;
    finish(dog, parent_side(job, &mut reader, &mut writer))
}

pub fn child(job: Job) -> Res<()> {
    let sock = UnixStream::from(dup_std(std::io::stdin().as_fd(), "stdin")?);
    let mut w = sock.try_clone().map_err(io("cloning the socket"))?;
    let mut r = sock;
    child_side(job, &mut r, &mut w)
}
