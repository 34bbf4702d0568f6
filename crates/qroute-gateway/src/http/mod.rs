//! The HTTP layer: axum routes over the [`Gateway`]. Handlers only
//! translate between HTTP and the engine; the engine does the work.

pub mod admin;
pub mod auth;
pub mod chat_request;
pub mod edge;
pub mod errors;
pub mod execute;
pub mod experiments;
pub mod feedback;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod openai;
pub mod stats;
pub mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::engine::Gateway;

use errors::error_response;

/// Every path served (`{id}` stands for one path segment): listed by
/// `/v1/capabilities`, and the only values of the `endpoint` metric label
/// (anything else is `other`, so unknown paths cannot grow the label set).
pub const ENDPOINTS: &[&str] = &[
    "/v1/execute",
    "/v1/chat/completions",
    "/v1/feedback",
    "/v1/models",
    "/v1/health",
    "/v1/capabilities",
    "/v1/experiments",
    "/v1/experiments/{id}",
    "/v1/experiments/{id}/stop",
    "/v1/shadow",
    "/v1/auth/login",
    "/v1/auth/me",
    "/v1/stats",
    "/v1/keys",
    "/v1/keys/{id}",
    "/v1/admin/experiences",
    "/v1/admin/experiences/sample",
    "/v1/admin/policies",
    "/v1/admin/policies/{version}",
    "/v1/admin/policies/{version}/files/{file}",
    "/v1/admin/policies/{version}/rollback",
    "/metrics",
    "/openapi.json",
    "/ui",
    "/ui/{asset}",
];

/// The OpenAPI description of every endpoint, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// All routes, with the body limit, metrics, `X-Process-Time`,
/// `X-Request-Id`, JSON 404/405 answers and a panic guard that turns a bug
/// into a JSON 500.
pub fn router(gw: Arc<Gateway>) -> Router {
    metrics::handle();
    let body_limit = gw.config.limits.body_bytes;
    Router::new()
        .route("/v1/execute", post(execute::execute))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/feedback", post(feedback::feedback))
        .route("/v1/models", get(openai::models))
        .route("/v1/health", get(health::health))
        .route("/v1/capabilities", get(health::capabilities))
        .route("/v1/experiments", get(experiments::list).post(experiments::create))
        .route("/v1/experiments/{id}", get(experiments::show))
        .route("/v1/experiments/{id}/stop", post(experiments::stop))
        .route("/v1/shadow", get(experiments::shadow))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/me", get(stats::me))
        .route("/v1/stats", get(stats::stats))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{id}", get(keys::show).delete(keys::revoke))
        .route("/v1/admin/experiences", get(admin::experiences))
        .route("/v1/admin/experiences/sample", get(admin::sample))
        .route("/v1/admin/policies", get(admin::policies))
        .route("/v1/admin/policies/{version}", get(admin::policy))
        .route("/v1/admin/policies/{version}/files/{file}", get(admin::policy_file))
        .route("/v1/admin/policies/{version}/rollback", post(admin::rollback))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi))
        // The web console (http/ui.rs): embedded files, public shell.
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/{asset}", get(ui::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(gw.clone(), auth::authenticate))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
        }))
        .layer(axum::middleware::from_fn(metrics::track))
        // Host/Origin checks and CORS (http/edge.rs): keep this outside
        // authentication, so preflights are answered before it.
        .layer(edge::layer(&gw.config.server))
        // Outside even the edge, so its refusals (421, 403) and CORS
        // preflights carry an `X-Request-Id` too.
        .layer(axum::middleware::from_fn(metrics::request_id))
        .with_state(gw)
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint; see /openapi.json",
    )
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
/// Connection timeouts and the connection limit are `[server]`'s (see
/// [`edge::serve`]).
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = gw.config.server.clone();
    edge::serve(listener, router(gw), &server, shutdown).await
}

/// The [`ENDPOINTS`] entry `path` matches, where `{…}` matches any one segment.
pub fn endpoint_of(path: &str) -> Option<&'static str> {
    ENDPOINTS.iter().copied().find(|template| {
        let mut want = template.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                _ => return false,
            }
        }
    })
}
