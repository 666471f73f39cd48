//! The process table in the shared memory, and whether the process behind an entry is
//! still alive.
//!
//! A process that attaches claims an entry (its pid and its start time, field 22 of
//! `/proc/<pid>/stat`), and the frames it takes name that entry and its generation as
//! their owner. A survivor that finds an entry's process dead (no such process, a
//! zombie, or a pid reused by a process that started at another time) moves the entry
//! to `Reclaiming`, returns the frames that name it, and frees it.
//!
//! A dead process's entry is reclaimed only once its lease is released too
//! (`lease.rs`): transfers the kernel finishes after the process are then done.
//!
//! Death is only ever concluded from definite evidence (`ESRCH`, no `/proc` entry, a
//! zombie state, another start time); anything unclear counts as alive, because
//! reclaiming a live process's frame would let two processes write one frame.
//! Processes must share a pid namespace: a peer in another one looks dead.

use std::sync::atomic::Ordering;

use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::layout::{Owner, ProcessEntry, ProcessState};

/// What the table and `/proc` say about one entry's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Liveness {
    /// Running, or not provably dead.
    Alive,
    /// Gone, a zombie, or its pid now names a younger process.
    Dead,
}

/// The start time (clock ticks after boot) and state letter of process `pid`, from
/// `/proc/<pid>/stat`; `Ok(None)` when there is no such process.
fn stat_of(pid: u32) -> std::io::Result<Option<(u64, char)>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces or ')': the
    // fields that follow start after the last ')'.
    let bad = || std::io::Error::other(format!("unexpected /proc/{pid}/stat format"));
    let rest = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields
        .next()
        .and_then(|s| s.chars().next())
        .ok_or_else(bad)?;
    // Field 3 was `state`; field 22 is 19 further on.
    let start = fields
        .nth(18)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok(Some((start, state)))
}

/// This process's start time, for its table entry.
pub(super) fn own_start_time() -> std::io::Result<u64> {
    let pid = std::process::id();
    stat_of(pid)?
        .map(|(start, _)| start)
        .ok_or_else(|| std::io::Error::other("no /proc entry for this process; mount /proc"))
}

/// Whether process `pid` that started at `start_time` is alive.
pub(super) fn liveness(pid: u64, start_time: u64) -> Liveness {
    let Ok(pid32) = u32::try_from(pid) else {
        return Liveness::Alive;
    };
    let Some(raw) = i32::try_from(pid32).ok().and_then(Pid::from_raw) else {
        return Liveness::Alive;
    };
    // A pidfd answers "no such process" without a /proc lookup; it cannot tell a
    // zombie or a reused pid, so /proc decides whenever the process exists.
    if let Err(Errno::SRCH) = pidfd_open(raw, PidfdFlags::empty()) {
        return Liveness::Dead;
    }
    match stat_of(pid32) {
        Ok(None) => Liveness::Dead,
        Ok(Some((_, 'Z' | 'X' | 'x'))) => Liveness::Dead,
        Ok(Some((start, _))) if start != start_time => Liveness::Dead,
        Ok(Some(_)) | Err(_) => Liveness::Alive,
    }
}

/// Claims a free entry for this process; `None` if every entry is taken.
pub(super) fn claim(table: &[ProcessEntry], start_time: u64) -> Option<Owner> {
    for (slot, entry) in table.iter().enumerate() {
        let word = entry.state.load(Ordering::Acquire);
        let Some((ProcessState::Free, generation)) = ProcessState::parse(word) else {
            continue;
        };
        let generation = (generation + 1) & ((1 << 56) - 1);
        if entry
            .state
            .compare_exchange(
                word,
                ProcessState::Claiming.word(generation),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        entry
            .pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        entry.start_time.store(start_time, Ordering::Relaxed);
        entry.waiting.store(0, Ordering::Relaxed);
        // Release: a survivor that sees Live sees the pid and start time with it.
        entry
            .state
            .store(ProcessState::Live.word(generation), Ordering::Release);
        return Some(Owner { slot, generation });
    }
    None
}

/// Gives this process's entry back (it holds no frames any more).
pub(super) fn leave(table: &[ProcessEntry], owner: Owner) {
    if let Some(entry) = table.get(owner.slot) {
        let _ = entry.state.compare_exchange(
            ProcessState::Live.word(owner.generation),
            ProcessState::Free.word(owner.generation),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// The entries whose process is dead and whose lease is released (`leased` says
/// whether it is not), each now `Reclaiming` by the caller, who must return their
/// frames and then call [`finish_reclaim`].
pub(super) fn claim_dead(table: &[ProcessEntry], leased: impl Fn(Owner) -> bool) -> Vec<Owner> {
    let mut dead = Vec::new();
    for (slot, entry) in table.iter().enumerate() {
        let word = entry.state.load(Ordering::Acquire);
        let Some((ProcessState::Live, generation)) = ProcessState::parse(word) else {
            continue;
        };
        let pid = entry.pid.load(Ordering::Relaxed);
        let start = entry.start_time.load(Ordering::Relaxed);
        if liveness(pid, start) == Liveness::Alive || leased(Owner { slot, generation }) {
            continue;
        }
        if entry
            .state
            .compare_exchange(
                word,
                ProcessState::Reclaiming.word(generation),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            dead.push(Owner { slot, generation });
        }
    }
    dead
}

/// Frees a reclaimed entry for the next process.
pub(super) fn finish_reclaim(table: &[ProcessEntry], owner: Owner) {
    if let Some(entry) = table.get(owner.slot) {
        entry
            .state
            .store(ProcessState::Free.word(owner.generation), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let start = own_start_time().unwrap();
        let pid = u64::from(std::process::id());
        assert_eq!(liveness(pid, start), Liveness::Alive);
        assert_eq!(liveness(pid, start + 1), Liveness::Dead);
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = u64::from(child.id());
        let start = stat_of(child.id()).unwrap().map_or(0, |(s, _)| s);
        child.wait().unwrap();
        assert_eq!(liveness(pid, start), Liveness::Dead);
    }
}
