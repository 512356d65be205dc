//! The exchange's checks, each with the one wrong input it is there for:
//! a receiver node, and a rogue sender of the same image that crafts its
//! delivery by hand (what a compromised or confused peer could send), so
//! each check is reached alone.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use nacre_attestation::{SyncBinding, SyncRole};
use nacre_sync::auth::{DeploymentKey, Label};
use nacre_sync::seal::{self, Bundle, Payload, Recipient};
use nacre_sync::wire::{Delivery, Lineage};
use nacre_transport::tunnel::Target;
use tokio::sync::watch;

use super::exchange::b64;
use super::link::{LinkFuture, PeerLink};
use super::{Node, Refused, Role, SyncConfig, SyncError, SyncedState, random_nonce};
use crate::attest::Dev;
use crate::egress::Egress;
use crate::guests::{EnclaveCtx, GuestEngine, KvLimits, Limits, Registry};
use crate::tls::Identity;

const DEPLOYMENT: &str = "leader.test:444";

/// No peer answers: these tests call the endpoints' methods directly.
struct Nobody;

impl PeerLink for Nobody {
    fn request<'a>(
        &'a self,
        to: &'a Target,
        _req: http::Request<bytes::Bytes>,
        _timeout: Duration,
    ) -> LinkFuture<'a> {
        Box::pin(async move { Err(SyncError::Peer(format!("{to}: nobody in this test"))) })
    }
}

fn dev() -> Arc<Dev> {
    let dir = std::env::temp_dir().join(format!(
        "nacre-exchange-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    Arc::new(Dev::open(&dir, None).expect("dev attester"))
}

fn node(dev: &Arc<Dev>, deployment: &str) -> Arc<Node> {
    let engine = GuestEngine::new(
        Limits {
            memory: 16 << 20,
            request_timeout: Duration::from_secs(5),
            max_body: 1 << 20,
            max_instances: 2,
            instances_per_guest: 2,
            memory_total: 1 << 28,
        },
        EnclaveCtx::local(
            dev.clone(),
            KvLimits {
                max_keys: 10,
                max_bytes: 1000,
            },
        ),
        Arc::new(Egress::new(None, None, None).expect("egress")),
    )
    .expect("engine");
    let (role_tx, role) = watch::channel(Role::Alone);
    let config = SyncConfig {
        leader: Target::parse(deployment, None).expect("target"),
        advertise: watch::channel(None).1,
        accept_pcr0: Vec::new(),
        egress: "tcp://127.0.0.1:9".parse().expect("address"),
        genesis_after: Duration::from_secs(60),
    };
    Node::with_link(
        config,
        Identity::self_signed("localhost").expect("identity"),
        Arc::new(Registry::new(engine, None)),
        Arc::new(SyncedState::new(role)),
        dev.clone(),
        role_tx,
        Arc::new(Nobody),
    )
    .expect("node")
}

/// How the rogue sender departs from a well-formed delivery.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    Nothing,
    /// A byte of the ciphertext changed after the document bound it.
    Ciphertext,
    /// The ciphertext (and the binding) of a seal to another key.
    OtherKey,
    /// A receiver's document where a sender's belongs.
    ReceiverDocument,
    /// A document carrying another nonce than the offer's.
    OtherNonce,
}

/// Key material from `rogue`, of `deployment`, key set `lineage` at
/// `version`, carrying `key`.
fn payload(rogue: &Node, deployment: &str, lineage: &Lineage, version: u64) -> Payload {
    rogue
        .material
        .gather(
            deployment,
            lineage.clone(),
            version,
            &DeploymentKey::generate(),
        )
        .payload
}

fn lineage(id: u8) -> Lineage {
    Lineage {
        id: hex::encode([id; 16]),
        created_ms: 1,
    }
}

/// One whole exchange, the receiver `to`'s endpoints called directly,
/// `rogue` sending `payload`; its requests tagged with `tag_key`.
async fn exchange(
    to: &Node,
    rogue: &Node,
    payload: &Payload,
    tag_key: Option<&DeploymentKey>,
    tamper: Tamper,
) -> Result<u64, Refused> {
    let mine = random_nonce();
    let tag = tag_key.map(|k| k.tag(Label::Offer, &[&mine]));
    let offer = to.offer(mine, tag.as_deref()).await?;
    let theirs = nacre_api::parse_nonce(&offer.nonce).expect("offer nonce");
    let checked = rogue
        .peers
        .check(
            &b64(&offer.document).expect("base64"),
            &mine,
            SyncRole::Receiver,
        )
        .expect("the receiver's document");
    let public_key = match tamper {
        Tamper::OtherKey => Recipient::new().1,
        _ => checked.public_key.expect("public key"),
    };
    let bundle = Bundle {
        payload: serde_bytes::ByteBuf::from(payload.encode()),
        blobs: Vec::new(),
    };
    let mut sealed = seal::seal(&public_key, &bundle.encode()).expect("seal");
    let binding = match tamper {
        Tamper::ReceiverDocument => SyncBinding {
            role: SyncRole::Receiver,
            payload_sha256: None,
        },
        _ => SyncBinding {
            role: SyncRole::Sender,
            payload_sha256: Some(seal::sha256(&sealed)),
        },
    };
    if tamper == Tamper::Ciphertext {
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
    }
    let nonce = match tamper {
        Tamper::OtherNonce => random_nonce(),
        _ => theirs,
    };
    let document = rogue
        .peers
        .document(&nonce, binding, None)
        .await
        .expect("document");
    let tag = tag_key.map(|k| k.tag(Label::Deliver, &[&theirs]));
    let taken = to.take_offer(theirs, tag.as_deref())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    to.deliver(
        taken,
        Delivery {
            document: b64.encode(document),
            encrypted_keys: b64.encode(sealed),
        },
    )
    .await
}

fn assert_refused(got: Result<u64, Refused>, status: StatusCode, message: &str) {
    match got {
        Ok(v) => panic!("taken, at version {v}; expected {status} {message:?}"),
        Err((s, m)) => {
            assert_eq!(s, status, "{m}");
            assert!(m.contains(message), "{m:?} does not say {message:?}");
        }
    }
}

#[tokio::test]
async fn a_well_formed_delivery_is_taken_whole() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let p = payload(&rogue, DEPLOYMENT, &lineage(1), 4);
    assert_eq!(
        exchange(&to, &rogue, &p, None, Tamper::Nothing).await,
        Ok(4)
    );
    let held = to.key_set().expect("held");
    assert_eq!((held.lineage, held.version), (lineage(1).id, 4));
    assert_eq!(
        to.material.identity.leaf_sha256(),
        rogue.material.identity.leaf_sha256()
    );
    // Once held, the next version comes tagged with the deployment key.
    let key = to.held().expect("held").key;
    let next = payload(&rogue, DEPLOYMENT, &lineage(1), 5);
    assert_eq!(
        exchange(&to, &rogue, &next, Some(&key), Tamper::Nothing).await,
        Ok(5)
    );
}

