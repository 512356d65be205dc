//! What the registry shows of its guests: the admin API's guest info and
//! the manifest every runtime document binds, from each guest's
//! configuration and code hash.

use bytes::Bytes;
use nacre_api::{GuestInfo, Manifest, ManifestEntry};
use nacre_transport::AllowRule;

use super::GuestConfig;

/// The admin API's view of a guest of `size` bytes hashing to `sha256`.
pub(super) fn info(config: &GuestConfig, sha256: &[u8; 32], size: usize) -> GuestInfo {
    GuestInfo {
        name: config.name.to_string(),
        sha256: hex::encode(sha256),
        route: route_of(config),
        allow: config.allow.iter().map(AllowRule::to_string).collect(),
        size,
        tcp: config.tcp.map(|t| t.entry()),
    }
}

/// The route the manifest and the admin API show: none for a TCP guest.
fn route_of(config: &GuestConfig) -> String {
    match config.tcp {
        Some(_) => String::new(),
        None => config.route.to_string(),
    }
}

/// The manifest of docs/attestation.md (guests sorted by name, canonical
/// JSON) of these guests: clients hash these bytes.
pub(super) fn manifest<'a>(guests: impl Iterator<Item = (&'a GuestConfig, &'a [u8; 32])>) -> Bytes {
    let entries = guests
        .map(|(config, sha256)| ManifestEntry {
            name: config.name.to_string(),
            route: route_of(config),
            sha256: hex::encode(sha256),
            allow: config.allow.iter().map(AllowRule::to_string).collect(),
            tcp: config.tcp.map(|t| t.entry()),
        })
        .collect();
    Bytes::from(Manifest::new(entries).to_bytes())
}
