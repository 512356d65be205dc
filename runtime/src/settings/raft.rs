//! The replicated data's flags (`--raft-*`, `--kv-write-timeout`), which
//! take effect with `--fqdn-leader`.

use super::{SettingsError, invalid};
use crate::config::RaftFlags;
use crate::raft::RaftSettings;
use crate::units::parse_duration;

/// The flags checked together.
pub(super) fn raft_settings(flags: &RaftFlags, dev: bool) -> Result<RaftSettings, SettingsError> {
    if flags.kv_unsafe_local_ack && !dev {
        return Err(invalid(
            "--kv-unsafe-local-ack makes a broken store for tests: it needs --attestation dev",
        ));
    }
    let range = &flags.raft_election_timeout;
    let (min, max) = range
        .split_once('-')
        .and_then(|(a, b)| Some((parse_duration(a).ok()?, parse_duration(b).ok()?)))
        .ok_or_else(|| {
            invalid(format!(
                "--raft-election-timeout {range:?}: give MIN-MAX, for example 500ms-1s"
            ))
        })?;
    let heartbeat = flags.raft_heartbeat;
    if heartbeat.is_zero() || min < heartbeat * 3 || max <= min {
        return Err(invalid(format!(
            "--raft-election-timeout {range} with --raft-heartbeat {}: MIN must be at least three heartbeats and MAX above MIN",
            humantime::format_duration(heartbeat)
        )));
    }
    if flags.raft_remove_after < max * 3 {
        return Err(invalid(format!(
            "--raft-remove-after {}: give at least three election timeouts ({}), or members are removed during an ordinary election",
            humantime::format_duration(flags.raft_remove_after),
            humantime::format_duration(max * 3)
        )));
    }
    if flags.kv_write_timeout < heartbeat * 2 {
        return Err(invalid(format!(
            "--kv-write-timeout {}: give at least two heartbeats",
            humantime::format_duration(flags.kv_write_timeout)
        )));
    }
    Ok(RaftSettings {
        heartbeat,
        election: (min, max),
        remove_after: flags.raft_remove_after,
        write_timeout: flags.kv_write_timeout,
        unsafe_local_ack: flags.kv_unsafe_local_ack,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn flags(election: &str, remove: u64) -> RaftFlags {
        RaftFlags {
            raft_heartbeat: Duration::from_millis(100),
            raft_election_timeout: election.into(),
            raft_remove_after: Duration::from_secs(remove),
            kv_write_timeout: Duration::from_secs(1),
            kv_unsafe_local_ack: false,
        }
    }

    #[test]
    fn the_election_range_is_checked_against_the_heartbeat() {
        let s = raft_settings(&flags("500ms-1s", 30), false).unwrap();
        assert_eq!(
            s.election,
            (Duration::from_millis(500), Duration::from_secs(1))
        );
        for bad in ["1s", "200ms-1s", "1s-500ms", "x-y"] {
            let e = raft_settings(&flags(bad, 30), false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--raft-election-timeout"), "{bad}: {e}");
        }
        let e = raft_settings(&flags("500ms-1s", 2), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--raft-remove-after"), "{e}");
        let mut broken = flags("500ms-1s", 30);
        broken.kv_unsafe_local_ack = true;
        let e = raft_settings(&broken, false).unwrap_err().to_string();
        assert!(e.contains("--attestation dev"), "{e}");
        assert!(raft_settings(&broken, true).unwrap().unsafe_local_ack);
    }
}
