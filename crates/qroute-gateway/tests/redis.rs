//! `[redis]`: what replicas share through Redis (rate limits, live spend,
//! the response cache), keys made or revoked on one replica seen on
//! another, and Redis down (requests pass, limits hold per replica).
//!
//! Needs `redis-server` on the machine: a test starts it on
//! 127.0.0.1:6379 (nothing on disk) when PING finds nothing there. Each test
//! uses its own key prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

#[path = "gateway/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qroute_core::store::{Documents, ExperienceStore};
use qroute_core::unix_ms;
use qroute_gateway::access::keys::NewKey;
use qroute_gateway::access::{Access, AuthConfig, Denied, Principal};
use qroute_gateway::config::Config;
use qroute_gateway::shared::{RedisConfig, SharedRedis};
use qroute_mock::MockConfig;
use serde_json::{json, Value};

const URL: &str = "redis://127.0.0.1:6379";
const MODELS: &[(&str, &str, f64)] = &[("cheap", "openai", 0.5)];

/// Makes sure a Redis answers on 127.0.0.1:6379, starting one if not.
fn redis_up() {
    qroute_core::testing::ensure_redis();
}

/// A prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "qrtest-{test}-{}-{}-{}",
        std::process::id(),
        unix_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A master key in a variable of its own.
fn master_env() -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let var = format!(
        "QROUTE_REDIS_TEST_MASTER_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let key = format!("master-{var}");
    std::env::set_var(&var, &key);
    (var, key)
}

async fn gateway(extra: &str) -> harness::TestGateway {
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = harness::config_text(&mock.url(), &dir.path().join("store"), MODELS, extra);
    let cfg = Config::parse(Path::new("test.toml"), &text).unwrap();
    harness::start_with(cfg, mock, dir).await
}

fn redis_section(url: &str, prefix: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\ntimeout_ms = 200\n")
}

async fn execute(t: &harness::TestGateway, key: &str) -> reqwest::Response {
    t.http
        .post(format!("{}/v1/execute", t.url))
        .bearer_auth(key)
        .json(&json!({"prompt": "What is 2+2?"}))
        .send()
        .await
        .unwrap()
}

async fn new_key(t: &harness::TestGateway, master: &str, body: Value) -> (String, String) {
    let r = t
        .http
        .post(format!("{}/v1/keys", t.url))
        .bearer_auth(master)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    (b["id"].as_str().unwrap().into(), b["key"].as_str().unwrap().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_rpm_through_redis() {
    redis_up();
    let (var, master) = master_env();
    let extra = format!(
        "[auth]\nmaster_key_envs = [\"{var}\"]\n{}",
        redis_section(URL, &prefix("rpm"))
    );
    let (a, b) = (gateway(&extra).await, gateway(&extra).await);
    let (id, secret) = new_key(&a, &master, json!({"name": "shared", "rpm": 20})).await;
    // Each gateway here has a store of its own; replicas share one, which
    // this stands for: B finds the key in its store on first use.
    let record = a.gw.access.get(&id).unwrap();
    b.gw.store.put_doc("keys", &id, &*record).unwrap();

    let (mut passed, mut by_a, mut by_b) = (0, 0, 0);
    for i in 0..40 {
        let t = if i % 2 == 0 { &a } else { &b };
        let r = execute(t, &secret).await;
        match r.status().as_u16() {
            200 => {
                passed += 1;
                if i % 2 == 0 {
                    by_a += 1
                } else {
                    by_b += 1
                }
                assert_eq!(r.headers()["x-ratelimit-limit-requests"], "20");
            }
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["type"], "rate_limited");
            }
            s => panic!("status {s}"),
        }
    }
    println!("accepted {passed} of 40 (A {by_a}, B {by_b})");
    assert!(
        (18..=22).contains(&passed),
        "accepted {passed} of 40 with rpm 20 over two replicas"
    );
    assert!(by_a > 0 && by_b > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_entry_put_by_one_gateway_is_a_hit_on_the_other() {
    redis_up();
    let extra = redis_section(URL, &prefix("cache"));
    let (a, b) = (gateway(&extra).await, gateway(&extra).await);
    let body = json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "Shared cache?"}]});
    let post = |t: &harness::TestGateway| t.http.post(format!("{}/v1/chat/completions", t.url)).json(&body).send();
    let first = post(&a).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-qroute-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let second = post(&b).await.unwrap();
    assert_eq!(second.headers()["x-qroute-cache"], "hit", "B is served what A stored");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(b.mock.stats.calls("cheap"), 0, "B called no upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_requests_pass_and_local_limits_apply() {
    let (var, master) = master_env();
    let extra = format!(
        "[auth]\nmaster_key_envs = [\"{var}\"]\n{}",
        redis_section("redis://127.0.0.1:1", "down")
    );
    let t = gateway(&extra).await;
    let (_, secret) = new_key(&t, &master, json!({"name": "local", "rpm": 3})).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(execute(&t, &secret).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "this replica's buckets apply");

    // The cache answers a miss and drops the write: requests still pass.
    let body = json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "No Redis"}]});
    for _ in 0..2 {
        let r = t
            .http
            .post(format!("{}/v1/chat/completions", t.url))
            .bearer_auth(&master)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-qroute-cache"], "miss");
    }
    let metrics = t
        .http
        .get(format!("{}/metrics", t.url))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qroute_redis_fallbacks_total"),
        "fallbacks are counted"
    );
}

