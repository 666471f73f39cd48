//! Starting the child (this executable again, in its role) and bounding the run.

use crate::{Contender, Job, Res};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The child's command line: `child CONTENDER SCENARIO WARMUP COUNT TAG`.
fn child_command(contender: Contender, job: Job, tag: &str) -> Res<Command> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "child",
        contender.name(),
        job.scenario.name(),
        &job.warmup.to_string(),
        &job.count.to_string(),
        tag,
    ]);
    Ok(cmd)
}

/// Kills the child and ends this process if the run outlasts `bound`: a peer that stops
/// answering would otherwise leave a busy-polling parent spinning for ever.
pub struct Watchdog {
    child: Arc<Mutex<Child>>,
    done: mpsc::Sender<()>,
}

impl Watchdog {
    pub fn start(child: Child, bound: Duration, what: String) -> Self {
        let child = Arc::new(Mutex::new(child));
        let (done, rx) = mpsc::channel::<()>();
        let c = Arc::clone(&child);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(bound) {
                if let Ok(mut ch) = c.lock() {
                    let _ = ch.kill();
                }
                eprintln!("error: {what} exceeded {} s; child killed", bound.as_secs());
                std::process::exit(1);
            }
        });
        Watchdog { child, done }
    }

    /// Waits for the child's exit (still under the bound) and checks its status.
    pub fn finish(self) -> Res<()> {
        loop {
            let status = {
                let mut ch = self.child.lock().map_err(|_| "watchdog lock poisoned")?;
                ch.try_wait()
                    .map_err(|e| format!("waiting for the child: {e}"))?
            };
            if let Some(st) = status {
                let _ = self.done.send(());
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("the child failed: {st}"))
                };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the child has exited: a busy-polling receiver asks now and then, so a
    /// child that failed ends the run at once instead of at the watchdog's bound.
    // Only the polling contender (iceoryx2) asks.
    #[cfg_attr(not(feature = "iceoryx2"), allow(dead_code))]
    pub fn child_exited(&self) -> bool {
        match self.child.try_lock() {
            Ok(mut ch) => !matches!(ch.try_wait(), Ok(None)),
            Err(_) => false,
        }
    }

    /// Kills the child now (the parent failed).
    pub fn abort(self) {
        if let Ok(mut ch) = self.child.lock() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        let _ = self.done.send(());
    }
}

/// Spawns the child with `stdin`/`stdout` set up by the contender.
pub fn spawn(contender: Contender, job: Job, tag: &str, stdin: Stdio, stdout: Stdio) -> Res<Child> {
    child_command(contender, job, tag)?
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))
}

/// Spawns the child with one end of a fresh socket pair as its stdin (one bidirectional
/// fd, so nothing else needs to survive `exec`) and starts the watchdog; the other end
/// is the parent's.
pub fn spawn_on_socket(
    contender: Contender,
    job: Job,
    bound: Duration,
    what: String,
) -> Res<(UnixStream, Watchdog)> {
    let (mine, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let child = spawn(
        contender,
        job,
        "-",
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::null(),
    )?;
    Ok((mine, Watchdog::start(child, bound, what)))
}
