//! Keys, scopes, tokens, limits and budgets, with auth on (a master key in
//! the environment) against the real servers.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qroute_gateway::config::Config;
use qroute_mock::MockConfig;
use serde_json::{json, Value};

use crate::harness::{self, TestGateway};

const MODELS: &[(&str, &str, f64)] = &[("cheap", "openai", 0.5), ("dear", "openai", 30.0)];

/// A master key in a variable of its own, so tests do not see each other's.
fn master_env() -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let var = format!(
        "QROUTE_TEST_MASTER_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let key = format!("master-{var}");
    std::env::set_var(&var, &key);
    (var, key)
}

/// A gateway with auth on, its store under `data` (which outlives it).
async fn start_on(data: &Path, var: &str) -> TestGateway {
    start_with_extra(data, var, "").await
}

async fn start_with_extra(data: &Path, var: &str, more: &str) -> TestGateway {
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let extra = format!("[auth]\nmaster_key_envs = [\"{var}\"]\n{more}");
    let text = harness::config_text(&mock.url(), &data.join("store"), MODELS, &extra);
    let cfg = Config::parse(Path::new("test.toml"), &text).unwrap();
    harness::start_with(cfg, mock, tempfile::tempdir().unwrap()).await
}

async fn call(t: &TestGateway, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> reqwest::Response {
    let url = format!("{}{path}", t.url);
    let mut r = match method {
        "GET" => t.http.get(url),
        "POST" => t.http.post(url),
        "DELETE" => t.http.delete(url),
        _ => unreachable!(),
    };
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    r.send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Creates a virtual key with the master key; returns (id, secret).
async fn new_key(t: &TestGateway, master: &str, body: Value) -> (String, String) {
    let (s, b) = json_of(call(t, "POST", "/v1/keys", Some(master), Some(&body)).await).await;
    assert_eq!(s, 201, "{b}");
    (b["id"].as_str().unwrap().into(), b["key"].as_str().unwrap().into())
}

fn execute_body() -> Value {
    json!({"prompt": "What is 2+2?"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_refuses_whom_it_should() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (_, user) = new_key(&t, &master, json!({"name": "app"})).await;
    let (_, admin) = new_key(&t, &master, json!({"name": "ops", "admin": true})).await;
    let exec = execute_body();
    let exp = json!({"id": "e1", "unit": "user", "arms": [{"name": "a", "strategy": {"kind": "learned"}}, {"name": "b", "strategy": {"kind": "cost_optimized"}}]});
    // (method, path, body, status without a key, with a user key, with an admin key)
    type Case<'a> = (&'a str, &'a str, Option<&'a Value>, u16, u16, u16);
    let cases: Vec<Case> = vec![
        ("GET", "/v1/health", None, 200, 200, 200),
        ("GET", "/openapi.json", None, 200, 200, 200),
        ("POST", "/v1/execute", Some(&exec), 401, 200, 200),
        ("GET", "/v1/models", None, 401, 200, 200),
        ("GET", "/v1/capabilities", None, 401, 200, 200),
        ("GET", "/metrics", None, 401, 200, 200),
        ("GET", "/v1/experiments", None, 401, 403, 200),
        ("POST", "/v1/experiments", Some(&exp), 401, 403, 201),
        ("GET", "/v1/shadow", None, 401, 403, 404),
        ("GET", "/v1/keys", None, 401, 403, 200),
        ("GET", "/v1/admin/policies", None, 401, 403, 200),
        ("GET", "/v1/admin/experiences", None, 401, 403, 200),
        ("GET", "/v1/stats", None, 401, 403, 200),
        ("GET", "/v1/auth/me", None, 401, 200, 200),
        ("GET", "/v1/nowhere", None, 401, 404, 404),
    ];
    for (method, path, body, anonymous, with_user, with_admin) in cases {
        for (key, want) in [
            (None, anonymous),
            (Some(user.as_str()), with_user),
            (Some(admin.as_str()), with_admin),
        ] {
            let r = call(&t, method, path, key, body).await;
            let status = r.status().as_u16();
            assert_eq!(status, want, "{method} {path} with {key:?}");
            if status == 401 {
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                let b: Value = r.json().await.unwrap();
                assert_eq!(harness::error_type(&b), "unauthorized");
            }
        }
    }
    // The master key is an admin key; a wrong key is a 401, as is a bare one.
    let (s, _) = json_of(call(&t, "GET", "/v1/keys", Some(&master), None).await).await;
    assert_eq!(s, 200);
    for bad in ["sk-qr-00", "", "Bearer", &format!("{master}x")] {
        let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(bad), Some(&exec)).await).await;
        assert_eq!(s, 401, "{bad:?}");
    }
    // x-api-key works too (Anthropic's clients send it).
    let r = t
        .http
        .post(format!("{}/v1/execute", t.url))
        .header("x-api-key", &user)
        .json(&exec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_stored_hashed_listed_without_secrets_and_revoked_at_once() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (id, secret) = new_key(
        &t,
        &master,
        json!({"name": "ci", "rpm": 100, "budget_usd": 5.0, "budget_period": "day"}),
    )
    .await;
    assert!(secret.starts_with("sk-qr-"));
    let (s, b) = json_of(call(&t, "POST", "/v1/execute", Some(&secret), Some(&execute_body())).await).await;
    assert_eq!(s, 200, "{b}");
    // Neither the store (keys, experiences) nor a listing holds the secret.
    let stored: Vec<u8> = t.gw.store.docs_json("keys").unwrap().concat();
    assert!(!stored.is_empty());
    let hex = &secret["sk-qr-".len()..];
    assert!(!String::from_utf8_lossy(&stored).contains(hex));
    for e in t.gw.store.iter_from(0) {
        assert!(!serde_json::to_string(&e.unwrap()).unwrap().contains(hex));
    }
    let listed = call(&t, "GET", "/v1/keys", Some(&master), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&id) && !listed.contains(hex), "{listed}");
    let (s, one) = json_of(call(&t, "GET", &format!("/v1/keys/{id}"), Some(&master), None).await).await;
    assert_eq!(s, 200);
    assert!(one["spend_usd"].as_f64().unwrap() > 0.0, "{one}");
    assert_eq!(one["rpm"], 100);
    // Revocation takes effect at once.
    let (s, _) = json_of(call(&t, "DELETE", &format!("/v1/keys/{id}"), Some(&master), None).await).await;
    assert_eq!(s, 200);
    let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(&secret), Some(&execute_body())).await).await;
    assert_eq!(s, 401);
    let (s, b) = json_of(call(&t, "GET", "/v1/keys/key_nope", Some(&master), None).await).await;
    assert_eq!((s, harness::error_type(&b)), (404, "not_found"));
    // Bad bodies name the field.
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "x", "models": ["nope"]}), "models"),
        (json!({"name": "x", "rpm": 0}), "rpm"),
        (json!({"name": "x", "budget_period": "week"}), "budget_period"),
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!(["x"]), "sequence"),
    ] {
        let (s, b) = json_of(call(&t, "POST", "/v1/keys", Some(&master), Some(&body)).await).await;
        assert_eq!(s, 400, "{body}");
        assert!(b["error"]["message"].as_str().unwrap().contains(field), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_log_in_work_and_die_with_their_key() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (id, secret) = new_key(&t, &master, json!({"name": "browser"})).await;
    let (s, b) = json_of(call(&t, "POST", "/v1/auth/login", None, Some(&json!({"api_key": secret}))).await).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "bearer");
    assert!(b["expires_in"].as_u64().unwrap() > 0 && b["expires_in"].as_u64().unwrap() <= 900);
    let token = b["access_token"].as_str().unwrap().to_string();
    assert!(!token.contains(&secret[6..]));
    let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(&token), Some(&execute_body())).await).await;
    assert_eq!(s, 200, "the token works where its key does");
    let (s, _) = json_of(call(&t, "GET", "/v1/keys", Some(&token), None).await).await;
    assert_eq!(s, 403, "and no further");
    // The master key logs in too, to an admin token.
    let (_, m) = json_of(call(&t, "POST", "/v1/auth/login", None, Some(&json!({"api_key": master}))).await).await;
    let (s, _) = json_of(call(&t, "GET", "/v1/keys", Some(m["access_token"].as_str().unwrap()), None).await).await;
    assert_eq!(s, 200);
    // Tampered, unknown and token-as-key logins are refused.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(&tampered), Some(&execute_body())).await).await;
    assert_eq!(s, 401);
    for bad in [
        json!({"api_key": "sk-qr-nope"}),
        json!({"api_key": token}),
        json!({"key": secret}),
        json!([secret]),
    ] {
        let (s, _) = json_of(call(&t, "POST", "/v1/auth/login", None, Some(&bad)).await).await;
        assert!(s == 401 || s == 400, "{bad}: {s}");
    }
    // Revoking the key ends its tokens at once.
    call(&t, "DELETE", &format!("/v1/keys/{id}"), Some(&master), None).await;
    let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(&token), Some(&execute_body())).await).await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_models_and_feedback_are_per_key() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (_, limited) = new_key(&t, &master, json!({"name": "slow", "rpm": 2, "models": ["cheap"]})).await;
    for left in ["1", "0"] {
        let r = call(&t, "POST", "/v1/execute", Some(&limited), Some(&execute_body())).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], left);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["model"], "cheap", "a key's model list narrows the choice");
    }
    let r = call(&t, "POST", "/v1/execute", Some(&limited), Some(&execute_body())).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let b: Value = r.json().await.unwrap();
    assert_eq!(harness::error_type(&b), "rate_limited");

    // A model the key may not use is a 403.
    let (_, other) = new_key(&t, &master, json!({"name": "cheap-only", "models": ["cheap"]})).await;
    let pinned = json!({"model": "dear", "messages": [{"role": "user", "content": "hi"}]});
    let (s, b) = json_of(call(&t, "POST", "/v1/chat/completions", Some(&other), Some(&pinned)).await).await;
    assert_eq!((s, harness::error_type(&b)), (403, "forbidden"));
    let narrowed = json!({"prompt": "hi", "preference": {"models": ["dear"]}});
    let (s, _) = json_of(call(&t, "POST", "/v1/execute", Some(&other), Some(&narrowed)).await).await;
    assert_eq!(s, 403);

    // Feedback only from the key that asked; another key sees a 404.
    let (_, asker) = new_key(&t, &master, json!({"name": "asker"})).await;
    let (s, b) = json_of(call(&t, "POST", "/v1/execute", Some(&asker), Some(&execute_body())).await).await;
    assert_eq!(s, 200);
    let id = b["request_id"].as_str().unwrap().to_string();
    let fb = json!({"request_id": id, "thumbs": "down"});
    let (s, b) = json_of(call(&t, "POST", "/v1/feedback", Some(&other), Some(&fb)).await).await;
    assert_eq!((s, harness::error_type(&b)), (404, "not_found"), "{b}");
    let unknown = json!({"request_id": "no-such-request", "thumbs": "down"});
    let (_, b2) = json_of(call(&t, "POST", "/v1/feedback", Some(&other), Some(&unknown)).await).await;
    assert_eq!(
        b["error"]["message"].as_str().unwrap().replace(&id, "ID"),
        b2["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-request", "ID"),
        "another key's id reads exactly like an unknown one"
    );
    let (s, b) = json_of(call(&t, "POST", "/v1/feedback", Some(&asker), Some(&fb)).await).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = json_of(call(&t, "POST", "/v1/feedback", Some(&master), Some(&fb)).await).await;
    assert_eq!(s, 200, "an admin may correct any feedback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_is_refused_across_a_restart() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (_, key) = new_key(
        &t,
        &master,
        json!({"name": "tight", "budget_usd": 1e-9, "budget_period": "month"}),
    )
    .await;
    let (s, b) = json_of(call(&t, "POST", "/v1/execute", Some(&key), Some(&execute_body())).await).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["cost_usd"].as_f64().unwrap() > 1e-9);
    let r = call(&t, "POST", "/v1/execute", Some(&key), Some(&execute_body())).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "budget_exceeded");
    assert!(b["error"]["resets_at_ms"].as_u64().unwrap() > qroute_core::unix_ms());

    // Restart on the same store: the spend (and the key) are still there.
    let gw = t.gw.clone();
    drop(t);
    for _ in 0..500 {
        if Arc::strong_count(&gw) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(gw);
    let t = start_on(data.path(), &var).await;
    let r = call(&t, "POST", "/v1/execute", Some(&key), Some(&execute_body())).await;
    assert_eq!(r.status(), 429, "the spend survived the restart");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "budget_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_made_public_and_nothing_else_is() {
    let (var, _) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_with_extra(data.path(), &var, "[server]\nmetrics_public = true\n").await;
    assert_eq!(call(&t, "GET", "/metrics", None, None).await.status(), 200);
    assert_eq!(call(&t, "GET", "/v1/models", None, None).await.status(), 401);
}

