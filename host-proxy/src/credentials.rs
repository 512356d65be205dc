//! `--aws-credentials`: the AWS credentials the proxy hands the enclave
//! (over a store link) for its own calls to KMS: none, the proxy's
//! environment, a JSON file, or the instance role through IMDSv2.
//!
//! IMDS credentials are kept and fetched again once less than
//! [`REFRESH_BEFORE`] of them remain, so the enclave always gets
//! credentials valid for a while. If fetching fails while the kept ones
//! still have [`STILL_USABLE`], those are handed out and the failure is
//! logged.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use nacre_control::store::AwsCredentials;

/// Fetch again once less than this is left of the kept credentials.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Kept credentials with at least this left are handed out when fetching
/// new ones fails.
pub const STILL_USABLE: Duration = Duration::from_secs(60);
/// How long one fetch from IMDS (token, role, credentials) may take.
const IMDS_TIMEOUT: Duration = Duration::from_secs(5);
/// The lifetime asked for an IMDSv2 session token (one per fetch).
const TOKEN_TTL_SECONDS: &str = "60";
/// The largest IMDS answer read.
const MOST_BODY: usize = 64 * 1024;

const NONE: &str = "no AWS credentials: start the host proxy with --aws-credentials imds (an instance role), env or file:PATH";

/// `--aws-credentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsFrom {
    /// None: the enclave's requests fail with a message naming the flag.
    None,
    /// The proxy's environment, read at each request.
    Env,
    /// The instance role, through IMDSv2 (kept, fetched again before it
    /// expires).
    Imds,
    /// `file:PATH`: a JSON file in IMDS's form (`AccessKeyId`,
    /// `SecretAccessKey`, optional `Token` and `Expiration`), read at each
    /// request, so whatever rotates it is followed.
    File(PathBuf),
}

impl FromStr for CredentialsFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(CredentialsFrom::None),
            "env" => Ok(CredentialsFrom::Env),
            "imds" => Ok(CredentialsFrom::Imds),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(CredentialsFrom::File(PathBuf::from(path))),
                _ => Err(format!(
                    "{s:?}: give imds (the instance role), env, file:PATH or none"
                )),
            },
        }
    }
}

/// Where the credentials come from.
pub enum Credentials {
    /// `--aws-credentials none`.
    None,
    /// `--aws-credentials env`: read at each request.
    Env,
    /// `--aws-credentials imds`.
    Imds(Imds),
    /// `--aws-credentials file:PATH`: read at each request.
    File(PathBuf),
}

impl Credentials {
    /// As the flags say.
    pub fn new(from: CredentialsFrom, endpoint: &Endpoint) -> Credentials {
        match from {
            CredentialsFrom::None => Credentials::None,
            CredentialsFrom::Env => Credentials::Env,
            CredentialsFrom::Imds => Credentials::Imds(Imds::new(endpoint.clone())),
            CredentialsFrom::File(path) => Credentials::File(path),
        }
    }

    /// Credentials for the enclave, or why there are none (for its log).
    pub async fn get(&self) -> Result<AwsCredentials, String> {
        match self {
            Credentials::None => Err(NONE.into()),
            Credentials::Env => from_env(|k| std::env::var(k).ok()),
            Credentials::Imds(imds) => imds.get().await,
            Credentials::File(path) => {
                let body = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("--aws-credentials file:{}: {e}", path.display()))?;
                parse_file(&body)
                    .map_err(|e| format!("--aws-credentials file:{}: {e}", path.display()))
            }
        }
    }
}

/// `--aws-credentials env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
/// and, for temporary ones, `AWS_SESSION_TOKEN`, as `var` reads them.
fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<AwsCredentials, String> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    let missing = |k: &str| {
        format!(
            "no {k} in the host proxy's environment (it was started with --aws-credentials env)"
        )
    };
    Ok(AwsCredentials {
        access_key_id: var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: var("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        session_token: var("AWS_SESSION_TOKEN"),
        expires_unix: None,
    })
}

