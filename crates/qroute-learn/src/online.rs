//! The online trainer: a background thread that learns from the experience
//! store while traffic flows, and publishes each new policy version through
//! an atomic pointer.
//!
//! Serving reads the current policy with `ArcSwap::load`, which never waits
//! on the trainer: the trainer works on its own copy of the weights and only
//! swaps a finished, immutable snapshot in.
//!
//! With a [`Checkpoints`] registry the trainer's work survives the process:
//! version numbers come from the registry (never reused), the serving
//! version is checkpointed at most every `every` and again when the trainer
//! stops, and a newer version another process registers (a rollback) is
//! adopted and trained on from then on. The same loop runs in the gateway
//! (`learning.mode = "online"`) and out of process (`qroute train --follow`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::learner::{Learner, Observation, StepStats};
use crate::config::LearningConfig;
use crate::grad::Batch;
use crate::registry::{writer_id, Lineage, Registry};
use qroute_core::policy::DqnPolicy;
use qroute_core::record::Experience;
use qroute_core::store::ExperienceStore;
use qroute_core::store::Sampling;

/// How the online trainer samples, steps and publishes.
#[derive(Debug, Clone)]
pub struct OnlineConfig {
    /// Experiences per gradient step.
    pub batch: usize,
    /// Replay sampling; recency-weighted by default so drift is followed.
    pub sampling: Sampling,
    /// Steps between published versions.
    pub publish_every: u64,
    /// At least this long between published versions.
    pub publish_interval: Duration,
    /// Where versions are checkpointed; `None` keeps them in memory only.
    pub checkpoints: Option<Checkpoints>,
    /// What quality an unjudged outcome is learned with, and when.
    pub labels: Labels,
    /// How long to wait for new data when the store has none to learn from.
    pub idle_wait: Duration,
    /// Replay ratio: at most this many steps per decision stored since the
    /// trainer started, so an idle server does not keep fitting old data.
    /// `None`: step whenever there is data.
    pub steps_per_experience: Option<f32>,
    /// At most this many steps per second, so training leaves the cores to
    /// serving. `None`: no limit.
    pub max_steps_per_sec: Option<f32>,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            batch: 64,
            sampling: Sampling::Recent { half_life: 5_000 },
            publish_every: 25,
            publish_interval: Duration::ZERO,
            checkpoints: None,
            labels: Labels::default(),
            idle_wait: Duration::from_millis(50),
            steps_per_experience: None,
            max_steps_per_sec: None,
        }
    }
}

impl OnlineConfig {
    /// The trainer `[learning]` describes, checkpointing into `checkpoints`.
    pub fn from_section(l: &LearningConfig, checkpoints: Option<Checkpoints>) -> OnlineConfig {
        OnlineConfig {
            batch: l.batch,
            publish_every: l.publish_every,
            publish_interval: Duration::from_secs_f64(l.publish_every_s),
            checkpoints,
            labels: Labels {
                default_quality: l.default_quality,
                feedback_window_ms: l.feedback_window_ms,
            },
            steps_per_experience: Some(l.steps_per_experience),
            max_steps_per_sec: Some(l.max_steps_per_sec),
            ..OnlineConfig::default()
        }
    }
}

impl Checkpoints {
    /// Checkpoints as `[learning]` says, into `registry`, continuing
    /// `lineage`; `source` names the trainer in what it writes (`online`
    /// for the gateway's, `follow` for `qroute train --follow`).
    pub fn from_section(l: &LearningConfig, registry: Registry, lineage: Lineage, source: &str) -> Checkpoints {
        Checkpoints {
            registry,
            every: Duration::from_secs_f64(l.checkpoint_every_s),
            keep: l.keep_versions,
            lineage: Lineage {
                source: source.into(),
                writer: writer_id(),
                ..lineage
            },
        }
    }
}

/// Checkpointing into a policy registry.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub registry: Registry,
    /// At most this often (`Duration::ZERO`: every published version, as
    /// the external trainer does so that the gateway sees each one).
    pub every: Duration,
    /// Versions kept in the registry (older ones are removed).
    pub keep: usize,
    /// Lineage of the version the trainer starts from: its `base`, `steps`
    /// and `source` carry over to what it checkpoints.
    pub lineage: Lineage,
}

/// How often the trainer looks for a version another process registered.
const ADOPT_POLL: Duration = Duration::from_millis(250);

/// The quality label of an outcome nobody judged (a real provider's answer
/// with no judge and no feedback yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct Labels {
    /// Learned once the feedback window has passed with no feedback: the
    /// default reward. `None` never learns such outcomes.
    pub default_quality: Option<f32>,
    /// How long to wait for feedback before the default applies, in ms.
    /// Until then such an outcome is not learned from.
    pub feedback_window_ms: u64,
}

