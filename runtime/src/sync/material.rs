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
use super::seal::{ChallengeRecord, GuestRecord, Payload};
use super::state::SyncedState;
use super::wire::Lineage;
use crate::guests::{GuestConfig, GuestName, Registry, Route};
use crate::tls::Identity;

/// What a payload is made from and applied to.
pub(crate) struct Material {
    pub identity: Arc<Identity>,
    pub state: Arc<SyncedState>,
    pub registry: Arc<Registry>,
}

impl Material {
    /// Everything this enclave holds now, as `lineage` at `version`.
    pub fn gather(&self, lineage: Lineage, version: u64) -> Payload {
        let (chain, key) = self.identity.export();
        let guests = self
            .registry
            .snapshot()
            .guests()
            .map(|g| GuestRecord {
                name: g.config.name.to_string(),
                route: g.config.route.to_string(),
                allow: g.config.allow.iter().map(AllowRule::to_string).collect(),
                component: ByteBuf::from(g.bytes.to_vec()),
            })
            .collect();
        Payload {
            lineage,
            version,
            tls_chain: chain.iter().map(|c| ByteBuf::from(c.to_vec())).collect(),
            tls_key: ByteBuf::from(key.secret_der().to_vec()),
            states: self
                .state
                .export()
                .into_iter()
                .map(|(k, v)| (k, ByteBuf::from(v)))
                .collect(),
            guests,
            acme_account: self.identity.account(),
            challenges: self
                .identity
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
                .collect(),
        }
    }

    /// Makes this enclave hold `payload`: the certificate it serves (from
    /// the next handshake on), every state slot, and the guest table.
    pub async fn apply(&self, payload: Payload) -> Result<(), SyncError> {
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
            .map(guest)
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
        if chain.first().map(|leaf| super::seal::sha256(leaf)) != Some(self.identity.leaf_sha256())
        {
            self.identity
                .replace(chain, key, "synchronized")
                .map_err(|e| SyncError::Malformed(e.to_string()))?;
        }
        self.identity
            .set_challenges(challenges)
            .map_err(|e| SyncError::Malformed(e.to_string()))?;
        self.identity.set_account(payload.acme_account);
        self.state.import(
            payload
                .states
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect(),
        );
        self.mirror(guests).await
    }

    /// Makes the guest table the leader's: what is gone or moved is removed
    /// first (so routes never clash on the way), then what is new or
    /// changed is deployed (compiled once per SHA-256, as any upload).
    async fn mirror(&self, wanted: Vec<(GuestConfig, Bytes)>) -> Result<(), SyncError> {
        let current = self.registry.snapshot();
        let routes: BTreeMap<&GuestName, &Route> =
            wanted.iter().map(|(c, _)| (&c.name, &c.route)).collect();
        for g in current.guests() {
            if routes.get(&g.config.name) != Some(&&g.config.route) {
                self.registry.remove(&g.config.name).await;
            }
        }
        for (config, bytes) in wanted {
            let sha = super::seal::sha256(&bytes);
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
fn guest(record: GuestRecord) -> Result<(GuestConfig, Bytes), SyncError> {
    let bad = |e: String| SyncError::Malformed(format!("guest {}: {e}", record.name));
    let name: GuestName = record.name.parse().map_err(bad)?;
    let route: Route = record.route.parse().map_err(bad)?;
    let allow = record
        .allow
        .iter()
        .map(|a| a.parse::<AllowRule>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let config = GuestConfig::new(name, Some(route), allow).map_err(bad)?;
    Ok((config, Bytes::from(record.component.into_vec())))
}
