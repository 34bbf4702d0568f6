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
//!    episode (DESIGN.md): the next-best candidate by score is tried under
//!    its own decision record, `{request_id}/fallback-{n}`, with propensity 1
//!    because the fallback order is deterministic.
//! 5. Each model's outcome (quality when known, cost, latency, error) is
//!    queued to the writer; it is durable within one group commit after the
//!    response, and the online trainer learns from it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::variations::Variation;
use crate::catalog::ModelCard;
use crate::config::{Config, JudgeKind, ModelConfig, ProviderConfig, ProviderKind, EMBEDDED_DATASET};
use crate::dataset::Dataset;
use crate::exec::judge::{Judge, LlmJudge};
use crate::exec::providers::{self, Anthropic, ChatRequest, Completion, Gemini, OpenAiCompat, Provider, Simulated};
use crate::exec::resilience::{call_with_retries, Attempted, BreakerState, CircuitBreaker};
use crate::experiment::{ArmSpec, Enrollment, Experiments, LiveArm};
use crate::features::FeatureSpec;
use crate::features::{Features, Featurizer, RequestContext};
use crate::policy::explore::{argmax, draw_without_replacement};
use crate::policy::{checkpoint, DqnPolicy, Explorer, FrozenPolicy, OperatingPoint, Policy, Prediction, Strategy};
use crate::store::{Answered, DecisionRecord, ExperimentTag, GroupWriter, Outcome, ShadowPick, SledStore};
use crate::train::learner::{Learner, LearnerConfig};
use crate::train::online::{Labels, OnlineConfig, OnlineTrainer};
use crate::{unix_ms, Error, Result};

/// The bundled dataset behind [`EMBEDDED_DATASET`].
const EMBEDDED_DATASET_BYTES: &[u8] = include_bytes!("../../data/routellm_mmlu_gsm8k.jsonl");

/// A configured model, ready to call.
pub struct ServedModel {
    pub config: ModelConfig,
    /// What the policy scores: the trained card when the policy knows the
    /// model, else one made from the configured prices.
    pub card: ModelCard,
    pub provider: Arc<Provider>,
    pub breaker: CircuitBreaker,
}

/// The caller's trade-off between quality, cost and latency, and limits on
/// what may be chosen.
#[derive(Debug, Clone, Default)]
pub struct Preference {
    pub cost_weight: Option<f32>,
    pub latency_weight: Option<f32>,
    /// Leave out models whose expected cost for this prompt is above this.
    pub max_cost_usd: Option<f64>,
    /// Only these model ids.
    pub models: Option<Vec<String>>,
}

/// A request to route, whichever endpoint it came from.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub chat: ChatRequest,
    pub task_type: Option<String>,
    pub persona: Option<String>,
    pub preference: Preference,
    /// Skip the policy and call this model (a concrete model id on the
    /// OpenAI endpoint). Still logged, with propensity 1; no fallback.
    pub pinned: Option<String>,
    /// Models to run in parallel (`variations.default` when `None`).
    pub variations: Option<usize>,
    /// Merge the variations' answers with `variations.combine_model`
    /// instead of returning the judged best.
    pub combine: bool,
    /// The experiment arm (or holdout) this request's unit is assigned to.
    pub enrollment: Option<Arc<Enrollment>>,
}

/// One model tried for a request.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub model: String,
    /// Upstream calls made (1 + retries).
    pub calls: u32,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// Where the time of a request went.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timings {
    pub total_ms: f64,
    /// Waiting on upstreams, retries' backoff included.
    pub upstream_ms: f64,
    /// Everything else: the gateway's own added latency.
    pub overhead_ms: f64,
    /// Reading the request, featurizing, scoring and drawing.
    pub decision_us: f64,
}

