//! The replicated data's flags (`--raft-*`, `--kv-write-timeout`), as
//! given; [`crate::settings`] checks them together.

use std::time::Duration;

use super::ser_duration;
use crate::units::parse_duration;

/// The Raft flags, as given.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RaftFlags {
    /// With --fqdn-leader: how often the leader of the deployment's
    /// replicated data heartbeats its members.
    #[arg(long, env = "NACRE_RAFT_HEARTBEAT", default_value = "100ms", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub raft_heartbeat: Duration,

    /// With --fqdn-leader: a member that hears no leader for a random time
    /// in MIN-MAX stands for election (MIN at least 3 heartbeats).
    #[arg(
        long,
        env = "NACRE_RAFT_ELECTION_TIMEOUT",
        default_value = "500ms-1s",
        value_name = "MIN-MAX"
    )]
    pub raft_election_timeout: String,

    /// With --fqdn-leader: a member the leader has not heard from for this
    /// long is removed from the group, so a dead minority never blocks the
    /// majority (a restarted enclave joins again under a new id).
    #[arg(long, env = "NACRE_RAFT_REMOVE_AFTER", default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub raft_remove_after: Duration,

    /// With --fqdn-leader: how long a guest's key-value or state call may
    /// wait for a majority before it fails (saying whether anything may
    /// have been written).
    #[arg(long, env = "NACRE_KV_WRITE_TIMEOUT", default_value = "1s", value_parser = parse_duration, value_name = "DUR")]
    #[serde(serialize_with = "ser_duration")]
    pub kv_write_timeout: Duration,

    /// A deliberately broken store, for tests only (refused without
    /// --attestation dev): key-value writes are applied and acknowledged
    /// on the enclave that took them, with no commit by a majority, and
    /// reads are local. The linearizability check is shown to fail on it.
    #[arg(long, env = "NACRE_KV_UNSAFE_LOCAL_ACK", hide = true)]
    pub kv_unsafe_local_ack: bool,
}
