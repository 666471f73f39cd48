//! The cross-process hand-over benchmark's peers (issue 16): a Unix socket, a pipe and
//! iceoryx2, each between two real processes. The binary re-executes itself as the child
//! (`child ...`, internal); the parent does the timing and prints one `result` line that
//! scripts/bench-ipc.sh collects.
//!
//! Two scenarios, the same work for every contender:
//! - `rtt64`: the parent fills 64 bytes (sequence number in the first 8), hands them to
//!   the child, which checks the number and hands 64 bytes back; ns per round trip and
//!   the p50/p99 of the individual round trips.
//! - `frame3m`: the parent fills a 3 MiB frame (the sequence number in the first 8 bytes
//!   and one byte in every 4 KiB page, so every page is really written, as a producer
//!   would), hands it over; the child checks the number, reads one byte per page,
//!   releases the frame and acknowledges it with 8 bytes. At most `INFLIGHT` frames are
//!   unacknowledged: the parent waits for frame k-4's acknowledgement before sending k
//!   (the same explicit back-pressure for every contender).

#[cfg(feature = "iceoryx2")]
mod iox;
mod pagebuf_pool;
mod pipe;
mod socket;
mod stream;
mod watchdog;
mod work;

use std::process::ExitCode;
use std::time::Duration;

/// A frame is 3 MiB (a 1024x768 RGBA picture, roughly).
pub const FRAME_LEN: usize = 3 << 20;
/// The producer writes one byte in every page of this size.
pub const PAGE: usize = 4096;
/// Frames sent and not yet acknowledged, at most.
pub const INFLIGHT: u64 = 4;
/// The round trip's message size.
pub const MSG_LEN: usize = 64;

/// Exit status of `run` for a contender this binary was built without (iceoryx2).
const EXIT_NOT_BUILT: u8 = 3;
const EXIT_USAGE: u8 = 2;

pub type Res<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// A Unix stream socket pair; the bytes are copied through the kernel.
    Socket,
    /// Two pipes (the child's stdin and stdout); the bytes are copied through the kernel.
    Pipe,
    /// iceoryx2 0.7 publish-subscribe over shared memory, zero-copy; receivers busy-poll.
    Iceoryx2,
    /// The same, but receivers sleep on an iceoryx2 event the sender notifies.
    Iceoryx2Event,
    /// pagebuf's `SharedPool` hand-over (issue 16): frames in shared memory, handed
    /// over as tokens through the pool's ring, no copy; receivers sleep on a futex.
    Pagebuf,
}

impl Contender {
    const ALL: [Contender; 5] = [
        Contender::Socket,
        Contender::Pipe,
        Contender::Iceoryx2,
        Contender::Iceoryx2Event,
        Contender::Pagebuf,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Socket => "socket",
            Contender::Pipe => "pipe",
            Contender::Iceoryx2 => "iceoryx2",
            Contender::Iceoryx2Event => "iceoryx2-event",
            Contender::Pagebuf => "pagebuf",
        }
    }

    fn parse(s: &str) -> Res<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown contender {s:?}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Rtt64,
    Frame3m,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Rtt64 => "rtt64",
            Scenario::Frame3m => "frame3m",
        }
    }

    fn parse(s: &str) -> Res<Self> {
        match s {
            "rtt64" => Ok(Scenario::Rtt64),
            "frame3m" => Ok(Scenario::Frame3m),
            _ => Err(format!("unknown scenario {s:?}")),
        }
    }

    fn default_count(self) -> u64 {
        match self {
            Scenario::Rtt64 => 50_000,
            Scenario::Frame3m => 500,
        }
    }
}

/// What the child needs to know: it runs `warmup + count` operations of one scenario.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub scenario: Scenario,
    pub warmup: u64,
    pub count: u64,
}

impl Job {
    pub fn total(&self) -> u64 {
        self.warmup + self.count
    }
}

/// The parent's measurement of the timed part (warm-up excluded).
pub enum Measured {
    /// Total time and each round trip's time in ns.
    Rtt { total: Duration, each_ns: Vec<u64> },
    /// Total time for `count` frames, the last acknowledgement included.
    Frames { total: Duration },
}

const USAGE: &str = "usage:
  pagebuf-bench-ipc run CONTENDER SCENARIO [--count N] [--warmup N] [--timeout-s S]
  pagebuf-bench-ipc list
