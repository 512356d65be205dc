//! The store channel: the enclave keeps sealed objects (encrypted and
//! authenticated inside it) in storage the host provides, and asks the
//! host for AWS credentials for its own calls to KMS.
//!
//! A store link is a control-link connection whose runtime Hello says
//! [`Channel::Store`](crate::Channel::Store); the host proxy echoes the
//! channel in its Hello when it serves it. Then, strictly in turn, one
//! request ([`v1::StoreRequest`]) and its answer ([`v1::StoreResponse`]).
//! An object's bytes do not go in frames: they follow the `StorePut`
//! request or the `StoreObject` answer raw, exactly as many as it
//! announces, so an object can be up to [`MAX_OBJECT`] while frames stay
//! within [`MAX_FRAME`](crate::MAX_FRAME). A put may be create-only
//! (`StorePut.if_absent`): the host writes it only if no object of that
//! name exists, and otherwise answers `StoreExists` and writes nothing
//! ([`Store::put_new`], [`StoreClient::put_new`]).
//!
//! - [`StoreClient`] is the enclave's side: every answer is bounded and
//!   checked (lengths, names, order, counts, credentials' characters); an
//!   answer that breaks the protocol ends the link.
//! - [`serve`] runs the host's side over any [`Store`]; a malformed
//!   request ends that link only. [`MemoryStore`] is a [`Store`] in memory,
//!   for tests and development.
//!
//! The host sees names, sizes and ciphertext. Whatever it returns, the
//! enclave authenticates before use: this module only makes sure that
//! reading it cannot exhaust the enclave or confuse the link.

use std::fmt;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::bounded;
use crate::{FrameError, v1};

mod checks;
mod client;
mod memory;
mod server;

pub use client::StoreClient;
pub use memory::MemoryStore;
pub use server::{Store, serve};

#[doc(hidden)]
pub use checks::exercise as exercise_checks;
pub(crate) use server::names_frames;

/// The largest object, in bytes.
pub const MAX_OBJECT: u64 = 512 << 20;
/// The longest object name, in bytes.
pub const MAX_NAME: usize = 200;
/// The most names one list answer holds; a host with more says the list
/// is truncated.
pub const MAX_NAMES: usize = 10_000;
/// The most bytes of a host's "why" (a failure) kept, once cleaned.
pub const MAX_WHY: usize = 1024;

/// What went wrong on a store link.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The link: closed, cut, a frame over the limit or not protobuf, or
    /// a failed handshake.
    #[error("store link: {0}")]
    Frame(#[from] FrameError),
    /// The host could not do it, and said why (cleaned and bounded). The
    /// link goes on.
    #[error("the host's store failed: {0}")]
    Failed(String),
    /// An answer that does not fit the request, a length over
    /// [`MAX_OBJECT`], a name that is not an [`ObjectName`], more names
    /// than allowed… Also an argument refused before anything was sent
    /// (a bad name or prefix, an object too large).
    #[error("store protocol: {0}")]
    Protocol(String),
    /// The transport failed.
    #[error("store link: {0}")]
    Io(#[from] std::io::Error),
}

/// The name of a stored object: 1 to [`MAX_NAME`] bytes of `[a-z0-9._-]`
/// and `/`, with no leading or trailing `/`, no `//`, and no `.` or `..`
/// segment. A name is a relative path no store can be led out of by.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// `name`, if it is a valid object name.
    pub fn new(name: String) -> Result<ObjectName, StoreError> {
        check_name(&name).map_err(StoreError::Protocol)?;
        Ok(ObjectName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, as a String.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectName({:?})", self.0)
    }
}

impl FromStr for ObjectName {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_name(s).map_err(StoreError::Protocol)?;
        Ok(ObjectName(s.to_string()))
    }
}

impl TryFrom<String> for ObjectName {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ObjectName::new(s)
    }
}

impl TryFrom<&str> for ObjectName {
    type Error = StoreError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl AsRef<str> for ObjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The bytes names and prefixes are made of.
fn name_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')
}

/// `s` as an error message quotes it: its first bytes, escaped.
fn quoted(s: &str) -> String {
    format!("{:?}", bounded::cut(s, 64))
}

/// Why `s` is not an object name.
fn check_name(s: &str) -> Result<(), String> {
    let why = if s.is_empty() {
        "it is empty"
    } else if s.len() > MAX_NAME {
        "it is over 200 bytes"
    } else if !s.bytes().all(name_byte) {
        "names are made of a-z, 0-9, '.', '_', '-' and '/'"
    } else if s.starts_with('/') || s.ends_with('/') {
        "it starts or ends with '/'"
    } else if s.split('/').any(str::is_empty) {
        "it has '//'"
    } else if s.split('/').any(|seg| seg == "." || seg == "..") {
        "it has a '.' or '..' segment"
    } else {
        return Ok(());
    };
    Err(format!("{} is not an object name: {why}", quoted(s)))
}

