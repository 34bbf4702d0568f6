//! `qroute serve` as a process, with what runs beside it: learning that
//! survives SIGTERM and SIGKILL, `train --follow` feeding a gateway in
//! external mode, the commands that read a running gateway (`--url`), and
//! read commands that refuse what is not a store.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_qroute");

pub(super) fn qroute(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

pub(super) fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The embedded default's config with `[learning]` replaced.
pub(super) fn write_config(path: &Path, learning: &str) {
    let default = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml")).unwrap();
    let text = default.replace("[learning]\nenabled = true\n", &format!("[learning]\n{learning}\n"));
    assert_ne!(text, default, "config/default.toml changed its [learning] section");
    std::fs::write(path, text).unwrap();
}

pub(super) const FAST: &str =
    "steps_per_experience = 1.0\nmax_steps_per_sec = 1000.0\npublish_every = 5\npublish_every_s = 0.05";

struct Server {
    child: Child,
    url: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Server {
    fn start(config: &Path, data: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
        };
        for _ in 0..600 {
            if s.rt.block_on(s.http.get(format!("{}/v1/health", s.url)).send()).is_ok() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not come up");
    }

    fn version(&self) -> u64 {
        self.rt.block_on(async {
            let r = self.http.get(format!("{}/v1/health", self.url)).send().await.unwrap();
            r.json::<Value>().await.unwrap()["policy_version"].as_u64().unwrap()
        })
    }

    fn execute(&self, prompt: &str) {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}/v1/execute", self.url))
                .json(&json!({ "prompt": prompt }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        })
    }

    /// Sends dataset prompts until the serving version is above `above`.
    fn learn_past(&self, above: u64) -> u64 {
        let prompts = prompts(120);
        for _ in 0..30 {
            for p in &prompts {
                self.execute(p);
            }
            for _ in 0..20 {
                let v = self.version();
                if v > above {
                    return v;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("the serving version never rose above {above}");
    }

    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn prompts(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/routellm_mmlu_gsm8k.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `(version, source)` of every registered version, from `policy list`.
fn registered(data: &Path) -> Vec<(u64, String)> {
    let out = qroute(&["policy", "list", "--data-dir", data.to_str().unwrap()]);
    assert_ok(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut cols = l.split('\t');
            let v = cols.next().unwrap().trim_start_matches('v').parse().unwrap();
            (v, cols.next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn learning_survives_sigterm_and_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, data) = (tmp.path().join("online.toml"), tmp.path().join("data"));
    write_config(&config, &format!("mode = \"online\"\n{FAST}\ncheckpoint_every_s = 0.2"));

    let mut s = Server::start(&config, &data);
    assert_eq!(s.version(), 1, "the shipped policy is version 1");
    let learned = s.learn_past(1);
    assert!(s.signal("-TERM").success(), "SIGTERM is a clean stop");
    let after_term = registered(&data);
    let last = after_term.last().unwrap().0;
    assert!(
        last >= learned,
        "the last version is checkpointed at shutdown: {after_term:?}"
    );

    let mut s = Server::start(&config, &data);
    assert_eq!(s.version(), last, "a restart serves the newest checkpoint");
    let served = s.learn_past(last);
    // Wait for a checkpoint past `last`, then kill without warning.
    for _ in 0..200 {
        if registered(&data).last().unwrap().0 > last {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = served.max(s.version());
    s.signal("-KILL");
    // (A checkpoint may land between reading the version and the kill, so
    // the newest registered version may be above `served`.)
    let newest = registered(&data).last().unwrap().0;
    assert!(newest > last, "{newest} > {last}");

    let s = Server::start(&config, &data);
    assert_eq!(
        s.version(),
        newest,
        "after SIGKILL the newest registered checkpoint loads"
    );
    // Numbers are never reused, even those that served without a checkpoint.
    assert!(s.learn_past(newest) > served);
}

#[test]
fn train_follow_feeds_a_gateway_in_external_mode_and_the_log_reads_live() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, data) = (tmp.path().join("external.toml"), tmp.path().join("data"));
    write_config(&config, &format!("mode = \"external\"\n{FAST}"));
    let s = Server::start(&config, &data);
    let registry = data.join("policies");
    let mut follower = Command::new(BIN)
        .args(["train", "--follow", "--url", &s.url, "--registry"])
        .arg(&registry)
        .arg("--gateway-config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let learned = s.learn_past(1);
    assert!(learned > 1, "the gateway serves what the external trainer published");
    Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(follower.wait().unwrap().success(), "Ctrl-C is a clean stop");
    let versions = registered(&data);
    assert!(
        versions.iter().any(|(v, source)| source == "follow" && *v >= learned),
        "every version the trainer served is registered: {versions:?}"
    );

    // Reads while the gateway serves.
    let out_file = tmp.path().join("live.jsonl");
    let out = qroute(&["export", "--url", &s.url, "--out", out_file.to_str().unwrap()]);
    assert_ok(&out);
    let lines = std::fs::read_to_string(&out_file).unwrap().lines().count();
    assert!(lines >= 120, "{lines} experiences exported");
    let out = qroute(&["ope", "--url", &s.url, "--uniform"]);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["dr"]["value"].as_f64().is_some(), "{report}");
    assert_ok(&qroute(&["experiment", "list", "--url", &s.url]));
    let out = qroute(&["policy", "list", "--url", &s.url]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("serving"));
    let exported = tmp.path().join("v1");
    assert_ok(&qroute(&[
        "policy",
        "export",
        "1",
        exported.to_str().unwrap(),
        "--url",
        &s.url,
    ]));
    let out = qroute(&["route", "--prompt", "2+2?", "--policy", exported.to_str().unwrap()]);
    assert_ok(&out);
    let out = qroute(&["policy", "rollback", "1", "--url", &s.url]);
    assert_ok(&out);
    let v: u64 = String::from_utf8_lossy(&out.stdout)
        .trim_start_matches('v')
        .split('\t')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if s.version() == v {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.version(), v, "the rollback serves within a second");
}

#[test]
fn reads_refuse_what_is_not_a_store_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("does-not-exist");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out_file = tmp.path().join("x.jsonl");
    for dir in [&missing, &empty] {
        let d = dir.to_str().unwrap();
        for args in [
            vec!["export", "--store", d, "--out", out_file.to_str().unwrap()],
            vec!["experiment", "list", "--store", d],
            vec!["ope", "--logs", d, "--uniform"],
            vec!["policy", "list", "--data-dir", d],
        ] {
            let out = qroute(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        }
    }
    assert!(!missing.exists(), "nothing was created");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing was written");
    assert!(!out_file.exists());
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["route", "--prompt", "What is 2+2?"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
