//! Does a recorder's audio stall behind its video and its flushes?
//! (`scripts/bench-recorder.sh`)
//!
//! **Stalls.** One `SampleWriter`, three threads, for `SECONDS`:
//! * video: 3 MiB samples at 30 fps, or as fast as the disk takes them when it cannot
//!   keep up (a late frame goes at once: the schedule is absolute);
//! * audio: a 4 KiB sample every 10 ms (absolute schedule: after a stall, the samples
//!   due meanwhile go at once, as a capture's buffered packets would);
//! * flush: `flush()` every second.
//!
//! Each audio sample's stall is the time of its `allocate_sample` + `write_sample`,
//! the two calls a capture thread makes; the target is under 10 ms at p99 and max.
//! Video and audio share the writer's memory budget (64 MiB unless
//! `RECSTALL_BUDGET_MIB` says otherwise), so a video thread that fills it makes the
//! audio wait in `allocate_sample`: that is part of what is measured.
//!
//! **Throughput.** The recorder writing `SIZE_MIB` of 3 MiB video samples as fast as
//! it can (one thread, `end_writing` included), against a raw `DirectWriter` writing
//! the same bytes in 3 MiB blocks of its own (`allocate_block` + `write_buffer`: no
//! copy either, `finish` included; `RECSTALL_RAW_BLOCK_KIB` changes the block size);
//! both fill every byte once. Target: the recorder at 0.9x the raw writer or better.
//!
//! Rounds alternate the order of the two writers; each prints a line, then the medians.
//!
//! `cargo run --release -p pagebuf --example recstall -- DIR [SECONDS=10] [ROUNDS=3] [SIZE_MIB=1024]`

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pagebuf::direct::{DirectFile, DirectWriter, DirectWriterOptions};
use pagebuf::stream::{SampleFlags, SampleWriter, StreamKind, WriterOptions, TICKS_PER_SECOND};

type Error = Box<dyn std::error::Error + Send + Sync>;

const FRAME: usize = 3 << 20;
const FPS: u32 = 30;
const PACKET: usize = 4096;
const PACKET_EVERY: Duration = Duration::from_millis(10);
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The stall the design targets, at p99 and max.
const TARGET: Duration = Duration::from_millis(10);

fn options() -> WriterOptions {
    let mut options = WriterOptions::default()
        // Timestamps come from the wall clock; a video thread slowed by the disk must
        // not turn into LateOperation for the audio.
        .sync_tolerance(Duration::from_secs(60));
    if let Some(mib) = std::env::var("RECSTALL_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options = options.memory_budget(mib << 20);
    }
    options
}

fn ticks(since: Instant) -> u64 {
    (since.elapsed().as_nanos() / 100) as u64
}

/// `q`-quantile of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    v.get(((v.len().saturating_sub(1)) as f64 * q) as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Stalls {
    /// `allocate_sample` + `write_sample` of each audio sample, sorted.
    audio: Vec<Duration>,
    /// The longest `allocate_sample` and `write_sample` alone.
    worst_allocate: Duration,
    worst_write: Duration,
    /// Each `flush()`, sorted.
    flushes: Vec<Duration>,
    frames: u64,
    seconds: f64,
    /// Audio samples the last flush's watermark says are durable.
    durable_audio: u64,
}

