//! The checker's verdicts against a search with no pruning at all, on
//! many small random histories: the search's rules for unknown outcomes
//! (see `search.rs`) must never turn a linearisable history into a
//! violation, nor the other way round.

use serde_json::{Value, json};

use super::tests::Rng;
use super::*;

/// Values for random histories.
impl Rng {
    fn value(&mut self) -> Value {
        json!(["0", "1", "2", "x"][self.below(4) as usize])
    }

    fn maybe_value(&mut self) -> Value {
        if self.below(4) == 0 {
            Value::Null
        } else {
            self.value()
        }
    }
}

/// A random history: a few clients, a few operations each, random answers
/// (mostly wrong ones, so both verdicts come up).
fn random_history(rng: &mut Rng) -> Vec<String> {
    let mut lines = Vec::new();
    for client in 0..1 + rng.below(3) {
        let mut t = rng.below(10);
        for _ in 0..1 + rng.below(3) {
            let (op, args, answer) = match rng.below(5) {
                0 => ("read", Value::Null, rng.maybe_value()),
                1 => ("write", rng.value(), Value::Null),
                2 => ("incr", json!(1 + rng.below(2)), json!(1 + rng.below(4))),
                3 => (
                    "cas",
                    json!({"old": rng.maybe_value(), "new": rng.value()}),
                    json!(rng.below(2) == 0),
                ),
                _ => ("delete", Value::Null, Value::Null),
            };
            let invoked = t;
            t += 1 + rng.below(20);
            let typ = ["ok", "ok", "ok", "info", "info", "fail"][rng.below(6) as usize];
            lines.push(json!({"client": client, "key": "k", "op": op, "args": args, "type": "invoke", "t_ns": invoked}).to_string());
            lines.push(
                json!({"client": client, "type": typ, "value": answer, "t_ns": t}).to_string(),
            );
            t += rng.below(10);
        }
    }
    lines
}

/// Whether some order of `ops` explains every answer: every order of every
/// subset of the unknown outcomes, nothing pruned.
fn brute_force(ops: &[Operation]) -> bool {
    let ops: Vec<&Operation> = ops.iter().filter(|o| o.status != Status::Failed).collect();
    let mut placed = vec![false; ops.len()];
    place(&ops, &mut placed, None)
}

/// Whether `ops[i]` has an answer and is not placed yet.
fn open(ops: &[&Operation], placed: &[bool], i: usize) -> bool {
    !placed[i] && matches!(ops[i].status, Status::Ok(_))
}

fn place(ops: &[&Operation], placed: &mut [bool], value: Option<Vec<u8>>) -> bool {
    if !(0..ops.len()).any(|i| open(ops, placed, i)) {
        return true;
    }
    for i in 0..ops.len() {
        // Not before an operation that completed before it was invoked.
        let blocked = (0..ops.len())
            .any(|j| open(ops, placed, j) && ops[j].returned.is_some_and(|r| r < ops[i].invoked));
        if placed[i] || blocked {
            continue;
        }
        let Some(next) = step(ops[i], &value) else {
            continue;
        };
        placed[i] = true;
        let found = place(ops, placed, next);
        placed[i] = false;
        if found {
            return true;
        }
    }
    false
}

/// The value after `op` from `value`, if its answer fits; the model of the
/// module docs, written out again.
fn step(op: &Operation, value: &Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
    let answer = match &op.status {
        Status::Ok(o) => Some(o),
        _ => None,
    };
    match &op.call {
        Call::Read => match answer {
            Some(Outcome::Read(v)) if v != value => None,
            _ => Some(value.clone()),
        },
        Call::Write(v) => Some(Some(v.clone())),
        Call::Delete => Some(None),
        Call::Incr(d) => {
            let now: u64 = match value {
                None => 0,
                Some(b) if !b.is_empty() && b.iter().all(u8::is_ascii_digit) => {
                    String::from_utf8_lossy(b).parse().ok()?
                }
                Some(_) => return None,
            };
            let n = now + d;
            match answer {
                Some(Outcome::Incr(a)) if *a != n => None,
                _ => Some(Some(n.to_string().into_bytes())),
            }
        }
        Call::Cas { old, new } => {
            let swaps = old == value;
            match answer {
                Some(Outcome::Cas(a)) if *a != swaps => None,
                _ if swaps => Some(Some(new.clone())),
                _ => Some(value.clone()),
            }
        }
    }
}

#[test]
fn the_search_agrees_with_brute_force() {
    let mut rng = Rng(0x5eed);
    let (mut good, mut bad) = (0, 0);
    for n in 0..20_000 {
        let lines = random_history(&mut rng);
        let events = parse(&lines.join("\n")).expect("well formed");
        let ops = history::pair(&events).expect("paired");
        let expected = brute_force(&ops);
        let got = check(&events);
        assert_eq!(
            got.is_ok(),
            expected,
            "history {n}:\n{}\nchecker: {got:?}",
            lines.join("\n")
        );
        if expected { good += 1 } else { bad += 1 }
    }
    // Both verdicts came up often enough to mean something.
    assert!(good > 2000 && bad > 2000, "{good} linearisable, {bad} not");
}
