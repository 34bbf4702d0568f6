//! Prometheus metrics, request ids, and the per-request timing every
//! response carries.
//!
//! The `metrics` facade is process-global, so the exporter is installed once
//! per process (several gateways in one test process share it). Every family
//! is described there too, so each carries `# HELP` and `# TYPE` from its
//! first sample on (a family appears with its first sample).
//!
//! The engine and the executors emit through the `metrics` facade macros by
//! name (they come before `http` in the flow, see ci/check_layers.py, so
//! they cannot call in here); this module only installs the exporter,
//! describes, renders, and reads engine state at scrape time.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `qroute_requests_total` | counter | endpoint, status |
//! | `qroute_request_duration_seconds` | histogram | endpoint |
//! | `qroute_overhead_seconds` | histogram | — (gateway time minus upstream time) |
//! | `qroute_upstream_duration_seconds` | histogram | model |
//! | `qroute_time_to_first_token_seconds` | histogram | model (streamed answers) |
//! | `qroute_choices_total` | counter | model |
//! | `qroute_cost_usd_total` | counter, fractional (kept beside the exporter, see `WithFloatTotals`) | model |
//! | `qroute_input_tokens_total`, `qroute_output_tokens_total` | counter | model |
//! | `qroute_retries_total`, `qroute_upstream_errors_total`, `qroute_breaker_opened_total` | counter | model |
//! | `qroute_breaker_state` | gauge: 0 closed, 1 half-open, 2 open | model |
//! | `qroute_cache_requests_total` | counter | result (`hit`, `miss`) |
//! | `qroute_cascades_total` | counter | escalated (`true`: a further model was called) |
//! | `qroute_fallbacks_total`, `qroute_outcomes_recorded_total`, `qroute_experiences_pruned_total` | counter | — |
//! | `qroute_shadow_decisions_total` | counter | agree |
//! | `qroute_stream_disconnects_total` | counter | — |
//! | `qroute_trainer_steps_total` | counter | — |
//! | `qroute_policy_version` | gauge | — |
//! | `qroute_redis_fallbacks_total` | counter | op (`rate_limit`, `spend_read`, `spend_add`, `spend_seed`, `cache_get`, `cache_put`): calls that went without Redis |
//! | `qroute_key_reloads_total` | counter | — (key documents reloaded on an unknown key) |
//!
//! Every response also carries `X-Request-Id` ([`request_id`]) and
//! `X-Process-Time` ([`track`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{
    sanitize_label_key, sanitize_label_value, write_help_line, write_type_line,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing::Instrument;

use crate::engine::Gateway;
use crate::exec::resilience::BreakerState;

/// Histogram buckets in seconds: 50 µs to 60 s, dense below a millisecond
/// where the gateway's own overhead lives.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// How often the exporter's histogram samples are folded into its buckets
/// without a scrape (what `PrometheusBuilder::install` would schedule).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Upkeep passes run so far (tests wait for one).
static UPKEEPS: AtomicU64 = AtomicU64::new(0);

