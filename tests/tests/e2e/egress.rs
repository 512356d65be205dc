//! The parent instance routes ciphertext only: the real host proxy in
//! front of the runtime (inbound) and behind it (guest egress), linked by
//! unix sockets as the enclave is by vsock.

use std::time::{Duration, Instant};

use nacre_tests::net::{
    self, HostProxy, Origin, Relay, closed_port, contains, unix_in as unix, urlencode,
};
use nacre_tests::{Runtime, TOKEN, guest, temp_dir};

/// Host proxy + runtime on unix sockets, and an origin for `fetch`.
struct Stack {
    proxy: HostProxy,
    rt: Runtime,
    origin: Origin,
    _relay: Relay,
}

impl Stack {
    /// The proxy allows `localhost:ORIGIN` plus `proxy_allow`.
    async fn start(wrapper: &[&str], h2: bool, proxy_allow: &[String]) -> Stack {
        let origin = Origin::start(h2).await;
        let mut allow = vec![format!("localhost:{}", origin.port)];
        allow.extend_from_slice(proxy_allow);
        let net::Stack { proxy, rt, relay } =
            net::Stack::start(wrapper, &allow, &origin.ca_file(), None).await;
        Stack {
            proxy,
            rt,
            origin,
            _relay: relay,
        }
    }

