//! One condition of a statement (`"StringEquals": {"kms:...": [...]}` is
//! one per key), the request's condition keys, and `*`/`?` matching.

use std::collections::BTreeMap;

use super::PolicyError;

/// The condition keys of one request, as IAM sees them: names compare
/// without case (IAM's rule), values are kept as sent.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    values: BTreeMap<String, Vec<String>>,
}

/// Condition key of the attested image digest (PCR0), AWS's name.
pub const IMAGE_SHA384: &str = "kms:RecipientAttestation:ImageSha384";
/// Prefix of the per-PCR condition keys (`...:PCR0` to `...:PCR31`).
pub const PCR_PREFIX: &str = "kms:RecipientAttestation:PCR";
/// Prefix of the per-entry encryption context keys.
pub const ENCRYPTION_CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
/// The multi-valued key listing the encryption context's keys.
pub const ENCRYPTION_CONTEXT_KEYS: &str = "kms:EncryptionContextKeys";

impl RequestContext {
    /// A context with no keys: what a call without Recipient or encryption
    /// context presents.
    pub fn new() -> RequestContext {
        RequestContext::default()
    }

    /// Sets `key` to `values` (a multi-valued key has several).
    pub fn insert(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(key.to_ascii_lowercase(), values);
    }

    /// Adds `kms:EncryptionContext:<k>` for each entry and
    /// `kms:EncryptionContextKeys` (absent when the context is empty, as
    /// in KMS).
    pub fn add_encryption_context(&mut self, context: &BTreeMap<String, String>) {
        for (k, v) in context {
            self.insert(&format!("{ENCRYPTION_CONTEXT_PREFIX}{k}"), vec![v.clone()]);
        }
        if !context.is_empty() {
            self.insert(ENCRYPTION_CONTEXT_KEYS, context.keys().cloned().collect());
        }
    }

    /// Adds the attested PCRs: `ImageSha384` (PCR0) and `PCR<n>`, in
    /// lowercase hex as AWS documents them.
    pub fn add_attestation(&mut self, pcrs: &BTreeMap<u32, Vec<u8>>) {
        for (index, value) in pcrs {
            let hex = hex::encode(value);
            if *index == 0 {
                self.insert(IMAGE_SHA384, vec![hex.clone()]);
            }
            self.insert(&format!("{PCR_PREFIX}{index}"), vec![hex]);
        }
    }

    /// The values of `key`, if the request has it.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(Vec::as_slice)
    }
}

/// The string operators the stand-in evaluates (and `Null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    EqualsIgnoreCase,
    Like,
    Null,
}

/// How a multi-valued request key is compared (`ForAnyValue:` is what a
/// bare operator does here too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Any,
    All,
}

/// One operator applied to one condition key, with its allowed values.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The operator as written (for messages).
    operator_name: String,
    operator: Operator,
    negated: bool,
    if_exists: bool,
    set: SetQualifier,
    key: String,
    values: Vec<String>,
}