/// The process's exporter and its float totals, installed (and every
/// family described) on first use.
struct Exporter {
    prometheus: PrometheusHandle,
    totals: Arc<FloatTotals>,
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let prometheus = builder.build_recorder();
        let exporter = Exporter {
            prometheus: prometheus.handle(),
            totals: Arc::new(FloatTotals::default()),
        };
        let recorder = WithFloatTotals {
            prometheus,
            totals: exporter.totals.clone(),
        };
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics will stay empty");
        }
        describe();
        spawn_upkeep(exporter.prometheus.clone());
        exporter
    })
}

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`]. The
/// exporter keeps every recorded sample until a scrape (or an upkeep) drains
/// it, so a gateway nobody scrapes grew by each request's three histogram
/// samples: about 40 bytes per request, the largest growing item in a
/// heap profile of a 1,000 req/s run after the store.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("qroute-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
            UPKEEPS.fetch_add(1, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started: histogram samples are drained only by scrapes");
    }
}

/// The process's Prometheus exporter, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    &exporter().prometheus
}

/// The whole exposition text: the exporter's families, then the float
/// totals.
pub fn render_text() -> String {
    let exporter = exporter();
    let mut text = exporter.prometheus.render();
    exporter.totals.render(&mut text);
    text
}

/// The `# HELP` text of every family the exporter renders. Descriptions go
/// to the global recorder, so this runs once, after it is installed. A
/// family emitted anywhere in the crate must be described here, or it is
/// rendered without `# HELP` (the integration tests check).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "qroute_requests_total",
        "HTTP requests answered, by endpoint and status code."
    );
    describe_histogram!(
        "qroute_request_duration_seconds",
        "Time from receiving a request to its response head, by endpoint."
    );
    describe_histogram!(
        "qroute_overhead_seconds",
        "The gateway's own share of a routed request: its duration minus the time spent waiting on upstreams."
    );
    describe_histogram!(
        "qroute_upstream_duration_seconds",
        "Time spent calling one model for one request, retries included, by model."
    );
    describe_histogram!(
        "qroute_time_to_first_token_seconds",
        "Time from receiving a streamed request to its first content token, by model."
    );
    describe_counter!("qroute_choices_total", "Times the policy chose a model, by model.");
    describe_counter!(
        "qroute_redis_fallbacks_total",
        "Redis calls skipped, failed or timed out: the replica went on with its own limits, spend or a cache miss, by op."
    );
    describe_counter!(
        "qroute_key_reloads_total",
        "Reloads of the key documents on an unknown key (a key made on another replica)."
    );
    describe_counter!(
        "qroute_cascades_total",
        "Requests run as cascades, by whether a further model was called."
    );
    describe_gauge!(
        "qroute_cost_usd_total",
        "Priced cost of model answers in US dollars, by model."
    );
    describe_counter!(
        "qroute_input_tokens_total",
        "Prompt tokens billed by upstreams, by model."
    );
    describe_counter!(
        "qroute_output_tokens_total",
        "Completion tokens billed by upstreams, by model."
    );
    describe_counter!(
        "qroute_retries_total",
        "Upstream calls repeated after a retryable failure, by model."
    );
    describe_counter!(
        "qroute_upstream_errors_total",
        "Model calls that failed after their retries, by model."
    );
    describe_counter!(
        "qroute_breaker_opened_total",
        "Times a model's circuit breaker opened, by model."
    );
    describe_gauge!(
        "qroute_breaker_state",
        "A model's circuit breaker at the last scrape: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "qroute_cache_requests_total",
        "Response-cache look-ups, by result (hit or miss)."
    );
    describe_counter!(
        "qroute_fallbacks_total",
        "Requests passed to a fallback model after the chosen one failed."
    );
    describe_counter!(
        "qroute_outcomes_recorded_total",
        "Outcomes written to the experience store."
    );
    describe_counter!(
        "qroute_experiences_pruned_total",
        "Experiences removed from the store by retention."
    );
    describe_counter!(
        "qroute_shadow_decisions_total",
        "Requests the shadow policy scored, by whether it agreed with the serving policy."
    );
    describe_counter!(
        "qroute_stream_disconnects_total",
        "Streamed answers the client hung up on before they finished."
    );
    describe_counter!(
        "qroute_trainer_steps_total",
        "Online training steps taken by this process."
    );
    describe_gauge!("qroute_policy_version", "The version of the policy serving requests.");
}

/// `qroute_breaker_state`'s value: larger is worse, so `max by (model)`
/// and alerts on `> 0` read naturally.
fn breaker_code(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    }
}

/// `GET /metrics`. Values that live in the engine rather than in the
/// exporter (policy version, trainer steps, breaker states) are read now,
/// so a scrape always sees them current.
pub async fn render(State(gw): State<Arc<Gateway>>) -> Response {
    metrics::gauge!("qroute_policy_version").set(gw.policy().version as f64);
    metrics::counter!("qroute_trainer_steps_total").absolute(gw.trainer_steps());
    for (model, state) in gw.breaker_states() {
        metrics::gauge!("qroute_breaker_state", "model" => model.to_string()).set(breaker_code(state));
    }
    ([("content-type", "text/plain; version=0.0.4")], render_text()).into_response()
}

/// The exporter, plus counters of fractional amounts. The facade's
/// counters count whole numbers, and rounding each request's cost (often a
/// few millionths of a dollar) would lose most of it, so a *gauge* whose
/// name ends in `_total` is kept here instead as a float counter: only its
/// positive, finite increments count, and it is rendered with `# TYPE …
/// counter`. Code that cannot import this module (`engine`, `exec`: see
/// ci/check_layers.py) reaches it through the facade alone:
/// `metrics::gauge!("qroute_cost_usd_total", "model" => id).increment(usd)`.
struct WithFloatTotals {
    prometheus: PrometheusRecorder,
    totals: Arc<FloatTotals>,
}

/// Whether a gauge name is one of the float counters.
fn is_float_total(name: &str) -> bool {
    name.ends_with("_total")
}

impl Recorder for WithFloatTotals {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if is_float_total(key.as_str()) {
            lock(&self.totals.help).insert(key.as_str().to_string(), description);
        } else {
            self.prometheus.describe_gauge(key, unit, description);
        }
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if !is_float_total(key.name()) {
            return self.prometheus.register_gauge(key, metadata);
        }
        let mut series = lock(&self.totals.series);
        let total = match series.get(key) {
            Some(total) => total.clone(),
            None => series.entry(key.clone()).or_default().clone(),
        };
        Gauge::from_arc(total)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.prometheus.register_histogram(key, metadata)
    }
}

/// The float counters' series (ordered by name, then labels, so each
/// family renders as one block) and their `# HELP` texts.
#[derive(Default)]
struct FloatTotals {
    series: Mutex<BTreeMap<Key, Arc<FloatTotal>>>,
    help: Mutex<BTreeMap<String, SharedString>>,
}

