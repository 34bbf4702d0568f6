//! The response cache: an answer already paid for is served again to an
//! identical request instead of calling a provider a second time.
//!
//! # What counts as the same request
//!
//! An exact match on the normalised request ([`CacheKey::of`]): the
//! messages, the generation parameters, and where the answer may come from
//! ([`CacheTarget`]: the pinned model or routing, the caller's preference,
//! task type, persona, variations, combine). Nothing is matched by
//! similarity: two prompts that differ by a word can need different
//! answers, and a wrong hit serves a caller an answer to a question they
//! did not ask.
//!
//! Left out of the key:
//! - `user`, the end user's id. It is passed on for the provider's abuse
//!   monitoring and does not change the answer; keyed on it, every end
//!   user of one application would miss the others' entries.
//! - `stream`: it is how the answer is sent, not what it says (a streamed
//!   answer is assembled into the same [`Completion`]).
//!
//! # What is cacheable ([`CacheConfig::cacheable`])
//!
//! By default only requests that set `temperature: 0` explicitly. A request
//! with a higher temperature, or none (providers then sample, at 1 or
//! thereabouts), asks for a *sample*: replaying one stored sample would
//! quietly turn every later answer into a copy of the first. Temperature 0
//! asks for the most likely answer, so one already given is what was asked
//! for. `sampled = true` lifts this, for deployments that prefer cost to
//! variety. A request with `n > 1` asks for several different answers
//! (best-of-n, candidate lists), so it is not cached unless
//! `multiple_choices = true`.
//!
//! # Per-request opt-out ([`CacheMode`])
//!
//! The HTTP layer reads it from the request: `"cache": false` in the body or
//! `Cache-Control: no-store` is [`CacheMode::Bypass`] (neither looked up
//! nor stored); `Cache-Control: no-cache` is [`CacheMode::Refresh`] (not
//! served from the cache, and the fresh answer replaces the entry, which is
//! how a caller gets rid of a bad one); anything else is
//! [`CacheMode::Use`].
//!
//! # Backends
//!
//! Behind [`ResponseCache`]: the in-process [`MemoryCache`], or with
//! `[redis]` the [`RedisCache`] every replica shares. Keys and values
//! are therefore stable outside one process: the key is a SHA-256 digest of
//! canonical JSON, and [`CachedAnswer`] is serialisable.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::exec::providers::{ChatMessage, ChatRequest, Completion, Params};
use crate::shared::SharedRedis;

/// Bumped whenever the canonical form of the key changes meaning, so that a
/// shared cache filled by an older gateway is missed rather than misread.
const KEY_VERSION: u32 = 2;

/// The longest `ttl_s` accepted: a year. Older answers come from model
/// versions long replaced, and moka refuses (panics on) TTLs past 1000
/// years.
pub const MAX_TTL_S: u64 = 365 * 24 * 3600;

/// The `[cache]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// On by default: only deterministic requests are cached (see
    /// `sampled`), so a hit returns what a provider call would have.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most answers kept in memory; the least useful go first.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Seconds an answer is served after it was stored.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// Also cache requests that sample (temperature unset or above 0):
    /// every identical request then gets the first sample.
    #[serde(default)]
    pub sampled: bool,
    /// Also cache requests that ask for several choices (`n > 1`).
    #[serde(default)]
    pub multiple_choices: bool,
}

fn yes() -> bool {
    true
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_ttl_s() -> u64 {
    3_600
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_entries: default_max_entries(),
            ttl_s: default_ttl_s(),
            sampled: false,
            multiple_choices: false,
        }
    }
}

impl CacheConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_entries == 0 {
            return Err("cache.max_entries: must be at least 1 (set enabled = false to turn the cache off)".into());
        }
        if self.ttl_s == 0 {
            return Err("cache.ttl_s: must be at least 1".into());
        }
        if self.ttl_s > MAX_TTL_S {
            return Err(format!("cache.ttl_s: must be at most {MAX_TTL_S} (a year)"));
        }
        Ok(())
    }

    /// Whether answers to `chat` may be stored and served again: see the
    /// module docs for why only explicit temperature 0 by default.
    pub fn cacheable(&self, chat: &ChatRequest) -> bool {
        let deterministic = chat.params.temperature == Some(0.0);
        let one_choice = chat.params.n.is_none_or(|n| n <= 1);
        self.enabled && (deterministic || self.sampled) && (one_choice || self.multiple_choices)
    }

    /// How long an entry is served: `ttl_s`, kept within what moka accepts
    /// even when [`CacheConfig::validate`] was not called.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s.clamp(1, MAX_TTL_S))
    }
}

