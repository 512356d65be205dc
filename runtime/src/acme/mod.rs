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
//!   serving and the order is retried with back-off ([`schedule`]).

mod client;
mod order;
mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

pub use self::schedule::{Leaf, backoff};

use self::client::Through;
use crate::egress::Outbound;
use crate::sync::{Role, Sync};
use crate::tls::{Identity, TlsError};

/// The longest sleep before the schedule is looked at again (ARI's window
/// may move; clocks may jump).
const RECHECK: Duration = Duration::from_secs(6 * 3600);

/// Why an issuance failed. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server could not be reached or answered with a problem.
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
    /// Something in the enclave failed.
    #[error("{0}")]
    Local(String),
    /// A certificate or key could not be made or used.
    #[error(transparent)]
    Tls(#[from] TlsError),
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
    sync: Option<Arc<Sync>>,
    issued: watch::Sender<bool>,
}

impl Acme {
    /// A keeper of `identity`'s certificate. `outbound` is the runtime's
    /// own HTTPS client (None: no `--egress`, which ACME needs).
    pub fn new(
        config: KeeperConfig,
        identity: Arc<Identity>,
        outbound: Option<Outbound>,
        roles: watch::Receiver<Role>,
        sync: Option<Arc<Sync>>,
    ) -> Result<Arc<Acme>, AcmeError> {
        let ca = match (config.acme, outbound) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(AcmeError::Local(
                    "--acme-directory needs --egress ADDR: the ACME client reaches the CA through the host proxy".into(),
                ));
            }
            (Some(acme), Some(outbound)) => {
                let url: http::Uri = acme.directory.parse().map_err(|e| {
                    AcmeError::Local(format!("--acme-directory {}: {e}", acme.directory))
                })?;
                if url.scheme() != Some(&http::uri::Scheme::HTTPS) || url.host().is_none() {
                    return Err(AcmeError::Local(format!(
                        "--acme-directory {}: give the https:// URL of the CA's directory",
                        acme.directory
                    )));
                }
                Some(Ca {
                    directory: acme.directory,
                    contact: acme.contact,
                    http: Through(outbound),
                })
            }
        };
        Ok(Arc::new(Acme {
            fqdn: config.fqdn,
            renew_after: config.renew_after,
            identity,
            ca,
            roles,
            sync,
            issued: watch::channel(false).0,
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
        let mut failures = 0u32;
        // After a failure: not before this.
        let mut retry_at: Option<Instant> = None;
        // The time found was reached: renew, even if a window that moves
        // with every look (ARI's random point) would now say later.
        let mut due = false;
        loop {
            let leaf = Leaf::parse(&self.identity.leaf(), &self.fqdn);
            if self.ca.is_some() && leaf.as_ref().is_some_and(|l| !l.self_issued) {
                self.issued.send_replace(true);
            }
            if !self.may_issue() {
                tokio::select! {
                    () = changed(&mut roles) => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let wait = match (retry_at, due) {
                (Some(at), _) => at.saturating_duration_since(Instant::now()),
                (None, true) => Duration::ZERO,
                (None, false) => self.until_due(leaf.as_ref()).await,
            };
            if !wait.is_zero() {
                changes.borrow_and_update();
                tokio::select! {
                    () = changed(&mut roles) => {}
                    // A certificate from the leader, or a renewal's own.
                    () = changed(&mut changes) => due = false,
                    () = tokio::time::sleep(wait.min(RECHECK)) => {
                        if wait <= RECHECK {
                            retry_at = None;
                            due = true;
                        }
                    }
                }
                continue;
            }
            due = false;
            // Losing the lead stops an issuance: the new leader decides.
            let outcome = tokio::select! {
                r = self.renew() => Some(r),
                () = lost_lead(roles.clone()) => None,
            };
            self.identity.close_challenges();
            match outcome {
                Some(Ok(())) => {
                    failures = 0;
                    tracing::info!(
                        source = self.identity.source(),
                        sha256 = %hex::encode(self.identity.leaf_sha256()),
                        "certificate renewed"
                    );
                }
                Some(Err(e)) => {
                    failures += 1;
                    let rate_limited = matches!(
                        e,
                        AcmeError::Server {
                            rate_limited: true,
                            ..
                        }
                    );
                    let delay = backoff(failures, rate_limited);
                    tracing::error!(
                        retry_in = %humantime::format_duration(delay),
                        "certificate for {} not renewed, still serving the one held: {e}",
                        self.fqdn
                    );
                    retry_at = Some(Instant::now() + delay);
                }
                None => tracing::info!("no longer leading; the leader keeps the certificate"),
            }
        }
    }

    /// How long until the certificate held should be renewed.
    async fn until_due(&self, leaf: Option<&Leaf>) -> Duration {
        let Some(leaf) = leaf else {
            // Unreadable: replace it now.
            return Duration::ZERO;
        };
        let now = SystemTime::now();
        let since = self.identity.since();
        let at = match &self.ca {
            None if !leaf.self_issued => {
                // A CA's certificate from a leader with ACME, or a file:
                // not this keeper's to replace.
                return RECHECK;
            }
            Some(_) if leaf.self_issued || !leaf.names_fqdn => return Duration::ZERO,
            Some(ca) if self.renew_after.is_none() => match self.suggested(ca, leaf).await {
                Some(at) => at,
                None => leaf.renew_at(None, since),
            },
            _ => leaf.renew_at(self.renew_after, since),
        };
        at.duration_since(now).unwrap_or(Duration::ZERO)
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
