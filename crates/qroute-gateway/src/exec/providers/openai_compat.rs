//! OpenAI's chat completions format, which most of the field speaks too:
//! OpenAI, Groq, Together, vLLM, Ollama, GitHub Models, LiteLLM proxies.
//!
//! Also home to the request/response plumbing the other adapters share
//! ([`Upstream`] and its `send`), since every format ends in the same
//! place: one JSON answer or one [`ProviderError`], whose text
//! [`super::sanitize`] has cleaned of keys and addresses.

use std::fmt;

use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::sanitize::Scrubber;
use serde_json::Value;

use super::chat::{unsigned_messages, Choice, Delta, Params, ToolCall, ToolCallDelta};
use super::stream::DeltaStream;
use super::{ChatMessage, ChatRequest, Completion, ErrorKind, ProviderError};

/// Bytes of an error body worth reading. Past this the rest is dropped with
/// the connection rather than waited for.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// What every HTTP adapter holds: the pooled client, the base URL
/// (trailing slashes trimmed), the API key, and the [`Scrubber`] every
/// error it returns is built by.
pub(super) struct Upstream {
    pub client: reqwest::Client,
    pub base_url: String,
    pub api_key: Option<String>,
    pub errors: Scrubber,
}

impl Upstream {
    /// `kind` names the provider in error messages until
    /// [`Upstream::rename`] gives it its configured name.
    pub fn new(kind: &str, client: reqwest::Client, base_url: String, api_key: Option<String>) -> Upstream {
        let base_url = trim_base(base_url);
        Upstream {
            errors: Scrubber::new(kind, &base_url, api_key.as_deref()),
            client,
            base_url,
            api_key,
        }
    }

    /// Names the provider in error messages as the config does.
    pub fn rename(&mut self, name: &str) {
        self.errors.renamed(name);
    }

    /// `base_url` + `path`, parsed once at construction: URL parsing is a
    /// measurable share of a loopback call's CPU. `None` when malformed.
    pub fn endpoint(&self, path: &str) -> Option<reqwest::Url> {
        reqwest::Url::parse(&format!("{}{path}", self.base_url)).ok()
    }

    /// A POST to an endpoint from [`Upstream::endpoint`], or a config error.
    /// The URL itself is not quoted: the message reaches clients.
    pub fn post(&self, endpoint: &Option<reqwest::Url>) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = endpoint
            .clone()
            .ok_or_else(|| self.errors.error(ErrorKind::Config, "base_url is not a valid URL"))?;
        Ok(self.client.post(url))
    }

    /// Sends one request and decodes its JSON answer.
    ///
    /// A success body is read whole before decoding so the connection goes
    /// back to the pool at once. A failure becomes `Status(code)` carrying
    /// the upstream's own explanation, cleaned: every supported format wraps
    /// it in `{"error": {"message": …}}`, and a body that does not is
    /// quoted instead.
    pub async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, ProviderError> {
        let resp = self.open(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.errors.transport(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.errors.decode(&e, &bytes))
    }

    /// Sends one request and returns the response once its status says
    /// success, for the caller to read whole or as a stream.
    ///
    /// A failure becomes `Status(code)` carrying the upstream's own
    /// explanation, cleaned: every supported format wraps it in
    /// `{"error": {"message": …}}`, and a body that does not is quoted
    /// instead.
    pub async fn open(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let mut resp = rb.send().await.map_err(|e| self.errors.transport(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Best effort: the status alone is the error; the body only explains.
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Err(self.errors.status(status, &error_reason(&body)))
    }

    /// Opens a server-sent-event stream and decodes each event's data as
    /// `T`, ending at OpenAI's `[DONE]` or when the upstream closes. A broken
    /// connection or an unreadable event is one error item, and the end.
    pub async fn open_events<T: DeserializeOwned + Send + 'static>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<BoxStream<'static, Result<T, ProviderError>>, ProviderError> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let resp = self.open(rb).await?;
        let errors = self.errors.clone();
        let events = resp.bytes_stream().eventsource();
        let decoded = events
            .take_while(|e| std::future::ready(!matches!(e, Ok(ev) if ev.data == "[DONE]")))
            .filter(|e| std::future::ready(!matches!(e, Ok(ev) if ev.data.trim().is_empty())))
            .map(move |e| match e {
                Ok(ev) => serde_json::from_str::<T>(&ev.data).map_err(|err| errors.decode(&err, ev.data.as_bytes())),
                Err(eventsource_stream::EventStreamError::Transport(err)) => Err(errors.transport(&err)),
                Err(_) => Err(errors.error(ErrorKind::Decode, "the event stream is not server-sent events")),
            });
        Ok(super::stream::end_at_first_error(decoded))
    }
}

// Manual, so that the key never lands in a log through `{:?}`.
impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug)]
pub struct OpenAiCompat {
    upstream: Upstream,
    endpoint: Option<reqwest::Url>,
}

/// The request as sent: the client's messages and parameters unchanged,
/// the model renamed to the provider's.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(flatten)]
    params: &'a Params,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<WireStreamOptions>,
}

/// Usage on the last chunk, so a streamed answer is priced from the
/// provider's own count.
#[derive(Serialize)]
struct WireStreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    /// Absent from some servers' answers (older Ollama, some proxies), and
    /// `null` from others.
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    /// `null` when the model answered with tool calls or a refusal only.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

