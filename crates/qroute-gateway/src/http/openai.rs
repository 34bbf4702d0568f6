//! `POST /v1/chat/completions`, OpenAI-compatible, so existing clients and
//! SDKs work by changing the base URL. `model: "auto"` lets the policy
//! choose; a configured model id passes through to that model. The body
//! is read and checked in [`super::chat_request`].
//!
//! Streaming (`stream: true`) answers as server-sent events in OpenAI's
//! chunk format, whatever the upstream's format, each chunk forwarded as
//! the upstream sends it. Retries and fallback happen before the first
//! chunk only; an upstream that breaks off later ends the stream with an
//! `{"error": …}` event and no `[DONE]`. Variations stream the judged best
//! answer once judged, and a cache hit streams the cached answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{route_as, stream_as, with_rate_headers};
use super::chat_request::{ChatCompletionRequest, AUTO};
use super::errors::{ApiError, ApiJson};
use super::experiments::enroll;
use super::metrics::{Received, UpstreamTime};
use crate::access::Principal;
use crate::cache::CacheMode;
use crate::engine::variations::Variation;
use crate::engine::{Attempt, CacheStatus, CascadeStep, Gateway, Routed, Streaming, Timings};
use crate::exec::providers::{Delta, ToolCall};

pub async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    received: Option<Extension<Received>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let streams = body.streams();
    let include_usage = body.include_usage();
    let user = body.user.clone();
    let mut req = body.into_route_request();
    req.cache = cache_mode(req.cache, &headers);
    // A pinned model is the caller's choice, not an arm's.
    if req.pinned.is_none() {
        req.enrollment = enroll(&gw, &headers, user.as_deref());
    }
    let received = Received::instant(received);
    let mut resp = if streams {
        let (streaming, rate) = match stream_as(&gw, &who, req, received).await {
            Ok(answered) => answered,
            Err(refused) => return Ok(refused.into_response()),
        };
        let cache = streaming.routed.cache;
        let mut resp = sse(streaming, include_usage).into_response();
        with_rate_headers(&mut resp, &rate);
        with_cache_header(&mut resp, cache);
        resp
    } else {
        let (routed, rate) = match route_as(&gw, &who, req, received).await {
            Ok(answered) => answered,
            Err(refused) => return Ok(refused.into_response()),
        };
        let upstream = UpstreamTime(routed.upstream);
        let mut resp = Json(completion(&routed)).into_response();
        with_rate_headers(&mut resp, &rate);
        with_cache_header(&mut resp, routed.cache);
        resp.extensions_mut().insert(upstream);
        resp
    };
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The client's `Cache-Control` narrows what the body allowed: `no-store`
/// keeps the answer out of the cache, `no-cache` answers fresh and stores
/// that answer in place of the old one.
fn cache_mode(body: CacheMode, headers: &HeaderMap) -> CacheMode {
    let directives: Vec<String> = headers
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if body == CacheMode::Bypass || directives.iter().any(|d| d == "no-store") {
        CacheMode::Bypass
    } else if directives.iter().any(|d| d == "no-cache") {
        CacheMode::Refresh
    } else {
        body
    }
}

fn with_cache_header(resp: &mut Response, cache: CacheStatus) {
    resp.headers_mut()
        .insert("x-qroute-cache", HeaderValue::from_static(cache.as_str()));
}

/// `GET /v1/models`: `auto` and every configured model, in OpenAI's list
/// format (UIs built for OpenAI call it first).
pub async fn models(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let entry = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
    let data: Vec<Value> = std::iter::once(entry(AUTO, "qroute"))
        .chain(gw.models.iter().map(|m| entry(&m.config.id, &m.config.provider)))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn created() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What qroute adds to OpenAI's response: how the decision was made.
#[derive(Serialize)]
struct QrouteFields<'a> {
    request_id: &'a str,
    policy_version: u64,
    propensity: f32,
    cost_usd: f64,
    timings: &'a Timings,
    attempts: &'a [Attempt],
    variations: &'a [Variation],
    judge: Option<&'static str>,
    combined_by: Option<&'a str>,
    cascade: &'a [CascadeStep],
    cache: &'static str,
}

fn qroute_fields(r: &Routed) -> QrouteFields<'_> {
    QrouteFields {
        request_id: &r.request_id,
        policy_version: r.policy_version,
        propensity: r.propensity,
        cost_usd: r.cost_usd,
        timings: &r.timings,
        attempts: &r.attempts,
        variations: &r.variations,
        judge: r.judge,
        combined_by: r.combined_by.as_deref(),
        cascade: &r.cascade,
        cache: r.cache.as_str(),
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
    }
}

/// An assistant message as OpenAI writes it: `content` is `null` when the
/// model only called tools.
#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCall],
}

