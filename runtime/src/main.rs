//! `nacre-runtime`: the process inside the enclave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use nacre_runtime::acme::{Acme, AcmeConfig, KeeperConfig};
use nacre_runtime::attest::{self, Attester, Counted};
use nacre_runtime::config::{AttestationMode, Config, ConfigError, LogFormat};
use nacre_runtime::control::ControlLink;
use nacre_runtime::egress::Egress;
use nacre_runtime::guests::kv::{KeyValue, MemoryKv};
use nacre_runtime::guests::state::{LocalState, StateStore};
use nacre_runtime::guests::{
    BootGuest, DeployError, EnclaveCtx, GuestEngine, KvLimits, Limits, Registry,
};
use nacre_runtime::metrics::{Counts, Metrics, MetricsHandler, Sources};
use nacre_runtime::router::{Admin, Endpoints, Guests, Router, Stats};
use nacre_runtime::server::{self, ConnStats, Options, Security};
use nacre_runtime::sync::{Role, Sync, SyncConfig, SyncListener, SyncedState};
use nacre_runtime::tls::Identity;
use nacre_transport::tunnel::Target;
use nacre_transport::{Address, AllowList, Listener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Guest instances that may run at once across the process.
const MAX_INSTANCES: u32 = 256;

fn main() {
    let config = match Config::load_from(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(ConfigError::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let link = init_logging(&config);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(config, link)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Logs go to stderr and, with `--control`, to the host proxy too (the
/// link starts with the async runtime; records made before it wait in its
/// queue).
fn init_logging(config: &Config) -> Option<ControlLink> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    // Colour only for a person at a terminal; files and collectors get
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let stderr = match config.log_format {
        LogFormat::Text => stderr
            .fmt_fields(nacre_runtime::control::BoundedFields)
            .boxed(),
        LogFormat::Json => stderr.json().boxed(),
    };
    let (layer, link) = match &config.control {
        Some(addr) => {
            let (layer, link) = nacre_runtime::control::channel(addr.clone());
            (Some(layer), Some(link))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(layer)
        .init();
    link
}

async fn run(config: Config, mut link: Option<ControlLink>) -> anyhow::Result<()> {
    let (advertise_tx, advertise) = watch::channel(None);
    let sync = sync_config(&config, advertise)?;
    if let (Some(link), Some(_)) = (link.as_mut(), &sync) {
        link.sync_advertise_to(advertise_tx);
    }
    let attester: Arc<dyn Attester> = match (config.attestation, &config.dev_root) {
        (AttestationMode::Nsm, _) => Arc::new(attest::Nsm::open()?),
        (AttestationMode::Dev, Some(dir)) => Arc::new(attest::Dev::open(dir)?),
        (AttestationMode::Dev, None) => {
            bail!("--attestation dev needs --dev-root DIR (where the dev CA is kept)")
        }
    };
    tracing::info!(provider = attester.kind(), "attestation ready");
    let counts = Arc::new(Counts {
        documents: Default::default(),
        log_dropped: link
            .as_ref()
            .map(ControlLink::dropped_total)
            .unwrap_or_default(),
    });
    if let Some(link) = link {
        tokio::spawn(link.run());
    }
    let attester: Arc<dyn Attester> = Arc::new(Counted::new(attester, counts.clone()));
    let identity = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
        _ => Identity::self_signed(&config.fqdn)?,
    };
    tracing::info!(source = identity.source(), sha256 = %hex::encode(identity.leaf_sha256()), "TLS certificate ready");

    let memory_total = guest_memory_total(&config)?;
    tracing::info!(
        total = memory_total,
        per_guest = memory_total * u64::from(config.guest_instances) / u64::from(MAX_INSTANCES),
        "guest memory budget"
    );
    let cap = (!config.egress_allow.is_empty()).then(|| AllowList(config.egress_allow.clone()));
    let egress = Egress::new(
        config.egress.clone(),
        cap.clone(),
        config.extra_ca.as_deref(),
    )?;
    let outbound = egress.outbound();
    match &config.egress {
        Some(proxy) => tracing::info!(%proxy, "guest egress through the host proxy"),
        None => tracing::info!("no --egress: guests have no outbound network"),
    }
    // With --fqdn-leader, state is written on the leader and synchronized;
    // alone, it is this enclave's.
    let (role_tx, roles) = watch::channel(Role::Alone);
    let synced = sync
        .as_ref()
        .map(|_| Arc::new(SyncedState::new(roles.clone())));
    let state: Arc<dyn StateStore> = match &synced {
        Some(s) => s.clone(),
        None => Arc::new(LocalState::default()),
    };
    let kv: Arc<dyn KeyValue> = Arc::new(MemoryKv::new(KvLimits {
        max_keys: config.kv_max_keys,
        max_bytes: config.kv_max_bytes,
    }));
    let engine = GuestEngine::new(
        Limits {
            memory: config.guest_memory,
            request_timeout: config.request_timeout,
            max_body: config.max_body,
            max_instances: MAX_INSTANCES,
            instances_per_guest: config.guest_instances,
            memory_total,
        },
        EnclaveCtx::new(attester.clone(), state.clone(), kv.clone()),
        Arc::new(egress),
    )?;
    let registry = Arc::new(Registry::new(engine, cap));
    // --wait-for-app with ACME: the listener opens at once for the CA's
    // validation, and to clients once the guests and the certificate are
    // ready.
    let gated = config.wait_for_app && config.acme_directory.is_some();
    if !gated {
        boot_guests(&config, &registry).await?;
    }

    // Ctrl-C or SIGTERM stops every listener.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    let options = Options::new(config.client_timeout);
    let mut fleet = None;
    if let (Some(sync_config), Some(synced)) = (sync, synced) {
        let sync = Sync::new(
            sync_config,
            identity.clone(),
            registry.clone(),
            synced,
            attester.clone(),
            role_tx,
        )?;
        let address = match &config.sync_listen {
            Some(a) => a.clone(),
            None => "vsock://any:444".parse::<Address>()?,
        };
        let listener = Listener::bind(&address)
            .await
            .with_context(|| format!("--sync-listen {address}: cannot bind"))?;
        println!("nacre-runtime sync listening on {}", listener.local_addr()?);
        tokio::spawn(server::serve(
            listener,
            Security::Tls(identity.server_config()?),
            Arc::new(SyncListener::new(sync.clone())),
            // Only the deployment's other enclaves need this port.
            Options {
                max_connections: SYNC_CONNECTIONS,
                ..options
            },
            Arc::new(ConnStats::default()),
            stop.clone().cancelled_owned(),
        ));
        tokio::spawn(sync.clone().run());
        fleet = Some(sync);
    }
    // The certificate's keeper: ACME, or the self-signed one renewed; a
    // --tls-cert file is the operator's to renew.
    let keeper = match config.tls_cert {
        Some(_) => None,
        None => {
            let acme = Acme::new(
                KeeperConfig {
                    fqdn: config.fqdn.clone(),
                    acme: config.acme_directory.clone().map(|directory| AcmeConfig {
                        directory,
                        contact: config.acme_contact.clone(),
                    }),
                    renew_after: config.renew_after,
                },
                identity.clone(),
                outbound,
                roles.clone(),
                fleet.clone(),
            )?;
            tokio::spawn(acme.clone().run());
            Some(acme)
        }
    };

    let listener = Listener::bind(&config.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", config.listen))?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(ConnStats::default());
    let figures = Metrics::new(Sources {
        registry: registry.clone(),
        conns: stats.clone(),
        identity: identity.clone(),
        roles: roles.clone(),
        kv,
        sync: fleet,
        counts,
    });
    if let Some(address) = &config.metrics_listen {
        let listener = Listener::bind(address)
            .await
            .with_context(|| format!("--metrics-listen {address}: cannot bind"))?;
        println!(
            "nacre-runtime metrics listening on {}",
            listener.local_addr()?
        );
        tokio::spawn(server::serve(
            listener,
            Security::Plain,
            Arc::new(MetricsHandler(figures.clone())),
            options,
            Arc::new(ConnStats::default()),
            stop.clone().cancelled_owned(),
        ));
    }
    let settings = serde_json::to_value(&config).context("cannot show the configuration")?;
    let router = Router::new(
        Endpoints::new(
            identity.clone(),
            registry.clone(),
            attester,
            settings,
            config
                .debug
                .then(|| Stats::new(stats.clone(), Some(figures.clone()))),
            roles.clone(),
        ),
        Admin::new(
            config.admin_token_sha256,
            config.max_body,
            registry.clone(),
            roles,
        ),
        Guests::new(registry.clone(), config.client_timeout),
    );
    let registry_for_boot = registry;
    let open = Arc::new(AtomicBool::new(!gated));
    let security = Security::Tls(identity.gated_server_config(open.clone())?);
    // Scripts and tests read the bound address (the real port when 0 was
    // asked) from this line on stdout.
    println!("nacre-runtime listening on {bound}");
    tracing::info!(%bound, "serving");

    // Clients' connections get a thread per core of their own (lanes);
    // the sync and metrics listeners stay on the main runtime.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let serving = tokio::spawn(server::serve(
        listener,
        security,
        Arc::new(router),
        options.with_lanes(cores),
        stats,
        stop.clone().cancelled_owned(),
    ));
    if let (true, Some(keeper)) = (gated, keeper) {
        tracing::info!(
            "open for the CA's validation only until the guests and the certificate are ready"
        );
        boot_guests(&config, &registry_for_boot).await?;
        let mut issued = keeper.issued();
        tokio::select! {
            r = issued.wait_for(|issued| *issued) => { r.context("the certificate keeper stopped")?; }
            () = stop.cancelled() => {}
        }
        open.store(true, Ordering::Release);
        tracing::info!("guests and certificate ready: open to clients");
    }
    serving.await.context("the listener task failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Deploys the `--guest` components: before the listener opens with
/// `--wait-for-app`, else in the background, ordered before every admin
/// change.
async fn boot_guests(config: &Config, registry: &Arc<Registry>) -> anyhow::Result<()> {
    // Read every boot guest first, so a typo in a path fails the start.
    let mut boot = Vec::new();
    for BootGuest { config: gc, path } in &config.guests {
        let bytes = std::fs::read(path)
            .with_context(|| format!("--guest {}: cannot read {}", gc.name, path.display()))?;
        boot.push((gc.clone(), Bytes::from(bytes)));
    }
    if config.wait_for_app {
        for (gc, bytes) in boot {
            let name = gc.name.clone();
            registry
                .deploy(gc, bytes)
                .await
                .with_context(|| format!("--guest {name}"))?;
        }
        return Ok(());
    }
    registry
        .mark_starting(boot.iter().map(|(gc, _)| gc.clone()).collect())
        .await;
    let registry = registry.clone();
    tokio::spawn(async move {
        for (gc, bytes) in boot {
            let name = gc.name.clone();
            match registry.deploy_boot(gc, bytes).await {
                Ok(_) => {}
                Err(e @ DeployError::Superseded(_)) => tracing::info!(guest = %name, "{e}"),
                Err(e) => {
                    tracing::error!(guest = %name, "boot guest not deployed: {e}");
                    registry.abandon_boot(&name).await;
                }
            }
        }
    });
    Ok(())
}

/// Connections the sync listener serves at once.
const SYNC_CONNECTIONS: usize = 64;

/// The sync flags, checked together: `--fqdn-leader` needs `--egress`
/// (peers are reached through the host proxy) and `--control` (whose Hello
/// says where peers reach this enclave), and the other sync flags need
/// `--fqdn-leader`.
fn sync_config(
    config: &Config,
    advertise: watch::Receiver<Option<Target>>,
) -> anyhow::Result<Option<SyncConfig>> {
    if config.sync_advertise.is_some() {
        bail!(
            "--sync-advertise is now a flag of nacre-host-proxy, which tells the enclave over the control link: the value differs between parents, and nothing else in the enclave's configuration may come from the host"
        );
    }
    let Some(leader) = &config.fqdn_leader else {
        if config.sync_listen.is_some() {
            bail!("--sync-listen takes effect with --fqdn-leader only: add it, or remove it");
        }
        return Ok(None);
    };
    let leader =
        Target::parse(leader, Some(444)).map_err(|e| anyhow::anyhow!("--fqdn-leader {e}"))?;
    let egress = config.egress.clone().context(
        "--fqdn-leader needs --egress ADDR: enclaves reach each other through the host proxy",
    )?;
    if config.control.is_none() {
        bail!(
            "--fqdn-leader needs --control ADDR: the host proxy's Hello on it says where the other enclaves reach this one (nacre-host-proxy --sync-advertise)"
        );
    }
    Ok(Some(SyncConfig {
        leader,
        advertise,
        accept_pcr0: config.sync_accept_pcr0.clone(),
        egress,
        genesis_after: config.sync_genesis_after,
    }))
}

/// `--guest-memory-total`, or half of this machine's memory: the other half
/// is the runtime's own (compiled code, key-value data, connections) and
/// what host calls copy out of guests, which is never more than the
/// callers' own memory.
fn guest_memory_total(config: &Config) -> anyhow::Result<u64> {
    let total = match config.guest_memory_total {
        Some(t) => t,
        None => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").context(
                "cannot read /proc/meminfo to size guest memory: give --guest-memory-total BYTES",
            )?;
            let kib = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .context("no MemTotal in /proc/meminfo: give --guest-memory-total BYTES")?;
            kib * 1024 / 2
        }
    };
    if total < config.guest_memory {
        bail!(
            "--guest-memory-total {total} is less than --guest-memory {}: no instance could reach its limit; raise the first or lower the second",
            config.guest_memory
        );
    }
    Ok(total)
}

async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}
