//! What the copying contenders (socket.rs, pipe.rs) share: both copy every byte through
//! the kernel (`write_all` in one process, `read_exact` in the other), with unbuffered
//! file descriptors on both sides so no user-space buffer adds a copy.

use crate::watchdog::Watchdog;
use crate::work::{check_frame, fill_frame, fill_msg, msg_seq, time_frames, time_rtts};
use crate::{Job, Measured, Res, Scenario, FRAME_LEN, MSG_LEN};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

pub fn finish(dog: Watchdog, res: Res<Measured>) -> Res<Measured> {
    match res {
        Ok(m) => dog.finish().map(|()| m),
        Err(e) => {
            dog.abort();
            Err(e)
        }
    }
}

pub fn parent_side(job: Job, r: &mut impl Read, w: &mut impl Write) -> Res<Measured> {
    match job.scenario {
        Scenario::Rtt64 => {
            let mut out = [0u8; MSG_LEN];
            let mut back = [0u8; MSG_LEN];
            time_rtts(job, |seq| {
                fill_msg(&mut out, seq);
                w.write_all(&out).map_err(io("sending a message"))?;
                r.read_exact(&mut back).map_err(io("receiving the reply"))?;
                check_reply(&back, seq)
            })
        }
        Scenario::Frame3m => {
            let mut frame = vec![0u8; FRAME_LEN];
            // The acknowledgements come back on the reader; sending and acknowledging
            // alternate in this one thread, and the at most INFLIGHT 8-byte
            // acknowledgements always fit in the kernel's buffer, so neither side can
            // block the other for ever.
            time_frames(
                job,
                |seq| {
                    fill_frame(&mut frame, seq);
                    w.write_all(&frame).map_err(io("sending a frame"))
                },
                || {
                    let mut a = [0u8; 8];
                    r.read_exact(&mut a)
                        .map_err(io("receiving an acknowledgement"))?;
                    Ok(u64::from_le_bytes(a))
                },
            )
        }
    }
}

pub fn check_reply(back: &[u8; MSG_LEN], seq: u64) -> Res<()> {
    let got = msg_seq(back);
    if got != seq || back[8] != !(seq as u8) {
        return Err(format!("reply to {seq} carried {got}"));
    }
    Ok(())
}

/// The child's reply: the same sequence number, its own byte pattern.
pub fn fill_reply(msg: &mut [u8; MSG_LEN], seq: u64) {
    fill_msg(msg, seq);
    msg[8..].fill(!(seq as u8));
}

pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// A duplicate of one of our standard fds as a plain `File`: std's `Stdin`/`Stdout`
/// buffer and lock, which would add a copy and work the other contenders do not do.
pub fn dup_std(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> Res<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| format!("duplicating {name}: {e}"))
}

pub fn child_side(job: Job, r: &mut impl Read, w: &mut impl Write) -> Res<()> {
    match job.scenario {
        Scenario::Rtt64 => {
            let mut msg = [0u8; MSG_LEN];
            let mut reply = [0u8; MSG_LEN];
            for seq in 0..job.total() {
                r.read_exact(&mut msg).map_err(io("child: receiving"))?;
                let got = msg_seq(&msg);
                if got != seq || msg[8] != seq as u8 {
                    return Err(format!("child: message {seq} carried {got}"));
                }
                fill_reply(&mut reply, seq);
                w.write_all(&reply).map_err(io("child: replying"))?;
            }
        }
        Scenario::Frame3m => {
            let mut frame = vec![0u8; FRAME_LEN];
            for seq in 0..job.total() {
                r.read_exact(&mut frame)
                    .map_err(io("child: receiving a frame"))?;
                check_frame(&frame, seq).map_err(|e| format!("child: {e}"))?;
                w.write_all(&seq.to_le_bytes())
                    .map_err(io("child: acknowledging"))?;
            }
        }
    }
    Ok(())
}
