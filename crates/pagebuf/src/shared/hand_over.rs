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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shared::model::Model;

    const SENDER: usize = 0;
    const RECEIVER: usize = 1;
    const NEXT: usize = 2;

    /// Receives for `process` with every sender but `dead` alive.
    fn receive_as(model: &Model, process: usize, dead: Option<usize>) -> Received {
        let live = |sender: Sender| Some(sender.slot) != dead;
        receive(&model.ring(), &model.table(), Model::process(process), live).unwrap()
    }

    /// Sends a frame for `SENDER` up to (not including) its commit: the token is put.
    fn put_only(model: &Model) -> u32 {
        let index = model.claim(SENDER).unwrap().unwrap();
        model
            .ring()
            .put(index, Sender::of(Model::process(SENDER)))
            .unwrap();
        index
    }

    #[test]
    fn a_live_senders_uncommitted_token_is_not_ready_and_a_dead_ones_is_skipped() {
        let model = Model::new(4);
        let first = put_only(&model);
        assert_eq!(receive_as(&model, RECEIVER, None), Received::Pending);
        // The sender dies there: its token is skipped and its frame is its own, for a
        // survivor's reclaim; the next hand-over comes through.
        let second = model.claim(NEXT).unwrap().unwrap();
        model.send(second, NEXT).unwrap();
        assert_eq!(
            receive_as(&model, RECEIVER, Some(SENDER)),
            Received::Frame(second)
        );
        assert_eq!(model.reclaim(SENDER), 1);
        assert!(model.release(second, RECEIVER));
        assert!(
            !model.release(first, SENDER),
            "freed by the reclaim already"
        );
        assert_eq!(receive_as(&model, RECEIVER, None), Received::Nothing);
    }

    #[test]
    fn a_receiver_that_died_after_marking_leaves_the_frame_to_the_next() {
        let model = Model::new(4);
        let index = model.claim(SENDER).unwrap().unwrap();
        model.send(index, SENDER).unwrap();
        // The first receiver marks the cell seen and dies before swinging the word.
        let ring = model.ring();
        let token = ring.head().unwrap().unwrap();
        assert!(ring.mark_seen(&token));
        assert_eq!(
            receive_as(&model, NEXT, Some(RECEIVER)),
            Received::Frame(index)
        );
        assert!(model.release(index, NEXT));
        assert_eq!(receive_as(&model, NEXT, None), Received::Nothing);
    }

    #[test]
    fn a_receiver_that_died_after_taking_leaves_its_cell_consumed_by_the_next() {
        let model = Model::new(4);
        let (first, second) = (
            model.claim(SENDER).unwrap().unwrap(),
            model.claim(SENDER).unwrap().unwrap(),
        );
        model.send(first, SENDER).unwrap();
        model.send(second, SENDER).unwrap();
        // The first receiver swings the first frame's word and dies before consuming.
        let (ring, table) = (model.ring(), model.table());
        let token = ring.head().unwrap().unwrap();
        assert!(ring.mark_seen(&token));
        let mine = Model::process(RECEIVER).word();
        table.pass(first, in_transit(token.position), mine).unwrap();
        // The next receiver passes over its cell to the second frame; the first stays
        // the dead receiver's, for a survivor's reclaim.
        assert_eq!(
            receive_as(&model, NEXT, Some(RECEIVER)),
            Received::Frame(second)
        );
        assert_eq!(model.reclaim(RECEIVER), 1);
        assert_eq!(receive_as(&model, NEXT, None), Received::Nothing);
    }

    #[test]
    fn a_committed_frame_is_delivered_once_whoever_asks() {
        let model = Model::new(2);
        let index = model.claim(SENDER).unwrap().unwrap();
        model.send(index, SENDER).unwrap();
        assert_eq!(receive_as(&model, RECEIVER, None), Received::Frame(index));
        assert_eq!(receive_as(&model, NEXT, None), Received::Nothing);
        assert!(!model.release(index, NEXT));
        assert!(model.release(index, RECEIVER));
    }
}
