//! With `--kms-key`: the sealed deployment at start (the root from KMS,
//! the newest snapshot applied) and the writer that keeps it current.

use std::sync::Arc;

use super::basis::Core;
use super::{LOG_TARGET, StartError};
use crate::egress::Outbound;
use crate::persist::{Restored, Sources, Vault, VaultConfig, Writer};
use crate::settings::Settings;
use crate::sync::{Material, Node};

/// The vault and what it held at start.
pub(super) struct Sealed {
    vault: Arc<Vault>,
    restored: Option<Restored>,
}

/// The vault of `--kms-key`, after the cold start: waits (retrying, with
/// the reason logged) until the root and the newest snapshot are had, or
/// the store says this deployment has none yet.
pub(super) async fn open(settings: &Settings, core: &Core) -> Result<Option<Sealed>, StartError> {
    let Some(kms) = &settings.kms else {
        return Ok(None);
    };
    // KMS has a TLS client of its own: Amazon's roots, or --kms-ca.
    let tls = crate::persist::kms_tls(kms.ca.as_deref())
        .map_err(|e| StartError::Stopped(e.to_string()))?;
    let outbound = Outbound::new(kms.egress.clone(), tls);
    // Sync names the deployment by its leader's name; one enclave by its
    // own.
    let deployment = match &settings.sync {
        Some(sync) => sync.leader.to_string(),
        None => settings.fqdn.clone(),
    };
    tracing::info!(target: LOG_TARGET, key = %kms.key, %deployment, "sealed deployment: reading its root and newest snapshot from the host's store");
    let vault = Arc::new(Vault::new(
        VaultConfig {
            key: kms.key.clone(),
            endpoint: kms.endpoint.clone(),
            deployment,
            control: kms.control.clone(),
        },
        outbound,
        core.attester.clone(),
    ));
    let restored = vault.start().await;
    if restored.is_none() {
        tracing::warn!(target: LOG_TARGET, "the host's store holds no root for this deployment: it starts anew, and its root is made with its first snapshot");
    }
    Ok(Some(Sealed { vault, restored }))
}

impl Sealed {
    /// Makes this enclave hold the snapshot's deployment: certificate,
    /// guests, state and key-value data; with sync, the key set too.
    pub(super) async fn apply(
        &self,
        core: &Core,
        node: Option<&Arc<Node>>,
    ) -> Result<(), StartError> {
        let Some(r) = &self.restored else {
            return Ok(());
        };
        let failed = |e: crate::sync::SyncError| {
            StartError::Stopped(format!(
                "the sealed snapshot {} could not be applied: {e}",
                r.seq
            ))
        };
        match (node, &core.synced) {
            (Some(node), _) => node
                .restore(r.payload.clone(), r.blobs.clone())
                .await
                .map_err(failed)?,
            (None, Some(state)) => {
                let material = Material {
                    identity: core.identity.clone(),
                    state: state.clone(),
                    registry: core.registry.clone(),
                    replicated: Default::default(),
                };
                let named = Material::named(&r.payload, &r.blobs).map_err(failed)?;
                material
                    .apply(r.payload.clone(), &named, crate::sync::SEALED)
                    .await
                    .map_err(failed)?;
            }
            (None, None) => {
                return Err(StartError::Stopped(
                    "a sealed deployment without state to restore into".into(),
                ));
            }
        }
        core.kv.import(r.kv.clone());
        if let Some(raft) = &core.raft {
            // Only an enclave that restored the deployment's data may start
            // its replicated group again (after a whole restart).
            raft.restored();
        }
        tracing::info!(target: LOG_TARGET, seq = r.seq, guests = r.payload.guests.len(), sha256 = %hex::encode(core.identity.leaf_sha256()), "deployment restored from its sealed snapshot");
        Ok(())
    }

    /// The writer, continuing from the snapshot held.
    pub(super) fn writer(self, core: &Core, node: Option<Arc<Node>>) -> Option<Writer> {
        let state = core.synced.clone()?;
        Some(Writer::new(
            self.vault,
            Sources {
                identity: core.identity.clone(),
                registry: core.registry.clone(),
                state,
                kv: core.kv.clone(),
                node,
                roles: core.roles.clone(),
            },
            self.restored.as_ref(),
        ))
    }
}
