//! One entry for the fuzz target (`fuzz/`) and the test that replays its
//! corpus: any bytes, as the body of any sync endpoint or what is sealed
//! inside a delivery, through every parse and check a peer's or the host's
//! bytes meet. The first byte picks the message.

use crate::auth::{DeploymentKey, Label};
use crate::order::{Holding, admit};
use crate::seal::{Bundle, Payload, Recipient};
use crate::wire::{Delivery, Heartbeat, HeartbeatAnswer, LeaderAnswer, Lineage, Offer};

/// Runs `data` through the parser it picks; returns, never panics.
pub fn exercise(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // Fixed keys, so that a run is the same every time.
    let key = DeploymentKey::from_bytes(&[7; 32]).expect("32 bytes");
    let recipient = Recipient::from_secret(&[9; 32]).expect("an X25519 secret");
    match which % 6 {
        0 => {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(body) {
                let _ = beat.check();
                let _ = beat.verify(&key);
                let _ = HeartbeatAnswer::new(true, &beat, Some(&key)).verify(&beat, &key);
            }
        }
        1 => {
            if let Ok(answer) = serde_json::from_slice::<HeartbeatAnswer>(body) {
                let beat: Heartbeat = serde_json::from_str(SEED_BEAT).expect("seed");
                let _ = answer.verify(&beat, &key);
            }
        }
        2 => {
            if let Ok(offer) = serde_json::from_slice::<Offer>(body) {
                let _ = offer.held();
            }
        }
        3 => {
            if let Ok(d) = serde_json::from_slice::<Delivery>(body) {
                let _ = recipient.open(d.encrypted_keys.as_bytes());
            }
            if let Ok(plain) = recipient.open(body)
                && let Ok(bundle) = Bundle::decode(&plain)
                && let Ok(payload) = Payload::decode(&bundle.payload)
            {
                take(&payload);
            }
        }
        4 => {
            if let Ok(bundle) = Bundle::decode(body)
                && let Ok(payload) = Payload::decode(&bundle.payload)
            {
                take(&payload);
            }
            if let Ok(payload) = Payload::decode(body) {
                take(&payload);
            }
        }
        _ => {
            if let Ok(answer) = serde_json::from_slice::<LeaderAnswer>(body)
                && let Some(tag) = answer.tag
            {
                let _ = key.verify(Label::Leads, &[&[1; 20]], &tag);
            }
        }
    }
}

/// Valid messages of every kind, each behind the byte that picks it: the
/// fuzzer's seeds.
pub fn seeds() -> Vec<Vec<u8>> {
    let key = DeploymentKey::from_bytes(&[7; 32]).expect("32 bytes");
    let mut beat: Heartbeat = serde_json::from_str(SEED_BEAT).expect("seed");
    beat.lineage = Some(Lineage {
        id: "ab".repeat(16),
        created_ms: 5,
    });
    beat.sign(&key);
    let answer = HeartbeatAnswer::new(true, &beat, Some(&key));
    let offer = Offer {
        document: "AAAA".into(),
        nonce: "11".repeat(20),
        have: vec!["22".repeat(32)],
    };
    let payload = Payload {
        deployment: "leader.test:444".into(),
        lineage: Lineage {
            id: "ab".repeat(16),
            created_ms: 5,
        },
        version: 4,
        deployment_key: serde_bytes::ByteBuf::from(vec![7; 32]),
        tls_chain: vec![serde_bytes::ByteBuf::from(vec![0x30, 0x03, 1, 2, 3])],
        tls_key: serde_bytes::ByteBuf::from(vec![0x30, 0x01, 0]),
        states: [("p".to_string(), serde_bytes::ByteBuf::from(vec![3; 32]))].into(),
        guests: vec![crate::seal::GuestRecord {
            name: "p".into(),
            route: "/p".into(),
            allow: vec!["api.test:443".into()],
            component_sha256: serde_bytes::ByteBuf::from(vec![4; 32]),
        }],
        acme_account: Some("{}".into()),
        challenges: vec![],
    };
    let bundle = Bundle {
        payload: serde_bytes::ByteBuf::from(payload.encode()),
        blobs: vec![serde_bytes::ByteBuf::from(vec![5; 8])],
    };
    let public = Recipient::from_secret(&[9; 32])
        .map(|r| r.public_key())
        .unwrap_or_default();
    let sealed = crate::seal::seal(&public, &bundle.encode()).unwrap_or_default();
    let leads = LeaderAnswer {
        status: "this enclave leads".into(),
        tag: Some(key.tag(Label::Leads, &[&[1; 20]])),
    };
    vec![
        [&[0u8][..], &json(&beat)].concat(),
        [&[1u8][..], &json(&answer)].concat(),
        [&[2u8][..], &json(&offer)].concat(),
        [&[3u8][..], &sealed].concat(),
        [&[4u8][..], &bundle.encode()].concat(),
        [&[5u8][..], &json(&leads)].concat(),
    ]
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Runs a payload through the order as a holder and as a fresh enclave.
fn take(payload: &Payload) {
    let held = Lineage {
        id: "ab".repeat(16),
        created_ms: 1,
    };
    let holding = Holding {
        lineage: &held,
        version: 3,
    };
    for h in [Some(holding), None] {
        let _ = admit(
            "leader.test:444",
            h,
            &payload.deployment,
            &payload.lineage,
            payload.version,
        );
    }
    let _ = DeploymentKey::from_bytes(&payload.deployment_key);
    let _ = format!("{payload:?}");
}

const SEED_BEAT: &str = r#"{"hashed_keys":null,"worker_hostname":"w.test:444","lineage":null,"version":0,"session":"00000000000000000000000000000000","seq":1,"tag":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
