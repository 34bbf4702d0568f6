//! `qroute bench`: the gateway's added latency and throughput, measured
//! against the mock upstream on loopback.
//!
//! Everything runs in this process on its own runtimes: a mock upstream, a
//! gateway in front of it (real routing, real group-committed experience
//! logging to a store in a temporary directory, the online trainer on), and
//! a closed-loop load generator with `c` concurrent keep-alive clients. For
//! each concurrency it runs twice, against the gateway and straight against
//! the mock, and reports:
//!
//! - requests per second through the gateway;
//! - the gateway's own overhead per request: `X-Process-Time` (from the
//!   request reaching the service to the response being ready) minus the
//!   upstream time it reports (`timings.upstream_ms`), p50 and p99; with
//!   variations, minus the slowest variation's latency instead (the wall
//!   time a parallel run cannot avoid);
//! - end-to-end latency through the gateway and straight to the mock, p50
//!   and p99, whose difference is the overhead as a client sees it
//!   (including the extra loopback hop and the client sharing the cores);
//! - the CPU time the gateway's threads (its runtime, the store writer, the
//!   trainer and sled's) used per request, from `/proc/self/task/*/schedstat`.
//!   The load generator and the mock share the same two cores and take most
//!   of them, so `2 cores / CPU per request` is the rate the gateway could
//!   serve with the cores to itself.
//!
//! With [`BenchConfig::stream`] the clients stream chat completions instead
//! and the report adds time to first token (see [`stream`]); the end-to-end
//! latencies are then the times to the end of each stream.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use qroute_core::{Error, Result};
use qroute_gateway::config::Config;
use qroute_gateway::{http, Gateway};
use qroute_mock::MockConfig;

pub mod compare;
pub mod gauge;
pub mod judges;
pub mod stream;
pub mod suite;
pub mod suite_report;
pub use stream::StreamResult;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub concurrency: Vec<usize>,
    pub duration: Duration,
    /// Requests before measuring, per concurrency level.
    pub warmup: usize,
    /// The mock upstream's latency per answer, in ms (0: answer at once,
    /// which exposes every microsecond the gateway adds).
    pub upstream_latency_ms: f64,
    /// Gateway runtime worker threads.
    pub gateway_threads: usize,
    /// Load-generator runtime threads (the mock shares them).
    pub client_threads: usize,
    /// The gateway's `store.durable_ack`.
    pub durable_ack: bool,
    /// Variations per request (1: a single model). With k > 1 the overhead
    /// is the time to the response minus the slowest variation's latency.
    pub variations: usize,
    /// Standard deviation of the mock's latency, ms.
    pub upstream_jitter_ms: f64,
    /// Enrol every request in a running experiment (two arms, 1,000 users):
    /// the cost of reading the unit, assigning and tagging.
    pub experiment: bool,
    /// Score every request with a shadow policy too (the embedded default).
    pub shadow: bool,
    /// Stream chat completions and measure time to first token.
    pub stream: bool,
    /// The mock's pause between content chunks of a stream, ms: what makes a
    /// stream's first token arrive well before its end, as a real model's does.
    pub chunk_delay_ms: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            concurrency: vec![1, 8, 32, 64],
            duration: Duration::from_secs(5),
            warmup: 200,
            upstream_latency_ms: 0.0,
            gateway_threads: 2,
            client_threads: 2,
            durable_ack: true,
            variations: 1,
            upstream_jitter_ms: 0.0,
            experiment: false,
            shadow: false,
            stream: false,
            chunk_delay_ms: 20,
        }
    }
}

/// Percentiles of one sample, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

impl Quantiles {
    /// The closed-loop bench's two percentiles of [`gauge::Spread`].
    fn of(xs: Vec<f64>) -> Quantiles {
        let s = gauge::Spread::of(&xs);
        Quantiles { p50: s.p50, p99: s.p99 }
    }
}

/// One concurrency level's results.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub gateway_rps: f64,
    pub direct_rps: f64,
    /// The gateway's reported overhead (its time minus upstream time).
    pub overhead_ms: Quantiles,
    pub gateway_e2e_ms: Quantiles,
    pub direct_e2e_ms: Quantiles,
    /// CPU time of the gateway's threads per request, in µs (NaN where
    /// `/proc` has no scheduler statistics).
    pub gateway_cpu_us: f64,
    /// Time to first token, in streaming mode only (absent otherwise, so the
    /// plain bench's JSON is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamResult>,
}

