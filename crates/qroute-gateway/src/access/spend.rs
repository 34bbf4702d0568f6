//! What each key has spent in its budget period, kept in the store so a
//! restart does not reset a budget.
//!
//! Spend is added in memory as requests finish (the recorded cost of every
//! model a request ran, variations and judges included) and written to the
//! store's `spend` documents every [`FLUSH_EVERY`] and when the gateway
//! stops: a crash forgets at most that last second of spend.
//!
//! # Several replicas (`[redis]`)
//!
//! Replicas share the store's documents; were they all to write one
//! document per key, each would overwrite the others' spend with its own.
//! So with Redis each replica writes only *its own share* of a key's
//! spend, under `{key_id}/{replica_id}` (the replica id is
//! [`SharedRedis::replica_id`], random per start unless configured), and a
//! key's durable spend is the sum of its documents for the period; a
//! replica with a fresh id simply adds a document, old ones still count.
//!
//! The *live* spend mirrors that in Redis: one hash per key and budget
//! period (`PREFIX:spend:{key_id}:{period_start_ms}`, expiring an hour
//! after the period ends) whose fields are the replicas' shares in integer
//! nano-dollars. A replica only ever writes its own field, and only with
//! an absolute value that replaces a smaller one (a grow-only counter), so
//! writes can be repeated, reordered or lost and retried without counting
//! anything twice or losing it. A budget is checked against the sum of the
//! fields (one `HVALS`).
//!
//! Redis keeps nothing on disk: when its marker key (`PREFIX:spend:seeded`)
//! is missing (Redis restarted or was flushed), a replica copies every
//! share from the documents into the hashes (the same max-merge, so a live
//! replica's fresher share wins) and sets the marker. What other replicas
//! charged in the second before a restart (not yet in the documents) is
//! missed until they next charge that key. While Redis is down, each
//! replica checks budgets against the total it last saw plus what it
//! charged since, and sends its shares when Redis is back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{BudgetPeriod, KeyRecord};
use crate::shared::SharedRedis;
use qroute_core::calendar::{civil_from_days, days_from_civil, DAY_MS};
use qroute_core::store::{Documents, ExperienceStore};
use qroute_core::{Error, Result};

const KIND: &str = "spend";
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key_id: String,
    period_start_ms: u64,
    usd: f64,
    /// The replica whose share this is (with `[redis]`); absent: the
    /// whole spend of a gateway without Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// When the period ends (to expire a counter seeded from this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_end_ms: Option<u64>,
}

impl Entry {
    /// The document key: `key_id`, or `key_id/replica` for a replica's share.
    fn doc_key(&self) -> String {
        match &self.replica {
            Some(r) => format!("{}/{r}", self.key_id),
            None => self.key_id.clone(),
        }
    }
}

struct State {
    /// Per key: its spend, or with `[redis]` this replica's share of it.
    entries: HashMap<String, Entry>,
    /// Keys whose entry changed since the last flush.
    dirty: HashSet<String>,
    /// With `[redis]`, per key: its total over every replica as last read
    /// (from Redis, or from the store at start), plus what this replica
    /// charged since: what budgets are checked against while Redis is down.
    seen: HashMap<String, (u64, f64)>,
    /// With `[redis]`: keys whose share Redis may not hold yet.
    unsent: HashSet<String>,
}

/// Spend per key, durable within a second.
pub struct Ledger {
    store: Arc<dyn ExperienceStore>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    flusher: Option<JoinHandle<()>>,
    shared: Option<Arc<Shared>>,
}

/// The Redis side of a [`Ledger`].
struct Shared {
    redis: Arc<SharedRedis>,
    store: Arc<dyn ExperienceStore>,
    state: Arc<Mutex<State>>,
    /// Held while seeding, so one seed runs at a time per replica.
    seeding: tokio::sync::Mutex<()>,
}

/// Nano-dollars: Redis counts integers, exactly.
const NANOS: f64 = 1e9;

/// Sets field ARGV[1] of hash KEYS[1] to ARGV[2] unless it holds more; if
/// ARGV[3] > 0, the hash expires then (Unix ms).
const MAX_SET: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or -1
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1
"#;

static MAX_SET_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(MAX_SET));

fn nanos(usd: f64) -> i64 {
    (usd * NANOS).round() as i64
}

/// An hour past a period's end, when its counter goes.
fn expiry(end: Option<u64>) -> u64 {
    end.map_or(0, |e| e + 3_600_000)
}

