//! `nacre verify`: check an attestation document offline; and the PCR
//! pins every command that attests reads (`--pcr N=HEX`, `--pcrs FILE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use nacre_attestation::{GuestBinding, RuntimeBinding, Verified, Verifier, validity};

/// Verify an attestation document (raw or Base64) and print a JSON summary.
/// Exits 0 only when every check passes; otherwise prints one line naming
/// the failed check and exits 1.
#[derive(Debug, Args)]
pub struct VerifyCmd {
    /// The document: raw COSE_Sign1 bytes or their Base64.
    pub file: PathBuf,
    /// Trust this root (PEM) instead of the AWS Nitro root, e.g. a dev
    /// runtime's DIR/root.pem. Also spelled --attestation-root.
    #[arg(long, visible_alias = "attestation-root", value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Check certificate validity at this time: RFC 3339 or Unix seconds
    /// (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
    /// Require this nonce (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub nonce: Option<Hex>,
    /// Require PCR N to hold HEX (repeatable).
    #[arg(long, value_name = "N=HEX", value_parser = parse_pcr)]
    pub pcr: Vec<(u32, Vec<u8>)>,
    /// Require a guest's document, made by the component with this SHA-256
    /// (hex; `nacre guests` and the manifest list each guest's).
    #[arg(long, value_name = "SHA256", value_parser = parse_hex)]
    pub guest: Option<Hex>,
    /// Require a guest's document whose data is exactly these bytes (hex),
    /// e.g. the SHA-256 of the certificate a `tls=guest` guest served.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub data: Option<Hex>,
}

impl VerifyCmd {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<()> {
        let raw = std::fs::read(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        let bytes = decode_document(raw);
        let mut verifier = verifier_for(self.root.as_deref())?;
        if let Some(at) = self.at {
            verifier = verifier.at(at);
        }
        if let Some(Hex(n)) = self.nonce {
            verifier = verifier.nonce(n);
        }
        for (i, v) in self.pcr {
            verifier = verifier.pcr(i, v);
        }
        let v = match verifier.verify(&bytes) {
            Ok(v) => v,
            Err(e) => bail!("verification failed: {e}"),
        };
        check_guest_binding(&v, self.guest.as_ref(), self.data.as_ref())?;
        println!("{}", serde_json::to_string_pretty(&summary(&v))?);
        Ok(())
    }
}

/// `--guest` and `--data`: the document's user data must be a guest
/// binding naming that code and holding exactly that data.
fn check_guest_binding(
    v: &Verified,
    guest: Option<&Hex>,
    data: Option<&Hex>,
) -> anyhow::Result<()> {
    if guest.is_none() && data.is_none() {
        return Ok(());
    }
    let binding = v
        .document
        .user_data
        .as_deref()
        .and_then(|b| GuestBinding::from_bytes(b).ok())
        .ok_or_else(|| anyhow!("verification failed: --guest/--data need a guest's document, and its user data is not a guest binding"))?;
    if let Some(Hex(want)) = guest
        && binding.guest_sha256.as_slice() != want.as_slice()
    {
        bail!(
            "verification failed: the document was made by guest code {}, not --guest {}",
            hex::encode(binding.guest_sha256),
            hex::encode(want)
        );
    }
    if let Some(Hex(want)) = data
        && binding.data.as_deref() != Some(want.as_slice())
    {
        bail!(
            "verification failed: the guest's data is {}, not --data {}",
            binding
                .data
                .as_deref()
                .map_or("absent".to_string(), hex::encode),
            hex::encode(want)
        );
    }
    Ok(())
}

/// A verifier trusting the attestation root `root` (PEM) when given, else
/// the AWS Nitro root.
pub fn verifier_for(root: Option<&std::path::Path>) -> anyhow::Result<Verifier> {
    let Some(path) = root else {
        return Ok(Verifier::aws());
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("attestation root {}: cannot read", path.display()))?;
    Verifier::with_root_pem(&pem).with_context(|| format!("attestation root {}", path.display()))
}

/// Base64 text (as `/enclave/attestation` serves it) or raw bytes.
pub fn decode_document(raw: Vec<u8>) -> Vec<u8> {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .unwrap_or(raw)
}

/// The JSON summary of a verified document.
pub fn summary(v: &Verified) -> serde_json::Value {
    let d = &v.document;
    let user_data = match d.user_data.as_deref() {
        None => serde_json::Value::Null,
        Some(b) => match (RuntimeBinding::from_bytes(b), GuestBinding::from_bytes(b)) {
            (Ok(r), _) => serde_json::json!({
                "layout": "runtime",
                "tls_certificate_sha256": hex::encode(r.tls_cert_sha256),
                "manifest_sha256": hex::encode(r.manifest_sha256),
            }),
            (_, Ok(g)) => serde_json::json!({
                "layout": "guest",
                "guest_sha256": hex::encode(g.guest_sha256),
                "data": g.data.map(hex::encode),
            }),
            _ => serde_json::json!({ "layout": "raw", "hex": hex::encode(b) }),
        },
    };
    let (nb, na) = validity(&d.certificate).unwrap_or_default();
    serde_json::json!({
        "verified": true,
        "kind": if v.dev { "dev" } else { "nitro" },
        "module_id": d.module_id,
        "timestamp_ms": d.timestamp,
        "digest": d.digest,
        "pcrs": d.pcrs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(hex::encode(v)))).collect::<serde_json::Map<_, _>>(),
        "nonce": d.nonce.as_ref().map(hex::encode),
        "public_key": d.public_key.as_ref().map(hex::encode),
        "user_data": user_data,
        "leaf_valid": { "not_before": nb, "not_after": na },
    })
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is neither Unix seconds nor RFC 3339 ({e}); e.g. 2023-09-28T11:08:27Z")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// Bytes given as hex on the command line (a newtype, so clap reads one
/// value rather than a list of u8).
#[derive(Debug, Clone)]
pub struct Hex(pub Vec<u8>);