fn message<'a>(text: &'a str, tool_calls: &'a [ToolCall]) -> Message<'a> {
    let tools_only = !tool_calls.is_empty() && text.is_empty();
    Message {
        role: "assistant",
        content: (!tools_only).then_some(text),
        refusal: None,
        tool_calls,
    }
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: usize,
    message: Message<'a>,
    finish_reason: &'a str,
    logprobs: Option<&'a Value>,
}

/// OpenAI's `chat.completion` object, serialized straight from the routed
/// answer. Built as a `serde_json::Value` first, its maps, their
/// allocations and their drop cost 39,000 instructions per request, 15% of
/// what the worker threads ran (callgrind, 3,000 requests through the
/// harness's config).
#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoice<'a>>,
    usage: Usage,
    qroute: QrouteFields<'a>,
}

fn choice<'a>(
    index: usize,
    text: &'a str,
    tool_calls: &'a [ToolCall],
    finish_reason: &'a str,
    logprobs: &'a Option<Value>,
) -> CompletionChoice<'a> {
    CompletionChoice {
        index,
        message: message(text, tool_calls),
        finish_reason,
        logprobs: logprobs.as_ref(),
    }
}

fn completion(r: &Routed) -> ChatCompletion<'_> {
    let c = &r.completion;
    // The first choice lives in the completion's own fields, the rest in
    // `more_choices`.
    let choices = std::iter::once(choice(0, &c.text, &c.tool_calls, &c.finish_reason, &c.logprobs))
        .chain(
            (1..)
                .zip(&c.more_choices)
                .map(|(i, m)| choice(i, &m.text, &m.tool_calls, &m.finish_reason, &m.logprobs)),
        )
        .collect();
    ChatCompletion {
        id: format!("chatcmpl-{}", r.request_id),
        object: "chat.completion",
        created: created(),
        model: &r.model,
        choices,
        usage: usage(c.input_tokens, c.output_tokens),
        qroute: qroute_fields(r),
    }
}

/// Writes deltas as OpenAI's chunks: a role chunk opens each choice, each
/// delta is one chunk, the usage is a chunk of no choices (when asked for).
/// How the decision was made rides on the first chunk (`qroute`): not on
/// a chunk of its own, since clients index `choices[0]` of every chunk.
struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    opened: Vec<bool>,
    head: Option<Value>,
}

impl ChunkWriter {
    fn chunk(&mut self, choices: Value) -> Value {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(head) = self.head.take() {
            c["qroute"] = head;
        }
        c
    }

    fn write(&mut self, d: &Delta, include_usage: bool, out: &mut Vec<Value>) {
        let i = d.choice as usize;
        let has_choice = d.content.is_some() || !d.tool_calls.is_empty() || d.finish_reason.is_some();
        if has_choice {
            if self.opened.len() <= i {
                self.opened.resize(i + 1, false);
            }
            if !self.opened[i] {
                self.opened[i] = true;
                out.push(self.chunk(json!([{
                    "index": i, "delta": {"role": "assistant", "content": ""},
                    "finish_reason": null, "logprobs": null,
                }])));
            }
            let mut delta = json!({});
            if let Some(c) = &d.content {
                delta["content"] = json!(c);
            }
            if !d.tool_calls.is_empty() {
                delta["tool_calls"] = json!(d.tool_calls);
            }
            out.push(self.chunk(json!([{
                "index": i, "delta": delta, "finish_reason": d.finish_reason, "logprobs": d.logprobs,
            }])));
        }
        if let (Some((input, output)), true) = (d.usage, include_usage) {
            let mut c = self.chunk(json!([]));
            c["usage"] = json!(usage(input, output));
            out.push(c);
        }
    }
}

fn sse(s: Streaming, include_usage: bool) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Streaming { routed, deltas, .. } = s;
    let mut writer = ChunkWriter {
        id: format!("chatcmpl-{}", routed.request_id),
        created: created(),
        model: routed.model.clone(),
        opened: Vec::new(),
        head: Some(json!(qroute_fields(&routed))),
    };
    let broken = Arc::new(AtomicBool::new(false));
    let seen = broken.clone();
    let body = deltas.map(move |d| match d {
        Ok(d) => {
            let mut out = Vec::with_capacity(2);
            writer.write(&d, include_usage, &mut out);
            out
        }
        Err(e) => {
            seen.store(true, Ordering::Relaxed);
            vec![json!({"error": {"type": "upstream_error", "message": e.message, "code": "upstream_error"}})]
        }
    });
    // `[DONE]` only after a stream that ended well: a broken one ends with
    // its error event.
    let done =
        futures_util::stream::once(async move { (!broken.load(Ordering::Relaxed)).then(|| "[DONE]".to_string()) })
            .filter_map(std::future::ready);
    let events = body
        .flat_map(|values| futures_util::stream::iter(values.into_iter().map(|v| v.to_string())))
        .chain(done)
        .map(|data| Ok(Event::default().data(data)));
    Sse::new(events)
}
