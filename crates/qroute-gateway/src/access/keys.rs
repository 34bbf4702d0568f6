//! Virtual keys: what `POST /v1/keys` creates. A key's secret is shown once
//! and stored only as its SHA-256 (the secrets are 256 random bits, so a
//! fast hash is enough: there is nothing to brute-force).

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every virtual key's secret.
pub const KEY_PREFIX: &str = "sk-qr-";

/// The period a budget counts over (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    #[default]
    Total,
}

/// `POST /v1/keys`'s body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct NewKey {
    pub name: String,
    /// Only these model ids (absent: every model).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute (a bucket of this many that refills over a minute).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute, counted from the prompt's estimated tokens.
    #[serde(default)]
    pub tpm: Option<u32>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub budget_period: BudgetPeriod,
    /// Unix time in milliseconds after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// May manage keys, experiments, policies and read the store.
    #[serde(default)]
    pub admin: bool,
}

qroute_core::objects_only!(NewKey);

/// A stored key: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// The secret's first characters, to tell keys apart in listings.
    pub preview: String,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_period: BudgetPeriod,
    pub expires_at: Option<u64>,
    pub admin: bool,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
}

impl NewKey {
    /// Checks the body; the message names the field.
    pub fn validate(&self, known_models: &[&str], now_ms: u64) -> Result<(), String> {
        let n = self.name.trim();
        if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
            return Err("name: 1 to 128 printable characters".into());
        }
        if let Some(models) = &self.models {
            if models.is_empty() {
                return Err("models: give at least one model, or leave it out for all".into());
            }
            if let Some(m) = models.iter().find(|m| !known_models.contains(&m.as_str())) {
                return Err(format!("models: no model is named {m:?}"));
            }
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            return Err("rpm, tpm: must be at least 1 (leave out for no limit)".into());
        }
        if self.budget_usd.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
            return Err("budget_usd: must be a finite number >= 0".into());
        }
        if self.expires_at.is_some_and(|t| t <= now_ms) {
            return Err("expires_at: must be in the future (Unix time in milliseconds)".into());
        }
        Ok(())
    }

    /// A new key: its record and its secret (shown once).
    pub fn issue(self, now_ms: u64) -> (KeyRecord, String) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", hex(&bytes));
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let record = KeyRecord {
            id: format!("key_{}", hex(&id)),
            name: self.name.trim().to_string(),
            hash: hash_secret(&secret),
            preview: format!("{}…", &secret[..KEY_PREFIX.len() + 4]),
            models: self.models,
            rpm: self.rpm,
            tpm: self.tpm,
            budget_usd: self.budget_usd,
            budget_period: self.budget_period,
            expires_at: self.expires_at,
            admin: self.admin,
            created_ms: now_ms,
            revoked_ms: None,
        };
        (record, secret)
    }
}

impl KeyRecord {
    /// Whether the key may be used at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_at.is_none_or(|t| now_ms < t)
    }

    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Every key, by secret hash and by id.
#[derive(Default)]
pub struct KeyBook {
    by_hash: HashMap<String, Arc<KeyRecord>>,
    by_id: HashMap<String, Arc<KeyRecord>>,
}

impl KeyBook {
    pub fn insert(&mut self, record: KeyRecord) -> Arc<KeyRecord> {
        let r = Arc::new(record);
        self.by_hash.insert(r.hash.clone(), r.clone());
        self.by_id.insert(r.id.clone(), r.clone());
        r
    }

    pub fn by_hash(&self, hash: &str) -> Option<&Arc<KeyRecord>> {
        self.by_hash.get(hash)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<KeyRecord>> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every key, oldest first.
    pub fn all(&self) -> Vec<Arc<KeyRecord>> {
        let mut v: Vec<_> = self.by_id.values().cloned().collect();
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> NewKey {
        NewKey {
            name: "ci".into(),
            models: None,
            rpm: Some(10),
            tpm: None,
            budget_usd: Some(1.0),
            budget_period: BudgetPeriod::Day,
            expires_at: None,
            admin: false,
        }
    }

    #[test]
    fn a_key_is_stored_as_its_hash_only() {
        let (record, secret) = new_key().issue(1);
        assert!(secret.starts_with(KEY_PREFIX) && secret.len() == KEY_PREFIX.len() + 64);
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(&secret[KEY_PREFIX.len()..]), "{json}");
        assert_eq!(record.hash, hash_secret(&secret));
        let (other, other_secret) = new_key().issue(1);
        assert_ne!((other.id, other_secret), (record.id, secret));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let now = 1_000;
        for (k, field) in [
            (
                NewKey {
                    name: " ".into(),
                    ..new_key()
                },
                "name",
            ),
            (
                NewKey {
                    models: Some(vec![]),
                    ..new_key()
                },
                "models",
            ),
            (
                NewKey {
                    models: Some(vec!["nope".into()]),
                    ..new_key()
                },
                "models",
            ),
            (
                NewKey {
                    rpm: Some(0),
                    ..new_key()
                },
                "rpm",
            ),
            (
                NewKey {
                    budget_usd: Some(f64::NAN),
                    ..new_key()
                },
                "budget_usd",
            ),
            (
                NewKey {
                    expires_at: Some(10),
                    ..new_key()
                },
                "expires_at",
            ),
        ] {
            let e = k.validate(&["m"], now).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
        assert!(new_key().validate(&["m"], now).is_ok());
    }

    #[test]
    fn expiry_and_revocation_end_a_key() {
        let (mut r, _) = NewKey {
            expires_at: Some(100),
            ..new_key()
        }
        .issue(1);
        assert!(r.live(99) && !r.live(100));
        r.expires_at = None;
        r.revoked_ms = Some(5);
        assert!(!r.live(6));
    }
}
