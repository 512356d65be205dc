//! The replay window: defence in depth, since Raft already tolerates a
//! replayed append or vote. It only ever sees requests that opened, so the
//! host cannot fill it or move a session's counter on.

use std::collections::HashMap;

use super::{OpenedRequest, RaftFrameError, Session};

/// How far behind a session's newest counter one is still told apart: a
/// counter that far back or further is refused, taken or not.
pub const WINDOW: u64 = 64;
/// The sessions [`ReplayWindow::default`] remembers: far more than a
/// deployment's peers and their restarts.
pub const DEFAULT_SESSIONS: usize = 1024;

/// Per sender and session, the newest counter taken and which of the
/// [`WINDOW`] before it were. Bounded: at most `max_sessions` sessions, the
/// one least recently taken from forgotten first. A forgotten session's
/// requests are taken again, which is why this is a second line only.
#[derive(Debug)]
pub struct ReplayWindow {
    max_sessions: usize,
    tick: u64,
    slots: HashMap<(u64, Session), Slot>,
}

#[derive(Debug)]
struct Slot {
    /// The newest counter taken.
    highest: u64,
    /// Bit `i`: counter `highest - i` was taken.
    seen: u64,
    /// When the session last had a counter taken, for eviction.
    used: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new(DEFAULT_SESSIONS)
    }
}

impl ReplayWindow {
    /// A window remembering at most `max_sessions` sessions (at least one).
    pub fn new(max_sessions: usize) -> ReplayWindow {
        ReplayWindow {
            max_sessions: max_sessions.max(1),
            tick: 0,
            slots: HashMap::new(),
        }
    }

    /// Whether to take counter `ctr` of `from`'s `session`: not if taken
    /// before or [`WINDOW`] or more behind the newest. Call it only for a
    /// request that opened.
    pub fn accept(&mut self, from: u64, session: Session, ctr: u64) -> bool {
        self.tick = self.tick.saturating_add(1);
        let tick = self.tick;
        if let Some(slot) = self.slots.get_mut(&(from, session)) {
            let taken = slot.take(ctr);
            if taken {
                slot.used = tick;
            }
            return taken;
        }
        if self.slots.len() >= self.max_sessions {
            self.evict();
        }
        self.slots.insert(
            (from, session),
            Slot {
                highest: ctr,
                seen: 1,
                used: tick,
            },
        );
        true
    }

    /// [`ReplayWindow::accept`] for an opened request, as an error.
    pub fn admit(&mut self, request: &OpenedRequest) -> Result<(), RaftFrameError> {
        if self.accept(request.from, request.session, request.ctr) {
            Ok(())
        } else {
            Err(RaftFrameError::Replayed {
                from: request.from,
                ctr: request.ctr,
            })
        }
    }

    /// How many sessions it remembers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets the session least recently taken from. A scan: sessions are
    /// few, and only members (who hold the key) can add one.
    fn evict(&mut self) {
        let oldest = self
            .slots
            .iter()
            .min_by_key(|(_, slot)| slot.used)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.slots.remove(&key);
        }
    }
}

impl Slot {
    fn take(&mut self, ctr: u64) -> bool {
        if ctr > self.highest {
            let ahead = ctr - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = ctr;
            return true;
        }
        let behind = self.highest - ctr;
        if behind >= WINDOW {
            return false;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}
