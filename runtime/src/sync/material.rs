//! The key material an enclave holds, as a [`Payload`]: gathered on the
//! sender from its certificate, state slots and guest table, and applied on
//! the receiver to the same three.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use nacre_transport::AllowRule;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_bytes::ByteBuf;

use super::SyncError;
use super::state::SyncedState;
use crate::guests::{GuestConfig, GuestName, Registry, Route, TcpService};
use crate::tls::Identity;
use nacre_sync::auth::DeploymentKey;
use nacre_sync::seal::{ChallengeRecord, GuestRecord, Payload, sha256};
use nacre_sync::wire::Lineage;

/// The source of key material restored from a sealed snapshot.
pub(crate) const SEALED: &str = "sealed snapshot";

/// Blobs by the SHA-256 of their bytes: component bytes and state values.
pub(crate) type Blobs = BTreeMap<[u8; 32], Bytes>;

/// What a payload is made from and applied to.
pub(crate) struct Material {
    pub identity: Arc<Identity>,
    pub state: Arc<SyncedState>,
    pub registry: Arc<Registry>,
    /// State slots move by the replicated log, not with key material.
    pub replicated: std::sync::atomic::AtomicBool,
}

/// What a payload names besides itself, as [`Material::gather`] finds it.
pub(crate) struct Gathered {
    pub payload: Payload,
    pub blobs: Blobs,
}

/// Every state slot named by the SHA-256 of its value, the values kept
/// aside in `blobs`.
pub(crate) fn states(state: &SyncedState, blobs: &mut Blobs) -> BTreeMap<String, ByteBuf> {
    state
        .export()
        .into_iter()
        .map(|(name, value)| {
            let value = Bytes::from_owner(value);
            let sha = sha256(&value);
            blobs.insert(sha, value);
            (name, ByteBuf::from(sha.to_vec()))
        })
        .collect()
}

