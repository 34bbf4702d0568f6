//! The `[store]` config section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use qroute_core::store::Retention;

/// Where the experience store lives and when a write counts as durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the experience store; created when missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// `postgres://user@host:port/db?schema=name`: keep the experience log
    /// (and the policy registry) in PostgreSQL, shared by every replica,
    /// instead of the sled store at `path`. Absent (the default): sled,
    /// which needs no service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `true` (the default): a response waits until its decision record is
    /// durable (the sync overlaps the upstream call, so it only shows when
    /// the upstream answers faster than a disk sync). `false`: records are
    /// queued and durable within one group commit after the response, and
    /// a crash in that window can lose them.
    #[serde(default = "yes")]
    pub durable_ack: bool,
    /// `[store.retention]`: how much experience to keep. Absent (the
    /// default): everything is kept and the store grows by each decision's
    /// size (about 1.5–2 KB) for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
}

/// `[store.retention]`: experiences past either limit are removed, oldest
/// first, in whole data segments (so somewhat more than the limits is kept;
/// see the crate docs). Reports built on the store say what was removed.
///
/// ```toml
/// [store.retention]
/// max_age_s = 86400
/// max_experiences = 1000000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Remove experiences whose decision is older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    /// Keep (at least) the newest this many experiences; remove older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_experiences: Option<u64>,
    /// Keep (at least) the newest experiences up to this many bytes of
    /// decision data (outcomes and indexes come on top); remove older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl RetentionConfig {
    /// Checks that at least one limit is set and every limit set is positive;
    /// the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_age_s.is_none() && self.max_experiences.is_none() && self.max_bytes.is_none() {
            return Err("store.retention: set max_age_s, max_experiences and/or max_bytes".into());
        }
        for (field, value) in [
            ("max_age_s", self.max_age_s),
            ("max_experiences", self.max_experiences),
            ("max_bytes", self.max_bytes),
        ] {
            if value == Some(0) {
                return Err(format!("store.retention.{field}: must be positive"));
            }
        }
        Ok(())
    }

    /// The limits as the store applies them.
    pub fn retention(&self) -> Retention {
        Retention {
            max_age_ms: self.max_age_s.map(|s| s.saturating_mul(1000)),
            max_experiences: self.max_experiences,
            max_bytes: self.max_bytes,
        }
    }
}

impl StoreConfig {
    /// Checks the section (its retention limits); the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            crate::pg::PgUrl::parse(url).map_err(|e| match e {
                qroute_core::Error::InvalidInput(m) => m.replacen("store url", "store.url", 1),
                other => other.to_string(),
            })?;
        }
        self.retention.as_ref().map_or(Ok(()), RetentionConfig::validate)
    }

    /// Where the store is, for messages: the URL (without credentials) or
    /// the directory.
    pub fn location(&self) -> String {
        match &self.url {
            Some(url) => crate::pg::PgUrl::parse(url).map_or_else(|_| "postgres".into(), |u| u.to_string()),
            None => self.path.display().to_string(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_store_path() -> PathBuf {
    PathBuf::from("qroute-data/store")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            url: None,
            durable_ack: true,
            retention: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // serde_json stands in for TOML here: the same serde attributes decide
    // what `[store]` / `[store.retention]` accept.
    fn parse(json: &str) -> Result<StoreConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn existing_keys_still_work_and_retention_defaults_to_none() {
        let c = parse(r#"{"path": "x", "durable_ack": false}"#).unwrap();
        assert_eq!(c.path, PathBuf::from("x"));
        assert!(!c.durable_ack);
        assert_eq!(c.retention, None);
        assert!(c.validate().is_ok());
        assert_eq!(parse("{}").unwrap().retention, None);
        assert!(StoreConfig::default().retention.is_none());
    }

    #[test]
    fn retention_parses_and_converts() {
        let c = parse(r#"{"retention": {"max_age_s": 86400, "max_experiences": 1000000}}"#).unwrap();
        let r = c.retention.clone().unwrap();
        assert_eq!(r.max_age_s, Some(86_400));
        assert_eq!(r.max_experiences, Some(1_000_000));
        assert!(c.validate().is_ok());
        assert_eq!(
            r.retention(),
            Retention {
                max_age_ms: Some(86_400_000),
                max_experiences: Some(1_000_000),
                max_bytes: None,
            }
        );
        let only_bytes = parse(r#"{"retention": {"max_bytes": 1000}}"#).unwrap();
        assert!(only_bytes.validate().is_ok());
    }

    #[test]
    fn bad_retention_is_refused_naming_the_field() {
        let err = parse(r#"{"retention": {"max_days": 3}}"#).unwrap_err();
        assert!(err.contains("max_days"), "{err}");
        let empty = parse(r#"{"retention": {}}"#).unwrap();
        let err = empty.validate().unwrap_err();
        assert!(err.starts_with("store.retention"), "{err}");
        let zero = parse(r#"{"retention": {"max_age_s": 10, "max_experiences": 0}}"#).unwrap();
        let err = zero.validate().unwrap_err();
        assert!(err.contains("store.retention.max_experiences"), "{err}");
    }
}
