//! Cascades online: the routed model answers first (with its fallbacks, as
//! any single-model request); the policy's answer head values that answer;
//! while another candidate's prompt-only score at the request's operating
//! point beats the best answer's value (`qroute_core::policy::cascade`),
//! that candidate is called too. The best-valued answer is returned.
//!
//! - **Records.** Each further call is its own decision,
//!   `{request_id}/cascade-{n}`, over the candidates not yet called, taken
//!   with propensity 1 (given the answers so far the step is
//!   deterministic), and its outcome is recorded like any other, so what
//!   escalating cost is in the log the learner reads. Delayed feedback on
//!   the request id goes to the kept answer's decision.
//! - **Cost.** The response's `cost_usd` (and what the key is charged) is
//!   the sum over every model called.
//! - **Limits.** At most `cascade.max_calls` models, each called once, all
//!   within the request's deadline.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::decide::{feature_text, Prepared};
use super::{Attempt, Gateway, RouteRequest, Routed, Timings};
use crate::exec::providers::Completion;
use crate::exec::resilience::call_with_retries;
use qroute_core::policy::cascade::{best_answer, next_call};
use qroute_core::policy::OperatingPoint;
use qroute_core::{Error, Result};

/// One model a cascade called, as the response reports it.
#[derive(Debug, Clone, Serialize)]
pub struct CascadeStep {
    pub model: String,
    /// The answer head's estimate that this answer is good; `None` when the
    /// call failed.
    pub value: Option<f32>,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// Whether this is the answer returned.
    pub kept: bool,
}

/// An answer with tool calls is an action, not prose the head can read: it
/// is kept as it is.
const TOOL_CALL_VALUE: f32 = 1.0;

impl Gateway {
    /// How many models `req` may call as a cascade, or `None` to route it
    /// plainly. An explicit `"cascade": true` that cannot be honoured is a
    /// 400 saying why; the configured default quietly yields to variations,
    /// streaming and pinned models.
    pub(super) fn cascade_calls(
        &self,
        req: &RouteRequest,
        prep: &Prepared,
        variations: usize,
    ) -> Result<Option<usize>> {
        if !req.cascade.unwrap_or(self.config.cascade.default) {
            return Ok(None);
        }
        let refuse = |why: &str| match req.cascade {
            Some(true) => Err(Error::InvalidInput(format!("cascade: {why}"))),
            _ => Ok(None),
        };
        if variations > 1 {
            return refuse("cannot be combined with variations");
        }
        if req.stream {
            return refuse("cannot be streamed: the first answer is read whole before deciding whether to keep it");
        }
        if req.pinned.is_some() {
            return refuse("a pinned model has nothing to escalate to");
        }
        if prep.policy.answer_head.is_none() {
            return refuse(
                "the serving policy has no answer head (train it on a dataset with recorded answers, `response`)",
            );
        }
        Ok(Some(self.config.cascade.max_calls))
    }

    /// Runs `req` as a cascade of at most `max_calls` models; see the
    /// module docs.
    pub(super) async fn run_cascade(&self, req: &RouteRequest, prep: &Prepared, max_calls: usize) -> Result<Routed> {
        let Some(head) = prep.policy.answer_head.as_ref() else {
            // `cascade_calls` said yes only with a head.
            return self.run_single(req, prep).await;
        };
        let deadline = tokio::time::Instant::from_std(prep.received) + self.config.limits.request_timeout();
        let prompt = feature_text(&req.chat);
        let value = |at: usize, c: &Completion| {
            if !c.tool_calls.is_empty() {
                return TOOL_CALL_VALUE;
            }
            let model = &self.models[prep.candidates[at]].config.id;
            let prompt_quality = prep.predictions.get(at).map_or(0.5, |p| p.quality);
            head.predict(model, prompt_quality, &prompt, &c.text)
        };
        let position = |id: &str| prep.candidates.iter().position(|&i| self.models[i].config.id == id);

        let (mut first, first_decision) = self.answer_single(req, prep).await?;
        let first_at = position(&first.model).unwrap_or(prep.chosen);
        // Every model tried is spent: the first one's fallbacks included.
        let mut called: Vec<usize> = first.attempts.iter().filter_map(|a| position(&a.model)).collect();
        let first_value = value(first_at, &first.completion);
        let mut steps = vec![CascadeStep {
            model: first.model.clone(),
            value: Some(first_value),
            cost_usd: first.cost_usd,
            latency_ms: first.attempts.last().map_or(0.0, |a| a.latency_ms),
            error: None,
            kept: false,
        }];
        let mut answered = vec![Answer {
            value: first_value,
            step: 0,
            decision_id: first_decision,
            // Moved, not copied: the kept answer's completion replaces it.
            completion: std::mem::take(&mut first.completion),
        }];
        let mut attempts = std::mem::take(&mut first.attempts);
        let mut upstream = first.upstream;
        let point = OperatingPoint {
            cost_weight: prep.cost_weight,
            latency_weight: prep.latency_weight,
        };
        while tokio::time::Instant::now() < deadline {
            let best = best_of(&answered).value;
            let Some(next) = next_call(&prep.predictions, &called, best, point, max_calls) else {
                break;
            };
            let step = self.escalate(req, prep, next, &called, deadline).await?;
            called.push(next);
            upstream += step.upstream;
            attempts.push(step.attempt.clone());
            let value = step.completion.as_ref().map(|c| value(next, c));
            steps.push(CascadeStep {
                model: step.attempt.model.clone(),
                value,
                cost_usd: step.cost_usd,
                latency_ms: step.attempt.latency_ms,
                error: step.attempt.error.clone(),
                kept: false,
            });
            if let (Some(value), Some(completion)) = (value, step.completion) {
                answered.push(Answer {
                    value,
                    step: steps.len() - 1,
                    decision_id: step.decision_id,
                    completion,
                });
            }
        }

        let keep = best_of(&answered).step;
        let Answer {
            decision_id,
            completion,
            ..
        } = answered.swap_remove(answered.iter().position(|a| a.step == keep).unwrap_or(0));
        steps[keep].kept = true;
        let model = steps[keep].model.clone();
        self.answered(&prep.request_id, req.key.clone(), &decision_id, &model);
        let escalated = if steps.len() > 1 { "true" } else { "false" };
        metrics::counter!("qroute_cascades_total", "escalated" => escalated).increment(1);
        Ok(Routed {
            model,
            completion,
            // A failed call is not billed (its outcome's cost is 0).
            cost_usd: steps.iter().map(|s| s.cost_usd).sum(),
            attempts,
            upstream,
            timings: Timings::new(prep.received, upstream, prep.decision_us),
            cascade: steps,
            ..first
        })
    }

