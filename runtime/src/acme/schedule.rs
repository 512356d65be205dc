//! When to renew: what the certificate held says about itself, ARI's
//! window, and the back-off after a failure.

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rand::Rng;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The first retry after a failure; Let's Encrypt allows five failed
/// validations per name and hour, so faster retries only earn a rate
/// limit.
const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
/// The longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);
/// The least wait after the CA said `rateLimited`.
const RATE_LIMITED: Duration = Duration::from_secs(3600);

/// What the renewal schedule needs from the leaf served.
#[derive(Debug)]
pub struct Leaf {
    /// Issuer and subject are the same: self-signed, not a CA's.
    pub self_issued: bool,
    /// It names `--fqdn` among its DNS names.
    pub names_fqdn: bool,
    /// Its validity.
    pub not_before: SystemTime,
    /// Its validity.
    pub not_after: SystemTime,
    /// Its ARI identifier (authority key identifier and serial).
    pub ari_id: Option<CertificateIdentifier<'static>>,
}

impl Leaf {
    /// Reads `der`; None when it is not a certificate x509-parser reads.
    pub fn parse(der: &[u8], fqdn: &str) -> Option<Leaf> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = u64::try_from(t.timestamp()).unwrap_or(0);
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        };
        let names_fqdn =
            cert.subject_alternative_name()
                .ok()
                .flatten()
                .is_some_and(|san| {
                    san.value.general_names.iter().any(
                        |n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(fqdn)),
                    )
                });
        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
                _ => None,
            });
        let ari_id = aki.map(|aki| {
            CertificateIdentifier::new(aki.0.into(), cert.tbs_certificate.raw_serial().into())
                .into_owned()
        });
        Some(Leaf {
            self_issued: cert.issuer() == cert.subject(),
            names_fqdn,
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            ari_id,
        })
    }

    /// When to renew without the CA's advice: `renew_after` past the
    /// later of `not_before` and `since` (when it was first served here:
    /// CAs and this runtime backdate `not_before`, which must not make a
    /// short setting renew in a loop), else at two thirds of the lifetime
    /// (Let's Encrypt's own advice for its 90-day certificates: renew at 60
    /// days).
    pub fn renew_at(&self, renew_after: Option<Duration>, since: SystemTime) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        let at = match renew_after {
            Some(after) => self.not_before.max(since) + after,
            None => self.not_before + lifetime * 2 / 3,
        };
        at.min(self.not_after)
    }
}

/// A random time in ARI's window, as RFC 9773 asks, so a fleet of clients
/// does not renew at one instant.
pub fn within(start: SystemTime, end: SystemTime) -> SystemTime {
    let span = end.duration_since(start).unwrap_or(Duration::ZERO);
    if span.is_zero() {
        return start;
    }
    start + span.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
}

/// The wait before retry number `failures` (from 1): doubling from five
/// minutes to six hours, and at least an hour after a rate limit.
pub fn backoff(failures: u32, rate_limited: bool) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let wait = doubled.min(LONGEST_RETRY);
    if rate_limited {
        wait.max(RATE_LIMITED)
    } else {
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_caps_and_respects_rate_limits() {
        assert_eq!(backoff(1, false), Duration::from_secs(300));
        assert_eq!(backoff(2, false), Duration::from_secs(600));
        assert_eq!(backoff(3, false), Duration::from_secs(1200));
        assert_eq!(backoff(30, false), LONGEST_RETRY);
        assert_eq!(backoff(1, true), RATE_LIMITED);
        assert_eq!(backoff(30, true), LONGEST_RETRY);
    }

    #[test]
    fn a_self_signed_leaf_is_read_and_renewed_at_two_thirds() {
        let (chain, _) = crate::tls::self_signed_pair("app.test").unwrap();
        let leaf = Leaf::parse(&chain[0], "APP.test").unwrap();
        assert!(leaf.self_issued && leaf.names_fqdn);
        assert!(leaf.ari_id.is_none());
        let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
        let at = leaf.renew_at(None, SystemTime::now());
        let into = at.duration_since(leaf.not_before).unwrap();
        assert!(into >= lifetime * 2 / 3 - Duration::from_secs(1) && into < lifetime);
        // A setting counts from when the certificate was first served, not
        // from its backdated start, so a new one is never due at once.
        let served = SystemTime::now();
        let soon = leaf.renew_at(Some(Duration::from_secs(5)), served);
        assert_eq!(soon, served + Duration::from_secs(5));
        let long_held = leaf.not_before - Duration::from_secs(60);
        assert_eq!(
            leaf.renew_at(Some(Duration::from_secs(5)), long_held),
            leaf.not_before + Duration::from_secs(5)
        );
        // Never after the end, whatever the setting says.
        assert_eq!(leaf.renew_at(Some(lifetime * 2), served), leaf.not_after);
        assert!(!Leaf::parse(&chain[0], "other.test").unwrap().names_fqdn);
        assert!(Leaf::parse(b"not a certificate", "app.test").is_none());
    }

    #[test]
    fn a_time_in_the_window_is_inside_it() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let end = start + Duration::from_secs(100);
        for _ in 0..100 {
            let t = within(start, end);
            assert!(t >= start && t <= end);
        }
        assert_eq!(within(end, start), end);
    }
}
