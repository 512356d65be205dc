//! The `--guest` components deployed at start.

use std::sync::Arc;

use bytes::Bytes;

use super::{LOG_TARGET, StartError};
use crate::guests::{BootGuest, DeployError, Registry};

/// Reads every boot guest first, so a typo in a path fails the start.
pub(super) fn read(
    guests: &[BootGuest],
) -> Result<Vec<(crate::guests::GuestConfig, Bytes)>, StartError> {
    let mut boot = Vec::new();
    for BootGuest { config, path } in guests {
        let bytes = std::fs::read(path).map_err(|e| StartError::Guest {
            name: config.name.to_string(),
            why: format!("cannot read {}: {e}", path.display()),
        })?;
        boot.push((config.clone(), Bytes::from(bytes)));
    }
    Ok(boot)
}

/// Deploys the boot guests: before the listener opens with
/// `--wait-for-app`, else in the background, ordered before every admin
/// change (the guests are marked starting first, so an admin change made
/// meanwhile supersedes them).
pub(super) async fn deploy(
    guests: &[BootGuest],
    wait: bool,
    registry: &Arc<Registry>,
) -> Result<(), StartError> {
    let boot = read(guests)?;
    if wait {
        for (gc, bytes) in boot {
            let name = gc.name.to_string();
            registry
                .deploy(gc, bytes)
                .await
                .map_err(|e| StartError::Guest {
                    name,
                    why: e.to_string(),
                })?;
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
                Err(e @ DeployError::Superseded(_)) => {
                    tracing::info!(target: LOG_TARGET, guest = %name, "{e}")
                }
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, guest = %name, "boot guest not deployed: {e}");
                    registry.abandon_boot(&name).await;
                }
            }
        }
    });
    Ok(())
}
