//! What each key has spent in its budget period, kept in the store so a
//! restart does not reset a budget.
//!
//! Spend is added in memory as requests finish (the recorded cost of every
//! model a request ran, variations and judges included) and written to the
//! store's `spend` documents every [`FLUSH_EVERY`] and when the gateway
//! stops: a crash forgets at most that last second of spend.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{BudgetPeriod, KeyRecord};
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
}

struct State {
    entries: HashMap<String, Entry>,
    /// Keys whose entry changed since the last flush.
    dirty: HashSet<String>,
}

/// Spend per key, durable within a second.
pub struct Ledger {
    store: Arc<dyn ExperienceStore>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    flusher: Option<JoinHandle<()>>,
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
        store.put_doc(KIND, &e.key_id, e)?;
    }
    Ok(())
}

impl Ledger {
    /// Loads what the store holds and starts the flusher.
    pub fn open(store: Arc<dyn ExperienceStore>) -> Result<Ledger> {
        let entries = store
            .docs::<Entry>(KIND)?
            .into_iter()
            .map(|e| (e.key_id.clone(), e))
            .collect();
        let state = Arc::new(Mutex::new(State {
            entries,
            dirty: HashSet::new(),
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
        Ok(Ledger {
            store,
            state,
            stop,
            flusher: Some(flusher),
        })
    }

    /// What `key` has spent in its current period.
    pub fn spent(&self, key: &KeyRecord, now_ms: u64) -> f64 {
        let (start, _) = period(key.budget_period, now_ms);
        lock(&self.state)
            .entries
            .get(&key.id)
            .filter(|e| e.period_start_ms == start)
            .map_or(0.0, |e| e.usd)
    }

    /// Adds `usd` to `key`'s spend in its current period.
    pub fn add(&self, key: &KeyRecord, usd: f64, now_ms: u64) {
        if !(usd.is_finite() && usd > 0.0) {
            return;
        }
        let (start, _) = period(key.budget_period, now_ms);
        let mut s = lock(&self.state);
        let e = s.entries.entry(key.id.clone()).or_insert_with(|| Entry {
            key_id: key.id.clone(),
            period_start_ms: start,
            usd: 0.0,
        });
        if e.period_start_ms != start {
            e.period_start_ms = start;
            e.usd = 0.0;
        }
        e.usd += usd;
        if !s.dirty.contains(&key.id) {
            s.dirty.insert(key.id.clone());
        }
    }

    /// Writes what changed since the last flush.
    pub fn flush(&self) -> Result<()> {
        flush_state(self.store.as_ref(), &self.state)
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