/// A routed and answered request.
#[derive(Debug, Clone)]
pub struct Routed {
    pub request_id: String,
    /// The model that answered.
    pub model: String,
    pub completion: Completion,
    pub cost_usd: f64,
    pub policy_version: u64,
    /// Probability the policy gave the first model it chose.
    pub propensity: f32,
    pub cost_weight: f32,
    pub attempts: Vec<Attempt>,
    /// Every variation run (empty for a single-model request).
    pub variations: Vec<Variation>,
    /// The judge that picked among variations.
    pub judge: Option<&'static str>,
    /// The model that merged the variations' answers, when asked to.
    pub combined_by: Option<String>,
    pub timings: Timings,
    /// Time spent waiting on upstreams, retries' backoff included.
    pub upstream: Duration,
}

impl Timings {
    /// Timings of a request that arrived at `received` and waited `upstream`.
    pub fn new(received: Instant, upstream: Duration, decision_us: f64) -> Timings {
        let total = received.elapsed();
        Timings {
            total_ms: total.as_secs_f64() * 1e3,
            upstream_ms: upstream.as_secs_f64() * 1e3,
            overhead_ms: total.saturating_sub(upstream).as_secs_f64() * 1e3,
            decision_us,
        }
    }
}

/// What [`Gateway::prepare`] decided, before any model is called.
pub(super) struct Prepared {
    pub request_id: String,
    pub received: Instant,
    pub policy: Arc<DqnPolicy>,
    pub features: Features,
    /// Indices into [`Gateway::models`].
    pub candidates: Vec<usize>,
    /// Policy score of each candidate.
    pub scores: Vec<f32>,
    /// Position in `candidates` the explorer drew.
    pub chosen: usize,
    pub propensities: Vec<f32>,
    pub cost_weight: f32,
    pub latency_weight: f32,
    pub decision_us: f64,
    pub experiment: Option<ExperimentTag>,
    pub shadow: Option<ShadowPick>,
}

/// A candidate policy scoring live traffic without acting on it.
pub struct Shadow {
    pub name: String,
    pub policy: FrozenPolicy,
    /// Decisions it scored, and how many of them it would have made the same.
    pub decisions: std::sync::atomic::AtomicU64,
    pub agreements: std::sync::atomic::AtomicU64,
}

/// Everything a request needs, shared by all handlers.
pub struct Gateway {
    pub config: Config,
    pub models: Vec<ServedModel>,
    index: HashMap<String, usize>,
    featurizer: Featurizer,
    policy: Arc<ArcSwap<DqnPolicy>>,
    explorer: Explorer,
    /// Round-robin's turn counter.
    turn: std::sync::atomic::AtomicU64,
    pub experiments: Experiments,
    pub shadow: Option<Shadow>,
    /// Scores the answers of variations.
    pub(super) judge: Judge,
    /// Declared before `trainer` and `store` so it drains first on drop.
    pub(super) writer: GroupWriter,
    trainer: Option<Arc<OnlineTrainer>>,
    pub store: Arc<SledStore>,
    pub started: Instant,
}

