//! `nacre attest`: check a live runtime — its document, that this very
//! connection's TLS certificate is the attested one, and its guests.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use nacre_api::{Manifest, NONCE_LEN, paths};
use nacre_attestation::{RuntimeBinding, Verified, Verifier, VerifyError};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::verify::{gather_pins, parse_pcr, summary, verifier_for};
use nacre_cli::client::{attesting_client, connect_error, fail, peer_certificate};

/// Attest a running runtime: fetch a document for a fresh nonce, verify it,
/// check that the TLS certificate of this same connection is the one it
/// binds, then fetch the manifest, check its hash and the expected guests.
/// Exits 0 only when all of that holds.
///
/// The TLS certificate is trusted because the document binds it, not
/// because a CA signed it: self-signed enclave certificates work without
/// --insecure.
#[derive(Debug, Args)]
pub struct AttestCmd {
    /// Base URL of the runtime, e.g. https://localhost:8443.
    pub url: String,
    /// Trust this attestation root (PEM) instead of the AWS Nitro root,
    /// e.g. a dev runtime's DIR/root.pem. Also spelled --attestation-root,
    /// the name deploy and guests use.
    #[arg(long, visible_alias = "attestation-root", value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Require PCR N to hold HEX (repeatable).
    #[arg(long, value_name = "N=HEX", value_parser = parse_pcr)]
    pub pcr: Vec<(u32, Vec<u8>)>,
    /// Require the PCRs in this JSON file, as `nitro-cli describe-eif`
    /// prints them ({"Measurements": {"PCR0": "HEX", ...}}) or a flat
    /// {"PCR0": "HEX", ...} object. PCR8 alone pins a signed release.
    #[arg(long, value_name = "FILE")]
    pub pcrs: Option<PathBuf>,
    /// Require guest NAME to be deployed with this SHA-256 (repeatable).
    #[arg(long, value_name = "NAME=SHA256", value_parser = parse_guest)]
    pub guest: Vec<(String, String)>,
}

impl AttestCmd {
    /// Runs the command.
    pub async fn execute(self) -> anyhow::Result<()> {
        let verifier = verifier_for(self.root.as_deref())?;
        let pins: Vec<(u32, Vec<u8>)> = gather_pins(self.pcrs.as_deref(), &self.pcr)?
            .into_iter()
            .collect();
        // The certificate is judged below, against the attested hash; the
        // client still makes the server prove it holds that certificate's
        // key.
        let client = attesting_client()?;
        let base = self.url.trim_end_matches('/');

        // The manifest may change between the two requests (a deploy): try
        // once more before calling it a mismatch.
        let mut last_err = None;
        for _ in 0..2 {
            let Attested {
                verified, binding, ..
            } = attest_once(&client, base, &verifier, &pins).await?;
            let (manifest, cert) = get(&client, base, paths::MANIFEST).await?;
            check_cert(&binding, &cert)?;
            if <[u8; 32]>::from(Sha256::digest(&manifest)) != binding.manifest_sha256 {
                last_err = Some(anyhow!(
                    "binding mismatch: /enclave/manifest does not hash to the manifest SHA-256 in the document"
                ));
                continue;
            }
            let manifest = Manifest::from_slice(&manifest).context("/enclave/manifest")?;
            check_guests(&manifest, &self.guest)?;
            // PCR0 pins the image; PCR8, the certificate a release was
            // signed with.
            if !pins.iter().any(|(i, _)| *i == 0 || *i == 8) {
                warn_unpinned(&verified);
            }
            let mut out = summary(&verified);
            out["manifest"] = serde_json::to_value(&manifest)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        Err(last_err.unwrap_or_else(|| anyhow!("attestation failed")))
    }
}

/// What one attestation established.
pub(crate) struct Attested {
    /// The verified document.
    pub verified: Verified,
    /// Its user data.
    pub binding: RuntimeBinding,
    /// DER of the certificate the connection presented: the one `binding`
    /// names.
    pub cert: Vec<u8>,
}

/// Fetches a document for a fresh nonce on `client`'s connection to
/// `base`, verifies it (root, nonce, then each of `pcrs`), and checks that
/// it binds the certificate that connection presented. Each failure names
/// what failed and the fix.
pub(crate) async fn attest_once(
    client: &reqwest::Client,
    base: &str,
    verifier: &Verifier,
    pcrs: &[(u32, Vec<u8>)],
) -> anyhow::Result<Attested> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let path = format!("{}?nonce={}", paths::ATTESTATION, hex::encode(nonce));
    let (body, cert) = get(client, base, &path).await?;
    let doc = base64::engine::general_purpose::STANDARD
        .decode(body.trim_ascii())
        .context("/enclave/attestation did not answer Base64: the server is not a Nacre runtime")?;
    let verified = verifier
        .clone()
        .nonce(nonce.to_vec())
        .verify(&doc)
        .map_err(explain)?;
    check_pcrs(&verified, pcrs)?;
    let user_data = verified.document.user_data.as_deref().unwrap_or_default();
    let binding = RuntimeBinding::from_bytes(user_data).map_err(explain)?;
    check_cert(&binding, &cert)?;
    Ok(Attested {
        verified,
        binding,
        cert,
    })
}

