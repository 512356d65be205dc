//! When to renew: what the certificate held says about itself, ARI's
//! window, and the back-off after a failure.

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rand::Rng;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The first retry after the CA refused or could not validate: Let's
/// Encrypt allows five failed validations per account, name and hour, so
/// faster retries only earn a rate limit.
const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
/// The first retry after the CA never answered (the host proxy or the CA
/// still coming up): nothing reached it, so none of its limits was spent,
/// and the self-signed certificate should not serve for long. Caddy's
/// CertMagic retries after a minute.
const FIRST_QUICK_RETRY: Duration = Duration::from_secs(10);
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

    /// When to renew without the CA's advice: `renew_after` past
    /// `not_before`, else at two thirds of the lifetime (Let's Encrypt's
    /// own advice for its 90-day certificates: renew at 60 days). Both
    /// count from the certificate's own start, never from when it reached
    /// this enclave: one received late by key sync, or served since a
    /// restart, is due when the CA's copy says. (A `renew_after` shorter
    /// than the CA's backdating is kept from looping by the wait after a
    /// renewal, [`Backoff::next`].)
    pub fn renew_at(&self, renew_after: Option<Duration>) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        let at = match renew_after {
            Some(after) => self.not_before + after,
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

/// Why an attempt ended without a certificate, as the back-off counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setback {
    /// The CA never answered (see [`FIRST_QUICK_RETRY`]).
    Unanswered,
    /// The CA answered with a problem or could not validate.
    Refused,
    /// The CA said `rateLimited`.
    RateLimited,
    /// The order was given up before it ended (this enclave stopped
    /// leading). The CA may already count it, and a lead that flaps must
    /// not start an order at every turn: it counts as refused.
    Abandoned,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A new certificate is served.
    Renewed,
    /// No certificate, for this reason.
    Failed(Setback),
}

/// The failures since the last certificate and the wait they earn:
/// refusals double from [`FIRST_RETRY`], failures to reach the CA from
/// [`FIRST_QUICK_RETRY`], both up to [`LONGEST_RETRY`].
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// Refused and abandoned attempts since the last certificate.
    refused: u32,
    /// Unanswered attempts in a row.
    unanswered: u32,
}

impl Backoff {
    /// The least wait before the next order after `attempt`. After a
    /// renewal it is `renew_after` (else [`FIRST_RETRY`]): CAs and this
    /// runtime backdate `not_before`, so a setting shorter than that would
    /// find every new certificate due at once.
    pub fn next(&mut self, attempt: Attempt, renew_after: Option<Duration>) -> Duration {
        match attempt {
            Attempt::Renewed => {
                *self = Backoff::default();
                renew_after.unwrap_or(FIRST_RETRY)
            }
            // Never shorter than what the CA's refusals earned: an order
            // cut off by the network may still count at the CA.
            Attempt::Failed(Setback::Unanswered) => {
                self.unanswered = self.unanswered.saturating_add(1);
                doubling(FIRST_QUICK_RETRY, self.unanswered)
                    .max(doubling(FIRST_RETRY, self.refused))
            }
            Attempt::Failed(setback) => {
                self.unanswered = 0;
                self.refused = self.refused.saturating_add(1);
                let wait = doubling(FIRST_RETRY, self.refused);
                if setback == Setback::RateLimited {
                    wait.max(RATE_LIMITED)
                } else {
                    wait
                }
            }
        }
    }
}

