//! The synthetic audio + video stream `record` writes and `play --verify` checks: every
//! byte follows from the stream kind and the sample's index, so a player can tell a
//! faithful recording from a damaged or foreign one without a reference file.
//!
//! A sample starts with a 16-byte tag (`PBSY`, the kind, the index); the rest repeats a
//! 4 KiB tile generated from (kind, index), so filling and checking run at memory speed.
//!
//! The streams say what they would hold if they were real, in their stream formats:
//! video as raw YUV 4:2:0 (`I420`) of the frame size and rate, audio as 16-bit
//! little-endian PCM (`s16l`) at 48 kHz in stereo, with its `WAVEFORMATEX` as codec data.

use std::fmt;
use std::str::FromStr;

use pagebuf::stream::{StreamFormat, StreamKind, TICKS_PER_SECOND};

/// Audio: 48 kHz, stereo, 16-bit, 1024 frames per packet.
pub const AUDIO_RATE: u64 = 48_000;
/// Audio channels.
pub const AUDIO_CHANNELS: u16 = 2;
/// Bytes per sample of one channel.
const AUDIO_SAMPLE_BYTES: u16 = 2;
/// Frames per audio packet.
pub const AUDIO_FRAMES: u64 = 1024;
/// Bytes per audio packet.
pub const AUDIO_PACKET: usize =
    AUDIO_FRAMES as usize * (AUDIO_CHANNELS * AUDIO_SAMPLE_BYTES) as usize;
/// The codec of the video frames: planar YUV 4:2:0, uncompressed.
pub const VIDEO_CODEC: &[u8; 4] = b"I420";
/// The codec of the audio packets: signed 16-bit little-endian PCM, interleaved.
pub const AUDIO_CODEC: &[u8; 4] = b"s16l";
const TILE: usize = 4096;
const TAG: usize = 16;

/// A video format, written `WIDTHxHEIGHT@FPS`; frames are YUV 4:2:0 (1.5 bytes/pixel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl VideoFormat {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3 / 2
    }
}

impl FromStr for VideoFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<VideoFormat, String> {
        let bad =
            || format!("`{text}` is not a video format; write WIDTHxHEIGHT@FPS, e.g. 1920x1080@60");
        let (size, fps) = text.split_once('@').ok_or_else(bad)?;
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let format = VideoFormat {
            width: w.parse().map_err(|_| bad())?,
            height: h.parse().map_err(|_| bad())?,
            fps: fps.parse().map_err(|_| bad())?,
        };
        let sane = (16..=16384).contains(&format.width)
            && (16..=16384).contains(&format.height)
            && (1..=1000).contains(&format.fps);
        sane.then_some(format).ok_or_else(|| {
            format!("`{text}`: width and height must be 16..=16384 and fps 1..=1000")
        })
    }
}

impl fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.fps)
    }
}

/// The stream format of the video: `I420` frames of `format`'s size, at its rate.
pub fn video_stream_format(format: &VideoFormat) -> pagebuf::Result<StreamFormat> {
    StreamFormat::video(VIDEO_CODEC, format.width, format.height, (format.fps, 1))
}

/// The stream format of the audio: `s16l` at 48 kHz in stereo, carrying the
/// `WAVEFORMATEX` a Windows Media stream of it would carry (`WAVE_FORMAT_PCM`).
pub fn audio_stream_format() -> pagebuf::Result<StreamFormat> {
    let block_align = AUDIO_CHANNELS * AUDIO_SAMPLE_BYTES;
    let rate = AUDIO_RATE as u32;
    let mut wave_format = Vec::with_capacity(18);
    wave_format.extend_from_slice(&1u16.to_le_bytes()); // wFormatTag: WAVE_FORMAT_PCM
    wave_format.extend_from_slice(&AUDIO_CHANNELS.to_le_bytes());
    wave_format.extend_from_slice(&rate.to_le_bytes());
    wave_format.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    wave_format.extend_from_slice(&block_align.to_le_bytes());
    wave_format.extend_from_slice(&(AUDIO_SAMPLE_BYTES * 8).to_le_bytes());
    wave_format.extend_from_slice(&0u16.to_le_bytes()); // cbSize: nothing follows
    Ok(StreamFormat::audio(AUDIO_CODEC, rate, AUDIO_CHANNELS)?.with_codec_data(wave_format))
}

/// The video format `record` wrote, read back from a stream's format; `None` for
/// another codec or a stream without a format.
pub fn video_format_of(format: &StreamFormat) -> Option<VideoFormat> {
    match format.media() {
        pagebuf::stream::MediaFormat::Video {
            width,
            height,
            frame_rate: (fps, 1),
        } if format.codec() == *VIDEO_CODEC => Some(VideoFormat { width, height, fps }),
        _ => None,
    }
}

/// Time of video frame `i`, 100 ns units.
pub fn frame_time(format: &VideoFormat, i: u64) -> u64 {
    i * TICKS_PER_SECOND / u64::from(format.fps)
}

/// Time of audio packet `i`, 100 ns units.
pub fn packet_time(i: u64) -> u64 {
    i * AUDIO_FRAMES * TICKS_PER_SECOND / AUDIO_RATE
}