    /// Calls candidate `next` (after those `called`) under its own decision
    /// record; a failure is recorded and reported, not raised (the answers
    /// so far stand).
    async fn escalate(
        &self,
        req: &RouteRequest,
        prep: &Prepared,
        next: usize,
        called: &[usize],
        deadline: tokio::time::Instant,
    ) -> Result<Step> {
        let model = &self.models[prep.candidates[next]];
        let id = model.config.id.clone();
        // Over the candidates not yet called, the one called first.
        let rest = (0..prep.candidates.len()).filter(|k| *k != next && !called.contains(k));
        let record = self.follow_up(
            prep,
            req,
            format!("{}/cascade-{}", prep.request_id, called.len()),
            std::iter::once(next).chain(rest),
        );
        let decision_id = record.request_id.clone();
        if !model.breaker.try_acquire(Instant::now()) {
            // Logged without an outcome, so the decision id names a record.
            self.logged(record, std::future::ready(())).await.0?;
            return Ok(Step::failed(decision_id, id, "circuit breaker open".into()));
        }
        metrics::counter!("qroute_choices_total", "model" => id.clone()).increment(1);
        let call = call_with_retries(
            &model.provider,
            model.config.upstream(),
            &req.chat,
            &self.config.retry,
            self.config.limits.attempt_timeout(),
            deadline,
            0,
        );
        let (durable, attempted) = self.logged(record, call).await;
        let outcome = self.settle(
            model,
            &decision_id,
            attempted.result.as_ref(),
            attempted.calls,
            attempted.upstream_time,
            true,
        );
        durable?;
        let step = Step {
            attempt: Attempt {
                model: id,
                calls: attempted.calls,
                latency_ms: outcome.latency_ms,
                error: outcome.error.clone(),
            },
            cost_usd: outcome.cost_usd,
            upstream: attempted.upstream_time,
            completion: attempted.result.ok(),
            decision_id,
        };
        self.writer.outcome_later(outcome);
        Ok(step)
    }
}

/// One further call of a cascade.
struct Step {
    decision_id: String,
    attempt: Attempt,
    cost_usd: f64,
    upstream: Duration,
    completion: Option<Completion>,
}

impl Step {
    fn failed(decision_id: String, model: String, error: String) -> Step {
        Step {
            decision_id,
            attempt: Attempt {
                model,
                calls: 0,
                latency_ms: 0.0,
                error: Some(error),
            },
            cost_usd: 0.0,
            upstream: Duration::ZERO,
            completion: None,
        }
    }
}

/// An answer a cascade received.
struct Answer {
    /// The head's value of it.
    value: f32,
    /// Index into the response's steps.
    step: usize,
    decision_id: String,
    completion: Completion,
}

/// The best-valued answer (the first among ties): never empty, the first
/// answer is always there.
fn best_of(answered: &[Answer]) -> &Answer {
    let valued: Vec<(usize, f32)> = answered.iter().enumerate().map(|(i, a)| (i, a.value)).collect();
    &answered[best_answer(&valued).map_or(0, |b| b.0)]
}
