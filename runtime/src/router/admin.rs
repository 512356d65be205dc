//! The admin API: `GET/PUT/DELETE /enclave/guests[/NAME]` and the
//! operator's per-guest metrics, `GET /enclave/metrics`, behind a bearer
//! token whose SHA-256 the operator gave with `--admin-token-sha256`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use nacre_transport::AllowRule;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::fleet::Role;
use crate::guests::{DeployError, Deployed, GuestConfig, GuestName, Registry, Route, tcp_options};
use crate::http::{ResponseBody, error, json};
use crate::server::BodyError;

/// What the admin API needs: the token's hash, the upload limit and the
/// guest table.
pub struct Admin {
    /// `--admin-token-sha256`; None: the admin API answers 403.
    token_sha256: Option<[u8; 32]>,
    /// `--max-body`, for uploads.
    max_body: u64,
    registry: Arc<Registry>,
    /// Writes happen on the leader of a deployment only.
    role: watch::Receiver<Role>,
}

impl Admin {
    /// The admin API over `registry`.
    pub fn new(
        token_sha256: Option<[u8; 32]>,
        max_body: u64,
        registry: Arc<Registry>,
        role: watch::Receiver<Role>,
    ) -> Admin {
        Admin {
            token_sha256,
            max_body,
            registry,
            role,
        }
    }

    /// Why this enclave takes no writes now, if it does not.
    fn no_writes(&self) -> Option<Response<ResponseBody>> {
        match &*self.role.borrow() {
            Role::Alone | Role::Leader => None,
            Role::Worker { leader } => Some(error(
                StatusCode::CONFLICT,
                &format!(
                    "this enclave is a worker of a deployment led at {leader}: deploy and delete there; the change reaches every enclave"
                ),
            )),
            Role::Designating => Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this deployment is designating its leader; retry shortly",
            )),
        }
    }
}

/// Answers an admin request; `rest` is the path after `/enclave/guests`.
pub async fn handle<B>(admin: &Admin, req: Request<B>, rest: &str) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(refusal) = refusal(admin, &req) {
        return refusal;
    }
    let registry = &admin.registry;
    match (req.method().clone(), rest.strip_prefix('/')) {
        (Method::GET, None) | (Method::GET, Some("")) => {
            let list: Vec<_> = registry.snapshot().guests().map(|g| g.info()).collect();
            json(StatusCode::OK, &list)
        }
        (method, Some(name)) => {
            let name: GuestName = match name.parse() {
                Ok(n) => n,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            match method {
                Method::GET => match registry.snapshot().get(&name) {
                    Some(g) => json(StatusCode::OK, &g.info()),
                    None => error(StatusCode::NOT_FOUND, &format!("no guest named {name}")),
                },
                Method::PUT | Method::DELETE if let Some(refusal) = admin.no_writes() => refusal,
                Method::PUT => put(admin, req, name).await,
                Method::DELETE if registry.remove(&name).await => {
                    let mut r = Response::new(crate::http::full(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Method::DELETE => error(StatusCode::NOT_FOUND, &format!("no guest named {name}")),
                _ => not_allowed("GET, PUT, DELETE"),
            }
        }
        _ => not_allowed("GET"),
    }
}

/// `GET /enclave/metrics`: the per-guest figures, for the operator only
/// (the same token as the rest of the admin API).
pub fn metrics<B>(admin: &Admin, req: &Request<B>) -> Response<ResponseBody> {
    if let Some(refusal) = refusal(admin, req) {
        return refusal;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return super::endpoints::not_allowed("/enclave/metrics answers GET only", "GET, HEAD");
    }
    let text = crate::metrics::GuestFigures::new(admin.registry.clone()).render();
    crate::metrics::respond(req, text)
}

/// Why `req` may not use the admin API, if it may not: 403 when the API
/// is off, 401 without the right bearer token.
fn refusal<B>(admin: &Admin, req: &Request<B>) -> Option<Response<ResponseBody>> {
    let Some(expected) = admin.token_sha256 else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: start nacre-runtime with --admin-token-sha256 to enable it",
        ));
    };
    if authorized(req, &expected) {
        return None;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send Authorization: Bearer TOKEN",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"nacre\""),
    );
    Some(r)
}

fn not_allowed(allow: &'static str) -> Response<ResponseBody> {
    super::endpoints::not_allowed(&format!("this admin path answers {allow}"), allow)
}

