//! The JSON bodies of the sync endpoints (SPEC §7, nitriding's names where
//! nitriding has the same message).

use serde::{Deserialize, Serialize};

/// Which key set an enclave holds: made once, by the first leader of a
/// deployment, and then only copied. When two exist (two enclaves led at
/// once), the leader's wins: it sends its own to every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lineage {
    /// 16 random bytes, hex.
    pub id: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: u64,
}

/// `GET /enclave/sync?nonce=` answers: the receiver's document (with a
/// fresh public key, the sender's nonce) and the receiver's own nonce,
/// which the sender's document must carry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Offer {
    /// Base64 attestation document.
    pub document: String,
    /// 40 hex digits.
    pub nonce: String,
}

/// `POST /enclave/sync`: the sender's document (binding the SHA-256 of the
/// sealed keys, the receiver's nonce) and the sealed keys.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// Base64 attestation document.
    pub document: String,
    /// Base64 HPKE output: encapsulated key, then ciphertext.
    pub encrypted_keys: String,
}

/// `POST /enclave/heartbeat`, worker to leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// Hex SHA-256 of the key material the worker holds (none yet: null).
    pub hashed_keys: Option<String>,
    /// Where the leader reaches the worker's sync listener (its
    /// `--sync-advertise`); not trusted.
    pub worker_hostname: String,
    /// The key set it holds, if any.
    pub lineage: Option<Lineage>,
    /// Its version of that key set.
    pub version: u64,
}

/// What the leader answers a heartbeat.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HeartbeatAnswer {
    /// The leader holds no keys, or older ones than the worker's: the
    /// worker is asked to send its own to the leader.
    pub send_keys: bool,
}
