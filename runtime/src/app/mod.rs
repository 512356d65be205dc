//! The composition root: [`Runtime::build`] makes every part of the
//! runtime from checked [`Settings`] and binds its listeners;
//! [`Runtime::serve`] runs it until shutdown. `nacre-runtime`'s `main`, the
//! in-process tests and the benchmark all assemble the runtime here, so a
//! reader finds where any part comes from in one hop.

mod basis;
mod boot;
mod replica;
mod sealed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nacre_transport::tunnel::Target;
use nacre_transport::{Address, Listener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::basis::Core;
use crate::acme::{Acme, AcmeConfig, AcmeError, KeeperConfig};
use crate::attest::AttestError;
use crate::control::ControlLink;
use crate::egress::EgressError;
use crate::fleet::Deployment;
use crate::guests::kv::KeyValue;
use crate::guests::{EngineError, Registry};
use crate::metrics::{Metrics, MetricsHandler, Sources};
use crate::persist::Writer;
use crate::raft::{RaftEndpoints, RaftNode};
use crate::router::{Admin, Endpoints, Guests, Router, Stats};
use crate::server::{self, ConnStats, Options, Security};
use crate::settings::{CertificateSource, Settings, SettingsError, SyncSettings};
use crate::sync::{Node, SyncConfig, SyncError, SyncListener, SyncedState};
use crate::tcp::TcpGuests;
use crate::tls::{Identity, TlsError};

/// The target of what the runtime logs while it starts and stops:
/// `nacre_runtime`, as when the binary's `main` wrote these lines, so
/// filters and collectors matching it keep working.
const LOG_TARGET: &str = "nacre_runtime";

/// Connections the sync listener serves at once: only the deployment's
/// other enclaves need this port.
const SYNC_CONNECTIONS: usize = 64;

/// How long a clean stop waits for the last sealed snapshot.
const FINAL_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the runtime could not start. Each names the flag to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The flags do not go together.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A listener could not be bound.
    #[error("{flag} {address}: cannot bind: {source}")]
    Bind {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        address: Address,
        /// Why.
        source: std::io::Error,
    },
    /// The attestation provider could not be opened.
    #[error(transparent)]
    Attestation(#[from] AttestError),
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Certificate(#[from] TlsError),
    /// Guests' outbound network could not be set up.
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// The wasmtime engine could not be made.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Sync could not be set up.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The replicated data's Raft node could not be started.
    #[error(transparent)]
    Raft(crate::raft::RaftError),
    /// The certificate's keeper could not be set up.
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// A `--guest` could not be read or deployed.
    #[error("--guest {name}: {why}")]
    Guest {
        /// The guest's name.
        name: String,
        /// Why.
        why: String,
    },
    /// A task of the runtime failed.
    #[error("{0}")]
    Stopped(String),
}

/// The addresses the runtime's listeners are bound to (the real port when
/// 0 was asked).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The public TLS listener.
    pub public: Address,
    /// The sync listener, with `--fqdn-leader`.
    pub sync: Option<Address>,
    /// `--metrics-listen`.
    pub metrics: Option<Address>,
}

/// The deployment this enclave belongs to, with `--fqdn-leader`.
struct Fleet {
    node: Arc<Node>,
    listener: Listener,
}

/// A runtime built and bound, not yet serving.
pub struct Runtime {
    settings: Settings,
    bound: Bound,
    public: Listener,
    metrics: Option<(Listener, Arc<Metrics>)>,
    fleet: Option<Fleet>,
    keeper: Option<Arc<Acme>>,
    /// With `--kms-key`: the sealed snapshot writer.
    writer: Option<Writer>,
    /// With `--fqdn-leader`: the replicated data's node.
    raft: Option<Arc<RaftNode>>,
    identity: Arc<Identity>,
    registry: Arc<Registry>,
    router: Router,
    conns: Arc<ConnStats>,
    /// False while the listener is open for the CA's validation only.
    open: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds every part from `settings` and binds the listeners. With
    /// `control`, logs already go to the host proxy; its Hello says where
    /// the other enclaves reach this one.
    pub async fn build(
        settings: Settings,
        control: Option<ControlLink>,
    ) -> Result<Runtime, StartError> {
        let (advertise_tx, advertise) = watch::channel(None);
        let mut control = control;
        if let (Some(link), Some(_)) = (control.as_mut(), &settings.sync) {
            link.sync_advertise_to(advertise_tx);
        }
        let core = Core::build(&settings, control).await?;
        // The cold start: with --kms-key, nothing is served before the
        // deployment's root and newest snapshot are had (or the store
        // says there are none).
        let sealed = sealed::open(&settings, &core).await?;
        // Synchronized state exists when sync is configured.
        let fleet = match (&settings.sync, &core.synced) {
            (Some(sync), Some(synced)) => {
                Some(Fleet::build(sync, advertise, synced.clone(), &core).await?)
            }
            _ => None,
        };
        let node = fleet.as_ref().map(|f| f.node.clone());
        if let Some(sealed) = &sealed {
            sealed.apply(&core, node.as_ref()).await?;
        }
        if !settings.gated() {
            boot::deploy(&settings.guests, settings.wait_for_app, &core.registry).await?;
        }
        let writer = sealed.and_then(|s| s.writer(&core, node));
        let deployment = fleet
            .as_ref()
            .map(|f| f.node.clone() as Arc<dyn Deployment>);
        let keeper = keeper(&settings, &core, deployment.clone())?;
        let public = bind("--listen", &settings.listen).await?;
        let conns = Arc::new(ConnStats::default());
        let figures = Metrics::new(Sources {
            registry: core.registry.clone(),
            conns: conns.clone(),
            identity: core.identity.clone(),
            roles: core.roles.clone(),
            kv: core.kv.clone() as Arc<dyn KeyValue>,
            sync: deployment,
            snapshots: writer.as_ref().map(Writer::stats),
            counts: core.counts.clone(),
        });
        let metrics = match &settings.metrics_listen {
            Some(address) => Some((bind("--metrics-listen", address).await?, figures.clone())),
            None => None,
        };
        let bound = Bound {
            public: local(&public)?,
            sync: fleet.as_ref().map(|f| local(&f.listener)).transpose()?,
            metrics: metrics.as_ref().map(|(l, _)| local(l)).transpose()?,
        };
        let router = router(
            &settings,
            &core,
            conns.clone(),
            figures,
            fleet.as_ref().and_then(|f| f.node.replica_handle()),
        );
        Ok(Runtime {
            open: Arc::new(AtomicBool::new(!settings.gated())),
            identity: core.identity,
            registry: core.registry,
            settings,
            bound,
            public,
            metrics,
            fleet,
            keeper,
            writer,
            raft: core.raft.clone(),
            router,
            conns,
        })
    }

    /// Where the listeners are bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The certificate served (which an embedder may replace).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The guest table.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves until `shutdown` is cancelled. With `--wait-for-app` and
    /// ACME, the listener answers the CA's validation only until the boot
    /// guests are deployed and the certificate is issued.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let options = Options::new(self.settings.limits.client_timeout);
        if let Some(fleet) = self.fleet {
            let security = Security::Tls(self.identity.server_config()?);
            let raft = self.raft.clone().map(RaftEndpoints::new);
            if let Some(node) = &self.raft {
                tokio::spawn(node.clone().tend(shutdown.clone()));
            }
            tokio::spawn(server::serve(
                fleet.listener,
                security,
                Arc::new(replica::PeerListener::new(
                    SyncListener::new(fleet.node.clone()),
                    raft,
                )),
                Options {
                    max_connections: SYNC_CONNECTIONS,
                    ..options.clone()
                },
                Arc::new(ConnStats::default()),
                shutdown.clone().cancelled_owned(),
            ));
            tokio::spawn(fleet.node.run());
        }
        if let Some(keeper) = &self.keeper {
            tokio::spawn(keeper.clone().run());
        }
        // With --kms-key: written until shutdown, and once more then, so a
        // clean stop loses no acknowledged write.
        let writer = self.writer.map(|w| tokio::spawn(w.run(shutdown.clone())));
        if let Some((listener, figures)) = self.metrics {
            tokio::spawn(server::serve(
                listener,
                Security::Plain,
                Arc::new(MetricsHandler(figures)),
                options.clone(),
                Arc::new(ConnStats::default()),
                shutdown.clone().cancelled_owned(),
            ));
        }
        // Clients' HTTPS and TCP guests' connections count in one total.
        let client_slots = Arc::new(tokio::sync::Semaphore::new(
            self.settings.limits.max_connections,
        ));
        let tcp_guests = TcpGuests::new(
            self.registry.clone(),
            self.settings.listen.clone(),
            self.identity.tcp_server_config()?,
            self.settings.limits.client_timeout,
            client_slots.clone(),
        );
        tokio::spawn(tcp_guests.run(shutdown.clone()));
        let security = Security::Tls(self.identity.gated_server_config(self.open.clone())?);
        tracing::info!(target: LOG_TARGET, bound = %self.bound.public, "serving");
        // Clients' connections get a thread per core of their own (lanes);
        // the sync and metrics listeners stay on the main runtime.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let serving = tokio::spawn(server::serve(
            self.public,
            security,
            Arc::new(self.router),
            options.with_lanes(cores).sharing(client_slots),
            self.conns,
            shutdown.clone().cancelled_owned(),
        ));
        if let (true, Some(keeper)) = (self.settings.gated(), self.keeper) {
            open_when_ready(
                &self.settings,
                &self.registry,
                &keeper,
                &self.open,
                &shutdown,
            )
            .await?;
        }
        serving
            .await
            .map_err(|e| StartError::Stopped(format!("the listener task failed: {e}")))?;
        if let Some(writer) = writer
            && tokio::time::timeout(FINAL_SNAPSHOT, writer).await.is_err()
        {
            tracing::error!(target: LOG_TARGET, "the last sealed snapshot was not written within {FINAL_SNAPSHOT:?}: the host's store did not answer");
        }
        tracing::info!(target: LOG_TARGET, "stopped");
        Ok(())
    }
}

