//! What each request leaves in the experience store: its decision record,
//! and the outcome of every model it ran (breaker and metrics settled on
//! the way).

use std::time::{Duration, Instant};

use super::decide::Prepared;
use super::{Gateway, RouteRequest, ServedModel};
use crate::exec::providers::{Completion, ProviderError};
use qroute_core::record::{DecisionRecord, Outcome};
use qroute_core::unix_ms;

impl Gateway {
    /// Runs `call` while `record` is written: with durable acks the record's
    /// sync overlaps the call and its result comes back to be checked
    /// before answering; otherwise the record is queued and counts as
    /// written.
    pub(super) async fn logged<T>(
        &self,
        record: DecisionRecord,
        call: impl std::future::Future<Output = T>,
    ) -> (qroute_core::Result<()>, T) {
        if self.config.store.durable_ack {
            tokio::join!(self.writer.decision(record), call)
        } else {
            self.writer.decision_later(record);
            (Ok(()), call.await)
        }
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

    /// A decision that follows `prep`'s within the same request (a
    /// fallback, a cascade's next call): recorded as `request_id`, over
    /// `order` (positions in `prep.candidates`), its first taken with
    /// certainty because the rule that made it is deterministic.
    pub(super) fn follow_up(
        &self,
        prep: &Prepared,
        req: &RouteRequest,
        request_id: String,
        order: impl IntoIterator<Item = usize>,
    ) -> DecisionRecord {
        let candidates: Vec<String> = order
            .into_iter()
            .map(|k| self.models[prep.candidates[k]].config.id.clone())
            .collect();
        let mut propensities = vec![0.0; candidates.len()];
        if let Some(p) = propensities.first_mut() {
            *p = 1.0;
        }
        DecisionRecord {
            request_id,
            chosen: candidates.first().cloned().into_iter().collect(),
            candidates,
            propensities,
            ..self.record(prep, req, Vec::new())
        }
    }

    /// Books one model's result (after `calls` calls over `upstream_time`):
    /// its breaker, metrics, and the outcome to record (quality as the
    /// provider knows it, priced cost, latency or the error).
    /// A failure with `counts` false (a call cut by the variations'
    /// deadline) says nothing about the model's health: its breaker only
    /// gives back a probe it may have held.
    pub(super) fn settle(
        &self,
        model: &ServedModel,
        decision_id: &str,
        result: Result<&Completion, &ProviderError>,
        calls: u32,
        upstream_time: Duration,
        counts: bool,
    ) -> Outcome {
        let id = &model.config.id;
        let latency_ms = upstream_time.as_secs_f64() * 1e3;
        metrics::histogram!("qroute_upstream_duration_seconds", "model" => id.clone())
            .record(upstream_time.as_secs_f64());
        if calls > 1 {
            metrics::counter!("qroute_retries_total", "model" => id.clone()).increment(calls as u64 - 1);
        }
        let mut outcome = Outcome {
            request_id: decision_id.to_string(),
            model: id.clone(),
            quality: None,
            cost_usd: 0.0,
            latency_ms,
            error: None,
            time_ms: unix_ms(),
            ttft_ms: None,
        };
        match result {
            Ok(c) => {
                model.breaker.on_success();
                let cost = c
                    .known_cost_usd
                    .unwrap_or_else(|| model.config.price(c.input_tokens, c.output_tokens));
                outcome.quality = c.known_quality.map(|q| q.clamp(0.0, 1.0));
                outcome.cost_usd = cost;
                metrics::gauge!("qroute_cost_usd_total", "model" => id.clone()).increment(cost);
                metrics::counter!("qroute_input_tokens_total", "model" => id.clone()).increment(c.input_tokens);
                metrics::counter!("qroute_output_tokens_total", "model" => id.clone()).increment(c.output_tokens);
            }
            // Cut by the caller's deadline, or the request's own fault:
            // nothing said about the model's health.
            Err(e) if !counts || !e.counts_against_model() => {
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
}
