//! Checking one key: the search over its whole history, then, when that
//! fails, bisection for the shortest prefix that fails too.

use super::history::{Operation, Status};
use super::model::{Model, finish, prepare};
use super::search::{Verdict, search};

/// Why one key's history failed the check.
pub(crate) enum KeyFailure {
    /// No linearisation: the operation whose completion makes the shortest
    /// failing prefix, and the prefix's operations (their completions past
    /// it made unknown); `minimal` is false when the search for the
    /// shortest prefix ran out of budget.
    Impossible {
        culprit: usize,
        prefix: Vec<Operation>,
        minimal: bool,
    },
    /// The search explored more configurations than allowed.
    Budget { states: u64 },
}

/// Checks one key's operations; on success, the configurations explored.
pub(crate) fn check_key(ops: &[Operation], max_states: u64) -> Result<u64, KeyFailure> {
    let mut model = Model::new();
    let all = finish(
        (ops.iter().enumerate())
            .filter_map(|(i, op)| prepare(&mut model, op, i, true))
            .collect(),
    );
    let (verdict, states) = search(&mut model, &all, max_states);
    let stuck = match verdict {
        Verdict::Linearizable => return Ok(states),
        Verdict::Budget => return Err(KeyFailure::Budget { states }),
        Verdict::Impossible { stuck } => stuck,
    };
    let prefixes = Prefixes::new(ops);
    Err(match prefixes.shortest_failing(stuck, max_states) {
        Some(cut) => KeyFailure::Impossible {
            culprit: prefixes.times[cut].2,
            prefix: prefixes.operations(cut),
            minimal: true,
        },
        None => KeyFailure::Impossible {
            culprit: stuck,
            prefix: ops.to_vec(),
            minimal: false,
        },
    })
}

/// The prefixes of a key's history. A prefix ends just after some `ok`
/// completion (a cut); an operation invoked in it that completed after it
/// is pending there (unknown outcome). Any extension of a prefix that is
/// not linearisable is not either, which makes bisection sound.
struct Prefixes<'a> {
    ops: &'a [Operation],
    /// Invocations (0) and `ok` completions (1) in time order, as
    /// (time, kind, operation): the search's order.
    times: Vec<(u64, u8, usize)>,
    /// The positions in `times` of the completions.
    cuts: Vec<usize>,
}

impl Prefixes<'_> {
    fn new(ops: &[Operation]) -> Prefixes<'_> {
        let mut times: Vec<(u64, u8, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            times.push((op.invoked, 0, i));
            if let Some(t) = Prefixes::answered(op) {
                times.push((t, 1, i));
            }
        }
        times.sort_unstable();
        let cuts = (0..times.len()).filter(|&k| times[k].1 == 1).collect();
        Prefixes { ops, times, cuts }
    }

    /// When `op` completed with an answer.
    fn answered(op: &Operation) -> Option<u64> {
        op.returned.filter(|_| matches!(op.status, Status::Ok(_)))
    }

    fn within(&self, cut: usize, event: (u64, u8, usize)) -> bool {
        self.times.binary_search(&event).is_ok_and(|k| k <= cut)
    }

    /// Operation `i` as the prefix ending at `cut` has it, if it has it.
    fn operation(&self, cut: usize, i: usize) -> Option<Operation> {
        let op = &self.ops[i];
        if !self.within(cut, (op.invoked, 0, i)) {
            return None;
        }
        let mut op = op.clone();
        if Prefixes::answered(&op).is_some_and(|t| !self.within(cut, (t, 1, i))) {
            op.status = Status::Unknown;
            op.returned = None;
        }
        Some(op)
    }

    /// The operations of the prefix ending at `cut`.
    fn operations(&self, cut: usize) -> Vec<Operation> {
        (0..self.ops.len())
            .filter_map(|i| self.operation(cut, i))
            .collect()
    }

    /// Whether the prefix ending at `cut` is not linearisable; `None` past
    /// the budget.
    fn fails(&self, cut: usize, max_states: u64) -> Option<bool> {
        let mut model = Model::new();
        let prefix: Vec<Operation> = self.operations(cut);
        let prepared = finish(
            (prefix.iter())
                .filter_map(|op| prepare(&mut model, op, 0, true))
                .collect(),
        );
        match search(&mut model, &prepared, max_states).0 {
            Verdict::Linearizable => Some(false),
            Verdict::Impossible { .. } => Some(true),
            Verdict::Budget => None,
        }
    }

    /// The cut of the shortest prefix that is not linearisable (the whole
    /// history is not). No prefix ending before the completion the whole
    /// history's search got stuck at last (`stuck`) fails, and that one
    /// usually does: then it is the answer; otherwise bisection after it.
    /// `None` if a search ran out of budget.
    fn shortest_failing(&self, stuck: usize, max_states: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.cuts.len().checked_sub(1)?);
        let guess = Prefixes::answered(&self.ops[stuck]).and_then(|t| {
            self.cuts
                .iter()
                .position(|&c| self.times[c] == (t, 1, stuck))
        });
        if let Some(k) = guess {
            if self.fails(self.cuts[k], max_states)? {
                return Some(self.cuts[k]);
            }
            lo = k + 1;
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.fails(self.cuts[mid], max_states)? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(self.cuts[lo])
    }
}
