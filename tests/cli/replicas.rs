//! Many replicas, one brain: three `qroute serve` processes and two
//! `qroute train --follow` processes on one PostgreSQL schema and one Redis
//! prefix, on loopback. Load goes through all three replicas, feedback goes
//! to a replica other than the one that answered, one replica is SIGKILLed
//! mid-load, and then: no acknowledged decision is missing from
//! `qroute export --store postgres://…`; every replica serves what the
//! trainer publishes; a key with `rpm: 20` made on one replica admits
//! 18–22 of 40 requests spread over two; an answer cached by one replica is
//! a hit on another; and when the active trainer is killed the waiting one
//! takes over.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qroute_core::testing::{ensure_postgres, ensure_redis, unique_schema};
use serde_json::{json, Value};

use super::serve::{assert_ok, prompts, qroute, write_config, BIN, FAST};

const ADMIN: &str = "replicas-admin-key";

struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn start(config: &Path, data: &Path) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("QROUTE_MASTER_KEY", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Replica {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(&r.url, "/v1/health").is_none() {
            assert!(Instant::now() < deadline, "replica {} did not come up", r.url);
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn version(&self) -> u64 {
        get(&self.url, "/v1/health").unwrap()["policy_version"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn get(base: &str, path: &str) -> Option<Value> {
    let r = client().get(format!("{base}{path}")).bearer_auth(ADMIN).send().ok()?;
    r.status().is_success().then(|| r.json().unwrap())
}

/// POSTs `body`; `(status, headers' x-qroute-cache, body)`, or `None` when
/// the connection failed (a killed replica).
fn post(base: &str, path: &str, key: &str, body: &Value) -> Option<(u16, String, Value)> {
    let r = client()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(body)
        .send()
        .ok()?;
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-qroute-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Some((status, cache, r.json().unwrap_or(Value::Null)))
}

fn kill(child: &mut Child) {
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

fn follower(config: &Path, store: &str, log: &Path) -> Child {
    Command::new(BIN)
        .args(["train", "--follow", "--store", store, "--gateway-config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `(version, source)` of the newest registered version.
fn newest(store: &str) -> Option<(u64, String)> {
    let out = qroute(&["policy", "list", "--registry", store]);
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap().lines().last().map(|l| {
        let mut cols = l.split('\t');
        let v = cols.next().unwrap().trim_start_matches('v').parse().unwrap();
        (v, cols.next().unwrap().to_string())
    })
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .output();
    }
}

#[test]
fn three_replicas_and_a_trainer_share_one_postgres_and_one_redis() {
    let schema = unique_schema("replicas");
    let _drop = DropSchema(schema.clone());
    let store = format!("{}?schema={schema}", ensure_postgres());
    let redis = ensure_redis();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("replica.toml");
    write_config(&config, &format!("mode = \"external\"\n{FAST}"));
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[store]\npath = \"qroute-data/store\"\n",
        &format!("[store]\nurl = \"{store}\"\n"),
    );
    assert!(
        text.contains("url = \"postgres://"),
        "config/default.toml changed its [store] section"
    );
    let text = format!("{text}\n[redis]\nurl = \"{redis}\"\nprefix = \"{schema}\"\n");
    std::fs::write(&config, text).unwrap();

    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&config, &tmp.path().join(format!("data-{i}"))))
        .collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let (log1, log2) = (tmp.path().join("trainer-1.log"), tmp.path().join("trainer-2.log"));
    let mut trainer1 = follower(&config, &store, &log1);
    // The first trainer holds the lock before the second starts waiting.
    wait_for("the first trainer to start", 30, || {
        std::fs::read_to_string(&log1)
            .unwrap()
            .contains("following")
            .then_some(())
    });
    let mut trainer2 = follower(&config, &store, &log2);

    // ---- load through all three; replica 2 is killed part-way ----------
    let prompts = Arc::new(prompts(90));
    let acked: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    std::thread::scope(|s| {
        for (i, url) in urls.iter().enumerate() {
            let (prompts, acked) = (prompts.clone(), acked.clone());
            s.spawn(move || {
                for p in prompts.iter().skip(i * 30).take(30).cycle().take(60) {
                    match post(url, "/v1/execute", ADMIN, &json!({ "prompt": p })) {
                        Some((200, _, body)) => acked
                            .lock()
                            .unwrap()
                            .push((i, body["request_id"].as_str().unwrap().to_string())),
                        Some((status, _, body)) => panic!("replica {i}: {status} {body}"),
                        None => break, // killed
                    }
                }
            });
        }
        wait_for("replica 2 to answer 20 requests", 60, || {
            (acked.lock().unwrap().iter().filter(|(i, _)| *i == 2).count() >= 20).then_some(())
        });
        kill(&mut replicas[2].child);
    });
    let acked = acked.lock().unwrap().clone();
    let killed_acked = acked.iter().filter(|(i, _)| *i == 2).count();
    assert!(
        (20..60).contains(&killed_acked),
        "replica 2 was killed mid-load: {killed_acked} acked"
    );

    // ---- feedback to another replica than the one that answered --------
    for (i, id) in acked.iter().filter(|(i, _)| *i < 2).take(20) {
        let other = &urls[1 - i];
        let (status, _, body) = post(
            other,
            "/v1/feedback",
            ADMIN,
            &json!({ "request_id": id, "quality": 0.9 }),
        )
        .unwrap();
        assert_eq!(
            status,
            200,
            "feedback on replica {} for an answer of {i}: {body}",
            1 - i
        );
    }

    // ---- nothing acknowledged is lost ------------------------------------
    let exported = tmp.path().join("all.jsonl");
    assert_ok(&qroute(&[
        "export",
        "--store",
        &store,
        "--out",
        exported.to_str().unwrap(),
    ]));
    let ids: std::collections::HashSet<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["decision"]["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let lost: Vec<&String> = acked.iter().map(|(_, id)| id).filter(|id| !ids.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions lost: {lost:?}",
        lost.len(),
        acked.len()
    );

    // ---- every replica serves what the trainer publishes -----------------
    let (published, _) = wait_for("the trainer to publish", 60, || {
        newest(&store).filter(|(_, source)| source == "follow")
    });
    let started = Instant::now();
    for r in &replicas[..2] {
        wait_for("a replica to serve the published version", 30, || {
            (r.version() >= published).then_some(())
        });
    }
    eprintln!(
        "both live replicas served v{published} {:?} after it was listed",
        started.elapsed()
    );

    // ---- a key made on one replica, limited across two --------------------
    let (status, _, key) = post(&urls[0], "/v1/keys", ADMIN, &json!({ "name": "shared", "rpm": 20 })).unwrap();
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    let mut accepted = 0;
    for n in 0..40 {
        let (status, _, body) = post(
            &urls[n % 2],
            "/v1/execute",
            &secret,
            &json!({ "prompt": format!("limit {n}") }),
        )
        .unwrap();
        match status {
            200 => accepted += 1,
            429 => {}
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        (18..=22).contains(&accepted),
        "{accepted} of 40 accepted under rpm 20 across two replicas"
    );

    // ---- an answer fetched by one replica is a cache hit on another ------
    let chat = json!({
        "model": "auto",
        "temperature": 0,
        "messages": [{ "role": "user", "content": format!("cache me {schema}") }],
    });
    let (status, cache, _) = post(&urls[0], "/v1/chat/completions", ADMIN, &chat).unwrap();
    assert_eq!((status, cache.as_str()), (200, "miss"));
    let (status, cache, _) = post(&urls[1], "/v1/chat/completions", ADMIN, &chat).unwrap();
    assert_eq!(
        (status, cache.as_str()),
        (200, "hit"),
        "replica 1 serves what replica 0 fetched"
    );

    // ---- the trainer dies; the waiting one takes over ---------------------
    assert!(
        !std::fs::read_to_string(&log2).unwrap().contains("following"),
        "two trainers at once"
    );
    kill(&mut trainer1);
    wait_for("the second trainer to take over", 30, || {
        std::fs::read_to_string(&log2)
            .unwrap()
            .contains("following")
            .then_some(())
    });
    let before = newest(&store).unwrap().0;
    for p in prompts.iter().take(60) {
        assert_eq!(
            post(&urls[0], "/v1/execute", ADMIN, &json!({ "prompt": p })).unwrap().0,
            200
        );
    }
    wait_for("the second trainer to publish", 60, || {
        newest(&store).filter(|(v, _)| *v > before).map(|_| ())
    });
    let _ = trainer2.kill();
    let _ = trainer2.wait();
}
