//! A/B experiments on a live gateway (the embedded default: simulated
//! providers answering from the bundled RouteLLM dataset with its recorded
//! quality and cost): sticky assignment by unit, tagged decision records,
//! per-arm results from the store, stop without losing records, shadow mode,
//! and experiments surviving a restart.

use std::collections::HashMap;
use std::sync::Arc;

use qroute_core::dataset::Dataset;
use qroute_core::policy::{checkpoint, Strategy};
use qroute_experiment::{ArmSpec, ExperimentSpec, Experiments, LiveArm, Status, UnitKey};
use qroute_gateway::config::Config;
use qroute_mock::MockConfig;
use qroute_store::SledStore;
use serde_json::{json, Value};

const DEAR: &str = "gpt-4-1106-preview";
const CHEAP: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";

async fn gateway(dir: tempfile::TempDir, edit: impl FnOnce(&mut Config)) -> crate::harness::TestGateway {
    let mut cfg = Config::embedded_default().unwrap();
    cfg.store.path = dir.path().join("store");
    cfg.learning.enabled = false;
    edit(&mut cfg);
    let mock = qroute_mock::spawn(MockConfig::default()).await.unwrap();
    crate::harness::start_with(cfg, mock, dir).await
}

fn prompts(n: usize) -> Vec<String> {
    let ds = Dataset::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/routellm_mmlu_gsm8k.jsonl"
    ))
    .unwrap();
    ds.rows.iter().take(n).map(|r| r.prompt.clone()).collect()
}

