//! Who may call the gateway, and how much: master and virtual keys,
//! login tokens, per-key rate limits, model lists and budgets.
//!
//! Auth is on when the environment holds a master key (`QROUTE_MASTER_KEY`,
//! or a variable `[auth] master_key_envs` names). Then every request but
//! the public ones carries `Authorization: Bearer KEY` (or `x-api-key`),
//! where KEY is a master key, a virtual key (`sk-qr-…`, made by
//! `POST /v1/keys`) or a token from `POST /v1/auth/login`. Virtual keys are
//! stored in the experience store's `keys` documents as SHA-256 hashes;
//! master keys are compared by hash in constant time.
//!
//! The HTTP layer decides which scope a path needs ([`Scope`]) and asks
//! [`Access::authenticate`]; the routing endpoints then ask
//! [`Access::admit`] before routing and [`Access::charge`] after.
//!
//! # Several replicas
//!
//! Keys are documents in the experience store, which replicas share (when
//! it is shared); each replica holds them in memory. A key made on one
//! replica is found on another at its first use: an unknown key (or a
//! token naming an unknown key) reloads the documents, at most once per
//! [`MISS_RELOAD_EVERY`] so a flood of bad keys cannot hammer the store. A
//! revocation reaches the others within `[auth] keys_refresh_s`, the
//! period at which every replica reloads them all. With `[redis]`, limits
//! and live spend are shared too ([`crate::shared`]).

pub mod config;
pub mod keys;
pub mod limits;
pub mod spend;
pub mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::shared::SharedRedis;
pub use config::AuthConfig;
use keys::{KeyBook, KeyRecord, NewKey};
use limits::{KeyLimits, Limited, RateHeaders};
use qroute_core::store::{Documents, ExperienceStore};
use qroute_core::{unix_ms, Error, Result};
use spend::Ledger;
use token::{Claims, Tokens};

const KEYS: &str = "keys";

/// At most one reload of the key documents this often on unknown keys.
pub const MISS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What a path requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Anyone (health, login, the OpenAPI description, the console's files).
    Public,
    /// Any valid key.
    Key,
    /// An admin key: the master key or a virtual key made with `admin`.
    Admin,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Auth is off: no key is asked for, nothing is limited.
    Open,
    Master,
    Key(Arc<KeyRecord>),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Open | Principal::Master => true,
            Principal::Key(k) => k.admin,
        }
    }

    /// The id recorded with what the caller makes (`None` with auth off).
    pub fn id(&self) -> Option<&str> {
        match self {
            Principal::Open => None,
            Principal::Master => Some("master"),
            Principal::Key(k) => Some(&k.id),
        }
    }
}

/// Why a request is not let in.
#[derive(Debug)]
pub enum Denied {
    /// No credential, or one that is not valid (401).
    Unauthenticated(&'static str),
    /// A valid credential without the scope (403).
    Forbidden(String),
    /// Over a rate limit (429 with `Retry-After`).
    RateLimited(Limited),
    /// The budget of the period is spent (429, `budget_exceeded`).
    Budget { limit_usd: f64, resets_at_ms: Option<u64> },
}

/// Keys, tokens, limits and spend.
pub struct Access {
    /// SHA-256 of each master key; empty: auth is off.
    masters: Vec<[u8; 32]>,
    tokens: Option<Tokens>,
    token_ttl: Duration,
    max_keys: usize,
    store: Arc<dyn ExperienceStore>,
    book: Arc<RwLock<KeyBook>>,
    limits: Mutex<HashMap<String, Arc<KeyLimits>>>,
    ledger: Ledger,
    /// Where limits and live spend are shared (`[redis]`).
    redis: Option<Arc<SharedRedis>>,
    /// Unix ms of the last reload on an unknown key.
    miss_reload_ms: AtomicU64,
    /// Serialises reloads on a miss (see `reload_on_miss`).
    miss_reload: Mutex<()>,
    stop: Arc<AtomicBool>,
    refresher: Option<JoinHandle<()>>,
}

/// Merges the stored keys into `book`. Keys are never deleted and a
/// revocation is never undone, so a stored record replaces the held one
/// unless it is live where the held one is revoked (a reload that read the
/// store just before a revocation here must not bring the key back).
fn reload(store: &dyn ExperienceStore, book: &RwLock<KeyBook>) -> Result<()> {
    let records = store.docs::<KeyRecord>(KEYS)?;
    let mut book = book.write().unwrap_or_else(|e| e.into_inner());
    for record in records {
        let keep_held = book
            .by_id(&record.id)
            .is_some_and(|held| held.revoked_ms.is_some() && record.revoked_ms.is_none());
        if !keep_held && book.by_id(&record.id).is_none_or(|held| **held != record) {
            book.insert(record);
        }
    }
    Ok(())
}

fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

impl Access {
    /// Reads the master keys from the environment and the virtual keys and
    /// their spend from `store`.
    pub fn open(cfg: &AuthConfig, store: Arc<dyn ExperienceStore>) -> Result<Access> {
        Access::open_shared(cfg, store, None)
    }

