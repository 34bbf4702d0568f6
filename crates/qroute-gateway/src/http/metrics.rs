//! Prometheus metrics and the per-request timing every response carries.
//!
//! The `metrics` facade is process-global, so the exporter is installed once
//! per process (several gateways in one test process share it).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `qroute_requests_total` | counter | endpoint, status |
//! | `qroute_request_duration_seconds` | histogram | endpoint |
//! | `qroute_overhead_seconds` | histogram | — (gateway time minus upstream time) |
//! | `qroute_upstream_duration_seconds` | histogram | model |
//! | `qroute_choices_total` | counter | model |
//! | `qroute_cost_usd_total` | gauge (only grows) | model |
//! | `qroute_retries_total`, `qroute_upstream_errors_total`, `qroute_breaker_opened_total` | counter | model |
//! | `qroute_fallbacks_total`, `qroute_outcomes_recorded_total` | counter | — |
//! | `qroute_policy_version`, `qroute_trainer_steps` | gauge | — |

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::Gateway;

/// Histogram buckets in seconds: 50 µs to 60 s, dense below a millisecond
/// where the gateway's own overhead lives.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// The process's exporter, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics will stay empty");
        }
        handle
    })
}

/// `GET /metrics`.
pub async fn render(State(gw): State<Arc<Gateway>>) -> Response {
    metrics::gauge!("qroute_policy_version").set(gw.policy().version as f64);
    metrics::gauge!("qroute_trainer_steps").set(gw.trainer_steps() as f64);
    ([("content-type", "text/plain; version=0.0.4")], handle().render()).into_response()
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