fn stalls(path: &Path, seconds: f64) -> Result<Stalls, Error> {
    let writer = SampleWriter::with_options(path, options())?;
    let video = writer.add_stream(StreamKind::Video)?;
    let audio = writer.add_stream(StreamKind::Audio)?;
    writer.begin_writing()?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let sleep_until = |when: Instant| {
        let now = Instant::now();
        if when > now {
            std::thread::sleep(when - now);
        }
    };

    let (frames, (audio_stalls, worst_allocate, worst_write), (flushes, durable_audio)) =
        std::thread::scope(|scope| {
            let (writer, stop) = (&writer, &stop);
            let video_thread = scope.spawn(move || -> Result<u64, Error> {
                let mut frames = 0u64;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    sleep_until(start + Duration::from_secs(1) * frames as u32 / FPS);
                    let mut sample = writer.allocate_sample(FRAME)?;
                    sample.whole_mut().fill(frames as u8);
                    sample.set_len(FRAME)?;
                    let flags = if frames % u64::from(FPS) == 0 {
                        SampleFlags::KEY_FRAME
                    } else {
                        SampleFlags::empty()
                    };
                    writer.write_sample(video, ticks(start), flags, sample)?;
                    frames += 1;
                }
                Ok(frames)
            });
            let audio_thread = scope.spawn(move || -> Result<_, Error> {
                let mut stalls = Vec::with_capacity((seconds * 100.0) as usize + 16);
                let (mut worst_allocate, mut worst_write) = (Duration::ZERO, Duration::ZERO);
                let mut due = start;
                while due < until && !stop.load(Ordering::Relaxed) {
                    sleep_until(due);
                    let t0 = Instant::now();
                    let mut sample = writer.allocate_sample(PACKET)?;
                    let t1 = Instant::now();
                    sample.whole_mut().fill(stalls.len() as u8);
                    sample.set_len(PACKET)?;
                    let t2 = Instant::now();
                    writer.write_sample(audio, ticks(start), SampleFlags::empty(), sample)?;
                    let t3 = Instant::now();
                    worst_allocate = worst_allocate.max(t1 - t0);
                    worst_write = worst_write.max(t3 - t2);
                    stalls.push((t1 - t0) + (t3 - t2));
                    due += PACKET_EVERY;
                }
                Ok((stalls, worst_allocate, worst_write))
            });
            let flush_thread = scope.spawn(move || -> Result<_, Error> {
                let mut flushes = Vec::new();
                let mut durable = 0;
                let mut due = start + FLUSH_EVERY;
                while due <= until && !stop.load(Ordering::Relaxed) {
                    sleep_until(due);
                    let t0 = Instant::now();
                    let mark = writer.flush()?;
                    flushes.push(t0.elapsed());
                    durable = mark.stream(audio).map_or(0, |m| m.samples);
                    due += FLUSH_EVERY;
                }
                Ok((flushes, durable))
            });
            let v = joined(video_thread, stop);
            let a = joined(audio_thread, stop);
            let f = joined(flush_thread, stop);
            Ok::<_, Error>((v?, a?, f?))
        })?;
    let seconds = start.elapsed().as_secs_f64();
    writer.end_writing()?;
    std::fs::remove_file(path)?;
    let (mut audio, mut flushes) = (audio_stalls, flushes);
    audio.sort_unstable();
    flushes.sort_unstable();
    Ok(Stalls {
        audio,
        worst_allocate,
        worst_write,
        flushes,
        frames,
        seconds,
        durable_audio,
    })
}

/// A thread's outcome; its failure stops the others rather than leave them to run out
/// the clock (or wait forever on a writer that failed).
fn joined<T>(
    handle: std::thread::ScopedJoinHandle<'_, Result<T, Error>>,
    stop: &AtomicBool,
) -> Result<T, Error> {
    let outcome = handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    if outcome.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    outcome
}

/// MiB/s of the recorder writing `frames` video samples as fast as it can.
fn record_fast(path: &Path, frames: u64) -> Result<f64, Error> {
    let started = Instant::now();
    let writer = SampleWriter::with_options(path, options())?;
    let video = writer.add_stream(StreamKind::Video)?;
    writer.begin_writing()?;
    for i in 0..frames {
        let mut sample = writer.allocate_sample(FRAME)?;
        sample.whole_mut().fill(i as u8);
        sample.set_len(FRAME)?;
        let time = i * TICKS_PER_SECOND / u64::from(FPS);
        let flags = if i % u64::from(FPS) == 0 {
            SampleFlags::KEY_FRAME
        } else {
            SampleFlags::empty()
        };
        writer.write_sample(video, time, flags, sample)?;
    }
    writer.end_writing()?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok((frames * FRAME as u64) as f64 / f64::from(1 << 20) / secs)
}

