use super::apply::check_batch;
use super::*;
use crate::guests::kv::{KvReply, MAX_KEY, PAGE};

fn bucket(kv: &MemoryKv, ns: &str, name: &str) -> String {
    kv.open_bucket(ns, name).unwrap();
    name.to_string()
}

fn name(ns: &str) -> GuestName {
    ns.parse().unwrap()
}

fn limits(max_keys: u64, max_bytes: u64) -> KvLimits {
    KvLimits {
        max_keys,
        max_bytes,
    }
}

fn set_op(key: &str, value: &[u8]) -> KvOp {
    KvOp::Set {
        bucket: "b".into(),
        key: key.into(),
        value: value.to_vec(),
    }
}

fn cas(key: &str, old: Option<&[u8]>, new: &[u8]) -> KvOp {
    KvOp::CompareAndSwap {
        bucket: "b".into(),
        key: key.into(),
        old: old.map(<[u8]>::to_vec),
        new: new.to_vec(),
    }
}

fn get_op(key: &str) -> KvOp {
    KvOp::Get {
        bucket: "b".into(),
        key: key.into(),
    }
}

fn quota_error(r: KvResult<KvReply>, flag: &str) {
    assert!(
        matches!(&r, Err(KvError::Other(m)) if m.contains(flag)),
        "{r:?}"
    );
}

#[test]
fn export_and_import_keep_data_usage_and_count_changes() {
    let limits = limits(3, 100);
    let kv = MemoryKv::new(limits);
    let g0 = kv.generation();
    let b = bucket(&kv, "a", "box");
    let set = |kv: &MemoryKv, k: &str, v: &[u8]| {
        kv.with("a", &b, limits, |bkt, u| u.set(bkt, k.into(), v.to_vec()))
    };
    set(&kv, "k1", b"one").unwrap();
    set(&kv, "k2", b"two").unwrap();
    let g1 = kv.generation();
    assert!(g1 > g0, "writes move the generation");
    // A read does not.
    kv.with("a", &b, limits, |bkt, _| Ok(bkt.get("k1").cloned()))
        .unwrap();
    assert_eq!(kv.generation(), g1);

    let copy = MemoryKv::new(limits);
    copy.import(kv.export());
    assert_eq!(copy.export(), kv.export());
    assert_eq!(copy.usage(), kv.usage());
    assert!(copy.generation() > 0, "an import is a change");
    assert_eq!(kv.take_dirty(), BTreeSet::from(["a".to_string()]));
    assert!(kv.take_dirty().is_empty(), "taken");
    assert!(copy.take_dirty().is_empty(), "an import is stored already");
    assert_eq!(copy.namespaces(), vec!["a".to_string()]);
    assert_eq!(copy.export_namespace("a"), kv.export()["a"]);
    // The quota counts what was imported: one key left.
    set(&copy, "k3", b"3").unwrap();
    let e = set(&copy, "k4", b"4").unwrap_err();
    assert!(matches!(&e, KvError::Other(m) if m.contains("--kv-max-keys")));
}

#[test]
fn quotas_refuse_without_changing_anything() {
    let limits = limits(2, 20);
    let kv = MemoryKv::new(limits);
    let a = bucket(&kv, "a", "");
    let set =
        |k: &str, v: &[u8]| kv.with("a", &a, limits, |bkt, u| u.set(bkt, k.into(), v.to_vec()));
    set("k1", b"12345").unwrap();
    set("k2", b"12345").unwrap();
    let e = set("k3", b"1").unwrap_err();
    assert!(matches!(&e, KvError::Other(m) if m.contains("--kv-max-keys")));
    // Replacing a value counts the difference only.
    set("k1", b"1234567890").unwrap();
    let e = set("k1", b"123456789012345").unwrap_err();
    assert!(matches!(&e, KvError::Other(m) if m.contains("--kv-max-bytes")));
    let got = kv
        .with("a", &a, limits, |bkt, _| Ok(bkt.get("k1").cloned()))
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"1234567890"[..]));
    // Deleting frees both.
    kv.with("a", &a, limits, |bkt, u| {
        u.delete(bkt, "k2");
        Ok(())
    })
    .unwrap();
    set("k3", b"1").unwrap();
    // Oversized keys and values are errors too.
    assert!(set(&"x".repeat(MAX_KEY + 1), b"").is_err());
}

