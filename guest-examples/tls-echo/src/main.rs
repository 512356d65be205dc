//! `tls-echo`: a TCP guest that does its own TLS. Deploy it with
//! `tcp=8443;tls=guest`: the runtime hands it its clients' bytes as they
//! arrive, and only this code holds the TLS key.
//!
//! At start it makes a P-256 key and a self-signed certificate, inside the
//! enclave, and logs the certificate's SHA-256. A client trusts that key
//! through the guest's attestation document rather than a CA (nitriding's
//! "hash over the application's public key"): on a TLS connection, the line
//! `attest NONCE_HEX` is answered with a document (Base64) carrying that
//! nonce, whose guest binding names this component's code and whose data
//! is the SHA-256 of the certificate this connection was served with. The
//! client checks it with
//! `nacre verify DOC --nonce NONCE_HEX --guest CODE_SHA256 --data CERT_SHA256`,
//! CERT_SHA256 being the hash of the certificate its own TLS stack saw.
//! Every other line is sent back.

use std::sync::Arc;

use base64::Engine as _;
use nacre_sdk::tls;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use wstd::io;
use wstd::iter::AsyncIterator;
use wstd::net::{TcpListener, TcpStream};

#[wstd::main]
async fn main() -> io::Result<()> {
    let (config, cert_sha256) = server_config().map_err(io::Error::other)?;
    println!("tls-echo: certificate sha256 {}", hex::encode(cert_sha256));
    let addr = std::env::var("NACRE_TCP_ADDR").unwrap_or_else(|_| "127.0.0.1:8443".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("tls-echo listening on {addr}");
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let (stream, config) = (stream?, config.clone());
        wstd::runtime::spawn(async move {
            // One client's failure (a bad handshake, a cut) ends only its
            // own connection.
            if let Err(e) = serve(stream, config, cert_sha256).await {
                println!("tls-echo: connection ended: {e}");
            }
        })
        .detach();
    }
    Ok(())
}

/// A fresh key and its self-signed certificate, and the certificate's
/// SHA-256 (what the attestation document binds).
fn server_config() -> Result<(Arc<rustls::ServerConfig>, [u8; 32]), String> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("key generation: {e}"))?;
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let cert_sha256: [u8; 32] = Sha256::digest(&cert).into();
    // ring is the provider that builds for wasm32-wasip2; rustls deprecates
    // it only for lacking the post-quantum key exchange (aws-lc-rs has it,
    // and does not build for this target).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(config), cert_sha256))
}

async fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    cert_sha256: [u8; 32],
) -> io::Result<()> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = tls::Stream::handshake(stream, conn).await?;
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return tls.close().await;
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let reply = answer(&line, &cert_sha256);
            tls.write_all(&reply).await?;
        }
    }
}

/// The reply to one line (with its newline).
fn answer(line: &[u8], cert_sha256: &[u8; 32]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let Some(nonce_hex) = text.trim_end().strip_prefix("attest ") else {
        return line.to_vec();
    };
    let reply = match hex::decode(nonce_hex) {
        Err(e) => format!("error: the nonce {nonce_hex:?} is not hex: {e}"),
        Ok(nonce) => match nacre_sdk::attestation::request(Some(&nonce), Some(cert_sha256), None) {
            Ok(doc) => base64::engine::general_purpose::STANDARD.encode(doc),
            Err(e) => format!("error: {e}"),
        },
    };
    format!("{reply}\n").into_bytes()
}