/// MiB/s of a raw `DirectWriter` writing `frames` frames' bytes in blocks of its own,
/// filled in place: 3 MiB (one frame a write, as the recorder writes them) unless
/// `RECSTALL_RAW_BLOCK_KIB` says otherwise.
fn raw_fast(path: &Path, frames: u64) -> Result<f64, Error> {
    let block_size = std::env::var("RECSTALL_RAW_BLOCK_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(FRAME, |kib| kib << 10);
    let started = Instant::now();
    let options = DirectWriterOptions::default().block_size(block_size);
    let mut out = DirectWriter::with_options(DirectFile::create(path)?, options)?;
    let total = frames * FRAME as u64;
    let mut written = 0u64;
    while written < total {
        let len = block_size.min((total - written) as usize);
        let mut block = out.allocate_block()?;
        block.whole_mut()[..len].fill((written / FRAME as u64) as u8);
        block.set_len(len)?;
        out.write_buffer(block.freeze())?;
        written += len as u64;
    }
    out.finish()?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok((frames * FRAME as u64) as f64 / f64::from(1 << 20) / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        return Err("usage: recstall DIR [SECONDS=10] [ROUNDS=3] [SIZE_MIB=1024]".into());
    };
    let seconds: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let size_mib: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let frames = (size_mib << 20).div_ceil(FRAME as u64).max(1);
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let (recorded, raw) = (dir.join("recstall.pbs"), dir.join("recstall.raw"));

    println!(
        "stalls: video 3 MiB @ {FPS} fps (or as fast as the disk allows), audio 4 KiB every \
         10 ms, flush() every 1 s, {seconds} s; throughput: {frames} frames of 3 MiB"
    );
    println!(
        "round | audio stall p50 / p99 / max ms (max allocate, max write) | flush p50 / max \
         ms (n) | video fps | record / raw MiB/s = ratio"
    );
    let mut rows: Vec<[f64; 8]> = Vec::new();
    for round in 1..=rounds {
        let s = stalls(&recorded, seconds)?;
        let (rec, raw_rate) = if round % 2 == 1 {
            let r = raw_fast(&raw, frames)?;
            (record_fast(&recorded, frames)?, r)
        } else {
            let rec = record_fast(&recorded, frames)?;
            (rec, raw_fast(&raw, frames)?)
        };
        let fps = s.frames as f64 / s.seconds;
        let (p50, p99, max) = (
            quantile(&s.audio, 0.5),
            quantile(&s.audio, 0.99),
            quantile(&s.audio, 1.0),
        );
        let (f50, fmax) = (quantile(&s.flushes, 0.5), quantile(&s.flushes, 1.0));
        println!(
            "{round} | {:.2} / {:.2} / {:.2} ({:.2}, {:.2}) | {:.1} / {:.1} ({}) | {fps:.1} | \
             {rec:.0} / {raw_rate:.0} = {:.3}x   [{} audio samples, {} durable at the last flush]",
            ms(p50),
            ms(p99),
            ms(max),
            ms(s.worst_allocate),
            ms(s.worst_write),
            ms(f50),
            ms(fmax),
            s.flushes.len(),
            rec / raw_rate,
            s.audio.len(),
            s.durable_audio,
        );
        rows.push([
            ms(p50),
            ms(p99),
            ms(max),
            ms(f50),
            ms(fmax),
            fps,
            rec,
            raw_rate,
        ]);
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let ratios = median(rows.iter().map(|r| r[6] / r[7]).collect());
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("\nmedians of {rounds} round(s):\n");
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!(
        "| audio allocate_sample + write_sample, p50 | {:.2} ms | |",
        col(0)
    );
    println!(
        "| audio allocate_sample + write_sample, p99 | {:.2} ms | < {} ms: {} |",
        col(1),
        TARGET.as_millis(),
        verdict(col(1) < ms(TARGET))
    );
    println!(
        "| audio allocate_sample + write_sample, max | {:.2} ms | < {} ms: {} |",
        col(2),
        TARGET.as_millis(),
        verdict(col(2) < ms(TARGET))
    );
    println!("| flush() p50 / max | {:.1} / {:.1} ms | |", col(3), col(4));
    println!(
        "| video frames per second reached | {:.1} | {FPS} |",
        col(5)
    );
    println!(
        "| recorder / raw DirectWriter (3 MiB video, as fast as possible) | {:.0} / {:.0} MiB/s = {:.3}x (median of per-round ratios) | >= 0.9x: {} |",
        col(6),
        col(7),
        ratios,
        verdict(ratios >= 0.9)
    );
    Ok(())
}
