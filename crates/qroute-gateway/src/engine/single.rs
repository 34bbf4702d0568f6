//! Steps 3–4 for one model: run the chosen model, fall back to the next
//! best by score when it fails, each fallback its own decision.

use std::time::{Duration, Instant};

use super::decide::Prepared;
use super::{Attempt, Gateway, RouteRequest, Routed, Timings};
use crate::exec::providers;
use crate::exec::resilience::call_with_retries;
use qroute_core::record::Answered;
use qroute_core::{unix_ms, Error, Result};

impl Gateway {
    /// One model, with fallback to the next-best by score when it fails.
    pub(super) async fn run_single(&self, req: RouteRequest, prep: Prepared) -> Result<Routed> {
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
                        key_id: req.key.clone(),
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
}