#[tokio::test]
async fn an_offer_is_taken_once_whatever_follows() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let offer = to.offer(random_nonce(), None).await.expect("offer");
    let nonce = nacre_api::parse_nonce(&offer.nonce).expect("nonce");
    assert!(to.take_offer(nonce, None).is_ok());
    assert_refused(
        to.take_offer(nonce, None).map(|_| 0),
        StatusCode::CONFLICT,
        "no open offer by that nonce",
    );
    // A delivery refused closes its offer too: no second try on it.
    let p = payload(&rogue, DEPLOYMENT, &lineage(1), 1);
    assert!(
        exchange(&to, &rogue, &p, None, Tamper::Ciphertext)
            .await
            .is_err()
    );
    assert_refused(
        to.take_offer(random_nonce(), None).map(|_| 0),
        StatusCode::CONFLICT,
        "no open offer by that nonce",
    );
}

#[tokio::test]
async fn key_material_of_another_deployment_is_not_taken() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let p = payload(&rogue, "other.test:444", &lineage(1), 1);
    assert_refused(
        exchange(&to, &rogue, &p, None, Tamper::Nothing).await,
        StatusCode::CONFLICT,
        "these keys are not taken: it belongs to deployment other.test:444, this enclave to leader.test:444",
    );
    assert_eq!(to.key_set(), None);
}

