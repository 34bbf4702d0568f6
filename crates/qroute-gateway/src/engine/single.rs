//! Steps 3–4 for one model: run the chosen model, fall back to the next
//! best by score when it fails, each fallback its own decision.

use std::future::Future;
use std::time::{Duration, Instant};

use super::decide::Prepared;
use super::{Attempt, CacheStatus, Gateway, RouteRequest, Routed, Timings};
use crate::exec::providers::{self, ProviderError};
use crate::exec::resilience::{with_retries, Attempted};
use qroute_core::record::Answered;
use qroute_core::{unix_ms, Error, Result};

/// The model that answered, after the ones that failed before it.
pub(super) struct Tried<T> {
    /// Index into [`Gateway::models`].
    pub model: usize,
    /// The decision record it ran under (`{request_id}/fallback-{n}` for a
    /// fallback).
    pub decision_id: String,
    /// Its answer, not yet settled (see [`Gateway::settle`]), and the calls
    /// and upstream time it took.
    pub answer: T,
    pub calls: u32,
    pub upstream_time: Duration,
    /// Every model tried before it, and the time they took.
    pub failed: Vec<Attempt>,
    pub failed_upstream: Duration,
}

/// A request answered by one model (`model`, after `attempts`), as `prep`
/// decided it; its answer and cost are the caller's to fill in.
pub(super) fn routed_by(prep: &Prepared, model: &str, attempts: Vec<Attempt>, upstream: Duration) -> Routed {
    Routed {
        request_id: prep.request_id.clone(),
        model: model.to_string(),
        completion: Default::default(),
        cost_usd: 0.0,
        policy_version: prep.policy.version,
        propensity: prep.propensities[prep.chosen],
        cost_weight: prep.cost_weight,
        attempts,
        variations: Vec::new(),
        judge: None,
        combined_by: None,
        cascade: Vec::new(),
        upstream,
        timings: Timings::new(prep.received, upstream, prep.decision_us),
        cache: CacheStatus::Miss,
    }
}

impl Gateway {
    /// One model, with fallback to the next-best by score when it fails.
    pub(super) async fn run_single(&self, req: &RouteRequest, prep: &Prepared) -> Result<Routed> {
        let (routed, decision_id) = self.answer_single(req, prep).await?;
        self.answered(&prep.request_id, req.key.clone(), &decision_id, &routed.model);
        Ok(routed)
    }

    /// [`Gateway::run_single`] without naming the answer for feedback (a
    /// cascade names the answer it keeps); also returns the decision id the
    /// answer ran under.
    pub(super) async fn answer_single(&self, req: &RouteRequest, prep: &Prepared) -> Result<(Routed, String)> {
        let tried = self
            .attempt_in_order(req, prep, |k, limit| {
                let m = &self.models[k];
                m.provider.complete_within(m.config.upstream(), &req.chat, limit)
            })
            .await?;
        let model = &self.models[tried.model];
        let completion = tried.answer;
        let outcome = self.settle(
            model,
            &tried.decision_id,
            Ok(&completion),
            tried.calls,
            tried.upstream_time,
            true,
        );
        let mut attempts = tried.failed;
        attempts.push(Attempt {
            model: model.config.id.clone(),
            calls: tried.calls,
            latency_ms: outcome.latency_ms,
            error: None,
        });
        let cost = outcome.cost_usd;
        self.writer.outcome_later(outcome);
        let upstream = tried.failed_upstream + tried.upstream_time;
        let routed = Routed {
            completion,
            cost_usd: cost,
            ..routed_by(prep, &model.config.id, attempts, upstream)
        };
        Ok((routed, tried.decision_id))
    }

    /// Records which decision answered the request, for delayed feedback
    /// (from the key `key_id` only).
    pub(super) fn answered(&self, request_id: &str, key_id: Option<String>, decision_id: &str, model: &str) {
        self.writer.answered_later(Answered {
            request_id: request_id.to_string(),
            decision_id: decision_id.to_string(),
            model: model.to_string(),
            time_ms: unix_ms(),
            key_id,
        });
    }

