//! Helpers shared by the integration tests (each test file that needs them says
//! `mod support;`; not every file uses every helper).
#![allow(dead_code)]

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Memory a caller owns, whose drops are counted: the instrumented origin that proves a
/// buffer's memory goes back exactly once.
pub struct CountedOwner {
    pub bytes: Vec<u8>,
    pub drops: Arc<AtomicUsize>,
}

impl AsMut<[u8]> for CountedOwner {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for CountedOwner {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for CountedOwner {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whether this process is the child copy of test `name` (see `run_child`).
pub fn in_child(name: &str) -> bool {
    std::env::var("PAGEBUF_TEST_CHILD").is_ok_and(|v| v == name)
}

/// Runs test `name` of this test binary alone in a child process (so it may change
/// process-wide limits, or die), with extra environment `env`; returns its exit status
/// and its stdout + stderr.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PAGEBUF_TEST_CHILD", name)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}
