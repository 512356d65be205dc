//! `nacre-host-proxy`: the parent-instance side of Nacre.
//!
//! It never holds a key: inbound it copies the client's TLS bytes to the
//! enclave, outbound it opens CONNECT tunnels the enclave's own TLS runs
//! through. What it may see is exactly what the tests record: byte counts,
//! and the `CONNECT host:port` line of each tunnel.
//!
//! - [`inbound`]: `--inbound LISTEN=TARGET` byte forwarding
//! - [`egress`]: the `--egress-listen` CONNECT proxy and its allow list
//! - [`ranges`]: the addresses an allowed name may not resolve to
//! - [`control`]: `--control-listen`, the enclave's logs to stdout and its
//!   store links
//! - [`store`]: `--store`, the enclave's sealed objects as files
//! - [`credentials`]: `--aws-credentials`, what the enclave gets for KMS
//! - [`metrics`]: `--metrics-listen`, Prometheus text
//! - [`relay`]: the counted, half-close-aware byte copy both share

mod args;
mod control;
mod credentials;
mod egress;
mod inbound;
mod metrics;
mod ranges;
mod relay;
mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nacre_transport::{Address, Listener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::args::{Args, LogFormat};
use crate::credentials::CredentialsFrom;
use crate::metrics::Metrics;
use crate::relay::Limits;

fn main() {
    let args = Args::parse();
    init_logging(args.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

/// Each relayed connection holds two sockets:
/// the usual soft limit of 1024 descriptors would cap the proxy far below
/// `--max-connections`, so take the hard limit, as servers commonly do.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.inbound.is_empty() && args.egress_listen.is_none() && args.control_listen.is_none() {
        anyhow::bail!(
            "nothing to do: give --inbound LISTEN=TARGET and/or --egress-listen ADDR (see --help)"
        );
    }
    raise_fd_limit();
    let metrics = Arc::new(Metrics::default());
    let limits = Limits::new(args.max_connections, metrics.clone());
    // Every connection task is tracked, so SIGTERM can wait for them.
    let tasks = TaskTracker::new();
    let mut accept_loops = start_inbound(&args, &limits, &tasks).await?;
    if let Some(addr) = &args.egress_listen {
        accept_loops.push(start_egress(&args, addr, &limits, &tasks).await?);
    }
    if let Some(addr) = &args.control_listen {
        accept_loops.push(start_control(&args, addr, &metrics).await?);
    }
    if let Some(addr) = &args.metrics_listen {
        start_metrics(addr, &metrics).await?;
    }
    println!("nacre-host-proxy ready");

    wait_for_stop().await?;
    drain(&accept_loops, &tasks, args.drain_timeout.into()).await;
    Ok(())
}

/// Binds `addr`, naming the `flag` it was given by when that fails.
async fn bind(addr: &Address, flag: &str) -> anyhow::Result<Listener> {
    Listener::bind(addr)
        .await
        .with_context(|| format!("{flag}: cannot listen on {addr}"))
}

/// Binds and serves each `--inbound` route in turn, printing where it
/// listens; returns their accept loops.
async fn start_inbound(
    args: &Args,
    limits: &Limits,
    tasks: &TaskTracker,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut accept_loops = Vec::new();
    for route in &args.inbound {
        let listener = bind(&route.listen, "--inbound").await?;
        let bound = listener.local_addr()?;
        println!("nacre-host-proxy inbound {bound} -> {}", route.target);
        accept_loops.push(tokio::spawn(inbound::serve(
            listener,
            route.target.clone(),
            limits.clone(),
            tasks.clone(),
        )));
    }
    Ok(accept_loops)
}

/// Binds `--egress-listen`, warns about an allow list that refuses
/// everything or lets names reach private addresses, and serves CONNECT
/// under the policy the arguments give.
async fn start_egress(
    args: &Args,
    addr: &Address,
    limits: &Limits,
    tasks: &TaskTracker,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = bind(addr, "--egress-listen").await?;
    let bound = listener.local_addr()?;
    if args.egress_allow.is_empty() && args.egress_allow_private_to.is_empty() {
        tracing::warn!("no --egress-allow: every CONNECT will be refused");
    }
    if args.egress_allow_private {
        // Kept for development; in production it lets any allowed
        // name (a guest's too) be pointed into the parent's network.
        tracing::warn!(
            "--egress-allow-private: every allowed name may resolve to loopback and private addresses; name only the destinations that need it with --egress-allow-private-to HOST:PORT"
        );
    }
    println!("nacre-host-proxy egress {bound}");
    let policy = Arc::new(egress::Policy {
        allow: nacre_transport::AllowList(args.egress_allow.clone()),
        private_to: nacre_transport::AllowList(args.egress_allow_private_to.clone()),
        private_everywhere: args.egress_allow_private,
        connect_timeout: args.connect_timeout.into(),
    });
    Ok(tokio::spawn(egress::serve(
        listener,
        policy,
        limits.clone(),
        tasks.clone(),
    )))
}

/// Opens `--store` (its directory must exist), sets up `--aws-credentials`,
/// binds `--control-listen` and serves the enclave's control links.
async fn start_control(
    args: &Args,
    addr: &Address,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<JoinHandle<()>> {
    let files = match &args.store {
        Some(dir) => {
            // Its errors name the flag, the directory and the fix.
            let files = store::FileStore::open(dir)?;
            tracing::info!(dir = %files.root().display(), "the enclave's store is in this directory");
            Some(files)
        }
        None => None,
    };
    let credentials =
        credentials::Credentials::new(args.aws_credentials.clone(), &args.imds_endpoint);
    let host = store::HostStore::new(files, credentials, metrics.clone());
    let listener = bind(addr, "--control-listen").await?;
    println!("nacre-host-proxy control {}", listener.local_addr()?);
    let control = control::Control::new(
        args.log_format,
        args.sync_advertise.clone(),
        host,
        metrics.clone(),
    );
    let control = Arc::new(control);
    if args.aws_credentials == CredentialsFrom::Imds {
        // Early word for the operator if IMDS is out of reach (a hop limit
        // of 1 in a container, no instance profile); the enclave's
        // requests try again.
        let control = control.clone();
        tokio::spawn(async move { control.check_credentials().await });
    }
    Ok(tokio::spawn(control::serve(listener, control)))
}

/// Binds `--metrics-listen` and serves the metrics. Not an accept loop
/// to stop on SIGTERM: metrics stay readable while connections drain.
async fn start_metrics(addr: &Address, metrics: &Arc<Metrics>) -> anyhow::Result<()> {
    let listener = bind(addr, "--metrics-listen").await?;
    println!("nacre-host-proxy metrics {}", listener.local_addr()?);
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Stops accepting (dropping the listeners removes unix socket files),
/// then lets open connections finish, for at most `timeout`.
async fn drain(accept_loops: &[JoinHandle<()>], tasks: &TaskTracker, timeout: Duration) {
    for l in accept_loops {
        l.abort();
    }
    tasks.close();
    tracing::info!(open = tasks.len(), "draining");
    if tokio::time::timeout(timeout, tasks.wait()).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "drain timeout: closing remaining connections"
        );
    }
}
