//! Histories: the events clients recorded, read from JSON lines and paired
//! into operations (see the parent module for the format).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// What an operation asked of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Read the value.
    Read,
    /// Set the value to these bytes.
    Write(Vec<u8>),
    /// Add this to the decimal counter in the value (absent counts as 0).
    Incr(u64),
    /// Set the value to `new` if it is `old` (`None`: absent).
    Cas {
        /// The value expected (`None`: the key is absent).
        old: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
    /// Remove the key.
    Delete,
}

impl Call {
    /// The name this operation has in a history's `op` field.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::Write(_) => "write",
            Call::Incr(_) => "incr",
            Call::Cas { .. } => "cas",
            Call::Delete => "delete",
        }
    }
}

/// What an operation that completed (`ok`) answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read's value (`None`: absent).
    Read(Option<Vec<u8>>),
    /// An increment's new value.
    Incr(u64),
    /// Whether a compare-and-swap swapped.
    Cas(bool),
    /// A write or delete finished (they answer nothing else).
    Done,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A client sent this operation.
    Invoke(Call),
    /// The client's operation in flight completed with this answer.
    Ok(Outcome),
    /// The client's operation in flight was definitely not applied.
    Fail,
    /// The client's operation in flight may or may not have been applied.
    Info,
}

/// One event of a history, as a client recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who recorded it (a number in the JSON becomes its decimal text).
    pub client: String,
    /// The key the operation is on.
    pub key: String,
    /// Invocation or completion.
    pub kind: EventKind,
    /// When, in nanoseconds on one clock shared by every client.
    pub t_ns: u64,
}

/// A history that cannot be read or is not well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError {
    /// The 1-based line (from [`super::parse`]) or event (from
    /// [`super::check`]) at fault, if one is.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "history line {n}: {}", self.message),
            None => write!(f, "history: {}", self.message),
        }
    }
}

impl std::error::Error for HistoryError {}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Completed with this answer.
    Ok(Outcome),
    /// Definitely not applied.
    Failed,
    /// Unknown: an `info` completion, or still in flight when the history
    /// ends. It may have taken effect at any point after its invocation,
    /// or never.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The index of its invocation in the events.
    pub seq: usize,
    /// Who ran it.
    pub client: String,
    /// The key it is on.
    pub key: String,
    /// What it asked.
    pub call: Call,
    /// How it ended.
    pub status: Status,
    /// When it was invoked (ns).
    pub invoked: u64,
    /// When its completion was recorded; `None` if none was. Only an
    /// [`Status::Ok`] completion bounds when it took effect: an unknown
    /// outcome stays pending to the end of the history.
    pub returned: Option<u64>,
}

/// Pairs each client's invocations with their completions, in the order
/// of `events` (each client's own events must be in its order; clients may
/// interleave freely). Errors name the 0-based event index.
pub(crate) fn pair(events: &[Event]) -> Result<Vec<Operation>, (usize, String)> {
    let mut pairing = Pairing::default();
    for (i, e) in events.iter().enumerate() {
        match &e.kind {
            EventKind::Invoke(call) => pairing.invoke(i, e, call),
            _ => pairing.complete(e),
        }
        .map_err(|why| (i, why))?;
    }
    Ok(pairing.ops)
}

/// The operations paired so far, and where each client is.
#[derive(Default)]
struct Pairing<'a> {
    ops: Vec<Operation>,
    /// Per client: its operation in flight, as an index into `ops`.
    inflight: HashMap<&'a str, usize>,
    /// Per client: when its last operation completed.
    last_done: HashMap<&'a str, u64>,
}

impl<'a> Pairing<'a> {
    /// Event `i`, `e`, invokes `call`.
    fn invoke(&mut self, i: usize, e: &'a Event, call: &Call) -> Result<(), String> {
        let client = e.client.as_str();
        if let Some(&j) = self.inflight.get(client) {
            let seq = self.ops[j].seq;
            return Err(format!(
                "client {client} invoked an operation while its operation \
                 from event {seq} is in flight"
            ));
        }
        if let Some(&done) = self.last_done.get(client).filter(|&&d| d > e.t_ns) {
            return Err(format!(
                "client {client} invoked at {} ns, before its previous operation \
                 completed at {done} ns",
                e.t_ns
            ));
        }
        self.inflight.insert(client, self.ops.len());
        self.ops.push(Operation {
            seq: i,
            client: e.client.clone(),
            key: e.key.clone(),
            call: call.clone(),
            status: Status::Unknown,
            invoked: e.t_ns,
            returned: None,
        });
        Ok(())
    }

    /// `e` completes its client's operation in flight.
    fn complete(&mut self, e: &'a Event) -> Result<(), String> {
        let client = e.client.as_str();
        let Some(j) = self.inflight.remove(client) else {
            return Err(format!(
                "client {client} completed an operation it never invoked"
            ));
        };
        let op = &mut self.ops[j];
        if !e.key.is_empty() && e.key != op.key {
            return Err(format!(
                "completion on key {:?} of an operation on key {:?}",
                e.key, op.key
            ));
        }
        if e.t_ns < op.invoked {
            return Err(format!(
                "completed at {} ns, before its invocation at {} ns",
                e.t_ns, op.invoked
            ));
        }
        self.last_done.insert(client, e.t_ns);
        op.returned = Some(e.t_ns);
        op.status = match &e.kind {
            EventKind::Ok(outcome) if answers(&op.call, outcome) => Status::Ok(outcome.clone()),
            EventKind::Ok(outcome) => {
                return Err(format!(
                    "{outcome:?} is not an answer of {}",
                    op.call.name()
                ));
            }
            EventKind::Fail => Status::Failed,
            _ => Status::Unknown,
        };
        Ok(())
    }
}