/// Runs the benchmark; `progress` gets each level's result as it finishes.
pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&LevelResult)) -> Result<Vec<LevelResult>> {
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the load generator runtime", e))?;
    let gateway_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.gateway_threads)
        .thread_name("qroute-gateway")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the gateway runtime", e))?;

    let mock = client_rt
        .block_on(qroute_mock::spawn(MockConfig {
            latency_ms: cfg.upstream_latency_ms,
            jitter_ms: cfg.upstream_jitter_ms,
            chunk_delay_ms: cfg.chunk_delay_ms,
            ..MockConfig::default()
        }))
        .map_err(|e| Error::io("starting the mock upstream", e))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary store", e))?;
    let mut text = format!(
        r#"[store]
path = "{}"
durable_ack = {}
[[providers]]
name = "mock"
kind = "openai"
base_url = "{}/v1"
[[models]]
id = "mock-small"
provider = "mock"
input_per_mtok = 0.2
output_per_mtok = 0.6
[[models]]
id = "mock-medium"
provider = "mock"
input_per_mtok = 1.0
output_per_mtok = 3.0
[[models]]
id = "mock-large"
provider = "mock"
input_per_mtok = 5.0
output_per_mtok = 15.0
"#,
        dir.path().join("store").display(),
        cfg.durable_ack,
        mock.url()
    );
    if cfg.experiment {
        text.push_str(
            r#"[[experiments]]
id = "bench"
unit = "user"
arms = [
  { name = "learned", strategy = { kind = "learned" } },
  { name = "cheap", strategy = { kind = "cost_optimized" } },
]
"#,
        );
    }
    if cfg.shadow {
        let shadow = dir.path().join("shadow");
        qroute_core::policy::checkpoint::save(&qroute_gateway::embedded::policy()?, &shadow, json!({}))?;
        // `[policy]` is a table: it must come before the arrays of tables.
        text = format!(
            "[policy.shadow]\nname = \"bench\"\npath = \"{}\"\n{text}",
            shadow.display()
        );
    }
    let gw = Arc::new(Gateway::build(Config::parse(Path::new("<bench>"), &text)?)?);
    let listener = gateway_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| Error::io("binding the gateway", e))?;
    let gateway_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| Error::io("gateway address", e))?
    );
    gateway_rt.spawn(http::serve(gw.clone(), listener, std::future::pending()));

    // Streams go through the OpenAI-compatible endpoint, the only one that
    // streams; the plain bench measures `/v1/execute`.
    let (gateway_path, warmup) = if cfg.stream {
        ("/v1/chat/completions", cfg.warmup.min(stream::WARMUP_STREAMS))
    } else {
        ("/v1/execute", cfg.warmup)
    };
    let direct_url = format!("{}/v1/chat/completions", mock.url());
    let run_load = |url: &str, target: Target, c: usize| {
        if cfg.stream {
            client_rt.block_on(stream::load(url, target, c, cfg))
        } else {
            client_rt.block_on(load(url, target, c, cfg))
        }
    };
    let mut results = Vec::new();
    for &c in &cfg.concurrency {
        let cpu_before = gateway_cpu_seconds();
        let through = run_load(
            &format!("{gateway_url}{gateway_path}"),
            Target::Gateway(cfg.variations),
            c,
        )?;
        let cpu = gateway_cpu_seconds() - cpu_before;
        let served = through.latencies.len() + through.errors + warmup;
        let direct = run_load(&direct_url, Target::Direct, c)?;
        let stream = cfg
            .stream
            .then(|| StreamResult::of(through.ttfts.clone(), direct.ttfts.clone()));
        let r = LevelResult {
            concurrency: c,
            requests: through.latencies.len(),
            errors: through.errors,
            gateway_rps: through.latencies.len() as f64 / through.elapsed.as_secs_f64(),
            direct_rps: direct.latencies.len() as f64 / direct.elapsed.as_secs_f64(),
            overhead_ms: Quantiles::of(through.overheads),
            gateway_e2e_ms: Quantiles::of(through.latencies),
            direct_e2e_ms: Quantiles::of(direct.latencies),
            gateway_cpu_us: cpu * 1e6 / served.max(1) as f64,
            stream,
        };
        progress(&r);
        results.push(r);
    }
    drop(gw);
    gateway_rt.shutdown_timeout(Duration::from_secs(5));
    Ok(results)
}

/// Threads that belong to the gateway: its runtime, writer, trainer, sled's.
const GATEWAY_THREADS: &[&str] = &["qroute-gateway", "qroute-writer", "qroute-trainer", "sled-"];

/// CPU seconds used so far by this process's gateway threads.
fn gateway_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !GATEWAY_THREADS.iter().any(|g| comm.starts_with(g)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) else {
            return f64::NAN;
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Through qroute, with this many variations.
    Gateway(usize),
    Direct,
}

#[derive(Default)]
struct Load {
    latencies: Vec<f64>,
    overheads: Vec<f64>,
    /// Times to the first token, streaming mode only.
    ttfts: Vec<f64>,
    errors: usize,
    elapsed: Duration,
}

/// Prompts of the shape real traffic has: a sentence or two, varied.
const PROMPTS: &[&str] = &[
    "What is 17 * 23? Show your working.",
    "Summarise the causes of the French Revolution in three sentences.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Which of these is a mammal? A) shark B) dolphin C) trout D) octopus",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "Explain the difference between TCP and UDP to a new engineer.",
];

