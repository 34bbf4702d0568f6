//! Steps 3–5 for a streamed answer: the chosen model is asked to stream,
//! and retries and fallback happen only until its first chunk arrives
//! (after that the client has bytes, and a switch would splice two
//! answers). The chunks are relayed as they come; the outcome (usage-based
//! cost, latency, time to first token, or how the stream broke) is
//! recorded when the stream ends, or when the client leaves.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use tokio::sync::oneshot;

use super::single::routed_by;
use super::{Attempt, CacheStatus, Gateway, Plan, RouteRequest, Routed, Streaming};
use crate::cache::CacheKey;
use crate::exec::providers::stream::{replay, with_idle_timeout};
use crate::exec::providers::{Assembler, Delta, DeltaStream, ErrorKind, ProviderError};
use qroute_core::Result;

impl Gateway {
    /// Routes `req` and streams the answer. A cache hit and the judged
    /// best of several variations are whole before they are sent, so they
    /// are replayed as a stream.
    pub async fn route_stream(self: &Arc<Self>, req: RouteRequest, received: Instant) -> Result<Streaming> {
        let (req, prep, key) = match self.plan(req, received).await? {
            Plan::Whole(routed) => return Ok(replayed(routed)),
            // A cascade is never streamed (`cascade_calls` refuses it).
            Plan::Single { req, prep, key, .. } => (req, prep, key),
        };
        let tried = self
            .attempt_in_order(&req, &prep, |k, limit| {
                let m = &self.models[k];
                m.provider.stream_within(m.config.upstream(), &req.chat, limit)
            })
            .await?;
        let model = &self.models[tried.model];
        let id = model.config.id.clone();
        let ttft = received.elapsed();
        metrics::histogram!("qroute_time_to_first_token_seconds", "model" => id.clone()).record(ttft.as_secs_f64());
        let (deltas, calls, upstream_time) = (tried.answer, tried.calls, tried.upstream_time);
        let mut attempts = tried.failed;
        attempts.push(Attempt {
            model: id.clone(),
            calls,
            latency_ms: upstream_time.as_secs_f64() * 1e3,
            error: None,
        });
        let upstream = tried.failed_upstream + upstream_time;
        let (cost_tx, cost_rx) = oneshot::channel();
        let cache = if key.is_some() {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        let relay = Relay {
            deltas: with_idle_timeout(deltas, self.config.limits.attempt_timeout()),
            end: Some(End {
                gw: self.clone(),
                model: tried.model,
                decision_id: tried.decision_id,
                request_id: prep.request_id.clone(),
                key_id: req.key.clone(),
                calls,
                ttft_ms: ttft.as_secs_f64() * 1e3,
                started: Instant::now().checked_sub(upstream_time).unwrap_or_else(Instant::now),
                assembler: Assembler::default(),
                estimated_input: prep.prompt_tokens,
                cost: cost_tx,
                cache_key: key,
            }),
        };
        Ok(Streaming {
            routed: Routed {
                cache,
                ..routed_by(&prep, &id, attempts, upstream)
            },
            deltas: Box::pin(relay),
            cost: Some(cost_rx),
        })
    }
}

/// A whole answer sent as a stream; its cost is known already.
fn replayed(routed: Routed) -> Streaming {
    let (tx, rx) = oneshot::channel();
    // The receiver is returned alongside: it cannot be gone yet.
    let _ = tx.send(routed.cost_usd);
    Streaming {
        deltas: replay(&routed.completion),
        routed,
        cost: Some(rx),
    }
}

/// The upstream's deltas, passed on as they come and assembled on the way,
/// so the outcome is recorded once, however the stream ends.
struct Relay {
    deltas: DeltaStream,
    /// `None` once recorded.
    end: Option<End>,
}

/// What recording the end of a stream needs.
struct End {
    gw: Arc<Gateway>,
    /// Index into [`Gateway::models`].
    model: usize,
    decision_id: String,
    request_id: String,
    key_id: Option<String>,
    calls: u32,
    /// From the request's arrival to the first delta.
    ttft_ms: f64,
    /// When the call that is streaming began.
    started: Instant,
    assembler: Assembler,
    estimated_input: u64,
    cost: oneshot::Sender<f64>,
    cache_key: Option<CacheKey>,
}

impl End {
    /// Settles the model's breaker, queues the outcome, charges the cost
    /// and, for a whole answer, stores it in the cache. `counts` is false
    /// when the stream was cut by the client, which says nothing about
    /// the model.
    fn record(self, result: std::result::Result<(), ProviderError>, counts: bool) {
        let gw = self.gw;
        let model = &gw.models[self.model];
        let completion = self.assembler.completion(self.estimated_input);
        let settled = result.as_ref().map(|()| &completion);
        let upstream_time = self.started.elapsed();
        let mut outcome = gw.settle(model, &self.decision_id, settled, self.calls, upstream_time, counts);
        outcome.ttft_ms = Some(self.ttft_ms);
        if result.is_err() {
            // What was streamed before the break was generated, and billed:
            // it is the call's cost, and the key's.
            outcome.cost_usd = model.config.price(completion.input_tokens, completion.output_tokens);
        }
        let cost = outcome.cost_usd;
        gw.writer.outcome_later(outcome);
        // The request may have gone, and its cost with it.
        let _ = self.cost.send(cost);
        if result.is_ok() {
            gw.answered(
                &self.request_id,
                self.key_id.clone(),
                &self.decision_id,
                &model.config.id,
            );
            if let Some(key) = self.cache_key {
                let id = model.config.id.clone();
                let gw = gw.clone();
                tokio::spawn(async move { gw.remember(key, &id, &completion).await });
            }
        }
    }
}

impl Stream for Relay {
    type Item = std::result::Result<Delta, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.end.is_none() {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(this.deltas.as_mut().poll_next(cx));
        match &item {
            Some(Ok(d)) => {
                if let Some(end) = &mut this.end {
                    end.assembler.push(d);
                }
            }
            Some(Err(e)) => {
                if let Some(end) = this.end.take() {
                    end.record(Err(e.clone()), true);
                }
            }
            None => {
                if let Some(end) = this.end.take() {
                    if end.assembler.finished() {
                        end.record(Ok(()), true);
                    } else {
                        let broke =
                            ProviderError::new(ErrorKind::Decode, "the stream ended before the answer finished");
                        end.record(Err(broke.clone()), true);
                        return Poll::Ready(Some(Err(broke)));
                    }
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            metrics::counter!("qroute_stream_disconnects_total").increment(1);
            end.record(
                Err(ProviderError::new(
                    ErrorKind::Connect,
                    "the client disconnected mid-stream",
                )),
                false,
            );
        }
    }
}