/// What one request lets the cache do, from its opt-out (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Served from the cache on a hit; a fresh answer is stored.
    #[default]
    Use,
    /// Never served from the cache; the fresh answer replaces the entry.
    Refresh,
    /// The cache is neither read nor written.
    Bypass,
}

impl CacheMode {
    /// Whether a stored answer may be served.
    pub fn reads(self) -> bool {
        self == CacheMode::Use
    }

    /// Whether the fresh answer may be stored.
    pub fn writes(self) -> bool {
        self != CacheMode::Bypass
    }
}

/// Where the answer may come from, as the engine resolved it: two requests
/// with the same messages but different targets can get different models,
/// so different answers. The engine fills it from its routing request (this
/// module does not know that type: the engine uses the cache, not the
/// reverse).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheTarget {
    /// The model the caller pinned; `None` when routing (`auto`).
    pub model: Option<String>,
    pub cost_weight: Option<f32>,
    pub latency_weight: Option<f32>,
    pub max_cost_usd: Option<f64>,
    /// Only these model ids; order and repeats do not matter (the key
    /// sorts and dedups them).
    pub models: Option<Vec<String>>,
    pub task_type: Option<String>,
    pub persona: Option<String>,
    /// Models run in parallel; `None` for the configured default.
    pub variations: Option<usize>,
    /// Whether the variations' answers are merged.
    pub combine: bool,
    /// Whether the request asked for a cascade (or not) explicitly; left
    /// out of the key when it did not, so older keys stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    /// The caller's API key id (`None` without auth). Entries are shared
    /// within one key only, so that no caller can learn, from an answer or
    /// its speed, what another tenant asked.
    pub key: Option<String>,
}

impl CacheTarget {
    /// The same target with the allowed models in a canonical order, so
    /// `["b","a","a"]` and `["a","b"]` share entries.
    fn normalised(&self) -> CacheTarget {
        let mut target = self.clone();
        if let Some(models) = &mut target.models {
            models.sort_unstable();
            models.dedup();
        }
        target
    }
}

/// Everything hashed into a key, in one serialisable value.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    version: u32,
    messages: &'a [ChatMessage],
    params: Params,
    target: CacheTarget,
}

/// A cache key: the SHA-256 of the canonical JSON of the request (64 hex
/// digits). SHA-256 rather than `std`'s hashers because the key must be the
/// same in every process and every build (a shared backend serves several
/// gateways), which `DefaultHasher` does not promise; because a collision
/// would serve one caller another's answer; and because a digest keeps the
/// prompt's text out of the backend's key space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of `chat` sent to `target`. `None` when the request cannot
    /// be put in canonical JSON (never for the types as they are; a
    /// request without a key is simply not cached, where a fallback key
    /// could collide).
    pub fn of(chat: &ChatRequest, target: &CacheTarget) -> Option<CacheKey> {
        let material = KeyMaterial {
            version: KEY_VERSION,
            messages: &chat.messages,
            params: Params {
                user: None,
                ..chat.params.clone()
            },
            target: target.normalised(),
        };
        let value = serde_json::to_value(&material).ok()?;
        let bytes = serde_json::to_vec(&canonical(value)).ok()?;
        Some(CacheKey(format!("{:x}", Sha256::digest(&bytes))))
    }

    /// The hex digest, for a backend that keys on strings.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value` with every object's keys in sorted order, whatever order the
/// client wrote them in (tool schemas, `tool_choice`) and whether or not
/// serde_json preserves insertion order in this build.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// A stored answer: what the engine needs to serve it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The model that gave it.
    pub model: String,
    pub completion: Completion,
    /// Unix ms when it was stored, to report its age.
    pub created_ms: u64,
}

impl CachedAnswer {
    /// An answer stored now.
    pub fn now(model: impl Into<String>, completion: Completion) -> CachedAnswer {
        CachedAnswer {
            model: model.into(),
            completion,
            created_ms: qroute_core::unix_ms(),
        }
    }
}

