//! Durable learning in one process: what the online trainer learned is
//! resumed by the next gateway on the same data directory; a gateway in
//! external mode serves versions another process registers; rollback and
//! the admin endpoints that other processes read through.

use std::sync::Arc;
use std::time::Duration;

use qroute_core::dataset::Dataset;
use qroute_core::features::{Featurizer, RequestContext};
use qroute_core::policy::{DqnPolicy, OperatingPoint};
use qroute_gateway::config::Config;
use qroute_learn::registry::Registry;
use qroute_learn::LearningMode;
use qroute_mock::MockConfig;
use serde_json::{json, Value};

use crate::harness::{self, TestGateway};

fn prompts(n: usize) -> Vec<String> {
    let ds = Dataset::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/routellm_mmlu_gsm8k.jsonl"
    ))
    .unwrap();
    ds.split("train")
        .into_iter()
        .take(n)
        .map(|r| r.prompt.clone())
        .collect()
}

/// The embedded default on `data`, learning fast and checkpointing often.
fn config(data: &std::path::Path, mode: LearningMode) -> Config {
    let mut cfg = Config::embedded_default().unwrap();
    cfg.store.path = data.join("store");
    cfg.learning.mode = Some(mode);
    cfg.learning.steps_per_experience = 1.0;
    cfg.learning.max_steps_per_sec = 1000.0;
    cfg.learning.publish_every = 5;
    cfg.learning.publish_every_s = 0.02;
    cfg.learning.checkpoint_every_s = 0.2;
    cfg
}

async fn start(data: &std::path::Path, mode: LearningMode) -> TestGateway {
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    harness::start_with(config(data, mode), mock, tempfile::tempdir().unwrap()).await
}