impl OpenAiCompat {
    /// `base_url` ends where the API's paths begin, e.g.
    /// `https://api.openai.com/v1` or `http://localhost:11434/v1`. No key
    /// suits local servers (vLLM, Ollama) that need none.
    pub fn new(client: reqwest::Client, base_url: impl Into<String>, api_key: Option<String>) -> Self {
        let upstream = Upstream::new("openai", client, base_url.into(), api_key);
        OpenAiCompat {
            endpoint: upstream.endpoint("/chat/completions"),
            upstream,
        }
    }

    /// Names the provider in error messages as the config does (the kind,
    /// `openai`, until then).
    pub fn with_name(mut self, name: &str) -> Self {
        self.upstream.rename(name);
        self
    }

    fn request(
        &self,
        upstream_model: &str,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let messages = unsigned_messages(&req.messages);
        let body = WireRequest {
            model: upstream_model,
            messages: &messages,
            params: &req.params,
            stream,
            stream_options: stream.then_some(WireStreamOptions { include_usage: true }),
        };
        let mut rb = self.upstream.post(&self.endpoint)?.json(&body);
        if let Some(key) = &self.upstream.api_key {
            rb = rb.bearer_auth(key);
        }
        Ok(rb)
    }

    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let resp: WireResponse = self.upstream.send(self.request(upstream_model, req, false)?).await?;
        let usage = resp.usage.unwrap_or_default();
        if resp.choices.is_empty() {
            return Err(self.upstream.errors.error(ErrorKind::Decode, "answer has no choices"));
        }
        let choices = resp
            .choices
            .into_iter()
            .map(|c| Choice {
                text: c.message.content.unwrap_or_default(),
                tool_calls: c.message.tool_calls.unwrap_or_default(),
                // Some servers leave it out; a complete answer is what it means.
                finish_reason: c
                    .finish_reason
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| "stop".into()),
                logprobs: c.logprobs.filter(|l| !l.is_null()),
            })
            .collect();
        Ok(Completion::from_choices(
            choices,
            usage.prompt_tokens.unwrap_or(0),
            usage.completion_tokens.unwrap_or(0),
        ))
    }

    /// The answer as the upstream generates it, each chunk one [`Delta`]
    /// per choice it carries (and one for the usage at the end).
    pub async fn stream(&self, upstream_model: &str, req: &ChatRequest) -> Result<DeltaStream, ProviderError> {
        use futures_util::StreamExt;
        let chunks = self
            .upstream
            .open_events::<WireChunk>(self.request(upstream_model, req, true)?)
            .await?;
        Ok(chunks
            .flat_map(|chunk| futures_util::stream::iter(deltas(chunk)))
            .boxed())
    }
}

/// One chunk's deltas, or its error.
fn deltas(chunk: Result<WireChunk, ProviderError>) -> Vec<Result<Delta, ProviderError>> {
    let chunk = match chunk {
        Ok(c) => c,
        Err(e) => return vec![Err(e)],
    };
    let mut out: Vec<Result<Delta, ProviderError>> = chunk
        .choices
        .into_iter()
        .map(|c| {
            let delta = c.delta.unwrap_or_default();
            Ok(Delta {
                choice: c.index,
                content: delta.content,
                tool_calls: delta.tool_calls.unwrap_or_default(),
                finish_reason: c.finish_reason.filter(|f| !f.is_empty()),
                logprobs: c.logprobs.filter(|l| !l.is_null()),
                usage: None,
            })
        })
        .collect();
    if let Some(u) = chunk.usage {
        out.push(Ok(Delta {
            usage: Some((u.prompt_tokens.unwrap_or(0), u.completion_tokens.unwrap_or(0))),
            ..Delta::default()
        }));
    }
    out
}

/// A base URL without its trailing slashes, so that paths can be appended
/// with `format!("{base}/path")` whichever way the user wrote it.
fn trim_base(mut base: String) -> String {
    while base.ends_with('/') {
        base.pop();
    }
    base
}

/// The upstream's explanation of a failure, for humans reading logs, not
/// yet cleaned: [`Scrubber::status`] redacts and cuts it.
///
/// Read loosely, as a JSON value: besides the usual `{"error": {"message",
/// "type"|"status"}}`, vLLM puts `message` at the top level and some proxies
/// make `error` a plain string.
fn error_reason(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    let detail = value.get("error").unwrap_or(&value);
    if let Some(text) = detail.as_str() {
        return text.to_string();
    }
    let Some(message) = detail.get("message").and_then(|m| m.as_str()) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    // OpenAI's and Anthropic's category (`rate_limit_error`), or Gemini's
    // (`RESOURCE_EXHAUSTED`).
    let category = ["type", "status"]
        .iter()
        .find_map(|k| detail.get(*k).and_then(|c| c.as_str()));
    match category {
        Some(category) => format!("{category}: {message}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Anthropic, Gemini};
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = Some("sk-secret-123".to_string());
        let client = reqwest::Client::new();
        let shown = [
            format!("{:?}", OpenAiCompat::new(client.clone(), "http://h/v1/", key.clone())),
            format!("{:?}", Anthropic::new(client.clone(), "http://h", key.clone())),
            format!("{:?}", Gemini::new(client, "http://h", key)),
        ];
        for s in shown {
            assert!(!s.contains("sk-secret"), "{s}");
            assert!(s.contains("<redacted>") && s.contains("\"http://h"), "{s}");
        }
    }
}
