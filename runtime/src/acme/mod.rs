//! The certificate's life: obtained from an ACME CA inside the enclave by
//! TLS-ALPN-01 (`--acme-directory`), renewed before it expires, and,
//! without a CA, the self-signed certificate renewed the same way.
//!
//! - The account key, the certificate's key and the challenge answers are
//!   made here and never leave the enclave but HPKE-sealed to an attested
//!   enclave of the same deployment ([`crate::sync`]).
//! - Every ACME request leaves through the host proxy with TLS inside
//!   ([`client`]); the CA's validation reaches the public listener, where
//!   [`crate::tls::Identity`] answers `acme-tls/1` handshakes itself.
//! - In a deployment only the leader talks to the CA, once it holds the
//!   deployment's keys: an enclave that restarts takes the certificate and
//!   the account from the others and orders nothing. Challenges reach every
//!   worker before the CA is told to validate, since a load balancer may
//!   send the CA to any of them.
//! - A failure is logged with what to fix; the certificate held keeps
//!   serving and the order is retried with back-off ([`schedule`]): soon
//!   when the CA never answered, slowly when it refused, and an order cut
//!   short by losing the lead counts as refused.
//! - The account's URI, which a CAA `accounturi` names (RFC 8657), is
//!   logged whenever this enclave first holds an account and shown in
//!   `/enclave/config` ([`account_uri`]).

mod client;
mod order;
mod schedule;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

pub use self::order::account_uri;
pub use self::schedule::{Attempt, Backoff, Leaf, Setback};

use self::client::Through;
use crate::egress::Outbound;
use crate::fleet::{Deployment, Role};
use crate::tls::{Identity, TlsError};

/// The longest sleep before the schedule is looked at again (ARI's window
/// may move; clocks may jump).
const RECHECK: Duration = Duration::from_secs(6 * 3600);

/// Why an issuance failed. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server never answered: the host proxy, the `CONNECT` or
    /// the connection failed, or the time ran out.
    #[error(
        "{step}: the CA did not answer: {problem} (check --acme-directory, that the host proxy runs and allows its host with --egress-allow)"
    )]
    Unanswered {
        /// What was being done.
        step: &'static str,
        /// The transport error.
        problem: String,
    },
    /// The ACME server answered with a problem, or its answer was unusable.
    #[error(
        "{step}: {problem} (check --acme-directory, that the host proxy allows its host with --egress-allow, and --extra-ca for a private CA)"
    )]
    Server {
        /// What was being done.
        step: &'static str,
        /// The server's problem document or the transport error.
        problem: String,
        /// The CA said to slow down.
        rate_limited: bool,
    },
    /// The CA could not validate the challenge.
    #[error(
        "the CA could not validate {fqdn} by tls-alpn-01: {detail} (the name must resolve to the load balancer or parent that forwards port 443 to this deployment's --listen)"
    )]
    Validation {
        /// `--fqdn`.
        fqdn: String,
        /// The CA's words.
        detail: String,
    },
    /// The CA refused the order as asked.
    #[error("the CA refused the order: {0}")]
    Refused(String),
    /// This enclave stopped leading during the order; the new leader
    /// decides. The CA may count the order all the same.
    #[error("the order was abandoned: this enclave no longer leads the deployment")]
    Abandoned,
    /// Something in the enclave failed.
    #[error("{0}")]
    Local(String),
    /// A certificate or key could not be made or used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl AcmeError {
    /// How the back-off counts this failure.
    pub fn setback(&self) -> Setback {
        match self {
            AcmeError::Unanswered { .. } => Setback::Unanswered,
            AcmeError::Server {
                rate_limited: true, ..
            } => Setback::RateLimited,
            AcmeError::Abandoned => Setback::Abandoned,
            _ => Setback::Refused,
        }
    }
}

/// How the certificate is obtained.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// `--acme-directory`.
    pub directory: String,
    /// `--acme-contact`.
    pub contact: Option<String>,
}

/// The certificate keeper's settings.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// `--fqdn`.
    pub fqdn: String,
    /// `--acme-directory` and `--acme-contact`; None: self-signed.
    pub acme: Option<AcmeConfig>,
    /// `--renew-after`: renew once the certificate is this old
    /// (default: ARI's window, else two thirds of its lifetime).
    pub renew_after: Option<Duration>,
}

/// The CA and how it is reached.
pub(crate) struct Ca {
    directory: String,
    contact: Option<String>,
    http: Through,
}

/// Keeps the certificate served current: from the CA with
/// `--acme-directory`, else self-signed.
pub struct Acme {
    fqdn: String,
    renew_after: Option<Duration>,
    identity: Arc<Identity>,
    ca: Option<Ca>,
    roles: watch::Receiver<Role>,
    sync: Option<Arc<dyn Deployment>>,
    issued: watch::Sender<bool>,
    /// The account URI last logged, so each is logged once however often
    /// it is loaded (every ARI look loads it).
    logged_account: Mutex<Option<String>>,
}

