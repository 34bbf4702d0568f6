//! Variations: k models run at once for one request, a judge scores their
//! answers, and the best one (or an LLM's merge of them) is returned.
//!
//! - **Choice.** The k models are drawn without replacement from the
//!   policy's exploration distribution `p` (Plackett–Luce): the first is the
//!   explorer's draw, each next one is drawn from the rest in proportion to
//!   `p`. One decision record holds `p` over all candidates and the models
//!   in draw order in `chosen`, so each variation's own propensity,
//!   `p[cⱼ] / (1 − Σ_{i<j} p[cᵢ])`, follows from the log; the response
//!   reports it per variation.
//! - **Running.** All k calls start together on tokio and share one
//!   deadline (`variations.deadline_ms`, within the request's). A call still
//!   running at the deadline is cut (its HTTP request dropped) and counts as
//!   failed, so the wall time is the slowest answer needed, never the sum.
//!   A failed variation does not fail the request while another succeeds.
//! - **Judging and learning.** The judge's score of each answer is that
//!   outcome's quality, so the trainer learns from all k answers (a failed
//!   or cut one from quality 0). Delayed feedback on the request id joins
//!   the returned model's outcome and overrides the judge.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rand::Rng;
use serde::Serialize;

use super::decide::{feature_text, Prepared};
use super::{CacheStatus, Gateway, RouteRequest, Routed, Timings};
use crate::exec::ensemble;
use crate::exec::judge::{by_head, Answer, Judge};
use crate::exec::providers::{Completion, ErrorKind};
use crate::exec::resilience::call_with_retries;
use qroute_core::policy::explore::draw_without_replacement;
use qroute_core::record::Answered;
use qroute_core::{Error, Result};

/// One variation as the response reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Variation {
    pub model: String,
    /// Probability of this draw given the earlier ones.
    pub propensity: f32,
    /// The judge's score in [0, 1]; `None` when the call failed.
    pub score: Option<f32>,
    pub reason: Option<String>,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// Whether this is the answer returned.
    pub selected: bool,
    /// The first characters of the answer.
    pub summary: Option<String>,
}

/// Characters of each answer kept in [`Variation::summary`].
const SUMMARY_CHARS: usize = 160;

/// Draws `k` positions without replacement from `p`, `first` (the
/// explorer's draw) first; returns each with its conditional probability.
/// At most `p.len()` come back.
fn draws(p: &[f32], first: usize, k: usize, rng: &mut impl Rng) -> Vec<(usize, f32)> {
    let others: Vec<usize> = (0..p.len()).filter(|&i| i != first).collect();
    let rest: Vec<f32> = others.iter().map(|&i| p[i]).collect();
    let more = draw_without_replacement(&rest, k.saturating_sub(1), rng);
    std::iter::once((first, p[first]))
        .chain(more.models.into_iter().map(|j| others[j]).zip(more.propensities))
        .collect()
}

