//! `--kms-key`, `--kms-region` and `--kms-endpoint`, checked together.

use nacre_kms::call::Endpoint;
use nacre_transport::Address;

use super::{SettingsError, invalid};
use crate::config::Config;

/// The sealed deployment's flags.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// `--kms-key`: the key's ARN.
    pub key: String,
    /// KMS's endpoint and region.
    pub endpoint: Endpoint,
    /// `--control`: the host proxy keeps the snapshots and gives the
    /// credentials.
    pub control: Address,
    /// `--egress`: KMS is reached through it.
    pub egress: Address,
    /// `--kms-ca`: the roots KMS is trusted on instead of Amazon's.
    pub ca: Option<std::path::PathBuf>,
}

/// The region a KMS key ARN names: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`.
fn arn_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", region, account, resource]
            if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("key/")
                    .is_some_and(|id| !id.is_empty()) =>
        {
            Some(region)
        }
        _ => None,
    }
}

/// The KMS flags: a key ARN, reached through `--egress`, with the store
/// and credentials on `--control`.
pub(super) fn kms_settings(config: &Config) -> Result<Option<KmsSettings>, SettingsError> {
    let Some(key) = &config.kms_key else {
        return Ok(None);
    };
    let arn_region = arn_region(key).ok_or_else(|| {
        invalid(format!(
            "--kms-key {key}: give the key's ARN, arn:aws:kms:REGION:ACCOUNT:key/ID (an alias cannot carry the key policy that names this image)"
        ))
    })?;
    let control = config.control.clone().ok_or_else(|| {
        invalid("--kms-key needs --control ADDR: the host proxy keeps the sealed snapshots (nacre-host-proxy --store) and gives AWS credentials over it")
    })?;
    let egress = config.egress.clone().ok_or_else(|| {
        invalid(
            "--kms-key needs --egress ADDR: the enclave reaches KMS itself, through the host proxy, with TLS inside the enclave",
        )
    })?;
    let region = config.kms_region.as_deref().unwrap_or(arn_region);
    let endpoint = match &config.kms_endpoint {
        Some(url) => Endpoint::custom(url, region)
            .map_err(|e| invalid(format!("--kms-endpoint {url}: {e}")))?,
        None => Endpoint::aws(region),
    };
    Ok(Some(KmsSettings {
        key: key.clone(),
        endpoint,
        control,
        egress,
        ca: config.kms_ca.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arns_are_told_from_other_names() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(
            arn_region("arn:aws-cn:kms:cn-north-1:111122223333:key/x"),
            Some("cn-north-1")
        );
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/nacre",
            "arn:aws:kms:eu-west-1:111122223333:alias/nacre",
            "arn:aws:kms:eu-west-1:1111:key/x",
            "arn:aws:s3:eu-west-1:111122223333:key/x",
            "arn:aws:kms::111122223333:key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/",
        ] {
            assert_eq!(arn_region(bad), None, "{bad}");
        }
    }
}
