//! Bad input on every sync endpoint, from the host: refused, with nothing
//! changed on the enclave that received it.

use std::time::Duration;

use nacre_tests::fleet::{LeaderName, Member, MemberSpec, SyncPorts, pcr0, within};
use nacre_tests::{bin, guest, temp_dir};

/// Bad input on every sync endpoint, from a hostile host (who can also
/// sign with the dev root here, to reach each check behind the signature):
/// a clear 4xx naming the problem, nothing changes, nothing crashes.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_on_every_sync_endpoint_is_refused_and_changes_nothing() {
    use base64::Engine as _;
    use nacre_attestation::{DevSigner, DocumentRequest, GuestBinding, SyncBinding, SyncRole};
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let root = temp_dir("fleet-root");
    let name = LeaderName::start().await;
    let ports = SyncPorts::hold(1);
    name.point_to(ports[0]);
    // An enclave that holds no keys yet: its offers are open to anyone, so
    // every check behind them can be reached.
    let no_keys = ["--sync-genesis-after", "1h"];
    let m = Member::start(MemberSpec {
        extra: &no_keys,
        ..MemberSpec::new(&name, &root, &ports, 0)
    })
    .await;
    // Writes are refused (503) while the enclave designates its leader.
    within(Duration::from_secs(20), "leading", || async {
        m.role().await == "leader"
    })
    .await;
    m.rt.deploy_ok("ag", &guest("attest-guest"), "").await;
    let cert = m.certificate().await;

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", ports[0]);
    let send = |method: reqwest::Method, path: &str, body: Option<Vec<u8>>| {
        let mut r = client.request(method, url(path));
        if let Some(b) = body {
            r = r.body(b);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    use reqwest::Method;
    for (method, path, body, status, needle) in [
        (Method::GET, "/enclave/leader", None, 400, "nonce"),
        (
            Method::GET,
            "/enclave/leader?nonce=zz",
            None,
            400,
            "40 hex digits",
        ),
        (
            Method::GET,
            "/enclave/sync?nonce=abc",
            None,
            400,
            "40 hex digits",
        ),
        (
            Method::POST,
            "/enclave/heartbeat",
            Some(b"{garbage".to_vec()),
            400,
            "JSON",
        ),
        (
            Method::POST,
            "/enclave/heartbeat",
            Some(vec![b' '; 100_000]),
            413,
            "over",
        ),
        (
            Method::POST,
            "/enclave/sync",
            Some(b"{}".to_vec()),
            400,
            "offer",
        ),
        (
            Method::POST,
            "/enclave/sync?offer=3333333333333333333333333333333333333333",
            Some(br#"{"document":"","encrypted_keys":""}"#.to_vec()),
            409,
            "no open offer",
        ),
        (
            Method::DELETE,
            "/enclave/sync",
            None,
            404,
            "not a sync endpoint",
        ),
    ] {
        let (got, body) = send(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body.contains(needle), "{method} {path}: {body}");
    }

    // Deliveries, each after a fresh offer, each failing one check.
    let signer = DevSigner::open(&root).unwrap();
    let pcrs: std::collections::BTreeMap<u32, Vec<u8>> = (0..16)
        .map(|i| {
            let v = if i == 0 {
                hex::decode(pcr0(&bin("nacre-runtime"))).unwrap()
            } else {
                vec![0u8; 48]
            };
            (i, v)
        })
        .collect();
    let doc = |nonce: &[u8], user_data: Vec<u8>| {
        signer
            .sign(DocumentRequest {
                pcrs: pcrs.clone(),
                nonce: Some(nonce.to_vec()),
                user_data: Some(user_data),
                public_key: None,
            })
            .unwrap()
    };
    let offer = || async {
        let (status, body) = send(
            Method::GET,
            &format!("/enclave/sync?nonce={}", "11".repeat(20)),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        hex::decode(v["nonce"].as_str().unwrap()).unwrap()
    };
    let sealed = vec![7u8; 80];
    let sender = |payload: &[u8]| {
        SyncBinding {
            role: SyncRole::Sender,
            payload_sha256: Some(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(
                payload,
            ))),
        }
        .to_bytes()
    };
    let deliver = |offer: &[u8], document: Vec<u8>, keys: &[u8]| {
        let body = serde_json::json!({ "document": b64(&document), "encrypted_keys": b64(keys) });
        send(
            Method::POST,
            &format!("/enclave/sync?offer={}", hex::encode(offer)),
            Some(serde_json::to_vec(&body).unwrap()),
        )
    };

    // A declared 300 MiB delivery, for an open offer: refused unread.
    let nonce = offer().await;
    let r = client
        .post(url(&format!("/enclave/sync?offer={}", hex::encode(&nonce))))
        .header("content-length", (300u64 << 20).to_string())
        .body(vec![0u8; 16])
        .send()
        .await;
    assert!(
        r.map_or(true, |r| r.status() == 413),
        "a declared 300 MiB delivery was read"
    );

    let nonce = offer().await;
    let (s, body) = send(
        Method::POST,
        &format!("/enclave/sync?offer={}", hex::encode(&nonce)),
        Some(br#"{"document":"%%%","encrypted_keys":""}"#.to_vec()),
    )
    .await;
    assert_eq!((s, body.contains("Base64")), (400, true), "{body}");

    let nonce = offer().await;
    let full = doc(&nonce, sender(&sealed));
    let (s, body) = deliver(&nonce, full[..full.len() / 2].to_vec(), &sealed).await;
    assert_eq!(s, 403, "a truncated document: {body}");

    let nonce = offer().await;
    let (s, body) = deliver(&nonce, doc(&[9u8; 20], sender(&sealed)), &sealed).await;
    assert_eq!(
        (s, body.contains("nonce")),
        (403, true),
        "another nonce: {body}"
    );

    let nonce = offer().await;
    let guest_layout = GuestBinding {
        guest_sha256: [1; 32],
        data: Some(sender(&sealed)),
    }
    .to_bytes();
    let (s, body) = deliver(&nonce, doc(&nonce, guest_layout), &sealed).await;
    assert_eq!(
        (s, body.contains("not a sync document")),
        (403, true),
        "{body}"
    );

    // A real guest's document, with the right nonce: refused all the same.
    let nonce = offer().await;
    let (status, hexdoc) =
        m.rt.get(&format!("/ag/attest?{}", hex::encode(&nonce)))
            .await;
    assert_eq!(status, 200, "{hexdoc}");
    let (s, body) = deliver(&nonce, hex::decode(hexdoc.trim()).unwrap(), &sealed).await;
    assert_eq!(
        (s, body.contains("not a sync document")),
        (403, true),
        "a guest's document: {body}"
    );

    let nonce = offer().await;
    let receiver_role = SyncBinding {
        role: SyncRole::Receiver,
        payload_sha256: None,
    }
    .to_bytes();
    let (s, body) = deliver(&nonce, doc(&nonce, receiver_role), &sealed).await;
    assert_eq!(s, 403, "the receiver's role: {body}");

    let nonce = offer().await;
    let (s, body) = deliver(&nonce, doc(&nonce, sender(b"other bytes")), &sealed).await;
    assert_eq!((s, body.contains("does not bind")), (403, true), "{body}");

    // Replayed: the offer it answered is gone, and a new offer has another
    // nonce.
    let replay = doc(&nonce, sender(&sealed));
    let (s, _) = deliver(&nonce, replay.clone(), &sealed).await;
    assert_eq!(s, 409, "a delivery without an open offer");
    let fresh = offer().await;
    let (s, body) = deliver(&fresh, replay, &sealed).await;
    assert_eq!(
        (s, body.contains("nonce")),
        (403, true),
        "a replayed document: {body}"
    );

    // Well-formed and signed, but the keys are not sealed to this offer.
    let nonce = offer().await;
    let (s, body) = deliver(&nonce, doc(&nonce, sender(&sealed)), &sealed).await;
    assert_eq!(s, 400, "keys sealed to no one: {body}");

    // Offer slots: a few at once, then 429, never all held by one sender
    // for long (they expire).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            send(
                Method::GET,
                &format!("/enclave/sync?nonce={}", "44".repeat(20)),
                None,
            )
            .await
            .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // Nothing changed, nothing crashed.
    assert_eq!(m.role().await, "leader");
    assert!(!m.rt.log().contains("first key set"));
    assert_eq!(m.certificate().await, cert);
    assert!(m.rt.log().contains("sync request refused"));
}
