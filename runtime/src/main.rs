//! `nacre-runtime`: the process inside the enclave.

use anyhow::Context;
use nacre_runtime::config::{Config, ConfigError, LogFormat};
use nacre_runtime::control::ControlLink;
use nacre_runtime::{Runtime, Settings};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn main() {
    let config = match Config::load_from(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(ConfigError::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if config.check {
        std::process::exit(check(config));
    }
    let link = init_logging(&config);
    let result = Settings::from_config(config)
        .map_err(anyhow::Error::from)
        .and_then(|settings| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(run(settings, link)))
        });
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `--check`: the flags as the runtime would take them, then each boot
/// guest compiled and linked as it would be deployed.
fn check(config: Config) -> i32 {
    let settings = match Settings::from_config(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for guest in &settings.guests {
        let name = &guest.config.name;
        let checked = std::fs::read(&guest.path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|bytes| {
                nacre_runtime::guests::check_component(&bytes, guest.config.tcp.is_some())
            });
        if let Err(e) = checked {
            eprintln!("error: --guest {name} ({}): {e}", guest.path.display());
            return 2;
        }
    }
    println!(
        "nacre-runtime: the flags and {} boot guest(s) are valid",
        settings.guests.len()
    );
    0
}

/// Logs go to stderr and, with `--control`, to the host proxy too (the
/// link starts with the async runtime; records made before it wait in its
/// queue).
fn init_logging(config: &Config) -> Option<ControlLink> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,openraft=warn")
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

async fn run(settings: Settings, link: Option<ControlLink>) -> anyhow::Result<()> {
    let runtime = Runtime::build(settings, link).await?;
    // Scripts and tests read the bound addresses (the real port when 0 was
    // asked) from these lines on stdout.
    let bound = runtime.bound();
    if let Some(sync) = &bound.sync {
        println!("nacre-runtime sync listening on {sync}");
    }
    if let Some(metrics) = &bound.metrics {
        println!("nacre-runtime metrics listening on {metrics}");
    }
    println!("nacre-runtime listening on {}", bound.public);
    // Ctrl-C or SIGTERM stops every listener.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    runtime.serve(stop).await?;
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
