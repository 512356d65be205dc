//! The checker against small histories with known answers, and a large
//! simulated one.

use std::time::Instant;

use serde_json::{Value, json};

use super::*;

/// One event on key `k`.
fn event(client: u64, typ: &str, op: &str, args: Value, value: Value, t: u64) -> String {
    json!({"client": client, "key": "k", "op": op, "args": args, "type": typ, "value": value, "t_ns": t})
        .to_string()
}

/// An invocation.
fn inv(client: u64, op: &str, args: Value, t: u64) -> String {
    event(client, "invoke", op, args, Value::Null, t)
}

/// An `ok` completion answering `value`.
fn ok(client: u64, op: &str, value: Value, t: u64) -> String {
    event(client, "ok", op, Value::Null, value, t)
}

/// A completion of another type (`fail`, `info`).
fn ended(client: u64, op: &str, typ: &str, t: u64) -> String {
    event(client, typ, op, Value::Null, Value::Null, t)
}

fn run(lines: &[String]) -> Result<Report, Violation> {
    check(&parse(&lines.join("\n")).expect("a well-formed history"))
}

/// The counterexample of a history that must fail.
fn counterexample(lines: &[String]) -> Counterexample {
    match run(lines) {
        Err(Violation::NotLinearizable(c)) => *c,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_sequential_history_is_linearizable() {
    let h = [
        inv(1, "write", json!("1"), 0),
        ok(1, "write", Value::Null, 10),
        inv(1, "read", Value::Null, 20),
        ok(1, "read", json!("1"), 30),
        inv(1, "incr", json!(2), 40),
        ok(1, "incr", json!(3), 50),
        inv(1, "cas", json!({"old": "3", "new": "x"}), 60),
        ok(1, "cas", json!(true), 70),
        inv(1, "cas", json!({"old": "3", "new": "y"}), 80),
        ok(1, "cas", json!(false), 90),
        inv(1, "delete", Value::Null, 100),
        ok(1, "delete", Value::Null, 110),
        inv(1, "read", Value::Null, 120),
        ok(1, "read", Value::Null, 130),
        inv(1, "cas", json!({"old": null, "new": "z"}), 140),
        ok(1, "cas", json!(true), 150),
        inv(1, "read", Value::Null, 160),
        ok(1, "read", json!("z"), 170),
    ];
    let report = run(&h).expect("linearizable");
    assert_eq!((report.keys, report.ops, report.ok), (1, 9, 9));
    // The same, but the last read sees the value before the swap.
    let mut stale = h.clone();
    stale[17] = ok(1, "read", Value::Null, 170);
    assert_eq!(counterexample(&stale).prefix.len(), 9);
}

#[test]
fn overlapping_writes_and_reads_are_linearizable() {
    let h = [
        inv(1, "write", json!("a"), 0),
        inv(2, "write", json!("b"), 10),
        inv(3, "read", Value::Null, 20),
        inv(4, "read", Value::Null, 30),
        ok(3, "read", json!("b"), 50),
        inv(3, "read", Value::Null, 60),
        ok(2, "write", Value::Null, 90),
        ok(1, "write", Value::Null, 100),
        inv(5, "read", Value::Null, 105),
        ok(4, "read", json!("a"), 120),
        ok(3, "read", json!("a"), 130),
        ok(5, "read", json!("a"), 140),
    ];
    run(&h).expect("b, then a, explains every read");
    // Once a read saw a after both writes ended, b cannot come back.
    let mut back = h.to_vec();
    back.push(inv(3, "read", Value::Null, 150));
    back.push(ok(3, "read", json!("b"), 160));
    assert_eq!(counterexample(&back).culprit.client, "3");
}

#[test]
fn a_stale_read_after_a_completed_write_fails() {
    let mut h = vec![
        inv(1, "write", json!("1"), 0),
        ok(1, "write", Value::Null, 10),
        inv(1, "write", json!("2"), 20),
        ok(1, "write", Value::Null, 30),
        inv(2, "read", Value::Null, 40),
        ok(2, "read", json!("1"), 50),
    ];
    // Whatever follows, the shortest failing prefix ends at the stale read.
    for t in 0..50 {
        h.push(inv(1, "incr", Value::Null, 100 + 20 * t));
        h.push(ok(1, "incr", json!(3 + t), 110 + 20 * t));
    }
    let c = counterexample(&h);
    assert!(c.minimal);
    assert_eq!(c.culprit.call, Call::Read);
    assert_eq!(c.culprit.client, "2");
    assert_eq!(c.prefix.len(), 3);
    let text = c.to_string();
    assert!(text.contains("key \"k\": not linearizable"), "{text}");
    assert!(text.contains("client 2 read -> \"1\""), "{text}");
    assert!(text.contains("client 1 write(\"2\") -> ok"), "{text}");
}

#[test]
fn a_lost_acknowledged_increment_fails() {
    let sequential = [
        inv(1, "incr", json!(1), 0),
        ok(1, "incr", json!(1), 10),
        inv(2, "incr", json!(1), 20),
        ok(2, "incr", json!(1), 30),
    ];
    assert_eq!(counterexample(&sequential).culprit.client, "2");
    // Overlapping makes no difference: one of them came second.
    let concurrent = [
        inv(1, "incr", json!(1), 0),
        inv(2, "incr", json!(1), 5),
        ok(1, "incr", json!(1), 10),
        ok(2, "incr", json!(1), 30),
    ];
    counterexample(&concurrent);
}

#[test]
fn a_duplicated_increment_fails() {
    let once = [inv(1, "incr", json!(1), 0), ok(1, "incr", json!(2), 10)];
    counterexample(&once);
    // Unless another increment may have run.
    let maybe = [
        inv(2, "incr", json!(1), 0),
        ended(2, "incr", "info", 5),
        inv(1, "incr", json!(1), 10),
        ok(1, "incr", json!(2), 20),
    ];
    run(&maybe).expect("the unknown increment ran first");
}

#[test]
fn two_winning_compare_and_swaps_fail() {
    let h = [
        inv(1, "cas", json!({"old": null, "new": "x"}), 0),
        inv(2, "cas", json!([null, "y"]), 5),
        ok(1, "cas", json!(true), 10),
        ok(2, "cas", json!("true"), 15),
    ];
    counterexample(&h);
    let mut one = h.clone();
    one[3] = ok(2, "cas", json!(false), 15);
    run(&one).expect("one winner");
}

#[test]
fn an_unknown_outcome_may_or_may_not_apply() {
    let with = |seen: Vec<&str>| {
        let mut h = vec![
            inv(1, "write", json!("1"), 0),
            ok(1, "write", Value::Null, 10),
            inv(2, "write", json!("2"), 20),
            ended(2, "write", "info", 30),
        ];
        for (n, v) in (0u64..).zip(seen) {
            h.push(inv(3, "read", Value::Null, 40 + 20 * n));
            h.push(ok(3, "read", json!(v), 50 + 20 * n));
        }
        run(&h)
    };
    with(vec!["2"]).expect("applied");
    with(vec!["1"]).expect("not applied");
    // It stays pending: it may take effect long after its `info`.
    with(vec!["1", "1", "2", "2"]).expect("applied late");
    assert!(with(vec!["2", "1"]).is_err(), "applied, then undone");
    // An increment in flight when the history ends counts the same way.
    let pending = |n: u64| {
        let h = [
            inv(1, "incr", json!(1), 0),
            inv(2, "incr", json!(1), 10),
            ok(2, "incr", json!(n), 20),
        ];
        run(&h)
    };
    pending(1).expect("not applied (yet)");
    pending(2).expect("applied");
    assert!(pending(3).is_err());
}

#[test]
fn a_failed_write_that_a_later_read_sees_fails() {
    let h = |seen: &str| {
        [
            inv(1, "write", json!("1"), 0),
            ok(1, "write", Value::Null, 10),
            inv(2, "write", json!("2"), 20),
            ended(2, "write", "fail", 30),
            inv(3, "read", Value::Null, 40),
            ok(3, "read", json!(seen), 50),
        ]
    };
    let report = run(&h("1")).expect("not applied");
    assert_eq!(report.failed, 1);
    let c = counterexample(&h("2"));
    assert!(c.to_string().contains("write(\"2\") -> fail"), "{c}");
}

#[test]
fn an_increment_needs_a_decimal_value() {
    let h = [
        inv(1, "write", json!("abc"), 0),
        ok(1, "write", Value::Null, 10),
        inv(1, "incr", json!(1), 20),
        ok(1, "incr", json!(1), 30),
    ];
    counterexample(&h);
}

#[test]
fn keys_are_checked_apart() {
    let h = [
        r#"{"client": "a", "key": "x", "op": "incr", "type": "invoke", "t_ns": 0}"#,
        r#"{"client": "b", "key": "y", "op": "incr", "type": "invoke", "t_ns": 1}"#,
        r#"{"client": "a", "type": "ok", "value": "1\n", "t_ns": 2}"#,
        r#"{"client": "b", "type": "ok", "value": 1, "t_ns": 3, "error": null}"#,
    ];
    let report = check(&parse(&h.join("\n")).unwrap()).expect("one increment per key");
    assert_eq!((report.keys, report.ops), (2, 2));
}

#[test]
fn malformed_histories_are_refused() {
    let bad = [
        (
            vec![
                inv(1, "read", Value::Null, 0),
                inv(1, "read", Value::Null, 5),
            ],
            2,
            "in flight",
        ),
        (vec![ok(1, "read", Value::Null, 0)], 1, "never invoked"),
        (
            vec![
                inv(1, "read", Value::Null, 9),
                ok(1, "read", Value::Null, 5),
            ],
            2,
            "before its invocation",
        ),
        (
            vec![
                inv(1, "cas", json!({"new": "x"}), 0),
                ok(1, "cas", json!(1), 5),
            ],
            2,
            "true or false",
        ),
        (vec![inv(1, "frob", Value::Null, 0)], 1, "`op` must be"),
        (vec![inv(1, "write", json!(7), 0)], 1, "JSON string"),
        (vec!["{\"client\": 1,".to_string()], 1, "EOF"),
    ];
    for (lines, line, why) in bad {
        let e = parse(&lines.join("\n")).expect_err(why);
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    // Events made by hand are paired by `check` too.
    let events = parse(
        &[
            inv(1, "read", Value::Null, 0),
            ok(1, "read", Value::Null, 5),
        ]
        .join("\n"),
    );
    let events = events.expect("well formed");
    assert!(matches!(check(&events[1..]), Err(Violation::Malformed(_))));
}

/// xorshift64*: the same history on every run, without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A history of `n` operations by `clients` clients on one key, answered
/// by a real register at a random point inside each operation (so it is
/// linearisable), with some failed and some unknown outcomes.
fn simulated(clients: u64, n: usize, seed: u64) -> Vec<String> {
    simulated_with(clients, n, seed, 40)
}

/// An operation and its arguments, on small values so that they interfere.
fn random_call(rng: &mut Rng) -> (&'static str, Value) {
    let small = |rng: &mut Rng| json!(rng.below(12).to_string());
    match rng.below(20) {
        0..=6 => ("read", Value::Null),
        7..=9 => ("write", small(rng)),
        10..=15 => ("incr", json!(1 + rng.below(3))),
        16..=18 => {
            let old = if rng.below(4) == 0 {
                Value::Null
            } else {
                small(rng)
            };
            ("cas", json!({"old": old, "new": small(rng)}))
        }
        _ => ("delete", Value::Null),
    }
}

/// Applies `op` to a register holding `value`; its answer, or `"refused"`
/// for an increment of a value that is not a number (nothing applied).
fn register(value: &mut Option<String>, op: &str, args: &Value) -> Value {
    match op {
        "read" => json!(value),
        "write" => {
            *value = args.as_str().map(String::from);
            Value::Null
        }
        "incr" => match value.as_deref().map_or(Some(0), |v| v.parse::<u64>().ok()) {
            Some(now) => {
                let n = now + args.as_u64().unwrap_or(1);
                *value = Some(n.to_string());
                json!(n)
            }
            None => json!("refused"),
        },
        "cas" => {
            let swaps = value.as_deref() == args["old"].as_str();
            if swaps {
                *value = args["new"].as_str().map(String::from);
            }
            json!(swaps)
        }
        _ => {
            *value = None;
            Value::Null
        }
    }
}

/// [`simulated`] where one operation in `one_in` fails and as many have
/// an unknown outcome.
fn simulated_with(clients: u64, n: usize, seed: u64, one_in: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let mut free_at = vec![0u64; clients as usize];
    // (client, call, invoked, takes effect, completes, fate 0 ok/1 fail/2 info)
    let mut ops = Vec::new();
    for k in 0..n {
        let c = k % clients as usize;
        let invoked = free_at[c] + rng.below(50);
        let effect = invoked + 1 + rng.below(300);
        let done = effect + 1 + rng.below(300);
        free_at[c] = done;
        let (op, args) = random_call(&mut rng);
        let fate = match rng.below(one_in) {
            0 => 1,
            1 => 2,
            _ => 0,
        };
        // An unknown outcome takes effect half the time.
        let applies = fate == 0 || (fate == 2 && rng.below(2) == 0);
        ops.push((c as u64, op, args, invoked, effect, done, fate, applies));
    }
    let mut by_effect: Vec<usize> = (0..ops.len()).collect();
    by_effect.sort_by_key(|&i| ops[i].4);
    let mut value: Option<String> = None;
    let mut answers = vec![Value::Null; ops.len()];
    for i in by_effect {
        let (_, op, args, .., applies) = &ops[i];
        if !applies {
            continue;
        }
        answers[i] = register(&mut value, op, args);
    }
    let mut lines = Vec::new();
    for (i, (c, op, args, invoked, _, done, fate, _)) in ops.iter().enumerate() {
        lines.push((*invoked, inv(*c, op, args.clone(), *invoked)));
        let refused = answers[i] == json!("refused");
        let completion = match fate {
            0 if !refused => ok(*c, op, answers[i].clone(), *done),
            2 => ended(*c, op, "info", *done),
            _ => ended(*c, op, "fail", *done),
        };
        lines.push((*done, completion));
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l).collect()
}

#[test]
fn three_thousand_operations_by_eight_clients_check_quickly() {
    let h = simulated(8, 3000, 7);
    let started = Instant::now();
    let report = run(&h).unwrap_or_else(|v| panic!("{v}"));
    eprintln!(
        "3000 operations, 8 clients: {report} in {:?}",
        started.elapsed()
    );
    assert_eq!(report.ops, 3000);
    assert!(report.unknown > 0 && report.failed > 0, "{report}");

    // One read in the middle that saw a value nobody wrote, in a history
    // with fewer unknown outcomes: each one pending makes proving a
    // history wrong costlier (the module docs say how much).
    let mut bad = simulated_with(8, 3000, 8, 1000);
    let at = (bad.len() / 2..)
        .find(|&i| bad[i].contains("\"ok\"") && bad[i].contains("\"read\""))
        .expect("a read");
    let mut line: Value = serde_json::from_str(&bad[at]).unwrap();
    line["value"] = json!("never written");
    bad[at] = line.to_string();
    let started = Instant::now();
    let c = counterexample(&bad);
    eprintln!(
        "the same with one bad read: refused in {:?}",
        started.elapsed()
    );
    assert!(c.minimal);
    assert_eq!(
        c.culprit.status,
        Status::Ok(Outcome::Read(Some(b"never written".to_vec())))
    );

    // A budget too small to decide is its own answer.
    let small = Options { max_states: 100 };
    let events = parse(&h.join("\n")).unwrap();
    assert!(matches!(
        check_with(&events, &small),
        Err(Violation::BudgetExceeded { states: 101, .. })
    ));
}