/// Sends prompts until the serving version is above `above`; returns it.
async fn learn_past(t: &TestGateway, prompts: &[String], above: u64) -> u64 {
    for round in 0..20 {
        for p in prompts {
            let (s, b) = t.post("/v1/execute", &json!({"prompt": p})).await;
            assert_eq!(s, 200, "{b}");
        }
        let v = t.gw.policy().version;
        if v > above {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
    }
    panic!("the serving version never rose above {above}");
}

/// Stops a test gateway and waits until nothing holds it, so its store's
/// lock is released.
async fn close(t: TestGateway) {
    t.gw.stop_learning();
    let gw = t.gw.clone();
    drop(t);
    for _ in 0..500 {
        if Arc::strong_count(&gw) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway is still referenced after its server stopped");
}

/// The greedy choice (argmax score at cost weight 0.5) for each prompt.
fn greedy(policy: &DqnPolicy, prompts: &[String]) -> Vec<usize> {
    let fz = Featurizer::new(policy.spec.clone()).unwrap();
    let cards: Vec<_> = policy.catalog.models.iter().collect();
    prompts
        .iter()
        .map(|p| {
            let x = fz.featurize(&RequestContext {
                prompt: p,
                ..Default::default()
            });
            let scores = policy.scores(&x, &cards, OperatingPoint::cost(0.5)).unwrap();
            (0..scores.len())
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_what_was_learned() {
    let data = tempfile::tempdir().unwrap();
    let traffic = prompts(150);
    let probes = prompts(400).split_off(300);

    let t = start(data.path(), LearningMode::Online).await;
    assert_eq!(t.gw.policy().version, 1, "the shipped policy is version 1");
    learn_past(&t, &traffic, 1).await;
    // What SIGTERM does: the trainer publishes and checkpoints its last steps.
    t.gw.stop_learning();
    let before = t.gw.policy();
    let registry = t.gw.registry().unwrap().clone();
    assert_eq!(
        registry.latest().unwrap(),
        Some(before.version),
        "the serving version is registered"
    );
    let choices = greedy(&before, &probes);
    close(t).await;

    let t = start(data.path(), LearningMode::Online).await;
    let after = t.gw.policy();
    assert_eq!(after.version, before.version, "the version continues");
    assert_eq!(after.net, before.net, "the same weights serve");
    assert_eq!(greedy(&after, &probes), choices, "greedy choices are unchanged");
    // And learning goes on from there, with numbers never used before.
    let next = learn_past(&t, &traffic, before.version).await;
    assert!(next > before.version);
    close(t).await;

    let lineage = registry
        .entry(registry.latest().unwrap().unwrap())
        .unwrap()
        .lineage
        .unwrap();
    assert_eq!(lineage.source, "online");
    assert!(lineage.steps > 0 && lineage.experiences > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_serves_each_version_another_process_registers() {
    let data = tempfile::tempdir().unwrap();
    let t = start(data.path(), LearningMode::External).await;
    assert_eq!(t.gw.trainer_steps(), 0, "external mode does not train");
    let registry = Registry::open(data.path().join("policies")).unwrap();
    // Another process (here: the test) registers a trained version.
    let mut trained = t.gw.policy().as_ref().clone();
    trained.net.b3[0] += 0.25;
    trained.version = registry.allocate(0).unwrap();
    let lineage = registry.entry(1).unwrap().lineage.unwrap();
    registry.save(&trained, &lineage).unwrap();
    let mut served = 0;
    for _ in 0..300 {
        served = t.get("/v1/health").await.json::<Value>().await.unwrap()["policy_version"]
            .as_u64()
            .unwrap();
        if served == trained.version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, trained.version, "the new version reached serving");
    assert_eq!(t.gw.policy().net, trained.net);

    // Rollback over HTTP: a copy of v1 becomes the newest version and serves.
    let (s, b) = t.post("/v1/admin/policies/1/rollback", &json!({})).await;
    assert_eq!(s, 201, "{b}");
    let v = b["version"].as_u64().unwrap();
    assert!(v > trained.version);
    let mut served = 0;
    for _ in 0..300 {
        served = t.gw.policy().version;
        if served == v {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, v);
    assert_eq!(t.gw.policy().net, registry.load(1).unwrap().net);
    let (s, b) = t.post("/v1/admin/policies/999/rollback", &json!({})).await;
    assert_eq!((s, harness::error_type(&b)), (404, "not_found"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_stream_the_log_and_list_the_registry() {
    let data = tempfile::tempdir().unwrap();
    let t = start(data.path(), LearningMode::Off).await;
    let traffic = prompts(30);
    for p in &traffic {
        let (s, _) = t.post("/v1/execute", &json!({"prompt": p})).await;
        assert_eq!(s, 200);
    }
    let (_, last) = t.post("/v1/execute", &json!({"prompt": traffic[0]})).await;
    t.experience(last["request_id"].as_str().unwrap(), 1).await;
    let r = t.get("/v1/admin/experiences").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 31);
    assert!(lines[0]["decision"]["request_id"].as_str().is_some());
    let r = t.get("/v1/admin/experiences?from=29").await.text().await.unwrap();
    assert_eq!(r.lines().count(), 2, "from skips the older ones");

    let b: Value = t
        .get("/v1/admin/experiences/sample?n=8&half_life=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["experiences"].as_array().unwrap().len(), 8);
    assert_eq!(b["len"], 31);
    for bad in ["n=0", "n=100000", "n=x", "n=4&bogus=1"] {
        let r = t.get(&format!("/v1/admin/experiences/sample?{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
        let b: Value = r.json().await.unwrap();
        harness::error_type(&b);
    }

    let b: Value = t.get("/v1/admin/policies").await.json().await.unwrap();
    assert_eq!(b["serving"], 1);
    assert_eq!(b["versions"][0]["version"], 1);
    assert_eq!(b["versions"][0]["lineage"]["source"], "base");
    let meta: Value = t.get("/v1/admin/policies/1").await.json().await.unwrap();
    assert_eq!(meta["version"], 1);
    let r = t.get("/v1/admin/policies/1/files/model.safetensors").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 1000);
    for (path, status) in [
        ("/v1/admin/policies/7", 404),
        ("/v1/admin/policies/1/files/..%2F..%2Fstore%2Fconf", 404),
        ("/v1/admin/policies/1/files/secrets", 404),
        ("/v1/admin/policies/x", 400),
        ("/v1/admin/experiences?from=-1", 400),
    ] {
        let r = t.get(path).await;
        assert_eq!(r.status(), status, "{path}");
        let b: Value = r.json().await.unwrap();
        harness::error_type(&b);
    }
    // Learning is off: a rollback serves at once.
    let (s, b) = t.post("/v1/admin/policies/1/rollback", &json!({})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(t.gw.policy().version, b["version"].as_u64().unwrap());
}
