//! The search for a linearisation of one key's operations: Wing & Gong's
//! search, linearising just in time as Lowe does, with memoisation of the
//! configurations already explored.
//!
//! Operations with an unknown outcome (`info`, or no completion) make the
//! plain search exponential: each may take effect anywhere after its
//! invocation, or never, so every one of them doubles the configurations
//! to come, and proving a history wrong means visiting them all. These
//! rules cut that down without losing a linearisation, because any
//! linearisation can be rewritten to obey them (and `exhaustive.rs` checks
//! the verdicts against a search without them):
//!
//! 1. Dominance. A configuration with the same operations of known answer
//!    linearised and the same value as one explored before, but a superset
//!    of its unknowns, can only do less: it is skipped. A run of unknowns in
//!    progress restricts what may follow (rule 2), so a configuration only
//!    dominates those in the same run, or when it is in none.
//! 2. Need. A run of unknowns placed together must be followed by an
//!    operation whose answer does not fit the value before the run.
//!    Otherwise the run can be dropped or moved past that operation: a
//!    write or a delete hides it, and a read, an increment or a
//!    compare-and-swap whose answer fits both values leaves the same value
//!    with the run before it or after.
//! 3. Overwrites first. Inside a run a write or a delete comes first:
//!    whatever came before it in the run could be dropped.
//! 4. Twins in order. Unknowns with the same effect are interchangeable,
//!    so the one invoked first is always used first.
//! 5. No hopeless runs. No run starts unless an answer on offer needs one
//!    (rule 2) and the unknowns on offer might produce the value it needs.

use std::collections::HashMap;

use super::model::{ABSENT, Model, Prepared, StateId, Step, apply};

/// What one search found.
pub(crate) enum Verdict {
    /// Some order explains every answer.
    Linearizable,
    /// None does; `stuck` (an index into the key's operations) is the
    /// operation of the latest completion the search could not get past.
    /// No prefix ending before it fails: a linearisation that got past a
    /// later completion would, cut there, be one of that prefix.
    Impossible { stuck: usize },
    /// More configurations than allowed, undecided.
    Budget,
}

/// The invocations and completions in time order, as a doubly linked list
/// whose entries the search lifts out (an operation it linearises) and puts
/// back (when it backtracks), both in O(1). Node 0 is the head, the last
/// node the tail.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each node.
    op: Vec<usize>,
    /// A call node's completion node; `usize::MAX` on completion nodes.
    partner: Vec<usize>,
}

impl Entries {
    fn new(ops: &[Prepared]) -> Entries {
        // Invocations sort before completions at the same instant, so ties
        // count as concurrent (the lenient reading). Unknown outcomes
        // complete after everything.
        let mut order: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoked, 0, i, true));
            order.push(match op.returned {
                Some(t) => (t, 1, i, false),
                None => (u64::MAX, 2, i, false),
            });
        }
        order.sort_unstable();
        let nodes = order.len() + 2;
        let mut e = Entries {
            next: (1..=nodes).collect(),
            prev: (0..nodes).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![usize::MAX; nodes],
            partner: vec![usize::MAX; nodes],
        };
        let mut call_node = vec![0; ops.len()];
        for (k, &(_, _, i, is_call)) in order.iter().enumerate() {
            e.op[k + 1] = i;
            if is_call {
                call_node[i] = k + 1;
            } else {
                e.partner[call_node[i]] = k + 1;
            }
        }
        e
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }

    /// Takes a call and its completion out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.partner[call]);
    }

    /// Undoes the last [`Entries::lift`], which was of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(self.partner[call]);
        self.relink(call);
    }
}

/// The memo's mode for configurations outside a run of unknowns.
const FREE: StateId = StateId::MAX;

/// A configuration the search reached, under one set of linearised
/// operations of known answer.
struct Reached {
    state: StateId,
    /// [`FREE`], or the value before the run of unknowns in progress.
    mode: StateId,
    /// The unknowns linearised, as a bitset.
    unknown: Box<[u64]>,
}

