//! KMS's error answers: the `__type` names and the JSON body they come in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The errors Nacre tells apart, by KMS's own names.
///
/// Anything else keeps its name in [`ErrorCode::Other`], so a stand-in can
/// also answer with names this enum does not list (for example
/// `MissingAuthenticationTokenException`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `AccessDeniedException`: the caller's policy (or the key policy,
    /// or the attestation condition) does not allow the call.
    AccessDenied,
    /// `InvalidCiphertextException`: the ciphertext or its encryption
    /// context is corrupted or does not match.
    InvalidCiphertext,
    /// `IncorrectKeyException`: the named key did not encrypt the ciphertext.
    IncorrectKey,
    /// `NotFoundException`: no such key.
    NotFound,
    /// `ValidationException`: the request does not satisfy KMS's constraints.
    Validation,
    /// `UnrecognizedClientException`: unknown access key or session token.
    UnrecognizedClient,
    /// `InvalidSignatureException`: the SigV4 signature does not match, or
    /// its time is too far from the server's.
    InvalidSignature,
    /// `ExpiredTokenException`: the session token has expired.
    ExpiredToken,
    /// `KMSInvalidStateException`: the key is disabled, pending deletion, ….
    KmsInvalidState,
    /// `KMSInternalException`: KMS failed; the call may be retried.
    KmsInternal,
    /// Any other error name, as KMS sent it (without a `prefix#`).
    Other(String),
}

impl ErrorCode {
    /// KMS's exact name for this error, as sent in `__type`.
    pub fn name(&self) -> &str {
        match self {
            ErrorCode::AccessDenied => "AccessDeniedException",
            ErrorCode::InvalidCiphertext => "InvalidCiphertextException",
            ErrorCode::IncorrectKey => "IncorrectKeyException",
            ErrorCode::NotFound => "NotFoundException",
            ErrorCode::Validation => "ValidationException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::ExpiredToken => "ExpiredTokenException",
            ErrorCode::KmsInvalidState => "KMSInvalidStateException",
            ErrorCode::KmsInternal => "KMSInternalException",
            ErrorCode::Other(name) => name,
        }
    }

    /// Reads a `__type` value: the plain name, or the
    /// `com.amazonaws.kms#Name` / `prefix#Name` form; a `:suffix` (some
    /// AWS JSON services append a URL) is dropped, as AWS's SDKs do.
    pub fn parse(kind: &str) -> ErrorCode {
        let kind = kind.split(':').next().unwrap_or(kind);
        let name = kind.rsplit('#').next().unwrap_or(kind).trim();
        match name {
            "AccessDeniedException" => ErrorCode::AccessDenied,
            "InvalidCiphertextException" => ErrorCode::InvalidCiphertext,
            "IncorrectKeyException" => ErrorCode::IncorrectKey,
            "NotFoundException" => ErrorCode::NotFound,
            "ValidationException" => ErrorCode::Validation,
            "UnrecognizedClientException" => ErrorCode::UnrecognizedClient,
            "InvalidSignatureException" => ErrorCode::InvalidSignature,
            "ExpiredTokenException" => ErrorCode::ExpiredToken,
            "KMSInvalidStateException" => ErrorCode::KmsInvalidState,
            "KMSInternalException" => ErrorCode::KmsInternal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// The HTTP status KMS answers this error with: 500 for
    /// `KMSInternalException`, 400 for everything else. (KMS, an AWS JSON
    /// 1.1 service, answers even `AccessDeniedException` and
    /// `UnrecognizedClientException` with 400, although AWS's generic
    /// "common errors" page lists 403 for them.)
    pub fn status(&self) -> http::StatusCode {
        match self {
            ErrorCode::KmsInternal => http::StatusCode::INTERNAL_SERVER_ERROR,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The JSON body of a KMS error: `{"__type": "...", "message": "..."}`.
///
/// KMS writes `message`; some AWS JSON services write `Message`, so both
/// are read. Written back as `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error's name, possibly with a `prefix#`: see [`ErrorCode::parse`].
    #[serde(rename = "__type")]
    pub kind: String,
    /// Human-readable text (empty when KMS sent none).
    #[serde(alias = "Message", default)]
    pub message: String,
}

impl ErrorBody {
    /// A body for `code` with `message`, as a stand-in answers.
    pub fn new(code: &ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            kind: code.name().to_owned(),
            message: message.into(),
        }
    }

    /// The parsed error name.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::parse(&self.kind)
    }
}
