//! The HTTPS client every command uses, and how it decides whom to trust.
//!
//! Three ways to judge a server's certificate, all with rustls and the ring
//! provider named here:
//!
//! - chained to the Mozilla roots or to a pinned `--root` (the connection
//!   on which deploy and guests attest the server);
//! - any certificate at all, for `nacre attest` (the attestation document
//!   then says which certificate the enclave holds) and `--insecure`;
//! - exactly the certificate an attestation document bound, for the
//!   requests that carry the admin token.
//!
//! Every way, the TLS handshake must be signed with the key of the
//! certificate presented. Skipping that check (as a client that "accepts
//! any certificate" usually does) would let a relay replay the enclave's
//! real certificate with a key of its own, and an attested certificate
//! would then prove nothing about the connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nacre_transport::presented::PresentedKey;

/// Trust flags shared by commands that talk to a runtime.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Trust this PEM certificate (a CA, or the server's own self-signed
    /// certificate) for TLS, in addition to the public roots. This is not
    /// the attestation root (that is --attestation-root).
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub root: Option<PathBuf>,

    /// Accept any server certificate and skip attestation: the admin token
    /// goes to whatever answers at URL. Only for a local dev runtime you
    /// started yourself: it defeats TLS.
    #[arg(long)]
    pub insecure: bool,
}

impl TrustArgs {
    /// A client that trusts the public roots plus `--root`, or any
    /// certificate with `--insecure`.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        if self.insecure {
            client(Judge::Presented)
        } else {
            client(Judge::Roots(self.root.as_deref()))
        }
    }
}

/// A client that takes any certificate, for callers that judge it by what
/// an attestation document binds; the handshake signature is still checked.
pub fn attesting_client() -> anyhow::Result<reqwest::Client> {
    client(Judge::Presented)
}

/// A client that takes only the certificate `der` (one an attestation
/// document bound), from a server that signs the handshake with its key:
/// what the admin token travels on.
pub fn pinned_client(der: Vec<u8>) -> anyhow::Result<reqwest::Client> {
    client(Judge::Attested(der))
}

/// How a client judges the server's certificate.
enum Judge<'a> {
    /// Chained to the Mozilla roots plus the certificates in this file.
    Roots(Option<&'a Path>),
    /// Any certificate whose key signed the handshake.
    Presented,
    /// Only this certificate (DER), whose key signed the handshake.
    Attested(Vec<u8>),
}

fn client(judge: Judge<'_>) -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?;
    let builder = match judge {
        Judge::Roots(extra) => builder.with_root_certificates(root_store(extra)?),
        Judge::Presented => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PresentedKey::new(&provider))),
        Judge::Attested(der) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PresentedKey::only(&provider, der))),
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .tls_info(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// The Mozilla roots plus every certificate in `extra`.
fn root_store(extra: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = extra else {
        return Ok(roots);
    };
    let certs = nacre_transport::pem::certificates(path).context("--root")?;
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("--root {}: not a usable certificate", path.display()))?;
    }
    Ok(roots)
}

/// DER of the certificate the server presented on the connection that
/// answered `resp` (the client must have been built with `tls_info`).
pub fn peer_certificate(resp: &reqwest::Response) -> Option<Vec<u8>> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
}

/// Reads an error response's message ([`nacre_api::ErrorBody`]), or its
/// raw text.
pub async fn fail(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let msg = nacre_api::ErrorBody::message(&body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    anyhow::anyhow!("{status}: {msg}")
}

/// Explains a connection failure, pointing at the trust flags when the
/// certificate was the problem.
pub fn connect_error(url: &str, e: reqwest::Error) -> anyhow::Error {
    let chain = format!("{e:?}");
    if chain.contains("NotThePinnedCertificate") {
        anyhow::anyhow!(
            "{url}: the server's TLS certificate is not the one the enclave attested a moment ago: something between you and the enclave terminates TLS (or the enclave renewed its certificate just then: try again); the admin token was not sent"
        )
    } else if chain.contains("BadSignature") {
        anyhow::anyhow!(
            "{url}: the TLS handshake was not signed by the key of the certificate the server presented ({e}): something between you and the server shows a certificate whose key it does not hold"
        )
    } else if chain.contains("UnknownIssuer") || chain.contains("certificate") {
        anyhow::anyhow!(
            "{url}: the server's TLS certificate is not trusted ({e}); pass --root PEM with its certificate, or --insecure for a local dev runtime"
        )
    } else {
        anyhow::anyhow!("{url}: {e}")
    }
}