/// The console's two reads: `/v1/auth/me` tells a user key from an admin
/// one, and `/v1/stats` counts the traffic just sent, its spend and its
/// models, and refuses a bad window naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_and_stats_describe_the_caller_and_the_traffic() {
    let (var, master) = master_env();
    let data = tempfile::tempdir().unwrap();
    let t = start_on(data.path(), &var).await;
    let (id, user) = new_key(&t, &master, json!({"name": "app"})).await;
    let (s, me) = json_of(call(&t, "GET", "/v1/auth/me", Some(&user), None).await).await;
    assert_eq!(s, 200);
    assert_eq!(me, json!({"admin": false, "key_id": id, "name": "app"}));
    let (_, me) = json_of(call(&t, "GET", "/v1/auth/me", Some(&master), None).await).await;
    assert_eq!(me["admin"], true);

    for i in 0..6 {
        let body = json!({"prompt": format!("What is {i}+{i}?")});
        let (s, b) = json_of(call(&t, "POST", "/v1/execute", Some(&user), Some(&body)).await).await;
        assert_eq!(s, 200, "{b}");
    }
    // Records are durable before the answer: the stats see all six.
    let (s, st) = json_of(call(&t, "GET", "/v1/stats?window_s=600&bucket_s=60", Some(&master), None).await).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["totals"]["requests"], 6, "{st}");
    assert!(st["totals"]["spend_usd"].as_f64().unwrap() > 0.0);
    let series: u64 = st["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series, 6);
    let shares: f64 = st["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{st}");
    assert!(st["savings"]["method"].as_str().unwrap().len() > 10);
    assert!(st["policy"]["serving_version"].as_u64().unwrap() >= 1);

    let (s, b) = json_of(call(&t, "GET", "/v1/stats?window_s=10", Some(&master), None).await).await;
    assert_eq!(s, 400);
    assert!(b.to_string().contains("window_s"), "{b}");
    let (s, b) = json_of(call(&t, "GET", "/v1/stats?window_s=3600&bucket_s=0", Some(&master), None).await).await;
    assert_eq!(s, 400);
    assert!(b.to_string().contains("bucket_s"), "{b}");
    // Too fine a series is coarsened to 2,000 points at most.
    let (s, b) = json_of(call(&t, "GET", "/v1/stats?window_s=86400&bucket_s=1", Some(&master), None).await).await;
    assert_eq!(s, 200);
    assert_eq!(b["bucket_s"], 44, "{}", b["bucket_s"]);
    assert!(b["series"].as_array().unwrap().len() <= 2_001);
}
