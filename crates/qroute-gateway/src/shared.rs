//! Redis, shared by every gateway replica (the `[redis]` section).
//!
//! # What is shared
//!
//! With `[redis] url` set, every replica pointing at the same Redis (and
//! `prefix`) shares:
//! - **per-key rate limits**: `rpm`/`tpm` are checked atomically in Redis
//!   (one Lua GCRA script per request, on Redis's clock), so `rpm: 20`
//!   means 20 a minute across all replicas, with the same burst, the same
//!   `x-ratelimit-*` headers and the same 429s as one process;
//! - **live budget spend**: one counter per key and budget period (integer
//!   nano-dollars, `INCRBY`, expiring after the period), so every replica
//!   refuses a key once the key's total spend reaches its budget. Durable
//!   spend still goes to the experience store, one document per key *and
//!   replica* (see [`crate::access::spend`]);
//! - **the response cache** ([`crate::cache::RedisCache`]): an answer
//!   stored by one replica is a hit on the others.
//!
//! Circuit breakers stay per replica (see [`crate::exec::resilience`]), and
//! so do keys, which every replica reads from the shared experience store
//! (see [`crate::access::Access::authenticate`]).
//!
//! # Redis down
//!
//! Redis only ever saves work or tightens limits; it never refuses a
//! request. Every call is bounded by `timeout_ms`; a call that fails or
//! times out marks Redis down for [`RETRY_AFTER`], during which no call is
//! tried at all, so a hung Redis costs a request at most one timeout. While
//! down, rate limits fall back to each replica's own token buckets (so a
//! key may get up to `rpm` per replica), budgets to the spend this replica
//! last saw plus what it charged since, and the cache answers a miss and
//! drops writes. Each fallback counts in `qroute_redis_fallbacks_total{op}`
//! and logs a warning at most every [`WARN_EVERY`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use qroute_core::{unix_ms, Error, Result};

/// How long Redis is left alone after a failed call.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning about Redis this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The `[redis]` section. Absent: nothing is shared, every replica keeps
/// its limits, spend and cache to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://` where the
    /// client was built with TLS).
    pub url: String,
    /// Every key the gateway writes starts with `PREFIX:`, so several
    /// deployments can share one Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Longest wait for one Redis call (connecting included) before the
    /// request goes on without Redis.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// This replica's name in the spend documents it writes
    /// (`spend/{key_id}/{replica_id}`); default: a random one per start.
    /// Two running replicas must never share one.
    #[serde(default)]
    pub replica_id: Option<String>,
}

fn default_prefix() -> String {
    "qroute".into()
}
fn default_timeout_ms() -> u64 {
    50
}

impl RedisConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let info: std::result::Result<redis::ConnectionInfo, _> =
            redis::IntoConnectionInfo::into_connection_info(self.url.as_str());
        if let Err(e) = info {
            return Err(format!("redis.url: {:?} is not a Redis URL: {e}", self.url));
        }
        let p = &self.prefix;
        if p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_graphic() && c != ':') {
            return Err("redis.prefix: 1 to 64 printable ASCII characters, no spaces or ':'".into());
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err(format!(
                "redis.timeout_ms: must lie in 1..=10000, got {}",
                self.timeout_ms
            ));
        }
        if let Some(id) = &self.replica_id {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err("redis.replica_id: 1 to 64 characters from [A-Za-z0-9._-]".into());
            }
        }
        Ok(())
    }
}

/// A connection to the shared Redis, made on first use and remade after
/// failures, whose calls never wait longer than `timeout_ms`.
pub struct SharedRedis {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    replica_id: String,
    /// Unix ms before which no call is tried (Redis was just down).
    down_until_ms: AtomicU64,
    last_warn_ms: AtomicU64,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("replica_id", &self.replica_id)
            .finish()
    }
}

/// The result of a call that may have gone without Redis.
pub type Shared<T> = Option<T>;

impl SharedRedis {
    /// A handle on the Redis `cfg` names; connects on first use, so a
    /// gateway starts (and serves, on its fallbacks) while Redis is down.
    pub fn open(cfg: &RedisConfig) -> Result<SharedRedis> {
        cfg.validate().map_err(Error::InvalidInput)?;
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| Error::InvalidInput(format!("redis.url: {e}")))?;
        let replica_id = cfg
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("r{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff));
        Ok(SharedRedis {
            client,
            conn: tokio::sync::OnceCell::new(),
            prefix: cfg.prefix.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            replica_id,
            down_until_ms: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
        })
    }

    /// `PREFIX:rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// This replica's id (see [`RedisConfig::replica_id`]).
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Whether calls are being skipped because Redis was just down.
    pub fn is_down(&self) -> bool {
        unix_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(RETRY_AFTER);
                ConnectionManager::new_with_config(self.client.clone(), cfg)
            })
            .await?;
        Ok(conn.clone())
    }

    /// Runs `call` on the connection within the timeout: `Some(answer)`, or
    /// `None` (counted, logged, Redis marked down) when Redis is down, slow
    /// or answers an error. `op` names the call in the metric and the log.
    pub async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Shared<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.is_down() {
            self.fell_back(op, None);
            return None;
        }
        let attempt = async {
            let conn = self.connection().await?;
            call(conn).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(op, "timed out");
                None
            }
        }
    }

    fn failed(&self, op: &'static str, why: &str) {
        self.down_until_ms
            .store(unix_ms() + RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
        self.fell_back(op, Some(why));
    }

    /// Counts a fallback and warns, at most every [`WARN_EVERY`].
    pub fn fell_back(&self, op: &'static str, why: Option<&str>) {
        metrics::counter!("qroute_redis_fallbacks_total", "op" => op).increment(1);
        let now = unix_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                op,
                error = why.unwrap_or("down a moment ago"),
                "redis unavailable: limits, spend and cache fall back to this replica"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c: RedisConfig = toml::from_str("url = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!(
            (c.prefix.as_str(), c.timeout_ms, c.replica_id.as_deref()),
            ("qroute", 50, None)
        );
        assert_eq!(c.validate(), Ok(()));
        assert!(
            toml::from_str::<RedisConfig>("url = \"redis://x\"\ntimeout = 5").is_err(),
            "unknown field"
        );
        for (bad, field) in [
            ("url = \"http://x\"", "redis.url"),
            ("url = \"redis://x\"\nprefix = \"\"", "redis.prefix"),
            ("url = \"redis://x\"\nprefix = \"a:b\"", "redis.prefix"),
            ("url = \"redis://x\"\ntimeout_ms = 0", "redis.timeout_ms"),
            ("url = \"redis://x\"\nreplica_id = \"a b\"", "redis.replica_id"),
        ] {
            let c: RedisConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_falls_back_at_once_and_then_skips() {
        let r = SharedRedis::open(&RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            prefix: "t".into(),
            timeout_ms: 200,
            replica_id: None,
        })
        .unwrap();
        let got: Shared<String> = r
            .run(
                "test",
                |mut c| async move { redis::cmd("PING").query_async(&mut c).await },
            )
            .await;
        assert!(got.is_none());
        assert!(r.is_down(), "a failure marks Redis down");
        assert!(r.replica_id().starts_with('r'));
        assert_eq!(r.key("x"), "t:x");
    }
}
