//! The admin token goes only to the attested enclave.
//!
//! A CA's certificate proves a name, not an enclave: the enclave's host
//! decides where the name resolves and can get a certificate for it from
//! any CA. The token is static and reusable, so a host that saw it once
//! could deploy its own guest into the real enclave. Every command that
//! sends it (`nacre deploy`, `nacre guests`, `nacre dev`'s own deploys)
//! therefore goes through [`AdminTrust::connect`], which first attests the
//! server on one TLS connection (a document for a fresh nonce, from the
//! pinned root, with the pinned PCRs, binding that connection's
//! certificate) and then sends the token only on connections whose server
//! certificate is exactly the attested one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::attest::attest_once;
use crate::verify::{gather_pins, parse_pcr, verifier_for};
use nacre_cli::client::{TrustArgs, connect_error, pinned_client};

/// How a command that sends the admin token decides the server is the
/// enclave: TLS trust, attestation root and image pins.
#[derive(Debug, Clone, Args)]
pub struct AdminTrust {
    #[command(flatten)]
    pub tls: TrustArgs,

    /// Trust this attestation root (PEM) instead of the AWS Nitro root,
    /// e.g. a dev runtime's DIR/root.pem (what `nacre attest --root`
    /// takes).
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub attestation_root: Option<PathBuf>,

    /// Require PCR N of the enclave to hold HEX (repeatable). At least one
    /// pin (this or --pcrs) is required unless --insecure.
    #[arg(long, value_name = "N=HEX", value_parser = parse_pcr, conflicts_with = "insecure")]
    pub pcr: Vec<(u32, Vec<u8>)>,

    /// Require the PCRs in this JSON file, as `nitro-cli describe-eif`
    /// prints them ({"Measurements": {"PCR0": "HEX", ...}}) or a flat
    /// {"PCR0": "HEX", ...} object.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub pcrs: Option<PathBuf>,
}

/// The admin API of one runtime, reached only on connections that
/// [`AdminTrust::connect`] allowed: the one holder of the token.
pub struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl AdminTrust {
    /// Attests the runtime at `url` (unless `--insecure`) and returns the
    /// admin API on connections pinned to the attested certificate. The
    /// token has not left this process when this fails.
    pub async fn connect(&self, url: &str, token: &str) -> anyhow::Result<Admin> {
        let base = url.trim_end_matches('/').to_string();
        if self.tls.insecure {
            eprintln!(
                "warning: --insecure: not attesting {base}; the admin token goes to whatever answers there. Use it only for a local dev runtime you started yourself."
            );
            let client = self.tls.client()?;
            return Ok(Admin::new(client, base, token));
        }
        let pcrs: Vec<(u32, Vec<u8>)> = self.pins()?.into_iter().collect();
        let verifier = verifier_for(self.attestation_root.as_deref())?;
        let attested = attest_once(&self.tls.client()?, &base, &verifier, &pcrs)
            .await
            .with_context(|| {
                format!(
                    "{base} did not prove to be the pinned enclave; the admin token was not sent"
                )
            })?;
        let client = pinned_client(attested.cert)?;
        Ok(Admin::new(client, base, token))
    }

    /// The PCRs to require, from `--pcrs FILE` and `--pcr`; none at all is
    /// refused, since any image the root signed (a modified runtime
    /// included) would then get the token.
    fn pins(&self) -> anyhow::Result<BTreeMap<u32, Vec<u8>>> {
        let pins = gather_pins(self.pcrs.as_deref(), &self.pcr)?;
        if pins.is_empty() {
            bail!(
                "refusing to send the admin token to a server that has not proved it runs your enclave image: pin the image with --pcr 0=HEX (repeatable) or --pcrs FILE (the JSON `nitro-cli describe-eif` prints); for a local dev runtime you started yourself, --insecure skips attestation"
            );
        }
        Ok(pins)
    }
}