/// `--wait-for-app` with ACME: boot the guests, wait for the CA's
/// certificate, then open to clients.
async fn open_when_ready(
    settings: &Settings,
    registry: &Arc<Registry>,
    keeper: &Acme,
    open: &AtomicBool,
    shutdown: &CancellationToken,
) -> Result<(), StartError> {
    tracing::info!(target: LOG_TARGET, "open for the CA's validation only until the guests and the certificate are ready");
    boot::deploy(&settings.guests, true, registry).await?;
    let mut issued = keeper.issued();
    tokio::select! {
        r = issued.wait_for(|issued| *issued) => {
            r.map_err(|_| StartError::Stopped("the certificate keeper stopped".into()))?;
        }
        () = shutdown.cancelled() => {}
    }
    open.store(true, Ordering::Release);
    tracing::info!(target: LOG_TARGET, "guests and certificate ready: open to clients");
    Ok(())
}

impl Fleet {
    /// The sync node and its bound listener.
    async fn build(
        sync: &SyncSettings,
        advertise: watch::Receiver<Option<Target>>,
        synced: Arc<SyncedState>,
        core: &Core,
    ) -> Result<Fleet, StartError> {
        let advertise_for_raft = advertise.clone();
        let node = Node::new(
            SyncConfig {
                leader: sync.leader.clone(),
                advertise,
                accept_pcr0: sync.accept_pcr0.clone(),
                egress: sync.egress.clone(),
                genesis_after: sync.genesis_after,
            },
            core.identity.clone(),
            core.registry.clone(),
            synced,
            core.attester.clone(),
            core.role_tx.clone(),
        )?;
        if let Some(raft) = &core.raft {
            node.set_replica(Arc::new(replica::Replicated::new(
                raft.clone(),
                sync.leader.to_string(),
                advertise_for_raft,
            )));
        }
        let listener = bind("--sync-listen", &sync.listen).await?;
        Ok(Fleet { node, listener })
    }
}