/// `--imds-endpoint`: `http://HOST[:PORT]`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given, for messages.
    shown: String,
    /// `HOST:PORT`, to connect to.
    connect: String,
    /// The Host header.
    host: String,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("{s:?}: {why} (give http://HOST[:PORT], e.g. http://169.254.169.254)")
        };
        let uri: Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("IMDS is plain http"));
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad("no user info"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("no path"));
        }
        let connect = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.as_str()),
        };
        Ok(Endpoint {
            shown: format!("http://{authority}"),
            connect,
            host: authority.as_str().to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The instance role's credentials through IMDSv2, kept until close to
/// their expiry.
pub struct Imds {
    endpoint: Endpoint,
    /// One fetch at a time; the others wait for its result.
    kept: tokio::sync::Mutex<Option<AwsCredentials>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `c` has at least `left` before it expires (credentials without
/// an expiry are never kept, so never count).
fn lasts(c: &AwsCredentials, left: Duration) -> bool {
    c.expires_unix
        .is_some_and(|at| at >= unix_now().saturating_add(left.as_secs()))
}

impl Imds {
    /// Credentials from the IMDS at `endpoint`.
    pub fn new(endpoint: Endpoint) -> Imds {
        Imds {
            endpoint,
            kept: tokio::sync::Mutex::new(None),
        }
    }

    /// The kept credentials, or new ones if less than [`REFRESH_BEFORE`]
    /// of them remain.
    pub async fn get(&self) -> Result<AwsCredentials, String> {
        let mut kept = self.kept.lock().await;
        if let Some(c) = kept.as_ref()
            && lasts(c, REFRESH_BEFORE)
        {
            return Ok(c.clone());
        }
        let fetched = match tokio::time::timeout(IMDS_TIMEOUT, self.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(format!("no answer within {IMDS_TIMEOUT:?}")),
        };
        match fetched {
            Ok(fresh) => {
                *kept = Some(fresh.clone()).filter(|c| c.expires_unix.is_some());
                Ok(fresh)
            }
            Err(e) => {
                let why = format!(
                    "cannot get the instance role's credentials from IMDS at {}: {e} (does the instance have an instance profile, and can this process reach IMDS? see --imds-endpoint)",
                    self.endpoint
                );
                match kept.as_ref() {
                    Some(c) if lasts(c, STILL_USABLE) => {
                        tracing::warn!("{why}; handing out the kept ones until they expire");
                        Ok(c.clone())
                    }
                    _ => Err(why),
                }
            }
        }
    }

    /// A session token, the role's name, then its credentials.
    async fn fetch(&self) -> Result<AwsCredentials, String> {
        let token = self
            .call(Method::PUT, "/latest/api/token", None)
            .await?
            .trim()
            .to_string();
        let roles = self
            .call(
                Method::GET,
                "/latest/meta-data/iam/security-credentials/",
                Some(&token),
            )
            .await?;
        let role = roles.lines().map(str::trim).find(|l| !l.is_empty());
        let Some(role) = role.filter(|r| role_name(r)) else {
            return Err(
                "no instance role (security-credentials/ lists none, or not a role name)".into(),
            );
        };
        let path = format!("/latest/meta-data/iam/security-credentials/{role}");
        let body = self.call(Method::GET, &path, Some(&token)).await?;
        parse_credentials(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    /// One request to IMDS: the body of a 2xx answer, at most
    /// [`MOST_BODY`] bytes.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<String, String> {
        let what = format!("{method} {path}");
        let stream = tokio::net::TcpStream::connect(&self.endpoint.connect)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.endpoint.host);
        if method == Method::PUT {
            request = request.header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS);
        }
        if let Some(token) = token {
            let token = HeaderValue::from_str(token)
                .map_err(|_| "the session token IMDS gave is not a header value".to_string())?;
            request = request.header("x-aws-ec2-metadata-token", token);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{what}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MOST_BODY)
            .collect()
            .await
            .map_err(|e| format!("{what}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{what}: {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
    }
}

/// What IAM allows in a role's name.
fn role_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// IMDS's `{"Code": "Success", "AccessKeyId", "SecretAccessKey", "Token",
/// "Expiration": "2026-01-01T12:00:00Z"}`.
fn parse_credentials(body: &str) -> Result<AwsCredentials, String> {
    let c = parse_file(body)?;
    if c.session_token.is_none() {
        return Err("no Token".into());
    }
    Ok(c)
}

/// The same form with `Token` optional (long-term keys have none).
fn parse_file(body: &str) -> Result<AwsCredentials, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    if let Some(code) = field("Code")
        && code != "Success"
    {
        let message = field("Message").unwrap_or("");
        return Err(format!(
            "IMDS says {}: {}",
            nacre_control::bounded::cut(code, 64),
            nacre_control::bounded::cut(message, 256)
        ));
    }
    let need = |k: &str| {
        field(k)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("no {k}"))
    };
    let expires_unix = match field("Expiration") {
        None => None,
        Some(at) => {
            let at = humantime::parse_rfc3339(at)
                .map_err(|e| format!("an Expiration that is not RFC 3339 ({e})"))?;
            Some(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
        }
    };
    Ok(AwsCredentials {
        access_key_id: need("AccessKeyId")?,
        secret_access_key: need("SecretAccessKey")?,
        session_token: need("Token").ok(),
        expires_unix,
    })
}

#[cfg(test)]
mod tests;
