//! The suite's outputs: detailed results and a summary in JSON, a Markdown
//! report and PNG charts, all in one directory.

use std::path::Path;

use qroute_core::{Error, Result};
use qroute_lab::plots::series_png;

use crate::compare::{self, Change, Metric};
use crate::suite::SuiteResult;

/// File names inside the output directory.
pub const RESULTS: &str = "results.json";
pub const SUMMARY: &str = "summary.json";
pub const REPORT: &str = "report.md";

/// Writes `results.json`, `summary.json` (the metrics a later run compares
/// against), `report.md` (with the comparison, when there is one) and the
/// charts.
pub fn write(dir: &Path, result: &SuiteResult, comparison: Option<(&[Change], f64)>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let save = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    };
    save(RESULTS, pretty(result)?)?;
    save(SUMMARY, pretty(&result.metrics())?)?;
    let mut md = markdown(result);
    if let Some((changes, threshold)) = comparison {
        md.push('\n');
        md.push_str(&compare::markdown(changes, threshold));
    }
    save(REPORT, md)?;
    charts(dir, result)
}

/// Reads a `summary.json` written by [`write`].
pub fn read_summary(path: &Path) -> Result<Vec<Metric>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("{}: not a bench summary.json: {e}", path.display())))
}

fn pretty<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Store(format!("encoding the results: {e}")))
}

/// The report: one table per category.
pub fn markdown(r: &SuiteResult) -> String {
    let mut s = format!(
        "# qroute bench\n\n{} cores; upstream (mock) delay {} ms; {} s per load level. The gateway is a `qroute serve` \
         process (two models, `model: \"auto\"`, durable acks, learning on); the load generator and the mock share the machine.\n\n",
        r.cores, r.upstream_latency_ms, r.seconds_per_level
    );
    let ms = |v: f64| format!("{v:.2} ms");
    s.push_str("## Startup and memory\n\n| metric | value |\n|---|---|\n");
    s.push_str(&format!(
        "| startup to first health 200 (median of {}) | {} |\n| idle RSS | {:.1} MiB |\n| RSS after all load | {:.1} MiB |\n| threads after load | {} |\n\n",
        r.startup_ms.len(),
        ms(crate::gauge::Spread::of(&r.startup_ms).p50),
        r.idle_rss_mib,
        r.rss_after_load_mib,
        r.threads_after_load
    ));
    let m = r.model_selection_us;
    s.push_str(&format!(
        "## Model selection\n\nFeaturise, score and draw, as each answer's `timings.decision_us` reports it: p50 {:.1} µs, mean {:.1} µs, p99 {:.1} µs.\n\n",
        m.p50, m.mean, m.p99
    ));
    s.push_str("## API response time (sequential)\n\n| endpoint | p50 | p99 | errors |\n|---|---|---|---|\n");
    for e in &r.endpoints {
        s.push_str(&format!(
            "| {} {} | {} | {} | {} |\n",
            e.method,
            e.path,
            ms(e.latency.p50),
            ms(e.latency.p99),
            e.errors
        ));
    }
    s.push_str(&format!(
        "\n## Response cache\n\n| case | p50 | p99 |\n|---|---|---|\n| hit ({} of the repeats said `hit`) | {} | {} |\n| miss (routed and answered) | {} | {} |\n\n",
        r.cache_hits_seen,
        ms(r.cache_hit.p50),
        ms(r.cache_hit.p99),
        ms(r.cache_miss.p50),
        ms(r.cache_miss.p99)
    ));
    s.push_str("## Concurrency (closed loop)\n\n| clients | req/s via qroute | req/s direct | p50 via / direct | p99 via / direct | errors |\n|---|---|---|---|---|---|\n");
    for l in &r.concurrency {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {} |\n",
            l.clients,
            l.gateway.rps(),
            l.direct.rps(),
            l.gateway.latency.p50,
            l.direct.latency.p50,
            l.gateway.latency.p99,
            l.direct.latency.p99,
            l.gateway.errors
        ));
    }
    s.push_str(&format!(
        "\n## Resource use\n\nOpen loop at {:.0} req/s: gateway CPU {:.0} µs per request; p50 {} and p99 {} end to end; {} errors, {} unsent.\n\n",
        r.resource_rate,
        r.cpu_us_per_request,
        ms(r.resource.latency.p50),
        ms(r.resource.latency.p99),
        r.resource.errors,
        r.resource.unsent
    ));
    s.push_str("## Scalability stress and recovery (open loop, latency from the scheduled time)\n\n| rate | p50 via / direct | p99 via / direct | errors + unsent via | verdict |\n|---|---|---|---|---|\n");
    for l in &r.stress {
        s.push_str(&format!(
            "| {:.0} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {} | {} |\n",
            l.rate,
            l.gateway.latency.p50,
            l.direct.latency.p50,
            l.gateway.latency.p99,
            l.direct.latency.p99,
            l.gateway.errors + l.gateway.unsent,
            if l.passed { "ok" } else { "failed" }
        ));
    }
    s.push_str(&format!(
        "\nRecovery, right after the ramp, at the first rate: p50 {}, p99 {}, {:.2}% failed or unsent.\n",
        ms(r.recovery.latency.p50),
        ms(r.recovery.latency.p99),
        r.recovery.failed_share() * 100.0
    ));
    s
}

fn charts(dir: &Path, r: &SuiteResult) -> Result<()> {
    let by_clients = |f: &dyn Fn(&crate::suite::Level) -> f64| -> Vec<(f64, f64)> {
        r.concurrency.iter().map(|l| (l.clients as f64, f(l))).collect()
    };
    series_png(
        &dir.join("concurrency.png"),
        "Throughput by concurrency (closed loop)",
        "clients",
        "answers per second",
        &[
            ("via qroute".into(), by_clients(&|l| l.gateway.rps())),
            ("direct".into(), by_clients(&|l| l.direct.rps())),
        ],
    )?;
    series_png(
        &dir.join("latency.png"),
        "Latency by concurrency (closed loop)",
        "clients",
        "ms",
        &[
            ("p50 via qroute".into(), by_clients(&|l| l.gateway.latency.p50)),
            ("p99 via qroute".into(), by_clients(&|l| l.gateway.latency.p99)),
            ("p99 direct".into(), by_clients(&|l| l.direct.latency.p99)),
        ],
    )?;
    let by_rate = |f: &dyn Fn(&crate::suite::StressLevel) -> f64| -> Vec<(f64, f64)> {
        r.stress.iter().map(|l| (l.rate, f(l))).collect()
    };
    series_png(
        &dir.join("stress.png"),
        "Added latency under open-loop load",
        "requests per second",
        "ms added (via qroute − direct)",
        &[
            ("p50".into(), by_rate(&|l| l.gateway.latency.p50 - l.direct.latency.p50)),
            ("p99".into(), by_rate(&|l| l.gateway.latency.p99 - l.direct.latency.p99)),
        ],
    )
}
