//! The register each key is, and operations prepared for the search.

use std::collections::HashMap;

use super::history::{Call, Operation, Outcome, Status};

/// A register value, as an index into [`Model::values`]: values are
/// interned so that a configuration is a bitset and a number.
pub(crate) type StateId = u32;

/// The absent value, interned first.
pub(crate) const ABSENT: StateId = 0;

/// The register's values met so far, each once.
pub(crate) struct Model {
    values: Vec<Option<Vec<u8>>>,
    /// Each value as an increment sees it (`None`: not decimal text, so an
    /// increment of it cannot succeed).
    counters: Vec<Option<u64>>,
    ids: HashMap<Option<Vec<u8>>, StateId>,
    numbers: HashMap<u64, StateId>,
}

impl Model {
    pub(crate) fn new() -> Model {
        let mut model = Model {
            values: Vec::new(),
            counters: Vec::new(),
            ids: HashMap::new(),
            numbers: HashMap::new(),
        };
        model.intern(None);
        model
    }

    fn intern(&mut self, value: Option<Vec<u8>>) -> StateId {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = StateId::try_from(self.values.len()).unwrap_or(StateId::MAX);
        self.counters.push(counter(value.as_deref()));
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    /// Whether `v` is a value an increment can leave: a number in
    /// decimal, without leading zeros.
    pub(crate) fn is_number(&self, v: StateId) -> bool {
        let i = v as usize;
        self.counters[i]
            .is_some_and(|n| self.values[i].as_deref() == Some(n.to_string().as_bytes()))
    }

    /// `v` as an increment reads it, if it can.
    pub(crate) fn counter_of(&self, v: StateId) -> Option<u64> {
        self.counters[v as usize]
    }

    /// The value an increment leaves: `n` as decimal text.
    fn number(&mut self, n: u64) -> StateId {
        if let Some(&id) = self.numbers.get(&n) {
            return id;
        }
        let id = self.intern(Some(n.to_string().into_bytes()));
        self.numbers.insert(n, id);
        id
    }
}

/// `value` as a counter: absent is 0; otherwise decimal digits only.
fn counter(value: Option<&[u8]>) -> Option<u64> {
    match value {
        None => Some(0),
        Some(b) if !b.is_empty() && b.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        Some(_) => None,
    }
}

/// One operation as the search applies it; `None` answers are unknown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    Read(StateId),
    Write(StateId),
    Delete,
    Incr {
        delta: u64,
        answer: Option<u64>,
    },
    Cas {
        old: StateId,
        new: StateId,
        answer: Option<bool>,
    },
}

/// An operation ready for the search.
pub(crate) struct Prepared {
    pub(crate) step: Step,
    pub(crate) invoked: u64,
    /// `None`: pending to the end (its outcome is unknown).
    pub(crate) returned: Option<u64>,
    /// Its index in the key's operations.
    pub(crate) index: usize,
    /// Its bit in the search's set of linearised operations of its class.
    pub(crate) slot: usize,
    /// For an unknown outcome: the one invoked last before it with the
    /// same step, if any (an index into the prepared operations).
    pub(crate) twin: Option<usize>,
}

impl Prepared {
    /// 0: its answer is known; 1: its outcome is unknown.
    pub(crate) fn class(&self) -> usize {
        usize::from(self.returned.is_none())
    }

    /// Whether its outcome is unknown.
    pub(crate) fn unknown(&self) -> bool {
        self.returned.is_none()
    }
}

/// `ops` with each one's slot (its rank among those of its class) and
/// twin.
pub(crate) fn finish(mut ops: Vec<Prepared>) -> Vec<Prepared> {
    let mut next = [0, 0];
    for op in &mut ops {
        op.slot = next[op.class()];
        next[op.class()] += 1;
    }
    // Twins in invocation order, ties as the search's list breaks them.
    let mut unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].unknown()).collect();
    unknown.sort_by_key(|&i| (ops[i].invoked, i));
    let mut last: HashMap<Step, usize> = HashMap::new();
    for i in unknown {
        ops[i].twin = last.insert(ops[i].step, i);
    }
    ops
}

/// `op` for the search, with its answer known or not; `None` when it
/// cannot matter: it failed, or it is a read whose answer is unknown.
pub(crate) fn prepare(
    model: &mut Model,
    op: &Operation,
    index: usize,
    known: bool,
) -> Option<Prepared> {
    let outcome = match (&op.status, known) {
        (Status::Failed, _) => return None,
        (Status::Ok(outcome), true) => Some(outcome),
        _ => None,
    };
    let step = match (&op.call, outcome) {
        (Call::Read, Some(Outcome::Read(v))) => Step::Read(model.intern(v.clone())),
        (Call::Read, _) => return None,
        (Call::Write(v), _) => Step::Write(model.intern(Some(v.clone()))),
        (Call::Delete, _) => Step::Delete,
        (Call::Incr(delta), answer) => Step::Incr {
            delta: *delta,
            answer: match answer {
                Some(Outcome::Incr(n)) => Some(*n),
                _ => None,
            },
        },
        (Call::Cas { old, new }, answer) => Step::Cas {
            old: model.intern(old.clone()),
            new: model.intern(Some(new.clone())),
            answer: match answer {
                Some(Outcome::Cas(b)) => Some(*b),
                _ => None,
            },
        },
    };
    Some(Prepared {
        step,
        invoked: op.invoked,
        returned: if outcome.is_some() { op.returned } else { None },
        index,
        slot: 0,
        twin: None,
    })
}

/// The register after `step` from `state`, if its answer is possible there.
pub(crate) fn apply(model: &mut Model, state: StateId, step: Step) -> Option<StateId> {
    match step {
        Step::Read(v) => (v == state).then_some(state),
        Step::Write(v) => Some(v),
        Step::Delete => Some(ABSENT),
        Step::Incr { delta, answer } => {
            let n = model.counters[state as usize]?.checked_add(delta)?;
            if answer.is_some_and(|a| a != n) {
                return None;
            }
            Some(model.number(n))
        }
        Step::Cas { old, new, answer } => {
            let swaps = state == old;
            if answer.is_some_and(|a| a != swaps) {
                return None;
            }
            Some(if swaps { new } else { state })
        }
    }
}