impl Gateway {
    /// Loads the policy, opens the store, builds the provider clients, and
    /// starts the writer and (when enabled) the online trainer.
    pub fn build(config: Config) -> Result<Gateway> {
        let mut policy = match &config.policy.path {
            Some(p) => checkpoint::load(p)?,
            None => checkpoint::embedded_default()?,
        };
        let client = providers::http_client(Duration::from_millis(config.limits.connect_timeout_ms));
        let mut built: HashMap<String, Arc<Provider>> = HashMap::new();
        for p in &config.providers {
            built.insert(p.name.clone(), Arc::new(provider(p, &client)?));
        }

        let mut models = Vec::with_capacity(config.models.len());
        for m in &config.models {
            let card = match policy.catalog.get(&m.id) {
                Some(c) => c.clone(),
                None => {
                    let mut c = ModelCard::from_prices(
                        &m.id,
                        m.input_per_mtok,
                        m.output_per_mtok,
                        config.policy.expected_output_tokens,
                        m.tags.clone(),
                    );
                    if let Provider::Simulated(sim) = &*built[&m.provider] {
                        if let Some(fitted) = sim.cards().find(|f| f.id == m.upstream()) {
                            c = ModelCard {
                                id: m.id.clone(),
                                tags: m.tags.clone(),
                                ..fitted.clone()
                            };
                        }
                    }
                    // Known to the policy from now on, so the trainer learns it.
                    policy.catalog.models.push(c.clone());
                    c
                }
            };
            models.push(ServedModel {
                config: m.clone(),
                card,
                provider: built[&m.provider].clone(),
                breaker: CircuitBreaker::new(&config.breaker),
            });
        }
        policy.refresh_cache();
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.config.id.clone(), i))
            .collect();

        std::fs::create_dir_all(&config.store.path)
            .map_err(|e| Error::io(format!("creating {}", config.store.path.display()), e))?;
        let store = Arc::new(SledStore::open(&config.store.path)?);
        let featurizer = Featurizer::new(policy.spec.clone())?;
        let served: Vec<ModelCard> = models.iter().map(|m| m.card.clone()).collect();
        let shadow = match &config.policy.shadow {
            None => None,
            Some(s) => Some(Shadow {
                name: s.name.clone(),
                policy: FrozenPolicy::load(&s.path, &policy.spec, &served)
                    .map_err(|e| Error::InvalidInput(format!("policy.shadow: {e}")))?,
                decisions: Default::default(),
                agreements: Default::default(),
            }),
        };
        let experiments = {
            let spec = policy.spec.clone();
            let resolve = move |arm: &ArmSpec| resolve_arm(arm, &served, &spec);
            Experiments::open(store.clone(), &config.experiments, Box::new(resolve), unix_ms())?
        };
        let explorer = Explorer::new(config.policy.exploration, config.policy.floor, config.policy.budget);
        let judge = match config.variations.judge {
            JudgeKind::Heuristic => Judge::Heuristic,
            JudgeKind::Agreement => Judge::Agreement,
            JudgeKind::Dataset => Judge::Dataset,
            JudgeKind::Llm => {
                let id = config.variations.judge_model.as_deref().unwrap_or_default();
                let m = models
                    .iter()
                    .find(|m| m.config.id == id)
                    .expect("config checks judge_model names a model");
                Judge::Llm(LlmJudge {
                    provider: m.provider.clone(),
                    upstream: m.config.upstream().to_string(),
                    input_per_mtok: m.config.input_per_mtok,
                    output_per_mtok: m.config.output_per_mtok,
                    timeout: config.limits.attempt_timeout(),
                })
            }
        };

        let (policy, trainer) = if config.learning.enabled {
            let l = &config.learning;
            let learner = Learner::new(policy, LearnerConfig::online(), rand::random());
            let trainer = Arc::new(OnlineTrainer::spawn(
                store.clone(),
                learner,
                OnlineConfig {
                    batch: l.batch,
                    publish_every: l.publish_every,
                    labels: Labels {
                        default_quality: l.default_quality,
                        feedback_window_ms: l.feedback_window_ms,
                    },
                    steps_per_experience: Some(l.steps_per_experience),
                    max_steps_per_sec: Some(l.max_steps_per_sec),
                    ..OnlineConfig::default()
                },
            ));
            (trainer.current(), Some(trainer))
        } else {
            (Arc::new(ArcSwap::from_pointee(policy)), None)
        };
        let writer = {
            let trainer = trainer.clone();
            GroupWriter::spawn(store.clone(), move |n| {
                metrics::counter!("qroute_outcomes_recorded_total").increment(n as u64);
                if let Some(t) = &trainer {
                    t.notify();
                }
            })
        };
        Ok(Gateway {
            config,
            models,
            index,
            featurizer,
            policy,
            explorer,
            turn: std::sync::atomic::AtomicU64::new(0),
            experiments,
            shadow,
            judge,
            writer,
            trainer,
            store,
            started: Instant::now(),
        })
    }

    /// The policy serving right now.
    pub fn policy(&self) -> Arc<DqnPolicy> {
        self.policy.load_full()
    }

    /// Gradient steps the online trainer has taken (0 when learning is off).
    pub fn trainer_steps(&self) -> u64 {
        self.trainer
            .as_ref()
            .map_or(0, |t| t.stats().steps.load(std::sync::atomic::Ordering::Relaxed))
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
        let prep = self.prepare(&req, received)?;
        if k > 1 && req.pinned.is_none() && prep.candidates.len() > 1 {
            self.run_variations(req, prep, k).await
        } else {
            self.run_single(req, prep).await
        }
    }

    /// Candidates, features, scores and the policy's draw: everything
    /// before a model is called.
    fn prepare(&self, req: &RouteRequest, received: Instant) -> Result<Prepared> {
        let prompt = feature_text(&req.chat);
        if prompt.trim().is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        let pref = &req.preference;
        let cost_weight = pref.cost_weight.unwrap_or(self.config.policy.default_cost_weight);
        let latency_weight = pref.latency_weight.unwrap_or(0.0);
        for (name, w) in [("cost_weight", cost_weight), ("latency_weight", latency_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "{name}: must be a non-negative number, got {w}"
                )));
            }
        }
        let candidates = self.candidates(req, prompt.chars().count() as f32)?;

        let arm = req.enrollment.as_ref().and_then(|e| e.arm());
        let strategy = arm.map_or(&self.config.policy.strategy, |a| &a.strategy);
        let frozen = arm.and_then(|a| a.policy.as_deref());
        let policy = frozen.map_or_else(|| self.policy.load_full(), |f| f.policy.clone());
        let features = self.featurizer.featurize(&RequestContext {
            prompt: &prompt,
            task_type: req.task_type.as_deref(),
            persona: req.persona.as_deref(),
            metadata: &[],
        });
        let point = OperatingPoint {
            cost_weight,
            latency_weight,
        };
        let ids: Vec<&str> = candidates.iter().map(|&i| self.models[i].config.id.as_str()).collect();
        let preds = self.predict(&policy, frozen.map(|f| &f.cards[..]), &features, &candidates)?;
        let scores: Vec<f32> = preds.iter().map(|p| p.score(point)).collect();
        let rule = strategy.distribution(&ids, &preds, &self.turn);
        let (chosen, propensities) = match (&req.pinned, rule) {
            (Some(_), _) => (0, vec![1.0]),
            // A rule's own distribution is what was sampled: it is logged.
            (None, Some(dist)) => {
                let pick = draw_without_replacement(&dist, 1, &mut rand::thread_rng());
                (pick.models[0], dist)
            }
            (None, None) => {
                let c = self
                    .explorer
                    .choose(&scores, &mut rand::thread_rng())
                    .ok_or_else(|| Error::Unavailable("no candidate model".into()))?;
                (c.chosen, c.propensities)
            }
        };
        let shadow = match (&self.shadow, &req.pinned) {
            (Some(s), None) => {
                let preds = self.predict(&s.policy.policy, Some(&s.policy.cards), &features, &candidates)?;
                let pick = argmax(&preds.iter().map(|p| p.score(point)).collect::<Vec<_>>());
                let agree = pick == chosen;
                use std::sync::atomic::Ordering::Relaxed;
                s.decisions.fetch_add(1, Relaxed);
                s.agreements.fetch_add(agree as u64, Relaxed);
                metrics::counter!("qroute_shadow_decisions_total", "agree" => if agree { "true" } else { "false" })
                    .increment(1);
                Some(ShadowPick {
                    name: s.name.clone(),
                    version: s.policy.policy.version,
                    model: ids[pick].to_string(),
                })
            }
            _ => None,
        };
        Ok(Prepared {
            request_id: new_request_id(),
            received,
            policy,
            features,
            candidates,
            scores,
            chosen,
            propensities,
            cost_weight,
            latency_weight,
            decision_us: received.elapsed().as_secs_f64() * 1e6,
            experiment: req.enrollment.as_ref().map(|e| e.tag(&self.config.policy.strategy)),
            shadow,
        })
    }

    /// `policy`'s predictions for `candidates`, with a frozen policy's own
    /// `cards` (see [`FrozenPolicy::cards`]) or, for the live one, the
    /// served cards.
    fn predict(
        &self,
        policy: &DqnPolicy,
        cards: Option<&[ModelCard]>,
        features: &Features,
        candidates: &[usize],
    ) -> Result<Vec<Prediction>> {
        let cards: Vec<&ModelCard> = candidates
            .iter()
            .map(|&i| cards.map_or(&self.models[i].card, |c| &c[i]))
            .collect();
        let mut preds = Vec::with_capacity(cards.len());
        policy.predict(features, &cards, &mut preds)?;
        Ok(preds)
    }

    /// The decision record of `prep` with `chosen` models.
    pub(super) fn record(&self, prep: &Prepared, req: &RouteRequest, chosen: Vec<String>) -> DecisionRecord {
        DecisionRecord {
            request_id: prep.request_id.clone(),
            time_ms: unix_ms(),
            features: prep.features.clone(),
            candidates: prep
                .candidates
                .iter()
                .map(|&i| self.models[i].config.id.clone())
                .collect(),
            propensities: prep.propensities.clone(),
            chosen,
            policy_version: prep.policy.version,
            cost_weight: prep.cost_weight,
            latency_weight: prep.latency_weight,
            task: req.task_type.clone(),
            experiment: prep.experiment.clone(),
            shadow: prep.shadow.clone(),
        }
    }

    /// One model, with fallback to the next-best by score when it fails.
    async fn run_single(&self, req: RouteRequest, prep: Prepared) -> Result<Routed> {
        let Prepared {
            ref request_id,
            received: t0,
            ref policy,
            ref candidates,
            ref scores,
            chosen,
            ref propensities,
            cost_weight,
            decision_us,
            ..
        } = prep;
        // The chosen model first, then the rest by score: the fallback order.
        let mut order: Vec<usize> = (0..candidates.len()).filter(|&k| k != chosen).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order.insert(0, chosen);
        order.truncate(if req.pinned.is_some() {
            1
        } else {
            1 + self.config.retry.max_fallbacks
        });

        let deadline = tokio::time::Instant::now() + self.config.limits.request_timeout();
        let mut attempts = Vec::new();
        let mut upstream = Duration::ZERO;
        let mut last_error = None;
        for (n, &k) in order.iter().enumerate() {
            let model = &self.models[candidates[k]];
            let id = &model.config.id;
            let mut record = self.record(&prep, &req, vec![id.clone()]);
            if n > 0 {
                // A fallback is its own decision: the rest of the order, the
                // next one taken with certainty.
                metrics::counter!("qroute_fallbacks_total").increment(1);
                record.request_id = format!("{request_id}/fallback-{n}");
                record.candidates = order[n..]
                    .iter()
                    .map(|&j| self.models[candidates[j]].config.id.clone())
                    .collect();
                record.propensities = vec![0.0; record.candidates.len()];
                record.propensities[0] = 1.0;
            }
            let decision_id = record.request_id.clone();
            if !model.breaker.try_acquire(Instant::now()) {
                // Another request holds this half-open breaker's one probe.
                // The decision is still logged (without an outcome), so the
                // request id always names a record.
                if self.config.store.durable_ack {
                    self.writer.decision(record).await?;
                } else {
                    self.writer.decision_later(record);
                }
                attempts.push(Attempt {
                    model: id.clone(),
                    calls: 0,
                    latency_ms: 0.0,
                    error: Some("circuit breaker open".into()),
                });
                continue;
            }
            metrics::counter!("qroute_choices_total", "model" => id.clone()).increment(1);
            let call = call_with_retries(
                &model.provider,
                model.config.upstream(),
                &req.chat,
                &self.config.retry,
                self.config.limits.attempt_timeout(),
                deadline,
            );
            let (durable, attempted) = if self.config.store.durable_ack {
                tokio::join!(self.writer.decision(record), call)
            } else {
                self.writer.decision_later(record);
                (Ok(()), call.await)
            };
            upstream += attempted.upstream_time;
            // The breaker is settled before a failed write is reported, so no
            // probe leaks.
            let outcome = self.settle(model, &decision_id, &attempted, true);
            durable?;
            let attempt = Attempt {
                model: id.clone(),
                calls: attempted.calls,
                latency_ms: outcome.latency_ms,
                error: outcome.error.clone(),
            };
            let cost = outcome.cost_usd;
            self.writer.outcome_later(outcome);
            attempts.push(attempt);
            match attempted.result {
                Ok(completion) => {
                    self.writer.answered_later(Answered {
                        request_id: request_id.clone(),
                        decision_id,
                        model: id.clone(),
                        time_ms: unix_ms(),
                    });
                    return Ok(Routed {
                        request_id: request_id.clone(),
                        model: id.clone(),
                        completion,
                        cost_usd: cost,
                        policy_version: policy.version,
                        propensity: propensities[chosen],
                        cost_weight,
                        attempts,
                        variations: Vec::new(),
                        judge: None,
                        combined_by: None,
                        upstream,
                        timings: Timings::new(t0, upstream, decision_us),
                    });
                }
                Err(e) => {
                    let timed_out = tokio::time::Instant::now() >= deadline;
                    last_error = Some(e);
                    if timed_out {
                        break;
                    }
                }
            }
        }
        let summary = attempts
            .iter()
            .map(|a| format!("{}: {}", a.model, a.error.as_deref().unwrap_or("ok")))
            .collect::<Vec<_>>()
            .join("; ");
        Err(match last_error {
            Some(e) if tokio::time::Instant::now() >= deadline || e.kind == providers::ErrorKind::Timeout => {
                Error::Timeout(format!("request {request_id}: {summary}"))
            }
            Some(_) => Error::Upstream(format!("request {request_id}: every model tried failed ({summary})")),
            None => Error::Unavailable(format!(
                "request {request_id}: every candidate's circuit breaker is open"
            )),
        })
    }

    /// Books one model's result: its breaker, metrics, and the outcome to
    /// record (quality as the provider knows it, priced cost, latency or
    /// the error).
    /// A failure with `counts` false (a call cut by the variations'
    /// deadline) says nothing about the model's health: its breaker only
    /// gives back a probe it may have held.
    pub(super) fn settle(
        &self,
        model: &ServedModel,
        decision_id: &str,
        attempted: &Attempted,
        counts: bool,
    ) -> Outcome {
        let id = &model.config.id;
        let latency_ms = attempted.upstream_time.as_secs_f64() * 1e3;
        metrics::histogram!("qroute_upstream_duration_seconds", "model" => id.clone())
            .record(attempted.upstream_time.as_secs_f64());
        if attempted.calls > 1 {
            metrics::counter!("qroute_retries_total", "model" => id.clone()).increment(attempted.calls as u64 - 1);
        }
        let mut outcome = Outcome {
            request_id: decision_id.to_string(),
            model: id.clone(),
            quality: None,
            cost_usd: 0.0,
            latency_ms,
            error: None,
            time_ms: unix_ms(),
        };
        match &attempted.result {
            Ok(c) => {
                model.breaker.on_success();
                let cost = c
                    .known_cost_usd
                    .unwrap_or_else(|| model.config.price(c.input_tokens, c.output_tokens));
                outcome.quality = c.known_quality.map(|q| q.clamp(0.0, 1.0));
                outcome.cost_usd = cost;
                metrics::gauge!("qroute_cost_usd_total", "model" => id.clone()).increment(cost);
            }
            Err(e) if !counts => {
                model.breaker.release();
                outcome.error = Some(e.message.clone());
            }
            Err(e) => {
                if model.breaker.on_failure(Instant::now()) {
                    tracing::warn!(model = %id, "circuit breaker opened");
                    metrics::counter!("qroute_breaker_opened_total", "model" => id.clone()).increment(1);
                }
                metrics::counter!("qroute_upstream_errors_total", "model" => id.clone()).increment(1);
                outcome.error = Some(e.message.clone());
            }
        }
        outcome
    }

    /// Indices of the models this request may go to. Unknown model ids are
    /// `NotFound`; an empty set after the cost cap is `InvalidInput`; an
    /// empty set because breakers are open is `Unavailable`.
    fn candidates(&self, req: &RouteRequest, chars: f32) -> Result<Vec<usize>> {
        let lookup = |id: &str| {
            self.index.get(id).copied().ok_or_else(|| {
                Error::NotFound(format!(
                    "model {id:?} is not configured; known models: {}",
                    self.models
                        .iter()
                        .map(|m| m.config.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let mut set: Vec<usize> = match (&req.pinned, &req.preference.models) {
            (Some(id), _) => vec![lookup(id)?],
            (None, Some(ids)) if !ids.is_empty() => ids.iter().map(|id| lookup(id)).collect::<Result<_>>()?,
            (None, _) => (0..self.models.len()).collect(),
        };
        set.sort_unstable();
        set.dedup();
        if let Some(cap) = req.preference.max_cost_usd {
            if !(cap.is_finite() && cap >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "max_cost_usd: must be a non-negative number, got {cap}"
                )));
            }
            set.retain(|&i| self.models[i].card.estimate_cost(chars) <= cap);
            if set.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "max_cost_usd: no allowed model is expected to cost at most ${cap} for this prompt"
                )));
            }
        }
        let now = Instant::now();
        set.retain(|&i| self.models[i].breaker.available(now));
        if set.is_empty() {
            return Err(Error::Unavailable(
                "every allowed model's circuit breaker is open; try again after the cool-down".into(),
            ));
        }
        Ok(set)
    }
}

