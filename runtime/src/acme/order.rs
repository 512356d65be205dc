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

use super::client::unanswered;
use super::{Acme, AcmeError, Ca};
use crate::tls::{self, Identity, Pair};

/// How long the CA has to validate the challenges.
const VALIDATION: Duration = Duration::from_secs(120);
/// How long the CA has to issue once the request is in.
const ISSUANCE: Duration = Duration::from_secs(120);

/// The account as kept in [`crate::tls::Identity`] and synchronized: the
/// directory it belongs to, its URI and instant-acme's credentials (its
/// key).
#[derive(Serialize, Deserialize)]
struct Stored {
    directory: String,
    /// The account's URI, readable without the credentials; absent from
    /// what an older runtime stored.
    #[serde(default)]
    uri: Option<String>,
    credentials: instant_acme::AccountCredentials,
}

/// The URI of the ACME account `identity` holds (what a CAA record's
/// `accounturi` names), never its key; None without an account.
pub fn account_uri(identity: &Identity) -> Option<String> {
    serde_json::from_str::<Stored>(&identity.account()?)
        .ok()?
        .uri
}

/// Adds `uri` to the account `raw` as an older runtime stored it, so
/// `/enclave/config` can show it.
fn keep_uri(identity: &Identity, raw: &str, uri: &str) {
    if let Ok(mut stored) = serde_json::from_str::<serde_json::Value>(raw)
        && let Some(fields) = stored.as_object_mut()
    {
        fields.insert("uri".into(), uri.into());
        identity.set_account(Some(stored.to_string()));
    }
}

/// The error of `what` failing with `e`: unanswered when the CA never
/// answered (the back-off retries those soon), else the CA's.
fn step(what: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |e| {
        if unanswered(&e) {
            return AcmeError::Unanswered {
                step: what,
                problem: e.to_string(),
            };
        }
        AcmeError::Server {
            step: what,
            problem: e.to_string(),
            rate_limited: matches!(&e, instant_acme::Error::Api(p)
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")),
        }
    }
}

impl Acme {
    /// The deployment's account on this directory, created (and kept in
    /// the identity, so it moves with the certificate) when there is none.
    pub(super) async fn account(&self, ca: &Ca) -> Result<Account, AcmeError> {
        let builder = || Account::builder_with_http(Box::new(ca.http.clone()));
        if let Some(raw) = self.identity.account()
            && let Ok(stored) = serde_json::from_str::<Stored>(&raw)
            && stored.directory == ca.directory
        {
            let uri_kept = stored.uri.is_some();
            let account = builder()
                .from_credentials(stored.credentials)
                .await
                .map_err(step("loading the account"))?;
            self.log_account(Some(account.id()), "loaded");
            if !uri_kept {
                keep_uri(&self.identity, &raw, account.id());
            }
            return Ok(account);
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
            uri: Some(account.id().to_string()),
            credentials,
        })
        .map_err(|e| AcmeError::Local(format!("cannot keep the account: {e}")))?;
        // Logged before it is kept, so the keeper does not log it again
        // as received.
        self.log_account(Some(account.id()), "created");
        self.identity.set_account(Some(stored));
        Ok(account)
    }

    /// Orders a certificate for `--fqdn` and serves it once issued.
    pub(super) async fn issue(&self, ca: &Ca) -> Result<(), AcmeError> {
        let account = self.account(ca).await?;
        let fqdn = &self.fqdn;
        tracing::info!(
            %fqdn,
            directory = %ca.directory,
            account = account.id(),
            "ordering a certificate"
        );
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
                sync.clone().spread().await;
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const URI: &str = "https://ca.test/acme/acct/123";

    /// An account as kept in the identity, with `uri` among its fields or
    /// not, and the Base64 of its key.
    fn stored(uri: Option<&str>) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap().serialize_der();
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        let mut v = serde_json::json!({
            "directory": "https://ca.test/dir",
            "credentials": {"id": URI, "key_pkcs8": key, "directory": "https://ca.test/dir"},
        });
        if let Some(uri) = uri {
            v["uri"] = uri.into();
        }
        (v.to_string(), key)
    }

    #[test]
    fn the_account_uri_is_shown_and_never_its_key() {
        let identity = Identity::self_signed("app.test").unwrap();
        assert_eq!(account_uri(&identity), None);
        let (raw, key) = stored(Some(URI));
        identity.set_account(Some(raw));
        let uri = account_uri(&identity).unwrap();
        assert_eq!(uri, URI);
        assert!(!uri.contains(&key));

        // As a runtime that did not keep the URI stored it: filled in
        // once loaded.
        let (raw, key) = stored(None);
        identity.set_account(Some(raw.clone()));
        assert_eq!(account_uri(&identity), None);
        keep_uri(&identity, &raw, URI);
        assert_eq!(account_uri(&identity).as_deref(), Some(URI));
        assert!(identity.account().unwrap().contains(&key));
    }

    #[test]
    fn a_transport_failure_is_unanswered_and_a_problem_is_not() {
        let once = crate::egress::OnceError {
            target: "ca.test:443".into(),
            why: "no answer within 30s".into(),
            unanswered: true,
        };
        let e = instant_acme::Error::Other(Box::new(
            super::super::client::TransportError::Unanswered(once),
        ));
        assert!(matches!(
            step("opening an order")(e),
            AcmeError::Unanswered { .. }
        ));
        let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many",
        }))
        .unwrap();
        let e = step("opening an order")(instant_acme::Error::Api(problem));
        assert_eq!(e.setback(), super::super::Setback::RateLimited);
    }
}
