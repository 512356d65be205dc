//! `tls-get`: an HTTPS request with TLS in the guest, over a raw tunnel.

use std::sync::Arc;

use nacre_sdk::tls;
use rustls::pki_types::{CertificateDer, ServerName};
use wstd::io;
use wstd::net::TcpStream;

/// `HOST:PORT PATH CA_DER_HEX`: the status line and the response's size.
pub async fn run(args: &str) -> io::Result<String> {
    let mut parts = args.split(' ');
    let (Some(target), Some(path), Some(ca_hex)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok("usage: tls-get HOST:PORT PATH CA_DER_HEX".into());
    };
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let config = client_config(ca_hex).map_err(io::Error::other)?;
    let name = ServerName::try_from(host.to_string()).map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect(target).await?;
    let mut stream = tls::Stream::handshake(tcp, conn).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_string();
    Ok(format!("{status}; {} bytes", response.len()))
}

/// Trusts only the CA given (DER, hex).
fn client_config(ca_hex: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let der = hex::decode(ca_hex).map_err(|e| format!("the CA is not hex: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der))
        .map_err(|e| format!("the CA: {e}"))?;
    // ring is the provider that builds for wasm32-wasip2 (see tls-echo).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
