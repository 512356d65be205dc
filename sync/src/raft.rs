//! The frame every Raft body travels in between the enclaves of a
//! deployment.
//!
//! Raft's calls (append entries, vote, install snapshot, forwarded writes,
//! read-index, join) go over HTTPS through the host's proxy, and that TLS
//! accepts any certificate: the host can end it, read and change bodies,
//! and answer a new request with an old answer. So every body, request and
//! answer, is sealed (ChaCha20-Poly1305) under a key only the deployment's
//! attested members hold, and every answer is bound to the one request it
//! answers.
//!
//! # Calls
//!
//! | call | label (AAD) | path |
//! |---|---|---|
//! | [`RaftCall::Append`] | `append` | `/enclave/raft/append` |
//! | [`RaftCall::Vote`] | `vote` | `/enclave/raft/vote` |
//! | [`RaftCall::Snapshot`] | `snapshot` | `/enclave/raft/snapshot` |
//! | [`RaftCall::Write`] | `write` | `/enclave/raft/write` |
//! | [`RaftCall::ReadIndex`] | `read-index` | `/enclave/raft/read-index` |
//! | [`RaftCall::Join`] | `join` | `/enclave/raft/join` |
//!
//! The receiver takes the call from the URL path ([`RaftCall::from_path`]):
//! the label is in the AAD, so a frame the host moves to another path does
//! not open.
//!
//! # Keys and nonces
//!
//! - Raft key ([`RaftKey`]): HKDF-SHA256 (RFC 5869) with an empty salt, the
//!   deployment key's 32 bytes ([`DeploymentKey::to_bytes`]) as input and
//!   info `"nacre raft v1"` followed by the deployment's name (UTF-8, no
//!   separator: the prefix has a fixed length); 32 bytes.
//! - Session key: HKDF-SHA256 with the sender's 16-byte session as salt,
//!   the raft key as input and info `"nacre raft v1 session"`; 32 bytes,
//!   the ChaCha20-Poly1305 key.
//! - Nonce: 4 zero bytes, then the frame's counter (8 bytes, big-endian).
//!
//! Each sending process holds one [`Sealer`]: a random session and one
//! counter from 0 for all its frames, requests and answers. The counter
//! alone never repeats within a session, and the session key changes with
//! the session, so two processes (or one restarted) that both count from 0
//! never use a nonce twice under one key (unless two random 16-byte
//! sessions collide).
//!
//! # Frame
//!
//! A CBOR map with text keys, written in this order, at most [`MAX_FRAME`]
//! bytes, nothing after it (unknown keys are ignored and authenticate
//! nothing):
//!
//! | key | CBOR | what |
//! |---|---|---|
//! | `v` | unsigned | 1 |
//! | `cluster` | bytes (16) | the Raft cluster's id |
//! | `from` | unsigned | the sender's Raft node id |
//! | `to` | unsigned | the receiver's Raft node id |
//! | `session` | bytes (16) | the sender's session |
//! | `ctr` | unsigned | the sender's counter for this frame |
//! | `sealed` | bytes | ciphertext, then the 16-byte tag |
//!
//! The AAD, every integer 8 bytes big-endian:
//!
//! ```text
//! "nacre raft v1"                 13 bytes
//! kind                            1 byte: 0 request, 1 answer
//! label length, label             1 byte, then the call's label
//! cluster, from, to               16, 8, 8 bytes, as in the frame
//! session, ctr                    16, 8 bytes, as in the frame
//! request's session, ctr          16, 8 bytes, answers only
//! ```
//!
//! # Requests and answers
//!
//! A request goes `from` the sender `to` the receiver
//! ([`Sealer::seal_request`]), which keeps a [`Pending`]. The receiver opens
//! it ([`RaftKey::open_request`]) with the call of the path, its cluster and
//! its own node id, refusing in this order: over [`MAX_FRAME`] (before
//! decoding anything), not CBOR of the frame's shape, another version,
//! another `to`, another cluster, a tag that does not verify. It then
//! passes the request through its [`ReplayWindow`].
//!
//! The answer ([`Sealer::seal_answer`]) is sealed by the answering process's
//! own sealer (its session and counter) with `from` and `to` swapped and
//! the request's session and counter in the AAD, so it opens
//! ([`Pending::open_answer`]) only for the request it answers: an old
//! "success" the host kept does not open for a new request. The sender
//! checks, in order: size, CBOR, version, `to` is itself, cluster, `from`
//! is the node it asked, then the tag. A receiver that cannot open a
//! request cannot seal an answer to it: it answers with a bare HTTP error,
//! which the sender takes as a failed call.
//!
//! # Replays
//!
//! Raft itself tolerates a replayed append or vote (terms and log indexes
//! make them stale), so [`ReplayWindow`] is defence in depth: it refuses a
//! request whose counter its session already used or that is 64 or more
//! behind the session's newest, for a bounded number of sessions.