    /// [`Access::open`], with limits and live spend shared in `redis` when
    /// given.
    pub fn open_shared(
        cfg: &AuthConfig,
        store: Arc<dyn ExperienceStore>,
        redis: Option<Arc<SharedRedis>>,
    ) -> Result<Access> {
        let master_keys = cfg.master_keys();
        let tokens = master_keys.first().map(|k| Tokens::new(k)).transpose()?;
        let mut book = KeyBook::default();
        for record in store.docs::<KeyRecord>(KEYS)? {
            book.insert(record);
        }
        let book = Arc::new(RwLock::new(book));
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = match cfg.keys_refresh_s {
            0 => None,
            s => {
                let (store, book, stop) = (store.clone(), book.clone(), stop.clone());
                let every = Duration::from_secs(s);
                Some(
                    std::thread::Builder::new()
                        .name("qroute-keys".into())
                        .spawn(move || loop {
                            std::thread::park_timeout(every);
                            if stop.load(Ordering::Acquire) {
                                break;
                            }
                            if let Err(e) = reload(store.as_ref(), &book) {
                                tracing::warn!(error = %e, "could not reload the keys; will retry");
                            }
                        })
                        .map_err(|e| Error::io("spawning the key refresher", e))?,
                )
            }
        };
        Ok(Access {
            masters: master_keys.iter().map(|k| digest(k)).collect(),
            tokens,
            token_ttl: Duration::from_secs(cfg.token_ttl_s),
            max_keys: cfg.max_keys,
            ledger: Ledger::open_shared(store.clone(), redis.clone())?,
            store,
            book,
            limits: Mutex::new(HashMap::new()),
            redis,
            miss_reload_ms: AtomicU64::new(0),
            miss_reload: Mutex::new(()),
            stop,
            refresher,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.masters.is_empty()
    }

    fn book(&self) -> std::sync::RwLockReadGuard<'_, KeyBook> {
        self.book.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal a credential (key or token) names, if it is valid now.
    pub fn authenticate(&self, credential: Option<&str>, now_ms: u64) -> std::result::Result<Principal, Denied> {
        if !self.enabled() {
            return Ok(Principal::Open);
        }
        let credential = credential
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(Denied::Unauthenticated("no API key: send Authorization: Bearer KEY"))?;
        if Tokens::looks_like(credential) {
            let claims = self
                .tokens
                .as_ref()
                .and_then(|t| t.verify(credential, now_ms / 1000))
                .ok_or(Denied::Unauthenticated("invalid or expired token"))?;
            return self.subject(&claims.sub, now_ms);
        }
        self.key(credential, now_ms)
    }

    /// A master or virtual key (not a token).
    fn key(&self, secret: &str, now_ms: u64) -> std::result::Result<Principal, Denied> {
        let d = digest(secret);
        // Every master key is compared, in constant time, whatever matches.
        let master = self
            .masters
            .iter()
            .fold(subtle::Choice::from(0), |acc, m| acc | m.ct_eq(&d));
        if bool::from(master) {
            return Ok(Principal::Master);
        }
        let hash = keys::hex(&d);
        let mut found = self.book().by_hash(&hash).cloned();
        if found.is_none() && self.reload_on_miss() {
            found = self.book().by_hash(&hash).cloned();
        }
        match found {
            Some(k) if k.live(now_ms) => Ok(Principal::Key(k)),
            _ => Err(Denied::Unauthenticated("invalid, expired or revoked API key")),
        }
    }

    /// Reloads the key documents (a key made on another replica), unless
    /// that was done less than [`MISS_RELOAD_EVERY`] ago. Misses that
    /// arrive while a reload runs wait for it, so a burst of first requests
    /// with a new key finds it, not just the one that reloaded. Whether the
    /// book may have changed since the caller looked (look again).
    fn reload_on_miss(&self) -> bool {
        let _one_at_a_time = self.miss_reload.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_ms();
        let last = self.miss_reload_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < MISS_RELOAD_EVERY.as_millis() as u64 {
            // Reloaded lately, perhaps while this miss waited.
            return true;
        }
        self.miss_reload_ms.store(now, Ordering::Relaxed);
        metrics::counter!("qroute_key_reloads_total").increment(1);
        match reload(self.store.as_ref(), &self.book) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not reload the keys");
                false
            }
        }
    }

    /// The principal a token's subject names, if it is still live (a
    /// revoked key's tokens stop working at once).
    fn subject(&self, sub: &str, now_ms: u64) -> std::result::Result<Principal, Denied> {
        if sub == "master" {
            return Ok(Principal::Master);
        }
        let mut found = self.book().by_id(sub).cloned();
        if found.is_none() && self.reload_on_miss() {
            found = self.book().by_id(sub).cloned();
        }
        match found {
            Some(k) if k.live(now_ms) => Ok(Principal::Key(k)),
            _ => Err(Denied::Unauthenticated("the token's key was revoked or has expired")),
        }
    }

