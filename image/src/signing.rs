//! The operator's signature (PCR8). The certificate and key are checked
//! before anything is built, because the EIF crate signs with whatever it
//! is given: a key that is not the certificate's would give an image whose
//! signature nitro-cli rejects, and a key it cannot read panics it. The
//! written image's signature is then checked the way nitro-cli checks it
//! before the image is put in place.

use crate::{ImageError, read_file as read};
use aws_nitro_enclaves_image_format::utils::{PcrSignatureChecker, SignKeyData};
use openssl::asn1::Asn1Time;
use openssl::pkey::{Id, PKey};
use openssl::x509::X509;
use std::path::{Path, PathBuf};

/// An operator's signing certificate and key, for PCR8.
#[derive(Debug, Clone)]
pub struct Signing {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (unencrypted: the build runs unattended).
    pub key: PathBuf,
}

/// Checks that the key is an ECDSA key, that it is the certificate's, and
/// that the certificate is valid now; then hands both to the EIF crate.
pub(crate) fn load(signing: &Signing) -> Result<SignKeyData, ImageError> {
    let (cert_path, key_path) = (&signing.cert, &signing.key);
    let cert = X509::from_pem(&read("--sign-cert", cert_path)?).map_err(|e| {
        ImageError::Invalid(format!(
            "--sign-cert {} is not a PEM certificate: {e}",
            cert_path.display()
        ))
    })?;
    let key = PKey::private_key_from_pem(&read("--sign-key", key_path)?).map_err(|e| {
        ImageError::Invalid(format!(
            "--sign-key {} is not an unencrypted PEM private key: {e}",
            key_path.display()
        ))
    })?;
    if key.id() != Id::EC {
        return Err(ImageError::Invalid(format!(
            "--sign-key {} is not an ECDSA key: EIF signatures are COSE ECDSA \
             (make one with: openssl ecparam -name secp384r1 -genkey -noout -out key.pem)",
            key_path.display()
        )));
    }
    let matches = cert
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(ImageError::Invalid(format!(
            "--sign-key {} is not the key of --sign-cert {}: the image's signature would not verify",
            key_path.display(),
            cert_path.display()
        )));
    }
    valid_now(&cert, cert_path)?;
    let key_str = key_path
        .to_str()
        .ok_or_else(|| ImageError::Invalid("--sign-key's path is not UTF-8".into()))?;
    SignKeyData::new(key_str, cert_path).map_err(|e| {
        ImageError::Invalid(format!(
            "cannot sign with --sign-cert {} and --sign-key {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })
}

/// nitro-cli checks the certificate's validity when it checks the
/// signature: an image signed with an expired one would not start.
fn valid_now(cert: &X509, path: &Path) -> Result<(), ImageError> {
    let now =
        Asn1Time::days_from_now(0).map_err(|e| ImageError::Invalid(format!("the clock: {e}")))?;
    let before = cert.not_before() > now;
    let after = cert.not_after() < now;
    if before || after {
        return Err(ImageError::Invalid(format!(
            "--sign-cert {} is valid from {} to {}, not now: nitro-cli refuses an image signed with it",
            path.display(),
            cert.not_before(),
            cert.not_after()
        )));
    }
    Ok(())
}

/// Checks the signature of the EIF at `path` as nitro-cli does: the
/// COSE signature over PCR0 under the certificate's key, and the
/// certificate's validity now.
pub fn verify(path: &Path) -> Result<(), String> {
    let name = path.to_str().ok_or("its path is not UTF-8")?;
    PcrSignatureChecker::from_eif(name)?.verify()
}
