//! `qroute experiment report` and `qroute experiment list` on a store with an
//! experiment's tagged decisions: the binary writes a Markdown report that
//! names every arm and the holdout, and a PNG.

use std::path::Path;
use std::process::{Command, Output};

use qroute_core::features::Features;
use qroute_core::record::{DecisionRecord, ExperimentTag, Outcome};
use qroute_core::store::Documents;
use qroute_core::store::ExperienceStore;
use qroute_experiment::results::{self, Options};
use qroute_experiment::{Experiment, ExperimentSpec};
use qroute_store::SledStore;

const ID: &str = "exp-cli";
const MODELS: [&str; 2] = ["big", "small"];

fn experiment() -> Experiment {
    let spec: ExperimentSpec = serde_json::from_str(&format!(
        r#"{{"id":"{ID}","description":"learned vs cost-optimized","unit":"user","holdout":0.1,"arms":[
            {{"name":"learned","strategy":{{"kind":"learned"}}}},
            {{"name":"cheap","strategy":{{"kind":"cost_optimized"}}}}]}}"#
    ))
    .unwrap();
    spec.validate().unwrap();
    Experiment {
        spec,
        created_ms: 1_700_000_000_000,
        stopped_ms: None,
        first_seq: 0,
    }
}

/// Writes the experiment and 200 tagged decisions (50 units; every tenth
/// unit held out, the others split between the arms), all but the last two
/// with an outcome, a few of them errors. Returns what a gateway on this
/// store answers to `GET /v1/experiments/{ID}`.
fn fill(dir: &Path) -> serde_json::Value {
    let store = SledStore::open(dir).unwrap();
    store.put_doc("experiments", ID, &experiment()).unwrap();
    let mut decisions = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..200u64 {
        let unit = i % 50;
        let (arm, strategy, share) = if unit % 10 == 0 {
            ("holdout", "learned", 0.1)
        } else if unit % 2 == 0 {
            ("cheap", "cost_optimized", 0.45)
        } else {
            ("learned", "learned", 0.45)
        };
        let model = if arm == "cheap" { MODELS[1] } else { MODELS[0] };
        let request_id = format!("req-{i}");
        decisions.push(DecisionRecord {
            request_id: request_id.clone(),
            time_ms: 1_700_000_000_000 + i * 1000,
            features: Features {
                dim: 16,
                indices: vec![],
                values: vec![],
            },
            candidates: MODELS.iter().map(|m| m.to_string()).collect(),
            propensities: if model == MODELS[0] {
                vec![1.0, 0.0]
            } else {
                vec![0.0, 1.0]
            },
            chosen: vec![model.into()],
            policy_version: 1,
            cost_weight: 0.5,
            latency_weight: 0.0,
            task: None,
            experiment: Some(ExperimentTag {
                experiment: ID.into(),
                arm: arm.into(),
                strategy: strategy.into(),
                assignment_propensity: share,
                unit: 1000 + unit,
            }),
            shadow: None,
        });
        if i >= 198 {
            continue; // pending
        }
        let big = model == MODELS[0];
        outcomes.push(Outcome {
            request_id,
            model: model.into(),
            quality: Some((if big { 0.8 } else { 0.6 }) + (i % 5) as f32 * 0.02),
            cost_usd: (if big { 2e-3 } else { 1e-4 }) * (1.0 + (i % 3) as f64 * 0.1),
            latency_ms: (if big { 900.0 } else { 300.0 }) + (i % 7) as f64 * 20.0,
            error: (i % 37 == 5).then(|| "upstream 500".to_string()),
            time_ms: 1_700_000_000_500 + i * 1000,
            ttft_ms: None,
        });
    }
    store.append_decisions(&decisions).unwrap();
    store.record_outcomes(&outcomes).unwrap();
    store.flush().unwrap();
    let opts = Options {
        level: 0.95,
        scales: qroute_gateway::embedded::policy().unwrap().scales,
        default_quality: None,
    };
    let e = experiment();
    let results = results::compute(&store, &e, &opts, 1_800_000_000_000).unwrap();
    serde_json::json!({"experiment": e, "status": e.status(1_800_000_000_000), "results": results})
    // The store is dropped here: sled holds a lock on the directory.
}

fn qroute(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qroute"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn report_and_list_from_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fill(&store);
    let store = store.to_str().unwrap();
    let out_dir = tmp.path().join("reports");

    let out = qroute(&[
        "experiment",
        "report",
        "--store",
        store,
        "--id",
        ID,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let md_path = out_dir.join(format!("{ID}.md"));
    let png_path = out_dir.join(format!("{ID}.png"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(md_path.to_str().unwrap()), "{stdout}");
    assert!(stdout.contains(png_path.to_str().unwrap()), "{stdout}");

    let md = std::fs::read_to_string(&md_path).unwrap();
    for arm in ["learned", "cheap", "holdout"] {
        assert!(md.contains(&format!("| {arm}")), "arm {arm} missing:\n{md}");
    }
    assert!(md.contains("learned **(control)**"), "{md}");
    assert!(md.contains("200"), "{md}");
    assert!(md.contains("(1 pending)"), "{md}");
    assert!(md.contains("| cheap | cost (USD) |"), "{md}");
    assert!(md.contains("## Warnings"), "{md}");
    assert!(md.contains(&format!("![results]({ID}.png)")), "{md}");
    let png = std::fs::read(&png_path).unwrap();
    assert!(png.len() > 1000);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let out = qroute(&["experiment", "list", "--store", store]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(ID))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("running"), "{line}");
    assert!(
        line.contains("learned=learned (control)") && line.contains("cheap=cost_optimized"),
        "{line}"
    );

    // An unknown id names the known ones.
    let out = qroute(&[
        "experiment",
        "report",
        "--store",
        store,
        "--id",
        "nope",
        "--out",
        "unused",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope") && stderr.contains(ID), "{stderr}");

    // Exactly one source.
    let out = qroute(&["experiment", "report", "--id", ID, "--out", "unused"]);
    assert!(!out.status.success());
    let out = qroute(&[
        "experiment",
        "report",
        "--store",
        store,
        "--url",
        "http://127.0.0.1:9",
        "--id",
        ID,
        "--out",
        "unused",
    ]);
    assert!(!out.status.success());
    assert!(!Path::new("unused").exists());
}

/// `--url`: the same report from a gateway's `GET /v1/experiments/{id}`
/// (served here by a stand-in that answers what the gateway would).
#[test]
fn report_from_a_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let body = fill(&tmp.path().join("store"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/experiments/{id}",
        axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<String>| {
            let body = body.clone();
            async move {
                if id == ID {
                    Ok(axum::Json(body))
                } else {
                    Err((axum::http::StatusCode::NOT_FOUND, format!("no experiment {id:?}")))
                }
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/");
    let out_dir = tmp.path().join("reports");

    let out = qroute(&[
        "experiment",
        "report",
        "--url",
        &url,
        "--id",
        ID,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let md = std::fs::read_to_string(out_dir.join(format!("{ID}.md"))).unwrap();
    for arm in ["learned", "cheap", "holdout"] {
        assert!(md.contains(&format!("| {arm}")), "arm {arm} missing:\n{md}");
    }
    assert!(
        md.contains("| status | ended |") || md.contains("| status | running |"),
        "{md}"
    );
    let png = std::fs::read(out_dir.join(format!("{ID}.png"))).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let out = qroute(&[
        "experiment",
        "report",
        "--url",
        &url,
        "--id",
        "nope",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");
}