/// Whether `outcome` is the kind of answer `call` gives.
fn answers(call: &Call, outcome: &Outcome) -> bool {
    matches!(
        (call, outcome),
        (Call::Read, Outcome::Read(_))
            | (Call::Incr(_), Outcome::Incr(_))
            | (Call::Cas { .. }, Outcome::Cas(_))
            | (Call::Write(_) | Call::Delete, Outcome::Done)
    )
}

/// Reads JSON lines (blank lines skipped) into events; see [`super::parse`].
pub(crate) fn parse(lines: &str) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    let mut line_of = Vec::new();
    // Per client: the key and call in flight, which an `ok` value and a
    // completion that leaves out `key` and `op` are read against.
    let mut inflight: HashMap<String, (String, Call)> = HashMap::new();
    for (n, line) in lines.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| HistoryError {
            line: Some(n + 1),
            message,
        };
        let value: Value = serde_json::from_str(line).map_err(|e| error(e.to_string()))?;
        let event = parse_event(&value, &inflight).map_err(error)?;
        match &event.kind {
            EventKind::Invoke(call) => {
                inflight.insert(event.client.clone(), (event.key.clone(), call.clone()));
            }
            _ => {
                inflight.remove(&event.client);
            }
        }
        events.push(event);
        line_of.push(n + 1);
    }
    // The JSON was fine; now the pairing, with errors on the right line.
    pair(&events).map_err(|(i, message)| HistoryError {
        line: Some(line_of[i]),
        message,
    })?;
    Ok(events)
}

/// One line's event; `inflight` says what each client has in flight.
fn parse_event(value: &Value, inflight: &HashMap<String, (String, Call)>) -> Result<Event, String> {
    let obj = value.as_object().ok_or("a line must be a JSON object")?;
    let client = match obj.get("client") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        _ => return Err("`client` must be a string or an unsigned integer".into()),
    };
    let t_ns = obj
        .get("t_ns")
        .and_then(Value::as_u64)
        .ok_or("`t_ns` must be an unsigned integer")?;
    let key = match obj.get("key") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err("`key` must be a string".into()),
    };
    let op = match obj.get("op") {
        Some(Value::String(s)) => Some(s.as_str()),
        None | Some(Value::Null) => None,
        Some(_) => return Err("`op` must be a string".into()),
    };
    let typ = obj.get("type").and_then(Value::as_str).unwrap_or("");
    if !matches!(typ, "invoke" | "ok" | "fail" | "info") {
        return Err(format!(
            "`type` must be invoke, ok, fail or info, not {typ:?}"
        ));
    }
    if typ == "invoke" {
        let key = key.ok_or("an invocation needs `key`")?;
        let op = op.ok_or("an invocation needs `op`")?;
        let call = parse_call(op, obj).map_err(|e| format!("{op}: {e}"))?;
        return Ok(Event {
            client,
            key,
            kind: EventKind::Invoke(call),
            t_ns,
        });
    }
    let Some((inflight_key, call)) = inflight.get(&client) else {
        return Err(format!(
            "client {client} completed an operation it never invoked"
        ));
    };
    if op.is_some_and(|op| op != call.name()) {
        return Err(format!(
            "completion of {op:?} for an invocation of {:?}",
            call.name()
        ));
    }
    let kind = match typ {
        "ok" => EventKind::Ok(parse_outcome(
            call,
            obj.get("value").unwrap_or(&Value::Null),
        )?),
        "fail" => EventKind::Fail,
        _ => EventKind::Info,
    };
    Ok(Event {
        client,
        key: key.unwrap_or_else(|| inflight_key.clone()),
        kind,
        t_ns,
    })
}

/// An invocation's call from `op` and `args`.
fn parse_call(op: &str, obj: &Map<String, Value>) -> Result<Call, String> {
    let args = obj.get("args").unwrap_or(&Value::Null);
    Ok(match op {
        "read" => Call::Read,
        "delete" => Call::Delete,
        "write" => Call::Write(bytes(args)?),
        // No delta means the common one.
        "incr" if args.is_null() => Call::Incr(1),
        "incr" => Call::Incr(number(args)?),
        "cas" => match args {
            Value::Object(m) => Call::Cas {
                old: optional_bytes(m.get("old").unwrap_or(&Value::Null))?,
                new: bytes(m.get("new").unwrap_or(&Value::Null))?,
            },
            Value::Array(a) if a.len() == 2 => Call::Cas {
                old: optional_bytes(&a[0])?,
                new: bytes(&a[1])?,
            },
            _ => return Err("`args` must be {\"old\": string or null, \"new\": string}".into()),
        },
        _ => return Err("`op` must be read, write, incr, cas or delete".into()),
    })
}

/// An `ok` completion's answer to `call`.
fn parse_outcome(call: &Call, value: &Value) -> Result<Outcome, String> {
    Ok(match call {
        Call::Read => Outcome::Read(optional_bytes(value)?),
        Call::Incr(_) => Outcome::Incr(number(value)?),
        Call::Cas { .. } => Outcome::Cas(match value {
            Value::Bool(b) => *b,
            Value::String(s) if s.trim() == "true" => true,
            Value::String(s) if s.trim() == "false" => false,
            _ => return Err("a cas answers true or false".into()),
        }),
        // Whatever a write or delete said, it said "done".
        Call::Write(_) | Call::Delete => Outcome::Done,
    })
}

/// A value: a JSON string, compared as its UTF-8 bytes.
fn bytes(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        _ => Err(format!("a value must be a JSON string, not {v}")),
    }
}

/// A value or `null` (absent).
fn optional_bytes(v: &Value) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::Null => Ok(None),
        _ => bytes(v).map(Some),
    }
}

/// An unsigned integer, or its decimal text (what curl recorded).
fn number(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("expected an unsigned integer, not {v}"))
}