fn body(target: Target, i: usize) -> Value {
    let prompt = PROMPTS[i % PROMPTS.len()];
    match target {
        Target::Gateway(k) => json!({
            "prompt": prompt, "preference": {"cost_weight": 0.5}, "variations": k, "user_id": format!("u{}", i % 1000)
        }),
        Target::Direct => json!({"model": "mock-small", "messages": [{"role": "user", "content": prompt}]}),
    }
}

/// `c` clients each sending one request after another for the duration.
async fn load(url: &str, target: Target, c: usize, cfg: &BenchConfig) -> Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c.max(1))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Unavailable(format!("the load generator's HTTP client: {e}")))?;
    // Warm-up: connections, caches, the trainer's first steps.
    for i in 0..cfg.warmup {
        let _ = client.post(url).json(&body(target, i)).send().await;
    }
    let start = Instant::now();
    let stop_at = start + cfg.duration;
    let mut tasks = Vec::with_capacity(c);
    for worker in 0..c {
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut over, mut errors) = (Vec::new(), Vec::new(), 0usize);
            let mut i = worker;
            while Instant::now() < stop_at {
                let t0 = Instant::now();
                let r = client.post(&url).json(&body(target, i)).send().await;
                i += c;
                let ok = match r {
                    Ok(r) if r.status().is_success() => {
                        let process_ms = r
                            .headers()
                            .get("x-process-time")
                            .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
                            .map(|s| s * 1e3);
                        match r.json::<Value>().await {
                            Ok(v) => {
                                if let Target::Gateway(k) = target {
                                    // With variations: the slowest one run.
                                    let upstream = if k > 1 {
                                        v["variations"].as_array().map(|vs| {
                                            vs.iter().filter_map(|x| x["latency_ms"].as_f64()).fold(0.0, f64::max)
                                        })
                                    } else {
                                        v["timings"]["upstream_ms"].as_f64()
                                    };
                                    let overhead = process_ms.zip(upstream).map(|(p, u)| (p - u).max(0.0));
                                    over.push(overhead.unwrap_or(f64::NAN));
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                if ok {
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, over, errors)
        }));
    }
    let mut out = Load::default();
    for t in tasks {
        if let Ok((l, o, e)) = t.await {
            out.latencies.extend(l);
            out.overheads.extend(o);
            out.errors += e;
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// The results as a Markdown table.
pub fn markdown(results: &[LevelResult], cfg: &BenchConfig) -> String {
    if cfg.stream {
        return stream_markdown(results, cfg);
    }
    let mut s = format!(
        "Gateway vs. mock upstream on loopback ({} ± {} ms upstream latency, {} variation(s), {} s per level, durable_ack {}, experiment {}, shadow {}).\n\n\
         | clients | req/s via qroute | req/s direct | overhead p50 | overhead p99 | e2e p50 via / direct | e2e p99 via / direct | gateway CPU / req | errors |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        cfg.upstream_latency_ms,
        cfg.upstream_jitter_ms,
        cfg.variations,
        cfg.duration.as_secs_f64(),
        cfg.durable_ack,
        cfg.experiment,
        cfg.shadow
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} ms | {:.3} ms | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.0} µs | {} |\n",
            r.concurrency,
            r.gateway_rps,
            r.direct_rps,
            r.overhead_ms.p50,
            r.overhead_ms.p99,
            r.gateway_e2e_ms.p50,
            r.direct_e2e_ms.p50,
            r.gateway_e2e_ms.p99,
            r.direct_e2e_ms.p99,
            r.gateway_cpu_us,
            r.errors
        ));
    }
    s
}

/// The streaming results as a Markdown table: TTFT via qroute and direct,
/// the difference (what qroute adds before the first token), and the time
/// to the end of the stream, which the mock's pacing dominates.
fn stream_markdown(results: &[LevelResult], cfg: &BenchConfig) -> String {
    let mut s = format!(
        "Streaming: gateway vs. mock upstream on loopback ({} ± {} ms upstream latency, {} ms between chunks, {} s per level, durable_ack {}).\n\n\
         | clients | streams/s via qroute | streams/s direct | TTFT p50 via / direct | TTFT added p50 | TTFT p99 via / direct | TTFT added p99 | stream p50 via / direct | gateway CPU / stream | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        cfg.upstream_latency_ms,
        cfg.upstream_jitter_ms,
        cfg.chunk_delay_ms,
        cfg.duration.as_secs_f64(),
        cfg.durable_ack,
    );
    for r in results {
        let Some(t) = r.stream else { continue };
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} / {:.3} ms | {:.3} ms | {:.3} / {:.3} ms | {:.3} ms | {:.1} / {:.1} ms | {:.0} µs | {} |\n",
            r.concurrency,
            r.gateway_rps,
            r.direct_rps,
            t.ttft_gateway_ms.p50,
            t.ttft_direct_ms.p50,
            t.ttft_added_ms.p50,
            t.ttft_gateway_ms.p99,
            t.ttft_direct_ms.p99,
            t.ttft_added_ms.p99,
            r.gateway_e2e_ms.p50,
            r.direct_e2e_ms.p50,
            r.gateway_cpu_us,
            r.errors
        ));
    }
    s
}
