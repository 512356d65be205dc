//! Key-value storage (`wasi:keyvalue`, and compare-and-swap from
//! `nacre:enclave/kv-atomics`): the guest's own buckets, kept by the
//! runtime across requests and redeploys under the same guest name.
//!
//! Each guest name has a private namespace; no guest can open another's.
//! The runtime enforces per-guest quotas (`--kv-max-keys`,
//! `--kv-max-bytes`): a write past them returns an [`Error`] and changes
//! nothing.
//!
//! ```rust,ignore
//! use nacre_sdk::kv::Store;
//!
//! let store = Store::open("default")?;
//! let visits = store.increment("visits", 1)?;
//! store.set_json("last", &serde_json::json!({ "visits": visits }))?;
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::nacre::enclave::kv_atomics;
use crate::bindings::wasi::keyvalue::{atomics, store};

/// Why a key-value operation failed.
///
/// ```rust,ignore
/// match store.set("k", &big) {
///     Err(nacre_sdk::kv::Error::Store(why)) => eprintln!("refused: {why}"),
///     other => other?,
/// }
/// ```
#[derive(Debug)]
pub enum Error {
    /// The runtime refused: a quota, a size limit, or a bad identifier. The
    /// message says which.
    Store(String),
    /// A value was not the JSON that [`Store::get_json`] expected, or could
    /// not be written as JSON.
    Json(serde_json::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(m) => write!(f, "key-value store: {m}"),
            Error::Json(e) => write!(f, "key-value JSON: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        Error::Store(match e {
            store::Error::NoSuchStore => "no such bucket".into(),
            store::Error::AccessDenied => "access denied".into(),
            store::Error::Other(m) => m,
        })
    }
}

/// One bucket of this guest's key-value namespace.
///
/// ```rust,ignore
/// let store = nacre_sdk::kv::Store::open("default")?;
/// store.set("greeting", b"hello")?;
/// ```
pub struct Store {
    bucket: store::Bucket,
}

impl Store {
    /// Opens (creating if needed) the bucket `name` of this guest.
    ///
    /// ```rust,ignore
    /// let sessions = nacre_sdk::kv::Store::open("sessions")?;
    /// ```
    pub fn open(name: &str) -> Result<Store, Error> {
        Ok(Store {
            bucket: store::open(name)?,
        })
    }

    /// The value of `key`, if set.
    ///
    /// ```rust,ignore
    /// let token: Option<Vec<u8>> = store.get("token")?;
    /// ```
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket.get(key)?)
    }

    /// Sets `key` to `value`, replacing any previous value.
    ///
    /// ```rust,ignore
    /// store.set("greeting", b"hello")?;
    /// ```
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(self.bucket.set(key, value)?)
    }

    /// Removes `key`; removing an absent key is not an error.
    ///
    /// ```rust,ignore
    /// store.delete("greeting")?;
    /// ```
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.bucket.delete(key)?)
    }

    /// Whether `key` is set.
    ///
    /// ```rust,ignore
    /// if !store.exists("initialised")? { /* first run */ }
    /// ```
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.bucket.exists(key)?)
    }

    /// Every key in this bucket, in order.
    ///
    /// ```rust,ignore
    /// for key in store.keys()? { println!("{key}"); }
    /// ```
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor)?;
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// The value of `key` decoded from JSON, if set.
    ///
    /// ```rust,ignore
    /// let profile: Option<Profile> = store.get_json("profile")?;
    /// ```
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(Error::Json),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value` encoded as JSON.
    ///
    /// ```rust,ignore
    /// store.set_json("profile", &Profile { name: "ada".into() })?;
    /// ```
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(Error::Json)?;
        self.set(key, &bytes)
    }

    /// Adds `delta` to the counter in `key` (absent: 0) and returns the new
    /// value, atomically: concurrent requests never lose an update. The
    /// counter is stored as decimal text, so [`Store::get`] reads `b"42"`.
    ///
    /// ```rust,ignore
    /// let n = store.increment("count", 1)?;
    /// ```
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        Ok(atomics::increment(&self.bucket, key, delta)?)
    }

    /// Stores `new` under `key` only if its value is still `old` (`None`:
    /// only if `key` is absent), atomically, and returns whether it did.
    /// On `false` nothing changed: read the value again and retry, or give
    /// up. An empty value is a value, not absence. The swap counts against
    /// the quotas as [`Store::set`] does; a mismatch stores nothing.
    ///
    /// ```rust,ignore
    /// // Claim a name once, whoever asks first.
    /// if store.compare_and_swap("owner", None, b"alice")? {
    ///     println!("alice owns it");
    /// }
    /// // Change a value nobody else changed since it was read.
    /// let seen = store.get("config")?;
    /// if !store.compare_and_swap("config", seen.as_deref(), b"v2")? {
    ///     println!("changed meanwhile; read it again");
    /// }
    /// ```
    pub fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        Ok(kv_atomics::compare_and_swap(&self.bucket, key, old, new)?)
    }
}