CONTENDER: socket | pipe | iceoryx2 (polls) | iceoryx2-event | pagebuf (SharedPool hand-over)
SCENARIO:  rtt64 (64-byte round trips) | frame3m (3 MiB frames, 4 in flight)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(|run| match run {
            Some(r) => parent(r),
            None => Ok(ExitCode::from(EXIT_NOT_BUILT)),
        }),
        Some("child") => child(&args[1..]).map(|()| ExitCode::SUCCESS),
        Some("list") => {
            for c in Contender::ALL {
                println!("{}", c.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if e.starts_with("usage: ") => {
            eprintln!("error: {}\n{USAGE}", &e[7..]);
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Run {
    contender: Contender,
    job: Job,
    timeout: Duration,
}

/// `None` for a contender this binary was built without (after saying so on stderr).
fn parse_run(args: &[String]) -> Res<Option<Run>> {
    let usage = |m: String| format!("usage: {m}");
    let [c, s, rest @ ..] = args else {
        return Err(usage("run needs CONTENDER and SCENARIO".into()));
    };
    let contender = Contender::parse(c).map_err(usage)?;
    let scenario = Scenario::parse(s).map_err(usage)?;
    let mut job = Job {
        scenario,
        warmup: scenario.default_count() / 20,
        count: scenario.default_count(),
    };
    let mut timeout = Duration::from_secs(120);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))?;
        let n: u64 = value
            .parse()
            .map_err(|_| usage(format!("{flag} {value:?} is not a number")))?;
        match flag.as_str() {
            "--count" if n > 0 => job.count = n,
            "--count" => return Err(usage("--count must be at least 1".into())),
            "--warmup" => job.warmup = n,
            "--timeout-s" => timeout = Duration::from_secs(n.max(1)),
            _ => return Err(usage(format!("unknown option {flag:?}"))),
        }
    }
    let iceoryx2 = matches!(contender, Contender::Iceoryx2 | Contender::Iceoryx2Event);
    if iceoryx2 && !cfg!(feature = "iceoryx2") {
        eprintln!("iceoryx2: this binary was built without it (--no-default-features)");
        return Ok(None);
    }
    Ok(Some(Run {
        contender,
        job,
        timeout,
    }))
}

fn child(args: &[String]) -> Res<()> {
    let [c, s, w, n, tag] = args else {
        return Err("usage: child takes CONTENDER SCENARIO WARMUP COUNT TAG (internal)".into());
    };
    let num = |v: &String| {
        v.parse::<u64>()
            .map_err(|_| format!("child: {v:?} is not a number"))
    };
    let job = Job {
        scenario: Scenario::parse(s)?,
        warmup: num(w)?,
        count: num(n)?,
    };
    match Contender::parse(c)? {
        Contender::Socket => socket::child(job),
        Contender::Pipe => pipe::child(job),
        #[cfg(feature = "iceoryx2")]
        Contender::Iceoryx2 => iox::child(job, false, tag),
        #[cfg(feature = "iceoryx2")]
        Contender::Iceoryx2Event => iox::child(job, true, tag),
        #[cfg(not(feature = "iceoryx2"))]
        Contender::Iceoryx2 | Contender::Iceoryx2Event => {
            Err(format!("iceoryx2: built without it (tag {tag})"))
        }
        Contender::Pagebuf => pagebuf_pool::child(job),
    }
}

fn parent(run: Run) -> Res<ExitCode> {
    let bound = run.timeout;
    let what = format!("{} {}", run.contender.name(), run.job.scenario.name());
    let measured = match run.contender {
        Contender::Socket => socket::parent(run.job, bound, what)?,
        Contender::Pipe => pipe::parent(run.job, bound, what)?,
        #[cfg(feature = "iceoryx2")]
        Contender::Iceoryx2 => iox::parent(run.job, false, bound, what)?,
        #[cfg(feature = "iceoryx2")]
        Contender::Iceoryx2Event => iox::parent(run.job, true, bound, what)?,
        #[cfg(not(feature = "iceoryx2"))]
        Contender::Iceoryx2 | Contender::Iceoryx2Event => {
            unreachable!("parse_run returns None without iceoryx2")
        }
        Contender::Pagebuf => pagebuf_pool::parent(run.job, bound, what)?,
    };
    report(run.contender, run.job, measured);
    Ok(ExitCode::SUCCESS)
}

fn report(c: Contender, job: Job, m: Measured) {
    let n = job.count;
    match m {
        Measured::Rtt { total, mut each_ns } => {
            each_ns.sort_unstable();
            let pct = |p: f64| each_ns[((each_ns.len() - 1) as f64 * p).round() as usize];
            println!(
                "result {} rtt64 n={n} ns_per_rtt={:.0} p50_ns={} p99_ns={}",
                c.name(),
                total.as_nanos() as f64 / n as f64,
                pct(0.50),
                pct(0.99)
            );
        }
        Measured::Frames { total } => {
            let s = total.as_secs_f64();
            println!(
                "result {} frame3m n={n} us_per_frame={:.1} frames_per_s={:.0} gb_per_s={:.2}",
                c.name(),
                s * 1e6 / n as f64,
                n as f64 / s,
                (n as f64 * FRAME_LEN as f64) / s / 1e9
            );
        }
    }
}
