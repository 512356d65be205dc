//! AWS Signature Version 4 for KMS: [`sign`] for Nacre's client,
//! [`verify()`] for the KMS stand-in.
//!
//! Both use `aws-sigv4`, the AWS SDK for Rust's own signer, so the
//! canonical request (header normalisation, URI encoding, payload hash)
//! is exactly the one KMS checks; this module only chooses its settings
//! and moves headers in and out of `http::Request`s.

use std::fmt;
use std::time::SystemTime;

use aws_sigv4::SigningOutput;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningInstructions, SigningParams, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq as _;
use thiserror::Error;
use zeroize::Zeroizing;

mod time;
mod verify;

pub use verify::{VerifyError, verify};

/// The SigV4 service name of KMS (the credential scope's fourth part).
pub const SERVICE: &str = "kms";
/// The header carrying the signing time.
pub const X_AMZ_DATE: &str = "x-amz-date";
/// The header carrying a session token.
pub const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
/// The header naming the operation.
pub const X_AMZ_TARGET: &str = "x-amz-target";

/// A secret string (an AWS secret access key): zeroed on drop, redacted
/// in `Debug`, compared in constant time.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `secret`.
    pub fn new(secret: String) -> SecretString {
        SecretString(Zeroizing::new(secret))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> SecretString {
        SecretString::new(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> SecretString {
        SecretString::new(secret.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([REDACTED])")
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &SecretString) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl Eq for SecretString {}

/// AWS credentials: an access key, and a session token when they are
/// temporary (an instance role's always are).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id (`AKIA…`, `ASIA…`): not secret.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
    /// When temporary credentials stop working; [`sign`] refuses to sign
    /// with credentials already expired at the signing time.
    pub expires: Option<SystemTime>,
}

impl Credentials {
    /// Credentials from their parts (the order of AWS SDKs' constructors).
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<SecretString>,
        session_token: Option<String>,
        expires: Option<SystemTime>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
            expires,
        }
    }

    /// The same credentials as `aws-sigv4` takes them (it zeroes its copy).
    fn identity(&self) -> Identity {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose().to_owned(),
            self.session_token.clone(),
            self.expires,
            "nacre-kms",
        )
        .into()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session token authenticates too, so it is redacted as well.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why a request could not be signed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `host` header: SigV4 signs it, and the request is origin-form.
    #[error("the request has no host header, which SigV4 must sign")]
    MissingHost,
    /// A header value that is not visible ASCII cannot be signed.
    #[error("header {name} has a value that is not visible ASCII, so it cannot be signed")]
    HeaderValue {
        /// The header.
        name: String,
    },
    /// The credentials' expiry is at or before the signing time.
    #[error("the AWS credentials for {access_key_id} expired at {expired}; refresh them")]
    ExpiredCredentials {
        /// Whose.
        access_key_id: String,
        /// When (`YYYYMMDDTHHMMSSZ`).
        expired: String,
    },
    /// `aws-sigv4` refused (bad region, unparsable URI, …).
    #[error("SigV4 signing failed: {reason}")]
    Signing {
        /// Its explanation.
        reason: String,
    },
}

/// Signs a KMS request in place: adds `x-amz-date`, `authorization` and,
/// for temporary credentials, `x-amz-security-token` (signed, as KMS
/// expects). Every header already present is signed; the request must
/// carry `host`. Signing again replaces an earlier signature.
pub fn sign(
    request: &mut http::Request<Bytes>,
    credentials: &Credentials,
    region: &str,
    at: SystemTime,
) -> Result<(), SigV4Error> {
    sign_for_service(request, credentials, region, SERVICE, at)
}

/// [`sign`] for any service: the AWS test suite's vectors use "service".
pub(crate) fn sign_for_service(
    request: &mut http::Request<Bytes>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    at: SystemTime,
) -> Result<(), SigV4Error> {
    if let Some(expires) = credentials.expires.filter(|&expires| expires <= at) {
        return Err(SigV4Error::ExpiredCredentials {
            access_key_id: credentials.access_key_id.clone(),
            expired: time::format_amz_date(expires),
        });
    }
    for name in [AUTHORIZATION.as_str(), X_AMZ_DATE, X_AMZ_SECURITY_TOKEN] {
        request.headers_mut().remove(name);
    }
    if !request.headers().contains_key(HOST) {
        return Err(SigV4Error::MissingHost);
    }
    let headers = header_pairs(request.headers())?;
    let signable = Signable {
        method: request.method().as_str(),
        path: path_and_query(request.uri()),
        headers: &headers,
        body: request.body(),
    };
    let identity = credentials.identity();
    let output = signable
        .sign(&identity, region, service, at, SigningSettings::default())
        .map_err(|reason| SigV4Error::Signing { reason })?;
    let (instructions, _signature) = output.into_parts();
    let (new_headers, _query) = instructions.into_parts();
    let mut additions = Vec::with_capacity(new_headers.len());
    for header in new_headers {
        let invalid = || SigV4Error::HeaderValue {
            name: header.name().to_owned(),
        };
        let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(header.value()).map_err(|_| invalid())?;
        value.set_sensitive(header.sensitive());
        additions.push((name, value));
    }
    drop(headers);
    request.headers_mut().extend(additions);
    Ok(())
}

/// Every header as `(name, value)` text, duplicates kept.
fn header_pairs(headers: &HeaderMap) -> Result<Vec<(&str, &str)>, SigV4Error> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().map_err(|_| SigV4Error::HeaderValue {
                name: name.as_str().to_owned(),
            })?;
            Ok((name.as_str(), value))
        })
        .collect()
}

/// The origin-form target ("/" when the URI has no path).
fn path_and_query(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// What goes into a canonical request.
struct Signable<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

impl Signable<'_> {
    /// Header-signing with `aws-sigv4`; errors as text.
    fn sign(
        &self,
        identity: &Identity,
        region: &str,
        service: &str,
        at: SystemTime,
        settings: SigningSettings,
    ) -> Result<SigningOutput<SigningInstructions>, String> {
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(identity)
            .region(region)
            .name(service)
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let request = SignableRequest::new(
            self.method,
            self.path,
            self.headers.iter().copied(),
            SignableBody::Bytes(self.body),
        )
        .map_err(|e| e.to_string())?;
        aws_sigv4::http_request::sign(request, &params).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