impl Reached {
    /// Whether everything that can follow `other` can follow this.
    fn dominates(&self, state: StateId, mode: StateId, unknown: &[u64]) -> bool {
        self.state == state
            && (self.mode == FREE || self.mode == mode)
            && (self.unknown.iter().zip(unknown)).all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The configurations explored, by set of linearised known answers.
#[derive(Default)]
struct Memo {
    seen: HashMap<Box<[u64]>, Vec<Reached>>,
    count: u64,
}

impl Memo {
    /// Records a configuration; false if it, or one that dominates it, was
    /// explored before.
    fn visit(&mut self, known: &[u64], unknown: &[u64], state: StateId, mode: StateId) -> bool {
        let new = Reached {
            state,
            mode,
            unknown: unknown.into(),
        };
        match self.seen.get_mut(known) {
            Some(reached) => {
                if reached.iter().any(|r| r.dominates(state, mode, unknown)) {
                    return false;
                }
                reached.retain(|r| !new.dominates(r.state, r.mode, &r.unknown));
                reached.push(new);
            }
            None => {
                self.seen.insert(known.into(), vec![new]);
            }
        }
        self.count += 1;
        true
    }
}

/// A placement to undo: the call node, and the value and run before it.
struct Frame {
    node: usize,
    state: StateId,
    run: Option<StateId>,
}

/// One search in progress.
struct Search<'a> {
    model: &'a mut Model,
    ops: &'a [Prepared],
    list: Entries,
    /// Linearised operations by slot: `[0]` known answers, `[1]` unknown.
    linearised: [Vec<u64>; 2],
    memo: Memo,
    stack: Vec<Frame>,
    state: StateId,
    /// While the last placed operation is an unknown: the value before the
    /// run of unknowns it ends.
    run: Option<StateId>,
    /// Known answers not yet linearised: at 0 the rest are unknowns, which
    /// may never have taken effect. Until then a known completion lies
    /// ahead of every walk of the list.
    remaining: usize,
    /// (node, operation) of the latest completion that forced a backtrack.
    stuck: (usize, usize),
}

impl Search<'_> {
    fn is_linearised(&self, i: usize) -> bool {
        let (class, slot) = (self.ops[i].class(), self.ops[i].slot);
        self.linearised[class][slot / 64] & (1 << (slot % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        let (class, slot) = (self.ops[i].class(), self.ops[i].slot);
        self.linearised[class][slot / 64] ^= 1 << (slot % 64);
    }

    /// Whether rules 2 to 4 (module docs) let operation `i` come next.
    fn allowed(&mut self, i: usize) -> bool {
        let op = &self.ops[i];
        match (op.unknown(), self.run) {
            (false, None) => true,
            (false, Some(before)) => apply(self.model, before, op.step).is_none(),
            (true, run) => {
                let overwrite = matches!(op.step, Step::Write(_) | Step::Delete);
                !(run.is_some() && overwrite) && op.twin.is_none_or(|t| self.is_linearised(t))
            }
        }
    }

    /// Whether a run of the unknowns on offer might let through one of the
    /// known answers on offer that does not fit the value before the run
    /// (rules 2 and 5): a cheap over-estimate, so that a configuration where
    /// no run can help tries none. `first` is the first completion in the
    /// list, which bounds what is on offer.
    fn run_may_help(&mut self, first: usize) -> bool {
        let before = self.run.unwrap_or(self.state);
        let mut needs = Vec::new();
        // Values a run can end on: those that writes, deletes and swaps set,
        // and any number if there are increments.
        let mut constants = Vec::new();
        let (mut unknowns, mut incr) = (false, 0u64);
        let mut node = self.list.next[0];
        while node != first {
            let op = &self.ops[self.list.op[node]];
            if op.unknown() {
                unknowns = true;
                match op.step {
                    Step::Write(v) | Step::Cas { new: v, .. } => constants.push(v),
                    Step::Delete => constants.push(ABSENT),
                    Step::Incr { delta, .. } => incr = incr.saturating_add(delta),
                    Step::Read(_) => {}
                }
            } else if apply(self.model, before, op.step).is_none() {
                needs.push(op.step);
            }
            node = self.list.next[node];
        }
        let model = &*self.model;
        // Increments take a number from where the run starts, or from a
        // value a write or swap set, up by at most all their deltas.
        let bases: Vec<u64> = std::iter::once(self.state)
            .chain(constants.iter().copied())
            .filter_map(|v| model.counter_of(v))
            .collect();
        let counts_to = |m: u64| incr > 0 && bases.iter().any(|&b| b < m && m - b <= incr);
        unknowns
            && needs.into_iter().any(|step| match step {
                Step::Read(v)
                | Step::Cas {
                    old: v,
                    answer: Some(true),
                    ..
                } => {
                    constants.contains(&v)
                        || (model.is_number(v) && model.counter_of(v).is_some_and(counts_to))
                }
                Step::Incr {
                    delta,
                    answer: Some(n),
                } => n.checked_sub(delta).is_some_and(|m| {
                    counts_to(m) || constants.iter().any(|&c| model.counter_of(c) == Some(m))
                }),
                // A swap that failed only needs the value changed.
                _ => true,
            })
    }

    /// Linearises the operation of call `node` next if it fits and leads
    /// somewhere new; `Err` past the budget.
    fn place(&mut self, node: usize, max_states: u64) -> Result<bool, ()> {
        let i = self.list.op[node];
        if !self.allowed(i) {
            return Ok(false);
        }
        let Some(next) = apply(self.model, self.state, self.ops[i].step) else {
            return Ok(false);
        };
        let unknown = self.ops[i].unknown();
        let run = unknown.then(|| self.run.unwrap_or(self.state));
        self.flip(i);
        let [known_set, unknown_set] = &self.linearised;
        if !self
            .memo
            .visit(known_set, unknown_set, next, run.unwrap_or(FREE))
        {
            self.flip(i);
            return Ok(false);
        }
        if self.memo.count > max_states {
            return Err(());
        }
        self.stack.push(Frame {
            node,
            state: self.state,
            run: self.run,
        });
        self.state = next;
        self.run = run;
        self.remaining -= usize::from(!unknown);
        self.list.lift(node);
        Ok(true)
    }

    /// Undoes the last placement, having reached the completion `node` of
    /// an operation not linearised; the call node undone, if any.
    fn backtrack(&mut self, node: usize) -> Option<usize> {
        if node > self.stuck.0 {
            self.stuck = (node, self.ops[self.list.op[node]].index);
        }
        let frame = self.stack.pop()?;
        let j = self.list.op[frame.node];
        self.flip(j);
        self.state = frame.state;
        self.run = frame.run;
        self.remaining += usize::from(!self.ops[j].unknown());
        self.list.unlift(frame.node);
        Some(frame.node)
    }
}

/// Searches for an order of `ops` that explains every known answer;
/// returns the verdict and how many configurations it explored.
///
/// Walking the list from its head, an operation is tried only while its
/// invocation comes before the first completion still in the list: those
/// are the operations that may take effect next. Reaching a completion
/// whose operation is not linearised forces a backtrack (Lowe's
/// just-in-time linearisation: an operation must be placed by the time it
/// returns). Each configuration tries its known answers first, and
/// unknowns only when those do not get past the next completion
/// (`deferring` says which of the two passes is under way): most unknowns
/// did not take effect, or did not matter.
pub(crate) fn search(model: &mut Model, ops: &[Prepared], max_states: u64) -> (Verdict, u64) {
    let slots = |class| {
        ops.iter()
            .filter(|o| o.class() == class)
            .count()
            .div_ceil(64)
    };
    let mut s = Search {
        model,
        ops,
        list: Entries::new(ops),
        linearised: [vec![0; slots(0)], vec![0; slots(1)]],
        memo: Memo::default(),
        stack: Vec::new(),
        state: ABSENT,
        run: None,
        remaining: ops.iter().filter(|o| !o.unknown()).count(),
        stuck: (0, usize::MAX),
    };
    let mut deferring = true;
    let mut node = s.list.next[0];
    while s.remaining > 0 {
        let is_call = s.list.partner[node] != usize::MAX;
        if !is_call && deferring {
            // The first pass reached the first completion: now the unknowns,
            // if they can help at all.
            deferring = false;
            if s.run_may_help(node) {
                node = s.list.next[0];
            }
        } else if !is_call {
            let Some(call) = s.backtrack(node) else {
                return (Verdict::Impossible { stuck: s.stuck.1 }, s.memo.count);
            };
            // On with that configuration's next candidate, in its pass.
            deferring = !ops[s.list.op[call]].unknown();
            node = s.list.next[call];
        } else if ops[s.list.op[node]].unknown() == deferring {
            node = s.list.next[node];
        } else {
            match s.place(node, max_states) {
                Err(()) => return (Verdict::Budget, s.memo.count),
                Ok(true) => {
                    deferring = true;
                    node = s.list.next[0];
                }
                Ok(false) => node = s.list.next[node],
            }
        }
    }
    (Verdict::Linearizable, s.memo.count)
}
