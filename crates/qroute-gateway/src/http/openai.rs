//! `POST /v1/chat/completions`, OpenAI-compatible, so existing clients and
//! SDKs work by changing the base URL. `model: "auto"` lets the policy
//! choose; a configured model id passes through to that model.
//!
//! qroute's own knobs ride along as extra body fields (the OpenAI SDKs'
//! `extra_body`): `cost_weight`, `latency_weight`, `max_cost_usd`, `models`,
//! `task_type`, `persona`, `variations`, `combine`. Other OpenAI fields qroute does not use (`n`,
//! `stop`, `tools`, …) are accepted and ignored.
//!
//! Streaming (`stream: true`) answers as server-sent events in OpenAI's
//! chunk format. The upstream is called without streaming and its answer is
//! sent as chunks once complete: the client's SDK streams unchanged, but the
//! first token arrives when the whole answer does.

use super::auth::{route_as, with_rate_headers};
use crate::access::Principal;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::errors::{ApiError, ApiJson};
use super::execute::check_numbers;
use super::experiments::enroll;
use super::metrics::{Received, UpstreamTime};
use crate::engine::{Gateway, Preference, RouteRequest, Routed};
use crate::exec::providers::{ChatMessage, ChatRequest};
use qroute_core::Error;

/// The model name that asks qroute to choose.
pub const AUTO: &str = "auto";

// Objects only: a derived struct would also read from an array, positionally.
qroute_core::objects_only!(ChatCompletionRequest, StreamOptions, InMessage, Part);

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    /// `null` reads as false, as OpenAI's server takes it.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// In [0, 2]; read as `f64` so that the check sees the number sent.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// OpenAI's end-user id: the unit of experiments keyed on `user`.
    #[serde(default)]
    pub user: Option<String>,
    // qroute's extensions.
    #[serde(default)]
    pub cost_weight: Option<f64>,
    #[serde(default)]
    pub latency_weight: Option<f64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub persona: Option<String>,
    #[serde(default)]
    pub variations: Option<usize>,
    #[serde(default)]
    pub combine: bool,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, or an array of parts of which the text
/// parts are used.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    Null,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn text(self) -> String {
        match self {
            Content::Text(s) => s,
            Content::Parts(parts) => parts
                .into_iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn of(r: &Routed) -> Usage {
        let (p, c) = (r.completion.input_tokens, r.completion.output_tokens);
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
        }
    }
}

pub async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    received: Option<Extension<Received>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if body.messages.is_empty() {
        return Err(Error::InvalidInput("messages: must hold at least one message".into()).into());
    }
    check_numbers(
        &[
            ("max_tokens", body.max_tokens),
            ("max_completion_tokens", body.max_completion_tokens),
        ],
        body.temperature,
        body.cost_weight,
        body.latency_weight,
    )?;
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(Error::InvalidInput(format!("messages[{i}].role: unknown role {:?}", m.role)).into());
        }
        let role = if m.role == "developer" { "system".into() } else { m.role };
        messages.push(ChatMessage {
            role,
            content: m.content.text(),
        });
    }
    let pinned = (body.model != AUTO).then(|| body.model.clone());
    // A pinned model is the caller's choice, not an arm's.
    let enrollment = match pinned {
        None => enroll(&gw, &headers, body.user.as_deref()),
        Some(_) => None,
    };
    let req = RouteRequest {
        chat: ChatRequest {
            messages,
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            temperature: body.temperature.map(|t| t as f32),
        },
        task_type: body.task_type,
        persona: body.persona,
        preference: Preference {
            cost_weight: body.cost_weight.map(|w| w as f32),
            latency_weight: body.latency_weight.map(|w| w as f32),
            max_cost_usd: body.max_cost_usd,
            models: body.models,
        },
        pinned,
        variations: body.variations,
        combine: body.combine,
        enrollment,
        key: None,
    };
    let (routed, rate) = match route_as(&gw, &who, req, Received::instant(received)).await {
        Ok(answered) => answered,
        Err(refused) => return Ok(refused.into_response()),
    };
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let upstream = UpstreamTime(routed.upstream);
    let mut resp = if body.stream.unwrap_or(false) {
        stream(routed, include_usage).into_response()
    } else {
        Json(completion(&routed)).into_response()
    };
    with_rate_headers(&mut resp, &rate);
    resp.extensions_mut().insert(upstream);
    Ok(resp)
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
fn qroute_fields(r: &Routed) -> Value {
    json!({
        "request_id": r.request_id,
        "policy_version": r.policy_version,
        "propensity": r.propensity,
        "cost_usd": r.cost_usd,
        "timings": r.timings,
        "attempts": r.attempts,
        "variations": r.variations,
        "judge": r.judge,
        "combined_by": r.combined_by,
    })
}

fn completion(r: &Routed) -> Value {
    json!({
        "id": format!("chatcmpl-{}", r.request_id),
        "object": "chat.completion",
        "created": created(),
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": r.completion.text},
            "finish_reason": r.completion.finish_reason,
            "logprobs": null,
        }],
        "usage": Usage::of(r),
        "qroute": qroute_fields(r),
    })
}

/// Characters per streamed chunk (split at whitespace where possible).
const CHUNK_CHARS: usize = 32;

/// Splits `text` into pieces of about [`CHUNK_CHARS`], each ending after a
/// space where there is one, so concatenating them gives `text` back.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.char_indices().nth(CHUNK_CHARS).map_or(rest.len(), |(i, _)| i);
        if end < rest.len() {
            if let Some(space) = rest[..end].rfind(' ') {
                end = space + 1;
            }
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

fn stream(r: Routed, include_usage: bool) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let id = format!("chatcmpl-{}", r.request_id);
    let created = created();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for p in pieces(&r.completion.text) {
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    let mut last = chunk(json!({}), json!(r.completion.finish_reason));
    last["qroute"] = qroute_fields(&r);
    events.push(last);
    if include_usage {
        events.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "choices": [], "usage": Usage::of(&r),
        }));
    }
    let events = events
        .into_iter()
        .map(|v| Ok(Event::default().data(v.to_string())))
        .chain(std::iter::once(Ok(Event::default().data("[DONE]"))));
    Sse::new(futures_util::stream::iter(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rebuild_the_text() {
        let text = "The answer is 391 because 17 times 23 is 391, and héllo wörld ünïcode is fine too.";
        let p = pieces(text);
        assert!(p.len() > 1);
        assert_eq!(p.concat(), text);
        assert!(p.iter().all(|s| s.chars().count() <= CHUNK_CHARS));
        assert!(pieces("").is_empty());
        let long_word = "x".repeat(100);
        assert_eq!(pieces(&long_word).concat(), long_word);
    }

    #[test]
    fn content_parts_keep_text_only() {
        let c: Content =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]"#)
                .unwrap();
        assert_eq!(c.text(), "a\nb");
        let c: Content = serde_json::from_str("null").unwrap();
        assert_eq!(c.text(), "");
    }
}
