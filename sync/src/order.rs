//! The one order every enclave applies to key material, whatever its role:
//! an enclave that holds no keys takes its deployment's first key set it is
//! sent; one that holds keys takes only the same key set at a strictly
//! later version. A different key set is never taken because a peer sent
//! it (the host could keep a stale enclave of an earlier deployment, or of
//! an older version, alive to roll the guests, state and certificate
//! back), and key material of another deployment never at all.

use crate::wire::Lineage;

/// Why key material was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTaken {
    /// It belongs to another deployment (another `--fqdn-leader`).
    #[error("it belongs to deployment {theirs}, this enclave to {ours}")]
    OtherDeployment {
        /// The sender's deployment.
        theirs: String,
        /// This enclave's.
        ours: String,
    },
    /// Another key set than the one held.
    #[error(
        "it is key set {theirs}, this enclave holds key set {ours} and never trades it for another"
    )]
    OtherKeySet {
        /// The sender's key set.
        theirs: String,
        /// This enclave's.
        ours: String,
    },
    /// The same key set, not later than what is held.
    #[error("version {theirs} is not later than version {ours}, which this enclave holds")]
    NotNewer {
        /// The sender's version.
        theirs: u64,
        /// This enclave's.
        ours: u64,
    },
}

/// What an enclave holds, as far as the order is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// Its key set.
    pub lineage: &'a Lineage,
    /// Its version of it.
    pub version: u64,
}

/// Whether an enclave of deployment `ours` holding `held` takes key
/// material of deployment `deployment`, key set `lineage` at `version`.
pub fn admit(
    ours: &str,
    held: Option<Holding<'_>>,
    deployment: &str,
    lineage: &Lineage,
    version: u64,
) -> Result<(), NotTaken> {
    if deployment != ours {
        return Err(NotTaken::OtherDeployment {
            theirs: deployment.into(),
            ours: ours.into(),
        });
    }
    let Some(held) = held else {
        return Ok(());
    };
    if lineage.id != held.lineage.id {
        return Err(NotTaken::OtherKeySet {
            theirs: lineage.id.clone(),
            ours: held.lineage.id.clone(),
        });
    }
    if version <= held.version {
        return Err(NotTaken::NotNewer {
            theirs: version,
            ours: held.version,
        });
    }
    Ok(())
}

/// Whether a worker's `theirs` at `version` is later than what `held`
/// says: the same key set, a later version. A leader that finds one asks
/// that worker for its keys.
pub fn later(held: Holding<'_>, theirs: &Lineage, version: u64) -> bool {
    theirs.id == held.lineage.id && version > held.version
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, created_ms: u64) -> Lineage {
        Lineage {
            id: id.into(),
            created_ms,
        }
    }

    #[test]
    fn only_later_versions_of_the_held_key_set_are_taken() {
        let (ours, other) = (set("aa", 10), set("bb", 5));
        let held = Some(Holding {
            lineage: &ours,
            version: 6,
        });
        assert_eq!(admit("d", held, "d", &ours, 7), Ok(()));
        // The rollback a stale enclave attempts: an earlier version.
        assert!(matches!(
            admit("d", held, "d", &ours, 2),
            Err(NotTaken::NotNewer { theirs: 2, ours: 6 })
        ));
        assert!(matches!(
            admit("d", held, "d", &ours, 6),
            Err(NotTaken::NotNewer { .. })
        ));
        // The wipe a fresh leader's new keys would be, older or newer.
        assert!(matches!(
            admit("d", held, "d", &other, 99),
            Err(NotTaken::OtherKeySet { .. })
        ));
        assert!(matches!(
            admit("d", held, "d", &set("cc", 20), 1),
            Err(NotTaken::OtherKeySet { .. })
        ));
    }

    #[test]
    fn an_enclave_without_keys_takes_its_own_deployments_only() {
        let l = set("aa", 10);
        assert_eq!(admit("d", None, "d", &l, 1), Ok(()));
        assert_eq!(admit("d", None, "d", &l, 40), Ok(()));
        assert!(matches!(
            admit("d", None, "e", &l, 1),
            Err(NotTaken::OtherDeployment { .. })
        ));
        let held = Some(Holding {
            lineage: &l,
            version: 1,
        });
        assert!(matches!(
            admit("d", held, "e", &l, 2),
            Err(NotTaken::OtherDeployment { .. })
        ));
    }

    #[test]
    fn a_worker_is_later_only_in_the_same_key_set() {
        let (ours, other) = (set("aa", 10), set("bb", 5));
        let held = Holding {
            lineage: &ours,
            version: 3,
        };
        assert!(later(held, &ours, 4));
        assert!(!later(held, &ours, 3));
        assert!(!later(held, &other, 9));
    }
}
