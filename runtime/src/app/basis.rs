//! What the guests run on, before the listeners: attestation, the
//! certificate, egress, state and key-value data, the engine and the guest
//! table.

use std::sync::Arc;

use tokio::sync::watch;

use super::replica::SyncedSlots;
use super::{LOG_TARGET, StartError};
use crate::attest::{self, Attester, Counted};
use crate::control::ControlLink;
use crate::egress::{Egress, Outbound};
use crate::fleet::Role;
use crate::guests::kv::{KeyValue, MemoryKv};
use crate::guests::state::{LocalState, StateStore};
use crate::guests::{EnclaveCtx, GuestEngine, Limits, Registry};
use crate::metrics::Counts;
use crate::raft::{RaftNode, ReplicatedKv, ReplicatedState, Slots};
use crate::settings::{AttestationSource, CertificateSource, MAX_INSTANCES, Settings};
use crate::sync::SyncedState;
use crate::tls::Identity;

/// What the guests run on, before the listeners.
pub(super) struct Core {
    pub attester: Arc<dyn Attester>,
    pub counts: Arc<Counts>,
    pub identity: Arc<Identity>,
    pub registry: Arc<Registry>,
    pub kv: Arc<MemoryKv>,
    pub outbound: Option<Outbound>,
    pub roles: watch::Receiver<Role>,
    pub role_tx: watch::Sender<Role>,
    pub synced: Option<Arc<SyncedState>>,
    /// With `--fqdn-leader`: this enclave's node of the deployment's
    /// replicated data.
    pub raft: Option<Arc<RaftNode>>,
}

impl Core {
    /// Attestation, the certificate, guests' egress and the guest table.
    pub(super) async fn build(
        settings: &Settings,
        control: Option<ControlLink>,
    ) -> Result<Core, StartError> {
        let attester: Arc<dyn Attester> = match &settings.attestation {
            AttestationSource::Nsm => Arc::new(attest::Nsm::open()?),
            AttestationSource::Dev { root, pcr8 } => {
                Arc::new(attest::Dev::open(root, pcr8.clone())?)
            }
        };
        tracing::info!(target: LOG_TARGET, provider = attester.kind(), "attestation ready");
        let counts = Arc::new(Counts {
            documents: Arc::default(),
            log_dropped: control
                .as_ref()
                .map(ControlLink::dropped_total)
                .unwrap_or_default(),
        });
        if let Some(link) = control {
            tokio::spawn(link.run());
        }
        let attester: Arc<dyn Attester> =
            Arc::new(Counted::new(attester, counts.documents.clone()));
        let identity = match &settings.certificate {
            CertificateSource::Files { cert, key } => Identity::from_pem_files(cert, key)?,
            _ => Identity::self_signed(&settings.fqdn)?,
        };
        tracing::info!(target: LOG_TARGET, source = identity.source(), sha256 = %hex::encode(identity.leaf_sha256()), "TLS certificate ready");
        let egress = egress(settings)?;
        let outbound = egress.outbound();
        // With --fqdn-leader, state is written on the leader and
        // synchronized; with --kms-key, it is sealed in snapshots; alone
        // and unsealed, it is this enclave's.
        let (role_tx, roles) = watch::channel(Role::Alone);
        let synced = (settings.sync.is_some() || settings.kms.is_some())
            .then(|| Arc::new(SyncedState::new(roles.clone())));
        let state: Arc<dyn StateStore> = match &synced {
            Some(s) => s.clone(),
            None => Arc::new(LocalState::default()),
        };
        let kv = Arc::new(MemoryKv::new(settings.limits.kv));
        let mut shared = kv.clone() as Arc<dyn KeyValue>;
        let mut state = state;
        // With --fqdn-leader, guests' key-value data and state are one
        // set for the deployment, replicated by Raft.
        let raft = match (&settings.sync, &synced) {
            (Some(sync), Some(synced)) => {
                let slots: Arc<dyn Slots> = Arc::new(SyncedSlots(synced.clone()));
                let node = super::replica::start_node(sync, kv.clone(), slots.clone()).await?;
                shared = Arc::new(ReplicatedKv::new(node.clone()));
                state = Arc::new(ReplicatedState::new(node.clone(), slots));
                Some(node)
            }
            _ => None,
        };
        let enclave = EnclaveCtx::new(attester.clone(), state, shared);
        let engine = engine(settings, enclave, egress)?;
        let mut own = vec![("--listen", &settings.listen)];
        own.extend(settings.sync.as_ref().map(|s| ("--sync-listen", &s.listen)));
        own.extend(
            settings
                .metrics_listen
                .as_ref()
                .map(|m| ("--metrics-listen", m)),
        );
        let registry = Arc::new(
            Registry::new(engine, settings.egress.cap.clone())
                .with_reserved_ports(crate::tcp::reserved_ports(&settings.listen, &own)),
        );
        Ok(Core {
            attester,
            counts,
            identity,
            registry,
            kv,
            outbound,
            roles,
            role_tx,
            synced,
            raft,
        })
    }
}

/// Guests' outbound network through the host proxy, if any.
fn egress(settings: &Settings) -> Result<Egress, StartError> {
    let e = &settings.egress;
    let egress = Egress::new(e.proxy.clone(), e.cap.clone(), e.extra_ca.as_deref())?;
    match &e.proxy {
        Some(proxy) => {
            tracing::info!(target: LOG_TARGET, %proxy, "guest egress through the host proxy")
        }
        None => tracing::info!(target: LOG_TARGET, "no --egress: guests have no outbound network"),
    }
    Ok(egress)
}

/// The wasmtime engine, its memory budget logged.
fn engine(
    settings: &Settings,
    enclave: Arc<EnclaveCtx>,
    egress: Egress,
) -> Result<GuestEngine, StartError> {
    let l = &settings.limits;
    tracing::info!(target: LOG_TARGET,
        total = l.guest_memory_total,
        per_guest = l.guest_memory_total * u64::from(l.guest_instances) / u64::from(MAX_INSTANCES),
        "guest memory budget"
    );
    Ok(GuestEngine::new(
        Limits {
            memory: l.guest_memory,
            request_timeout: l.request_timeout,
            max_body: l.max_body,
            max_instances: MAX_INSTANCES,
            instances_per_guest: l.guest_instances,
            memory_total: l.guest_memory_total,
        },
        enclave,
        Arc::new(egress),
    )?)
}