    /// `POST /v1/auth/login`: a token for a valid key, expiring after the
    /// configured lifetime (or with the key, if sooner). Returns the token
    /// and its lifetime in seconds.
    pub fn login(&self, api_key: &str, now_ms: u64) -> std::result::Result<(String, u64), Denied> {
        let tokens = self.tokens.as_ref().ok_or(Denied::Forbidden(
            "auth is off on this gateway: no token is needed".into(),
        ))?;
        if Tokens::looks_like(api_key) {
            return Err(Denied::Unauthenticated("log in with an API key, not a token"));
        }
        let principal = self.key(api_key, now_ms)?;
        let mut exp_ms = now_ms + self.token_ttl.as_millis() as u64;
        if let Principal::Key(k) = &principal {
            exp_ms = exp_ms.min(k.expires_at.unwrap_or(u64::MAX));
        }
        let exp = exp_ms / 1000;
        let sub = principal.id().unwrap_or("master").to_string();
        Ok((tokens.sign(&Claims { sub, exp }), exp.saturating_sub(now_ms / 1000)))
    }

    /// Lets a routing request in, or says why not: the key's model list,
    /// its rates (`tokens`: the prompt's estimate) and its budget. Returns
    /// the rate headers to send with the answer. With `[redis]`, the budget
    /// and rates are those shared by every replica (one Redis round trip
    /// each), or this replica's while Redis is down.
    pub async fn admit(
        &self,
        who: &Principal,
        models: &[&str],
        tokens: u32,
        now_ms: u64,
    ) -> std::result::Result<RateHeaders, Denied> {
        let Principal::Key(key) = who else {
            return Ok(RateHeaders::new());
        };
        if let Some(m) = models.iter().find(|m| !key.allows(m)) {
            return Err(Denied::Forbidden(format!("this key may not use model {m:?}")));
        }
        if let Some(limit) = key.budget_usd {
            if self.ledger.spent(key, now_ms).await >= limit {
                let (_, end) = spend::period(key.budget_period, now_ms);
                return Err(Denied::Budget {
                    limit_usd: limit,
                    resets_at_ms: end,
                });
            }
        }
        if let (Some(redis), true) = (&self.redis, key.rpm.is_some() || key.tpm.is_some()) {
            if let Some(verdict) = limits::admit_shared(redis, &key.id, key.rpm, key.tpm, tokens).await {
                return verdict.map_err(Denied::RateLimited);
            }
        }
        self.limits_of(key).admit(tokens).map_err(Denied::RateLimited)
    }

    fn limits_of(&self, key: &KeyRecord) -> Arc<KeyLimits> {
        let mut all = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key.id.clone())
            .or_insert_with(|| Arc::new(KeyLimits::new(key.rpm, key.tpm)))
            .clone()
    }

    /// Counts what a finished request cost against its key's budget.
    pub fn charge(&self, who: &Principal, usd: f64, now_ms: u64) {
        if let Principal::Key(key) = who {
            self.ledger.add(key, usd, now_ms);
        }
    }

    /// What `key` has spent in its current budget period, as this replica
    /// knows it without asking Redis (with `[redis]`: the total it last
    /// saw plus what it charged since).
    pub fn spent(&self, key: &KeyRecord, now_ms: u64) -> f64 {
        self.ledger.spent_local(key, now_ms)
    }

    /// What `key` has spent in its current budget period, over every
    /// replica when `[redis]` is set and up.
    pub async fn spent_shared(&self, key: &KeyRecord, now_ms: u64) -> f64 {
        self.ledger.spent(key, now_ms).await
    }

    /// Creates a virtual key: its record and its secret, shown once.
    pub fn create(&self, new: NewKey, known_models: &[&str], now_ms: u64) -> Result<(Arc<KeyRecord>, String)> {
        new.validate(known_models, now_ms).map_err(Error::InvalidInput)?;
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        if book.len() >= self.max_keys {
            return Err(Error::Conflict(format!(
                "this gateway holds its maximum of {} keys (auth.max_keys)",
                self.max_keys
            )));
        }
        let (record, secret) = new.issue(now_ms);
        self.store.put_doc(KEYS, &record.id, &record)?;
        Ok((book.insert(record), secret))
    }

    pub fn list(&self) -> Vec<Arc<KeyRecord>> {
        self.book().all()
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.book().by_id(id).cloned()
    }

    /// Revokes a key: refused from the next request on, tokens included.
    pub fn revoke(&self, id: &str, now_ms: u64) -> Result<Arc<KeyRecord>> {
        if self.book().by_id(id).is_none() {
            // Perhaps made on another replica since the last reload.
            reload(self.store.as_ref(), &self.book)?;
        }
        let mut book = self.book.write().unwrap_or_else(|e| e.into_inner());
        let mut record = book
            .by_id(id)
            .map(|k| k.as_ref().clone())
            .ok_or_else(|| Error::NotFound(format!("no key {id:?}")))?;
        record.revoked_ms.get_or_insert(now_ms);
        self.store.put_doc(KEYS, &record.id, &record)?;
        Ok(book.insert(record))
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.refresher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
