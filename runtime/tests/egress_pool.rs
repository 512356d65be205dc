//! The pooled egress client ([`Pooled`]) against an in-process stand-in
//! of the host proxy (counting its `CONNECT`s, able to cut every tunnel)
//! and a TLS server speaking HTTP/2 and HTTP/1.1, all on loopback: one
//! tunnel carries sequential and concurrent requests, a cut tunnel is
//! replaced by exactly one new one, a target that is down is backed off
//! without a tunnel per request, and an oversized answer is refused.
//!
//! `latency_pooled_vs_once` prints the mean latency of [`Pooled`] and of
//! [`Outbound`] (a tunnel per request); run it with `--nocapture`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nacre_runtime::egress::{Outbound, Pooled};
use nacre_transport::Address;
use nacre_transport::presented::PresentedKey;
use nacre_transport::tunnel::{self, Status, Target};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Answers over this are refused in these tests.
const MAX_ANSWER: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A stand-in for the host proxy's egress side: CONNECT to any loopback
/// port, counted.
struct Proxy {
    address: Address,
    connects: Arc<AtomicUsize>,
    tunnels: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("tcp://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let connects = Arc::new(AtomicUsize::new(0));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let (count, open) = (connects.clone(), tunnels.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                // As the host proxy and nacre-transport do: small frames
                // (HTTP/2 HEADERS, then DATA) must not wait on Nagle.
                let _ = conn.set_nodelay(true);
                let count = count.clone();
                let relay = tokio::spawn(relay(conn, count));
                open.lock().unwrap().push(relay.abort_handle());
            }
        });
        Proxy {
            address,
            connects,
            tunnels,
        }
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    /// Drops every tunnel open now, both ways, as a host could.
    fn cut(&self) {
        for tunnel in self.tunnels.lock().unwrap().drain(..) {
            tunnel.abort();
        }
    }
}

/// One CONNECT: 502 when the target is down, else the bytes both ways.
async fn relay(mut conn: TcpStream, count: Arc<AtomicUsize>) {
    let Ok(target) = tunnel::accept(&mut conn).await else {
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(mut up) => {
            let _ = up.set_nodelay(true);
            if tunnel::respond(&mut conn, Status::Established)
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            }
        }
        Err(_) => {
            let _ = tunnel::respond(&mut conn, Status::BadGateway).await;
        }
    }
}