    /// Calls the chosen model through `call` (given a model index and the
    /// attempt's time limit), then the rest by score until one succeeds:
    /// each under its own decision record, with retries, within the
    /// request deadline. A failed model is settled here; the one that
    /// succeeded is returned unsettled, for the caller to settle when its
    /// answer is complete (at once, or when a stream ends).
    ///
    /// A request the upstream refused as malformed (400, 422) is relayed
    /// with that status when no other model is left to try: pinned to one
    /// model it is never tried elsewhere, and under `auto` another model
    /// may accept it.
    pub(super) async fn attempt_in_order<T, F, Fut>(
        &self,
        req: &RouteRequest,
        prep: &Prepared,
        mut call: F,
    ) -> Result<Tried<T>>
    where
        F: FnMut(usize, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<T, ProviderError>>,
    {
        let Prepared {
            ref request_id,
            ref candidates,
            ref scores,
            chosen,
            ..
        } = *prep;
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
        let mut failed = Vec::new();
        let mut failed_upstream = Duration::ZERO;
        let mut last_error: Option<ProviderError> = None;
        for (n, &k) in order.iter().enumerate() {
            let model = &self.models[candidates[k]];
            let id = &model.config.id;
            let record = if n == 0 {
                self.record(prep, req, vec![id.clone()])
            } else {
                // A fallback is its own decision: the rest of the order.
                metrics::counter!("qroute_fallbacks_total").increment(1);
                self.follow_up(
                    prep,
                    req,
                    format!("{request_id}/fallback-{n}"),
                    order[n..].iter().copied(),
                )
            };
            let decision_id = record.request_id.clone();
            if !model.breaker.try_acquire(Instant::now()) {
                // Another request holds this half-open breaker's one probe.
                // The decision is still logged (without an outcome), so the
                // request id always names a record.
                self.logged(record, std::future::ready(())).await.0?;
                failed.push(Attempt {
                    model: id.clone(),
                    calls: 0,
                    latency_ms: 0.0,
                    error: Some("circuit breaker open".into()),
                });
                continue;
            }
            metrics::counter!("qroute_choices_total", "model" => id.clone()).increment(1);
            let models_after = order.len() - n - 1;
            let attempt = with_retries(
                &self.config.retry,
                self.config.limits.attempt_timeout(),
                deadline,
                models_after,
                |limit| call(candidates[k], limit),
            );
            let (durable, attempted) = self.logged(record, attempt).await;
            let Attempted {
                result,
                calls,
                upstream_time,
            } = attempted;
            let error = match result {
                Ok(answer) => {
                    durable?;
                    return Ok(Tried {
                        model: candidates[k],
                        decision_id,
                        answer,
                        calls,
                        upstream_time,
                        failed,
                        failed_upstream,
                    });
                }
                Err(e) => e,
            };
            failed_upstream += upstream_time;
            // The breaker is settled before a failed write is reported, so no
            // probe leaks.
            let outcome = self.settle(model, &decision_id, Err(&error), calls, upstream_time, true);
            durable?;
            failed.push(Attempt {
                model: id.clone(),
                calls,
                latency_ms: outcome.latency_ms,
                error: outcome.error.clone(),
            });
            self.writer.outcome_later(outcome);
            last_error = Some(error);
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let summary = failed
            .iter()
            .map(|a| format!("{}: {}", a.model, a.error.as_deref().unwrap_or("ok")))
            .collect::<Vec<_>>()
            .join("; ");
        Err(match last_error {
            Some(e) if e.refused_request() => Error::Rejected {
                status: match e.kind {
                    providers::ErrorKind::Status(s) => s,
                    _ => 400,
                },
                message: e.message,
            },
            Some(e) if tokio::time::Instant::now() >= deadline || e.kind == providers::ErrorKind::Timeout => {
                Error::Timeout(format!("request {request_id}: {summary}"))
            }
            Some(_) => Error::Upstream(format!("request {request_id}: every model tried failed ({summary})")),
            None => Error::RetryLater {
                message: format!("request {request_id}: every candidate's circuit breaker is open"),
                retry_after_ms: self.config.breaker.probe_interval_ms,
            },
        })
    }
}