impl Labels {
    /// The quality to learn for `o` at `now_ms`, if any: the recorded one
    /// (judged, or set by feedback) at once; otherwise the default once the
    /// feedback window has passed, and nothing before. A failed call counts
    /// as quality 0, at once when `judged` (another outcome of the same
    /// decision has a quality: variations, simulated providers), else on the
    /// same clock as unjudged answers, so that failures are not learned
    /// ahead of the successes they compete with.
    pub fn quality(&self, o: &qroute_core::record::Outcome, judged: bool, now_ms: u64) -> Option<f32> {
        if o.quality.is_some() {
            return o.quality;
        }
        let waited = now_ms.saturating_sub(o.time_ms) >= self.feedback_window_ms;
        match &o.error {
            Some(_) if judged => Some(0.0),
            Some(_) => (waited && self.default_quality.is_some()).then_some(0.0),
            None => self.default_quality.filter(|_| waited),
        }
    }
}

/// Turns experiences into one training batch and takes a step. Outcomes of
/// models missing from the policy's catalog, features of another spec, and
/// outcomes [`Labels::quality`] has no label for yet are skipped. A failed
/// call delivered nothing: quality 0. Returns `None` when nothing was usable.
pub fn learn_from(learner: &mut Learner, experiences: &[Arc<Experience>], labels: &Labels) -> Option<StepStats> {
    learn_from_at(learner, experiences, labels, qroute_core::unix_ms())
}

/// [`learn_from`] at a given time (tests pass their own clock).
pub fn learn_from_at(
    learner: &mut Learner,
    experiences: &[Arc<Experience>],
    labels: &Labels,
    now_ms: u64,
) -> Option<StepStats> {
    let dim = learner.policy().spec.dim;
    let mut batch = Batch::default();
    for exp in experiences {
        let x = &exp.decision.features;
        if x.dim != dim {
            continue;
        }
        let ctx = batch.contexts.len();
        let mut used = false;
        let judged = exp.outcomes.iter().any(|o| o.quality.is_some());
        for o in &exp.outcomes {
            let quality = labels.quality(o, judged, now_ms);
            let Some(card) = learner.policy().catalog.get(&o.model) else {
                continue;
            };
            if quality.is_none() {
                continue;
            }
            let obs = Observation {
                quality,
                cost_usd: o.cost_usd,
                // No real call takes 0 ms: 0 means it was not measured.
                latency_ms: (o.latency_ms > 0.0).then_some(o.latency_ms),
            };
            batch.items.push(learner.item(ctx, x, card, &obs, 1.0));
            used = true;
        }
        if used {
            batch.contexts.push(x);
        }
    }
    (!batch.items.is_empty()).then(|| learner.step(&batch))
}

/// Counters the trainer thread updates and anyone may read.
#[derive(Debug, Default)]
pub struct TrainerStats {
    pub steps: AtomicU64,
    pub published: AtomicU64,
    /// Last step's loss, as f32 bits.
    pub last_loss_bits: AtomicU64,
}

impl TrainerStats {
    pub fn last_loss(&self) -> f32 {
        f32::from_bits(self.last_loss_bits.load(Ordering::Relaxed) as u32)
    }
}

/// Handle to the background trainer. Dropping it stops the thread.
pub struct OnlineTrainer {
    current: Arc<ArcSwap<DqnPolicy>>,
    stop: Arc<AtomicBool>,
    /// Set while the thread waits for new experiences: only then does
    /// [`OnlineTrainer::notify`] wake it.
    hungry: Arc<AtomicBool>,
    stats: Arc<TrainerStats>,
    handle: Mutex<Option<JoinHandle<Learner>>>,
}