fn parse_hex(s: &str) -> Result<Hex, String> {
    hex::decode(s)
        .map(Hex)
        .map_err(|e| format!("{s:?} is not hex: {e}"))
}

/// Parses `N=HEX`.
pub fn parse_pcr(s: &str) -> Result<(u32, Vec<u8>), String> {
    let (n, h) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write N=HEX, e.g. 0=abcd..."))?;
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| *n < 32)
        .ok_or_else(|| format!("{s:?}: PCR index must be 0 to 31"))?;
    Ok((n, parse_hex(h)?.0))
}

/// The PCRs `--pcrs FILE` and `--pcr N=HEX` name together; a PCR named by
/// both must agree.
pub fn gather_pins(
    file: Option<&Path>,
    pcr: &[(u32, Vec<u8>)],
) -> anyhow::Result<BTreeMap<u32, Vec<u8>>> {
    let mut pins = BTreeMap::new();
    if let Some(path) = file {
        pins.extend(read_pcr_file(path)?);
    }
    for (index, value) in pcr {
        if pins.get(index).is_some_and(|v| v != value) {
            bail!(
                "--pcr {index}={} disagrees with PCR{index} in --pcrs {}: pin each PCR once",
                hex::encode(value),
                file.unwrap_or(Path::new("")).display()
            );
        }
        pins.insert(*index, value.clone());
    }
    Ok(pins)
}

/// Reads `--pcrs FILE`.
fn read_pcr_file(path: &Path) -> anyhow::Result<BTreeMap<u32, Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--pcrs {}: cannot read", path.display()))?;
    parse_pcr_json(&text).map_err(|why| anyhow!("--pcrs {}: {why}", path.display()))
}

/// PCRs from JSON: `nitro-cli describe-eif`'s (or `build-enclave`'s)
/// output, whose `Measurements` object holds `PCR0`, `PCR1`..., or a flat
/// object of those keys. Other keys (`HashAlgorithm`, `EifVersion`...) are
/// not PCRs and are skipped; a file with no PCR at all is refused.
pub fn parse_pcr_json(text: &str) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let object = json
        .get("Measurements")
        .unwrap_or(&json)
        .as_object()
        .ok_or("expected a JSON object")?;
    let mut pins = BTreeMap::new();
    for (key, value) in object {
        let Some(index) = key.strip_prefix("PCR") else {
            continue;
        };
        let hex = value
            .as_str()
            .ok_or_else(|| format!("{key}: expected a hex string"))?;
        let (index, value) =
            parse_pcr(&format!("{index}={hex}")).map_err(|e| format!("{key}: {e}"))?;
        pins.insert(index, value);
    }
    if pins.is_empty() {
        return Err(
            r#"no PCRs found: expected {"Measurements": {"PCR0": "HEX", ...}} as nitro-cli describe-eif prints, or {"PCR0": "HEX", ...}"#
                .into(),
        );
    }
    Ok(pins)
}