    /// `GET /fetch/?url=URL` through the whole stack.
    async fn fetch(&self, url: &str) -> (u16, String) {
        self.rt
            .get(&format!("/fetch/?url={}", urlencode(url)))
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_never_crosses_the_host() {
    for h2 in [false, true] {
        let origin = Origin::start(h2).await;
        let dir = temp_dir("recorded");
        // Every link the parent instance could observe gets a recorder:
        // client↔proxy, proxy↔runtime, runtime↔egress proxy.
        let proxy_to_rt = Relay::start(
            unix(&dir, "relay-in.sock").parse().unwrap(),
            unix(&dir, "runtime.sock").parse().unwrap(),
        )
        .await;
        let proxy = HostProxy::start(&[
            "--inbound".into(),
            format!("tcp://127.0.0.1:0={}", proxy_to_rt.listen),
            "--egress-listen".into(),
            unix(&dir, "egress.sock"),
            "--egress-allow".into(),
            format!("localhost:{}", origin.port),
            "--egress-allow-private".into(),
        ]);
        let client_to_proxy = Relay::start(
            "tcp://127.0.0.1:0".parse().unwrap(),
            proxy.inbound[0].clone(),
        )
        .await;
        let rt_to_egress = Relay::start(
            unix(&dir, "relay-egress.sock").parse().unwrap(),
            proxy.egress.clone().unwrap(),
        )
        .await;
        let mut rt = Runtime::start_behind(
            &[],
            &unix(&dir, "runtime.sock"),
            &[
                "--egress",
                &rt_to_egress.listen.to_string(),
                "--extra-ca",
                &origin.ca_file(),
            ],
        );
        rt.via(client_to_proxy.tcp());
        let allow = format!("allow=localhost:{}", origin.port);
        rt.deploy_ok("fetch", &guest("fetch"), &allow).await;

        let secret_path = "/account/SECRET-PATH-91c2";
        let url = format!("https://localhost:{}{secret_path}", origin.port);
        let (status, body) = rt.get(&format!("/fetch/?url={}", urlencode(&url))).await;
        assert_eq!(status, 200, "{body}\n{}", rt.log());
        assert!(
            body.contains(Origin::BODY) && body.contains(secret_path),
            "{body}"
        );
        let want = if h2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(origin.seen(), vec![format!("{want} {secret_path}")]);

        let links = [
            ("client↔proxy", client_to_proxy.recorded()),
            ("proxy↔runtime", proxy_to_rt.recorded()),
            ("runtime↔egress", rt_to_egress.recorded()),
        ];
        for (link, bytes) in &links {
            assert!(bytes.len() > 1000, "{link}: only {} bytes", bytes.len());
            for secret in [
                secret_path.as_bytes(),
                Origin::BODY.as_bytes(),
                TOKEN.as_bytes(),
                b"SECRET",
                b"/fetch/",
                b"HTTP/1.1 200 OK",
                b"content-type",
            ] {
                assert!(
                    !contains(bytes, secret),
                    "{link} carried plaintext {:?}",
                    String::from_utf8_lossy(secret)
                );
            }
        }
        // The only cleartext on the egress link is the CONNECT exchange.
        let egress = &links[2].1;
        let connect = format!(
            "CONNECT localhost:{0} HTTP/1.1\r\nHost: localhost:{0}\r\n\r\n",
            origin.port
        );
        assert!(egress.starts_with(connect.as_bytes()));
        assert!(contains(
            egress,
            b"HTTP/1.1 200 Connection Established\r\n\r\n"
        ));
        // After that, TLS records (handshake content type 0x16).
        assert!(contains(egress, &[0x16, 0x03]));
        assert_eq!(
            links[0].1.first(),
            Some(&0x16),
            "client link starts with TLS"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_in_an_empty_network_namespace_serves_and_fetches() {
    assert!(
        nacre_tests::is_root(),
        "this test runs the runtime in `unshare -n`, which needs root: run the suite as root (CI does)"
    );
    let s = Stack::start(&["unshare", "-n", "--"], true, &[]).await;
    // The runtime's namespace has a loopback device, down, and nothing else.
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", s.rt.pid())).unwrap();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{dev}");
    let tcp = std::fs::read_to_string(format!("/proc/{}/net/tcp", s.rt.pid())).unwrap();
    assert_eq!(
        tcp.lines().count(),
        1,
        "no TCP sockets in its namespace: {tcp}"
    );

    s.rt.deploy_ok(
        "fetch",
        &guest("fetch"),
        &format!("allow=localhost:{}", s.origin.port),
    )
    .await;
    let (status, body) = s
        .fetch(&format!("https://localhost:{}/from-netns", s.origin.port))
        .await;
    assert_eq!(status, 200, "{body}\n{}", s.rt.log());
    assert!(body.contains("/from-netns"));
    assert_eq!(s.rt.get("/fetch/").await.0, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_is_denied_in_the_enclave_refused_by_the_proxy_and_fails_fast() {
    let (proxy_only_port, _held1) = closed_port();
    let (unreachable, _held2) = closed_port();
    let s = Stack::start(&[], false, &[format!("localhost:{unreachable}")]).await;
    let (other, _held3) = closed_port();
    let allow = format!(
        "allow=localhost:{}&allow=localhost:{other}&allow=localhost:{unreachable}",
        s.origin.port
    );
    s.rt.deploy_ok("fetch", &guest("fetch"), &allow).await;
    let connects = "nacre_proxy_connections_total{kind=\"egress\"}";

    // Not on the guest's list: denied inside the enclave, no CONNECT.
    let before = s.proxy.metric(connects).await;
    let (status, body) = s
        .fetch(&format!(
            "https://user:PASSWORD-77@localhost:{proxy_only_port}/denied/path?token=SECRET-QUERY-5150"
        ))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // The log (which the host can read) names where, never the query or
    // user info, where tokens travel.
    let log = s.rt.log();
    assert!(
        log.contains(&format!("https://localhost:{proxy_only_port}/denied/path")),
        "{log}"
    );
    assert!(
        !log.contains("SECRET-QUERY") && !log.contains("PASSWORD-77"),
        "{log}"
    );
    // Plain http:// needs an http:// rule even for an allowed host:port.
    let (status, body) = s
        .fetch(&format!("http://localhost:{}/", s.origin.port))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // The refusal is the answer however the guest's body write and the
    // refusal are ordered: never a write failing on a body closed first.
    let denied = format!("https://localhost:{proxy_only_port}/burst");
    let burst = futures::future::join_all((0..32).map(|_| s.fetch(&denied))).await;
    for (status, body) in burst {
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("HttpRequestDenied"), "{body}");
    }
    assert_eq!(
        s.proxy.metric(connects).await,
        before,
        "a CONNECT reached the host"
    );
    assert!(s.rt.log().contains("not in the guest's allow list"));

    // Allowed by the enclave, not by the proxy: 403 there, an error here.
    let (status, body) = s.fetch(&format!("https://localhost:{other}/")).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let refused = "nacre_proxy_refusals_total{kind=\"egress\",reason=\"not_allowed\"}";
    assert_eq!(s.proxy.metric(refused).await, 1.0);

    // Allowed everywhere, nothing listening: a prompt error.
    let t = Instant::now();
    let (status, body) = s.fetch(&format!("https://localhost:{unreachable}/")).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(status, 502);
    assert!(body.contains("DestinationUnavailable"), "{body}");

    // A certificate the enclave does not trust: the TLS check is inside.
    let stranger = Origin::start(false).await;
    let s2 = Stack::start(&[], false, &[format!("localhost:{}", stranger.port)]).await;
    s2.rt
        .deploy_ok(
            "fetch",
            &guest("fetch"),
            &format!("allow=localhost:{}", stranger.port),
        )
        .await;
    let (status, body) = s2
        .fetch(&format!("https://localhost:{}/", stranger.port))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("TlsCertificateError"), "{body}");

    // And the good path still works.
    let (status, body) = s
        .fetch(&format!("https://localhost:{}/ok", s.origin.port))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_host_proxy_loses_only_connections_in_flight() {
    let mut s = Stack::start(&[], false, &[]).await;
    s.rt.deploy_ok(
        "fetch",
        &guest("fetch"),
        &format!("allow=localhost:{}", s.origin.port),
    )
    .await;
    let url = |p: &str| format!("https://localhost:{}{p}", s.origin.port);
    assert_eq!(s.fetch(&url("/before")).await.0, 200);
    let runtime_pid = s.rt.pid();

    // A request in flight (the origin takes 3 s) when the proxy dies.
    let client = s.rt.client();
    let slow = format!(
        "{}/fetch/?url={}",
        s.rt.url(),
        urlencode(&url("/slow?delay_ms=3000"))
    );
    let in_flight = tokio::spawn(async move { client.get(slow).send().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.proxy.restart_after_kill();
    let lost = in_flight.await.unwrap();
    assert!(
        lost.as_ref().map_or(true, |r| r.status() != 200),
        "the in-flight request cannot have survived"
    );

    // Same runtime, new proxy on the same addresses: everything works.
    s.rt.via(s.proxy.inbound_tcp());
    assert_eq!(s.rt.pid(), runtime_pid);
    for i in 0..5 {
        let (status, body) = s.fetch(&url(&format!("/after-{i}"))).await;
        assert_eq!(status, 200, "{body}\n{}", s.rt.log());
    }
    assert_eq!(s.rt.get("/enclave/manifest").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn abrupt_connections_leave_nothing_behind() {
    let s = Stack::start(&[], false, &[]).await;
    s.rt.deploy_ok("hello", &guest("hello"), "").await;
    assert_eq!(s.rt.get("/hello/").await.0, 200);
    let proxy_fds = nacre_cli::process::fd_count(s.proxy.pid());
    let rt_fds = s.rt.fd_count();
    let open = "nacre_proxy_open_connections{kind=\"inbound\"}";

    let target = s.proxy.inbound_tcp();
    for round in 0..10 {
        let mut batch = Vec::new();
        for i in 0..100 {
            let c = tokio::net::TcpStream::connect(target).await.unwrap();
            if i % 2 == 0 {
                // Half of them start a TLS handshake first.
                use tokio::io::AsyncWriteExt;
                let mut c = c;
                let _ = c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
                batch.push(c);
            } else {
                batch.push(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(20 * (round % 3))).await;
        for c in batch {
            // RST instead of FIN: the rudest way to go.
            c.set_zero_linger().unwrap();
            drop(c);
        }
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (p, r) = (nacre_cli::process::fd_count(s.proxy.pid()), s.rt.fd_count());
        let gauge = s.proxy.metric(open).await;
        if p <= proxy_fds && r <= rt_fds && gauge == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: proxy fds {p} (was {proxy_fds}), runtime fds {r} (was {rt_fds}), open {gauge}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = "nacre_proxy_connections_total{kind=\"inbound\"}";
    assert!(s.proxy.metric(total).await >= 1000.0);
    assert_eq!(s.rt.get("/hello/").await.0, 200);
}
