//! Streaming mode: time to first token (TTFT) through qroute against
//! straight to the mock.
//!
//! For a streamed answer the number a user feels is how long the first
//! words take, not the whole answer (which the upstream's pacing decides),
//! so each client opens `POST /v1/chat/completions` with `"stream": true`,
//! reads the body as it arrives and notes two times from sending: the first
//! `data:` event whose `choices[0].delta.content` is non-empty (TTFT), and
//! `data: [DONE]` (the whole stream).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use qroute_core::{Error, Result};

use crate::{BenchConfig, Load, Quantiles, Target, PROMPTS};

/// Warm-up streams per level and target, at most. A stream lasts at least
/// the mock's eight content chunks times the chunk delay, so the plain
/// bench's few hundred warm-up requests would take minutes; a few streams
/// are enough to open connections and let the trainer take its first steps.
pub(crate) const WARMUP_STREAMS: usize = 16;

/// One level's streaming results, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamResult {
    pub ttft_gateway_ms: Quantiles,
    pub ttft_direct_ms: Quantiles,
    /// The TTFT qroute adds: via minus direct, p50 and p99 each.
    pub ttft_added_ms: Quantiles,
}

impl StreamResult {
    pub(crate) fn of(through: Vec<f64>, direct: Vec<f64>) -> StreamResult {
        let (via, direct) = (Quantiles::of(through), Quantiles::of(direct));
        StreamResult {
            ttft_gateway_ms: via,
            ttft_direct_ms: direct,
            ttft_added_ms: Quantiles {
                p50: via.p50 - direct.p50,
                p99: via.p99 - direct.p99,
            },
        }
    }
}

/// The mock serves any model name, so straight to it we ask for one the
/// gateway also routes to (its upstream name is its id); through the
/// gateway, `auto` lets the policy choose as real traffic would.
fn body(target: Target, i: usize) -> Value {
    let model = match target {
        Target::Gateway(_) => "auto",
        Target::Direct => "mock-small",
    };
    json!({
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}],
        "stream": true,
    })
}

/// When, after sending, the first token and the end of one stream came.
struct Timing {
    first_token: Duration,
    done: Duration,
}

/// Sends one streamed request and reads it to `[DONE]`; `None` for a
/// failure, a stream that never carried content or one cut off before
/// `[DONE]`.
async fn one(client: &reqwest::Client, url: &str, body: &Value) -> Option<Timing> {
    let t0 = Instant::now();
    let mut r = client.post(url).json(body).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let mut first_token = None;
    let mut buf: Vec<u8> = Vec::new();
    // `chunk()` yields the body's frames as they arrive, like `bytes_stream()`
    // but without a `Stream` trait this crate does not depend on.
    while let Some(bytes) = r.chunk().await.ok()? {
        buf.extend_from_slice(&bytes);
        // Events may span frames: handle only complete lines, keep the rest.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Some(data) = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.trim().strip_prefix("data:"))
                .map(str::trim)
            else {
                continue;
            };
            if data == "[DONE]" {
                return first_token.map(|first_token| Timing {
                    first_token,
                    done: t0.elapsed(),
                });
            }
            if first_token.is_none() && has_content(data) {
                first_token = Some(t0.elapsed());
            }
        }
    }
    None
}

/// Whether an event's JSON carries a token: non-empty `choices[0].delta.content`.
fn has_content(data: &str) -> bool {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["choices"][0]["delta"]["content"].as_str().map(|s| !s.is_empty()))
        .unwrap_or(false)
}

/// `c` clients each opening one stream after another for the duration;
/// `latencies` are the times to `[DONE]`, `ttfts` to the first token.
pub(crate) async fn load(url: &str, target: Target, c: usize, cfg: &BenchConfig) -> Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c.max(1))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Unavailable(format!("the load generator's HTTP client: {e}")))?;
    for i in 0..cfg.warmup.min(WARMUP_STREAMS) {
        let _ = one(&client, url, &body(target, i)).await;
    }
    let start = Instant::now();
    let stop_at = start + cfg.duration;
    let mut tasks = Vec::with_capacity(c);
    for worker in 0..c {
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut ttft, mut errors) = (Vec::new(), Vec::new(), 0usize);
            let mut i = worker;
            while Instant::now() < stop_at {
                match one(&client, &url, &body(target, i)).await {
                    Some(t) => {
                        ttft.push(t.first_token.as_secs_f64() * 1e3);
                        done.push(t.done.as_secs_f64() * 1e3);
                    }
                    None => errors += 1,
                }
                i += c;
            }
            (done, ttft, errors)
        }));
    }
    let mut out = Load::default();
    for t in tasks {
        if let Ok((d, f, e)) = t.await {
            out.latencies.extend(d);
            out.ttfts.extend(f);
            out.errors += e;
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_empty_content_is_a_token() {
        assert!(has_content(r#"{"choices":[{"delta":{"content":"mock"}}]}"#));
        assert!(!has_content(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!has_content(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#));
        assert!(!has_content(r#"{"choices":[],"usage":{"total_tokens":3}}"#));
        assert!(!has_content("not json"));
    }

    #[test]
    fn added_ttft_is_via_minus_direct() {
        let r = StreamResult::of(vec![3.0, 5.0], vec![1.0, 2.0]);
        assert_eq!(r.ttft_added_ms.p99, 3.0);
        assert!(r.ttft_added_ms.p50 >= 1.0);
    }
}
