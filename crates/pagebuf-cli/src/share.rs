//! What `capture --share` and `record --from` say to each other over their Unix socket.
//!
//! ```text
//! capture                                   record
//!   bind SOCKET, accept          <──────      connect (retried while nobody listens)
//!   SharedPool::send_to          ──────>      SharedPool::receive_from (attach, checked)
//!   "pagebuf-share 1 W H FPS N\n" ──────>      the stream: N frames of W×H I420 at FPS
//!   N × hand_over (the pool's ring, no socket traffic)
//!                                <──────      "done N\n" once the file is finished
//! ```
//!
//! Frame i of the stream is synthetic video frame i (`synthetic::fill`), its bytes
//! starting [`SAMPLE_HEADROOM`] into the frame, so that the recorder can write it to its
//! file straight from the shared pages.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use pagebuf::stream::SAMPLE_HEADROOM;

use crate::synthetic::VideoFormat;

/// The first word of the description line, and the only version.
const MAGIC: &str = "pagebuf-share";
const VERSION: u32 = 1;
/// A description line is never longer than this.
const MAX_LINE: usize = 256;
/// Frames are sized to a multiple of this: room for the record after the headroom on
/// devices with units up to 64 KiB.
const FRAME_ROUND: usize = 64 << 10;
/// The most frames one capture may announce (about 9 hours at 60 fps).
pub const MAX_FRAMES: u64 = 1 << 21;
/// How long either side waits on the pool before it looks whether the other is gone.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What a capture sends: its video format and how many frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    pub video: VideoFormat,
    pub frames: u64,
}

impl Description {
    /// The size of the shared pool's frames for this video.
    pub fn frame_size(&self) -> usize {
        (SAMPLE_HEADROOM + self.video.frame_bytes()).next_multiple_of(FRAME_ROUND)
    }

    pub fn send(&self, socket: &mut UnixStream) -> std::io::Result<()> {
        let v = self.video;
        let line = format!(
            "{MAGIC} {VERSION} {} {} {} {}\n",
            v.width, v.height, v.fps, self.frames
        );
        socket.write_all(line.as_bytes())
    }

    /// Reads and checks the line a capture sent.
    pub fn receive(socket: &mut UnixStream) -> Result<Description, String> {
        let line = read_line(socket)?;
        let bad =
            || format!("the capture sent `{line}`, not a pagebuf-share {VERSION} description");
        let words: Vec<&str> = line.split(' ').collect();
        let [magic, version, width, height, fps, frames] = words[..] else {
            return Err(bad());
        };
        if magic != MAGIC || version != VERSION.to_string() {
            return Err(bad());
        }
        let video: VideoFormat = format!("{width}x{height}@{fps}").parse()?;
        let frames: u64 = frames.parse().map_err(|_| bad())?;
        if !(1..=MAX_FRAMES).contains(&frames) {
            return Err(format!(
                "the capture announces {frames} frames; 1 to {MAX_FRAMES} are accepted"
            ));
        }
        Ok(Description { video, frames })
    }
}

/// Whether the other end of `socket` has closed (its process exited or died): the pool
/// alone would never say so to a side waiting for a frame.
pub fn peer_gone(socket: &UnixStream) -> bool {
    use rustix::net::{recv, RecvFlags};
    let mut byte = [0u8; 1];
    match recv(socket, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) => false,
        Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
    }
}

/// One line (without its `\n`) from `socket`, read a byte at a time so nothing after
/// it is consumed. An empty string at the end of the stream.
pub fn read_line(socket: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match socket.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_LINE => line.push(byte[0]),
            Ok(_) => return Err(format!("a line longer than {MAX_LINE} bytes on the socket")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the socket: {e}")),
        }
    }
    String::from_utf8(line).map_err(|_| "a line that is not UTF-8 on the socket".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_round_trips_and_garbage_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let sent = Description {
            video: "1920x1080@60".parse().unwrap(),
            frames: 300,
        };
        sent.send(&mut a).unwrap();
        assert_eq!(Description::receive(&mut b).unwrap(), sent);
        assert_eq!(sent.frame_size() % FRAME_ROUND, 0);
        assert!(sent.frame_size() >= SAMPLE_HEADROOM + 1920 * 1080 * 3 / 2);
        for garbage in [
            "hello\n",
            "pagebuf-share 2 1920 1080 60 300\n",
            "pagebuf-share 1 1920 1080 60 0\n",
            "pagebuf-share 1 1920 1080 60 99999999999\n",
            "pagebuf-share 1 8 8 60 10\n",
            "pagebuf-share 1 1920 1080 60\n",
        ] {
            a.write_all(garbage.as_bytes()).unwrap();
            assert!(Description::receive(&mut b).is_err(), "{garbage}");
        }
        a.write_all(&[b'x'; 300]).unwrap();
        assert!(Description::receive(&mut b).unwrap_err().contains("longer"));
    }
}
