//! [`StandIn`]: one HTTP request in, one KMS answer out, with no sockets,
//! so tests drive it in process and [`crate::serve`] puts it behind HTTPS.
//!
//! A request goes through what KMS's JSON 1.1 front end does: the
//! `X-Amz-Target` names a known operation, the SigV4 signature verifies,
//! the body parses; then the operation runs ([`crate::ops`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use nacre_kms::wire::{ErrorBody, ErrorCode, JSON_CONTENT_TYPE, Operation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Config, Credential, Refusal, RefusalHook, TlsSource};
use crate::error::{KmsError, StandInError};
use crate::keys::{KeyArn, KeyStore};
use crate::ops::{Done, Kms};
use crate::policy::Policy;
use crate::recipient::RecipientVerifier;
use crate::tls::{self, Tls};

/// Largest request body accepted (KMS's requests are a few KiB; an
/// attestation document is at most 32 KiB).
pub const MAX_BODY: usize = 1 << 20;

/// The KMS stand-in: keys, policies, credentials and its TLS identity.
pub struct StandIn {
    kms: Kms,
    credentials: BTreeMap<String, Credential>,
    tls: Tls,
    on_refusal: Option<RefusalHook>,
}

impl StandIn {
    /// Reads the configuration, makes or loads each key's material and the
    /// TLS identity in `config.state_dir`.
    pub fn open(config: Config) -> Result<Arc<StandIn>, StandInError> {
        if config.state_dir.as_os_str().is_empty() {
            return Err(StandInError::Config(
                "no state directory: give --state DIR (keys and the TLS CA are kept there)".into(),
            ));
        }
        if config.credentials.is_empty() {
            return Err(StandInError::Config(
                "no credentials: give --credentials AKID:SECRET (or NACRE_KMS_DEV_CREDENTIALS)"
                    .into(),
            ));
        }
        if config.keys.is_empty() {
            return Err(StandInError::Config(
                "no keys: give --key ARN=POLICY.json".into(),
            ));
        }
        let mut credentials = BTreeMap::new();
        for c in config.credentials {
            if credentials.insert(c.access_key_id.clone(), c).is_some() {
                return Err(StandInError::Config(
                    "an access key id is given twice in the credentials".into(),
                ));
            }
        }
        let mut keys = Vec::new();
        for k in &config.keys {
            let arn = KeyArn::parse(&k.arn).map_err(StandInError::Config)?;
            let policy = Policy::parse(&k.policy_json)
                .map_err(|e| StandInError::Config(format!("{}: {e}", k.policy_source)))?;
            for w in policy.warnings() {
                tracing::warn!(key = arn.as_str(), policy = %k.policy_source, "{w}");
            }
            keys.push((arn, policy));
        }
        let keys = KeyStore::open(&config.state_dir.join("keys"), keys)?;
        let recipients = RecipientVerifier::new(config.attestation_root_pem.as_deref())?;
        let tls = match &config.tls {
            TlsSource::SelfIssued => tls::self_issued(&config.state_dir)?,
            TlsSource::Files { cert, key } => tls::from_pem_files(cert, key)?,
        };
        Ok(Arc::new(StandIn {
            kms: Kms { keys, recipients },
            credentials,
            tls,
            on_refusal: config.on_refusal,
        }))
    }