impl Condition {
    /// Parses `operator` and one `key: values` entry under it.
    pub fn parse(
        operator: &str,
        key: &str,
        values: &serde_json::Value,
    ) -> Result<Self, PolicyError> {
        let (set, rest) = if let Some(r) = operator.strip_prefix("ForAnyValue:") {
            (SetQualifier::Any, r)
        } else if let Some(r) = operator.strip_prefix("ForAllValues:") {
            (SetQualifier::All, r)
        } else {
            (SetQualifier::Any, operator)
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (op, negated) = match rest {
            "StringEquals" => (Operator::Equals, false),
            "StringNotEquals" => (Operator::Equals, true),
            "StringEqualsIgnoreCase" => (Operator::EqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Operator::EqualsIgnoreCase, true),
            "StringLike" => (Operator::Like, false),
            "StringNotLike" => (Operator::Like, true),
            "Null" if !if_exists => (Operator::Null, false),
            _ => {
                return Err(PolicyError::new(format!(
                    "condition operator {operator:?} is not supported by the stand-in \
                     (use StringEquals, StringEqualsIgnoreCase, StringLike, their Not \
                     and IfExists forms, or Null)"
                )));
            }
        };
        let values = string_list(values).ok_or_else(|| {
            PolicyError::new(format!(
                "condition {operator} {key:?}: values must be a string or a list of strings"
            ))
        })?;
        if values.is_empty() {
            return Err(PolicyError::new(format!(
                "condition {operator} {key:?} has no values"
            )));
        }
        Ok(Condition {
            operator_name: operator.to_string(),
            operator: op,
            negated,
            if_exists,
            set,
            key: key.to_string(),
            values,
        })
    }

    /// A note when a value can never match because AWS gives PCRs in
    /// lowercase hex and the comparison is case-sensitive.
    pub fn warning(&self) -> Option<String> {
        let attestation = self
            .key
            .to_ascii_lowercase()
            .starts_with("kms:recipientattestation:");
        let upper = self
            .values
            .iter()
            .any(|v| v.chars().any(|c| c.is_ascii_uppercase()));
        (attestation && upper && self.operator != Operator::EqualsIgnoreCase).then(|| {
            format!(
                "{} {}: PCR values are lowercase hex; an uppercase value never matches \
                 (use lowercase or StringEqualsIgnoreCase)",
                self.operator_name, self.key
            )
        })
    }

    /// Whether the request satisfies this condition; when not, says why
    /// in terms of what the request had.
    pub fn check(&self, ctx: &RequestContext) -> Result<(), String> {
        let present = ctx.get(&self.key).filter(|v| !v.is_empty());
        if self.operator == Operator::Null {
            // `"Null": {"k": "true"}` asks that k be absent.
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return match (want_absent, present) {
                (true, None) | (false, Some(_)) => Ok(()),
                (true, Some(_)) => Err(format!("Null {}: the request has it", self.key)),
                (false, None) => Err(format!("Null {}: the request lacks it", self.key)),
            };
        }
        let Some(request_values) = present else {
            // IAM: a missing key fails a positive operator, passes a
            // negated one, an IfExists form, and ForAllValues (vacuously).
            if self.if_exists || self.negated || self.set == SetQualifier::All {
                return Ok(());
            }
            return Err(format!(
                "{} {}: the request has no {}{}",
                self.operator_name,
                self.key,
                self.key,
                absent_hint(&self.key)
            ));
        };
        let matches_one = |v: &String| self.values.iter().any(|p| self.matches(p, v));
        let ok = match (self.set, self.negated) {
            (SetQualifier::Any, false) => request_values.iter().any(matches_one),
            (SetQualifier::All, false) => request_values.iter().all(matches_one),
            (SetQualifier::Any, true) => !request_values.iter().any(matches_one),
            (SetQualifier::All, true) => request_values.iter().all(|v| !matches_one(v)),
        };
        if ok {
            return Ok(());
        }
        let had = request_values.join(", ");
        let relation = if self.negated { "is in" } else { "is not in" };
        Err(format!(
            "{}{had} {relation} the policy's {} ({}: {}){}",
            subject(&self.key),
            self.key,
            self.operator_name,
            self.values.join(", "),
            debug_image_hint(&self.key, request_values)
        ))
    }

    fn matches(&self, pattern: &str, value: &str) -> bool {
        match self.operator {
            Operator::Equals => pattern == value,
            Operator::EqualsIgnoreCase => pattern.to_lowercase() == value.to_lowercase(),
            Operator::Like => glob(pattern, value, false),
            Operator::Null => false,
        }
    }
}

/// How a failure message names the request's value of `key`.
fn subject(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if lower == IMAGE_SHA384.to_ascii_lowercase() {
        return "PCR0 ".into();
    }
    if let Some(n) = lower.strip_prefix(&PCR_PREFIX.to_ascii_lowercase()) {
        return format!("PCR{n} ");
    }
    format!("{key} value ")
}

/// Why a request may lack `key`: a RecipientAttestation key exists only
/// with a verified attestation document.
fn absent_hint(key: &str) -> &'static str {
    if key
        .to_ascii_lowercase()
        .starts_with("kms:recipientattestation:")
    {
        " (no valid attestation document in Recipient)"
    } else {
        ""
    }
}

/// Names the debug-mode image: Nitro gives an enclave started with
/// `--debug-mode` all-zero PCRs, which a policy rarely means to allow.
fn debug_image_hint(key: &str, values: &[String]) -> &'static str {
    let lower = key.to_ascii_lowercase();
    let pcr0 = lower == IMAGE_SHA384.to_ascii_lowercase()
        || lower == format!("{}0", PCR_PREFIX.to_ascii_lowercase());
    let zeros = values
        .iter()
        .any(|v| !v.is_empty() && v.bytes().all(|b| b == b'0'));
    if pcr0 && zeros {
        " (debug-mode image: PCR0 all zeros)"
    } else {
        ""
    }
}

/// A JSON string, number or bool, or a list of them, as strings.
pub fn string_list(value: &serde_json::Value) -> Option<Vec<String>> {
    use serde_json::Value;
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

/// IAM's wildcard match: `*` is any run of characters, `?` any one;
/// `fold` compares without case (actions are case-insensitive).
pub fn glob(pattern: &str, value: &str, fold: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, v) = (norm(pattern), norm(value));
    // Greedy match with one backtrack point (the last `*`): linear in
    // practice and never recursive, so no input can exhaust the stack.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == v[vi] => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}
