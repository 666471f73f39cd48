//! `pagebuf`: the command-line face of the pagebuf library. Thin by design: every
//! figure it prints comes from the library; this crate parses, generates the synthetic
//! capture, and formats.

mod bench;
mod capture;
mod copy;
mod demo;
mod format;
mod log_bench;
mod play;
mod probe;
mod progress;
mod randread;
mod record;
mod record_from;
mod repair;
mod scratch;
mod share;
mod synthetic;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use pagebuf::copy::CopyOptions;

use crate::record::Limit;
use crate::synthetic::VideoFormat;

/// What every subcommand returns: any error becomes one line and exit status 1.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Page-aligned buffers, frame pools and direct I/O for streaming media and storage.
#[derive(Debug, Parser)]
#[command(name = "pagebuf", version)]
#[command(after_help = "Start with `pagebuf demo`: it needs no input and cleans up after itself.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn size(text: &str) -> Result<u64, String> {
    format::parse_size(text)
}

fn block_size(text: &str) -> Result<usize, String> {
    let bytes = format::parse_size(text)?;
    usize::try_from(bytes)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("block size `{text}` must be between 1 byte and the address space"))
}

fn depth(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(d) if (1..=pagebuf::caps::MAX_DEPTH).contains(&d) => Ok(d),
        _ => Err(format!(
            "depth `{text}` must be a whole number from 1 to {}",
            pagebuf::caps::MAX_DEPTH
        )),
    }
}

/// `randread --depth`: reads in flight, up to the cap of every depth knob (1024).
fn queue_depth(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(d) if (1..=1024).contains(&d) => Ok(d),
        _ => Err(format!(
            "depth `{text}` must be a whole number from 1 to 1024"
        )),
    }
}

/// `log bench --threads`: committing threads, up to the bench's cap.
fn threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=log_bench::MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "threads `{text}` must be a whole number from 1 to {}",
            log_bench::MAX_THREADS
        )),
    }
}

/// `log bench --record`: bytes per record, up to the log's cap.
fn record_size(text: &str) -> Result<usize, String> {
    let max = pagebuf::log::MAX_RECORD;
    format::parse_size(text)
        .ok()
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| (1..=max).contains(b))
        .ok_or_else(|| format!("record size `{text}` must be from 1 byte to {max} (16 MiB)"))
}

/// `copy --reflink`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReflinkChoice {
    /// Share the source's blocks where the file system can (XFS, btrfs), else copy.
    Auto,
    /// Always copy the blocks.
    Never,
    /// Share the blocks, or fail saying why not.
    Require,
}

impl From<ReflinkChoice> for pagebuf::copy::Reflink {
    fn from(choice: ReflinkChoice) -> pagebuf::copy::Reflink {
        match choice {
            ReflinkChoice::Auto => pagebuf::copy::Reflink::Auto,
            ReflinkChoice::Never => pagebuf::copy::Reflink::Never,
            ReflinkChoice::Require => pagebuf::copy::Reflink::Require,
        }
    }
}

/// `--engine`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EngineChoice {
    /// io_uring where it works, worker threads where it is refused.
    Auto,
    /// io_uring, or an error saying why not.
    Uring,
    /// Worker threads.
    Threads,
}

impl From<EngineChoice> for pagebuf::Engine {
    fn from(choice: EngineChoice) -> pagebuf::Engine {
        match choice {
            EngineChoice::Auto => pagebuf::Engine::Auto,
            EngineChoice::Uring => pagebuf::Engine::Uring,
            EngineChoice::Threads => pagebuf::Engine::Threads,
        }
    }
}

/// `--posting`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PostingChoice {
    /// When the submitting thread next enters the kernel (IORING_SETUP_COOP_TASKRUN).
    Cooperative,
    /// At once, interrupting the submitting thread.
    Interrupt,
}

impl From<PostingChoice> for pagebuf::ring::Posting {
    fn from(choice: PostingChoice) -> pagebuf::ring::Posting {
        match choice {
            PostingChoice::Cooperative => pagebuf::ring::Posting::Cooperative,
            PostingChoice::Interrupt => pagebuf::ring::Posting::Interrupt,
        }
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "duration `{text}` must be seconds between 0 and 86400, e.g. 5 or 2.5s"
        )),
    }
}

/// `--video`: a format, or `none` for an audio-only recording.
#[derive(Debug, Clone, Copy)]
struct VideoChoice(Option<VideoFormat>);