    /// Answers one request at the current time.
    pub fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        self.handle_at(request, SystemTime::now())
    }

    /// Answers one request as if the time were `now` (signature skew and
    /// document age are judged against it): for tests of stale documents.
    pub fn handle_at(&self, request: Request<Bytes>, now: SystemTime) -> Response<Bytes> {
        let target = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match self.dispatch(&request, &target, now) {
            Ok((body, op, done)) => {
                tracing::info!(
                    operation = op.name(),
                    key = %done.key,
                    recipient = done.recipient.as_deref().unwrap_or("-"),
                    "answered"
                );
                json_response(StatusCode::OK, body)
            }
            Err((e, operation)) => {
                self.refused(&e, operation);
                error_response(&e)
            }
        }
    }

    /// PEM of the CA the stand-in made for its HTTPS certificate (`None`
    /// with `--tls-cert`): what clients pass to the runtime's `--kms-ca`.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls.ca_pem.as_deref()
    }

    /// Where that CA's certificate is kept in the state directory.
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls.ca_path.as_deref()
    }

    /// The server TLS configuration [`crate::serve`] uses.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.config.clone()
    }

    /// The ARNs of the configured keys.
    pub fn key_arns(&self) -> Vec<String> {
        self.kms.keys.arns().map(str::to_string).collect()
    }

    /// Everything after the target is read; the error carries the
    /// operation name for the log.
    fn dispatch(
        &self,
        request: &Request<Bytes>,
        target: &str,
        now: SystemTime,
    ) -> Result<(Vec<u8>, Operation, Done), (KmsError, String)> {
        let shown = if target.is_empty() { "-" } else { target };
        // HTTP 400 like every KMS error but KMSInternalException: AWS JSON
        // 1.1 services answer an unknown target so (aws/aws-sdk-net #1536
        // quotes `UnknownOperationException` with `BadRequest`), although
        // AWS's generic common-errors page says 404.
        let op = Operation::from_target(target)
            .filter(|_| request.method() == Method::POST)
            .ok_or_else(|| {
                let e = KmsError::new(
                    ErrorCode::Other("UnknownOperationException".into()),
                    format!(
                        "Unknown operation {shown}: this stand-in serves POST with \
                         TrentService.Decrypt and TrentService.GenerateDataKey"
                    ),
                );
                (e, shown.to_string())
            })?;
        let name = || op.name().to_string();
        if request.body().len() > MAX_BODY {
            return Err((too_large(), name()));
        }
        let caller = nacre_kms::sigv4::verify(
            request,
            |id| self.credentials.get(id).map(|c| c.secret().to_string()),
            now,
        )
        .map_err(|e| (KmsError::new(e.code(), e.to_string()), name()))?;
        let run = || -> Result<(Vec<u8>, Done), KmsError> {
            match op {
                Operation::GenerateDataKey => {
                    let req = parse(request.body())?;
                    let (resp, done) = self.kms.generate_data_key(&req, &caller, now)?;
                    Ok((to_json(&resp)?, done))
                }
                Operation::Decrypt => {
                    let req = parse(request.body())?;
                    let (resp, done) = self.kms.decrypt(&req, &caller, now)?;
                    Ok((to_json(&resp)?, done))
                }
            }
        };
        run()
            .map(|(body, done)| (body, op, done))
            .map_err(|e| (e, name()))
    }

    fn refused(&self, e: &KmsError, operation: String) {
        let refusal = Refusal {
            operation,
            key: e.key.clone(),
            error: e.code.name().to_string(),
            reason: e.log_reason().to_string(),
        };
        tracing::warn!(
            operation = %refusal.operation,
            key = refusal.key.as_deref().unwrap_or("-"),
            error = %refusal.error,
            reason = %refusal.reason,
            "refused"
        );
        if let Some(hook) = &self.on_refusal {
            hook(&refusal);
        }
    }
}

/// Reads a request body: bad JSON (or a value of the wrong type) is a
/// `SerializationException`, a missing required member a
/// `ValidationException`, as AWS JSON services answer (floci-io/floci
/// #1926 records the former for KMS).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let serialization =
        |why: String| KmsError::new(ErrorCode::Other("SerializationException".into()), why);
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| serialization(format!("the request body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(serialization(
            "the request body is not a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or_default();
                KmsError::new(
                    ErrorCode::Validation,
                    format!(
                        "1 validation error detected: Value null at '{}' failed to satisfy \
                         constraint: Member must not be null",
                        lower_first(field)
                    ),
                )
            }
            None => serialization(format!(
                "the request body does not fit the operation: {text}"
            )),
        }
    })
}

/// `KeyId` → `keyId`, the member name KMS's messages use.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, KmsError> {
    serde_json::to_vec(value).map_err(|e| {
        KmsError::new(ErrorCode::KmsInternal, "KMS stand-in internal error")
            .because(format!("serializing the answer: {e}"))
    })
}

fn too_large() -> KmsError {
    KmsError::new(
        ErrorCode::Other("RequestEntityTooLargeException".into()),
        format!("the request body is over {MAX_BODY} bytes"),
    )
}

/// The answer to a request whose body was over [`MAX_BODY`] (the server
/// stops reading it there).
pub fn too_large_response() -> Response<Bytes> {
    error_response(&too_large())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response
}

fn error_response(e: &KmsError) -> Response<Bytes> {
    let body = serde_json::to_vec(&ErrorBody::new(&e.code, e.message.clone())).unwrap_or_default();
    // 413 as AWS's common errors list it; everything else KMS's own status.
    let status = if e.code.name() == "RequestEntityTooLargeException" {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        e.code.status()
    };
    json_response(status, body)
}
