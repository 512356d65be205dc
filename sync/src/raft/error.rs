//! Why a Raft frame was not sealed or opened.

use super::{ClusterId, VERSION, WINDOW};

/// Why a frame was not sealed or opened. Messages name the frame and the
/// check it failed, never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftFrameError {
    /// The frame is over [`MAX_FRAME`](super::MAX_FRAME); nothing of it was decoded.
    #[error("a raft frame of {len} bytes is over the {max} bytes allowed")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// [`MAX_FRAME`](super::MAX_FRAME).
        max: usize,
    },
    /// A body to seal is over [`MAX_PLAINTEXT`](super::MAX_PLAINTEXT).
    #[error("a raft body of {len} bytes is over the {max} bytes one frame seals")]
    PlaintextTooLarge {
        /// Its length.
        len: usize,
        /// [`MAX_PLAINTEXT`](super::MAX_PLAINTEXT).
        max: usize,
    },
    /// Not one CBOR map of the frame's keys and types, or bytes after it.
    #[error("the raft frame is not CBOR of the frame's shape: {0}")]
    NotCbor(String),
    /// A version this enclave does not read.
    #[error("the raft frame is version {0}; this enclave reads version {VERSION} only")]
    WrongVersion(u64),
    /// Addressed to another node.
    #[error("the raft frame is for node {to}; this is node {me}")]
    NotForThisNode {
        /// The frame's `to`.
        to: u64,
        /// This node's id.
        me: u64,
    },
    /// An answer from another node than the request went to.
    #[error("the raft answer is from node {from}; the request went to node {asked}")]
    NotFromPeer {
        /// The answer's `from`.
        from: u64,
        /// The node the request went to.
        asked: u64,
    },
    /// For another Raft cluster.
    #[error(
        "the raft frame is for cluster {}; this node is in cluster {}",
        hex::encode(.theirs),
        hex::encode(.ours)
    )]
    WrongCluster {
        /// The frame's cluster.
        theirs: ClusterId,
        /// This node's.
        ours: ClusterId,
    },
    /// The tag does not verify.
    #[error(
        "the raft frame does not open under this deployment's raft key: sealed under another \
         deployment key, for another call or request, or altered on the way"
    )]
    Unauthenticated,
    /// A request the replay window already took, or too old to tell.
    #[error(
        "the raft frame is a replay: node {from} sent counter {ctr} of its session before, \
         or {WINDOW} or more frames ago"
    )]
    Replayed {
        /// The sender.
        from: u64,
        /// The frame's counter.
        ctr: u64,
    },
    /// The sealer's counter is spent (after 2^64 - 1 frames).
    #[error("this process's raft session has numbered all the frames it can; start a new one")]
    Exhausted,
}
