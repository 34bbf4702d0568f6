//! The retention thread: applies `[store] retention` to a serving store now
//! and then, so the store stays bounded however long the gateway runs.
//!
//! Pruning drops whole old segments (see the crate docs), so running it
//! every [`PRUNE_EVERY`] rather than after every append costs nothing in
//! bound: at most one interval's worth of traffic beyond the limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use qroute_core::store::{ExperienceStore, Retention};
use qroute_core::{Error, Result};

/// How often retention is applied.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Handle to the retention thread; dropping it stops the thread.
pub struct Pruner {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Pruner {
    /// Applies `keep` to `store` at once and then every `every`;
    /// `on_prune(removed)` runs after each call that removed something.
    pub fn spawn(
        store: Arc<dyn ExperienceStore>,
        keep: Retention,
        every: Duration,
        on_prune: impl Fn(u64) + Send + 'static,
    ) -> Result<Pruner> {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("qroute-retention".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match store.apply_retention(&keep, qroute_core::unix_ms()) {
                            Ok(p) if p.removed > 0 => {
                                tracing::info!(
                                    removed = p.removed,
                                    first_kept = p.first_kept,
                                    "retention pruned the store"
                                );
                                on_prune(p.removed);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
                        }
                        std::thread::park_timeout(every);
                    }
                })
                .map_err(|e| Error::io("spawning the retention thread", e))?
        };
        Ok(Pruner {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