fn two_arms(id: &str) -> Value {
    json!({
        "id": id,
        "unit": "user",
        "holdout": 0.2,
        "arms": [
            {"name": "cheap", "strategy": {"kind": "fixed", "model": CHEAP}},
            {"name": "dear", "strategy": {"kind": "fixed", "model": DEAR}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_assigns_units_sticky_and_reports_per_arm_results() {
    let t = gateway(tempfile::tempdir().unwrap(), |_| {}).await;

    // Bad specs are 400s that name the problem; conflicts are 409s.
    let (s, b) = t
        .post(
            "/v1/experiments",
            &json!({"id": "x", "unit": "user", "arms": [
            {"name": "a", "strategy": {"kind": "fixed", "model": "nope"}}]}),
        )
        .await;
    assert_eq!((s, crate::harness::error_type(&b)), (400, "invalid_request"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("nope"), "{b}");
    let (s, b) = t
        .post("/v1/experiments", &json!({"id": "x", "unit": "cookie", "arms": []}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = t.post("/v1/experiments", &two_arms("ab-1")).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "running");
    let (s, b) = t.post("/v1/experiments", &two_arms("ab-1")).await;
    assert_eq!((s, crate::harness::error_type(&b)), (409, "conflict"), "{b}");
    let (s, b) = t.post("/v1/experiments", &two_arms("ab-2")).await;
    assert_eq!(s, 409, "overlapping experiment: {b}");

    // 60 users, 4 requests each, plus requests with no user.
    let prompts = prompts(240);
    let mut arm_of_user: HashMap<String, String> = HashMap::new();
    let mut tagged = 0;
    for (i, p) in prompts.iter().enumerate() {
        let user = format!("user-{}", i % 60);
        let (s, b) = t.post("/v1/execute", &json!({"prompt": p, "user_id": user})).await;
        assert_eq!(s, 200, "{b}");
        let e = t.experience(b["request_id"].as_str().unwrap(), 1).await;
        let tag = e.decision.experiment.clone().expect("an enrolled request is tagged");
        tagged += 1;
        assert_eq!(tag.experiment, "ab-1");
        // Sticky: every request of a user lands in the same arm.
        let first = arm_of_user.entry(user).or_insert_with(|| tag.arm.clone());
        assert_eq!(*first, tag.arm);
        match tag.arm.as_str() {
            "cheap" | "dear" => {
                let model = if tag.arm == "cheap" { CHEAP } else { DEAR };
                assert_eq!(b["model"], model, "{b}");
                assert!((tag.assignment_propensity - 0.4).abs() < 1e-6);
                assert_eq!(tag.strategy, "fixed");
                // The arm's own distribution is what is logged.
                let k = e.decision.candidates.iter().position(|c| c == model).unwrap();
                assert_eq!(e.decision.propensities[k], 1.0);
            }
            "holdout" => {
                assert!((tag.assignment_propensity - 0.2).abs() < 1e-6);
                assert_eq!(tag.strategy, "learned");
            }
            other => panic!("unknown arm {other}"),
        }
    }
    let (_, b) = t.post("/v1/execute", &json!({"prompt": prompts[0]})).await;
    let e = t.experience(b["request_id"].as_str().unwrap(), 1).await;
    assert!(e.decision.experiment.is_none(), "no unit key, not enrolled");
    let arms: std::collections::HashSet<&String> = arm_of_user.values().collect();
    assert!(
        arms.len() == 3,
        "60 users should reach both arms and the holdout: {arms:?}"
    );

    // Per-arm results from the store.
    let r: Value = t.get("/v1/experiments/ab-1").await.json().await.unwrap();
    let res = &r["results"];
    assert_eq!(res["requests"], tagged, "{res}");
    let arm = |name: &str| {
        res["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no arm {name}: {res}"))
    };
    let (cheap, dear) = (arm("cheap"), arm("dear"));
    assert_eq!(cheap["control"], true);
    assert!(cheap["requests"].as_u64().unwrap() > 0 && dear["requests"].as_u64().unwrap() > 0);
    let total: u64 = res["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, tagged as u64);
    assert_eq!(cheap["errors"], 0);
    for a in [&cheap, &dear] {
        let q = &a["quality"];
        assert!(q["ci"][0].as_f64().unwrap() <= q["mean"].as_f64().unwrap());
        assert!(q["always_valid_ci"][0].as_f64().unwrap() <= q["ci"][0].as_f64().unwrap());
        assert!(a["latency_p99_ms"].as_f64().unwrap() >= a["latency_p50_ms"].as_f64().unwrap());
    }
    // GPT-4 costs far more per request than Mixtral: a clear, significant difference.
    let dc = &dear["vs_control"]["cost_usd"];
    assert!(dc["difference"].as_f64().unwrap() > 0.0, "{dc}");
    assert!(dc["ci"][0].as_f64().unwrap() > 0.0, "{dc}");
    assert!(dc["p_value"].as_f64().unwrap() < 0.01, "{dc}");
    assert!(res["warnings"].as_array().unwrap()[0]
        .as_str()
        .unwrap()
        .contains("always_valid_ci"));

    // Stop: enrolment ends, nothing is lost, later requests are untagged.
    let (s, b) = t.post("/v1/experiments/ab-1/stop", &json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("stopped")), "{b}");
    let (_, b) = t
        .post("/v1/execute", &json!({"prompt": prompts[1], "user_id": "user-1"}))
        .await;
    let e = t.experience(b["request_id"].as_str().unwrap(), 1).await;
    assert!(e.decision.experiment.is_none());
    let r: Value = t.get("/v1/experiments/ab-1").await.json().await.unwrap();
    assert_eq!(r["results"]["requests"], tagged);
    assert_eq!(r["results"]["status"], "stopped");
    let list: Value = t.get("/v1/experiments").await.json().await.unwrap();
    assert_eq!(list["experiments"][0]["experiment"]["spec"]["id"], "ab-1");
    let r = t.get("/v1/experiments/none").await;
    assert_eq!(r.status(), 404);
    let (s, _) = t.post("/v1/experiments/none/stop", &json!({})).await;
    assert_eq!(s, 404);
    // Now that ab-1 is stopped, another can start.
    let (s, b) = t.post("/v1/experiments", &two_arms("ab-2")).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_mid_traffic_loses_no_records() {
    let t = Arc::new(gateway(tempfile::tempdir().unwrap(), |_| {}).await);
    let (s, b) = t
        .post(
            "/v1/experiments",
            &json!({"id": "live", "unit": "header:x-tenant", "arms": [
                {"name": "learned", "strategy": {"kind": "learned"}},
                {"name": "quality", "strategy": {"kind": "quality_first"}}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let prompts = Arc::new(prompts(400));
    let stop_after = 150;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (t, prompts, done) = (t.clone(), prompts.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..prompts.len()).step_by(8) {
                let r = t
                    .http
                    .post(format!("{}/v1/execute", t.url))
                    .header("x-tenant", format!("tenant-{}", i % 37))
                    .json(&json!({"prompt": prompts[i]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let b: Value = r.json().await.unwrap();
                ids.push(b["request_id"].as_str().unwrap().to_string());
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == stop_after {
                    let (s, _) = t.post("/v1/experiments/live/stop", &json!({})).await;
                    assert_eq!(s, 200);
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), 400);
    // Every answered request has its decision on disk; the tagged ones are
    // exactly what the results count.
    let mut tagged = 0;
    for id in &ids {
        let e = t.experience(id, 1).await;
        tagged += e.decision.experiment.is_some() as usize;
    }
    assert!(tagged >= stop_after - 8 && tagged < 400, "tagged {tagged}");
    let r: Value = t.get("/v1/experiments/live").await.json().await.unwrap();
    assert_eq!(r["results"]["requests"], tagged, "{}", r["results"]);
    let pending: u64 = r["results"]["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_and_checkpoint_arms_score_with_their_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut frozen = qroute_gateway::embedded::policy().unwrap();
    frozen.version = 4242;
    let ckpt = dir.path().join("candidate");
    checkpoint::save(&frozen, &ckpt, json!({})).unwrap();
    let shadow_dir = ckpt.clone();
    let checkpoints_dir = dir.path().to_path_buf();
    let t = gateway(dir, move |c| {
        c.policy.shadow = Some(qroute_gateway::config::ShadowConfig {
            name: "candidate".into(),
            path: shadow_dir,
        });
        c.policy.checkpoints_dir = Some(checkpoints_dir);
        c.limits.max_experiments = 2;
    })
    .await;
    // An arm names a policy, never a path; a name that does not load says
    // only that, whether or not something exists under it.
    let arm = |checkpoint: &str| {
        json!({"id": "probe", "unit": "user", "arms": [
            {"name": "live", "strategy": {"kind": "learned"}},
            {"name": "frozen", "strategy": {"kind": "learned"}, "checkpoint": checkpoint}]})
    };
    let mut messages = Vec::new();
    for bad in ["/etc", "../candidate", "store", "nope", "v999", ".hidden", "a/b"] {
        let (s, b) = t.post("/v1/experiments", &arm(bad)).await;
        assert_eq!(s, 400, "{bad}: {b}");
        let m = b["error"]["message"].as_str().unwrap().replace(bad, "NAME");
        assert!(
            !m.contains("such file") && !m.contains("directory") && !m.contains('/'),
            "{m}"
        );
        messages.push(m.replace("arms[\"frozen\"].", ""));
    }
    // "store" exists (a directory) and "nope" does not: the same answer.
    assert_eq!(messages[2], messages[3]);
    assert_eq!(messages[3], messages[4], "an unregistered version reads the same");
    // The registry's v1 (the shipped policy) is a valid name.
    let (s, b) = t.post("/v1/experiments", &arm("v1")).await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = t.post("/v1/experiments/probe/stop", &json!({})).await;
    assert_eq!(s, 200);
    let (s, b) = t
        .post(
            "/v1/experiments",
            &json!({"id": "frozen", "unit": "api_key", "arms": [
                {"name": "live", "strategy": {"kind": "learned"}},
                {"name": "v4242", "strategy": {"kind": "learned"}, "checkpoint": "candidate"}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Two experiments stored: the cap (limits.max_experiments = 2) is reached.
    let (s, b) = t
        .post(
            "/v1/experiments",
            &json!({"id": "third", "unit": "user", "arms": [
        {"name": "a", "strategy": {"kind": "learned"}}]}),
        )
        .await;
    assert_eq!((s, crate::harness::error_type(&b)), (409, "conflict"), "{b}");
    let prompts = prompts(60);
    for (i, p) in prompts.iter().enumerate() {
        let r = t
            .http
            .post(format!("{}/v1/chat/completions", t.url))
            .bearer_auth(format!("sk-test-{}", i % 12))
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": p}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        let e = t
            .experience(b["id"].as_str().unwrap().trim_start_matches("chatcmpl-"), 1)
            .await;
        let tag = e.decision.experiment.expect("api_key unit");
        // The raw key is never stored, only its hash.
        assert_ne!(tag.unit, 0);
        if tag.arm == "v4242" {
            assert_eq!(e.decision.policy_version, 4242);
        } else {
            assert_ne!(e.decision.policy_version, 4242);
        }
        let pick = e.decision.shadow.expect("shadow pick logged");
        assert_eq!((pick.name.as_str(), pick.version), ("candidate", 4242));
        assert!(e.decision.candidates.contains(&pick.model));
    }
    let s: Value = t.get("/v1/shadow").await.json().await.unwrap();
    assert_eq!(s["decisions"], 60, "{s}");
    let rate = s["agreement_rate"].as_f64().unwrap();
    // Same weights as the live policy: it agrees except where the live one explored.
    assert!(rate > 0.5, "{s}");
}

#[test]
fn experiments_survive_restarts_config_does_not_undo_a_stop_and_broken_ones_stop() {
    let dir = tempfile::tempdir().unwrap();
    let resolve = || {
        Box::new(|a: &ArmSpec| {
            Ok(LiveArm {
                strategy: a.strategy.clone(),
                policy: None,
            })
        })
    };
    let spec = ExperimentSpec {
        id: "cfg".into(),
        description: String::new(),
        unit: UnitKey::User,
        arms: vec![ArmSpec {
            name: "a".into(),
            weight: 1.0,
            strategy: Strategy::Balanced {},
            checkpoint: None,
        }],
        control: None,
        holdout: 0.0,
        start_ms: None,
        end_ms: None,
        horizon: 1000,
    };
    {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let reg = Experiments::open(store, std::slice::from_ref(&spec), resolve(), 1_000).unwrap();
        assert_eq!(reg.running(1_001).unwrap().experiment.spec.id, "cfg");
        reg.stop("cfg", 2_000).unwrap();
        assert!(reg.running(2_001).is_none());
    }
    {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let reg = Experiments::open(store, std::slice::from_ref(&spec), resolve(), 3_000).unwrap();
        let e = reg.get("cfg").unwrap();
        assert_eq!(e.experiment.stopped_ms, Some(2_000));
        assert_eq!(e.experiment.status(3_000), Status::Stopped);
        assert!(reg.running(3_000).is_none());
        let mut other = spec.clone();
        other.id = "running".into();
        reg.create(other, 4_000).unwrap();
    }
    // The gateway changed under a running experiment (its arms no longer
    // resolve): the gateway still starts, and the experiment is stopped.
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let failing = Box::new(|_: &ArmSpec| Err(qroute_core::Error::InvalidInput("no model is named \"gone\"".into())));
    let reg = Experiments::open(store, &[spec], failing, 5_000).unwrap();
    let e = reg.get("running").unwrap();
    assert_eq!(e.experiment.stopped_ms, Some(5_000));
    assert_eq!(reg.get("cfg").unwrap().experiment.stopped_ms, Some(2_000));
    assert!(reg.running(5_001).is_none());
}
