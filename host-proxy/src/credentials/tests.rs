use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};

use super::*;

/// A fake IMDS: requests counted by path; each GET needs the token
/// the PUT gave; the credentials expire `expires_in` from the time
/// asked (negative: already expired).
struct FakeImds {
    counts: Mutex<HashMap<String, usize>>,
    expires_in: Mutex<i64>,
    fail: Mutex<bool>,
}

impl FakeImds {
    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

const ROLE: &str = "/latest/meta-data/iam/security-credentials/nacre-role";

async fn fake_imds(expires_in: i64) -> (Endpoint, Arc<FakeImds>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(FakeImds {
        counts: Mutex::default(),
        expires_in: Mutex::new(expires_in),
        fail: Mutex::new(false),
    });
    let state = fake.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let path = req.uri().path().to_string();
                    *state
                        .counts
                        .lock()
                        .unwrap()
                        .entry(path.clone())
                        .or_default() += 1;
                    let token = req.headers().get("x-aws-ec2-metadata-token");
                    let (status, body) = match (req.method().as_str(), path.as_str()) {
                        _ if *state.fail.lock().unwrap() => {
                            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
                        }
                        ("PUT", "/latest/api/token")
                            if req
                                .headers()
                                .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
                        {
                            (StatusCode::OK, "the-token".to_string())
                        }
                        ("GET", _) if token.is_none_or(|t| t != "the-token") => {
                            (StatusCode::UNAUTHORIZED, String::new())
                        }
                        ("GET", "/latest/meta-data/iam/security-credentials/") => {
                            (StatusCode::OK, "nacre-role\n".to_string())
                        }
                        ("GET", ROLE) => {
                            let at = SystemTime::now();
                            let secs = *state.expires_in.lock().unwrap();
                            let at = if secs >= 0 {
                                at + Duration::from_secs(secs as u64)
                            } else {
                                at - Duration::from_secs(secs.unsigned_abs())
                            };
                            let n = state.count(ROLE);
                            let body = serde_json::json!({
                                "Code": "Success",
                                "LastUpdated": "2026-01-01T00:00:00Z",
                                "Type": "AWS-HMAC",
                                "AccessKeyId": format!("ASIAFAKE{n}"),
                                "SecretAccessKey": "fake-secret",
                                "Token": "fake-token",
                                "Expiration": humantime::format_rfc3339_seconds(at).to_string(),
                            });
                            (StatusCode::OK, body.to_string())
                        }
                        _ => (StatusCode::NOT_FOUND, String::new()),
                    };
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (format!("http://{addr}").parse().unwrap(), fake)
}

#[tokio::test]
async fn imds_credentials_are_kept_and_refreshed_before_expiry() {
    // An hour left: fetched once, then kept.
    let (endpoint, fake) = fake_imds(3600).await;
    let imds = Imds::new(endpoint);
    let c = imds.get().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAFAKE1");
    assert_eq!(c.session_token.as_deref(), Some("fake-token"));
    let left = c.expires_unix.unwrap() as i64 - unix_now() as i64;
    assert!((3590..=3610).contains(&left), "{left}");
    assert_eq!(imds.get().await.unwrap(), c);
    assert_eq!(fake.count(ROLE), 1);
    assert_eq!(fake.count("/latest/api/token"), 1);

    // Four minutes left (IMDS is slow to rotate): each request fetches
    // anew, so the enclave never gets ones about to expire unseen.
    let (endpoint, fake) = fake_imds(240).await;
    let imds = Imds::new(endpoint);
    assert_eq!(imds.get().await.unwrap().access_key_id, "ASIAFAKE1");
    assert_eq!(imds.get().await.unwrap().access_key_id, "ASIAFAKE2");
    assert_eq!(fake.count(ROLE), 2);
    // Rotated: an hour again, kept from then on.
    *fake.expires_in.lock().unwrap() = 3600;
    assert_eq!(imds.get().await.unwrap().access_key_id, "ASIAFAKE3");
    assert_eq!(imds.get().await.unwrap().access_key_id, "ASIAFAKE3");
    assert_eq!(fake.count(ROLE), 3);

    // IMDS failing while the kept ones have four minutes: those.
    let (endpoint, fake) = fake_imds(240).await;
    let imds = Imds::new(endpoint);
    let kept = imds.get().await.unwrap();
    *fake.fail.lock().unwrap() = true;
    assert_eq!(imds.get().await.unwrap(), kept);
    // Already expired and IMDS failing: the failure.
    let (endpoint, fake) = fake_imds(-10).await;
    let imds = Imds::new(endpoint);
    assert!(imds.get().await.is_ok());
    *fake.fail.lock().unwrap() = true;
    let e = imds.get().await.unwrap_err();
    assert!(e.contains("500"), "{e}");
}

#[tokio::test]
async fn an_unreachable_imds_is_named() {
    // A port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint: Endpoint = format!("http://{addr}").parse().unwrap();
    let credentials = Credentials::new(CredentialsFrom::Imds, &endpoint);
    let e = credentials.get().await.unwrap_err();
    assert!(e.contains(&format!("IMDS at http://{addr}")), "{e}");
    assert!(e.contains("cannot connect"), "{e}");
}

#[test]
fn endpoints_parse() {
    let e: Endpoint = "http://169.254.169.254".parse().unwrap();
    assert_eq!(
        (e.connect.as_str(), e.host.as_str()),
        ("169.254.169.254:80", "169.254.169.254")
    );
    let e: Endpoint = "http://[fd00:ec2::254]/".parse().unwrap();
    assert_eq!(e.connect, "[fd00:ec2::254]:80");
    let e: Endpoint = "http://127.0.0.1:8111".parse().unwrap();
    assert_eq!(e.to_string(), "http://127.0.0.1:8111");
    for bad in [
        "https://169.254.169.254",
        "169.254.169.254",
        "http://u@h",
        "http://h/latest",
    ] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
    }
}

