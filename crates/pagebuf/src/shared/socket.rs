//! Passing a shared pool's memfd to another process over a Unix socket (`SCM_RIGHTS`),
//! the way a pool reaches a process that did not inherit it.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use super::pool::SharedPool;
use crate::error::{Error, Result};

/// The one byte that carries the fd: a stream socket delivers ancillary data only with
/// at least one byte of payload.
const TAG: u8 = b'P';

impl SharedPool {
    /// Sends this pool's memfd over `socket`, for the process at the other end to
    /// [`receive_from`](SharedPool::receive_from). The pool stays usable here.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket refuses the message (closed, not a Unix socket).
    pub fn send_to(&self, socket: &UnixStream) -> Result<()> {
        let fds = [self.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Error::InvalidRequest(
                "the control buffer for one fd is too small; this is a pagebuf bug".into(),
            ));
        }
        let sent = sendmsg(
            socket,
            &[IoSlice::new(&[TAG])],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| Error::io("sending a SharedPool's fd over a Unix socket", e.into()))?;
        if sent != 1 {
            return Err(Error::io(
                "sending a SharedPool's fd over a Unix socket",
                std::io::Error::new(std::io::ErrorKind::WriteZero, "nothing was sent"),
            ));
        }
        Ok(())
    }

    /// Receives a pool's memfd that the other end sent with
    /// [`send_to`](SharedPool::send_to), and [`attach`](SharedPool::attach)es to it
    /// (with all of `attach`'s checks). Blocks until a message arrives.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the socket closes first, or the message carries
    /// no fd; [`Error::InvalidArgument`] when the message is not a pool's (another
    /// first byte), or as for [`attach`](SharedPool::attach); [`Error::Io`] when the
    /// socket fails.
    pub fn receive_from(socket: &UnixStream) -> Result<SharedPool> {
        let mut byte = [0u8; 1];
        // Room for a few fds: a peer that sends more gets the extra ones closed (the
        // drain below drops them) instead of our message truncated.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let message = recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| Error::io("receiving a SharedPool's fd over a Unix socket", e.into()))?;
        let mut fd = None;
        for received in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = received {
                for owned in fds {
                    fd.get_or_insert(owned);
                }
            }
        }
        if message.bytes == 0 {
            return Err(Error::InvalidRequest(
                "the Unix socket closed before a SharedPool's fd arrived; the sender must \
                 call SharedPool::send_to"
                    .into(),
            ));
        }
        if byte[0] != TAG {
            return Err(Error::InvalidArgument(format!(
                "the message on the Unix socket starts with {:#04x}, not a SharedPool's; \
                 the sender must call SharedPool::send_to",
                byte[0]
            )));
        }
        let Some(fd) = fd else {
            let why = if message.flags.contains(ReturnFlags::CTRUNC) {
                "its fds were cut off (the receiver's fd limit?)"
            } else {
                "it carries no fd"
            };
            return Err(Error::InvalidRequest(format!(
                "a SharedPool message arrived but {why}; check ulimit -n on the receiving \
                 side"
            )));
        };
        SharedPool::attach(fd)
    }
}
