//! The `[auth]` config section.

use serde::{Deserialize, Serialize};

/// Who may call the gateway. Auth is on when `QROUTE_MASTER_KEY` (or one of
/// `master_key_envs`) is set in the environment; the keys themselves never
/// go in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// More environment variables holding master (admin) keys, besides
    /// `QROUTE_MASTER_KEY`: rotate by adding the new one, then removing the
    /// old.
    #[serde(default)]
    pub master_key_envs: Vec<String>,
    /// Lifetime of a `/v1/auth/login` token, in seconds.
    #[serde(default = "default_token_ttl_s")]
    pub token_ttl_s: u64,
    /// Most virtual keys stored (revoked ones included).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Every this many seconds the keys are reloaded from the store, so a
    /// key revoked on another replica sharing the store is refused here
    /// too within that time; 0: never (a key unknown here is still looked
    /// up in the store on first use, at most once a second).
    #[serde(default = "default_keys_refresh_s")]
    pub keys_refresh_s: u64,
}

fn default_token_ttl_s() -> u64 {
    15 * 60
}
fn default_max_keys() -> usize {
    10_000
}
fn default_keys_refresh_s() -> u64 {
    5
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            master_key_envs: Vec::new(),
            token_ttl_s: default_token_ttl_s(),
            max_keys: default_max_keys(),
            keys_refresh_s: default_keys_refresh_s(),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(60..=7 * 86_400).contains(&self.token_ttl_s) {
            return Err("auth.token_ttl_s: must lie in 60..=604800".into());
        }
        if self.keys_refresh_s > 86_400 {
            return Err("auth.keys_refresh_s: must lie in 0..=86400 (0: never)".into());
        }
        if self.max_keys == 0 {
            return Err("auth.max_keys: must be at least 1".into());
        }
        Ok(())
    }

    /// The master keys the environment holds, `QROUTE_MASTER_KEY` first.
    pub fn master_keys(&self) -> Vec<String> {
        std::iter::once("QROUTE_MASTER_KEY")
            .chain(self.master_key_envs.iter().map(String::as_str))
            .filter_map(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty())
            .collect()
    }
}
