//! The JSON bodies of the sync endpoints (nitriding's names where nitriding
//! has the same message), their bounds, and what of each the deployment
//! key authenticates ([`crate::auth`]).

use serde::{Deserialize, Serialize};

use crate::auth::{DeploymentKey, Label};

/// The largest heartbeat body read.
pub const MAX_HEARTBEAT: usize = 4 << 10;
/// The longest `worker_hostname` (a DNS name and a port).
const MAX_HOSTNAME: usize = 255;
/// The most blobs an offer may say it holds.
pub const MAX_HAVE: usize = 4096;

/// Which key set an enclave holds: made once, by the first leader of a
/// deployment, and then only copied. An enclave that holds one never takes
/// another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// 16 random bytes, hex.
    pub id: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: u64,
}

/// `GET /enclave/sync?nonce=` answers: the receiver's document (with a
/// fresh public key, the sender's nonce), the receiver's own nonce, which
/// the sender's document must carry and its delivery must name, and the
/// SHA-256 of every blob the receiver holds (hex), so that only the
/// missing ones travel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    /// Base64 attestation document.
    pub document: String,
    /// 40 hex digits.
    pub nonce: String,
    /// Blobs the receiver holds. Not authenticated: a host that changes it
    /// only makes the exchange fail (a blob missing) or carry more.
    #[serde(default)]
    pub have: Vec<String>,
}

impl Offer {
    /// The blobs the receiver says it holds: at most [`MAX_HAVE`], entries
    /// that are not a hex SHA-256 skipped.
    pub fn held(&self) -> std::collections::HashSet<[u8; 32]> {
        self.have
            .iter()
            .take(MAX_HAVE)
            .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect()
    }
}

/// `POST /enclave/sync?offer=NONCE`: the sender's document (binding the
/// SHA-256 of the sealed keys, the receiver's nonce) and the sealed keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// Base64 attestation document.
    pub document: String,
    /// Base64 HPKE output: encapsulated key, then ciphertext.
    pub encrypted_keys: String,
}

/// `POST /enclave/heartbeat`, worker to leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Hex SHA-256 of the key material the worker holds (none yet: null).
    pub hashed_keys: Option<String>,
    /// Where the leader reaches the worker's sync listener.
    pub worker_hostname: String,
    /// The key set it holds, if any.
    pub lineage: Option<Lineage>,
    /// Its version of that key set.
    pub version: u64,
    /// The worker's process: 16 random bytes, hex.
    pub session: String,
    /// Counts up with each heartbeat of the session: a replayed one is
    /// refused.
    pub seq: u64,
    /// The deployment key's tag over all of the above; none from a worker
    /// that holds no keys yet.
    pub tag: Option<String>,
}

impl Heartbeat {
    /// Whether the fields are within their bounds; what is not, if not.
    pub fn check(&self) -> Result<(), String> {
        let hex_of = |s: &str, len: usize| s.len() == len && hex::decode(s).is_ok();
        if self.worker_hostname.len() > MAX_HOSTNAME {
            return Err(format!("worker_hostname is over {MAX_HOSTNAME} bytes"));
        }
        if !hex_of(&self.session, 32) {
            return Err("session is not 32 hex digits".into());
        }
        if self.hashed_keys.as_deref().is_some_and(|h| !hex_of(h, 64)) {
            return Err("hashed_keys is not 64 hex digits".into());
        }
        if self.lineage.as_ref().is_some_and(|l| !hex_of(&l.id, 32)) {
            return Err("lineage.id is not 32 hex digits".into());
        }
        if self.tag.as_deref().is_some_and(|t| !hex_of(t, 64)) {
            return Err("tag is not 64 hex digits".into());
        }
        Ok(())
    }

    fn parts(&self) -> [Vec<u8>; 6] {
        [
            self.hashed_keys.clone().unwrap_or_default().into_bytes(),
            self.worker_hostname.clone().into_bytes(),
            self.lineage
                .as_ref()
                .map(|l| format!("{}:{}", l.id, l.created_ms))
                .unwrap_or_default()
                .into_bytes(),
            self.version.to_be_bytes().to_vec(),
            self.session.clone().into_bytes(),
            self.seq.to_be_bytes().to_vec(),
        ]
    }

    /// Tags the heartbeat with `key`.
    pub fn sign(&mut self, key: &DeploymentKey) {
        let parts = self.parts();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.tag = Some(key.tag(Label::Heartbeat, &parts));
    }

