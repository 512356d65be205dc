//! Key policies: the IAM-style JSON document a real KMS key carries, read
//! and evaluated the way KMS does for the parts Nacre relies on (docs/
//! development.md, "The KMS dev stand-in").
//!
//! Every statement applies to every caller (the stand-in has one kind of
//! principal: whoever holds a configured credential), so what decides is
//! the action, the resource and the conditions. An explicit `Deny` wins;
//! without an `Allow` the answer is no.

mod condition;
#[cfg(test)]
mod tests;

pub use condition::{
    ENCRYPTION_CONTEXT_KEYS, ENCRYPTION_CONTEXT_PREFIX, IMAGE_SHA384, PCR_PREFIX, RequestContext,
};

use condition::{Condition, glob, string_list};
use serde_json::Value;

/// Why a policy document was not accepted (at start-up, never per call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key policy: {0}")]
pub struct PolicyError(String);

impl PolicyError {
    fn new(why: impl Into<String>) -> PolicyError {
        PolicyError(why.into())
    }
}

/// A parsed key policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
    warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
struct Statement {
    /// `Sid`, or `#<index>` when the statement has none (for messages).
    name: String,
    effect: Effect,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// What a policy says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it and none denies it.
    Allow,
    /// A `Deny` statement matched: it wins over any `Allow`.
    ExplicitDeny {
        /// The statement's `Sid` (or `#index`).
        statement: String,
    },
    /// No statement allows it; one line per statement that came close.
    ImplicitDeny {
        /// Why each `Allow` statement naming the action did not apply.
        reasons: Vec<String>,
    },
}

impl Policy {
    /// Parses a policy document; anything the stand-in would not evaluate
    /// as KMS does (`NotAction`, an unknown operator, a missing `Effect`)
    /// is refused here, so a policy never silently means something else.
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| PolicyError::new(format!("not JSON: {e}")))?;
        let Value::Object(top) = doc else {
            return Err(PolicyError::new("the document is not a JSON object"));
        };
        let statements = match top.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(v @ Value::Object(_)) => vec![v],
            Some(_) => return Err(PolicyError::new("Statement must be an object or a list")),
            None => return Err(PolicyError::new("the document has no Statement")),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| Statement::parse(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        let warnings = statements
            .iter()
            .flat_map(|s| s.conditions.iter().filter_map(Condition::warning))
            .collect();
        Ok(Policy {
            statements,
            warnings,
        })
    }

    /// Things in the policy that parse but are likely mistakes.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Evaluates `action` (`kms:Decrypt`) on `resource` (the key ARN).
    pub fn evaluate(&self, action: &str, resource: &str, ctx: &RequestContext) -> Decision {
        let mut allowed = false;
        let mut reasons = Vec::new();
        for s in &self.statements {
            if !s.applies_to(action, resource) {
                continue;
            }
            match (s.effect, s.check(ctx)) {
                (Effect::Deny, Ok(())) => {
                    return Decision::ExplicitDeny {
                        statement: s.name.clone(),
                    };
                }
                (Effect::Allow, Ok(())) => allowed = true,
                (Effect::Allow, Err(why)) => reasons.push(format!("statement {}: {why}", s.name)),
                (Effect::Deny, Err(_)) => {}
            }
        }
        if allowed {
            return Decision::Allow;
        }
        if reasons.is_empty() {
            reasons.push(format!("no statement allows {action}"));
        }
        Decision::ImplicitDeny { reasons }
    }
}

impl Statement {
    fn parse(index: usize, value: &Value) -> Result<Statement, PolicyError> {
        let Value::Object(map) = value else {
            return Err(PolicyError::new(format!(
                "statement #{index} is not an object"
            )));
        };
        let name = match map.get("Sid") {
            Some(Value::String(s)) if !s.is_empty() => format!("{s:?}"),
            _ => format!("#{index}"),
        };
        let err = |why: &str| PolicyError::new(format!("statement {name}: {why}"));
        for key in map.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
                "NotAction" | "NotResource" | "NotPrincipal" => {
                    return Err(err(&format!("{key} is not supported by the stand-in")));
                }
                other => return Err(err(&format!("unknown field {other:?}"))),
            }
        }
        let effect = match map.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => return Err(err("Effect must be \"Allow\" or \"Deny\"")),
        };
        // Every principal is taken to be the caller; it must still be
        // there and well-formed, as KMS requires of a key policy.
        match map.get("Principal") {
            Some(Value::String(s)) if s == "*" => {}
            Some(Value::Object(_)) => {}
            _ => {
                return Err(err(
                    "Principal must be \"*\" or an object such as {\"AWS\": ...}",
                ));
            }
        }
        let list = |field: &str| -> Result<Vec<String>, PolicyError> {
            match map.get(field).and_then(string_list) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(err(&format!(
                    "{field} must be a string or a list of strings"
                ))),
            }
        };
        let actions = list("Action")?;
        let resources = list("Resource")?;
        let conditions = match map.get("Condition") {
            None => Vec::new(),
            Some(Value::Object(ops)) => parse_conditions(ops).map_err(|e| err(&e.0))?,
            Some(_) => return Err(err("Condition must be an object")),
        };
        Ok(Statement {
            name,
            effect,
            actions,
            resources,
            conditions,
        })
    }

    fn applies_to(&self, action: &str, resource: &str) -> bool {
        self.actions.iter().any(|p| glob(p, action, true))
            && self.resources.iter().any(|p| glob(p, resource, false))
    }

    /// Every condition must hold (IAM ANDs operators and keys).
    fn check(&self, ctx: &RequestContext) -> Result<(), String> {
        self.conditions.iter().try_for_each(|c| c.check(ctx))
    }
}

fn parse_conditions(ops: &serde_json::Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (operator, keys) in ops {
        let Value::Object(keys) = keys else {
            return Err(PolicyError::new(format!(
                "Condition {operator:?} must map condition keys to values"
            )));
        };
        for (key, values) in keys {
            out.push(Condition::parse(operator, key, values)?);
        }
    }
    Ok(out)
}