/// Start of the budget period holding `now_ms` (UTC), and its end.
pub fn period(p: BudgetPeriod, now_ms: u64) -> (u64, Option<u64>) {
    match p {
        BudgetPeriod::Total => (0, None),
        BudgetPeriod::Day => {
            let start = now_ms - now_ms % DAY_MS;
            (start, Some(start + DAY_MS))
        }
        BudgetPeriod::Month => {
            let (y, m, _) = civil_from_days((now_ms / DAY_MS) as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1) as u64 * DAY_MS,
                Some(days_from_civil(ny, nm, 1) as u64 * DAY_MS),
            )
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn flush_state(store: &dyn ExperienceStore, state: &Mutex<State>) -> Result<()> {
    let batch: Vec<Entry> = {
        let mut s = lock(state);
        let dirty = std::mem::take(&mut s.dirty);
        dirty.iter().filter_map(|id| s.entries.get(id).cloned()).collect()
    };
    for e in &batch {
        store.put_doc(KIND, &e.doc_key(), e)?;
    }
    Ok(())
}

impl Ledger {
    /// Loads what the store holds and starts the flusher.
    pub fn open(store: Arc<dyn ExperienceStore>) -> Result<Ledger> {
        Ledger::open_shared(store, None)
    }

    /// [`Ledger::open`], with the live spend in `redis` when given (module
    /// docs).
    pub fn open_shared(store: Arc<dyn ExperienceStore>, redis: Option<Arc<SharedRedis>>) -> Result<Ledger> {
        let docs = store.docs::<Entry>(KIND)?;
        let mut entries = HashMap::new();
        let mut seen: HashMap<String, (u64, f64)> = HashMap::new();
        match &redis {
            None => {
                for e in docs.into_iter().filter(|e| e.replica.is_none()) {
                    entries.insert(e.key_id.clone(), e);
                }
            }
            Some(r) => {
                for e in docs {
                    let s = seen.entry(e.key_id.clone()).or_insert((e.period_start_ms, 0.0));
                    if e.period_start_ms > s.0 {
                        *s = (e.period_start_ms, 0.0);
                    }
                    if e.period_start_ms == s.0 {
                        s.1 += e.usd;
                    }
                    if e.replica.as_deref() == Some(r.replica_id()) {
                        entries.insert(e.key_id.clone(), e);
                    }
                }
            }
        }
        let state = Arc::new(Mutex::new(State {
            entries,
            dirty: HashSet::new(),
            seen,
            unsent: HashSet::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (store, state, stop) = (store.clone(), state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("qroute-spend".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(FLUSH_EVERY);
                        if let Err(e) = flush_state(store.as_ref(), &state) {
                            tracing::warn!(error = %e, "could not save key spend; will retry");
                        }
                    }
                })
                .map_err(|e| Error::io("spawning the spend flusher", e))?
        };
        let shared = redis.map(|redis| {
            Arc::new(Shared {
                redis,
                store: store.clone(),
                state: state.clone(),
                seeding: tokio::sync::Mutex::new(()),
            })
        });
        Ok(Ledger {
            store,
            state,
            stop,
            flusher: Some(flusher),
            shared,
        })
    }

    /// What `key` has spent in its current period, as this replica knows
    /// it without asking Redis: without `[redis]` the exact spend, with it
    /// the total last seen plus what this replica charged since.
    pub fn spent_local(&self, key: &KeyRecord, now_ms: u64) -> f64 {
        let (start, _) = period(key.budget_period, now_ms);
        let s = lock(&self.state);
        if self.shared.is_some() {
            return s
                .seen
                .get(&key.id)
                .filter(|(p, _)| *p == start)
                .map_or(0.0, |(_, usd)| *usd);
        }
        s.entries
            .get(&key.id)
            .filter(|e| e.period_start_ms == start)
            .map_or(0.0, |e| e.usd)
    }

    /// What `key` has spent in its current period: with `[redis]`, over
    /// every replica (one round trip), or [`Ledger::spent_local`] while
    /// Redis is down.
    pub async fn spent(&self, key: &KeyRecord, now_ms: u64) -> f64 {
        let Some(shared) = &self.shared else {
            return self.spent_local(key, now_ms);
        };
        let (start, _) = period(key.budget_period, now_ms);
        let (marker, hash) = (shared.marker(), shared.counter(&key.id, start));
        let got: Option<(bool, Vec<i64>)> = shared
            .redis
            .run("spend_read", |mut conn| async move {
                redis::pipe()
                    .cmd("EXISTS")
                    .arg(&marker)
                    .cmd("HVALS")
                    .arg(&hash)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match got {
            Some((true, shares)) => {
                let total = shares.iter().sum::<i64>() as f64 / NANOS;
                let mut s = lock(&self.state);
                // This replica's own share may be ahead of what Redis holds.
                let mine = s
                    .entries
                    .get(&key.id)
                    .filter(|e| e.period_start_ms == start && s.unsent.contains(&key.id))
                    .map_or(0.0, |e| e.usd);
                let total = total.max(mine);
                s.seen.insert(key.id.clone(), (start, total));
                let resend: Vec<String> = s.unsent.iter().cloned().collect();
                drop(s);
                for id in resend {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.send(&id).await });
                }
                total
            }
            Some((false, _)) => {
                shared.clone().seed_soon();
                self.spent_local(key, now_ms)
            }
            None => self.spent_local(key, now_ms),
        }
    }

    /// Adds `usd` to `key`'s spend in its current period.
    pub fn add(&self, key: &KeyRecord, usd: f64, now_ms: u64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let (start, end) = period(key.budget_period, now_ms);
        let replica = self.shared.as_ref().map(|s| s.redis.replica_id().to_string());
        let mut s = lock(&self.state);
        let e = s.entries.entry(key.id.clone()).or_insert_with(|| Entry {
            key_id: key.id.clone(),
            period_start_ms: start,
            usd: 0.0,
            replica: replica.clone(),
            period_end_ms: end,
        });
        if e.period_start_ms != start {
            e.period_start_ms = start;
            e.period_end_ms = end;
            e.usd = 0.0;
        }
        e.usd += usd;
        if !s.dirty.contains(&key.id) {
            s.dirty.insert(key.id.clone());
        }
        let Some(shared) = &self.shared else { return };
        let seen = s.seen.entry(key.id.clone()).or_insert((start, 0.0));
        if seen.0 != start {
            *seen = (start, 0.0);
        }
        seen.1 += usd;
        s.unsent.insert(key.id.clone());
        drop(s);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (shared, id) = (shared.clone(), key.id.clone());
            rt.spawn(async move { shared.send(&id).await });
        }
    }

    /// Writes what changed since the last flush.
    pub fn flush(&self) -> Result<()> {
        flush_state(self.store.as_ref(), &self.state)
    }
}

impl Shared {
    fn marker(&self) -> String {
        self.redis.key("spend:seeded")
    }

    fn counter(&self, key_id: &str, start: u64) -> String {
        self.redis.key(&format!("spend:{key_id}:{start}"))
    }

    /// Sends this replica's share of `key_id`'s spend (module docs).
    async fn send(self: &Arc<Self>, key_id: &str) {
        let Some(e) = ({
            let mut s = lock(&self.state);
            s.unsent.remove(key_id);
            s.entries.get(key_id).cloned()
        }) else {
            return;
        };
        let hash = self.counter(key_id, e.period_start_ms);
        let me = self.redis.replica_id().to_string();
        let sent: Option<i64> = self
            .redis
            .run("spend_add", |mut conn| async move {
                MAX_SET_SCRIPT
                    .key(&hash)
                    .arg(&me)
                    .arg(nanos(e.usd))
                    .arg(expiry(e.period_end_ms))
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        if sent.is_none() {
            lock(&self.state).unsent.insert(key_id.to_string());
        }
    }

    /// Seeds the counters in the background, unless a seed is under way.
    fn seed_soon(self: Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let Ok(_one) = self.seeding.try_lock() else { return };
                if let Err(e) = self.seed().await {
                    tracing::warn!(error = %e, "could not seed the spend counters in redis; will retry");
                }
            });
        }
    }

    /// Copies every share from the store into Redis (module docs).
    async fn seed(&self) -> Result<()> {
        let store = self.store.clone();
        let mut docs = tokio::task::spawn_blocking(move || store.docs::<Entry>(KIND))
            .await
            .map_err(|e| Error::Store(format!("reading spend: {e}")))??;
        docs.extend(lock(&self.state).entries.values().cloned());
        let mut pipe = redis::pipe();
        for e in &docs {
            pipe.cmd("EVAL")
                .arg(MAX_SET)
                .arg(1)
                .arg(self.counter(&e.key_id, e.period_start_ms))
                .arg(e.replica.as_deref().unwrap_or("-"))
                .arg(nanos(e.usd))
                .arg(expiry(e.period_end_ms))
                .ignore();
        }
        pipe.cmd("SET").arg(self.marker()).arg(1).ignore();
        let done: Option<()> = self
            .redis
            .run(
                "spend_seed",
                |mut conn| async move { pipe.query_async(&mut conn).await },
            )
            .await;
        match done {
            Some(()) => {
                tracing::info!(shares = docs.len(), "seeded the spend counters in redis from the store");
                Ok(())
            }
            None => Err(Error::Unavailable("redis did not answer".into())),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.flusher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not save key spend at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_and_end_in_utc() {
        // 2026-12-06T20:00:00Z
        let now = 1_796_587_200_000;
        let (d0, d1) = period(BudgetPeriod::Day, now);
        assert_eq!((d0, d1), (1_796_515_200_000, Some(1_796_601_600_000)));
        let (m0, m1) = period(BudgetPeriod::Month, now);
        assert_eq!(m0, 1_796_083_200_000, "2026-12-01");
        assert_eq!(m1, Some(1_798_761_600_000), "2027-01-01");
        assert_eq!(period(BudgetPeriod::Total, now), (0, None));
    }
}
