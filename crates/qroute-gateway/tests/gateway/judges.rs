//! The LLM judge and the combine mode against the mock upstream, over real
//! HTTP: a judging model's score, a failing or slow judge falling back to
//! the heuristic, and an aggregator's answer and usage.

use std::sync::Arc;
use std::time::Duration;

use qroute_gateway::exec::ensemble::combine;
use qroute_gateway::exec::judge::{Answer, Judge, LlmJudge};
use qroute_gateway::exec::providers::{http_client, ChatRequest, Completion, ErrorKind, OpenAiCompat, Provider};
use qroute_mock::{spawn, MockConfig, MockServer};

async fn mock() -> (MockServer, Arc<Provider>) {
    let server = spawn(MockConfig::default()).await.expect("mock starts");
    let provider = Provider::OpenAi(OpenAiCompat::new(
        http_client(Duration::from_secs(2)).unwrap(),
        format!("{}/v1", server.url()),
        None,
    ));
    (server, Arc::new(provider))
}

fn llm_judge(provider: &Arc<Provider>, upstream: &str, timeout: Duration) -> Judge {
    Judge::Llm(LlmJudge {
        provider: provider.clone(),
        upstream: upstream.into(),
        input_per_mtok: 1.0,
        output_per_mtok: 4.0,
        timeout,
    })
}

fn done(text: &str) -> Completion {
    Completion {
        text: text.into(),
        input_tokens: 10,
        output_tokens: 5,
        finish_reason: "stop".into(),
        ..Completion::default()
    }
}

/// Three answers of different heuristic quality to a JSON request.
fn json_case() -> (ChatRequest, Vec<Completion>) {
    let request = ChatRequest::user("Give the capital of France as JSON with the key capital.");
    let answers = vec![
        done(r#"{"capital": "Paris"}"#),
        done("The capital is Paris."),
        done("I'm sorry, but I can't help with that."),
    ];
    (request, answers)
}

fn answers<'a>(models: &[&'a str], cs: &'a [Completion]) -> Vec<Answer<'a>> {
    models
        .iter()
        .zip(cs)
        .map(|(&model, completion)| Answer { model, completion })
        .collect()
}

#[tokio::test]
async fn llm_judge_scores_every_answer_from_the_judges_reply() {
    let (server, provider) = mock().await;
    let judge = llm_judge(&provider, "judge-score8", Duration::from_secs(2));
    assert_eq!(judge.name(), "llm");
    let (request, cs) = json_case();
    let js = judge.judge(&request, &answers(&["a", "b", "c"], &cs)).await;
    assert_eq!(js.len(), 3);
    for j in &js {
        assert!((j.score - 7.0 / 9.0).abs() < 1e-6, "{j:?}");
        assert!(j.cost_usd > 0.0, "{j:?}");
        assert!(j.reason.contains("judge-score8 gave 8/10"), "{j:?}");
    }
    // One call per answer: judged concurrently, none skipped.
    assert_eq!(server.stats.calls("judge-score8"), 3);
}

#[tokio::test]
async fn llm_judge_costs_nothing_without_prices_and_skips_empty_answers() {
    let (server, provider) = mock().await;
    let judge = Judge::Llm(LlmJudge {
        provider: provider.clone(),
        upstream: "judge-score3".into(),
        input_per_mtok: 0.0,
        output_per_mtok: 0.0,
        timeout: Duration::from_secs(2),
    });
    let cs = [done("An answer."), done("  ")];
    let js = judge
        .judge(&ChatRequest::user("Question?"), &answers(&["a", "b"], &cs))
        .await;
    assert!((js[0].score - 2.0 / 9.0).abs() < 1e-6, "{:?}", js[0]);
    assert_eq!(js[0].cost_usd, 0.0);
    assert_eq!(js[1].score, 0.0);
    assert!(js[1].reason.contains("empty"), "{:?}", js[1]);
    assert_eq!(server.stats.calls("judge-score3"), 1);
}

#[tokio::test]
async fn failing_llm_judge_falls_back_to_the_heuristic() {
    let (server, provider) = mock().await;
    let judge = llm_judge(&provider, "error-judge", Duration::from_secs(2));
    let (request, cs) = json_case();
    let models = ["a", "b", "c"];
    let js = judge.judge(&request, &answers(&models, &cs)).await;
    let heuristic = Judge::Heuristic.judge(&request, &answers(&models, &cs)).await;
    assert_eq!(js.len(), 3);
    for (j, h) in js.iter().zip(&heuristic) {
        assert_eq!(j.score, h.score, "{j:?}");
        assert_eq!(j.cost_usd, 0.0);
        assert!(j.reason.contains("llm judge error-judge failed"), "{j:?}");
        assert!(j.reason.contains("500"), "{j:?}");
        assert!(j.reason.ends_with(&format!("heuristic: {}", h.reason)), "{j:?}");
    }
    // The heuristic still ranks the answers.
    assert!(js[0].score > js[1].score && js[1].score > js[2].score, "{js:?}");
    assert_eq!(server.stats.calls("error-judge"), 3);
}

#[tokio::test]
async fn slow_llm_judge_times_out_into_the_heuristic() {
    let (_server, provider) = mock().await;
    let judge = llm_judge(&provider, "judge-score9-delay2000", Duration::from_millis(100));
    let (request, cs) = json_case();
    let started = std::time::Instant::now();
    let js = judge.judge(&request, &answers(&["a", "b", "c"], &cs)).await;
    // Concurrent: three timeouts take one timeout, not three.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let heuristic = Judge::Heuristic.judge(&request, &answers(&["a", "b", "c"], &cs)).await;
    for (j, h) in js.iter().zip(&heuristic) {
        assert_eq!(j.score, h.score);
        assert!(j.reason.contains("no answer within 100 ms"), "{j:?}");
    }
}

#[tokio::test]
async fn combine_returns_the_aggregators_answer_and_usage() {
    let (server, provider) = mock().await;
    let question = "What is the capital of France?";
    let request = ChatRequest::user(question);
    let cs = [done("Paris."), done("It is Paris."), done("")];
    let combined = combine(
        &provider,
        "aggregator",
        &request,
        &answers(&["m1", "m2", "m3"], &cs),
        Duration::from_secs(2),
    )
    .await
    .expect("the mock answers");
    // The mock echoes the aggregator's system prompt and the user's question,
    // which stays the last message.
    assert!(
        combined.text.starts_with("mock answer from aggregator [system: "),
        "{}",
        combined.text
    );
    assert!(combined.text.ends_with(&format!("]: {question}")), "{}", combined.text);
    assert!(combined.input_tokens > 0 && combined.output_tokens > 0, "{combined:?}");
    assert_eq!(combined.finish_reason, "stop");
    assert_eq!(server.stats.calls("aggregator"), 1);
}

#[tokio::test]
async fn combine_reports_upstream_failures_and_timeouts() {
    let (_server, provider) = mock().await;
    let request = ChatRequest::user("Q?");
    let cs = [done("A.")];
    let a = answers(&["m1"], &cs);
    let e = combine(&provider, "error-agg", &request, &a, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Status(500));
    let e = combine(&provider, "agg-delay2000", &request, &a, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
}
