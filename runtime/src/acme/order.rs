//! One issuance: the account, an order for `--fqdn`, its TLS-ALPN-01
//! challenges answered on the public listener (and, in a deployment, on
//! every enclave), the request with a key made here, and the certificate.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::{Acme, AcmeError, Ca};
use crate::tls::{self, Pair};

/// How long the CA has to validate the challenges.
const VALIDATION: Duration = Duration::from_secs(120);
/// How long the CA has to issue once the request is in.
const ISSUANCE: Duration = Duration::from_secs(120);

/// The account as kept in [`crate::tls::Identity`] and synchronized: the
/// directory it belongs to and instant-acme's credentials (its key).
#[derive(Serialize, Deserialize)]
struct Stored {
    directory: String,
    credentials: instant_acme::AccountCredentials,
}

fn step(what: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |e| AcmeError::Server {
        step: what,
        problem: e.to_string(),
        rate_limited: matches!(&e, instant_acme::Error::Api(p)
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")),
    }
}

impl Acme {
    /// The deployment's account on this directory, created (and kept in
    /// the identity, so it moves with the certificate) when there is none.
    pub(super) async fn account(&self, ca: &Ca) -> Result<Account, AcmeError> {
        let builder = || Account::builder_with_http(Box::new(ca.http.clone()));
        if let Some(stored) = self.identity.account()
            && let Ok(stored) = serde_json::from_str::<Stored>(&stored)
            && stored.directory == ca.directory
        {
            return builder()
                .from_credentials(stored.credentials)
                .await
                .map_err(step("loading the account"));
        }
        log_terms(ca).await;
        let contact = ca.contact.as_ref().map(|c| format!("mailto:{c}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                ca.directory.clone(),
                None,
            )
            .await
            .map_err(step("creating an account"))?;
        let stored = serde_json::to_string(&Stored {
            directory: ca.directory.clone(),
            credentials,
        })
        .map_err(|e| AcmeError::Local(format!("cannot keep the account: {e}")))?;
        tracing::info!(id = account.id(), "ACME account created");
        self.identity.set_account(Some(stored));
        Ok(account)
    }

    /// Orders a certificate for `--fqdn` and serves it once issued.
    pub(super) async fn issue(&self, ca: &Ca) -> Result<(), AcmeError> {
        let account = self.account(ca).await?;
        let fqdn = &self.fqdn;
        tracing::info!(%fqdn, directory = %ca.directory, "ordering a certificate");
        let identifiers = [Identifier::Dns(fqdn.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(step("opening an order"))?;
        let validated = self.validate(&mut order).await;
        self.identity.close_challenges();
        validated?;
        let (csr, key) = tls::request_for(fqdn)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(step("sending the certificate request"))?;
        let pem = order
            .poll_certificate(&RetryPolicy::new().timeout(ISSUANCE))
            .await
            .map_err(step("waiting for the certificate"))?;
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AcmeError::Local(format!("the CA's certificate chain: {e}")))?;
        self.identity.replace(chain, key, "acme")?;
        Ok(())
    }

    /// Answers every pending authorization's TLS-ALPN-01 challenge and
    /// waits for the CA to validate them.
    async fn validate(&self, order: &mut Order) -> Result<(), AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(step("reading an authorization"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Refused(format!(
                        "the authorization for {} is {status:?}",
                        authorization.identifier()
                    )));
                }
            }
            let name = match authorization.identifier().identifier {
                Identifier::Dns(name) => name.clone(),
                other => {
                    return Err(AcmeError::Refused(format!(
                        "the CA asks to validate {other:?}, not a DNS name"
                    )));
                }
            };
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| {
                    AcmeError::Refused(format!(
                        "the CA offers no tls-alpn-01 challenge for {name}; Nacre answers only that one"
                    ))
                })?;
            let digest: [u8; 32] = challenge
                .key_authorization()
                .digest()
                .as_ref()
                .try_into()
                .map_err(|_| {
                    AcmeError::Local("a key authorization digest is not 32 bytes".into())
                })?;
            let pair: Pair = tls::challenge_pair(&name, &digest)?;
            self.identity.open_challenge(&name, pair)?;
            // The CA may reach any enclave behind the load balancer.
            if let Some(sync) = &self.sync {
                sync.spread().await;
            }
            challenge
                .set_ready()
                .await
                .map_err(step("answering a challenge"))?;
        }
        let polled = order
            .poll_ready(&RetryPolicy::new().timeout(VALIDATION))
            .await;
        match polled {
            Ok(OrderStatus::Ready) => Ok(()),
            Ok(status) => Err(self.why_invalid(order, format!("{status:?}")).await),
            Err(e) => Err(self.why_invalid(order, e.to_string()).await),
        }
    }

    /// The CA's own words on a failed validation.
    async fn why_invalid(&self, order: &mut Order, status: String) -> AcmeError {
        let mut details = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authorization)) = authorizations.next().await {
            let Ok(state) = authorization.refresh().await else {
                continue;
            };
            details.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref())
                    .map(ToString::to_string),
            );
        }
        AcmeError::Validation {
            fqdn: self.fqdn.clone(),
            detail: if details.is_empty() {
                status
            } else {
                details.join("; ")
            },
        }
    }
}

/// The CA's terms, which `--acme-directory` agrees to, in the log.
async fn log_terms(ca: &Ca) {
    let url = ca.directory.clone();
    let terms = async {
        let request = http::Request::get(url.as_str())
            .body(instant_acme::BodyWrapper::default())
            .ok()?;
        let mut response = instant_acme::HttpClient::request(&ca.http, request)
            .await
            .ok()?;
        let body = response.body.into_bytes().await.ok()?;
        let directory: serde_json::Value = serde_json::from_slice(&body).ok()?;
        directory["meta"]["termsOfService"]
            .as_str()
            .map(str::to_string)
    };
    match terms.await {
        Some(terms) => tracing::info!(
            %terms,
            "--acme-directory {url}: creating an account, agreeing to the CA's terms of service"
        ),
        None => tracing::info!(
            "--acme-directory {url}: creating an account (the directory names no terms of service)"
        ),
    }
}
