//! Apps' variable values (secrets among them) sealed at rest: AES-256-GCM
//! under a key derived from `--secrets-key`, bound to the tenant and app
//! they belong to, so a value copied into another app's row does not open.
//!
//! Stored as `{"sealed": "v1:<base64 of nonce ‖ ciphertext>"}` in the
//! `variables` column; a plain map (written before sealing, or by a host
//! without a key) is still read.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const VERSION: &str = "v1:";
const FIELD: &str = "sealed";

/// Seals and opens variable maps.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A sealer whose key derives from `secret` (any length; hashed).
    pub fn new(secret: &str) -> Result<Self> {
        if secret.len() < 16 {
            bail!("--secrets-key must have at least 16 characters");
        }
        let digest = Sha256::digest(format!("trellis variables\0{secret}").as_bytes());
        let key = UnboundKey::new(&AES_256_GCM, &digest)
            .map_err(|_| anyhow!("cannot make an AES-256-GCM key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// The stored form of `variables` of `tenant`'s `app`.
    pub fn seal(
        &self,
        tenant: &str,
        app: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<Value> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| anyhow!("no randomness for a nonce"))?;
        let mut data = serde_json::to_vec(variables)?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, app)),
                &mut data,
            )
            .map_err(|_| anyhow!("sealing failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&data);
        let text = base64::engine::general_purpose::STANDARD.encode(stored);
        Ok(serde_json::json!({ FIELD: format!("{VERSION}{text}") }))
    }

    /// Opens what [`Sealer::seal`] stored for the same tenant and app.
    pub fn open(&self, tenant: &str, app: &str, text: &str) -> Result<BTreeMap<String, String>> {
        let encoded = text
            .strip_prefix(VERSION)
            .context("sealed variables of an unknown version")?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("sealed variables are not base64")?;
        if bytes.len() < NONCE_LEN {
            bail!("sealed variables are cut short");
        }
        let data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes)
            .map_err(|_| anyhow!("sealed variables have a bad nonce"))?;
        let mut data = data;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(tenant, app)), &mut data)
            .map_err(|_| {
                anyhow!("the variables of {tenant}/{app} do not open with this --secrets-key")
            })?;
        serde_json::from_slice(plain).context("sealed variables are not a map")
    }
}

fn aad(tenant: &str, app: &str) -> Vec<u8> {
    format!("{tenant}\0{app}").into_bytes()
}

/// The variables of `tenant`'s `app` from their stored form: sealed (opened
/// with `sealer`) or a plain map.
pub fn read(
    sealer: Option<&Sealer>,
    tenant: &str,
    app: &str,
    stored: Value,
) -> Result<BTreeMap<String, String>> {
    if let Some(sealed) = stored.get(FIELD).and_then(Value::as_str) {
        let Some(sealer) = sealer else {
            bail!(
                "the variables of {tenant}/{app} are sealed: start with the --secrets-key they were sealed with"
            );
        };
        return sealer.open(tenant, app, sealed);
    }
    serde_json::from_value(stored).context("stored variables are not a map of strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([("api_key".to_owned(), "s3cret-value".to_owned())])
    }

    #[test]
    fn sealed_values_open_only_for_their_app_and_key() {
        let sealer = Sealer::new("a-secrets-key-of-some-length").unwrap();
        let stored = sealer.seal("acme", "shop", &vars()).unwrap();
        assert!(!stored.to_string().contains("s3cret"), "{stored}");
        assert_eq!(
            read(Some(&sealer), "acme", "shop", stored.clone()).unwrap(),
            vars()
        );
        // Another app's row, another key, no key: refused, not garbage.
        assert!(read(Some(&sealer), "acme", "blog", stored.clone()).is_err());
        let other = Sealer::new("another-secrets-key-entirely").unwrap();
        assert!(read(Some(&other), "acme", "shop", stored.clone()).is_err());
        let message = read(None, "acme", "shop", stored).unwrap_err().to_string();
        assert!(message.contains("--secrets-key"), "{message}");
    }

    #[test]
    fn plain_maps_written_before_sealing_are_still_read() {
        let stored = serde_json::to_value(vars()).unwrap();
        let sealer = Sealer::new("a-secrets-key-of-some-length").unwrap();
        assert_eq!(
            read(Some(&sealer), "acme", "shop", stored.clone()).unwrap(),
            vars()
        );
        assert_eq!(read(None, "acme", "shop", stored).unwrap(), vars());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = Sealer::new("a-secrets-key-of-some-length").unwrap();
        let a = sealer.seal("acme", "shop", &vars()).unwrap();
        let b = sealer.seal("acme", "shop", &vars()).unwrap();
        assert_ne!(a, b);
    }
}