#[tokio::test]
async fn another_key_set_or_an_older_version_is_not_taken() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    to.start_deployment();
    let held = to.held().expect("held");
    let ours = held.payload.lineage.clone();
    let before = to.key_set();
    // Tagged with the receiver's own key, so only the order is in the way.
    let other = payload(&rogue, DEPLOYMENT, &lineage(9), 99);
    assert_refused(
        exchange(&to, &rogue, &other, Some(&held.key), Tamper::Nothing).await,
        StatusCode::CONFLICT,
        &format!(
            "these keys are not taken: it is key set {}, this enclave holds key set {} and never trades it for another",
            lineage(9).id,
            ours.id
        ),
    );
    let same = payload(&rogue, DEPLOYMENT, &ours, 1);
    assert_refused(
        exchange(&to, &rogue, &same, Some(&held.key), Tamper::Nothing).await,
        StatusCode::CONFLICT,
        "these keys are not taken: version 1 is not later than version 1, which this enclave holds",
    );
    assert_eq!(to.key_set(), before);
}

#[tokio::test]
async fn an_enclave_holding_keys_opens_no_offer_and_reads_no_delivery_untagged() {
    let dev = dev();
    let to = node(&dev, DEPLOYMENT);
    to.start_deployment();
    let nonce = random_nonce();
    let stranger = DeploymentKey::generate();
    for tag in [None, Some(stranger.tag(Label::Offer, &[&nonce]))] {
        assert_refused(
            to.offer(nonce, tag.as_deref()).await.map(|_| 0),
            StatusCode::FORBIDDEN,
            "this enclave holds keys: the request must carry its deployment key's tag",
        );
    }
    // An open offer, and a delivery for it tagged by another key.
    let key = to.held().expect("held").key;
    let offer = to
        .offer(nonce, Some(&key.tag(Label::Offer, &[&nonce])))
        .await
        .expect("a tagged request opens an offer");
    let theirs = nacre_api::parse_nonce(&offer.nonce).expect("nonce");
    // The offer's tag, not the delivery's: another label.
    let wrong = key.tag(Label::Offer, &[&theirs]);
    assert_refused(
        to.take_offer(theirs, Some(&wrong)).map(|_| 0),
        StatusCode::FORBIDDEN,
        "the request must carry its deployment key's tag",
    );
    assert!(
        to.take_offer(theirs, Some(&key.tag(Label::Deliver, &[&theirs])))
            .is_ok(),
        "a refused tag leaves the offer open"
    );
}

#[tokio::test]
async fn a_ciphertext_changed_after_the_document_bound_it_is_refused() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let p = payload(&rogue, DEPLOYMENT, &lineage(1), 1);
    assert_refused(
        exchange(&to, &rogue, &p, None, Tamper::Ciphertext).await,
        StatusCode::FORBIDDEN,
        "refused the sender: its document does not bind these keys",
    );
    assert_eq!(to.key_set(), None);
}

#[tokio::test]
async fn keys_sealed_to_another_key_are_refused() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let p = payload(&rogue, DEPLOYMENT, &lineage(1), 1);
    assert_refused(
        exchange(&to, &rogue, &p, None, Tamper::OtherKey).await,
        StatusCode::BAD_REQUEST,
        "the keys do not decrypt with this exchange's key",
    );
    assert_eq!(to.key_set(), None);
}

#[tokio::test]
async fn the_senders_document_must_be_a_senders_for_this_offer() {
    let dev = dev();
    let (to, rogue) = (node(&dev, DEPLOYMENT), node(&dev, DEPLOYMENT));
    let p = payload(&rogue, DEPLOYMENT, &lineage(1), 1);
    assert_refused(
        exchange(&to, &rogue, &p, None, Tamper::ReceiverDocument).await,
        StatusCode::FORBIDDEN,
        "refused the sender: not a sync document of a Sender: it says Receiver",
    );
    assert_refused(
        exchange(&to, &rogue, &p, None, Tamper::OtherNonce).await,
        StatusCode::FORBIDDEN,
        "refused the sender: attestation: nonce mismatch",
    );
    assert_eq!(to.key_set(), None);
}

#[tokio::test]
async fn a_delivery_in_progress_gives_an_untagged_one_403_not_429() {
    let dev = dev();
    let to = node(&dev, DEPLOYMENT);
    to.start_deployment();
    // A delivery being applied holds the lock.
    let _applying = to.offers.apply_now().expect("the lock");
    let stranger = http::Request::post(format!(
        "/enclave/sync?offer={}",
        hex::encode(random_nonce())
    ))
    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
    .expect("request");
    let (status, message) = match to.delivery(stranger).await {
        Ok(r) => (r.status(), String::new()),
        Err(refused) => refused,
    };
    assert_eq!(status, StatusCode::FORBIDDEN, "{message}");
    assert!(message.contains("deployment key's tag"), "{message}");
}