#[test]
fn namespaces_and_buckets_are_separate() {
    let limits = limits(10, 1000);
    let kv = MemoryKv::new(limits);
    kv.with("a", &bucket(&kv, "a", "x"), limits, |b, u| {
        u.set(b, "k".into(), b"a".to_vec())
    })
    .unwrap();
    for (ns, other) in [("b", bucket(&kv, "b", "x")), ("a", bucket(&kv, "a", "y"))] {
        let got = kv
            .with(ns, &other, limits, |b, _| Ok(b.get("k").cloned()))
            .unwrap();
        assert_eq!(got, None);
    }
    // The bucket limit counts buckets as they are opened.
    for i in 0..MAX_BUCKETS {
        let _ = kv.open_bucket("c", &format!("b{i}"));
    }
    assert!(kv.open_bucket("c", "one-more").is_err());
    assert!(kv.open_bucket("c", "b0").is_ok(), "reopening is fine");
    assert!(check_batch(&vec![String::new(); PAGE + 1]).is_err());
    assert!(kv.has_bucket(&name("c"), "b0"));
    assert!(!kv.has_bucket(&name("c"), "one-more"));
    assert!(!kv.has_bucket(&name("d"), "b0"));
}

#[test]
fn compare_and_swap_when_absent_present_and_mismatched() {
    let kv = MemoryKv::new(limits(10, 1000));
    let (a, l) = (name("a"), kv.limits());
    let apply = |op: KvOp| kv.apply(&a, &op, l);
    // Before the bucket is opened, as get and set answer.
    assert_eq!(apply(cas("k", None, b"1")), Err(KvError::NoSuchStore));
    apply(KvOp::Open { bucket: "b".into() }).unwrap();

    // `None`: only when absent.
    assert_eq!(apply(cas("k", None, b"1")), Ok(KvReply::Bool(true)));
    assert_eq!(apply(get_op("k")), Ok(KvReply::Value(Some(b"1".to_vec()))));
    let g = kv.generation();
    assert_eq!(apply(cas("k", None, b"2")), Ok(KvReply::Bool(false)));
    // `Some`: only when equal.
    assert_eq!(apply(cas("k", Some(b"9"), b"2")), Ok(KvReply::Bool(false)));
    assert_eq!(apply(cas("k", Some(b""), b"2")), Ok(KvReply::Bool(false)));
    assert_eq!(kv.generation(), g, "a mismatch changes nothing");
    assert_eq!(apply(get_op("k")), Ok(KvReply::Value(Some(b"1".to_vec()))));
    assert_eq!(apply(cas("k", Some(b"1"), b"2")), Ok(KvReply::Bool(true)));
    assert_eq!(apply(get_op("k")), Ok(KvReply::Value(Some(b"2".to_vec()))));
    // An empty value is a value, not absence.
    apply(set_op("e", b"")).unwrap();
    assert_eq!(apply(cas("e", None, b"x")), Ok(KvReply::Bool(false)));
    assert_eq!(apply(cas("e", Some(b""), b"x")), Ok(KvReply::Bool(true)));
    // A key not present never equals `Some`.
    assert_eq!(apply(cas("n", Some(b""), b"x")), Ok(KvReply::Bool(false)));
    // Sizes are checked as a set's, match or not.
    let long = "k".repeat(MAX_KEY + 1);
    assert!(apply(cas(&long, None, b"x")).is_err());
    assert!(apply(cas("k", Some(b"zz"), &vec![0; MAX_VALUE + 1])).is_err());
}

