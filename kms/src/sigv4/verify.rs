//! Checking a SigV4 signature, for the KMS stand-in.
//!
//! The signature is recomputed with `aws-sigv4` over a copy of the
//! request that holds only the headers the client listed as signed, at
//! the client's own `x-amz-date` and region, then compared in constant
//! time. Beyond what AWS requires, `x-amz-target` must be signed too: it
//! selects the operation, so an unsigned one could be swapped.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::SigningSettings;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use subtle::ConstantTimeEq as _;
use thiserror::Error;
use zeroize::Zeroizing;

use super::{Credentials, SERVICE, Signable, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN, X_AMZ_TARGET};
use super::{path_and_query, time};
use crate::wire::{ErrorBody, ErrorCode};

/// How far a request's time may be from the server's, as in AWS.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// The only algorithm accepted.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Headers that must be among the signed ones.
const REQUIRED_SIGNED: [&str; 3] = ["host", X_AMZ_DATE, X_AMZ_TARGET];

/// Why a request's signature was refused. [`VerifyError::code`] gives the
/// KMS error to answer with; `Display` gives its message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `authorization` header.
    #[error("Missing Authentication Token")]
    MissingAuthorization,
    /// The `authorization` or `x-amz-date` header cannot be parsed.
    #[error("Incomplete signature: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A header that must be signed is not in `SignedHeaders`.
    #[error("Incomplete signature: '{name}' must be a SignedHeader in the Authorization")]
    UnsignedHeader {
        /// The header.
        name: &'static str,
    },
    /// A header listed in `SignedHeaders` is not in the request.
    #[error("Incomplete signature: signed header '{name}' is not in the request")]
    MissingSignedHeader {
        /// The header.
        name: String,
    },
    /// The credential scope is not `DATE/REGION/kms/aws4_request` for
    /// the request's date.
    #[error("Credential scope is wrong: {reason}")]
    WrongScope {
        /// What is wrong.
        reason: String,
    },
    /// No secret is known for the access key.
    #[error(
        "The security token included in the request is invalid (unknown access key {access_key_id})"
    )]
    UnknownKey {
        /// The access key id the client used.
        access_key_id: String,
    },
    /// Signed more than five minutes before `now`.
    #[error("Signature expired: {signed} is now earlier than {limit} ({now} - 5 min.)")]
    Expired {
        /// The request's `x-amz-date`.
        signed: String,
        /// The earliest time accepted.
        limit: String,
        /// The server's time.
        now: String,
    },
    /// Signed more than five minutes after `now`.
    #[error("Signature not yet current: {signed} is still later than {limit} ({now} + 5 min.)")]
    NotYetCurrent {
        /// The request's `x-amz-date`.
        signed: String,
        /// The latest time accepted.
        limit: String,
        /// The server's time.
        now: String,
    },
    /// `aws-sigv4` could not build the canonical request.
    #[error("The request cannot be canonicalised for SigV4: {reason}")]
    Signing {
        /// Its explanation.
        reason: String,
    },
    /// The signature does not match.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

impl VerifyError {
    /// The KMS error a stand-in answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            VerifyError::MissingAuthorization => {
                ErrorCode::Other("MissingAuthenticationTokenException".to_owned())
            }
            VerifyError::Malformed { .. }
            | VerifyError::UnsignedHeader { .. }
            | VerifyError::MissingSignedHeader { .. } => {
                ErrorCode::Other("IncompleteSignatureException".to_owned())
            }
            VerifyError::UnknownKey { .. } => ErrorCode::UnrecognizedClient,
            VerifyError::WrongScope { .. }
            | VerifyError::Expired { .. }
            | VerifyError::NotYetCurrent { .. }
            | VerifyError::Signing { .. }
            | VerifyError::Mismatch => ErrorCode::InvalidSignature,
        }
    }

    /// The JSON error body a stand-in answers with.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(&self.code(), self.to_string())
    }
}