/// Why `prefix` cannot start any object name (the empty prefix is every
/// name). Its whole segments follow the rules of a name; its last,
/// partial one may be anything a segment starts with.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    let why = if prefix.len() > MAX_NAME {
        "it is over 200 bytes"
    } else if !prefix.bytes().all(name_byte) {
        "names are made of a-z, 0-9, '.', '_', '-' and '/'"
    } else if prefix.starts_with('/') {
        "it starts with '/'"
    } else if prefix
        .split('/')
        .rev()
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        "it has '//', or a '.' or '..' segment"
    } else {
        return Ok(());
    };
    Err(format!("{} is not a name prefix: {why}", quoted(prefix)))
}

/// AWS credentials the host hands the enclave, for its own calls to KMS.
/// Its `Debug` shows the key id and the expiry only.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `AKIA…` (long-term) or `ASIA…` (temporary).
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
    /// When they expire, seconds since the Unix epoch, if the host said.
    pub expires_unix: Option<u64>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

impl From<AwsCredentials> for v1::AwsCredentials {
    fn from(c: AwsCredentials) -> Self {
        v1::AwsCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token.unwrap_or_default(),
            expires_unix: c.expires_unix.unwrap_or(0),
        }
    }
}

/// Credentials as read from the host, checked: each part non-empty where
/// required, bounded, and visible ASCII only (they end up in HTTP headers).
impl TryFrom<v1::AwsCredentials> for AwsCredentials {
    type Error = StoreError;

    fn try_from(c: v1::AwsCredentials) -> Result<Self, Self::Error> {
        let check = |what: &str, s: &str, most: usize| {
            if s.is_empty() || s.len() > most || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(StoreError::Protocol(format!(
                    "the host's AWS credentials have a {what} that is empty, over {most} bytes, or not visible ASCII"
                )));
            }
            Ok(())
        };
        check("access key id", &c.access_key_id, 128)?;
        check("secret access key", &c.secret_access_key, 256)?;
        if !c.session_token.is_empty() {
            check("session token", &c.session_token, 16 * 1024)?;
        }
        Ok(AwsCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: Some(c.session_token).filter(|t| !t.is_empty()),
            expires_unix: Some(c.expires_unix).filter(|&t| t != 0),
        })
    }
}

/// A host's words, as the enclave keeps them: control characters
/// escaped, at most [`MAX_WHY`] bytes.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_WHY {
            break;
        }
    }
    bounded::cut(&out, MAX_WHY).into_owned()
}

/// `len`, if an object may be that long.
pub(crate) fn check_length(len: u64) -> Result<u64, StoreError> {
    if len > MAX_OBJECT {
        return Err(StoreError::Protocol(format!(
            "an object of {len} bytes, over the {MAX_OBJECT}-byte limit"
        )));
    }
    Ok(len)
}

/// Reads exactly `len` raw bytes (at most [`MAX_OBJECT`], checked by the
/// caller): memory grows as bytes arrive, never ahead of them by more
/// than a MiB.
pub(crate) async fn read_raw<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u64,
) -> Result<Vec<u8>, StoreError> {
    let mut data = Vec::with_capacity(len.min(1 << 20) as usize);
    let got = (&mut *r).take(len).read_to_end(&mut data).await?;
    if got as u64 != len {
        return Err(FrameError::Truncated.into());
    }
    Ok(data)
}

/// The kind of an answer, as errors name it.
pub(crate) fn answer_kind(result: &v1::store_response::Result) -> &'static str {
    use v1::store_response::Result as R;
    match result {
        R::Object(_) => "an object",
        R::Absent(_) => "absent",
        R::Names(_) => "names",
        R::Done(_) => "done",
        R::Failed(_) => "failed",
        R::Credentials(_) => "credentials",
        R::Exists(_) => "exists",
    }
}

/// The kind of a frame, as errors name it.
pub(crate) fn frame_kind(body: &crate::Body) -> &'static str {
    use crate::Body;
    match body {
        Body::Hello(_) => "Hello",
        Body::Log(_) => "log record",
        Body::GuestOutput(_) => "guest output",
        Body::Dropped(_) => "Dropped",
        Body::StoreRequest(_) => "store request",
        Body::StoreResponse(_) => "store answer",
    }
}

#[cfg(test)]
mod tests;
