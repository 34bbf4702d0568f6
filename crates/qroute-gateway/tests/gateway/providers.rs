//! The three provider adapters against the mock upstream, over real HTTP:
//! answers, token counts, system prompts, and every failure class that
//! retry and fallback decide on.

use std::time::Duration;

use qroute_gateway::exec::providers::{
    http_client, Anthropic, ChatMessage, ChatRequest, Completion, ErrorKind, Gemini, OpenAiCompat, ProviderError,
};
use qroute_mock::{spawn, MockConfig, MockServer};

/// The three adapters, pointed at one mock.
struct Adapters {
    openai: OpenAiCompat,
    anthropic: Anthropic,
    gemini: Gemini,
}

impl Adapters {
    /// One adapter per format for the server at `url` (host and port).
    fn at(url: &str) -> Adapters {
        let client = http_client(Duration::from_secs(2)).unwrap();
        Adapters {
            openai: OpenAiCompat::new(client.clone(), format!("{url}/v1"), Some("sk-test".into())),
            anthropic: Anthropic::new(client.clone(), url, Some("ak-test".into())),
            gemini: Gemini::new(client, url, Some("gk-test".into())),
        }
    }

    /// The same call through each format, in the order openai, anthropic,
    /// gemini.
    async fn all(&self, model: &str, req: &ChatRequest) -> [Result<Completion, ProviderError>; 3] {
        [
            self.openai.complete(model, req).await,
            self.anthropic.complete(model, req).await,
            self.gemini.complete(model, req).await,
        ]
    }
}

async fn mock() -> (MockServer, Adapters) {
    let server = spawn(MockConfig::default()).await.expect("mock starts");
    let adapters = Adapters::at(&server.url());
    (server, adapters)
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

#[tokio::test]
async fn each_format_returns_text_usage_and_finish_reason() {
    let (server, adapters) = mock().await;
    let prompt = "What is the capital of France?";
    let req = ChatRequest::user(prompt);
    let expected = format!("mock answer from m-ok: {prompt}");
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-ok", &req).await)
    {
        let c = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.text, expected, "{name}");
        assert_eq!(c.input_tokens, tokens(prompt.len()), "{name}");
        assert_eq!(c.output_tokens, tokens(expected.len()), "{name}");
        assert_eq!(c.finish_reason, "stop", "{name}");
        assert_eq!(c.known_quality, None, "{name}");
        assert_eq!(c.known_cost_usd, None, "{name}");
    }
    assert_eq!(server.stats.calls("m-ok"), 3);
}

#[tokio::test]
async fn max_tokens_truncates_and_reports_length() {
    let (_server, adapters) = mock().await;
    let mut req = ChatRequest::user("a prompt long enough to need more than three tokens");
    req.params.max_tokens = Some(3);
    req.params.temperature = Some(0.2);
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-ok", &req).await)
    {
        let c = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.output_tokens, 3, "{name}");
        assert_eq!(c.finish_reason, "length", "{name}");
        assert_eq!(c.text, "mock answer ", "{name}");
    }
}

#[tokio::test]
async fn system_messages_reach_each_formats_system_slot() {
    let (_server, adapters) = mock().await;
    let req = ChatRequest {
        messages: vec![
            msg("system", "Be brief."),
            msg("user", "first question"),
            msg("assistant", "first answer"),
            msg("system", "Answer in French."),
            msg("user", "second question"),
        ],
        ..ChatRequest::default()
    };
    let expected = "mock answer from m-ok [system: Be brief.\n\nAnswer in French.]: second question";
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-ok", &req).await)
    {
        let c = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.text, expected, "{name}");
        // Every message's characters count, the system prompt's included.
        let chars = req.messages.iter().map(|m| m.content.text().len()).sum::<usize>();
        let separator = if *name == "openai" { 0 } else { 2 };
        assert_eq!(c.input_tokens, tokens(chars + separator), "{name}");
    }

    // Without a system message, none is reported.
    let c = adapters
        .anthropic
        .complete("m-ok", &ChatRequest::user("hi"))
        .await
        .unwrap();
    assert_eq!(c.text, "mock answer from m-ok: hi");
    let c = adapters
        .gemini
        .complete("m-ok", &ChatRequest::user("hi"))
        .await
        .unwrap();
    assert_eq!(c.text, "mock answer from m-ok: hi");
}

#[tokio::test]
async fn error_model_is_a_retryable_500_with_the_upstream_message() {
    let (server, adapters) = mock().await;
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-error", &ChatRequest::user("hi")).await)
    {
        let e = result.expect_err(name);
        assert_eq!(e.kind, ErrorKind::Status(500), "{name}");
        assert!(e.retryable(), "{name}");
        assert!(e.message.contains("always fails"), "{name}: {}", e.message);
        assert!(e.message.contains(name), "{name}: {}", e.message);
    }
    // Failed calls are counted too.
    assert_eq!(server.stats.calls("m-error"), 3);
}

#[tokio::test]
async fn reject_model_is_a_final_400() {
    let (_server, adapters) = mock().await;
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-reject", &ChatRequest::user("hi")).await)
    {
        let e = result.expect_err(name);
        assert_eq!(e.kind, ErrorKind::Status(400), "{name}");
        assert!(!e.retryable(), "{name}");
        assert!(e.message.contains("rejects"), "{name}: {}", e.message);
    }
}