fn auth_cfg(var: &str) -> AuthConfig {
    AuthConfig {
        master_key_envs: vec![var.to_string()],
        keys_refresh_s: 1,
        ..AuthConfig::default()
    }
}

fn key_body(budget: Option<f64>) -> NewKey {
    serde_json::from_value(json!({"name": "replicated", "rpm": 1000, "budget_usd": budget, "budget_period": "day"}))
        .unwrap()
}

fn principal(a: &Access, secret: &str) -> Result<Principal, Denied> {
    a.authenticate(Some(secret), unix_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_or_revoked_on_one_replica_work_on_the_other() {
    let (var, _) = master_env();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ExperienceStore> = Arc::new(qroute_store::SledStore::open(dir.path()).unwrap());
    let a = Access::open(&auth_cfg(&var), store.clone()).unwrap();
    let b = Access::open(&auth_cfg(&var), store.clone()).unwrap();
    assert!(principal(&b, "sk-qr-not-a-key").is_err());
    let (record, secret) = a.create(key_body(None), &["cheap"], unix_ms()).unwrap();
    // B has not seen it: the miss reloads the keys (at most once a second).
    let mut found = principal(&b, &secret);
    let start = Instant::now();
    while found.is_err() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = principal(&b, &secret);
    }
    assert!(matches!(found, Ok(Principal::Key(k)) if k.id == record.id));

    a.revoke(&record.id, unix_ms()).unwrap();
    let start = Instant::now();
    while principal(&b, &secret).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "B never saw the revocation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.get(&record.id).unwrap().revoked_ms.is_some());
}

fn shared(prefix: &str) -> Arc<SharedRedis> {
    Arc::new(
        SharedRedis::open(&RedisConfig {
            url: URL.into(),
            prefix: prefix.into(),
            timeout_ms: 200,
            replica_id: None,
        })
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_spent_on_one_replica_is_refused_on_the_other() {
    redis_up();
    let (var, _) = master_env();
    let p = prefix("budget");
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ExperienceStore> = Arc::new(qroute_store::SledStore::open(dir.path()).unwrap());
    let a = Access::open_shared(&auth_cfg(&var), store.clone(), Some(shared(&p))).unwrap();
    let b = Access::open_shared(&auth_cfg(&var), store.clone(), Some(shared(&p))).unwrap();
    let (record, _) = a.create(key_body(Some(1.0)), &["cheap"], unix_ms()).unwrap();
    let who = Principal::Key(record.clone());
    assert!(a.admit(&who, &[], 1, unix_ms()).await.is_ok());
    a.charge(&who, 0.6, unix_ms());
    b.charge(&who, 0.6, unix_ms());
    // Charges reach Redis in the background: wait for both (no timing asserted).
    let start = Instant::now();
    while a.spent_shared(&record, unix_ms()).await < 1.2 - 1e-9 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the charges never reached redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!((b.spent_shared(&record, unix_ms()).await - 1.2).abs() < 1e-6);
    for side in [&a, &b] {
        assert!(matches!(
            side.admit(&who, &[], 1, unix_ms()).await,
            Err(Denied::Budget { .. })
        ));
    }
    // Durable spend: one document per replica, none overwriting the other.
    drop(a);
    drop(b);
    #[derive(serde::Deserialize)]
    struct Doc {
        key_id: String,
        usd: f64,
    }
    let docs: Vec<Doc> = store.docs("spend").unwrap();
    let mine: Vec<&Doc> = docs.iter().filter(|d| d.key_id == record.id).collect();
    assert_eq!(mine.len(), 2);
    assert!((mine.iter().map(|d| d.usd).sum::<f64>() - 1.2).abs() < 1e-9);
}

/// The added latency of a limit checked in Redis against one checked in
/// this process: `cargo test -p qroute-gateway --release --test redis -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn admit_latency_redis_vs_local() {
    redis_up();
    let (var, _) = master_env();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ExperienceStore> = Arc::new(qroute_store::SledStore::open(dir.path()).unwrap());
    let local = Access::open(&auth_cfg(&var), store.clone()).unwrap();
    let remote = Access::open_shared(&auth_cfg(&var), store.clone(), Some(shared(&prefix("bench")))).unwrap();
    let body: NewKey = serde_json::from_value(json!({"name": "bench", "rpm": 100000000, "tpm": 1000000000})).unwrap();
    let (record, _) = local.create(body, &["cheap"], unix_ms()).unwrap();
    let who = Principal::Key(record);
    for (name, access) in [("local", &local), ("redis", &remote)] {
        let mut times = Vec::with_capacity(5_000);
        for i in 0..5_500 {
            let t = Instant::now();
            assert!(access.admit(&who, &[], 100, unix_ms()).await.is_ok());
            if i >= 500 {
                times.push(t.elapsed());
            }
        }
        times.sort();
        let q = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
        println!("admit {name}: p50 {:.1} µs, p99 {:.1} µs", q(0.5), q(0.99));
    }
}