/// Checks a KMS request's SigV4 signature at server time `now`, with
/// `secret_for` giving the secret access key of an access key id.
/// Returns the access key id that signed.
pub fn verify(
    request: &http::Request<Bytes>,
    secret_for: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> Result<String, VerifyError> {
    verify_for_service(request, secret_for, now, SERVICE, &REQUIRED_SIGNED)
}

/// [`verify`] for any service and required headers (the AWS test
/// suite's vectors use "service" and sign no `x-amz-target`).
pub(crate) fn verify_for_service(
    request: &http::Request<Bytes>,
    secret_for: impl Fn(&str) -> Option<String>,
    now: SystemTime,
    service: &str,
    required: &[&'static str],
) -> Result<String, VerifyError> {
    let auth = Authorization::parse(request)?;
    if auth.service != service || auth.terminator != "aws4_request" {
        return Err(VerifyError::WrongScope {
            reason: format!(
                "expected DATE/REGION/{service}/aws4_request, found {}/{}/{}/{}",
                auth.date, auth.region, auth.service, auth.terminator
            ),
        });
    }
    let secret = secret_for(auth.access_key_id)
        .map(Zeroizing::new)
        .ok_or_else(|| VerifyError::UnknownKey {
            access_key_id: auth.access_key_id.to_owned(),
        })?;
    let amz_date =
        header_text(request, X_AMZ_DATE)?.ok_or_else(|| malformed("no x-amz-date header"))?;
    let signed_at = time::parse_amz_date(amz_date)
        .ok_or_else(|| malformed(format!("x-amz-date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
    check_skew(signed_at, now)?;
    if amz_date.get(..8) != Some(auth.date) {
        return Err(VerifyError::WrongScope {
            reason: format!(
                "credential date {} is not the date of x-amz-date {amz_date}",
                auth.date
            ),
        });
    }
    // `host` always: without it `aws-sigv4` would take the host from the
    // URI, and an origin-form URI has none.
    let mut must_sign = required.iter().chain(&["host"]);
    if let Some(&name) = must_sign.find(|&&name| !auth.signed_headers.contains(&name)) {
        return Err(VerifyError::UnsignedHeader { name });
    }
    let (headers, session_token) = signed_headers(request, &auth.signed_headers)?;
    let credentials = Credentials::new(auth.access_key_id, secret.as_str(), session_token, None);
    let signable = Signable {
        method: request.method().as_str(),
        path: path_and_query(request.uri()),
        headers: &headers,
        body: request.body(),
    };
    // Sign exactly what the client listed, even headers the SDK's default
    // settings would leave out (some clients sign user-agent).
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let output = signable
        .sign(
            &credentials.identity(),
            auth.region,
            service,
            signed_at,
            settings,
        )
        .map_err(|reason| VerifyError::Signing { reason })?;
    if bool::from(
        output
            .signature()
            .as_bytes()
            .ct_eq(auth.signature.as_bytes()),
    ) {
        Ok(auth.access_key_id.to_owned())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn malformed(reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        reason: reason.into(),
    }
}

fn header_text<'r>(
    request: &'r http::Request<Bytes>,
    name: &str,
) -> Result<Option<&'r str>, VerifyError> {
    match request.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| malformed(format!("header {name} is not visible ASCII"))),
    }
}

fn check_skew(signed_at: SystemTime, now: SystemTime) -> Result<(), VerifyError> {
    let show = time::format_amz_date;
    match now.duration_since(signed_at) {
        Ok(age) if age > MAX_SKEW => Err(VerifyError::Expired {
            signed: show(signed_at),
            limit: show(now.checked_sub(MAX_SKEW).unwrap_or(now)),
            now: show(now),
        }),
        Err(ahead) if ahead.duration() > MAX_SKEW => Err(VerifyError::NotYetCurrent {
            signed: show(signed_at),
            limit: show(now.checked_add(MAX_SKEW).unwrap_or(now)),
            now: show(now),
        }),
        _ => Ok(()),
    }
}

/// Signed `(name, value)` pairs, and the session token if it was signed.
type SignedHeaders<'r> = (Vec<(&'r str, &'r str)>, Option<String>);

/// The signed headers' values as `aws-sigv4` takes them: without
/// `x-amz-date` (it writes that from the time) and with the session token
/// split out (it writes that from the credentials).
fn signed_headers<'r>(
    request: &'r http::Request<Bytes>,
    names: &[&'r str],
) -> Result<SignedHeaders<'r>, VerifyError> {
    let mut pairs = Vec::new();
    let mut session_token = None;
    for &name in names {
        if name == X_AMZ_DATE {
            continue;
        }
        let mut values = request.headers().get_all(name).iter().peekable();
        if values.peek().is_none() {
            // HTTP/2 carries the host as :authority, which `http` puts in the URI.
            match request.uri().authority() {
                Some(authority) if name == HOST.as_str() => pairs.push((name, authority.as_str())),
                _ => {
                    return Err(VerifyError::MissingSignedHeader {
                        name: name.to_owned(),
                    });
                }
            }
        }
        for value in values {
            let text = value
                .to_str()
                .map_err(|_| malformed(format!("header {name} is not visible ASCII")))?;
            if name == X_AMZ_SECURITY_TOKEN {
                session_token = Some(text.to_owned());
            } else {
                pairs.push((name, text));
            }
        }
    }
    Ok((pairs, session_token))
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/
/// REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`.
struct Authorization<'r> {
    access_key_id: &'r str,
    date: &'r str,
    region: &'r str,
    service: &'r str,
    terminator: &'r str,
    signed_headers: Vec<&'r str>,
    signature: &'r str,
}

impl<'r> Authorization<'r> {
    fn parse(request: &'r http::Request<Bytes>) -> Result<Authorization<'r>, VerifyError> {
        let header = header_text(request, AUTHORIZATION.as_str())?
            .ok_or(VerifyError::MissingAuthorization)?;
        let fields = header
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| malformed(format!("the Authorization algorithm is not {ALGORITHM}")))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in fields.split(',').map(str::trim) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| malformed(format!("Authorization field {field:?} has no '='")))?;
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                other => return Err(malformed(format!("unknown Authorization field {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(malformed(format!(
                    "Authorization field {key} appears twice"
                )));
            }
        }
        let missing = |key: &str| malformed(format!("Authorization has no {key}"));
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = scope[..] else {
            return Err(malformed(
                "Credential is not AKID/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        if access_key_id.is_empty() || region.is_empty() {
            return Err(malformed("Credential has an empty access key id or region"));
        }
        let signed_headers: Vec<&str> = signed.split(';').collect();
        let well_formed = |name: &&str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
        };
        if !signed_headers.iter().all(well_formed) {
            return Err(malformed(
                "SignedHeaders must be lowercase header names separated by ';'",
            ));
        }
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if signature.len() != 64 || !signature.bytes().all(hex) {
            return Err(malformed("Signature is not 64 lowercase hex digits"));
        }
        Ok(Authorization {
            access_key_id,
            date,
            region,
            service,
            terminator,
            signed_headers,
            signature,
        })
    }
}