/// A response cache backend. Futures are boxed so the trait is object safe
/// and a network backend can await inside; a backend that fails (a
/// connection down) answers a miss and drops the write: the cache only
/// saves calls, it must never fail a request.
pub trait ResponseCache: Send + Sync {
    /// The answer stored under `key`, if any and not expired.
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Arc<CachedAnswer>>>;

    /// Stores `answer` under `key`, replacing any entry.
    fn put(&self, key: CacheKey, answer: Arc<CachedAnswer>) -> BoxFuture<'_, ()>;
}

/// The cache `cfg` asks for, or `None` when it is off.
pub fn build(cfg: &CacheConfig) -> Option<Arc<dyn ResponseCache>> {
    build_shared(cfg, None)
}

/// [`build`], in Redis ([`RedisCache`], shared by every replica) when
/// `redis` is given.
pub fn build_shared(cfg: &CacheConfig, redis: Option<Arc<SharedRedis>>) -> Option<Arc<dyn ResponseCache>> {
    if !cfg.enabled {
        return None;
    }
    Some(match redis {
        Some(redis) => Arc::new(RedisCache::new(redis, cfg)),
        None => Arc::new(MemoryCache::new(cfg)),
    })
}

/// A cache in the shared Redis: an answer stored by one replica is a hit
/// on every other. Each entry is `PREFIX:cache:{CacheKey}` holding the
/// [`CachedAnswer`] as JSON, set with `EX ttl_s`; Redis's own memory policy
/// bounds it (`max_entries` does not apply). While Redis is down or slow,
/// a lookup is a miss and a write is dropped ([`crate::shared`]).
pub struct RedisCache {
    redis: Arc<SharedRedis>,
    ttl_s: u64,
}

impl RedisCache {
    pub fn new(redis: Arc<SharedRedis>, cfg: &CacheConfig) -> RedisCache {
        RedisCache {
            redis,
            ttl_s: cfg.ttl().as_secs(),
        }
    }

    fn entry(&self, key: &CacheKey) -> String {
        self.redis.key(&format!("cache:{}", key.as_str()))
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("redis", &self.redis)
            .field("ttl_s", &self.ttl_s)
            .finish()
    }
}

impl ResponseCache for RedisCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Arc<CachedAnswer>>> {
        Box::pin(async move {
            let entry = self.entry(key);
            let raw: Option<Vec<u8>> = self
                .redis
                .run("cache_get", |mut conn| async move {
                    redis::cmd("GET").arg(&entry).query_async(&mut conn).await
                })
                .await
                .flatten();
            // An entry that no longer reads (another version wrote it) is a miss.
            serde_json::from_slice::<CachedAnswer>(&raw?).ok().map(Arc::new)
        })
    }

    fn put(&self, key: CacheKey, answer: Arc<CachedAnswer>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(json) = serde_json::to_vec(&*answer) else { return };
            let entry = self.entry(&key);
            let ttl = self.ttl_s;
            let _: Option<()> = self
                .redis
                .run("cache_put", |mut conn| async move {
                    redis::cmd("SET")
                        .arg(&entry)
                        .arg(json)
                        .arg("EX")
                        .arg(ttl)
                        .query_async(&mut conn)
                        .await
                })
                .await;
        })
    }
}

/// An in-process cache (moka): bounded by `max_entries`, entries expire
/// `ttl_s` after they are stored.
pub struct MemoryCache {
    entries: moka::future::Cache<CacheKey, Arc<CachedAnswer>>,
}

impl MemoryCache {
    pub fn new(cfg: &CacheConfig) -> MemoryCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(cfg.max_entries)
            .time_to_live(cfg.ttl())
            .build();
        MemoryCache { entries }
    }
}

impl fmt::Debug for MemoryCache {
    /// The size and policy, not the entries (they hold prompts' answers).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.entries.entry_count())
            .field("ttl", &self.entries.policy().time_to_live())
            .finish()
    }
}