fn video(text: &str) -> Result<VideoChoice, String> {
    if text == "none" {
        return Ok(VideoChoice(None));
    }
    text.parse().map(|format| VideoChoice(Some(format)))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record, play back, verify and copy a few hundred MiB here, then report and clean up.
    #[command(after_help = "Example:\n  pagebuf demo\n  pagebuf demo --size 64MiB")]
    Demo {
        /// How much to record (K, M, G suffixes; binary units).
        #[arg(long, default_value = "256MiB", value_parser = size)]
        size: u64,
    },
    /// Show the direct-I/O limits for a path: alignment, largest transfer, and where each
    /// figure came from.
    #[command(after_help = "Examples:\n  pagebuf probe .\n  pagebuf probe /dev/nvme0n1 --json")]
    Probe {
        /// A file, a directory (for files to be created in it) or a block device.
        path: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Copy a file with direct I/O, reads and writes overlapping, in bounded memory.
    #[command(
        after_help = "Examples:\n  pagebuf copy take.pbs /mnt/backup/take.pbs --verify\n  pagebuf copy big.img big.copy --block-size 4MiB --depth 8"
    )]
    Copy {
        /// The file to copy.
        src: PathBuf,
        /// Where to copy it (created or replaced).
        dst: PathBuf,
        /// Read the copy back and compare CRC32C checksums.
        #[arg(long)]
        verify: bool,
        /// Bytes per transfer, a multiple of both files' alignment [default: 8MiB].
        #[arg(long, value_parser = block_size)]
        block_size: Option<usize>,
        /// Transfers in flight each way.
        #[arg(long, default_value = "2", value_parser = depth)]
        depth: usize,
        /// Share the source's blocks instead of copying them, where the file system clones.
        #[arg(long, value_enum, default_value = "auto")]
        reflink: ReflinkChoice,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Record a synthetic video (+ audio) stream through SampleWriter.
    #[command(
        after_help = "Examples:\n  pagebuf record take.pbs --audio\n  pagebuf record take.pbs --size 1GiB --video 3840x2160@30 --audio\n  pagebuf record audio.pbs --video none --audio --duration 60"
    )]
    Record {
        /// The sample file to write (created or replaced).
        out: PathBuf,
        /// Record the frames a `pagebuf capture --share SOCKET` process hands over
        /// (through a shared pool, written from its pages without a copy) instead of
        /// generating them here.
        #[arg(long, value_name = "SOCKET", conflicts_with_all = ["duration", "size", "audio"])]
        from: Option<PathBuf>,
        /// Seconds of media to record [default: 5].
        #[arg(long, value_parser = seconds, conflicts_with = "size")]
        duration: Option<f64>,
        /// Bytes of samples to record instead (K, M, G suffixes).
        #[arg(long, value_parser = size)]
        size: Option<u64>,
        /// Video format WIDTHxHEIGHT@FPS (YUV 4:2:0 frames), or `none`.
        #[arg(long, default_value = "1920x1080@60", value_parser = video)]
        video: VideoChoice,
        /// Add a 48 kHz stereo 16-bit audio stream.
        #[arg(long)]
        audio: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A synthetic camera in its own process: fills a shared pool's frames and hands them
    /// to the recorder that connects to SOCKET (`pagebuf record OUT --from SOCKET`).
    #[command(
        after_help = "Example (two shells, or one with &):\n  pagebuf capture --share /tmp/cam.sock --video 1920x1080@60 --duration 10 &\n  pagebuf record take.pbs --from /tmp/cam.sock\n  pagebuf play take.pbs --verify"
    )]
    Capture {
        /// The Unix socket to listen on for the recorder (must not exist; removed after).
        #[arg(long, value_name = "SOCKET")]
        share: PathBuf,
        /// Video format WIDTHxHEIGHT@FPS (YUV 4:2:0 frames).
        #[arg(long, default_value = "1920x1080@60")]
        video: VideoFormat,
        /// Seconds of media to capture.
        #[arg(long, default_value = "5", value_parser = seconds)]
        duration: f64,
        /// Pace the frames at the frame rate, as a camera would; without it, frames go
        /// as fast as the recorder takes them.
        #[arg(long)]
        realtime: bool,
        /// Frames in the shared pool (2 to 1024): how far the camera may run ahead.
        #[arg(long, default_value_t = capture::POOL_FRAMES)]
        pool_frames: usize,
        /// Keep the shared frames on normal pages. By default they go on reserved huge
        /// pages when enough are free (vm.nr_hugepages; a direct write from a 2 MiB page
        /// is one piece, from normal pages 512), on normal pages with a note otherwise.
        #[arg(long)]
        normal_pages: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Read a sample file back and report; --verify checks the synthetic content.
    #[command(
        after_help = "Examples:\n  pagebuf play take.pbs --verify\n  pagebuf play take.pbs --json"
    )]
    Play {
        /// The sample file to read.
        file: PathBuf,
        /// Check every sample against what `pagebuf record` writes.
        #[arg(long)]
        verify: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Finish a sample file whose writer died: keep every whole record, cut the torn
    /// tail, and write the index (what it kept and cut is printed).
    #[command(
        after_help = "Examples:\n  pagebuf repair take.pbs\n  pagebuf repair take.pbs --json"
    )]
    Repair {
        /// The sample file to repair.
        file: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Random direct reads of one block size from one thread at a queue depth: IOPS,
    /// latency percentiles and CPU per GiB.
    #[command(
        after_help = "Examples:\n  pagebuf randread big.bin --depth 32\n  pagebuf randread big.bin --depth 1 --engine threads --seconds 5 --json"
    )]
    Randread {
        /// The file to read (at least one block long).
        file: PathBuf,
        /// Reads in flight.
        #[arg(long, default_value = "32", value_parser = queue_depth)]
        depth: usize,
        /// Bytes per read, a multiple of the file's alignment.
        #[arg(long, default_value = "4KiB", value_parser = block_size)]
        block: usize,
        /// How long to read.
        #[arg(long, default_value = "5", value_parser = seconds)]
        seconds: f64,
        /// Which engine the ring uses.
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineChoice,
        /// When io_uring posts completions: when this thread next enters the kernel
        /// (cooperative: it submits and waits in a loop), or at once, interrupting it.
        #[arg(long, value_enum, default_value = "cooperative")]
        posting: PostingChoice,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The durable log: `pagebuf log bench` measures group commit.
    // A missing subcommand is an error line, as everywhere else, not a help screen.
    #[command(arg_required_else_help = false)]
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Side-by-side ratios here: pool vs fresh memory, direct vs buffered copy, record vs raw write.
    #[command(after_help = "Example:\n  pagebuf bench --size 512MiB")]
    Bench {
        /// Bytes of I/O per row (K, M, G suffixes).
        #[arg(long, default_value = "256MiB", value_parser = size)]
        size: u64,
    },
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Group commit from N threads, each appending a record and committing it in a loop:
    /// commits/s, commit latency, syncs, bytes written per commit, CPU per commit.
    #[command(
        after_help = "Examples:\n  pagebuf log bench --threads 16\n  pagebuf log bench --dir /mnt/fast --threads 4 --record 200 --seconds 10 --json\n\nThe log file is new and is removed at the end."
    )]
    Bench {
        /// The log file to write (must not exist) [default: a new file in --dir].
        #[arg(conflicts_with = "dir")]
        path: Option<PathBuf>,
        /// The directory to write a new log file in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Committing threads.
        #[arg(long, default_value = "4", value_parser = threads)]
        threads: usize,
        /// How long to commit.
        #[arg(long, default_value = "5", value_parser = seconds)]
        seconds: f64,
        /// Bytes per record (K, M suffixes).
        #[arg(long, default_value = "128", value_parser = record_size)]
        record: usize,
        /// Which engine the log's ring uses.
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineChoice,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            // One clear line, not a usage screen.
            let text = err.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("pagebuf: {line} (see pagebuf --help)");
            return ExitCode::from(2);
        }
    };
    let out = &mut std::io::stdout().lock();
    let result = match cli.command {
        Command::Demo { size } => demo::run(out, size),
        Command::Probe { path, json } => probe::run(out, &path, json),
        Command::Copy {
            src,
            dst,
            verify,
            block_size,
            depth,
            reflink,
            json,
        } => {
            let mut options = CopyOptions::default()
                .verify(verify)
                .depth(depth)
                .reflink(reflink.into());
            if let Some(block) = block_size {
                options = options.block_size(block);
            }
            copy::run(out, &src, &dst, &options, json)
        }
        Command::Record {
            out: path,
            from: Some(socket),
            json,
            ..
        } => record_from::run(out, &path, &socket, json),
        Command::Capture {
            share,
            video,
            duration,
            realtime,
            pool_frames,
            normal_pages,
            json,
        } => capture::run(
            out,
            &share,
            video,
            duration,
            (pool_frames, realtime, !normal_pages),
            json,
        ),
        Command::Record {
            out: path,
            duration,
            size,
            video,
            audio,
            json,
            from: None,
        } => {
            let limit = match size {
                Some(bytes) => Limit::Size(bytes),
                None => Limit::Duration(duration.unwrap_or(5.0)),
            };
            record::run(out, &path, video.0, audio, limit, json)
        }
        Command::Play { file, verify, json } => play::run(out, &file, verify, json),
        Command::Repair { file, json } => repair::run(out, &file, json),
        Command::Bench { size } => bench::run(out, size),
        Command::Randread {
            file,
            depth,
            block,
            seconds,
            engine,
            posting,
            json,
        } => {
            let plan = randread::Plan {
                depth,
                block,
                seconds,
                engine: engine.into(),
                posting: posting.into(),
            };
            randread::run(out, &file, &plan, json)
        }
        Command::Log {
            command:
                LogCommand::Bench {
                    path,
                    dir,
                    threads,
                    seconds,
                    record,
                    engine,
                    json,
                },
        } => {
            let target = match path {
                Some(path) => log_bench::Target::File(path),
                None => log_bench::Target::Dir(dir),
            };
            log_bench::run(out, &target, threads, seconds, record, engine.into(), json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and cut short is not a failure worth a message.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            let text = err.to_string();
            eprintln!("pagebuf: {}", text.lines().next().unwrap_or("failed"));
            ExitCode::FAILURE
        }
    }
}