/// The certificate's keeper: ACME, or the self-signed one renewed; a
/// `--tls-cert` file is the operator's to renew.
fn keeper(
    settings: &Settings,
    core: &Core,
    deployment: Option<Arc<dyn Deployment>>,
) -> Result<Option<Arc<Acme>>, StartError> {
    let acme = match &settings.certificate {
        CertificateSource::Files { .. } => return Ok(None),
        CertificateSource::Acme { directory, contact } => Some(AcmeConfig {
            directory: directory.clone(),
            contact: contact.clone(),
        }),
        CertificateSource::SelfSigned => None,
    };
    Ok(Some(Acme::new(
        KeeperConfig {
            fqdn: settings.fqdn.clone(),
            acme,
            renew_after: settings.renew_after,
        },
        core.identity.clone(),
        core.outbound.clone(),
        core.roles.clone(),
        deployment,
    )?))
}

/// The public listener's handler: the `/enclave` endpoints, the admin API
/// and the guests.
fn router(
    settings: &Settings,
    core: &Core,
    conns: Arc<ConnStats>,
    figures: Arc<Metrics>,
    replica: Option<Arc<dyn crate::fleet::Replica>>,
) -> Router {
    Router::new(
        Endpoints::new(
            core.identity.clone(),
            core.registry.clone(),
            core.attester.clone(),
            settings.shown.clone(),
            settings.debug.then(|| Stats::new(conns, Some(figures))),
            core.roles.clone(),
        )
        .with_replica(replica),
        Admin::new(
            settings.admin_token_sha256,
            settings.limits.max_body,
            core.registry.clone(),
            core.roles.clone(),
        ),
        Guests::new(core.registry.clone(), settings.limits.client_timeout),
    )
}

async fn bind(flag: &'static str, address: &Address) -> Result<Listener, StartError> {
    Listener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            flag,
            address: address.clone(),
            source,
        })
}

fn local(listener: &Listener) -> Result<Address, StartError> {
    listener
        .local_addr()
        .map_err(|e| StartError::Stopped(format!("cannot read a bound address: {e}")))
}
