//! pagebuf's `SharedPool`: frames in one sealed memfd both processes map, handed over as
//! tokens through the pool's ring (no copy; a futex wake only when the receiver
//! sleeps). A pool's ring is shared by everyone attached, so each direction has a pool
//! of its own: `out` (parent to child) and `back` (child to parent). The child gets both
//! memfds over a Unix socket (`SCM_RIGHTS`), the socket being its stdin; after that the
//! socket carries nothing. Receivers block in `receive` (a futex), as a socket reader
//! sleeps in the kernel.
//!
//! - rtt64: `out` and `back` hold 64-byte frames; each side allocates, fills, hands over.
//! - frame3m: `out` holds `INFLIGHT + 2` frames of 3 MiB, written in place (the same
//!   bytes `fill_frame` writes for every contender); `back` carries the 8-byte
//!   acknowledgements.

use crate::stream::{check_reply, dup_std, fill_reply, finish};
use crate::watchdog::spawn_on_socket;
use crate::work::{check_frame, fill_frame, fill_msg, msg_seq, time_frames, time_rtts};
use crate::{Contender, Job, Measured, Res, Scenario, FRAME_LEN, INFLIGHT, MSG_LEN};
use pagebuf::{BufferMut, Framing, SharedPool};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn pb(what: &'static str) -> impl Fn(pagebuf::Error) -> String {
    move |e| format!("pagebuf {what}: {e}")
}

/// The two pools of a scenario: (out, back).
fn pools(scenario: Scenario) -> Res<(SharedPool, SharedPool)> {
    let (out, back) = match scenario {
        Scenario::Rtt64 => (Framing::new(MSG_LEN, 4), Framing::new(MSG_LEN, 4)),
        Scenario::Frame3m => (
            Framing::new(FRAME_LEN, INFLIGHT as usize + 2),
            Framing::new(8, INFLIGHT as usize + 2),
        ),
    };
    Ok((
        SharedPool::create(out).map_err(pb("creating the outbound pool"))?,
        SharedPool::create(back).map_err(pb("creating the return pool"))?,
    ))
}

/// A frame of `pool` holding `bytes` written in place by `fill`.
fn filled(pool: &SharedPool, len: usize, fill: impl FnOnce(&mut [u8])) -> Res<BufferMut> {
    let mut frame = pool.allocate().map_err(pb("allocating a frame"))?;
    frame.set_len(len).map_err(pb("sizing a frame"))?;
    fill(&mut frame);
    Ok(frame)
}

pub fn parent(job: Job, bound: Duration, what: String) -> Res<Measured> {
    let (out, back) = pools(job.scenario)?;
    let (mine, dog) = spawn_on_socket(Contender::Pagebuf, job, bound, what)?;
    let sent = out
        .send_to(&mine)
        .and_then(|()| back.send_to(&mine))
        .map_err(pb("sending the pools to the child"));
    if let Err(e) = sent {
        dog.abort();
        return Err(e);
    }
    finish(dog, parent_side(job, &out, &back))
}

fn parent_side(job: Job, out: &SharedPool, back: &SharedPool) -> Res<Measured> {
    match job.scenario {
        Scenario::Rtt64 => time_rtts(job, |seq| {
            let msg = filled(out, MSG_LEN, |b| {
                fill_msg(b.try_into().expect("64 bytes"), seq)
            })?;
            out.hand_over(msg).map_err(pb("handing a message over"))?;
            let reply = back.receive().map_err(pb("receiving the reply"))?;
            let reply: &[u8; MSG_LEN] = reply[..]
                .try_into()
                .map_err(|_| format!("a reply of {} bytes", reply.len()))?;
            check_reply(reply, seq)
        }),
        Scenario::Frame3m => time_frames(
            job,
            |seq| {
                let frame = filled(out, FRAME_LEN, |b| fill_frame(b, seq))?;
                out.hand_over(frame).map_err(pb("handing a frame over"))
            },
            || {
                let ack = back.receive().map_err(pb("receiving an acknowledgement"))?;
                let ack: [u8; 8] = ack[..]
                    .try_into()
                    .map_err(|_| format!("an acknowledgement of {} bytes", ack.len()))?;
                Ok(u64::from_le_bytes(ack))
            },
        ),
    }
}

pub fn child(job: Job) -> Res<()> {
    let socket = UnixStream::from(dup_std(std::io::stdin().as_fd(), "stdin")?);
    let out = SharedPool::receive_from(&socket).map_err(pb("child: receiving a pool"))?;
    let back = SharedPool::receive_from(&socket).map_err(pb("child: receiving a pool"))?;
    for seq in 0..job.total() {
        let got = out.receive().map_err(pb("child: receiving"))?;
        match job.scenario {
            Scenario::Rtt64 => {
                let msg: &[u8; MSG_LEN] = got[..]
                    .try_into()
                    .map_err(|_| format!("child: a message of {} bytes", got.len()))?;
                if msg_seq(msg) != seq || msg[8] != seq as u8 {
                    return Err(format!("child: message {seq} carried {}", msg_seq(msg)));
                }
                drop(got);
                let reply = filled(&back, MSG_LEN, |b| {
                    fill_reply(b.try_into().expect("64 bytes"), seq)
                })?;
                back.hand_over(reply).map_err(pb("child: replying"))?;
            }
            Scenario::Frame3m => {
                check_frame(&got, seq).map_err(|e| format!("child: {e}"))?;
                // Released before it is acknowledged, as every contender does.
                drop(got);
                let ack = filled(&back, 8, |b| b.copy_from_slice(&seq.to_le_bytes()))?;
                back.hand_over(ack).map_err(pb("child: acknowledging"))?;
            }
        }
    }
    Ok(())
}