#[test]
fn compare_and_swap_meets_the_quotas_of_a_set() {
    let kv = MemoryKv::new(limits(2, 20));
    let (a, l) = (name("a"), kv.limits());
    let apply = |op: KvOp| kv.apply(&a, &op, l);
    apply(KvOp::Open { bucket: "b".into() }).unwrap();
    assert_eq!(apply(cas("k1", None, b"12345")), Ok(KvReply::Bool(true)));
    apply(set_op("k2", b"1")).unwrap();
    // A third key is past --kv-max-keys; refused, nothing stored.
    quota_error(apply(cas("k3", None, b"1")), "--kv-max-keys");
    assert_eq!(apply(get_op("k3")), Ok(KvReply::Value(None)));
    // Growing k1 past --kv-max-bytes; refused, old value kept.
    quota_error(
        apply(cas("k1", Some(b"12345"), &[b'x'; 16])),
        "--kv-max-bytes",
    );
    assert_eq!(
        apply(get_op("k1")),
        Ok(KvReply::Value(Some(b"12345".to_vec())))
    );
    // A mismatch is no write, so it meets no quota.
    assert_eq!(apply(cas("k3", Some(b"1"), b"1")), Ok(KvReply::Bool(false)));
    // The quotas are the operation's, not the store's own.
    let wider = limits(3, 20);
    assert_eq!(
        kv.apply(&a, &cas("k3", None, b"1"), wider),
        Ok(KvReply::Bool(true))
    );
    assert_eq!(kv.usage(), vec![("a".to_string(), 3, 13)]);
}

/// Every kind of operation, errors and quota refusals included.
fn script() -> Vec<(&'static str, KvOp)> {
    let bucket = || "b".to_string();
    let inc = |key: &str, delta| KvOp::Increment {
        bucket: bucket(),
        key: key.into(),
        delta,
    };
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let pairs = (0..6u8).map(|i| (format!("m{i}"), vec![i])).collect();
    let open = |bucket: &str| KvOp::Open {
        bucket: bucket.into(),
    };
    vec![
        ("a", get_op("k")),
        ("a", open("b")),
        ("a", open("../x")),
        ("z", open("b")),
        ("a", set_op("k", b"v1")),
        ("a", cas("k", Some(b"v1"), b"v2")),
        ("a", cas("k", Some(b"v1"), b"v3")),
        ("a", cas("c", None, b"new")),
        ("a", inc("n", 5)),
        ("a", inc("k", 1)),
        ("z", inc("n", 2)),
        (
            "a",
            KvOp::SetMany {
                bucket: bucket(),
                pairs,
            },
        ),
        (
            "a",
            KvOp::DeleteMany {
                bucket: bucket(),
                keys: keys(&["m0", "none"]),
            },
        ),
        (
            "a",
            KvOp::Delete {
                bucket: bucket(),
                key: "c".into(),
            },
        ),
        (
            "a",
            KvOp::Exists {
                bucket: bucket(),
                key: "k".into(),
            },
        ),
        (
            "a",
            KvOp::ListKeys {
                bucket: bucket(),
                cursor: None,
            },
        ),
        (
            "a",
            KvOp::GetMany {
                bucket: bucket(),
                keys: keys(&["k", "x", "m1"]),
            },
        ),
        ("z", get_op("n")),
    ]
}

#[test]
fn two_copies_given_the_same_ops_agree() {
    let run = || {
        let kv = MemoryKv::new(limits(6, 200));
        let replies: Vec<_> = script()
            .into_iter()
            .map(|(ns, op)| kv.apply(&name(ns), &op, kv.limits()))
            .collect();
        (replies, kv.export(), kv.usage())
    };
    let (one, two) = (run(), run());
    assert_eq!(one, two);
    let (replies, data, _) = one;
    // The script met every kind of answer, a quota refusal among them.
    assert!(replies.contains(&Err(KvError::NoSuchStore)));
    assert!(replies.contains(&Ok(KvReply::Bool(false))));
    assert!(replies.contains(&Ok(KvReply::Number(5))));
    assert!(
        replies
            .iter()
            .any(|r| matches!(r, Err(KvError::Other(m)) if m.contains("--kv-max-keys")))
    );
    assert_eq!(data["a"]["b"]["k"], b"v2");
    assert_eq!(data["z"]["b"]["n"], b"2");
    // `call` answers as `apply` does.
    let (called, applied) = (MemoryKv::new(limits(6, 200)), MemoryKv::new(limits(6, 200)));
    for (ns, op) in script() {
        let reply = futures::executor::block_on(called.call(&name(ns), op.clone()));
        assert_eq!(reply, applied.apply(&name(ns), &op, applied.limits()));
    }
    assert_eq!(called.export(), applied.export());
}