impl Acme {
    /// A keeper of `identity`'s certificate. `outbound` is the runtime's
    /// own HTTPS client (None: no `--egress`, which ACME needs).
    pub fn new(
        config: KeeperConfig,
        identity: Arc<Identity>,
        outbound: Option<Outbound>,
        roles: watch::Receiver<Role>,
        sync: Option<Arc<dyn Deployment>>,
    ) -> Result<Arc<Acme>, AcmeError> {
        let ca = match (config.acme, outbound) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(AcmeError::Local(
                    "--acme-directory needs --egress ADDR: the ACME client reaches the CA through the host proxy".into(),
                ));
            }
            // The URL was checked with the other flags (settings.rs).
            (Some(acme), Some(outbound)) => Some(Ca {
                directory: acme.directory,
                contact: acme.contact,
                http: Through(outbound),
            }),
        };
        Ok(Arc::new(Acme {
            fqdn: config.fqdn,
            renew_after: config.renew_after,
            identity,
            ca,
            roles,
            sync,
            issued: watch::channel(false).0,
            logged_account: Mutex::new(None),
        }))
    }

    /// Turns true once a CA's certificate is served (`--wait-for-app`
    /// opens the listener to clients then).
    pub fn issued(&self) -> watch::Receiver<bool> {
        self.issued.subscribe()
    }

    /// Whether this enclave may change the deployment's certificate: alone,
    /// or leading with the deployment's keys (a leader that has just
    /// started waits to take them from the workers).
    fn may_issue(&self) -> bool {
        match *self.roles.borrow() {
            Role::Alone => true,
            Role::Leader => self.sync.as_ref().is_some_and(|s| s.holds_keys()),
            _ => false,
        }
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut roles = self.roles.clone();
        let mut changes = self.identity.subscribe();
        let mut backoff = Backoff::default();
        // No order before this: the back-off after a failure, the least
        // wait after a renewal.
        let mut not_before: Option<Instant> = None;
        // The time found was reached: renew, even if a window that moves
        // with every look (ARI's random point) would now say later.
        let mut due = false;
        loop {
            let leaf = Leaf::parse(&self.identity.leaf(), &self.fqdn);
            if self.ca.is_some() && leaf.as_ref().is_some_and(|l| !l.self_issued) {
                self.issued.send_replace(true);
            }
            // An account that arrived by key sync is logged here.
            self.log_account(None, "received from the deployment");
            if !self.may_issue() {
                // Whatever arrives meanwhile is looked at afresh.
                due = false;
                tokio::select! {
                    () = changed(&mut roles) => {}
                    () = changed(&mut changes) => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            // The back-off delays an order but never forces one: a
            // certificate may have arrived from a leader meanwhile.
            let floor = not_before.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
            let wait = if due {
                floor
            } else {
                self.until_due(leaf.as_ref()).await.max(floor)
            };
            if !wait.is_zero() {
                changes.borrow_and_update();
                tokio::select! {
                    () = changed(&mut roles) => {}
                    // A certificate from the leader, or a renewal's own.
                    () = changed(&mut changes) => due = false,
                    () = tokio::time::sleep(wait.min(RECHECK)) => due = wait <= RECHECK,
                }
                continue;
            }
            due = false;
            // Losing the lead stops an issuance: the new leader decides.
            let outcome = tokio::select! {
                r = self.renew() => r,
                () = lost_lead(roles.clone()) => Err(AcmeError::Abandoned),
            };
            self.identity.close_challenges();
            let delay = self.record(&mut backoff, outcome);
            not_before = Some(Instant::now() + delay);
        }
    }

    /// Logs how an attempt ended and returns the least wait before the
    /// next order.
    fn record(&self, backoff: &mut Backoff, outcome: Result<(), AcmeError>) -> Duration {
        match outcome {
            Ok(()) => {
                tracing::info!(
                    source = self.identity.source(),
                    sha256 = %hex::encode(self.identity.leaf_sha256()),
                    "certificate renewed"
                );
                backoff.next(Attempt::Renewed, self.renew_after)
            }
            Err(e) => {
                let delay = backoff.next(Attempt::Failed(e.setback()), None);
                tracing::error!(
                    retry_in = %humantime::format_duration(delay),
                    "certificate for {} not renewed, still serving the one held: {e}",
                    self.fqdn
                );
                delay
            }
        }
    }

    /// Logs the account's URI (for a CAA `accounturi`), `uri` or else
    /// the one the identity holds, unless it was the last logged.
    fn log_account(&self, uri: Option<&str>, how: &str) {
        if self.ca.is_none() {
            return;
        }
        let Some(uri) = uri
            .map(str::to_string)
            .or_else(|| account_uri(&self.identity))
        else {
            return;
        };
        let Ok(mut logged) = self.logged_account.lock() else {
            return;
        };
        if logged.as_deref() != Some(uri.as_str()) {
            // `id=`, as docs/certificates.md tells operators to look for.
            tracing::info!(id = %uri, "ACME account {how}");
            *logged = Some(uri);
        }
    }

    /// How long until the certificate held should be renewed.
    async fn until_due(&self, leaf: Option<&Leaf>) -> Duration {
        let Some(leaf) = leaf else {
            // Unreadable: replace it now.
            return Duration::ZERO;
        };
        let at = match &self.ca {
            None if !leaf.self_issued => {
                // A CA's certificate from a leader with ACME, or a file:
                // not this keeper's to replace.
                return RECHECK;
            }
            Some(_) if leaf.self_issued || !leaf.names_fqdn => return Duration::ZERO,
            Some(ca) if self.renew_after.is_none() => match self.suggested(ca, leaf).await {
                Some(at) => at,
                None => leaf.renew_at(None),
            },
            _ => leaf.renew_at(self.renew_after),
        };
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// ARI's suggested time (RFC 9773), when the CA offers it.
    async fn suggested(&self, ca: &Ca, leaf: &Leaf) -> Option<SystemTime> {
        let id = leaf.ari_id.as_ref()?;
        let account = self.account(ca).await.ok()?;
        match account.renewal_info(id).await {
            Ok((info, _)) => Some(schedule::within(
                info.suggested_window.start.into(),
                info.suggested_window.end.into(),
            )),
            Err(e) => {
                tracing::debug!("no renewal information from the CA: {e}");
                None
            }
        }
    }

    /// One renewal: an order with the CA, or a new self-signed
    /// certificate.
    async fn renew(&self) -> Result<(), AcmeError> {
        match &self.ca {
            Some(ca) => self.issue(ca).await,
            None => {
                let (chain, key) = crate::tls::self_signed_pair(&self.fqdn)?;
                Ok(self.identity.replace(chain, key, "self-signed")?)
            }
        }
    }
}

/// Resolves at the next change; never once the sender is gone.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when this enclave is no longer alone or leading.
async fn lost_lead(mut roles: watch::Receiver<Role>) {
    loop {
        if !matches!(*roles.borrow_and_update(), Role::Alone | Role::Leader) {
            return;
        }
        if roles.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::schedule::tests::leaf_between;

    const DAY: Duration = Duration::from_secs(86400);

    /// A keeper without a CA, alone, serving a self-signed certificate
    /// that started `age` ago and lives 90 days.
    fn keeper(age: Duration, renew_after: Option<Duration>) -> Arc<Acme> {
        let identity = Identity::self_signed("app.test").unwrap();
        let start = SystemTime::now() - age;
        let (chain, key) = leaf_between(start, start + 90 * DAY);
        // As key sync delivers it: it reaches this process only now.
        identity.replace(chain, key, "self-signed").unwrap();
        let config = KeeperConfig {
            fqdn: "app.test".into(),
            acme: None,
            renew_after,
        };
        let roles = watch::channel(Role::Alone).1;
        Acme::new(config, identity, None, roles, None).unwrap()
    }

    #[tokio::test]
    async fn a_certificate_that_arrived_late_is_due_by_its_own_start() {
        // --renew-after 30d, 40 days into its life: due now, not in 30
        // days.
        let acme = keeper(40 * DAY, Some(30 * DAY));
        let leaf = Leaf::parse(&acme.identity.leaf(), "app.test");
        assert_eq!(acme.until_due(leaf.as_ref()).await, Duration::ZERO);
        // Two thirds of 90 days: 20 days left, not 60.
        let acme = keeper(40 * DAY, None);
        let leaf = Leaf::parse(&acme.identity.leaf(), "app.test");
        let left = acme.until_due(leaf.as_ref()).await;
        assert!(left > 19 * DAY && left <= 20 * DAY, "{left:?}");
    }

    #[test]
    fn an_abandoned_order_waits_like_a_refused_one() {
        let acme = keeper(Duration::ZERO, None);
        let mut backoff = Backoff::default();
        let first = acme.record(&mut backoff, Err(AcmeError::Abandoned));
        assert_eq!(first, Duration::from_secs(300));
        let second = acme.record(&mut backoff, Err(AcmeError::Abandoned));
        assert_eq!(second, Duration::from_secs(600));
        let refused = AcmeError::Refused("no".into());
        assert_eq!(
            acme.record(&mut backoff, Err(refused)),
            Duration::from_secs(1200)
        );
        // A renewal starts over, and keeps the next order a while away.
        assert_eq!(acme.record(&mut backoff, Ok(())), Duration::from_secs(300));
        let unanswered = AcmeError::Unanswered {
            step: "loading the account",
            problem: "the egress proxy: connection refused".into(),
        };
        assert_eq!(
            acme.record(&mut backoff, Err(unanswered)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn each_error_counts_as_what_it_is() {
        let server = |rate_limited| AcmeError::Server {
            step: "opening an order",
            problem: "no".into(),
            rate_limited,
        };
        assert_eq!(server(true).setback(), Setback::RateLimited);
        assert_eq!(server(false).setback(), Setback::Refused);
        assert_eq!(AcmeError::Abandoned.setback(), Setback::Abandoned);
        let validation = AcmeError::Validation {
            fqdn: "app.test".into(),
            detail: "no".into(),
        };
        assert_eq!(validation.setback(), Setback::Refused);
        let unanswered = AcmeError::Unanswered {
            step: "opening an order",
            problem: "no answer within 30s".into(),
        };
        assert_eq!(unanswered.setback(), Setback::Unanswered);
    }
}