/// Compares SHA-256 of the presented token with the configured one in
/// constant time, so timing reveals nothing about either.
fn authorized<B>(req: &Request<B>, expected: &[u8; 32]) -> bool {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    presented.ct_eq(expected).into()
}

async fn put<B>(admin: &Admin, req: Request<B>, name: GuestName) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = admin.max_body;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the component is over the {max} byte upload limit (--max-body)"),
        )
    };
    let config = match guest_config(name, req.uri().query().unwrap_or("")) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if req.body().size_hint().lower() > max {
        return too_large();
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) if matches!(e.downcast_ref(), Some(BodyError::Stalled(_))) => {
            return error(StatusCode::REQUEST_TIMEOUT, &e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("upload interrupted: {e}")),
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body is empty: send the .wasm component as the body",
        );
    }
    match admin.registry.deploy(config, bytes).await {
        Ok(Deployed::Created(info)) => {
            let mut r = json(StatusCode::CREATED, &info);
            if let Ok(loc) = HeaderValue::from_str(&format!("/enclave/guests/{}", info.name)) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        Ok(Deployed::Replaced(info)) => json(StatusCode::OK, &info),
        Err(
            e @ (DeployError::RouteTaken { .. }
            | DeployError::PortTaken { .. }
            | DeployError::PortReserved { .. }),
        ) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `route=/p`, repeated `allow=HOST:PORT`, and for a TCP guest `tcp=PORT`
/// and `tls=enclave|guest`, from the query string.
fn guest_config(name: GuestName, query: &str) -> Result<GuestConfig, String> {
    let mut route = None;
    let mut allow = Vec::new();
    let (mut tcp, mut tls) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "route" => route = Some(v.parse::<Route>()?),
            "allow" => allow.push(v.parse::<AllowRule>().map_err(|e| e.to_string())?),
            "tcp" => tcp = Some(v.into_owned()),
            "tls" => tls = Some(v.into_owned()),
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}: use route=/PREFIX, allow=HOST:PORT, tcp=PORT and tls=enclave|guest"
                ));
            }
        }
    }
    let tcp = tcp_options(tcp.as_deref(), tls.as_deref(), route.is_some())?;
    Ok(GuestConfig::new(name, route, allow)?.with_tcp(tcp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guests::TcpTls;

    #[test]
    fn query_parsing() {
        let n: GuestName = "a".parse().unwrap();
        let c = guest_config(n.clone(), "route=%2Fapi&allow=x.com:443&allow=*.y.com:443").unwrap();
        assert_eq!(c.route.as_str(), "/api");
        assert_eq!(c.allow.len(), 2);
        assert_eq!(guest_config(n.clone(), "").unwrap().route.as_str(), "/a");
        assert!(
            guest_config(n.clone(), "colour=red")
                .unwrap_err()
                .contains("colour")
        );
        assert!(
            guest_config(n.clone(), "allow=nope")
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            guest_config(n.clone(), "route=/enclave")
                .unwrap_err()
                .contains("reserved")
        );
        let enclave: GuestName = "enclave".parse().unwrap();
        assert!(
            guest_config(enclave.clone(), "")
                .unwrap_err()
                .contains("default route /enclave")
        );
        assert!(guest_config(enclave, "route=/e").is_ok());
        let t = guest_config(n.clone(), "tcp=6379&tls=guest").unwrap();
        assert_eq!(t.tcp.map(|t| (t.port, t.tls)), Some((6379, TcpTls::Guest)));
        assert!(
            guest_config(n.clone(), "tls=guest")
                .unwrap_err()
                .contains("tcp=PORT")
        );
        assert!(
            guest_config(n, "tcp=99999")
                .unwrap_err()
                .contains("1 to 65535")
        );
    }

    #[test]
    fn bearer_token_check() {
        let expected: [u8; 32] = Sha256::digest(b"s3cret").into();
        let req = |v: &str| {
            Request::builder()
                .header("authorization", v)
                .body(())
                .unwrap()
        };
        assert!(authorized(&req("Bearer s3cret"), &expected));
        assert!(!authorized(&req("Bearer s3cret2"), &expected));
        assert!(!authorized(&req("Basic s3cret"), &expected));
        assert!(!authorized(&Request::new(()), &expected));
    }
}
