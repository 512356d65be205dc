//! The stand-in's KMS keys: one per configured ARN, each with 256 bits of
//! material made at first start and kept in the state directory, so
//! ciphertext blobs stay decryptable across restarts (`nacre dev` keeps its
//! deployment across them).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::StandInError;
use crate::policy::Policy;

/// Bytes of key material (AES-256).
pub const KEY_BYTES: usize = 32;

/// A key ARN, checked to have the form `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyArn {
    arn: String,
    id_at: usize,
}

impl KeyArn {
    /// Parses and checks a key ARN.
    pub fn parse(arn: &str) -> Result<KeyArn, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(format!(
                "{arn:?} is not a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
            ));
        };
        let id = resource.strip_prefix("key/").unwrap_or_default();
        let ok = *prefix == "arn"
            && partition.starts_with("aws")
            && *service == "kms"
            && !region.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!(
                "{arn:?} is not a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
            ));
        }
        Ok(KeyArn {
            arn: arn.to_string(),
            id_at: arn.len() - id.len(),
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The key id (the UUID after `key/`).
    pub fn id(&self) -> &str {
        &self.arn[self.id_at..]
    }

    /// The file name of this key's material: the ARN with `:` and `/`
    /// made safe, so two ARNs never share a file.
    fn file_name(&self) -> String {
        let safe: String = self
            .arn
            .chars()
            .map(|c| if c == ':' || c == '/' { '_' } else { c })
            .collect();
        format!("{safe}.key")
    }
}

/// 256 bits of key material. No `Debug`, wiped on drop.
pub struct KeyMaterial(Zeroizing<[u8; KEY_BYTES]>);

impl KeyMaterial {
    /// The raw bytes, for the cipher.
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// Fixed material for unit tests elsewhere in the crate.
#[cfg(test)]
pub fn test_material(seed: u8) -> KeyMaterial {
    KeyMaterial(Zeroizing::new([seed; KEY_BYTES]))
}

/// One configured key: its ARN, policy and material.
pub struct Key {
    /// The key's ARN.
    pub arn: KeyArn,
    /// Its key policy.
    pub policy: Policy,
    /// Its material.
    pub material: KeyMaterial,
}

/// Every configured key, found by ARN or by bare key id.
pub struct KeyStore {
    keys: BTreeMap<String, Key>,
}

impl KeyStore {
    /// Opens (or makes) the material of each key under `dir`.
    pub fn open(dir: &Path, keys: Vec<(KeyArn, Policy)>) -> Result<KeyStore, StandInError> {
        make_private_dir(dir)?;
        let mut out = BTreeMap::new();
        for (arn, policy) in keys {
            if out.contains_key(arn.id()) {
                // A bare key id in a request must name one key.
                return Err(StandInError::Config(format!(
                    "key id {} is configured twice",
                    arn.id()
                )));
            }
            let material = load_or_make(&dir.join(arn.file_name()))?;
            let id = arn.id().to_string();
            out.insert(
                id,
                Key {
                    arn,
                    policy,
                    material,
                },
            );
        }
        Ok(KeyStore { keys: out })
    }

    /// The key a request's `KeyId` names: its ARN or its bare id. Aliases
    /// are not supported (KMS would resolve them; the stand-in has none).
    pub fn find(&self, key_id: &str) -> Option<&Key> {
        if key_id.starts_with("arn:") {
            let arn = KeyArn::parse(key_id).ok()?;
            self.keys.get(arn.id()).filter(|k| k.arn == arn)
        } else {
            self.keys.get(key_id)
        }
    }

    /// The ARNs of every key, for the start-up log.
    pub fn arns(&self) -> impl Iterator<Item = &str> {
        self.keys.values().map(|k| k.arn.as_str())
    }
}

/// Creates `dir` (and parents) readable by its owner only.
pub fn make_private_dir(dir: &Path) -> Result<(), StandInError> {
    std::fs::create_dir_all(dir).map_err(StandInError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(StandInError::io(dir))
}

fn load_or_make(path: &PathBuf) -> Result<KeyMaterial, StandInError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let material: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                StandInError::Config(format!(
                    "{}: key material is {} bytes, not {KEY_BYTES}; \
                     remove it to make a new key (its blobs are then lost)",
                    path.display(),
                    bytes.len()
                ))
            })?;
            Ok(KeyMaterial(Zeroizing::new(material)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut material = Zeroizing::new([0u8; KEY_BYTES]);
            SystemRandom::new()
                .fill(material.as_mut())
                .map_err(|_| StandInError::Config("no random numbers for key material".into()))?;
            write_private(path, material.as_ref())?;
            Ok(KeyMaterial(material))
        }
        Err(e) => Err(StandInError::io(path)(e)),
    }
}

/// Writes a new file readable by its owner only (0600); never replaces
/// one, so two stand-ins starting at once cannot swap a key under a blob.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StandInError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(StandInError::io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(StandInError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nacre-kms-dev-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn any_policy() -> Policy {
        Policy::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        )
        .expect("policy")
    }

    #[test]
    fn arns_parse_and_bad_ones_are_refused() {
        let arn = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/0a1b-2c").expect("arn");
        assert_eq!(arn.id(), "0a1b-2c");
        for bad in [
            "",
            "arn:aws:kms:eu-west-1:111122223333:alias/x",
            "arn:aws:s3:eu-west-1:111122223333:key/x",
            "arn:aws:kms:eu-west-1:1111:key/x",
            "arn:aws:kms::111122223333:key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "arn:aws:kms:eu-west-1:111122223333:key/a/b",
        ] {
            assert!(KeyArn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn material_survives_a_restart_and_is_private() {
        let dir = temp("keys");
        let arn = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/k1").expect("arn");
        let a = KeyStore::open(&dir, vec![(arn.clone(), any_policy())]).expect("open");
        let b = KeyStore::open(&dir, vec![(arn.clone(), any_policy())]).expect("reopen");
        let ka = a.find("k1").expect("by id");
        let kb = b.find(arn.as_str()).expect("by arn");
        assert_eq!(ka.material.bytes(), kb.material.bytes());
        assert!(
            a.find("arn:aws:kms:eu-west-1:999999999999:key/k1")
                .is_none()
        );
        assert!(a.find("k2").is_none());
        let file = dir.join(arn.file_name());
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A damaged file is reported, not replaced.
        std::fs::write(&file, b"short").expect("write");
        assert!(KeyStore::open(&dir, vec![(arn, any_policy())]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_id_twice_is_refused() {
        let dir = temp("dup");
        let a = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/same").expect("arn");
        let b = KeyArn::parse("arn:aws:kms:us-east-1:111122223333:key/same").expect("arn");
        assert!(KeyStore::open(&dir, vec![(a, any_policy()), (b, any_policy())]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
