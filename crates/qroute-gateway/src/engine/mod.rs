//! The gateway's core, independent of HTTP: choose a model for a request,
//! run it with retries and fallback, and record what happened.
//!
//! One request, in order:
//! 1. The candidate set: the configured models, narrowed by the request's
//!    allowed list and cost cap, minus models whose circuit breaker is open.
//! 2. The current policy snapshot (an `ArcSwap` load: never waits on the
//!    trainer) scores every candidate at the request's operating point, and
//!    the explorer draws one, with the propensity of every candidate.
//! 3. The decision record is handed to the group-commit writer *while* the
//!    chosen model is called, so its sync overlaps the upstream time; the
//!    answer is returned only once the record is durable.
//! 4. A failed model (after its retries) is a second decision in the same
//!    episode (docs/design.md): the next-best candidate by score is tried under
//!    its own decision record, `{request_id}/fallback-{n}`, with propensity 1
//!    because the fallback order is deterministic.
//! 5. Each model's outcome (quality when known, cost, latency, error) is
//!    queued to the writer; it is durable within one group commit after the
//!    response, and the online trainer learns from it.
//!
//! The files follow those steps: [`request`] (what comes in), [`decide`]
//! (steps 1–2), [`single`] and [`variations`] (running models, steps 3–4),
//! [`record`] (what is written, step 5), [`answer`] (what goes out);
//! [`build`] wires a [`Gateway`] from its config.

mod answer;
mod build;
mod cached;
mod cascade;
mod decide;
mod record;
mod request;
mod single;
pub mod stats;
mod stream;
pub mod variations;

pub use answer::{Attempt, CacheStatus, Routed, Streaming, Timings};
pub use cascade::CascadeStep;
pub use decide::{Choice, Decider, Shadow};
pub use request::{Preference, RouteRequest};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::access::Access;
use crate::cache::{CacheKey, ResponseCache};
use crate::config::{Config, ModelConfig};
use crate::exec::judge::Judge;
use crate::exec::providers::{Capability, Provider};
use crate::exec::resilience::{BreakerState, CircuitBreaker};
use qroute_core::catalog::ModelCard;
use qroute_core::policy::DqnPolicy;
use qroute_core::store::ExperienceStore;
use qroute_core::{Error, Result};
use qroute_experiment::Experiments;
use qroute_learn::online::OnlineTrainer;
use qroute_learn::registry::{Registry, TrainerLock};
use qroute_learn::watch::Watcher;
use qroute_store::{GroupWriter, Pruner};

/// A configured model, ready to call.
pub struct ServedModel {
    pub config: ModelConfig,
    /// What the policy scores: the trained card when the policy knows the
    /// model, else one made from the configured prices.
    pub card: ModelCard,
    pub provider: Arc<Provider>,
    pub breaker: CircuitBreaker,
    /// What it can serve beyond plain chat (see [`Capability`]).
    pub capabilities: Vec<Capability>,
}

/// Who changes the serving policy (`learning.mode`): the trainer thread,
/// the registry watcher, or nobody.
#[derive(Default)]
struct Learning {
    /// Declared first: it stops (and checkpoints) before the lock goes.
    trainer: Option<Arc<OnlineTrainer>>,
    watcher: Option<Watcher>,
    trainer_lock: Option<TrainerLock>,
    registry: Option<Registry>,
}

/// How a request will be answered, once checked: already whole (a cache
/// hit, or the judged best of variations), or by one model still to run.
/// Unboxed: it is built once per request and taken apart at once, so a box
/// would only add an allocation to the request path.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Whole(Routed),
    Single {
        req: RouteRequest,
        prep: decide::Prepared,
        /// Where the answer goes in the cache, when it is cacheable.
        key: Option<CacheKey>,
        /// Models it may call as a cascade; `None` for one model.
        cascade: Option<usize>,
    },
}

/// Everything a request needs, shared by all handlers.
pub struct Gateway {
    pub config: Config,
    pub models: Vec<ServedModel>,
    index: HashMap<String, usize>,
    decider: Decider,
    policy: Arc<ArcSwap<DqnPolicy>>,
    pub experiments: Experiments,
    /// Keys, tokens, limits and budgets.
    pub access: Access,
    pub shadow: Option<Shadow>,
    /// Scores the answers of variations.
    pub(super) judge: Judge,
    /// Answers already given to deterministic requests; `None` when off.
    cache: Option<Arc<dyn ResponseCache>>,
    /// This process's cache lookups, for the console.
    cache_counts: stats::CacheCounts,
    /// Declared before `learning` and `store` so it drains first on drop.
    pub(super) writer: GroupWriter,
    learning: Learning,
    /// Applies `[store] retention`; `None` keeps everything.
    _pruner: Option<Pruner>,
    pub store: Arc<dyn ExperienceStore>,
    pub started: Instant,
}

impl Gateway {
    /// The policy serving right now.
    pub fn policy(&self) -> Arc<DqnPolicy> {
        self.policy.load_full()
    }