use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use ring::hkdf;

use crate::auth::DeploymentKey;

mod error;
mod frame;
mod window;
pub use error::RaftFrameError;
use frame::{Bound, Frame, nonce};
pub use window::{DEFAULT_SESSIONS, ReplayWindow, WINDOW};

#[cfg(test)]
mod tests;

/// The frame's version, `v`.
pub const VERSION: u64 = 1;
/// The largest frame read or written: 16 MiB. Snapshot chunks must fit.
pub const MAX_FRAME: usize = 16 << 20;
/// The largest body one frame seals: the rest of [`MAX_FRAME`] is the
/// map's keys, its integers and the tag, well under 256 bytes.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - 256;

/// A Raft cluster's id.
pub type ClusterId = [u8; 16];
/// A sending process's session: 16 random bytes.
pub type Session = [u8; 16];

/// First in every AAD and in the raft key's info.
const CONTEXT: &[u8] = b"nacre raft v1";
/// The session key's info.
const SESSION_INFO: &[u8] = b"nacre raft v1 session";

/// One of Raft's calls between enclaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftCall {
    /// Append entries (and heartbeats).
    Append,
    /// Request a vote.
    Vote,
    /// Install a snapshot (one chunk).
    Snapshot,
    /// A client write a follower forwards to the leader.
    Write,
    /// A follower asking the leader for a read index.
    ReadIndex,
    /// An enclave asking to join the cluster.
    Join,
}

impl RaftCall {
    /// Every call.
    pub const ALL: [RaftCall; 6] = [
        RaftCall::Append,
        RaftCall::Vote,
        RaftCall::Snapshot,
        RaftCall::Write,
        RaftCall::ReadIndex,
        RaftCall::Join,
    ];

    /// The label in the AAD. Stable: changing one breaks every peer that
    /// runs the older image.
    pub fn label(self) -> &'static [u8] {
        match self {
            RaftCall::Append => b"append",
            RaftCall::Vote => b"vote",
            RaftCall::Snapshot => b"snapshot",
            RaftCall::Write => b"write",
            RaftCall::ReadIndex => b"read-index",
            RaftCall::Join => b"join",
        }
    }

    /// The URL path the call is posted to.
    pub fn path(self) -> &'static str {
        match self {
            RaftCall::Append => "/enclave/raft/append",
            RaftCall::Vote => "/enclave/raft/vote",
            RaftCall::Snapshot => "/enclave/raft/snapshot",
            RaftCall::Write => "/enclave/raft/write",
            RaftCall::ReadIndex => "/enclave/raft/read-index",
            RaftCall::Join => "/enclave/raft/join",
        }
    }

    /// The call posted to `path` (exactly, without a query), if any.
    pub fn from_path(path: &str) -> Option<RaftCall> {
        RaftCall::ALL.into_iter().find(|c| c.path() == path)
    }
}

/// The key every member of a deployment derives from the deployment key
/// for Raft. Deliberately not `Debug`.
#[derive(Clone)]
pub struct RaftKey {
    bytes: [u8; 32],
}

impl RaftKey {
    /// The raft key of `deployment` (its name, `--fqdn-leader`): members
    /// of two deployments that somehow share a deployment key still do not
    /// read each other's frames.
    pub fn derive(key: &DeploymentKey, deployment: &str) -> RaftKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&key.to_bytes());
        let mut bytes = [0u8; 32];
        prk.expand(&[CONTEXT, deployment.as_bytes()], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes))
            // Only an output over 255 hash lengths fails; 32 bytes never.
            .expect("HKDF-SHA256 gives 32 bytes");
        RaftKey { bytes }
    }

    /// The AEAD key of one sender's session.
    fn session_key(&self, session: &Session) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, session).extract(&self.bytes);
        let okm = prk
            .expand(&[SESSION_INFO], &CHACHA20_POLY1305)
            // As above: the 32 bytes of a ChaCha20 key are within HKDF's bound.
            .expect("HKDF-SHA256 gives a ChaCha20 key");
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// Opens a request for `call` (the call of the path it was posted to)
    /// to node `me` of `cluster`. Pass what opens through a
    /// [`ReplayWindow`] before acting on it.
    pub fn open_request(
        &self,
        call: RaftCall,
        bytes: &[u8],
        cluster: &ClusterId,
        me: u64,
    ) -> Result<OpenedRequest, RaftFrameError> {
        let frame = Frame::decode(bytes)?;
        frame.check(cluster, me)?;
        let bound = frame.bound(call, None);
        let plaintext = self.open(&bound, frame.sealed)?;
        Ok(OpenedRequest {
            call,
            cluster: frame.cluster,
            from: frame.from,
            to: frame.to,
            session: frame.session,
            ctr: frame.ctr,
            plaintext,
        })
    }

    fn open(&self, bound: &Bound, mut sealed: Vec<u8>) -> Result<Vec<u8>, RaftFrameError> {
        let len = self
            .session_key(&bound.session)
            .open_in_place(nonce(bound.ctr), Aad::from(bound.aad()), &mut sealed)
            .map_err(|_| RaftFrameError::Unauthenticated)?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }
}

