//! `nacre-runtime`: the process inside the enclave.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use nacre_runtime::attest::{self, Attester};
use nacre_runtime::config::{AttestationMode, Config, ConfigError, LogFormat};
use nacre_runtime::egress::Egress;
use nacre_runtime::guests::{
    BootGuest, DeployError, EnclaveCtx, GuestEngine, KvLimits, Limits, Registry,
};
use nacre_runtime::router::{Admin, Endpoints, Guests, Router, Stats};
use nacre_runtime::server::{self, ConnStats, Options, Security};
use nacre_runtime::tls::Identity;
use nacre_transport::{AllowList, Listener};
use tokio::signal::unix::{SignalKind, signal};

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
    init_logging(config.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(config)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    // Colour only for a person at a terminal; files and collectors get
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    refuse_unbuilt(&config)?;
    let attester: Arc<dyn Attester> = match (config.attestation, &config.dev_root) {
        (AttestationMode::Nsm, _) => Arc::new(attest::Nsm::open()?),
        (AttestationMode::Dev, Some(dir)) => Arc::new(attest::Dev::open(dir)?),
        (AttestationMode::Dev, None) => {
            bail!("--attestation dev needs --dev-root DIR (where the dev CA is kept)")
        }
    };
    tracing::info!(provider = attester.kind(), "attestation ready");
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
    match &config.egress {
        Some(proxy) => tracing::info!(%proxy, "guest egress through the host proxy"),
        None => tracing::info!("no --egress: guests have no outbound network"),
    }
    let engine = GuestEngine::new(
        Limits {
            memory: config.guest_memory,
            request_timeout: config.request_timeout,
            max_body: config.max_body,
            max_instances: MAX_INSTANCES,
            instances_per_guest: config.guest_instances,
            memory_total,
        },
        EnclaveCtx::local(
            attester.clone(),
            KvLimits {
                max_keys: config.kv_max_keys,
                max_bytes: config.kv_max_bytes,
            },
        ),
        Arc::new(egress),
    )?;
    let registry = Arc::new(Registry::new(engine, cap));

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
    } else {
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
    }

    let listener = Listener::bind(&config.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", config.listen))?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(ConnStats::default());
    let settings = serde_json::to_value(&config).context("cannot show the configuration")?;
    let router = Router::new(
        Endpoints::new(
            identity.clone(),
            registry.clone(),
            attester,
            settings,
            config.debug.then(|| Stats::new(stats.clone())),
        ),
        Admin::new(config.admin_token_sha256, config.max_body, registry.clone()),
        Guests::new(registry, config.client_timeout),
    );
    let security = Security::Tls(identity.server_config()?);
    // Scripts and tests read the bound address (the real port when 0 was
    // asked) from this line on stdout.
    println!("nacre-runtime listening on {bound}");
    tracing::info!(%bound, "serving");

    server::serve(
        listener,
        security,
        Arc::new(router),
        Options::new(config.client_timeout),
        stats,
        shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
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

/// Flags of SPEC §3 whose features this build does not have yet: refused
/// at start, so nobody believes they are on.
fn refuse_unbuilt(config: &Config) -> anyhow::Result<()> {
    let unbuilt = [
        ("--acme-directory", config.acme_directory.is_some()),
        ("--acme-contact", config.acme_contact.is_some()),
        ("--fqdn-leader", config.fqdn_leader.is_some()),
        ("--sync-listen", config.sync_listen.is_some()),
        ("--sync-advertise", config.sync_advertise.is_some()),
        ("--metrics-listen", config.metrics_listen.is_some()),
        ("--control", config.control.is_some()),
    ];
    for (flag, set) in unbuilt {
        if set {
            bail!("{flag} is not supported by this build of nacre-runtime yet; remove it");
        }
    }
    Ok(())
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