/// `first` doubled for every failure after the first of `failures`, up
/// to [`LONGEST_RETRY`]; nothing for none.
fn doubling(first: Duration, failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => first
            .saturating_mul(1 << (n - 1).min(16))
            .min(LONGEST_RETRY),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `app.test` valid from `not_before`
    /// to `not_after`, and its key.
    pub(crate) fn leaf_between(not_before: SystemTime, not_after: SystemTime) -> crate::tls::Pair {
        let mut params = rcgen::CertificateParams::new(vec!["app.test".to_string()]).unwrap();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], der.into())
    }

    const DAY: Duration = Duration::from_secs(86400);

    fn refusals(n: usize) -> Vec<Duration> {
        let mut b = Backoff::default();
        (0..n)
            .map(|_| b.next(Attempt::Failed(Setback::Refused), None))
            .collect()
    }

    #[test]
    fn refusals_double_from_five_minutes_to_six_hours() {
        let mins = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(
            refusals(8),
            [
                mins(5),
                mins(10),
                mins(20),
                mins(40),
                mins(80),
                mins(160),
                mins(320),
                LONGEST_RETRY
            ]
        );
        assert_eq!(refusals(100)[99], LONGEST_RETRY);
        let mut b = Backoff::default();
        assert_eq!(
            b.next(Attempt::Failed(Setback::RateLimited), None),
            RATE_LIMITED
        );
        for _ in 0..30 {
            b.next(Attempt::Failed(Setback::RateLimited), None);
        }
        assert_eq!(
            b.next(Attempt::Failed(Setback::RateLimited), None),
            LONGEST_RETRY
        );
    }

    #[test]
    fn an_unanswered_ca_is_retried_within_seconds_then_less_often() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7)
            .map(|_| b.next(Attempt::Failed(Setback::Unanswered), None).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640]);
        for _ in 0..30 {
            b.next(Attempt::Failed(Setback::Unanswered), None);
        }
        assert_eq!(
            b.next(Attempt::Failed(Setback::Unanswered), None),
            LONGEST_RETRY
        );

        // Once the CA has refused, a network failure waits no less than
        // the refusal earned, and the next refusal waits longer still.
        let mut b = Backoff::default();
        assert_eq!(b.next(Attempt::Failed(Setback::Refused), None), FIRST_RETRY);
        assert_eq!(
            b.next(Attempt::Failed(Setback::Unanswered), None),
            FIRST_RETRY
        );
        assert_eq!(
            b.next(Attempt::Failed(Setback::Refused), None),
            FIRST_RETRY * 2
        );

        // A certificate starts the count again.
        let after = Duration::from_secs(15);
        assert_eq!(b.next(Attempt::Renewed, Some(after)), after);
        assert_eq!(b.next(Attempt::Renewed, None), FIRST_RETRY);
        assert_eq!(
            b.next(Attempt::Failed(Setback::Unanswered), None),
            FIRST_QUICK_RETRY
        );
    }

    /// Orders started within `horizon` by a leader that loses the lead
    /// `lost_after` into every order and gets it back `flap` later, each
    /// order ending as `Setback::Abandoned`.
    fn flapping_orders(lost_after: Duration, flap: Duration, horizon: Duration) -> Vec<Duration> {
        let mut b = Backoff::default();
        let mut orders = Vec::new();
        let mut t = Duration::ZERO;
        while t < horizon {
            orders.push(t);
            let wait = b.next(Attempt::Failed(Setback::Abandoned), None);
            t += lost_after + wait.max(flap);
        }
        orders
    }

    #[test]
    fn a_flapping_lead_orders_a_handful_of_times_an_hour() {
        let hour = Duration::from_secs(3600);
        for flap in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(30),
        ] {
            let orders = flapping_orders(Duration::from_secs(1), flap, 24 * hour);
            // In any hour, at most four: under Let's Encrypt's five failed
            // validations per hour and its five duplicates per week once
            // the waits reach hours.
            for (i, start) in orders.iter().enumerate() {
                let in_hour = orders[i..]
                    .iter()
                    .take_while(|t| **t < *start + hour)
                    .count();
                assert!(
                    in_hour <= 4,
                    "{in_hour} orders in the hour from {start:?} ({flap:?} flaps)"
                );
            }
            assert!(orders.len() <= 10, "{} orders in a day", orders.len());
        }
    }

    #[test]
    fn renewal_counts_from_the_certificates_start_not_its_arrival() {
        // 90 days' life, 40 of them gone when it arrived here.
        let now = SystemTime::now();
        let not_before = now - 40 * DAY;
        let (chain, _) = leaf_between(not_before, not_before + 90 * DAY);
        let leaf = Leaf::parse(&chain[0], "app.test").unwrap();
        let start = leaf.not_before;
        assert!(start.duration_since(not_before).unwrap_or_default() < Duration::from_secs(1));
        // --renew-after 30d: due ten days ago, so now.
        assert_eq!(leaf.renew_at(Some(30 * DAY)), start + 30 * DAY);
        assert!(leaf.renew_at(Some(30 * DAY)) < now);
        // Two thirds of 90 days.
        assert_eq!(leaf.renew_at(None), start + 60 * DAY);
        // Never after the end, whatever the setting says.
        assert_eq!(leaf.renew_at(Some(400 * DAY)), leaf.not_after);
    }

    #[test]
    fn a_self_signed_leaf_is_read_and_renewed_at_two_thirds() {
        let (chain, _) = crate::tls::self_signed_pair("app.test").unwrap();
        let leaf = Leaf::parse(&chain[0], "APP.test").unwrap();
        assert!(leaf.self_issued && leaf.names_fqdn);
        assert!(leaf.ari_id.is_none());
        let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
        let into = leaf.renew_at(None).duration_since(leaf.not_before).unwrap();
        assert!(into >= lifetime * 2 / 3 - Duration::from_secs(1) && into < lifetime);
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
