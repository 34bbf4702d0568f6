//! Steps 1–2: the candidate set, the features, every candidate's scores
//! and the policy's (or the arm's) draw, plus what a shadow policy would
//! have picked. Nothing here calls a model.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::exec::providers::ChatRequest;
use qroute_core::catalog::ModelCard;
use qroute_core::features::{FeatureSpec, Features, Featurizer, RequestContext};
use qroute_core::policy::explore::{argmax, draw_without_replacement};
use qroute_core::policy::{
    DqnPolicy, Explorer, FrozenPolicy, OperatingPoint, Policy, PolicyConfig, Prediction, Strategy,
};
use qroute_core::record::{ExperimentTag, ShadowPick};
use qroute_core::{Error, Result};

use super::{Gateway, RouteRequest, ServedModel};
use crate::exec::providers::simulated::last_user_text;
use crate::exec::providers::{Capability, Provider};

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
    /// What the policy predicts of each candidate (empty when pinned): a
    /// cascade weighs them against the answer it has.
    pub predictions: Vec<Prediction>,
    /// Position in `candidates` the explorer drew.
    pub chosen: usize,
    pub propensities: Vec<f32>,
    pub cost_weight: f32,
    pub latency_weight: f32,
    pub decision_us: f64,
    /// The prompt's estimated tokens ([`ChatRequest::estimated_prompt_tokens`]),
    /// counted once: it decides which context windows fit, and prices a
    /// stream whose upstream reports no usage.
    pub prompt_tokens: u64,
    pub experiment: Option<ExperimentTag>,
    pub shadow: Option<ShadowPick>,
}

/// Turns a request into features and a choice among scored candidates:
/// the one decision rule, shared by the gateway and `qroute route`.
pub struct Decider {
    pub featurizer: Featurizer,
    explorer: Explorer,
    /// Round-robin's turn counter.
    turn: AtomicU64,
}

/// A decision among candidates, before any model is called.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Each candidate's predicted quality, cost and latency (empty for a
    /// pinned model).
    pub predictions: Vec<Prediction>,
    /// Each candidate's score at the request's operating point.
    pub scores: Vec<f32>,
    /// Position of the drawn candidate.
    pub chosen: usize,
    /// The probability each candidate had of being drawn: the explorer's,
    /// or a rule strategy's own distribution.
    pub propensities: Vec<f32>,
}

impl Choice {
    /// A model the caller named: one candidate, taken with certainty.
    fn pinned() -> Choice {
        Choice {
            predictions: Vec::new(),
            scores: vec![0.0],
            chosen: 0,
            propensities: vec![1.0],
        }
    }
}

impl Decider {
    /// A decider for policies of feature spec `spec`, exploring as `policy`
    /// configures.
    pub fn new(spec: FeatureSpec, policy: &PolicyConfig) -> Result<Decider> {
        Ok(Decider {
            featurizer: Featurizer::new(spec)?,
            explorer: Explorer::new(policy.exploration, policy.floor, policy.budget),
            turn: AtomicU64::new(0),
        })
    }

    /// Scores `cards` (the candidates, named `ids`) with `policy` at `point`
    /// and draws one: from the rule's own distribution when `strategy` is a
    /// rule, else from the explorer's distribution over the scores.
    #[allow(clippy::too_many_arguments)]
    pub fn choose(
        &self,
        policy: &DqnPolicy,
        strategy: &Strategy,
        ids: &[&str],
        cards: &[&ModelCard],
        features: &Features,
        point: OperatingPoint,
        rng: &mut impl rand::Rng,
    ) -> Result<Choice> {
        let mut predictions = Vec::with_capacity(cards.len());
        policy.predict(features, cards, &mut predictions)?;
        let scores: Vec<f32> = predictions.iter().map(|p| p.score(point)).collect();
        let (chosen, propensities) = match strategy.distribution(ids, &predictions, &self.turn) {
            // A rule's own distribution is what was sampled: it is logged.
            Some(dist) => (draw_without_replacement(&dist, 1, rng).models[0], dist),
            None => {
                let c = self
                    .explorer
                    .choose(&scores, rng)
                    .ok_or_else(|| Error::Unavailable("no candidate model".into()))?;
                (c.chosen, c.propensities)
            }
        };
        Ok(Choice {
            predictions,
            scores,
            chosen,
            propensities,
        })
    }
}