/// The next sample of an interleaved capture: whichever stream's next sample is due
/// first (audio first on a tie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Video { index: u64, time: u64 },
    Audio { index: u64, time: u64 },
}

/// Walks the capture in time order.
#[derive(Debug, Clone)]
pub struct Capture {
    video: Option<VideoFormat>,
    audio: bool,
    frames: u64,
    packets: u64,
}

impl Capture {
    pub fn new(video: Option<VideoFormat>, audio: bool) -> Capture {
        Capture {
            video,
            audio,
            frames: 0,
            packets: 0,
        }
    }
}

impl Iterator for Capture {
    type Item = Next;
    fn next(&mut self) -> Option<Next> {
        let video = self.video.map(|f| frame_time(&f, self.frames));
        let audio = self.audio.then(|| packet_time(self.packets));
        match (video, audio) {
            (Some(v), Some(a)) if a <= v => {
                self.packets += 1;
                Some(Next::Audio {
                    index: self.packets - 1,
                    time: a,
                })
            }
            (Some(v), _) => {
                self.frames += 1;
                Some(Next::Video {
                    index: self.frames - 1,
                    time: v,
                })
            }
            (None, Some(a)) => {
                self.packets += 1;
                Some(Next::Audio {
                    index: self.packets - 1,
                    time: a,
                })
            }
            (None, None) => None,
        }
    }
}

fn tile(kind: StreamKind, index: u64) -> [u8; TILE] {
    let mut state = (index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(code(kind))) | 1;
    let mut out = [0u8; TILE];
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    out
}

fn code(kind: StreamKind) -> u8 {
    match kind {
        StreamKind::Audio => 1,
        StreamKind::Video => 2,
        _ => 3,
    }
}

fn tag(kind: StreamKind, index: u64) -> [u8; TAG] {
    let mut tag = [0u8; TAG];
    tag[..4].copy_from_slice(b"PBSY");
    tag[4] = code(kind);
    tag[8..].copy_from_slice(&index.to_le_bytes());
    tag
}

/// Fills `out` with sample `index` of a stream of `kind`.
pub fn fill(kind: StreamKind, index: u64, out: &mut [u8]) {
    let tag = tag(kind, index);
    let head = out.len().min(TAG);
    out[..head].copy_from_slice(&tag[..head]);
    if out.len() > TAG {
        let tile = tile(kind, index);
        for chunk in out[TAG..].chunks_mut(TILE) {
            chunk.copy_from_slice(&tile[..chunk.len()]);
        }
    }
}

/// Whether `data` is exactly sample `index` of a stream of `kind`, `len` bytes long.
pub fn matches(kind: StreamKind, index: u64, len: usize, data: &[u8]) -> bool {
    if data.len() != len {
        return false;
    }
    let tag = tag(kind, index);
    let head = len.min(TAG);
    if data[..head] != tag[..head] {
        return false;
    }
    let tile = tile(kind, index);
    data[head..]
        .chunks(TILE)
        .all(|chunk| chunk == &tile[..chunk.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_matches_only_itself() {
        let mut frame = vec![0u8; 10_000];
        fill(StreamKind::Video, 7, &mut frame);
        assert!(matches(StreamKind::Video, 7, 10_000, &frame));
        assert!(!matches(StreamKind::Video, 8, 10_000, &frame));
        assert!(!matches(StreamKind::Audio, 7, 10_000, &frame));
        assert!(!matches(StreamKind::Video, 7, 10_000, &frame[..9_999]));
        frame[9_000] ^= 1;
        assert!(!matches(StreamKind::Video, 7, 10_000, &frame));
    }

    #[test]
    fn the_capture_interleaves_in_time_order() {
        let format: VideoFormat = "1920x1080@60".parse().unwrap();
        assert_eq!(format.frame_bytes(), 3_110_400);
        let times: Vec<u64> = Capture::new(Some(format), true)
            .take(500)
            .map(|n| match n {
                Next::Video { time, .. } | Next::Audio { time, .. } => time,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!("1920x1080".parse::<VideoFormat>().is_err());
        assert!("0x0@0".parse::<VideoFormat>().is_err());
    }

    #[test]
    fn the_stream_formats_say_what_the_samples_hold() {
        let format: VideoFormat = "640x360@30".parse().unwrap();
        let video = video_stream_format(&format).unwrap();
        assert_eq!(video.to_string(), "I420 640x360 @ 30 fps");
        assert_eq!(video_format_of(&video), Some(format));
        let audio = audio_stream_format().unwrap();
        assert_eq!(
            audio.to_string(),
            "s16l 48000 Hz, 2 channels, 18 bytes of codec data"
        );
        assert_eq!(video_format_of(&audio), None);
        // nBlockAlign: one frame of every channel, as AUDIO_PACKET counts them.
        let block_align = u16::from_le_bytes([audio.codec_data()[12], audio.codec_data()[13]]);
        assert_eq!(
            AUDIO_PACKET,
            AUDIO_FRAMES as usize * usize::from(block_align)
        );
    }
}