impl ResponseCache for MemoryCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Arc<CachedAnswer>>> {
        Box::pin(self.entries.get(key))
    }

    fn put(&self, key: CacheKey, answer: Arc<CachedAnswer>) -> BoxFuture<'_, ()> {
        Box::pin(self.entries.insert(key, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::providers::chat::{FunctionSpec, ResponseFormat, Tool};

    fn deterministic(prompt: &str) -> ChatRequest {
        let mut chat = ChatRequest::user(prompt);
        chat.params.temperature = Some(0.0);
        chat
    }

    fn key(chat: &ChatRequest, target: &CacheTarget) -> CacheKey {
        CacheKey::of(chat, target).unwrap()
    }

    fn answer(text: &str) -> Arc<CachedAnswer> {
        Arc::new(CachedAnswer::now(
            "m1",
            Completion {
                text: text.into(),
                finish_reason: "stop".into(),
                ..Completion::default()
            },
        ))
    }

    #[test]
    fn same_request_same_key() {
        let target = CacheTarget::default();
        let a = key(&deterministic("hi"), &target);
        assert_eq!(a, key(&deterministic("hi"), &target));
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn key_is_stable_across_builds_and_processes() {
        // A shared backend relies on this exact value: if the canonical
        // form changes on purpose, bump KEY_VERSION and update it here. It
        // is the SHA-256 of this text (checked outside Rust too):
        // {"messages":[{"content":"hi","role":"user"}],"params":{"temperature":0.0},
        // "target":{"combine":false,"cost_weight":null,"key":null,"latency_weight":null,
        // "max_cost_usd":null,"model":null,"models":null,"persona":null,
        // "task_type":null,"variations":null},"version":2}
        let k = key(&deterministic("hi"), &CacheTarget::default());
        assert_eq!(
            k.as_str(),
            "902ad82c18c5d22621fafeb8f98ce9dc0ec26cdc368d1c0c8b095eca95650f3c"
        );
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let chat = deterministic("hi");
        let target = CacheTarget::default();
        let base = key(&chat, &target);

        let mut other = deterministic("hello");
        assert_ne!(key(&other, &target), base, "message");

        other = chat.clone();
        other.params.temperature = Some(0.7);
        assert_ne!(key(&other, &target), base, "temperature");

        other = chat.clone();
        other.params.tools.push(Tool {
            kind: "function".into(),
            function: FunctionSpec {
                name: "f".into(),
                description: None,
                parameters: None,
                strict: None,
            },
        });
        assert_ne!(key(&other, &target), base, "tools");

        other = chat.clone();
        other.params.response_format = Some(ResponseFormat::JsonObject);
        assert_ne!(key(&other, &target), base, "response_format");

        let pinned = CacheTarget {
            model: Some("gpt-4o".into()),
            ..CacheTarget::default()
        };
        assert_ne!(key(&chat, &pinned), base, "model");

        let cheap = CacheTarget {
            cost_weight: Some(0.9),
            ..CacheTarget::default()
        };
        assert_ne!(key(&chat, &cheap), base, "preference");

        let allowed = CacheTarget {
            models: Some(vec!["a".into()]),
            ..CacheTarget::default()
        };
        assert_ne!(key(&chat, &allowed), base, "allowed models");
    }

    #[test]
    fn user_does_not_change_the_key() {
        let target = CacheTarget::default();
        let mut chat = deterministic("hi");
        let base = key(&chat, &target);
        chat.params.user = Some("end-user-42".into());
        assert_eq!(key(&chat, &target), base);
    }

    #[test]
    fn allowed_models_are_a_set() {
        let chat = deterministic("hi");
        let of = |models: &[&str]| {
            let target = CacheTarget {
                models: Some(models.iter().map(|m| m.to_string()).collect()),
                ..CacheTarget::default()
            };
            key(&chat, &target)
        };
        assert_eq!(of(&["b", "a", "a"]), of(&["a", "b"]));
    }

    #[test]
    fn json_object_key_order_does_not_matter() {
        let target = CacheTarget::default();
        let mut a = deterministic("hi");
        a.params.tool_choice = Some(serde_json::from_str(r#"{"type":"function","function":{"name":"f"}}"#).unwrap());
        let mut b = deterministic("hi");
        b.params.tool_choice = Some(serde_json::from_str(r#"{"function":{"name":"f"},"type":"function"}"#).unwrap());
        assert_eq!(key(&a, &target), key(&b, &target));
    }

    #[test]
    fn only_explicit_temperature_zero_is_cacheable_by_default() {
        let cfg = CacheConfig::default();
        let mut chat = ChatRequest::user("hi");
        assert!(!cfg.cacheable(&chat), "temperature unset: sampled");
        chat.params.temperature = Some(0.7);
        assert!(!cfg.cacheable(&chat), "temperature 0.7");
        chat.params.temperature = Some(0.0);
        assert!(cfg.cacheable(&chat), "temperature 0");
        chat.params.n = Some(1);
        assert!(cfg.cacheable(&chat), "n = 1");
        chat.params.n = Some(2);
        assert!(!cfg.cacheable(&chat), "n = 2");

        let multiple = CacheConfig {
            multiple_choices: true,
            ..CacheConfig::default()
        };
        assert!(multiple.cacheable(&chat), "n = 2 with multiple_choices");

        let sampled = CacheConfig {
            sampled: true,
            ..CacheConfig::default()
        };
        assert!(sampled.cacheable(&ChatRequest::user("hi")), "unset with sampled");
        let mut warm = ChatRequest::user("hi");
        warm.params.temperature = Some(0.7);
        assert!(sampled.cacheable(&warm), "0.7 with sampled");

        let off = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(!off.cacheable(&deterministic("hi")), "disabled");
    }

    #[test]
    fn opt_out_modes() {
        assert!(CacheMode::Use.reads() && CacheMode::Use.writes());
        assert!(!CacheMode::Refresh.reads() && CacheMode::Refresh.writes());
        assert!(!CacheMode::Bypass.reads() && !CacheMode::Bypass.writes());
        assert_eq!(CacheMode::default(), CacheMode::Use);
    }

    #[test]
    fn config_defaults_and_checks() {
        let cfg: CacheConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, CacheConfig::default());
        assert!(cfg.enabled && !cfg.sampled && !cfg.multiple_choices);
        assert_eq!((cfg.max_entries, cfg.ttl_s), (10_000, 3_600));
        assert_eq!(cfg.validate(), Ok(()));
        assert!(toml::from_str::<CacheConfig>("ttl = 5").is_err(), "unknown field");
        for (bad, field) in [
            ("ttl_s = 0", "cache.ttl_s"),
            ("ttl_s = 40000000", "cache.ttl_s"),
            ("max_entries = 0", "cache.max_entries"),
        ] {
            let cfg: CacheConfig = toml::from_str(bad).unwrap();
            let e = cfg.validate().unwrap_err();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
    }

    #[test]
    fn disabled_builds_nothing() {
        let off = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(build(&off).is_none());
        assert!(build(&CacheConfig::default()).is_some());
    }

    #[test]
    fn cached_answer_round_trips_as_json() {
        let a = answer("hello");
        let text = serde_json::to_string(&*a).unwrap();
        let back: CachedAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back, *a);
        assert!(a.created_ms > 0);
    }

    #[tokio::test]
    async fn memory_cache_returns_what_was_put() {
        let cache = build(&CacheConfig::default()).unwrap();
        let k = key(&deterministic("hi"), &CacheTarget::default());
        assert!(cache.get(&k).await.is_none());
        cache.put(k.clone(), answer("hello")).await;
        assert_eq!(cache.get(&k).await.unwrap().completion.text, "hello");
        cache.put(k.clone(), answer("again")).await;
        assert_eq!(cache.get(&k).await.unwrap().completion.text, "again", "put replaces");
        let other = key(&deterministic("other"), &CacheTarget::default());
        assert!(cache.get(&other).await.is_none());
    }

    #[tokio::test]
    async fn memory_cache_honours_max_entries() {
        let cfg = CacheConfig {
            max_entries: 5,
            ..CacheConfig::default()
        };
        let cache = MemoryCache::new(&cfg);
        for i in 0..50 {
            let k = key(&deterministic(&format!("prompt {i}")), &CacheTarget::default());
            cache.put(k, answer("a")).await;
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entries.entry_count() <= 5, "{}", cache.entries.entry_count());
    }

    #[test]
    fn memory_cache_expires_after_the_ttl() {
        let cfg = CacheConfig {
            ttl_s: 42,
            ..CacheConfig::default()
        };
        let cache = MemoryCache::new(&cfg);
        assert_eq!(cache.entries.policy().time_to_live(), Some(Duration::from_secs(42)));
        assert_eq!(cache.entries.policy().max_capacity(), Some(10_000));
        // Unvalidated configs still build: the TTL is clamped, not a panic.
        let wild = MemoryCache::new(&CacheConfig {
            ttl_s: u64::MAX,
            ..CacheConfig::default()
        });
        assert_eq!(
            wild.entries.policy().time_to_live(),
            Some(Duration::from_secs(MAX_TTL_S))
        );
    }
}