/// A request that opened: who sent it, in which session, and its body.
pub struct OpenedRequest {
    /// The call it was opened for.
    pub call: RaftCall,
    /// The cluster it is for.
    pub cluster: ClusterId,
    /// The sender's node id.
    pub from: u64,
    /// This node's id.
    pub to: u64,
    /// The sender's session.
    pub session: Session,
    /// The sender's counter for it.
    pub ctr: u64,
    /// The Raft body.
    pub plaintext: Vec<u8>,
}

/// Everything but the body, which may hold a guest's data.
impl std::fmt::Debug for OpenedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRequest")
            .field("call", &self.call)
            .field("cluster", &hex::encode(self.cluster))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("session", &hex::encode(self.session))
            .field("ctr", &self.ctr)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// What the sender of a request keeps to open its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    call: RaftCall,
    cluster: ClusterId,
    me: u64,
    peer: u64,
    session: Session,
    ctr: u64,
}

impl Pending {
    /// What the sender of `request` kept: for the fuzz target's oracle.
    pub(crate) fn of(request: &OpenedRequest) -> Pending {
        Pending {
            call: request.call,
            cluster: request.cluster,
            me: request.from,
            peer: request.to,
            session: request.session,
            ctr: request.ctr,
        }
    }

    /// Opens the answer to this request: from the node it went to, for
    /// this node, this call and this very request.
    pub fn open_answer(&self, key: &RaftKey, bytes: &[u8]) -> Result<Vec<u8>, RaftFrameError> {
        let frame = Frame::decode(bytes)?;
        frame.check(&self.cluster, self.me)?;
        if frame.from != self.peer {
            return Err(RaftFrameError::NotFromPeer {
                from: frame.from,
                asked: self.peer,
            });
        }
        let bound = frame.bound(self.call, Some((self.session, self.ctr)));
        key.open(&bound, frame.sealed)
    }
}

/// Seals one process's frames: one per process, shared by all its calls
/// (it is `Sync`). Not `Clone`: two sealers of one session would reuse
/// nonces.
pub struct Sealer {
    key: LessSafeKey,
    session: Session,
    next: AtomicU64,
}

/// The session only: the key stays out of logs.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("session", &hex::encode(self.session))
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with a fresh random session.
    pub fn new(key: &RaftKey) -> Sealer {
        let mut session = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut session);
        Sealer::with_session(key, session)
    }

    /// A sealer of a chosen session: for tests and the fuzz target's
    /// seeds, which must be the same every run. Never for real frames: a
    /// session used twice reuses nonces.
    pub(crate) fn with_session(key: &RaftKey, session: Session) -> Sealer {
        Sealer {
            key: key.session_key(&session),
            session,
            next: AtomicU64::new(0),
        }
    }

    /// This sealer's session.
    pub fn session(&self) -> Session {
        self.session
    }

    /// Seals a `call` request from node `from` to node `to` of `cluster`;
    /// keep the [`Pending`] to open its answer.
    pub fn seal_request(
        &self,
        call: RaftCall,
        cluster: &ClusterId,
        from: u64,
        to: u64,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Pending), RaftFrameError> {
        let (frame, ctr) = self.seal(call, *cluster, from, to, None, plaintext)?;
        let pending = Pending {
            call,
            cluster: *cluster,
            me: from,
            peer: to,
            session: self.session,
            ctr,
        };
        Ok((frame, pending))
    }

    /// Seals the answer to `request`, which this node opened.
    pub fn seal_answer(
        &self,
        request: &OpenedRequest,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RaftFrameError> {
        let (frame, _) = self.seal(
            request.call,
            request.cluster,
            request.to,
            request.from,
            Some((request.session, request.ctr)),
            plaintext,
        )?;
        Ok(frame)
    }

    fn seal(
        &self,
        call: RaftCall,
        cluster: ClusterId,
        from: u64,
        to: u64,
        request: Option<(Session, u64)>,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, u64), RaftFrameError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(RaftFrameError::PlaintextTooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            });
        }
        // Refuses to wrap rather than ever number two frames alike.
        let ctr = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .map_err(|_| RaftFrameError::Exhausted)?;
        let bound = Bound {
            call,
            cluster,
            from,
            to,
            session: self.session,
            ctr,
            request,
        };
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce(ctr), Aad::from(bound.aad()), &mut sealed)
            // ChaCha20-Poly1305 refuses only bodies over 256 GiB.
            .map_err(|_| RaftFrameError::PlaintextTooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            })?;
        let frame = Frame {
            v: VERSION,
            cluster,
            from,
            to,
            session: self.session,
            ctr,
            sealed,
        };
        Ok((frame.encode(), ctr))
    }
}