    /// Whether `key` made its tag.
    pub fn verify(&self, key: &DeploymentKey) -> bool {
        let parts = self.parts();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.tag
            .as_deref()
            .is_some_and(|t| key.verify(Label::Heartbeat, &parts, t))
    }
}

/// What the leader answers a heartbeat.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The leader holds no keys, or older ones than the worker's: the
    /// worker is asked to send its own to the leader.
    pub send_keys: bool,
    /// The deployment key's tag over the heartbeat's tag and `send_keys`,
    /// from a leader that holds the worker's key set.
    #[serde(default)]
    pub tag: Option<String>,
}

impl HeartbeatAnswer {
    /// The answer to `beat`, tagged when the leader holds a key.
    pub fn new(send_keys: bool, beat: &Heartbeat, key: Option<&DeploymentKey>) -> Self {
        let tag = key.zip(beat.tag.as_deref()).map(|(key, theirs)| {
            key.tag(
                Label::HeartbeatAnswer,
                &[theirs.as_bytes(), &[u8::from(send_keys)]],
            )
        });
        HeartbeatAnswer { send_keys, tag }
    }

    /// Whether a member holding `key` answered `beat` with this.
    pub fn verify(&self, beat: &Heartbeat, key: &DeploymentKey) -> bool {
        match (&self.tag, &beat.tag) {
            (Some(tag), Some(theirs)) => key.verify(
                Label::HeartbeatAnswer,
                &[theirs.as_bytes(), &[u8::from(self.send_keys)]],
                tag,
            ),
            _ => false,
        }
    }
}

/// `GET /enclave/leader` answers. A leader's 410 carries the deployment
/// key's tag over the probe's nonce, so a leader steps down only for
/// another member of its deployment, never for a stranger at the name.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaderAnswer {
    /// What the enclave is, in words.
    pub status: String,
    /// With a 410 from a leader that holds keys.
    #[serde(default)]
    pub tag: Option<String>,
}

/// The parts a leader's tag covers: the probe's nonce.
pub fn leads_parts(nonce: &[u8]) -> [&[u8]; 1] {
    [nonce]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Heartbeat {
        Heartbeat {
            hashed_keys: Some("ab".repeat(32)),
            worker_hostname: "w.test:444".into(),
            lineage: Some(Lineage {
                id: "cd".repeat(16),
                created_ms: 5,
            }),
            version: 7,
            session: "01".repeat(16),
            seq: 3,
            tag: None,
        }
    }

    #[test]
    fn a_heartbeat_is_bounded_and_its_tag_covers_every_field() {
        let key = DeploymentKey::generate();
        let mut b = beat();
        assert!(b.check().is_ok());
        assert!(!b.verify(&key), "an untagged heartbeat verifies");
        b.sign(&key);
        assert!(b.check().is_ok());
        assert!(b.verify(&key));
        assert!(!b.verify(&DeploymentKey::generate()));
        for change in [
            |b: &mut Heartbeat| b.worker_hostname = "evil.test:444".into(),
            |b: &mut Heartbeat| b.version = 8,
            |b: &mut Heartbeat| b.seq = 4,
            |b: &mut Heartbeat| b.hashed_keys = None,
            |b: &mut Heartbeat| b.lineage = None,
            |b: &mut Heartbeat| b.session = "02".repeat(16),
        ] {
            let mut changed = b.clone();
            change(&mut changed);
            assert!(!changed.verify(&key), "{changed:?} still verifies");
        }
        let mut long = beat();
        long.worker_hostname = "a".repeat(256);
        assert!(long.check().is_err());
        let mut odd = beat();
        odd.session = "xyz".into();
        assert!(odd.check().is_err());
    }

    #[test]
    fn an_answer_verifies_only_for_its_heartbeat() {
        let key = DeploymentKey::generate();
        let mut b = beat();
        b.sign(&key);
        let answer = HeartbeatAnswer::new(true, &b, Some(&key));
        assert!(answer.verify(&b, &key));
        let flipped = HeartbeatAnswer {
            send_keys: false,
            tag: answer.tag.clone(),
        };
        assert!(!flipped.verify(&b, &key));
        let mut other = beat();
        other.seq = 9;
        other.sign(&key);
        assert!(!answer.verify(&other, &key));
        assert!(!HeartbeatAnswer::new(true, &b, None).verify(&b, &key));
    }
}
