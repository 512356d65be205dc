//! Certificates the runtime makes itself: the self-signed one it serves
//! until a better one arrives, TLS-ALPN-01 challenge certificates (RFC
//! 8737), and the request (CSR) for a CA's certificate.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

/// How long a self-signed certificate lives: well inside the 398 days
/// browsers accept, renewed at two thirds of it like a CA's.
pub const SELF_SIGNED_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// A certificate chain and its private key.
pub type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn setup(what: &str, name: &str) -> impl FnOnce(rcgen::Error) -> TlsError {
    let what = format!("cannot make {what} for {name:?}");
    move |e| TlsError::Setup(format!("{what}: {e}"))
}

/// Parameters naming `fqdn` in the subject (CN) and as the one SAN.
fn params_for(fqdn: &str, what: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(vec![fqdn.to_string()]).map_err(setup(what, fqdn))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, fqdn);
    params.distinguished_name = dn;
    Ok(params)
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A fresh self-signed P-256 certificate for `fqdn` (CN and SAN), valid
/// from an hour ago (clocks differ) for [`SELF_SIGNED_LIFETIME`]; the key
/// never leaves this process.
pub fn self_signed_pair(fqdn: &str) -> Result<Pair, TlsError> {
    let what = "a self-signed certificate";
    let mut params = params_for(fqdn, what)?;
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + SELF_SIGNED_LIFETIME).into();
    let key = KeyPair::generate().map_err(setup(what, fqdn))?;
    let cert = params.self_signed(&key).map_err(setup(what, fqdn))?;
    Ok((vec![cert.der().clone()], pkcs8(&key)))
}

/// The TLS-ALPN-01 answer for `name`: a self-signed certificate naming it,
/// with the critical acmeIdentifier extension holding `digest`, the
/// SHA-256 of the key authorization (RFC 8737 §3).
pub fn challenge_pair(name: &str, digest: &[u8; 32]) -> Result<Pair, TlsError> {
    let what = "a TLS-ALPN-01 challenge certificate";
    let mut params = params_for(name, what)?;
    params
        .custom_extensions
        .push(CustomExtension::new_acme_identifier(digest));
    let key = KeyPair::generate().map_err(setup(what, name))?;
    let cert = params.self_signed(&key).map_err(setup(what, name))?;
    Ok((vec![cert.der().clone()], pkcs8(&key)))
}

/// A new P-256 key and the certificate request (DER) naming `fqdn` with it.
pub fn request_for(fqdn: &str) -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    let what = "a certificate request";
    let params = params_for(fqdn, what)?;
    let key = KeyPair::generate().map_err(setup(what, fqdn))?;
    let csr = params.serialize_request(&key).map_err(setup(what, fqdn))?;
    Ok((csr.der().to_vec(), pkcs8(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn self_signed_names_the_fqdn_and_lives_at_most_398_days() {
        let (chain, _) = self_signed_pair("app.example.com").unwrap();
        let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["app.example.com"]);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [GeneralName::DNSName("app.example.com")]
        );
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86400;
        assert!(days <= 398, "{days} days");
        assert!(v.is_valid(), "not valid now: {v:?}");
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let (chain, _) = challenge_pair("app.example.com", &digest).unwrap();
        let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
        // id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31: an OCTET STRING of the digest.
        let oid = oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("no acmeIdentifier extension");
        assert!(ext.critical);
        assert_eq!(ext.value[..2], [0x04, 32]);
        assert_eq!(ext.value[2..], digest);
    }
}
