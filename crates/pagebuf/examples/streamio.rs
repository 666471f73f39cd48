//! Recording throughput against the raw sequential writer, in one run
//! (`scripts/bench-stream.sh`).
//!
//! A synthetic 1080p60 stream (3 MiB frames, key frame every 60) with 48 kHz stereo
//! 16-bit audio (4096-byte packets, 1024 frames each) is recorded through
//! `SampleWriter` until `SIZE_MIB` of frames and packets are written; the raw writer
//! (`DirectWriter`, 1 MiB blocks, 4 in flight) writes the same bytes. Then both files
//! are read back: `SampleReader` (every checksum verified) against `DirectReader`.
//! Rounds alternate so drift of the disk hits both alike. Prints a Markdown table with
//! MiB/s, the ratio, and CPU seconds per GiB (user + system, from /proc/self/stat).
//!
//! `cargo run --release -p pagebuf --example streamio -- DIR [SIZE_MIB] [ROUNDS]`
//!
//! Both sides use the library's defaults (4 transfers in flight); to explore, set
//! `STREAMIO_WRITE_DEPTH`, `STREAMIO_READ_DEPTH` (the sample side's) or
//! `STREAMIO_WINDOW` (the sample reader's bytes per read).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use pagebuf::direct::DirectFile;
use pagebuf::direct::{DirectReader, DirectWriter, DEFAULT_DEPTH};
use pagebuf::stream::{
    ReaderOptions, SampleFlags, SampleReader, SampleWriter, StreamKind, WriterOptions,
    TICKS_PER_SECOND,
};

const FRAME: usize = 3 << 20;
const PACKET: usize = 4096;
const FPS: u64 = 60;
const PACKETS_PER_SECOND: f64 = 48_000.0 / 1024.0;

/// The media of `size` bytes: (is_video, time) in the order a capture delivers them.
fn schedule(size: u64) -> Vec<(bool, u64)> {
    let mut out = Vec::new();
    let (mut frames, mut packets, mut bytes) = (0u64, 0u64, 0u64);
    while bytes < size {
        let frame_time = frames * TICKS_PER_SECOND / FPS;
        let packet_time = (packets as f64 * TICKS_PER_SECOND as f64 / PACKETS_PER_SECOND) as u64;
        if packet_time <= frame_time {
            out.push((false, packet_time));
            packets += 1;
            bytes += PACKET as u64;
        } else {
            out.push((true, frame_time));
            frames += 1;
            bytes += FRAME as u64;
        }
    }
    out
}

/// A tuning knob from the environment, or its default (the library's).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |r| r.1);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

struct Run {
    bytes: u64,
    seconds: f64,
    cpu: f64,
}

fn timed(
    f: impl FnOnce() -> Result<u64, Box<dyn std::error::Error>>,
) -> Result<Run, Box<dyn std::error::Error>> {
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let bytes = f()?;
    Ok(Run {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    })
}

fn record(path: &Path, media: &[(bool, u64)]) -> Result<u64, Box<dyn std::error::Error>> {
    let options = WriterOptions::default().depth(knob("STREAMIO_WRITE_DEPTH", DEFAULT_DEPTH));
    let writer = SampleWriter::with_options(path, options)?;
    let video = writer.add_stream(StreamKind::Video)?;
    let audio = writer.add_stream(StreamKind::Audio)?;
    writer.begin_writing()?;
    for (i, &(is_video, time)) in media.iter().enumerate() {
        let (stream, size) = if is_video {
            (video, FRAME)
        } else {
            (audio, PACKET)
        };
        let mut sample = writer.allocate_sample(size)?;
        sample.whole_mut().fill(i as u8);
        sample.set_len(size)?;
        let flags = if is_video && (time * FPS / TICKS_PER_SECOND) % FPS == 0 {
            SampleFlags::KEY_FRAME
        } else {
            SampleFlags::empty()
        };
        writer.write_sample(stream, time, flags, sample)?;
    }
    Ok(writer.end_writing()?.file_bytes)
}

fn raw_write(path: &Path, media: &[(bool, u64)]) -> Result<u64, Box<dyn std::error::Error>> {
    let mut out = DirectWriter::new(DirectFile::create(path)?)?;
    let mut frame = vec![0u8; FRAME];
    for (i, &(is_video, _)) in media.iter().enumerate() {
        let size = if is_video { FRAME } else { PACKET };
        frame[..size].fill(i as u8);
        out.write_all(&frame[..size])?;
    }
    Ok(out.finish()?)
}

fn play(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let mut bytes = 0;
    let options = ReaderOptions::default()
        .depth(knob("STREAMIO_READ_DEPTH", DEFAULT_DEPTH))
        .window(knob("STREAMIO_WINDOW", 8 << 20));
    for sample in SampleReader::with_options(path, options)? {
        bytes += sample?.data.len() as u64;
    }
    Ok(bytes)
}

fn raw_read(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let mut input = DirectReader::new(DirectFile::open(path)?)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(bytes);
        }
        bytes += n as u64;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        return Err("usage: streamio DIR [SIZE_MIB] [ROUNDS]".into());
    };
    let size_mib: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let media = schedule(size_mib << 20);
    let (recorded, raw) = (dir.join("recorded.pbs"), dir.join("raw.bin"));

    let mut results: [Vec<Run>; 4] = Default::default();
    for _ in 0..rounds {
        results[0].push(timed(|| raw_write(&raw, &media))?);
        results[1].push(timed(|| record(&recorded, &media))?);
        results[2].push(timed(|| raw_read(&raw))?);
        results[3].push(timed(|| play(&recorded))?);
    }
    std::fs::remove_file(&recorded)?;
    std::fs::remove_file(&raw)?;

    let mib_s = |r: &Run| r.bytes as f64 / (1 << 20) as f64 / r.seconds;
    let cpu_gib = |r: &Run| r.cpu / (r.bytes as f64 / (1u64 << 30) as f64);
    let median = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let frames = media.iter().filter(|m| m.0).count();
    println!(
        "{} MiB of media ({frames} frames of 3 MiB, {} audio packets), {rounds} rounds, median:\n",
        size_mib,
        media.len() - frames
    );
    println!("| op | raw (DirectWriter/Reader) MiB/s | SampleWriter/Reader MiB/s | ratio | CPU s/GiB raw | CPU s/GiB stream |");
    println!("|---|---|---|---|---|---|");
    for (op, raw, stream) in [("write", 0, 1), ("read", 2, 3)] {
        let (r, s) = (
            median(&results[raw], &mib_s),
            median(&results[stream], &mib_s),
        );
        println!(
            "| {op} | {r:.0} | {s:.0} | {:.2}x | {:.2} | {:.2} |",
            s / r,
            median(&results[raw], &cpu_gib),
            median(&results[stream], &cpu_gib)
        );
    }
    println!("\nper round (MiB/s): raw write / record / raw read / play");
    let [raw_writes, records, raw_reads, plays] = &results;
    for (((a, b), c), d) in raw_writes.iter().zip(records).zip(raw_reads).zip(plays) {
        let [a, b, c, d] = [a, b, c, d].map(&mib_s);
        println!("{a:.0} / {b:.0} / {c:.0} / {d:.0}");
    }
    Ok(())
}
