//! The checks on what one side of a store link reads from the other,
//! without I/O: the client's on a list answer spread over frames, and the
//! entry the fuzz target uses to run every check on one frame.

use super::{
    AwsCredentials, MAX_NAMES, ObjectName, StoreError, check_length, check_name, check_prefix,
    clean, names_frames,
};
use crate::v1::{self, store_request::Op, store_response::Result as Answer};
use crate::{Body, Frame, encode_frame};

/// A list answer as it is read: the names so far, each checked against
/// the one before and the prefix asked for.
pub(crate) struct Names<'a> {
    prefix: &'a str,
    got: Vec<ObjectName>,
}

impl<'a> Names<'a> {
    /// Ready for the answer to a list of `prefix`.
    pub(crate) fn new(prefix: &'a str) -> Names<'a> {
        Names {
            prefix,
            got: Vec::new(),
        }
    }

    /// Takes one `StoreNames` frame of the answer: `None` while more are
    /// to come, then every name. Refused: more than [`MAX_NAMES`] in all,
    /// a name that is not an [`ObjectName`], one outside the prefix, out
    /// of order or repeated, an empty frame that says more follow. A
    /// truncated list is the host's failure: the link goes on.
    pub(crate) fn add(
        &mut self,
        part: v1::StoreNames,
    ) -> Result<Option<Vec<ObjectName>>, StoreError> {
        if part.names.len() > MAX_NAMES - self.got.len() {
            return Err(StoreError::Protocol(format!(
                "the host listed more than {MAX_NAMES} names in one answer"
            )));
        }
        if part.more && part.names.is_empty() {
            return Err(StoreError::Protocol(
                "the host sent an empty part of a list and said more follow".into(),
            ));
        }
        for name in part.names {
            let name = ObjectName::new(name).map_err(|e| {
                StoreError::Protocol(format!("the host listed a bad name: {}", inner(e)))
            })?;
            if !name.as_str().starts_with(self.prefix) {
                return Err(StoreError::Protocol(format!(
                    "the host listed {name} for the prefix {:?}",
                    self.prefix
                )));
            }
            if self.got.last().is_some_and(|last| *last >= name) {
                return Err(StoreError::Protocol(format!(
                    "the host listed {name} out of order or twice"
                )));
            }
            self.got.push(name);
        }
        if part.more {
            return Ok(None);
        }
        if part.truncated {
            return Err(StoreError::Failed(format!(
                "there are more than {} objects under {:?}, more than one answer holds: list a narrower prefix",
                self.got.len(),
                self.prefix
            )));
        }
        Ok(Some(std::mem::take(&mut self.got)))
    }
}

/// The message of an error, without its variant's words.
fn inner(e: StoreError) -> String {
    match e {
        StoreError::Protocol(s) | StoreError::Failed(s) => s,
        e => e.to_string(),
    }
}

/// Runs every check either side makes on `frame`, as it would read it on
/// a store link. Returns, never panics; the answers the host would make
/// of a name list read must each fit a frame.
pub fn exercise(frame: &Frame) {
    match &frame.body {
        Some(Body::StoreRequest(request)) => match &request.op {
            Some(Op::Get(g)) => {
                let _ = check_name(&g.name);
            }
            Some(Op::Put(p)) => {
                let _ = check_name(&p.name);
                let _ = check_length(p.length);
            }
            Some(Op::List(l)) => {
                let _ = check_prefix(&l.prefix);
            }
            Some(Op::Delete(d)) => {
                let _ = check_name(&d.name);
            }
            Some(Op::Credentials(_)) | None => {}
        },
        Some(Body::StoreResponse(response)) => match &response.result {
            Some(Answer::Object(o)) => {
                let _ = check_length(o.length);
            }
            Some(Answer::Names(n)) => {
                let mut names = Names::new("");
                let mut part = n.clone();
                part.more = false;
                part.truncated = false;
                if let Ok(Some(names)) = names.add(part) {
                    for frame in names_frames(names, "") {
                        assert!(encode_frame(&frame).is_ok(), "a list answer over a frame");
                    }
                }
            }
            Some(Answer::Credentials(c)) => {
                let _ = AwsCredentials::try_from(c.clone());
            }
            Some(Answer::Failed(f)) => {
                let _ = clean(&f.why);
            }
            Some(Answer::Absent(_) | Answer::Done(_) | Answer::Exists(_)) | None => {}
        },
        _ => {}
    }
}
