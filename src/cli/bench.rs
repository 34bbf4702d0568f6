//! `qroute bench`: the gateway against the mock upstream on loopback; with
//! `--suite`, the benchmark suite on a `qroute serve` process, its report
//! and the comparison with a saved run.

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
    /// The mock upstream's latency per answer, in ms (default: 0, and 20
    /// with --suite, the delay the peer harness measures at).
    #[arg(long)]
    upstream_latency_ms: Option<f64>,
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
    /// Run the benchmark suite instead (startup, memory, model selection,
    /// endpoints, cache, concurrency, resource use, stress and recovery) on
    /// a `qroute serve` process, and write its report to `--out`.
    #[arg(long)]
    suite: bool,
    /// With --suite: the short run CI gates on (under a minute).
    #[arg(long, requires = "suite")]
    quick: bool,
    /// With --suite: where results.json, summary.json, report.md and the
    /// charts go.
    #[arg(long, requires = "suite", default_value = "bench-results")]
    out: PathBuf,
    /// With --suite: a saved run's summary.json to compare against; a
    /// critical regression of a gated metric (twice as slow, half the
    /// throughput) makes the command fail if a second run confirms it.
    #[arg(long, requires = "suite")]
    baseline: Option<PathBuf>,
    /// With --baseline: regressions smaller than this percentage are not
    /// reported.
    #[arg(long, requires = "baseline", default_value_t = 10.0)]
    threshold: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.suite {
        return suite(&a);
    }
    let cfg = qroute_bench::BenchConfig {
        concurrency: a
            .concurrency
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("--concurrency: comma-separated integers")?,
        duration: std::time::Duration::from_secs_f64(a.seconds),
        upstream_latency_ms: a.upstream_latency_ms.unwrap_or(0.0),
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

/// `--suite`: runs it, writes the report, compares with the baseline.
fn suite(a: &Args) -> anyhow::Result<()> {
    use qroute_bench::{compare, suite, suite_report};
    let bin = std::env::current_exe().context("finding this qroute binary to start as the gateway")?;
    let mut cfg = if a.quick {
        suite::SuiteConfig::quick(bin)
    } else {
        suite::SuiteConfig::full(bin)
    };
    if let Some(ms) = a.upstream_latency_ms {
        cfg.upstream_latency_ms = ms;
    }
    let baseline = a.baseline.as_deref().map(suite_report::read_summary).transpose()?;
    let run = || suite::run(&cfg, |step| eprintln!("bench: {step}"));
    let first = run()?;
    let (result, changes, failed) = match &baseline {
        None => (first, None, Vec::new()),
        Some(baseline) => {
            let verdict = compare::gate(baseline, a.threshold, first, suite::SuiteResult::metrics, |suspects| {
                // Measured again before failing: see `compare::confirmed`.
                let names: Vec<&str> = suspects.iter().map(|c| c.name.as_str()).collect();
                eprintln!(
                    "bench: critical against the baseline ({}); running the suite again to confirm",
                    names.join(", ")
                );
                run()
            })?;
            (verdict.run, Some(verdict.changes), verdict.failed)
        }
    };
    suite_report::write(&a.out, &result, changes.as_deref().map(|c| (c, a.threshold)))?;
    say!("{}", suite_report::markdown(&result))?;
    if let Some(changes) = &changes {
        say!("{}", compare::markdown(changes, a.threshold))?;
    }
    eprintln!("bench: report in {}", a.out.display());
    if !failed.is_empty() {
        anyhow::bail!(
            "critical regressions against the baseline, in two runs: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
