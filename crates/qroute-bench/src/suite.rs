//! The benchmark suite (`qroute bench --suite`): the categories published
//! model-routing systems report, measured on a real `qroute serve` process
//! in front of the mock upstream, so the gateway's CPU and memory are its
//! own (the load generator and the mock run in this process).
//!
//! Categories: startup time; memory (idle, after load); model-selection
//! speed (the `decision_us` each answer reports); API response time per
//! endpoint; response cache hit and miss; concurrency (closed loop, 1 to 200
//! clients, through the gateway and straight to the mock); resource use
//! (CPU per request at a fixed open-loop rate); scalability stress (open
//! loop at rising rates until a rate fails) and recovery after it (a low
//! rate right after the overload). Every number is also a [`Metric`], which
//! a later run compares against ([`crate::compare`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use qroute_core::{Error, Result};
use qroute_mock::MockConfig;

use crate::compare::Metric;
use crate::gauge::{closed_loop, open_loop, Proc, Shot, Spread};

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The `qroute` binary to start as the gateway.
    pub gateway_bin: PathBuf,
    /// The mock upstream's delay per answer, ms.
    pub upstream_latency_ms: f64,
    /// Seconds per load level.
    pub seconds: f64,
    pub concurrency: Vec<usize>,
    /// Open-loop rates of the stress ramp, ascending.
    pub stress_rates: Vec<f64>,
    /// The open-loop rate CPU per request is measured at.
    pub resource_rate: f64,
    /// Sequential requests per endpoint, and per cache case.
    pub requests_per_endpoint: usize,
    /// Gateway starts timed (each with a new store).
    pub startups: usize,
}

impl SuiteConfig {
    /// The whole suite: about four minutes.
    pub fn full(gateway_bin: PathBuf) -> SuiteConfig {
        SuiteConfig {
            gateway_bin,
            upstream_latency_ms: 20.0,
            seconds: 8.0,
            concurrency: vec![1, 5, 10, 20, 50, 100, 200],
            stress_rates: vec![500.0, 1000.0, 2000.0, 4000.0, 8000.0],
            resource_rate: 1000.0,
            requests_per_endpoint: 200,
            startups: 3,
        }
    }

    /// A short run for CI's regression gate: under a minute.
    pub fn quick(gateway_bin: PathBuf) -> SuiteConfig {
        SuiteConfig {
            seconds: 2.0,
            concurrency: vec![1, 10, 50],
            stress_rates: vec![250.0, 1000.0],
            resource_rate: 300.0,
            requests_per_endpoint: 50,
            // The median of five: one start's fsyncs can wait behind other
            // I/O on the box (CI measured 208 ms once against 38 ms, and
            // 39–166 ms by hand for the same binary), and the gate must
            // not trip on one sample.
            startups: 5,
            ..SuiteConfig::full(gateway_bin)
        }
    }
}

/// A load level that fails: more than this share of requests failed or
/// unsent, or a p99 over [`FAIL_P99_MS`] above the upstream delay.
const FAIL_SHARE: f64 = 0.01;
const FAIL_P99_MS: f64 = 1000.0;

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub clients: usize,
    pub gateway: Shot,
    pub direct: Shot,
}

#[derive(Debug, Clone, Serialize)]
pub struct StressLevel {
    pub rate: f64,
    pub gateway: Shot,
    pub direct: Shot,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub latency: Spread,
    pub errors: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub cores: usize,
    pub upstream_latency_ms: f64,
    pub seconds_per_level: f64,
    pub startup_ms: Vec<f64>,
    pub idle_rss_mib: f64,
    pub model_selection_us: Spread,
    pub endpoints: Vec<Endpoint>,
    pub cache_hit: Spread,
    pub cache_miss: Spread,
    /// Answers to the repeated request that said `x-qroute-cache: hit`.
    pub cache_hits_seen: usize,
    pub concurrency: Vec<Level>,
    pub resource_rate: f64,
    pub resource: Shot,
    pub cpu_us_per_request: f64,
    pub stress: Vec<StressLevel>,
    /// At the first rate, right after the stress ramp.
    pub recovery: Shot,
    pub rss_after_load_mib: f64,
    pub threads_after_load: usize,
}

