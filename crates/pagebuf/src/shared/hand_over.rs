//! Handing a frame from one process to another: the ring orders the tokens, the
//! frame's owner word says whose the frame is. Each is changed by one compare-and-swap
//! at a time, and every state a death can leave between two of them is recognised by
//! whoever comes next:
//!
//! ```text
//! send:     put token (ring cell names the sender)   owner: ours -> TRANSIT(position)
//! receive:  owner is TRANSIT(position)?  set SEEN    owner: TRANSIT(position) -> ours
//!           then consume the cell (empty for the next lap) and move the head on
//! ```
//!
//! What a receiver finds at the head, and does:
//!
//! * owner `TRANSIT(position)`: committed; mark it seen and take it (a race with
//!   another receiver is decided by the owner word).
//! * `SEEN` and anything else: received already, its receiver gone before consuming
//!   the cell; consume it.
//! * the owner is the sender named in the cell, alive: the sender is between its two
//!   steps; nothing to receive yet (its commit wakes receivers).
//! * the sender is dead (its table entry no longer live): it died before committing,
//!   and its frame goes back with its other frames; skip the token.
//! * anything else: a token for a frame that was not handed over (sent twice, or
//!   forged): `Corrupt`.
//!
//! A frame is never lost in a hand-over: until the commit it is the sender's (freed if
//! it dies), after it the ring's (delivered whoever dies), and a receiver's death
//! after its swing leaves the frame its own, freed as a dead process's.

use crate::error::{Error, Result};
use crate::sync::Ordering;

use super::frame_table::FrameTable;
use super::layout::{in_transit, Owner, OwnerWord};
use super::ring::{Sender, TokenRing};

/// What a receive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// This frame is now the receiver's.
    Frame(u32),
    /// Nothing handed over.
    Nothing,
    /// A live sender is between putting its token and committing its frame.
    Pending,
}

/// Sends frame `index`, held by `me` (its length already in its entry's `next`), to
/// whichever process receives next.
pub(super) fn send(
    ring: &TokenRing<'_>,
    table: &FrameTable<'_>,
    index: u32,
    me: Owner,
) -> Result<()> {
    let position = ring.put(index, Sender::of(me))?;
    table
        .pass(index, me.word(), in_transit(position))
        .map_err(|actual| Error::Corrupt {
            offset: table.owner_offset(index as usize),
            detail: format!(
                "frame {index} was handed over by this process, but the shared table says \
                 its owner is {actual:#x}, not {:#x}",
                me.word()
            ),
        })
}

/// Receives the frame at the head of the ring for `me`. `live` says whether a sender's
/// process table entry is still live (in the generation the token names).
pub(super) fn receive(
    ring: &TokenRing<'_>,
    table: &FrameTable<'_>,
    me: Owner,
    live: impl Fn(Sender) -> bool,
) -> Result<Received> {
    for _ in 0..ring.patience() {
        let Some(token) = ring.head()? else {
            return Ok(Received::Nothing);
        };
        let index = token.index;
        let Some(entry) = table.entries.get(index as usize) else {
            return Err(Error::Corrupt {
                offset: ring.offset,
                detail: format!(
                    "a hand-over token names frame {index}; the pool has {} frames",
                    table.entries.len()
                ),
            });
        };
        let committed = in_transit(token.position);
        let word = entry.owner.load(Ordering::Acquire);
        if word == committed {
            if !ring.mark_seen(&token) {
                continue;
            }
            if table.pass(index, committed, me.word()).is_ok() {
                ring.consume(&token);
                return Ok(Received::Frame(index));
            }
            // Another receiver took it; it consumes the cell, or we do next time round.
            continue;
        }
        if token.seen {
            ring.consume(&token);
            continue;
        }
        // The token was read before the owner word: another receiver may have marked
        // it seen and taken the frame in between. A receiver marks the cell before it
        // swings the word, so a cell unchanged since means no receiver took it.
        if ring.head()? != Some(token) {
            continue;
        }
        let Some(sender) = token.sender else {
            return Err(Error::Corrupt {
                offset: ring.offset,
                detail: format!(
                    "a hand-over token for frame {index} names no process table entry as \
                     its sender"
                ),
            });
        };
        match OwnerWord::parse(word) {
            None => {
                return Err(Error::Corrupt {
                    offset: table.owner_offset(index as usize),
                    detail: format!("frame {index}'s owner word is {word:#x}, which no state has"),
                })
            }
            Some(OwnerWord::Held(owner)) if sender.is(owner) && live(sender) => {
                return Ok(Received::Pending)
            }
            Some(_) if !live(sender) => ring.consume(&token),
            Some(_) => {
                return Err(Error::Corrupt {
                    offset: table.owner_offset(index as usize),
                    detail: format!(
                        "a hand-over token names frame {index}, which was not handed over \
                         (its owner word is {word:#x}): a token sent twice, or for a frame \
                         the sender did not give up"
                    ),
                })
            }
        }
    }
    Err(Error::Corrupt {
        offset: ring.offset,
        detail: "the hand-over ring's head never settled".into(),
    })
}
