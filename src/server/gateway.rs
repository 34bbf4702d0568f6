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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::catalog::ModelCard;
use crate::config::{Config, ModelConfig, ProviderConfig, ProviderKind, EMBEDDED_DATASET};
use crate::dataset::Dataset;
use crate::exec::providers::{self, Anthropic, ChatRequest, Completion, Gemini, OpenAiCompat, Provider, Simulated};
use crate::exec::resilience::{call_with_retries, BreakerState, CircuitBreaker};
use crate::features::{Featurizer, RequestContext};
use crate::policy::{checkpoint, DqnPolicy, Explorer, OperatingPoint};
use crate::store::{DecisionRecord, GroupWriter, Outcome, SledStore};
use crate::train::learner::{Learner, LearnerConfig};
use crate::train::online::{OnlineConfig, OnlineTrainer};
use crate::{Error, Result};

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
    pub timings: Timings,
    /// Time spent waiting on upstreams, retries' backoff included.
    pub upstream: Duration,
}

/// Everything a request needs, shared by all handlers.
pub struct Gateway {
    pub config: Config,
    pub models: Vec<ServedModel>,
    index: HashMap<String, usize>,
    featurizer: Featurizer,
    policy: Arc<ArcSwap<DqnPolicy>>,
    explorer: Explorer,
    /// Declared before `trainer` and `store` so it drains first on drop.
    writer: GroupWriter,
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
        let explorer = Explorer::new(config.policy.exploration, config.policy.floor, config.policy.budget);

        let (policy, trainer) = if config.learning.enabled {
            let l = &config.learning;
            let learner = Learner::new(policy, LearnerConfig::online(), rand::random());
            let trainer = Arc::new(OnlineTrainer::spawn(
                store.clone(),
                learner,
                OnlineConfig {
                    batch: l.batch,
                    publish_every: l.publish_every,
                    default_quality: l.default_quality,
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
        let t0 = received;
        let request_id = new_request_id();
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
        let candidates = self.candidates(&req, prompt.chars().count() as f32)?;

        let policy = self.policy.load_full();
        let features = self.featurizer.featurize(&RequestContext {
            prompt: &prompt,
            task_type: req.task_type.as_deref(),
            persona: req.persona.as_deref(),
            metadata: &[],
        });
        let cards: Vec<&ModelCard> = candidates.iter().map(|&i| &self.models[i].card).collect();
        let point = OperatingPoint {
            cost_weight,
            latency_weight,
        };
        let scores = policy.scores(&features, &cards, point)?;
        let (chosen, propensities) = if req.pinned.is_some() {
            (0, vec![1.0])
        } else {
            let c = self
                .explorer
                .choose(&scores, &mut rand::thread_rng())
                .ok_or_else(|| Error::Unavailable("no candidate model".into()))?;
            (c.chosen, c.propensities)
        };
        // The chosen model first, then the rest by score: the fallback order.
        let mut order: Vec<usize> = (0..candidates.len()).filter(|&k| k != chosen).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order.insert(0, chosen);
        order.truncate(if req.pinned.is_some() {
            1
        } else {
            1 + self.config.retry.max_fallbacks
        });
        let decision_us = t0.elapsed().as_secs_f64() * 1e6;

        let deadline = tokio::time::Instant::now() + self.config.limits.request_timeout();
        let mut attempts = Vec::new();
        let mut upstream = Duration::ZERO;
        let mut last_error = None;
        for (n, &k) in order.iter().enumerate() {
            let model = &self.models[candidates[k]];
            let id = &model.config.id;
            let (decision_id, record_candidates, record_props) = if n == 0 {
                let names = candidates.iter().map(|&i| self.models[i].config.id.clone()).collect();
                (request_id.clone(), names, propensities.clone())
            } else {
                metrics::counter!("qroute_fallbacks_total").increment(1);
                let rest: Vec<String> = order[n..]
                    .iter()
                    .map(|&j| self.models[candidates[j]].config.id.clone())
                    .collect();
                let mut props = vec![0.0; rest.len()];
                props[0] = 1.0;
                (format!("{request_id}/fallback-{n}"), rest, props)
            };
            let record = DecisionRecord {
                request_id: decision_id.clone(),
                time_ms: unix_ms(),
                features: features.clone(),
                candidates: record_candidates,
                propensities: record_props,
                chosen: vec![id.clone()],
                policy_version: policy.version,
                cost_weight,
                latency_weight,
                task: req.task_type.clone(),
            };
            if !model.breaker.try_acquire(Instant::now()) {
                // Another request holds this half-open breaker's one probe.
                // The decision is still logged (without an outcome), so the
                // request id always names a record.
                self.writer.decision_later(record);
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
            let attempted = if self.config.store.durable_ack {
                let (durable, attempted) = tokio::join!(self.writer.decision(record), call);
                durable?;
                attempted
            } else {
                self.writer.decision_later(record);
                call.await
            };
            upstream += attempted.upstream_time;
            let latency_ms = attempted.upstream_time.as_secs_f64() * 1e3;
            metrics::histogram!("qroute_upstream_duration_seconds", "model" => id.clone())
                .record(attempted.upstream_time.as_secs_f64());
            if attempted.calls > 1 {
                metrics::counter!("qroute_retries_total", "model" => id.clone()).increment(attempted.calls as u64 - 1);
            }
            let mut outcome = Outcome {
                request_id: decision_id,
                model: id.clone(),
                quality: None,
                cost_usd: 0.0,
                latency_ms,
                error: None,
                time_ms: unix_ms(),
            };
            match attempted.result {
                Ok(completion) => {
                    model.breaker.on_success();
                    let cost = completion
                        .known_cost_usd
                        .unwrap_or_else(|| model.config.price(completion.input_tokens, completion.output_tokens));
                    outcome.quality = completion.known_quality.map(|q| q.clamp(0.0, 1.0));
                    outcome.cost_usd = cost;
                    self.writer.outcome_later(outcome);
                    metrics::gauge!("qroute_cost_usd_total", "model" => id.clone()).increment(cost);
                    attempts.push(Attempt {
                        model: id.clone(),
                        calls: attempted.calls,
                        latency_ms,
                        error: None,
                    });
                    let total = t0.elapsed();
                    let overhead = total.saturating_sub(upstream);
                    return Ok(Routed {
                        request_id,
                        model: id.clone(),
                        completion,
                        cost_usd: cost,
                        policy_version: policy.version,
                        propensity: propensities[chosen],
                        cost_weight,
                        attempts,
                        upstream,
                        timings: Timings {
                            total_ms: total.as_secs_f64() * 1e3,
                            upstream_ms: upstream.as_secs_f64() * 1e3,
                            overhead_ms: overhead.as_secs_f64() * 1e3,
                            decision_us,
                        },
                    });
                }
                Err(e) => {
                    if model.breaker.on_failure(Instant::now()) {
                        tracing::warn!(model = %id, "circuit breaker opened");
                        metrics::counter!("qroute_breaker_opened_total", "model" => id.clone()).increment(1);
                    }
                    metrics::counter!("qroute_upstream_errors_total", "model" => id.clone()).increment(1);
                    outcome.error = Some(e.message.clone());
                    self.writer.outcome_later(outcome);
                    attempts.push(Attempt {
                        model: id.clone(),
                        calls: attempted.calls,
                        latency_ms,
                        error: Some(e.message.clone()),
                    });
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