/// A TLS server on loopback (self-signed, ALPN h2 and http/1.1): `/big`
/// answers twice [`MAX_ANSWER`], anything else echoes the body after "ok ".
async fn server() -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (chain, key) = nacre_runtime::tls::self_signed_pair("peer.test").unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(nacre_runtime::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let _ = conn.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(conn).await else {
                    return;
                };
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(tls), service_fn(answer))
                    .await;
            });
        }
    });
    Target {
        host: "127.0.0.1".into(),
        port,
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/big" {
        return Ok(Response::new(Full::new(Bytes::from(vec![
            b'x';
            2 * MAX_ANSWER
        ]))));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = [b"ok ".as_slice(), &body.unwrap_or_default()].concat();
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// What the sync client trusts: any certificate whose key signs the
/// handshake.
fn tls() -> rustls::ClientConfig {
    let provider = nacre_runtime::tls::provider();
    let verifier = Arc::new(PresentedKey::new(&provider));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

fn post(body: &str) -> Request<Bytes> {
    Request::post("/enclave/raft/append")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

/// Sends `body` and checks the echo.
async fn ok(pool: &Pooled, target: &Target, body: &str) {
    let answer = pool
        .request(target, post(body), MAX_ANSWER, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.into_body(), format!("ok {body}").as_bytes());
}

#[tokio::test]
async fn sequential_and_concurrent_requests_share_one_tunnel() {
    let (proxy, target) = (Proxy::start().await, server().await);
    let pool = Pooled::new(proxy.address.clone(), tls());
    for i in 0..200 {
        ok(&pool, &target, &format!("seq {i}")).await;
    }
    assert_eq!(proxy.connects(), 1);

    // A fresh pool: the 50 callers arrive before any connection exists,
    // and wait for the one attempt instead of making their own.
    let pool = Pooled::new(proxy.address.clone(), tls());
    let all = (0..50).map(|i| {
        let (pool, target) = (&pool, &target);
        async move { ok(pool, target, &format!("par {i}")).await }
    });
    futures::future::join_all(all).await;
    assert_eq!(proxy.connects(), 2);
    assert_eq!(pool.targets(), 1);
}

#[tokio::test]
async fn a_cut_tunnel_is_replaced_by_exactly_one_new_one() {
    let (proxy, target) = (Proxy::start().await, server().await);
    let pool = Pooled::new(proxy.address.clone(), tls());
    ok(&pool, &target, "before").await;
    assert_eq!(proxy.connects(), 1);
    proxy.cut();
    // The connection's end reaches the client as an EOF on its socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok(&pool, &target, "after").await;
    assert_eq!(proxy.connects(), 2);
    for i in 0..20 {
        ok(&pool, &target, &format!("then {i}")).await;
    }
    assert_eq!(proxy.connects(), 2);
}

#[tokio::test]
async fn a_target_that_is_down_fails_fast_without_a_tunnel_per_request() {
    let proxy = Proxy::start().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = Target {
        host: "127.0.0.1".into(),
        port: closed.local_addr().unwrap().port(),
    };
    drop(closed);
    let pool = Pooled::new(proxy.address.clone(), tls());
    // 50 callers at once: one attempt, which all of them wait for.
    let all = (0..50).map(|_| pool.request(&down, post("x"), MAX_ANSWER, TIMEOUT));
    for result in futures::future::join_all(all).await {
        let e = result.expect_err("the target is down");
        assert!(e.unanswered, "{e}");
    }
    assert_eq!(proxy.connects(), 1);
    // Within the backoff (200 ms after the first failure): at once, no
    // tunnel.
    let start = Instant::now();
    for _ in 0..100 {
        let e = pool
            .request(&down, post("x"), MAX_ANSWER, TIMEOUT)
            .await
            .expect_err("backed off");
        assert!(e.unanswered && e.why.contains("unreachable"), "{e}");
    }
    let fast = start.elapsed();
    assert_eq!(proxy.connects(), 1);
    // After it, one more attempt, then a longer backoff.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let e = pool.request(&down, post("x"), MAX_ANSWER, TIMEOUT).await;
    assert!(e.is_err());
    assert_eq!(proxy.connects(), 2);
    let e = pool
        .request(&down, post("x"), MAX_ANSWER, TIMEOUT)
        .await
        .expect_err("backed off");
    assert!(e.why.contains("unreachable"), "{e}");
    assert_eq!(proxy.connects(), 2);
    println!("100 requests in backoff failed in {fast:?}");
}

#[tokio::test]
async fn an_answer_over_the_bound_is_refused_and_the_connection_kept() {
    let (proxy, target) = (Proxy::start().await, server().await);
    let pool = Pooled::new(proxy.address.clone(), tls());
    let big = Request::get("/big").body(Bytes::new()).unwrap();
    let e = pool
        .request(&target, big, MAX_ANSWER, TIMEOUT)
        .await
        .expect_err("over the bound");
    assert!(!e.unanswered, "{e}");
    assert!(e.why.contains("over 1024 bytes"), "{e}");
    ok(&pool, &target, "next").await;
    assert_eq!(proxy.connects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_pooled_vs_once() {
    const N: u32 = 200;
    let (proxy, target) = (Proxy::start().await, server().await);
    let pool = Pooled::new(proxy.address.clone(), tls());
    let once = Outbound::new(proxy.address.clone(), tls());
    // Warm both (the pool's first connection, the code paths).
    ok(&pool, &target, "warm").await;
    let request = || {
        Request::post("/x")
            .body(Full::new(Bytes::from_static(b"hb")))
            .unwrap()
    };
    once.request(&target, request(), MAX_ANSWER, TIMEOUT)
        .await
        .unwrap();

    let start = Instant::now();
    for _ in 0..N {
        ok(&pool, &target, "hb").await;
    }
    let pooled = start.elapsed() / N;
    let before = proxy.connects();
    let start = Instant::now();
    for _ in 0..N {
        let answer = once
            .request(&target, request(), MAX_ANSWER, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer.into_body(), "ok hb");
    }
    let fresh = start.elapsed() / N;
    assert_eq!(proxy.connects() - before, N as usize);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "mean latency over {N} sequential requests ({profile} build, loopback): \
         pooled HTTP/2 {pooled:?}, tunnel per request (Outbound) {fresh:?}"
    );
}

#[tokio::test]
async fn the_pooled_peer_client_is_a_peer_link_over_one_tunnel() {
    use nacre_runtime::sync::{PeerLink, PooledPeerClient};
    let (proxy, target) = (Proxy::start().await, server().await);
    let link = PooledPeerClient::new(proxy.address.clone()).unwrap();
    for i in 0..10 {
        let answer = link.request(&target, post(&i.to_string()), TIMEOUT).await;
        let answer = answer.unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(answer.into_body(), format!("ok {i}").as_bytes());
    }
    assert_eq!(proxy.connects(), 1);
}