impl Material {
    fn replicated(&self) -> bool {
        self.replicated.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Everything this enclave holds now, as `lineage` at `version` of
    /// `deployment`, under `key`. Component bytes and state values are
    /// named by hash and kept aside as blobs (shared, not copied).
    pub fn gather(
        &self,
        deployment: &str,
        lineage: Lineage,
        version: u64,
        key: &DeploymentKey,
    ) -> Gathered {
        let (chain, tls_key) = self.identity.export();
        let mut blobs = Blobs::new();
        let snapshot = self.registry.snapshot();
        let guests = snapshot
            .guests()
            .map(|g| {
                blobs.insert(g.sha256, g.bytes.clone());
                GuestRecord {
                    name: g.config.name.to_string(),
                    route: g.config.route.to_string(),
                    allow: g.config.allow.iter().map(AllowRule::to_string).collect(),
                    component_sha256: ByteBuf::from(g.sha256.to_vec()),
                    tcp: g.config.tcp.map(|t| t.entry()),
                }
            })
            .collect();
        let states = if self.replicated() {
            BTreeMap::new()
        } else {
            states(&self.state, &mut blobs)
        };
        let payload = Payload {
            deployment: deployment.to_string(),
            lineage,
            version,
            deployment_key: ByteBuf::from(key.to_bytes().to_vec()),
            tls_chain: chain.iter().map(|c| ByteBuf::from(c.to_vec())).collect(),
            tls_key: ByteBuf::from(tls_key.secret_der().to_vec()),
            states,
            guests,
            acme_account: self.identity.account(),
            challenges: self.challenges(),
        };
        Gathered { payload, blobs }
    }

    fn challenges(&self) -> Vec<ChallengeRecord> {
        self.identity
            .challenges()
            .iter()
            .map(|c| {
                let (chain, key) = c.export();
                ChallengeRecord {
                    name: c.name().to_string(),
                    certificate: ByteBuf::from(
                        chain.first().map(|c| c.to_vec()).unwrap_or_default(),
                    ),
                    key: ByteBuf::from(key.secret_der().to_vec()),
                }
            })
            .collect()
    }

    /// The blobs this enclave holds now: its guests' components and its
    /// state values. What a receiver says it has, so only the rest moves.
    pub fn holdings(&self) -> Blobs {
        let mut blobs: Blobs = self
            .registry
            .snapshot()
            .guests()
            .map(|g| (g.sha256, g.bytes.clone()))
            .collect();
        for value in self.state.export().into_values() {
            let value = Bytes::from_owner(value);
            blobs.insert(sha256(&value), value);
        }
        blobs
    }

    /// The blobs `payload` names, from `blobs`; the first one missing, if
    /// any.
    pub fn named(payload: &Payload, blobs: &Blobs) -> Result<Blobs, SyncError> {
        let mut out = Blobs::new();
        let wanted = payload
            .guests
            .iter()
            .map(|g| (&g.component_sha256, format!("guest {}", g.name)))
            .chain(
                payload
                    .states
                    .iter()
                    .map(|(n, sha)| (sha, format!("the state of {n}"))),
            );
        for (sha, what) in wanted {
            let sha: [u8; 32] = sha.as_slice().try_into().map_err(|_| {
                SyncError::Malformed(format!("{what}: a SHA-256 that is not 32 bytes"))
            })?;
            let blob = blobs.get(&sha).ok_or_else(|| {
                SyncError::Malformed(format!(
                    "{what}: blob {} was neither held nor sent",
                    hex::encode(sha)
                ))
            })?;
            out.insert(sha, blob.clone());
        }
        Ok(out)
    }

    /// Makes this enclave hold `payload` with its blobs (all of them, as
    /// [`Material::named`] returns): the certificate it serves (from the
    /// next handshake on), every state slot, and the guest table. `source`
    /// says where the certificate came from, for logs and
    /// `/enclave/config`.
    pub async fn apply(
        &self,
        payload: Payload,
        blobs: &Blobs,
        source: &'static str,
    ) -> Result<(), SyncError> {
        let chain: Vec<CertificateDer<'static>> = payload
            .tls_chain
            .into_iter()
            .map(|c| CertificateDer::from(c.into_vec()))
            .collect();
        let key = PrivateKeyDer::try_from(payload.tls_key.into_vec())
            .map_err(|e| SyncError::Malformed(format!("TLS key: {e}")))?;
        let guests = payload
            .guests
            .into_iter()
            .map(|g| guest(g, blobs))
            .collect::<Result<Vec<_>, _>>()?;
        let challenges = payload
            .challenges
            .into_iter()
            .map(|c| {
                let key = PrivateKeyDer::try_from(c.key.into_vec())
                    .map_err(|e| SyncError::Malformed(format!("challenge key: {e}")))?;
                Ok((
                    c.name,
                    (vec![CertificateDer::from(c.certificate.into_vec())], key),
                ))
            })
            .collect::<Result<Vec<_>, SyncError>>()?;
        if chain.first().map(|leaf| sha256(leaf)) != Some(self.identity.leaf_sha256()) {
            self.identity
                .replace(chain, key, source)
                .map_err(|e| SyncError::Malformed(e.to_string()))?;
        }
        self.identity
            .set_challenges(challenges)
            .map_err(|e| SyncError::Malformed(e.to_string()))?;
        self.identity.set_account(payload.acme_account);
        let states = payload
            .states
            .into_iter()
            .filter_map(|(name, sha)| {
                let sha: [u8; 32] = sha.as_slice().try_into().ok()?;
                Some((name, blobs.get(&sha)?.to_vec()))
            })
            .collect();
        // In a replicated deployment state moves by the log, never with
        // key material from a peer; a sealed snapshot's is this enclave's
        // data until it joins a group (which then replaces it).
        if !self.replicated() || source == SEALED {
            self.state.import(states);
        }
        self.mirror(guests).await
    }

    /// Makes the guest table the leader's: what is gone or moved is removed
    /// first (so routes never clash on the way), then what is new or
    /// changed is deployed (compiled once per SHA-256, as any upload).
    async fn mirror(&self, wanted: Vec<(GuestConfig, Bytes)>) -> Result<(), SyncError> {
        let current = self.registry.snapshot();
        // A guest whose route or port changes is removed first too, so
        // ports never clash on the way either.
        let places: BTreeMap<&GuestName, (&Route, Option<u16>)> = wanted
            .iter()
            .map(|(c, _)| (&c.name, (&c.route, c.tcp.map(|t| t.port))))
            .collect();
        for g in current.guests() {
            let place = (&g.config.route, g.config.tcp.map(|t| t.port));
            if places.get(&g.config.name) != Some(&place) {
                self.registry.remove(&g.config.name).await;
            }
        }
        for (config, bytes) in wanted {
            let sha = sha256(&bytes);
            if current
                .guests()
                .any(|g| *g.config == config && g.sha256 == sha)
            {
                continue;
            }
            let name = config.name.clone();
            self.registry
                .deploy(config, bytes)
                .await
                .map_err(|e| SyncError::Malformed(format!("guest {name}: {e}")))?;
        }
        Ok(())
    }
}

/// A guest record as a configuration and its bytes, checked like any
/// upload's.
fn guest(record: GuestRecord, blobs: &Blobs) -> Result<(GuestConfig, Bytes), SyncError> {
    let bad = |e: String| SyncError::Malformed(format!("guest {}: {e}", record.name));
    let name: GuestName = record.name.parse().map_err(bad)?;
    let route: Route = record.route.parse().map_err(bad)?;
    let allow = record
        .allow
        .iter()
        .map(|a| a.parse::<AllowRule>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = record
        .tcp
        .as_ref()
        .map(TcpService::from_entry)
        .transpose()
        .map_err(bad)?;
    let config = GuestConfig::new(name, Some(route), allow)
        .map_err(bad)?
        .with_tcp(tcp);
    let bytes = <[u8; 32]>::try_from(record.component_sha256.as_slice())
        .ok()
        .and_then(|sha| blobs.get(&sha))
        .ok_or_else(|| bad("its component was neither held nor sent".into()))?;
    Ok((config, bytes.clone()))
}