impl OnlineTrainer {
    /// Starts training from `store`, serving `learner`'s snapshot until the
    /// first new version is published.
    pub fn spawn(
        store: Arc<dyn ExperienceStore>,
        learner: Learner,
        cfg: OnlineConfig,
    ) -> qroute_core::Result<OnlineTrainer> {
        let start_version = learner.policy().version;
        let current = Arc::new(ArcSwap::from_pointee(learner.snapshot(start_version)));
        let stop = Arc::new(AtomicBool::new(false));
        let hungry = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(TrainerStats::default());
        let handle = {
            let (current, stop, hungry, stats) = (current.clone(), stop.clone(), hungry.clone(), stats.clone());
            let state = Loop {
                version: start_version,
                checkpointed: start_version,
                store,
                cfg,
                current,
                stop,
                hungry,
                stats,
            };
            std::thread::Builder::new()
                .name("qroute-trainer".into())
                .spawn(move || state.run(learner))
                .map_err(|e| qroute_core::Error::io("spawning the trainer thread", e))?
        };
        Ok(OnlineTrainer {
            current,
            stop,
            hungry,
            stats,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// The pointer serving reads from.
    pub fn current(&self) -> Arc<ArcSwap<DqnPolicy>> {
        self.current.clone()
    }

    /// The policy serving uses right now.
    pub fn policy(&self) -> Arc<DqnPolicy> {
        self.current.load_full()
    }

    pub fn stats(&self) -> &TrainerStats {
        &self.stats
    }

    /// Wakes the trainer early (new experiences arrived), if it is waiting
    /// for them. The group writer calls this after every group of outcomes,
    /// hundreds of times a second under load; a trainer pacing itself to
    /// `max_steps_per_sec` has work already, and waking it only to park it
    /// again cost a futex call and two context switches each time (about
    /// 1,000 a second at 2,000 req/s).
    pub fn notify(&self) {
        if !self.hungry.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(h) = self.handle.try_lock() {
            if let Some(h) = h.as_ref() {
                h.thread().unpark();
            }
        }
    }

    /// Stops the thread (publishing and checkpointing what it learned since
    /// the last version) and returns the learner with its optimiser state;
    /// `None` if the thread panicked or was already stopped.
    pub fn stop(&self) -> Option<Learner> {
        self.stop.store(true, Ordering::Release);
        let h = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        h.thread().unpark();
        h.join().ok()
    }
}

impl Drop for OnlineTrainer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Puts the calling thread at the lowest scheduling priority (nice 19):
/// training takes the CPU serving leaves, so it never delays a request,
/// yet it still gets a small share under full load (unlike `SCHED_IDLE`),
/// so learning slows under overload but does not stop. Best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "could not lower the trainer's priority");
    }
}

/// The trainer thread's state.
struct Loop {
    store: Arc<dyn ExperienceStore>,
    cfg: OnlineConfig,
    current: Arc<ArcSwap<DqnPolicy>>,
    stop: Arc<AtomicBool>,
    hungry: Arc<AtomicBool>,
    stats: Arc<TrainerStats>,
    /// The version serving now.
    version: u64,
    /// The newest version in the registry that this loop wrote or adopted.
    checkpointed: u64,
}

impl Loop {
    fn run(mut self, mut learner: Learner) -> Learner {
        lower_priority();
        let cfg = self.cfg.clone();
        let mut since_publish = 0;
        let mut start_len = self.store.len();
        let mut steps = 0u64;
        let min_interval = cfg
            .max_steps_per_sec
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64((1.0 / r as f64).min(3600.0)));
        let mut last_step = Instant::now();
        let mut last_publish = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut last_poll = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if last_poll.elapsed() >= ADOPT_POLL {
                last_poll = Instant::now();
                if let Some(adopted) = self.adopt_newer(&learner) {
                    learner = adopted;
                    since_publish = 0;
                    start_len = self.store.len();
                    steps = 0;
                }
            }
            if since_publish >= cfg.publish_every && last_publish.elapsed() >= cfg.publish_interval {
                self.publish(&learner);
                since_publish = 0;
                last_publish = Instant::now();
            }
            if let Some(c) = &cfg.checkpoints {
                if self.checkpointed != self.version && last_checkpoint.elapsed() >= c.every {
                    self.checkpoint(c);
                    last_checkpoint = Instant::now();
                }
            }
            if let Some(ratio) = cfg.steps_per_experience {
                let allowed = |len: usize| ratio as f64 * len.saturating_sub(start_len) as f64;
                if steps as f64 >= allowed(self.store.len()) {
                    // Hungry first, then look again: an append that lands
                    // between the two wakes the park below.
                    self.hungry.store(true, Ordering::Release);
                    if steps as f64 >= allowed(self.store.len()) {
                        std::thread::park_timeout(cfg.idle_wait);
                    }
                    self.hungry.store(false, Ordering::Release);
                    continue;
                }
            }
            if let Some(gap) = min_interval {
                let since = last_step.elapsed();
                if since < gap {
                    // Parked, not slept: `stop` unparks it at once.
                    std::thread::park_timeout(gap - since);
                    continue;
                }
            }
            last_step = Instant::now();
            let exps = match self.store.sample(cfg.batch, &cfg.sampling, &mut learner.rng) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "trainer could not sample the store");
                    Vec::new()
                }
            };
            let Some(step) = learn_from(&mut learner, &exps, &cfg.labels) else {
                self.hungry.store(true, Ordering::Release);
                std::thread::park_timeout(cfg.idle_wait);
                self.hungry.store(false, Ordering::Release);
                continue;
            };
            steps += 1;
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_loss_bits
                .store(step.loss.to_bits() as u64, Ordering::Relaxed);
            since_publish += 1;
        }
        if since_publish > 0 {
            self.publish(&learner);
        }
        if let Some(c) = &cfg.checkpoints {
            if self.checkpointed != self.version {
                self.checkpoint(c);
            }
        }
        learner
    }

    /// Serves the learner's weights as a new version: the next number from
    /// the registry when there is one (so it is never reused), else one up.
    fn publish(&mut self, learner: &Learner) {
        let next = match &self.cfg.checkpoints {
            Some(c) => match c.registry.allocate(self.version + 1) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "could not take a version number; not publishing");
                    return;
                }
            },
            None => self.version + 1,
        };
        self.version = next;
        self.current.store(Arc::new(learner.snapshot(next)));
        self.stats.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers the serving version and trims the registry.
    fn checkpoint(&mut self, c: &Checkpoints) {
        let policy = self.current.load_full();
        let lineage = Lineage {
            parent: Some(self.checkpointed),
            steps: c.lineage.steps + self.stats.steps.load(Ordering::Relaxed),
            experiences: self.store.len() as u64,
            created_ms: qroute_core::unix_ms(),
            ..c.lineage.clone()
        };
        match c.registry.save(&policy, &lineage) {
            Ok(_) => {
                self.checkpointed = policy.version;
                if let Err(e) = c.registry.prune(c.keep) {
                    tracing::warn!(error = %e, "could not trim the policy registry");
                }
            }
            Err(e) => tracing::warn!(error = %e, version = policy.version, "checkpoint failed"),
        }
    }

    /// A version newer than the serving one that another process registered
    /// (`qroute policy rollback`): serve it at once and train on from it.
    fn adopt_newer(&mut self, learner: &Learner) -> Option<Learner> {
        let registry = &self.cfg.checkpoints.as_ref()?.registry;
        // Newer than what this loop last registered, not than what it
        // serves: a version published in memory after the other process
        // took its number must not hide it.
        let newer = match registry.newer_than(self.checkpointed) {
            Ok(p) => p?,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the policy registry");
                return None;
            }
        };
        if newer.spec != learner.policy().spec {
            tracing::warn!(
                version = newer.version,
                "ignoring a registered version with another feature spec"
            );
            return None;
        }
        tracing::info!(
            version = newer.version,
            "adopting a version registered by another process"
        );
        let registered = newer.version;
        self.checkpointed = registered;
        let seed = rand::RngCore::next_u64(&mut learner.rng.clone());
        let adopted = Learner::new(newer, learner.config().clone(), seed);
        if registered > self.version {
            self.version = registered;
            self.current.store(Arc::new(adopted.snapshot(registered)));
            self.stats.published.fetch_add(1, Ordering::Relaxed);
        } else {
            // Serving numbers only increase: the same weights go out under
            // the next number (registered at the next checkpoint).
            self.publish(&adopted);
        }
        Some(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::record::Outcome;

    fn outcome(quality: Option<f32>, error: Option<&str>, time_ms: u64) -> Outcome {
        Outcome {
            request_id: "r".into(),
            model: "m".into(),
            quality,
            cost_usd: 0.01,
            latency_ms: 100.0,
            error: error.map(String::from),
            time_ms,
            ttft_ms: None,
        }
    }

    #[test]
    fn the_default_reward_applies_only_after_the_window() {
        let labels = Labels {
            default_quality: Some(0.6),
            feedback_window_ms: 1_000,
        };
        let unjudged = outcome(None, None, 10_000);
        assert_eq!(
            labels.quality(&unjudged, false, 10_500),
            None,
            "still waiting for feedback"
        );
        assert_eq!(
            labels.quality(&unjudged, false, 11_000),
            Some(0.6),
            "the window has passed"
        );
        // Judged or fed-back quality wins at any time.
        assert_eq!(
            labels.quality(&outcome(Some(0.9), None, 10_000), true, 10_001),
            Some(0.9)
        );
        // A failure is 0: at once beside judged answers, else on the same
        // clock as unjudged ones.
        let failed = outcome(None, Some("500"), 10_000);
        assert_eq!(labels.quality(&failed, true, 10_001), Some(0.0));
        assert_eq!(labels.quality(&failed, false, 10_001), None);
        assert_eq!(labels.quality(&failed, false, 11_000), Some(0.0));
        // Without a default, unjudged answers and their failures are never learned.
        let none = Labels {
            default_quality: None,
            feedback_window_ms: 0,
        };
        assert_eq!(none.quality(&unjudged, false, u64::MAX), None);
        assert_eq!(none.quality(&failed, false, u64::MAX), None);
    }
}
