//! Serving what another process trains: a thread that polls the policy
//! registry (and, on PostgreSQL, wakes on its NOTIFY) and swaps each newer
//! version into the serving pointer, for a gateway in
//! `learning.mode = "external"`.
//!
//! Loading happens on this thread; serving only ever sees a finished
//! snapshot through the `ArcSwap`, so no request waits on a load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::registry::Registry;
use qroute_core::policy::DqnPolicy;
use qroute_core::{Error, Result};

/// Handle to the polling thread; dropping it stops the thread.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Polls `registry` every `interval` and serves each newer version
    /// through `current`. A version with another feature spec than the one
    /// serving is skipped with a warning (the gateway featurizes requests
    /// with the spec it started with).
    pub fn spawn(registry: Registry, current: Arc<ArcSwap<DqnPolicy>>, interval: Duration) -> Result<Watcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("qroute-registry-watch".into())
                .spawn(move || {
                    // A PostgreSQL registry unparks this thread on NOTIFY:
                    // a new version is served within milliseconds, and the
                    // interval is only the backstop.
                    registry.wake_on_publish(std::thread::current());
                    let mut skipped = 0;
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(interval);
                        let serving = current.load();
                        let seen = serving.version.max(skipped);
                        match registry.newer_than(seen) {
                            Ok(Some(p)) if p.spec == serving.spec => {
                                tracing::info!(version = p.version, "serving a newly registered version");
                                current.store(Arc::new(p));
                            }
                            Ok(Some(p)) => {
                                tracing::warn!(
                                    version = p.version,
                                    "ignoring a registered version with another feature spec"
                                );
                                skipped = p.version;
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "could not read the policy registry"),
                        }
                    }
                })
                .map_err(|e| Error::io("spawning the registry watcher", e))?
        };
        Ok(Watcher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
