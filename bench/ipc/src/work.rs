//! The work every contender does per operation, and the timing loops around it.

use crate::{Job, Measured, Res, FRAME_LEN, INFLIGHT, MSG_LEN, PAGE};
use std::time::Instant;

/// Fills a 64-byte message: the sequence number, then a byte pattern.
pub fn fill_msg(msg: &mut [u8; MSG_LEN], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg[8..].fill(seq as u8);
}

pub fn msg_seq(msg: &[u8; MSG_LEN]) -> u64 {
    u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"))
}

/// Writes the frame as a producer would touch it: the sequence number, then one byte in
/// every page after the first.
pub fn fill_frame(frame: &mut [u8], seq: u64) {
    frame[..8].copy_from_slice(&seq.to_le_bytes());
    for off in (PAGE..frame.len()).step_by(PAGE) {
        frame[off] = seq as u8;
    }
}

/// Reads the frame as a consumer would: checks the sequence number, reads one byte per page.
pub fn check_frame(frame: &[u8], seq: u64) -> Res<()> {
    if frame.len() != FRAME_LEN {
        return Err(format!(
            "frame {seq}: {} bytes, not {FRAME_LEN}",
            frame.len()
        ));
    }
    let got = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
    if got != seq {
        return Err(format!(
            "frame {seq} arrived carrying sequence number {got}"
        ));
    }
    let mut sum = 0u64;
    for off in (PAGE..frame.len()).step_by(PAGE) {
        sum = sum.wrapping_add(u64::from(frame[off]));
    }
    let want = (FRAME_LEN / PAGE - 1) as u64 * u64::from(seq as u8);
    if std::hint::black_box(sum) != want {
        return Err(format!("frame {seq}: page bytes sum to {sum}, not {want}"));
    }
    Ok(())
}

/// Times `count` calls of `op` after `warmup` untimed ones; each round trip individually.
pub fn time_rtts(job: Job, mut op: impl FnMut(u64) -> Res<()>) -> Res<Measured> {
    for seq in 0..job.warmup {
        op(seq)?;
    }
    let mut each_ns = Vec::with_capacity(job.count as usize);
    let start = Instant::now();
    for seq in job.warmup..job.total() {
        let t = Instant::now();
        op(seq)?;
        each_ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Measured::Rtt {
        total: start.elapsed(),
        each_ns,
    })
}

/// The producer's loop for frames `from..to`: before sending frame k it waits for the
/// acknowledgement of frame k - INFLIGHT; at the end it waits for all of them.
pub fn produce_frames(
    from: u64,
    to: u64,
    mut send: impl FnMut(u64) -> Res<()>,
    mut ack: impl FnMut() -> Res<u64>,
) -> Res<()> {
    let mut acked = from;
    let mut expect_ack = |acked: &mut u64| -> Res<()> {
        let a = ack()?;
        if a != *acked {
            return Err(format!("acknowledgement {a} where {acked} was due"));
        }
        *acked += 1;
        Ok(())
    };
    for seq in from..to {
        while seq - acked >= INFLIGHT {
            expect_ack(&mut acked)?;
        }
        send(seq)?;
    }
    while acked < to {
        expect_ack(&mut acked)?;
    }
    Ok(())
}

/// Warm-up frames (drained), then the timed ones.
pub fn time_frames(
    job: Job,
    mut send: impl FnMut(u64) -> Res<()>,
    mut ack: impl FnMut() -> Res<u64>,
) -> Res<Measured> {
    produce_frames(0, job.warmup, &mut send, &mut ack)?;
    let start = Instant::now();
    produce_frames(job.warmup, job.total(), &mut send, &mut ack)?;
    Ok(Measured::Frames {
        total: start.elapsed(),
    })
}