#[test]
fn env_and_none() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = from_env(env(&[
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", ""),
    ]))
    .unwrap();
    assert_eq!(c.access_key_id, "AKIAEXAMPLE");
    assert_eq!((c.session_token, c.expires_unix), (None, None));
    let e = from_env(env(&[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")])).unwrap_err();
    assert!(e.contains("no AWS_SECRET_ACCESS_KEY"), "{e}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(Credentials::None.get()).unwrap_err();
    assert!(e.contains("--aws-credentials imds"), "{e}");
}

#[test]
fn credential_sources_parse() {
    assert_eq!("imds".parse(), Ok(CredentialsFrom::Imds));
    assert_eq!(
        "file:/run/creds.json".parse(),
        Ok(CredentialsFrom::File("/run/creds.json".into()))
    );
    for bad in ["file:", "instance", ""] {
        let e = bad.parse::<CredentialsFrom>().unwrap_err();
        assert!(e.contains("file:PATH"), "{e}");
    }
    let c = parse_file(r#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap();
    assert_eq!((c.access_key_id.as_str(), c.session_token), ("A", None));
    assert!(parse_file(r#"{"AccessKeyId":"A"}"#).is_err());
}

#[tokio::test]
async fn a_file_is_read_at_each_request() {
    // A process id repeats across runs on a machine whose temporary
    // directory outlives them (CI's did): start from an empty directory.
    let dir = std::env::temp_dir().join(format!("nacre-creds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.json");
    let creds = Credentials::new(
        CredentialsFrom::File(path.clone()),
        &"http://127.0.0.1:1".parse().unwrap(),
    );
    let e = creds.get().await.unwrap_err();
    assert!(e.contains("c.json"), "{e}");
    std::fs::write(&path, r#"{"AccessKeyId":"A1","SecretAccessKey":"S"}"#).unwrap();
    assert_eq!(creds.get().await.unwrap().access_key_id, "A1");
    std::fs::write(&path, r#"{"AccessKeyId":"A2","SecretAccessKey":"S"}"#).unwrap();
    assert_eq!(creds.get().await.unwrap().access_key_id, "A2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn imds_answers_are_checked() {
    let e = parse_credentials(r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"denied"}"#)
        .unwrap_err();
    assert!(e.contains("AssumeRoleUnauthorizedAccess: denied"), "{e}");
    let e = parse_credentials(r#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap_err();
    assert!(e.contains("no Token"), "{e}");
    let e = parse_credentials(
        r#"{"AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"soon"}"#,
    )
    .unwrap_err();
    assert!(e.contains("RFC 3339"), "{e}");
    let c = parse_credentials(
        r#"{"AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2030-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(c.expires_unix, Some(1_893_456_000));
    assert!(role_name("nacre-role@x.y_z+1=2,3"));
    assert!(!role_name("../x") && !role_name(""));
}