/// A verification failure with what it means and what to do.
fn explain(e: VerifyError) -> anyhow::Error {
    let hint = match &e {
        VerifyError::NonceMismatch => {
            "the document was made for another request (a replay), so it proves nothing about this server: whoever answered is not the enclave"
        }
        VerifyError::ChainUntrusted { .. } => {
            "the document is not signed by the AWS Nitro root; for a dev runtime pass its root with --attestation-root DIR/root.pem"
        }
        VerifyError::BindingMismatch { .. } | VerifyError::Malformed { .. } => {
            "the server did not answer with a Nacre runtime's document"
        }
        _ => "the server did not prove it is an enclave",
    };
    anyhow!("verification failed: {e}: {hint}")
}

/// Each pinned PCR holds the pinned value; a mismatch names the PCR and
/// the value the enclave has.
fn check_pcrs(verified: &Verified, pcrs: &[(u32, Vec<u8>)]) -> anyhow::Result<()> {
    for (index, expected) in pcrs {
        let actual = verified.document.pcrs.get(index);
        if actual != Some(expected) {
            bail!(
                "verification failed: PCR{index} mismatch: the enclave runs another image (its PCR{index} is {}, the pin says {}): if you built a new image, pin its measurements (nitro-cli describe-eif prints them); if not, this is not your enclave image",
                actual.map_or_else(|| "absent".to_string(), hex::encode),
                hex::encode(expected)
            );
        }
    }
    Ok(())
}

/// GET `path`; returns the body and the DER of the certificate the server
/// presented on the connection that answered.
async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let resp = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| connect_error(base, e))?;
    let cert = peer_certificate(&resp)
        .ok_or_else(|| anyhow!("{base}: no TLS certificate seen (is the URL https://?)"))?;
    if !resp.status().is_success() {
        return Err(fail(resp).await.context(format!("GET {path}")));
    }
    Ok((resp.bytes().await?.to_vec(), cert))
}

/// The certificate this connection presented is the one `binding` names.
fn check_cert(binding: &RuntimeBinding, cert_der: &[u8]) -> anyhow::Result<()> {
    if <[u8; 32]>::from(Sha256::digest(cert_der)) != binding.tls_cert_sha256 {
        bail!(
            "binding mismatch: the TLS certificate of this connection (SHA-256 {}) is not the one the enclave attested ({}): something between you and the enclave terminates TLS; connect through something that passes TCP on untouched (as the host proxy does), not through a TLS-terminating proxy or load balancer",
            hex::encode(Sha256::digest(cert_der)),
            hex::encode(binding.tls_cert_sha256)
        );
    }
    Ok(())
}

/// Each expected guest runs the expected code, and no other code answers
/// any path under its route: a guest deployed at a longer route inside it
/// (or the same route) would serve those paths instead, unseen by a check
/// of the name alone. Such a guest passes only when it is expected too.
fn check_guests(manifest: &Manifest, expected: &[(String, String)]) -> anyhow::Result<()> {
    for (name, sha) in expected {
        match manifest.guest(name) {
            None => bail!("guest mismatch: no guest {name} is deployed"),
            Some(g) if !g.sha256.eq_ignore_ascii_case(sha) => bail!(
                "guest mismatch: {name} runs code with SHA-256 {}, not {sha}",
                g.sha256
            ),
            Some(g) => {
                for other in manifest.nested_under(name) {
                    let vouched = expected
                        .iter()
                        .any(|(n, s)| *n == other.name && other.sha256.eq_ignore_ascii_case(s));
                    if !vouched {
                        bail!(
                            "guest mismatch: paths under {name}'s route {} are served by guest {} (route {}, SHA-256 {}); pin it too with --guest {}=SHA256 if you trust that code",
                            g.route,
                            other.name,
                            other.route,
                            other.sha256,
                            other.name
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Without a PCR0 pin any image the root signed passes, a modified runtime
/// included, and such a runtime could serve any manifest: say so, with the
/// value to pin.
fn warn_unpinned(verified: &Verified) {
    let pcr0 = verified
        .document
        .pcrs
        .get(&0)
        .map(hex::encode)
        .unwrap_or_default();
    eprintln!(
        "warning: no enclave image pinned: without --pcr 0=HEX (or --pcrs FILE naming PCR0 or PCR8) any image signed by the root passes, a modified runtime included. This enclave's image has PCR0 {pcr0}; to accept only it, add --pcr 0={pcr0}"
    );
}

fn parse_guest(s: &str) -> Result<(String, String), String> {
    let (name, sha) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write NAME=SHA256"))?;
    if sha.len() != 64 || hex::decode(sha).is_err() {
        return Err(format!("{s:?}: the SHA-256 must be 64 hex digits"));
    }
    Ok((name.to_string(), sha.to_ascii_lowercase()))
}
