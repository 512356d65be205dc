//! A TLS client check for peers judged by something other than their
//! certificate (an attestation document that binds it, or a document
//! inside the connection): any certificate is taken, but only from a server
//! that proves it holds the certificate's key by signing the handshake. A
//! relay replaying someone else's certificate fails here.
//!
//! Once a document has named the certificate, [`PresentedKey::only`] takes
//! that certificate and no other, for the connections that follow.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

/// Takes whatever certificate the server presents (or, made with
/// [`PresentedKey::only`], one given certificate), but only if the server
/// proves it holds that certificate's key by signing the handshake.
#[derive(Debug)]
pub struct PresentedKey {
    algorithms: WebPkiSupportedAlgorithms,
    only: Option<Vec<u8>>,
}

/// The server presented a certificate other than the one
/// [`PresentedKey::only`] takes. Callers find it by this name in an error
/// chain, to explain it.
#[derive(Debug, thiserror::Error)]
#[error("not the pinned certificate")]
pub struct NotThePinnedCertificate;

impl PresentedKey {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> PresentedKey {
        PresentedKey {
            algorithms: provider.signature_verification_algorithms,
            only: None,
        }
    }

    /// Like [`PresentedKey::new`], taking only the certificate `der`: one
    /// an attestation document bound, on a connection checked before.
    pub fn only(provider: &CryptoProvider, der: Vec<u8>) -> PresentedKey {
        PresentedKey {
            only: Some(der),
            ..PresentedKey::new(provider)
        }
    }
}

impl ServerCertVerifier for PresentedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.only {
            Some(der) if der.as_slice() != end_entity.as_ref() => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(NotThePinnedCertificate)),
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