impl Admin {
    fn new(client: reqwest::Client, base: String, token: &str) -> Admin {
        Admin {
            client,
            base,
            token: token.to_string(),
        }
    }

    /// A request for `path` on the runtime, carrying the admin token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request`; a connection failure explained.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        request
            .send()
            .await
            .map_err(|e| connect_error(&self.base, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::parse_pcr_json;

    fn trust(pcr: &[&str], pcrs: Option<PathBuf>, insecure: bool) -> AdminTrust {
        AdminTrust {
            tls: TrustArgs {
                root: None,
                insecure,
            },
            attestation_root: None,
            pcr: pcr.iter().map(|p| parse_pcr(p).unwrap()).collect(),
            pcrs,
        }
    }

    fn file(text: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "nacre-pcrs-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn describe_eif_output_gives_every_pcr_and_skips_the_rest() {
        let text = r#"{
            "EifVersion": 4,
            "Measurements": {
                "HashAlgorithm": "Sha384 { ... }",
                "PCR0": "aa01", "PCR1": "BB02", "PCR2": "cc03", "PCR8": "dd04"
            },
            "IsSigned": true
        }"#;
        let pins = parse_pcr_json(text).unwrap();
        let expected: BTreeMap<u32, Vec<u8>> = [
            (0, vec![0xaa, 1]),
            (1, vec![0xbb, 2]),
            (2, vec![0xcc, 3]),
            (8, vec![0xdd, 4]),
        ]
        .into();
        assert_eq!(pins, expected);
    }

    #[test]
    fn a_flat_object_works_too() {
        let pins = parse_pcr_json(r#"{"PCR0": "00ff"}"#).unwrap();
        assert_eq!(pins, BTreeMap::from([(0, vec![0, 0xff])]));
    }

    #[test]
    fn bad_pcr_files_are_refused_naming_the_problem() {
        for (text, needle) in [
            ("not json", "not JSON"),
            ("[1, 2]", "expected a JSON object"),
            (
                r#"{"Measurements": {"HashAlgorithm": "x"}}"#,
                "no PCRs found",
            ),
            (r#"{"PCR0": 5}"#, "PCR0: expected a hex string"),
            (r#"{"PCR0": "xyz"}"#, "not hex"),
            (r#"{"PCR32": "00"}"#, "0 to 31"),
            (r#"{"PCRx": "00"}"#, "0 to 31"),
        ] {
            let err = parse_pcr_json(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn without_a_pin_the_token_is_refused_naming_the_fix() {
        let err = trust(&[], None, false).pins().unwrap_err().to_string();
        for fix in ["--pcr 0=HEX", "--pcrs FILE", "--insecure"] {
            assert!(err.contains(fix), "{err}");
        }
    }

    #[tokio::test]
    async fn without_a_pin_nothing_is_sent() {
        // Port 9 on loopback (discard) would refuse anyway; the point is
        // that the error is the pin rule, decided before any connection.
        let err = trust(&[], None, false)
            .connect("https://127.0.0.1:9", "secret")
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("refusing to send the admin token"), "{err}");
    }

    #[test]
    fn pins_merge_the_file_and_the_flags_and_catch_disagreement() {
        let path = file(r#"{"Measurements": {"PCR0": "aa", "PCR1": "bb"}}"#);
        let pins = trust(&["8=cc", "0=aa"], Some(path.clone()), false)
            .pins()
            .unwrap();
        assert_eq!(
            pins,
            BTreeMap::from([(0, vec![0xaa]), (1, vec![0xbb]), (8, vec![0xcc])])
        );
        let err = trust(&["1=00"], Some(path.clone()), false)
            .pins()
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("PCR1") && err.contains("disagrees"), "{err}");
        let err = trust(&[], Some(PathBuf::from("/nonexistent/pcrs.json")), false)
            .pins()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--pcrs /nonexistent/pcrs.json"), "{err}");
    }
}
