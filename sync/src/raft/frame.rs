//! The frame as it travels, and what its AAD covers (the module docs of
//! [`super`] describe both byte by byte).

use ring::aead::{NONCE_LEN, Nonce};
use serde::{Deserialize, Serialize};

use super::{CONTEXT, ClusterId, MAX_FRAME, RaftCall, RaftFrameError, Session, VERSION};

/// 4 zero bytes, then the counter.
pub(super) fn nonce(ctr: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&ctr.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// What the AAD covers.
pub(super) struct Bound {
    pub(super) call: RaftCall,
    pub(super) cluster: ClusterId,
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) session: Session,
    pub(super) ctr: u64,
    /// The request's session and counter, for an answer.
    pub(super) request: Option<(Session, u64)>,
}

impl Bound {
    pub(super) fn aad(&self) -> Vec<u8> {
        let label = self.call.label();
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(CONTEXT);
        out.push(u8::from(self.request.is_some()));
        // Labels are short constants: the length fits a byte.
        out.push(label.len() as u8);
        out.extend_from_slice(label);
        out.extend_from_slice(&self.cluster);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.session);
        out.extend_from_slice(&self.ctr.to_be_bytes());
        if let Some((session, ctr)) = &self.request {
            out.extend_from_slice(session);
            out.extend_from_slice(&ctr.to_be_bytes());
        }
        out
    }
}

/// The frame as it travels.
#[derive(Serialize, Deserialize)]
pub(super) struct Frame {
    pub(super) v: u64,
    #[serde(with = "serde_bytes")]
    pub(super) cluster: ClusterId,
    pub(super) from: u64,
    pub(super) to: u64,
    #[serde(with = "serde_bytes")]
    pub(super) session: Session,
    pub(super) ctr: u64,
    #[serde(with = "serde_bytes")]
    pub(super) sealed: Vec<u8>,
}

impl Frame {
    /// What this received frame's seal is bound to, opened as `call`
    /// (with `request`: as the answer to that request).
    pub(super) fn bound(&self, call: RaftCall, request: Option<(Session, u64)>) -> Bound {
        Bound {
            call,
            cluster: self.cluster,
            from: self.from,
            to: self.to,
            session: self.session,
            ctr: self.ctr,
            request,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.sealed.len() + 128);
        // Writing integers and bytes into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Refuses what is too large before reading any of it, and anything
    /// after the map (frames are exactly one map).
    pub(super) fn decode(bytes: &[u8]) -> Result<Frame, RaftFrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(RaftFrameError::FrameTooLarge {
                len: bytes.len(),
                max: MAX_FRAME,
            });
        }
        let mut rest = bytes;
        let frame: Frame =
            ciborium::from_reader(&mut rest).map_err(|e| RaftFrameError::NotCbor(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RaftFrameError::NotCbor(format!(
                "{} bytes follow the map",
                rest.len()
            )));
        }
        if frame.v != VERSION {
            return Err(RaftFrameError::WrongVersion(frame.v));
        }
        Ok(frame)
    }

    /// The checks before the tag: cheap, and they say what is wrong more
    /// precisely than a tag that fails (the AAD covers the same fields).
    pub(super) fn check(&self, cluster: &ClusterId, me: u64) -> Result<(), RaftFrameError> {
        if self.to != me {
            return Err(RaftFrameError::NotForThisNode { to: self.to, me });
        }
        if &self.cluster != cluster {
            return Err(RaftFrameError::WrongCluster {
                theirs: self.cluster,
                ours: *cluster,
            });
        }
        Ok(())
    }
}