/// A `qroute serve` child, killed when dropped.
struct Gateway {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn proc(&self) -> Proc {
        Proc { pid: self.child.id() }
    }
}

/// The gateway's config: two models on the mock, `model: "auto"` routing,
/// durable acks and learning on (what the peer harness measures).
fn config_text(dir: &Path, port: u16, mock_url: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
[store]
path = "{store}"
[learning]
mode = "online"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock_url}/v1"
[[models]]
id = "mock"
provider = "mock"
input_per_mtok = 0.5
output_per_mtok = 1.5
[[models]]
id = "mock-b"
provider = "mock"
input_per_mtok = 3.0
output_per_mtok = 15.0
"#,
        store = dir.join("store").display()
    )
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
    Ok(l.local_addr().map_err(|e| Error::io("finding a free port", e))?.port())
}

/// Starts the gateway and waits for its health check: the time it took.
async fn start(cfg: &SuiteConfig, client: &reqwest::Client, mock_url: &str) -> Result<(Gateway, f64)> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating the gateway's directory", e))?;
    let port = free_port()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), port, mock_url))
        .map_err(|e| Error::io("writing the gateway's config", e))?;
    let t0 = Instant::now();
    let child = Command::new(&cfg.gateway_bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", cfg.gateway_bin.display()), e))?;
    let gw = Gateway {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let health = format!("{}/v1/health", gw.url);
    while t0.elapsed() < Duration::from_secs(30) {
        if client.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok((gw, t0.elapsed().as_secs_f64() * 1e3));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err(Error::Unavailable(
        "the gateway did not answer its health check within 30 s".into(),
    ))
}

fn chat(content: &str, temperature: Option<f64>) -> Value {
    let mut body = json!({"model": "auto", "messages": [{"role": "user", "content": content}]});
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// Varied prompts, so featurising and routing see different inputs.
const PROMPTS: &[&str] = &[
    "What is 17 * 23? Show your working.",
    "Summarise the causes of the French Revolution in three sentences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Translate 'good morning, how are you?' into Spanish and German.",
];

/// A sender for the load generators: POST `body(i)` to `url`, true on a 2xx
/// whose body was read whole.
fn poster(
    client: &reqwest::Client,
    url: String,
    body: fn(usize) -> Value,
) -> impl Fn(usize) -> PostFuture + Send + Sync {
    let client = client.clone();
    move |i| {
        let (client, url) = (client.clone(), url.clone());
        Box::pin(async move {
            match client.post(&url).json(&body(i)).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        })
    }
}

type PostFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

fn routed(i: usize) -> Value {
    chat(PROMPTS[i % PROMPTS.len()], None)
}

fn direct(i: usize) -> Value {
    json!({"model": "mock", "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}]})
}

/// Times `n` sequential requests; the latencies of the 2xx ones and the
/// count of the rest. `on_body` sees each 2xx answer's body.
async fn sequential(
    n: usize,
    req: impl Fn(usize) -> reqwest::RequestBuilder,
    mut on_body: impl FnMut(&[u8]),
) -> (Vec<f64>, usize) {
    let (mut lat, mut errors) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let t0 = Instant::now();
        let body = match req(i).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        match body {
            Some(body) => {
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                on_body(&body);
            }
            None => errors += 1,
        }
    }
    (lat, errors)
}

/// Runs the suite; `progress` hears what is being measured.
pub fn run(cfg: &SuiteConfig, mut progress: impl FnMut(&str)) -> Result<SuiteResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the load generator runtime", e))?;
    rt.block_on(run_async(cfg, &mut progress))
}

async fn run_async(cfg: &SuiteConfig, progress: &mut impl FnMut(&str)) -> Result<SuiteResult> {
    let mock = qroute_mock::spawn(MockConfig {
        latency_ms: cfg.upstream_latency_ms,
        ..MockConfig::default()
    })
    .await
    .map_err(|e| Error::io("starting the mock upstream", e))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Unavailable(format!("the load generator's HTTP client: {e}")))?;
    let level = Duration::from_secs_f64(cfg.seconds);

    progress("startup");
    let mut startup_ms = Vec::new();
    let mut gateway = None;
    for _ in 0..cfg.startups.max(1) {
        drop(gateway.take());
        let (gw, ms) = start(cfg, &client, &mock.url()).await?;
        startup_ms.push(ms);
        gateway = Some(gw);
    }
    let Some(gw) = gateway else {
        return Err(Error::Unavailable("no gateway started".into()));
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_mib = gw.proc().rss_mib();

    progress("model selection and endpoints");
    let chat_url = format!("{}/v1/chat/completions", gw.url);
    // Model selection is read off the `/v1/execute` answers timed below.
    let mut decision_us = Vec::new();
    let mut endpoints = Vec::new();
    for (method, path) in [
        ("GET", "/v1/health"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/execute"),
        ("POST", "/v1/chat/completions"),
    ] {
        let url = format!("{}{path}", gw.url);
        let execute = path == "/v1/execute";
        let (lat, errors) = sequential(
            cfg.requests_per_endpoint,
            |i| match method {
                "GET" => client.get(&url),
                _ if execute => client
                    .post(&url)
                    .json(&json!({"prompt": PROMPTS[i % PROMPTS.len()], "preference": {"cost_weight": 0.5}})),
                _ => client.post(&url).json(&routed(i)),
            },
            |body| {
                if execute {
                    let answer = serde_json::from_slice::<Value>(body).unwrap_or_default();
                    decision_us.extend(answer["timings"]["decision_us"].as_f64());
                }
            },
        )
        .await;
        endpoints.push(Endpoint {
            method,
            path,
            latency: Spread::of(&lat),
            errors,
        });
    }

    progress("cache");
    let (mut hit, mut miss, mut hits_seen) = (Vec::new(), Vec::new(), 0);
    let repeated = chat("Name the capital of France.", Some(0.0));
    let _ = client.post(&chat_url).json(&repeated).send().await;
    for i in 0..cfg.requests_per_endpoint {
        let t0 = Instant::now();
        if let Ok(r) = client.post(&chat_url).json(&repeated).send().await {
            hits_seen += usize::from(r.headers().get("x-qroute-cache").is_some_and(|v| v == "hit"));
            if r.bytes().await.is_ok() {
                hit.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let unique = chat(&format!("Name a prime number above {}.", i * 7919), Some(0.0));
        let t0 = Instant::now();
        if let Ok(r) = client.post(&chat_url).json(&unique).send().await {
            if r.status().is_success() && r.bytes().await.is_ok() {
                miss.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }

    let mock_chat = format!("{}/v1/chat/completions", mock.url());
    let mut concurrency = Vec::new();
    for &c in &cfg.concurrency {
        progress(&format!("concurrency {c}"));
        let gateway = closed_loop(poster(&client, chat_url.clone(), routed), c, level).await;
        let direct = closed_loop(poster(&client, mock_chat.clone(), direct), c, level).await;
        concurrency.push(Level {
            clients: c,
            gateway,
            direct,
        });
    }

    progress("resource use");
    let cpu0 = gw.proc().cpu_seconds();
    let resource = open_loop(
        poster(&client, chat_url.clone(), routed),
        cfg.resource_rate,
        level,
        10_000,
    )
    .await;
    let cpu_us_per_request = (gw.proc().cpu_seconds() - cpu0) * 1e6 / resource.ok.max(1) as f64;

    let mut stress = Vec::new();
    for &rate in &cfg.stress_rates {
        progress(&format!("stress {rate} req/s"));
        let in_flight = 10_000;
        let direct = open_loop(poster(&client, mock_chat.clone(), direct), rate, level, in_flight).await;
        let gateway = open_loop(poster(&client, chat_url.clone(), routed), rate, level, in_flight).await;
        let passed =
            gateway.failed_share() <= FAIL_SHARE && gateway.latency.p99 - cfg.upstream_latency_ms <= FAIL_P99_MS;
        stress.push(StressLevel {
            rate,
            gateway,
            direct,
            passed,
        });
        if !passed {
            break;
        }
    }
    progress("recovery");
    let recovery_rate = cfg.stress_rates.first().copied().unwrap_or(100.0);
    let recovery = open_loop(poster(&client, chat_url.clone(), routed), recovery_rate, level, 10_000).await;
    let threads_after_load = gw.proc().threads();

    Ok(SuiteResult {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        upstream_latency_ms: cfg.upstream_latency_ms,
        seconds_per_level: cfg.seconds,
        startup_ms,
        idle_rss_mib,
        model_selection_us: Spread::of(&decision_us),
        endpoints,
        cache_hit: Spread::of(&hit),
        cache_miss: Spread::of(&miss),
        cache_hits_seen: hits_seen,
        concurrency,
        resource_rate: cfg.resource_rate,
        resource,
        cpu_us_per_request,
        stress,
        recovery,
        rss_after_load_mib: gw.proc().rss_mib(),
        threads_after_load,
    })
}

impl SuiteResult {
    /// Every number as a named metric, for the summary and the baseline.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        let mut add = |name: String, value: f64, unit: &str, higher_is_better: bool, gate: bool| {
            out.push(Metric {
                name,
                value,
                unit: unit.into(),
                higher_is_better,
                gate,
            })
        };
        let median = Spread::of(&self.startup_ms).p50;
        add("startup.time".into(), median, "ms", false, true);
        add("memory.idle_rss".into(), self.idle_rss_mib, "MiB", false, true);
        add(
            "memory.after_load_rss".into(),
            self.rss_after_load_mib,
            "MiB",
            false,
            false,
        );
        let s = self.model_selection_us;
        add("model_selection.p50".into(), s.p50, "µs", false, true);
        add("model_selection.mean".into(), s.mean, "µs", false, true);
        add("model_selection.p99".into(), s.p99, "µs", false, false);
        for e in &self.endpoints {
            let key = format!("endpoint.{} {}", e.method, e.path);
            add(format!("{key}.p50"), e.latency.p50, "ms", false, true);
            add(format!("{key}.p99"), e.latency.p99, "ms", false, false);
        }
        add("cache.hit_p50".into(), self.cache_hit.p50, "ms", false, true);
        add("cache.miss_p50".into(), self.cache_miss.p50, "ms", false, true);
        for l in &self.concurrency {
            let key = format!("concurrency.c{}", l.clients);
            add(format!("{key}.rps"), l.gateway.rps(), "req/s", true, true);
            add(format!("{key}.p50"), l.gateway.latency.p50, "ms", false, true);
            add(format!("{key}.p99"), l.gateway.latency.p99, "ms", false, false);
            add(
                format!("{key}.added_p50"),
                l.gateway.latency.p50 - l.direct.latency.p50,
                "ms",
                false,
                false,
            );
        }
        add(
            "resource.cpu_per_request".into(),
            self.cpu_us_per_request,
            "µs",
            false,
            true,
        );
        add(
            "resource.added_p50".into(),
            self.resource.latency.p50 - self.upstream_latency_ms,
            "ms",
            false,
            false,
        );
        let sustained = self
            .stress
            .iter()
            .filter(|l| l.passed)
            .map(|l| l.rate)
            .fold(0.0, f64::max);
        add("stress.max_passing_rate".into(), sustained, "req/s", true, true);
        for l in &self.stress {
            let key = format!("stress.r{}", l.rate);
            add(
                format!("{key}.added_p50"),
                l.gateway.latency.p50 - l.direct.latency.p50,
                "ms",
                false,
                false,
            );
            add(
                format!("{key}.added_p99"),
                l.gateway.latency.p99 - l.direct.latency.p99,
                "ms",
                false,
                false,
            );
        }
        add("recovery.p99".into(), self.recovery.latency.p99, "ms", false, false);
        add(
            "recovery.failed_share".into(),
            self.recovery.failed_share(),
            "share",
            false,
            false,
        );
        out
    }
}