/// Checks an experiment arm against the served models and loads its checkpoint.
fn resolve_arm(arm: &ArmSpec, served: &[ModelCard], spec: &FeatureSpec) -> Result<LiveArm> {
    let unknown = |m: &String| {
        (!served.iter().any(|c| &c.id == m)).then(|| Error::InvalidInput(format!("no model is named {m:?}")))
    };
    match &arm.strategy {
        Strategy::Fixed { model } => unknown(model).map_or(Ok(()), Err)?,
        Strategy::Weighted { weights } => weights.keys().find_map(unknown).map_or(Ok(()), Err)?,
        _ => {}
    }
    Ok(LiveArm {
        strategy: arm.strategy.clone(),
        policy: arm
            .checkpoint
            .as_deref()
            .map(|p| FrozenPolicy::load(p, spec, served).map(Arc::new))
            .transpose()?,
    })
}

/// Builds the client for one configured provider.
fn provider(p: &ProviderConfig, client: &reqwest::Client) -> Result<Provider> {
    let config_err = |message: String| Error::Config {
        path: format!("providers.{}", p.name).into(),
        message,
    };
    let api_key = match &p.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| config_err(format!("api_key_env: environment variable {var} is not set")))?,
        ),
        None => None,
    };
    let url = p.base_url.clone().unwrap_or_default();
    Ok(match p.kind {
        ProviderKind::Openai => Provider::OpenAi(OpenAiCompat::new(client.clone(), url, api_key)),
        ProviderKind::Anthropic => Provider::Anthropic(Anthropic::new(client.clone(), url, api_key)),
        ProviderKind::Gemini => Provider::Gemini(Gemini::new(client.clone(), url, api_key)),
        ProviderKind::Simulated => {
            let name = p.dataset.as_deref().unwrap_or_default();
            let ds = if name == EMBEDDED_DATASET {
                Dataset::from_bytes(Path::new(EMBEDDED_DATASET), EMBEDDED_DATASET_BYTES)?
            } else {
                Dataset::load(name)?
            };
            Provider::Simulated(Simulated::new(&ds, p.simulate_latency))
        }
    })
}

/// The text the featurizer sees: every message's content, system first.
fn feature_text(chat: &ChatRequest) -> String {
    match chat.messages.as_slice() {
        [only] => only.content.clone(),
        many => many.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
    }
}

/// 128 random bits in hex: unique without coordination.
fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