impl FloatTotals {
    /// Appends every family in the exposition format, as the exporter
    /// writes its own (a blank line after each).
    fn render(&self, out: &mut String) {
        let series = lock(&self.series);
        let help = lock(&self.help);
        let mut family: Option<&str> = None;
        for (key, total) in series.iter() {
            let name = key.name();
            if family != Some(name) {
                if family.is_some() {
                    out.push('\n');
                }
                family = Some(name);
                if let Some(text) = help.get(name) {
                    write_help_line(out, name, None, None, text);
                }
                write_type_line(out, name, None, None, "counter");
            }
            out.push_str(name);
            let mut labels = key.labels().peekable();
            if labels.peek().is_some() {
                out.push('{');
                for (i, label) in labels.enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{}=\"{}\"",
                        sanitize_label_key(label.key()),
                        sanitize_label_value(label.value())
                    );
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", total.get());
        }
        if family.is_some() {
            out.push('\n');
        }
    }
}

/// One float counter's value, as f64 bits.
#[derive(Default)]
struct FloatTotal(AtomicU64);

impl FloatTotal {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl GaugeFn for FloatTotal {
    fn increment(&self, value: f64) {
        // A counter never falls: a negative or non-finite amount (a
        // provider's odd reported cost) is dropped rather than poisoning
        // the sum.
        if !(value.is_finite() && value > 0.0) {
            return;
        }
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn decrement(&self, _: f64) {}

    fn set(&self, _: f64) {}
}

/// A lock that outlives a panic elsewhere: the data under it (sums, texts)
/// stays consistent whatever panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request id header, read from clients and set on every response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent request id echoed back.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// This request's id (a request extension): the client's `X-Request-Id`
/// when valid, else one made here.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ever built from visible ASCII, so this never falls back.
        self.0.to_str().unwrap_or_default()
    }
}

/// Whether a client's `X-Request-Id` is echoed: 1 to 128 visible ASCII
/// characters. Anything else (control bytes, non-ASCII, spaces, or a
/// kilobyte of text) would end up verbatim in logs and in the answer, so it
/// is replaced rather than trusted.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits in hex, as the gateway's decision ids are.
fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>())).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Middleware (outermost): gives every request an id, echoes it in
/// `X-Request-Id` on every answer (errors, 404s and the edge's refusals
/// included), and runs the request in a `request` span carrying it, so
/// every log line a request causes can be joined to what the client saw.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
        _ => new_request_id(),
    };
    // Handlers read the id the client will see, valid or replaced.
    req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
    let request_id = RequestId(id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id.as_str(),
        method = %req.method(),
        path = %req.uri().path(),
    );
    req.extensions_mut().insert(request_id);
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// When the request reached the service (a request extension), so the
/// gateway's timings include reading and parsing the body.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

impl Received {
    /// The instant from the extension, or now when there is none.
    pub fn instant(r: Option<axum::Extension<Received>>) -> Instant {
        r.map_or_else(Instant::now, |e| e.0 .0)
    }
}

/// Time a response spent waiting on upstreams (a response extension), so
/// the middleware can tell the gateway's own share apart.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime(pub Duration);

/// Middleware: counts and times every request, sets `X-Process-Time`
/// (seconds, as FastAPI-style gateways do), and records the overhead: the
/// time to the response minus the time spent waiting on upstreams.
pub async fn track(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    req.extensions_mut().insert(Received(start));
    let path = req.uri().path();
    let endpoint = super::endpoint_of(path).unwrap_or("other");
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed();
    if let Some(UpstreamTime(upstream)) = resp.extensions().get::<UpstreamTime>() {
        metrics::histogram!("qroute_overhead_seconds").record(elapsed.saturating_sub(*upstream).as_secs_f64());
    }
    let secs = elapsed.as_secs_f64();
    if let Ok(v) = HeaderValue::from_str(&format!("{secs:.6}")) {
        resp.headers_mut().insert("x-process-time", v);
    }
    let status = resp.status().as_u16().to_string();
    metrics::counter!("qroute_requests_total", "endpoint" => endpoint, "status" => status).increment(1);
    metrics::histogram!("qroute_request_duration_seconds", "endpoint" => endpoint).record(secs);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples nobody scrapes are folded by the upkeep thread, and none is
    /// lost: the scrape after it counts every one.
    #[test]
    fn unscraped_histogram_samples_are_folded_and_still_counted() {
        let before = {
            handle();
            UPKEEPS.load(Ordering::Relaxed)
        };
        for _ in 0..1_000 {
            metrics::histogram!("qroute_overhead_seconds", "endpoint" => "upkeep-test").record(0.001);
        }
        let waited = Instant::now();
        while UPKEEPS.load(Ordering::Relaxed) < before + 2 {
            assert!(waited.elapsed() < UPKEEP_EVERY * 10, "the upkeep thread never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = render_text();
        assert!(
            text.contains(r#"qroute_overhead_seconds_count{endpoint="upkeep-test"} 1000"#),
            "{text}"
        );
    }
}