#[tokio::test]
async fn ratelimit_model_is_a_retryable_429() {
    let (_server, adapters) = mock().await;
    for (name, result) in ["openai", "anthropic", "gemini"]
        .iter()
        .zip(adapters.all("m-RateLimit", &ChatRequest::user("hi")).await)
    {
        let e = result.expect_err(name);
        assert_eq!(e.kind, ErrorKind::Status(429), "{name}");
        assert!(e.retryable(), "{name}");
    }
}

#[tokio::test]
async fn flaky_model_fails_then_succeeds() {
    let (server, adapters) = mock().await;
    let req = ChatRequest::user("hi");
    let e = adapters.openai.complete("m-flaky", &req).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Status(503));
    assert!(e.retryable());
    assert!(adapters.openai.complete("m-flaky", &req).await.is_ok());
    assert!(adapters.openai.complete("m-flaky", &req).await.is_err());

    // Counted per model name: another flaky model starts over with a failure.
    let e = adapters.anthropic.complete("other-flaky", &req).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Status(503));
    assert!(adapters.gemini.complete("other-flaky", &req).await.is_ok());

    assert_eq!(server.stats.calls("m-flaky"), 3);
    assert_eq!(server.stats.calls("other-flaky"), 2);
}

#[tokio::test]
async fn slow_answers_can_be_cut_by_the_callers_timeout() {
    let (_server, adapters) = mock().await;
    let req = ChatRequest::user("hi");
    let limit = Duration::from_millis(100);
    for model in ["m-timeout", "m-delay60000"] {
        assert!(
            tokio::time::timeout(limit, adapters.openai.complete(model, &req))
                .await
                .is_err(),
            "{model}"
        );
        assert!(
            tokio::time::timeout(limit, adapters.anthropic.complete(model, &req))
                .await
                .is_err(),
            "{model}"
        );
        assert!(
            tokio::time::timeout(limit, adapters.gemini.complete(model, &req))
                .await
                .is_err(),
            "{model}"
        );
    }
    // A short delay still answers.
    let c = adapters.openai.complete("m-delay1", &req).await.unwrap();
    assert_eq!(c.finish_reason, "stop");
}

#[tokio::test]
async fn connection_refused_is_a_retryable_connect_error() {
    // Bind to learn a free port, then close it so nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let results = Adapters::at(&format!("http://127.0.0.1:{port}"))
        .all("m", &ChatRequest::user("hi"))
        .await;
    for result in results {
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connect, "{e}");
        assert!(e.retryable());
    }
}

#[tokio::test]
async fn trailing_slashes_in_base_urls_are_tolerated() {
    let server = spawn(MockConfig::default()).await.unwrap();
    let client = http_client(Duration::from_secs(2)).unwrap();
    let url = server.url();
    let req = ChatRequest::user("hi");
    OpenAiCompat::new(client.clone(), format!("{url}/v1/"), None)
        .complete("m", &req)
        .await
        .unwrap();
    Anthropic::new(client.clone(), format!("{url}/"), None)
        .complete("m", &req)
        .await
        .unwrap();
    Gemini::new(client, format!("{url}/"), None)
        .complete("models/m", &req)
        .await
        .unwrap();
    assert_eq!(server.stats.calls("m"), 3);
}

/// Serves `app` on a free loopback port; its base URL.
async fn upstream(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A server answering every request with 200 and a body that is not the
/// format's JSON.
async fn garbage_upstream() -> String {
    upstream(axum::Router::new().fallback(|| async { "this is not json" })).await
}

#[tokio::test]
async fn unreadable_answers_are_decode_errors() {
    let url = garbage_upstream().await;
    let results = Adapters::at(&url).all("m", &ChatRequest::user("hi")).await;
    for result in results {
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode, "{e}");
        assert!(!e.retryable());
        assert!(e.message.contains("this is not json"), "{e}");
    }
}

/// An upstream that redirects every request to `target`.
async fn redirecting_upstream(target: String) -> String {
    upstream(axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { axum::response::Redirect::temporary(&target) }
    }))
    .await
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // Following one would send the prompt to a URL the config never named.
    let elsewhere = spawn(MockConfig::default()).await.unwrap();
    let url = redirecting_upstream(format!("{}/v1/chat/completions", elsewhere.url())).await;
    let results = Adapters::at(&url).all("m", &ChatRequest::user("hi")).await;
    for result in results {
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Status(307), "{e}");
    }
    assert_eq!(elsewhere.stats.calls("m"), 0, "the redirect target was called");
}

#[tokio::test]
async fn mock_rejects_malformed_requests_and_reports_stats() {
    let (server, adapters) = mock().await;
    adapters
        .openai
        .complete("counted", &ChatRequest::user("hi"))
        .await
        .unwrap();
    adapters
        .gemini
        .complete("counted", &ChatRequest::user("hi"))
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let url = server.url();
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1beta/models/m:generateContent",
    ] {
        let resp = client
            .post(format!("{url}{path}"))
            .header("anthropic-version", "2023-06-01")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }

    let stats: serde_json::Value = client
        .get(format!("{url}/mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["calls"]["counted"], 2);
    assert_eq!(server.stats.calls("counted"), 2);
    assert_eq!(server.stats.calls("never-called"), 0);
}
