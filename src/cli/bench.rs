//! `qroute bench`: the gateway against the mock upstream on loopback.

use std::path::PathBuf;

use anyhow::Context;

use super::output::say;

/// Load-test the gateway against the mock upstream on loopback: requests
/// per second and the gateway's added latency (p50, p99) per concurrency.
#[derive(clap::Args)]
pub struct Args {
    /// Comma-separated numbers of concurrent clients.
    #[arg(long, default_value = "1,8,32,64")]
    concurrency: String,
    /// Seconds per level.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The mock upstream's latency per answer, in ms.
    #[arg(long, default_value_t = 0.0)]
    upstream_latency_ms: f64,
    /// Gateway worker threads.
    #[arg(long, default_value_t = 2)]
    gateway_threads: usize,
    /// Answer before the decision record is durable (store.durable_ack = false).
    #[arg(long)]
    queued_ack: bool,
    /// Variations per request.
    #[arg(long, default_value_t = 1)]
    variations: usize,
    /// Standard deviation of the mock's latency, in ms.
    #[arg(long, default_value_t = 0.0)]
    upstream_jitter_ms: f64,
    /// Enrol every request in a running two-arm experiment (unit: user).
    #[arg(long)]
    experiment: bool,
    /// Score every request with a shadow policy as well.
    #[arg(long)]
    shadow: bool,
    /// Stream chat completions and report time to first token (TTFT)
    /// through qroute against direct.
    #[arg(long)]
    stream: bool,
    /// With --stream: the mock's pause between content chunks, in ms.
    #[arg(long, default_value_t = 20)]
    chunk_delay_ms: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = qroute_bench::BenchConfig {
        concurrency: a
            .concurrency
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("--concurrency: comma-separated integers")?,
        duration: std::time::Duration::from_secs_f64(a.seconds),
        upstream_latency_ms: a.upstream_latency_ms,
        gateway_threads: a.gateway_threads,
        durable_ack: !a.queued_ack,
        variations: a.variations,
        upstream_jitter_ms: a.upstream_jitter_ms,
        experiment: a.experiment,
        shadow: a.shadow,
        stream: a.stream,
        chunk_delay_ms: a.chunk_delay_ms,
        ..Default::default()
    };
    let results = qroute_bench::run(&cfg, |r| match &r.stream {
        Some(s) => eprintln!(
            "c={:<4} {:>8.0} streams/s  TTFT added p50 {:.3} ms p99 {:.3} ms  (direct {:.0} streams/s)",
            r.concurrency, r.gateway_rps, s.ttft_added_ms.p50, s.ttft_added_ms.p99, r.direct_rps
        ),
        None => eprintln!(
            "c={:<4} {:>8.0} req/s  overhead p50 {:.3} ms p99 {:.3} ms  (direct {:.0} req/s)",
            r.concurrency, r.gateway_rps, r.overhead_ms.p50, r.overhead_ms.p99, r.direct_rps
        ),
    })?;
    say!("{}", qroute_bench::markdown(&results, &cfg))?;
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