impl Gateway {
    /// Runs `k` variations of `req`; see the module docs.
    pub(super) async fn run_variations(&self, req: RouteRequest, prep: Prepared, k: usize) -> Result<Routed> {
        let draws = draws(&prep.propensities, prep.chosen, k, &mut rand::thread_rng());
        let k = draws.len();
        let models: Vec<_> = draws
            .iter()
            .map(|&(pos, _)| &self.models[prep.candidates[pos]])
            .collect();
        let record = self.record(&prep, &req, models.iter().map(|m| m.config.id.clone()).collect());
        let request_deadline = tokio::time::Instant::now() + self.config.limits.request_timeout();
        let deadline = request_deadline
            .min(tokio::time::Instant::now() + Duration::from_millis(self.config.variations.deadline_ms));

        let now = Instant::now();
        let admitted: Vec<bool> = models.iter().map(|m| m.breaker.try_acquire(now)).collect();
        let calls = models.iter().zip(&admitted).filter(|(_, ok)| **ok).map(|(m, _)| {
            metrics::counter!("qroute_choices_total", "model" => m.config.id.clone()).increment(1);
            call_with_retries(
                &m.provider,
                m.config.upstream(),
                &req.chat,
                &self.config.retry,
                self.config.limits.attempt_timeout(),
                deadline,
                // Run side by side: none waits on another.
                0,
            )
        });
        let started = Instant::now();
        let (durable, results) = self.logged(record, join_all(calls)).await;
        let mut upstream = started.elapsed();

        // Line results up with the draws (refused models have none).
        let mut results = results.into_iter();
        let attempted: Vec<_> = admitted.iter().map(|ok| ok.then(|| results.next()).flatten()).collect();
        let cut_at_deadline = tokio::time::Instant::now() >= deadline;
        let mut outcomes: Vec<_> = models
            .iter()
            .zip(&attempted)
            .map(|(m, a)| {
                a.as_ref().map(|a| {
                    // A model cut by the variations' own deadline was not
                    // shown to be unhealthy: its breaker does not count it.
                    let cut = cut_at_deadline && a.result.as_ref().is_err_and(|e| e.kind == ErrorKind::Timeout);
                    self.settle(m, &prep.request_id, a.result.as_ref(), a.calls, a.upstream_time, !cut)
                })
            })
            .collect();
        // Breakers are settled first, so a failed write leaks no probe.
        durable?;

        // Judge the answers.
        // The variations that answered: (draw position, answer).
        let answered: Vec<(usize, &Completion)> = attempted
            .iter()
            .enumerate()
            .filter_map(|(j, a)| Some((j, a.as_ref()?.result.as_ref().ok()?)))
            .collect();
        let answers: Vec<Answer> = answered
            .iter()
            .map(|&(j, completion)| Answer {
                model: &models[j].config.id,
                completion,
            })
            .collect();
        let judge_started = Instant::now();
        let judgements = if answers.is_empty() {
            Vec::new()
        } else if let (Judge::Head, Some(head)) = (&self.judge, prep.policy.answer_head.as_ref()) {
            let prompt_quality: Vec<f32> = answered
                .iter()
                .map(|&(j, _)| prep.predictions.get(draws[j].0).map_or(0.5, |p| p.quality))
                .collect();
            by_head(head, &req.chat, &feature_text(&req.chat), &answers, &prompt_quality)
        } else {
            // The judge too must finish within the request's deadline; past
            // it, the free heuristic decides.
            match tokio::time::timeout_at(request_deadline, self.judge.judge(&req.chat, &answers)).await {
                Ok(j) => j,
                Err(_) => Judge::Heuristic.judge(&req.chat, &answers).await,
            }
        };
        upstream += judge_started.elapsed();
        let judge_cost: f64 = judgements.iter().map(|j| j.cost_usd).sum();
        // Best score; ties go to the earlier draw (the policy's preference).
        let best = judgements
            .iter()
            .enumerate()
            .fold(None::<(usize, f32)>, |b, (n, j)| match b {
                Some((_, s)) if s >= j.score => b,
                _ => Some((n, j.score)),
            })
            .map(|(n, _)| answered[n]);
        for (n, &(j, _)) in answered.iter().enumerate() {
            if let Some(o) = outcomes[j].as_mut() {
                o.quality = Some(judgements[n].score.clamp(0.0, 1.0));
            }
        }

        let variations: Vec<Variation> = (0..k)
            .map(|j| {
                let o = outcomes[j].as_ref();
                let judged = answered.iter().position(|&(a, _)| a == j).map(|n| &judgements[n]);
                Variation {
                    model: models[j].config.id.clone(),
                    propensity: draws[j].1,
                    score: judged.map(|g| g.score),
                    reason: judged.map(|g| g.reason.clone()),
                    cost_usd: o.map_or(0.0, |o| o.cost_usd),
                    latency_ms: o.map_or(0.0, |o| o.latency_ms),
                    error: match o {
                        Some(o) => o.error.clone(),
                        None => Some("circuit breaker open".into()),
                    },
                    selected: best.is_some_and(|(b, _)| b == j),
                    summary: attempted[j]
                        .as_ref()
                        .and_then(|a| a.result.as_ref().ok())
                        .map(|c| c.text.chars().take(SUMMARY_CHARS).collect()),
                }
            })
            .collect();
        let mut cost: f64 = variations.iter().map(|v| v.cost_usd).sum::<f64>() + judge_cost;
        for o in outcomes.iter_mut().flatten() {
            self.writer.outcome_later(o.clone());
        }

        let Some((best, best_answer)) = best else {
            let summary = variations
                .iter()
                .map(|v| format!("{}: {}", v.model, v.error.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            let timed_out = attempted
                .iter()
                .flatten()
                .any(|a| a.result.as_ref().is_err_and(|e| e.kind == ErrorKind::Timeout));
            let id = &prep.request_id;
            return Err(if attempted.iter().all(Option::is_none) {
                Error::Unavailable(format!("request {id}: every variation's circuit breaker is open"))
            } else if timed_out {
                Error::Timeout(format!("request {id}: no variation answered in time ({summary})"))
            } else {
                Error::Upstream(format!("request {id}: every variation failed ({summary})"))
            });
        };
        let mut completion = best_answer.clone();
        let mut model = models[best].config.id.clone();
        let mut combined_by = None;
        let aggregator = self
            .config
            .variations
            .combine_model
            .as_deref()
            .and_then(|id| self.model(id));
        if let Some(aggregator) = aggregator.filter(|_| req.combine && answers.len() > 1) {
            let id = aggregator.config.id.as_str();
            let combine_started = Instant::now();
            let merged = ensemble::combine(
                &aggregator.provider,
                aggregator.config.upstream(),
                &req.chat,
                &answers,
                request_deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(Duration::from_millis(1)),
            )
            .await;
            upstream += combine_started.elapsed();
            match merged {
                Ok(c) => {
                    cost += c
                        .known_cost_usd
                        .unwrap_or_else(|| aggregator.config.price(c.input_tokens, c.output_tokens));
                    completion = c;
                    model = id.to_string();
                    combined_by = Some(id.to_string());
                }
                // The judged best still answers.
                Err(e) => tracing::warn!(error = %e, "combining variations failed; returning the judged best"),
            }
        }
        // Feedback on this request joins the answer shown: the judged best's
        // outcome, or for a merge the combiner, which has no outcome of its
        // own in this decision, so such feedback is kept but not learned.
        self.writer.answered_later(Answered {
            request_id: prep.request_id.clone(),
            decision_id: prep.request_id.clone(),
            model: model.clone(),
            time_ms: qroute_core::unix_ms(),
            key_id: req.key.clone(),
        });
        Ok(Routed {
            request_id: prep.request_id.clone(),
            model,
            completion,
            cost_usd: cost,
            policy_version: prep.policy.version,
            propensity: prep.propensities[prep.chosen],
            cost_weight: prep.cost_weight,
            attempts: Vec::new(),
            variations,
            judge: Some(self.judge.name()),
            combined_by,
            cascade: Vec::new(),
            upstream,
            timings: Timings::new(prep.received, upstream, prep.decision_us),
            cache: CacheStatus::Miss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_are_distinct_and_their_propensities_are_conditional() {
        let p = [0.5, 0.3, 0.15, 0.05];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut second = [0usize; 4];
        for _ in 0..20_000 {
            let d = draws(&p, 0, 3, &mut rng);
            assert_eq!(d.len(), 3);
            assert_eq!(d[0], (0, 0.5));
            let mut seen: Vec<usize> = d.iter().map(|x| x.0).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 3);
            assert!((d[1].1 - p[d[1].0] / 0.5).abs() < 1e-6);
            second[d[1].0] += 1;
        }
        // The second draw follows p renormalised over the rest: 0.6, 0.3, 0.1.
        for (i, want) in [(1, 0.6), (2, 0.3), (3, 0.1)] {
            let got = second[i] as f64 / 20_000.0;
            assert!((got - want).abs() < 0.02, "model {i}: {got} vs {want}");
        }
        assert_eq!(draws(&p, 2, 9, &mut rng).len(), 4);
        // Greedy with no floor: the rest still come out distinct.
        let greedy = draws(&[1.0, 0.0, 0.0], 0, 3, &mut rng);
        let mut seen: Vec<usize> = greedy.iter().map(|d| d.0).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(greedy[1].1, 0.5);
    }
}
