//! The deployment key: 32 random bytes made with a deployment's first key
//! set, moved only inside sealed key material, and used to authenticate
//! the messages that are not sealed (heartbeats and their answers,
//! designation answers, offers and deliveries to an enclave that holds
//! keys). Whoever can tag a message with it is a member of the deployment;
//! the host, which never sees it, cannot forge or alter one.
//!
//! Tags are HMAC-SHA256 (ring) over a label naming the message, then each
//! part with its length in front, so no two messages or splits of parts
//! read alike.

use ring::hmac;

/// Bytes of a deployment key, and of a tag.
pub const KEY_LEN: usize = 32;

/// What a tag authenticates: each kind of message has its own label, so a
/// tag made for one is never accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// A worker's heartbeat.
    Heartbeat,
    /// The leader's answer to a heartbeat.
    HeartbeatAnswer,
    /// A leader's 410 to a designation probe.
    Leads,
    /// A sender asking a receiver that holds keys for an offer.
    Offer,
    /// A sender's delivery to a receiver that holds keys.
    Deliver,
}

impl Label {
    fn bytes(self) -> &'static [u8] {
        match self {
            Label::Heartbeat => b"nacre sync v2 heartbeat",
            Label::HeartbeatAnswer => b"nacre sync v2 heartbeat answer",
            Label::Leads => b"nacre sync v2 leads",
            Label::Offer => b"nacre sync v2 offer",
            Label::Deliver => b"nacre sync v2 deliver",
        }
    }
}

/// A deployment's key. Deliberately not `Debug`, `Clone` only within sync.
#[derive(Clone)]
pub struct DeploymentKey {
    key: hmac::Key,
    bytes: [u8; KEY_LEN],
}

impl DeploymentKey {
    /// A fresh random key, for a deployment's first key set.
    pub fn generate() -> DeploymentKey {
        let mut bytes = [0u8; KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        DeploymentKey::new(bytes)
    }

    fn new(bytes: [u8; KEY_LEN]) -> DeploymentKey {
        DeploymentKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    /// The key carried in key material; `None` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<DeploymentKey> {
        Some(DeploymentKey::new(bytes.try_into().ok()?))
    }

    /// The raw bytes, to seal into key material.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.bytes
    }

    /// The tag of `parts` as a message of kind `label`, hex.
    pub fn tag(&self, label: Label, parts: &[&[u8]]) -> String {
        hex::encode(hmac::sign(&self.key, &message(label, parts)).as_ref())
    }

    /// Whether `tag` (hex) is this key's tag of `parts` as `label`, in
    /// constant time.
    pub fn verify(&self, label: Label, parts: &[&[u8]], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        hmac::verify(&self.key, &message(label, parts), &tag).is_ok()
    }
}

/// The label, then each part, each with its length (8 bytes, big-endian)
/// first.
fn message(label: Label, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let label = label.bytes();
    out.extend_from_slice(&(label.len() as u64).to_be_bytes());
    out.extend_from_slice(label);
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_holds_only_for_its_key_label_and_parts() {
        let key = DeploymentKey::generate();
        let other = DeploymentKey::generate();
        let tag = key.tag(Label::Heartbeat, &[b"ab", b"c"]);
        assert!(key.verify(Label::Heartbeat, &[b"ab", b"c"], &tag));
        assert!(!other.verify(Label::Heartbeat, &[b"ab", b"c"], &tag));
        assert!(!key.verify(Label::HeartbeatAnswer, &[b"ab", b"c"], &tag));
        // The same bytes split otherwise are another message.
        assert!(!key.verify(Label::Heartbeat, &[b"a", b"bc"], &tag));
        assert!(!key.verify(Label::Heartbeat, &[b"abc"], &tag));
        assert!(!key.verify(Label::Heartbeat, &[b"ab", b"c"], "zz"));
        assert!(!key.verify(Label::Heartbeat, &[b"ab", b"c"], ""));
        let back = DeploymentKey::from_bytes(&key.to_bytes()).expect("32 bytes");
        assert!(back.verify(Label::Heartbeat, &[b"ab", b"c"], &tag));
        assert!(DeploymentKey::from_bytes(&[0; 31]).is_none());
    }
}