    /// Gradient steps the online trainer has taken (0 when learning is off).
    pub fn trainer_steps(&self) -> u64 {
        self.learning
            .trainer
            .as_ref()
            .map_or(0, |t| t.stats().steps.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Aggregates over the decisions of the last `window_s` seconds before
    /// `now_ms` (at most the newest [`stats::MAX_DECISIONS`]), in `bucket_s`
    /// buckets: what the console charts. Reads the store: call it off the
    /// async workers.
    pub fn stats(&self, window_s: u64, bucket_s: u64, now_ms: u64) -> qroute_core::Result<stats::Stats> {
        let from_ms = now_ms.saturating_sub(window_s.saturating_mul(1000));
        let end = self.store.len() as u64;
        let start = end.saturating_sub(stats::MAX_DECISIONS);
        let mut experiences = Vec::new();
        for e in self.store.iter_from(start) {
            let e = e?;
            if e.decision.time_ms >= from_ms {
                experiences.push(e);
            }
        }
        // Limited when the oldest decision read is still inside the window
        // and there were older ones.
        let limited = start > self.store.first_kept() && experiences.len() as u64 >= end - start;
        let policy = self.policy();
        let served = |id: &str| self.index.contains_key(id);
        let baseline = stats::Baseline {
            strongest: policy
                .quality_prior
                .means
                .iter()
                .filter(|(id, _)| served(id))
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(id, q)| (id.clone(), f64::from(*q))),
            prices: self
                .models
                .iter()
                .map(|m| (m.config.id.clone(), m.config.input_per_mtok + m.config.output_per_mtok))
                .collect(),
        };
        let window = stats::Window {
            from_ms,
            to_ms: now_ms,
            bucket_s,
            limited,
        };
        Ok(stats::compute(
            &experiences,
            window,
            policy.version,
            &baseline,
            &self.cache_counts,
        ))
    }

    /// The policy registry this gateway resumes from and checkpoints into.
    pub fn registry(&self) -> Option<&Registry> {
        self.learning.registry.as_ref()
    }

    /// Makes registered version `v` serve. The trainer (online mode) and
    /// the registry watcher (external mode) pick up a newer version on
    /// their own, within a second; a gateway that does not learn has
    /// neither, so it swaps the version in here.
    pub fn serve_registered(&self, v: u64) -> Result<()> {
        if self.learning.trainer.is_some() || self.learning.watcher.is_some() {
            return Ok(());
        }
        let Some(reg) = &self.learning.registry else {
            return Ok(());
        };
        let policy = reg.load(v)?;
        if policy.spec != self.policy.load().spec {
            return Err(Error::InvalidInput(format!(
                "policy version {v} has another feature spec than the serving one"
            )));
        }
        self.policy.store(Arc::new(policy));
        Ok(())
    }

    /// Stops learning: the trainer publishes and checkpoints what it
    /// learned since the last checkpoint. What a SIGTERM does once the last
    /// request is answered (the writer drains when the gateway drops).
    pub fn stop_learning(&self) {
        if let Some(t) = &self.learning.trainer {
            t.stop();
        }
    }

    pub fn model(&self, id: &str) -> Option<&ServedModel> {
        self.index.get(id).map(|&i| &self.models[i])
    }

    /// Breaker state of every model, in config order.
    pub fn breaker_states(&self) -> Vec<(&str, BreakerState)> {
        let now = Instant::now();
        self.models
            .iter()
            .map(|m| (m.config.id.as_str(), m.breaker.state(now)))
            .collect()
    }

    /// Routes `req`, runs it, records it. See the module docs for the steps.
    /// `received` is when the request arrived, so timings include reading
    /// and parsing it.
    pub async fn route(&self, req: RouteRequest, received: Instant) -> Result<Routed> {
        match self.plan(req, received).await? {
            Plan::Whole(routed) => Ok(routed),
            Plan::Single {
                req,
                prep,
                key,
                cascade,
            } => {
                let mut routed = match cascade {
                    Some(max_calls) => self.run_cascade(&req, &prep, max_calls).await?,
                    None => self.run_single(&req, &prep).await?,
                };
                routed.cache = self.remember_routed(key, &routed).await;
                Ok(routed)
            }
        }
    }

    /// What both the whole and the streamed path do first: check the
    /// request, answer it from the cache, or with variations (judged whole),
    /// or prepare it for one model.
    async fn plan(&self, req: RouteRequest, received: Instant) -> Result<Plan> {
        let k = self.check_variations(&req)?;
        let key = self.cache_key(&req);
        if let Some(key) = &key {
            if let Some(hit) = self.cached_answer(&req, key, received).await {
                return Ok(Plan::Whole(hit));
            }
        }
        let prep = self.prepare(&req, received)?;
        let cascade = self.cascade_calls(&req, &prep, k)?;
        if k > 1 && req.pinned.is_none() && prep.candidates.len() > 1 {
            let mut routed = self.run_variations(req, prep, k).await?;
            routed.cache = self.remember_routed(key, &routed).await;
            return Ok(Plan::Whole(routed));
        }
        Ok(Plan::Single {
            req,
            prep,
            key,
            cascade,
        })
    }

    /// Stores a routed answer under `key` (when there is one), saying what
    /// the cache did.
    async fn remember_routed(&self, key: Option<CacheKey>, routed: &Routed) -> CacheStatus {
        match key {
            Some(key) => {
                self.remember(key, &routed.model, &routed.completion).await;
                CacheStatus::Miss
            }
            None => CacheStatus::Bypass,
        }
    }

    /// The number of variations `req` asks for, checked with `combine`.
    fn check_variations(&self, req: &RouteRequest) -> Result<usize> {
        let k = req.variations.unwrap_or(self.config.variations.default);
        if k == 0 || k > self.config.variations.max {
            return Err(Error::InvalidInput(format!(
                "variations: must lie in 1..={}, got {k}",
                self.config.variations.max
            )));
        }
        if req.combine && k < 2 {
            return Err(Error::InvalidInput("combine: needs at least 2 variations".into()));
        }
        if req.combine && self.config.variations.combine_model.is_none() {
            return Err(Error::InvalidInput(
                "combine: no variations.combine_model is configured on this gateway".into(),
            ));
        }
        Ok(k)
    }
}