/// A candidate policy scoring live traffic without acting on it.
pub struct Shadow {
    pub name: String,
    pub policy: FrozenPolicy,
    /// Decisions it scored, and how many of them it would have made the same.
    pub decisions: std::sync::atomic::AtomicU64,
    pub agreements: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// Candidates, features, scores and the policy's draw: everything
    /// before a model is called.
    pub(super) fn prepare(&self, req: &RouteRequest, received: Instant) -> Result<Prepared> {
        let prompt = feature_text(&req.chat);
        // An image, or a tool's result, is a prompt without text.
        let wordless = req
            .chat
            .messages
            .iter()
            .any(|m| m.content.images() > 0 || m.role == "tool");
        if prompt.trim().is_empty() && !wordless {
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
        let prompt_tokens = req.chat.estimated_prompt_tokens();
        let candidates = self.candidates(req, prompt.chars().count() as f32, prompt_tokens)?;

        let arm = req.enrollment.as_ref().and_then(|e| e.arm());
        let strategy = arm.map_or(&self.config.policy.strategy, |a| &a.strategy);
        let frozen = arm.and_then(|a| a.policy.as_deref());
        let policy = frozen.map_or_else(|| self.policy.load_full(), |f| f.policy.clone());
        let features = self.decider.featurizer.featurize(&RequestContext {
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
        let cards = self.cards(frozen.map(|f| &f.cards[..]), &candidates);
        let Choice {
            predictions,
            scores,
            chosen,
            propensities,
        } = match req.pinned {
            // A pinned model is not a decision: logged with certainty.
            Some(_) => Choice::pinned(),
            None => self.decider.choose(
                &policy,
                strategy,
                &ids,
                &cards,
                &features,
                point,
                &mut rand::thread_rng(),
            )?,
        };
        let shadow = match (&self.shadow, &req.pinned) {
            (Some(s), None) => {
                let cards = self.cards(Some(&s.policy.cards), &candidates);
                let pick = argmax(&s.policy.policy.scores(&features, &cards, point)?);
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
            predictions,
            chosen,
            propensities,
            cost_weight,
            latency_weight,
            decision_us: received.elapsed().as_secs_f64() * 1e6,
            prompt_tokens,
            experiment: req.enrollment.as_ref().map(|e| e.tag(&self.config.policy.strategy)),
            shadow,
        })
    }

    /// The cards `candidates` are scored with: a frozen policy's own (see
    /// [`FrozenPolicy::cards`]) or, for the live one, the served cards.
    fn cards<'a>(&'a self, frozen: Option<&'a [ModelCard]>, candidates: &[usize]) -> Vec<&'a ModelCard> {
        candidates
            .iter()
            .map(|&i| frozen.map_or(&self.models[i].card, |c| &c[i]))
            .collect()
    }

    /// A prompt that a simulated provider's dataset recorded is routed only
    /// among the simulated models that recorded it (real providers stay), so
    /// its answers, qualities and costs are the recorded ones rather than
    /// another dataset's "not in the dataset" stand-ins.
    fn recorded_only(&self, req: &RouteRequest, set: &mut Vec<usize>) {
        let simulated = |i: usize| match &*self.models[i].provider {
            Provider::Simulated(s) => Some(s),
            _ => None,
        };
        if !set.iter().any(|&i| simulated(i).is_some()) {
            return;
        }
        let prompt = last_user_text(&req.chat);
        let recorded =
            |i: usize| simulated(i).is_some_and(|s| s.knows(&prompt) && s.serves(self.models[i].config.upstream()));
        if set.iter().any(|&i| recorded(i)) {
            set.retain(|&i| recorded(i) || simulated(i).is_none());
        }
    }

    /// Leaves out of `set` the models that cannot serve `req` as asked:
    /// those without a capability it needs (tools, images, JSON mode,
    /// several choices, log-probabilities, streaming), and those whose
    /// context window the estimated prompt plus `max_tokens` would
    /// overflow. An empty set is a 400 naming what no model could do.
    fn servable(&self, req: &RouteRequest, prompt_tokens: u64, set: &mut Vec<usize>) -> Result<()> {
        let mut needs = req.chat.needs();
        if req.stream {
            needs.push(Capability::Streaming);
        }
        let tokens = prompt_tokens + u64::from(req.chat.params.max_tokens.unwrap_or(0));
        let fits = |m: &ServedModel| m.config.context_window.is_none_or(|w| tokens <= w);
        let lacking = |m: &ServedModel| needs.iter().copied().find(|c| !m.capabilities.contains(c));
        let before = set.clone();
        set.retain(|&i| lacking(&self.models[i]).is_none() && fits(&self.models[i]));
        if !set.is_empty() {
            return Ok(());
        }
        let first = &self.models[before[0]];
        let whom = |c: Capability| match before.len() {
            1 => format!(
                "{}: model {:?} does not support {}",
                c.field(),
                first.config.id,
                c.as_str()
            ),
            _ => format!("{}: no allowed model supports {}", c.field(), c.as_str()),
        };
        let has = |i: usize, c: Capability| self.models[i].capabilities.contains(&c);
        let message = if let Some(&c) = needs.iter().find(|&&c| before.iter().all(|&i| !has(i, c))) {
            whom(c)
        } else if before.iter().all(|&i| lacking(&self.models[i]).is_some()) {
            let all: Vec<&str> = needs.iter().map(|c| c.as_str()).collect();
            format!("no allowed model supports all of: {}", all.join(", "))
        } else {
            format!(
                "messages: the prompt (about {tokens} tokens, max_tokens included) fits no allowed model's context window (the largest is {})",
                before.iter().filter_map(|&i| self.models[i].config.context_window).max().unwrap_or_default()
            )
        };
        Err(Error::InvalidInput(message))
    }

    /// Indices of the models this request may go to. Unknown model ids are
    /// `NotFound`; an empty set after the cost cap is `InvalidInput`; an
    /// empty set because breakers are open is `Unavailable`.
    fn candidates(&self, req: &RouteRequest, chars: f32, prompt_tokens: u64) -> Result<Vec<usize>> {
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
        self.recorded_only(req, &mut set);
        self.servable(req, prompt_tokens, &mut set)?;
        let now = Instant::now();
        let first_probe = set
            .iter()
            .map(|&i| self.models[i].breaker.available_in(now))
            .min()
            .unwrap_or_default();
        set.retain(|&i| self.models[i].breaker.available(now));
        if set.is_empty() {
            return Err(Error::RetryLater {
                message: "every allowed model's circuit breaker is open; try again after the cool-down".into(),
                retry_after_ms: first_probe.as_millis() as u64,
            });
        }
        Ok(set)
    }
}

/// The text the featurizer sees: every message's content, system first.
pub(super) fn feature_text(chat: &ChatRequest) -> String {
    match chat.messages.as_slice() {
        [only] => only.content.text(),
        many => many.iter().map(|m| m.content.text()).collect::<Vec<_>>().join("\n"),
    }
}

/// 128 bits in hex: the Unix time in milliseconds (48 bits), then 80
/// random bits. Unique without coordination and unguessable, like 128
/// random bits, and increasing with time (as UUIDv7 and ULID are), so the
/// store's rows keyed by request id (outcomes, answers, feedback) are
/// written near the end of their trees and read back while still cached.
/// With random ids every insert landed in a random leaf: at 2,000 req/s
/// sled's inserts were 41% of the store writer's CPU, a third of that
/// reading leaves back from disk, and it grew with the store.
pub(super) fn new_request_id() -> String {
    time_ordered_id(qroute_core::unix_ms(), rand::random::<u128>())
}

fn time_ordered_id(unix_ms: u64, random: u128) -> String {
    let ms = u128::from(unix_ms) & ((1 << 48) - 1);
    format!("{:032x}", ms << 80 | random >> 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_sort_by_time_and_stay_random() {
        let early = time_ordered_id(1_700_000_000_000, u128::MAX);
        let late = time_ordered_id(1_700_000_000_001, 0);
        assert!(early < late, "{early} sorts after {late}");
        assert_eq!(early.len(), 32);
        assert!(early.bytes().all(|b| b.is_ascii_hexdigit()));
        // 80 random bits: two ids of one millisecond differ.
        assert_ne!(new_request_id(), new_request_id());
        let ms = u64::from_str_radix(&new_request_id()[..12], 16).unwrap();
        assert!(ms.abs_diff(qroute_core::unix_ms()) < 60_000, "the prefix is the time");
    }
}
