//! The door: which scope each path needs, the middleware that checks the
//! caller's key against it, and the answers for callers that are not let
//! in (401, 403, 429 with `Retry-After`).
//!
//! | scope | paths |
//! |---|---|
//! | public | `GET /v1/health`, `POST /v1/auth/login`, `GET /openapi.json`, `/ui…` |
//! | admin | `/v1/experiments…`, `/v1/shadow`, `/v1/keys…`, `/v1/admin/…` |
//! | key | everything else (`/metrics` is public with `server.metrics_public`) |

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::errors::{error_response, ApiError, ApiJson};
use crate::access::limits::RateHeaders;
use crate::access::{Denied, Principal, Scope};
use crate::engine::{Gateway, RouteRequest, Routed, Streaming};
use qroute_core::{unix_ms, Error};
use std::time::Instant;

/// The scope `method path` needs.
pub fn scope(method: &Method, path: &str, metrics_public: bool) -> Scope {
    // On every request: no allocation.
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match (method, path) {
        (&Method::GET, "/v1/health" | "/openapi.json") | (&Method::POST, "/v1/auth/login") => Scope::Public,
        _ if under("/ui") => Scope::Public,
        (&Method::GET, "/metrics") if metrics_public => Scope::Public,
        _ if under("/v1/experiments")
            || under("/v1/shadow")
            || under("/v1/keys")
            || under("/v1/admin")
            || under("/v1/stats") =>
        {
            Scope::Admin
        }
        _ => Scope::Key,
    }
}

/// The credential a request carries: `Authorization: Bearer X`, or
/// `x-api-key: X` as Anthropic's clients send it.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("authorization")
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
        })
        .or_else(|| header("x-api-key"))
}

/// Checks the caller against the path's scope and hands the handler a
/// [`Principal`] (as a request extension).
pub async fn authenticate(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let needs = scope(req.method(), req.uri().path(), gw.config.server.metrics_public);
    let who = match gw.access.authenticate(credential(req.headers()), unix_ms()) {
        Ok(p) => p,
        Err(_) if needs == Scope::Public => Principal::Open,
        Err(d) => return denied(d),
    };
    if needs == Scope::Admin && !who.is_admin() {
        return denied(Denied::Forbidden("this endpoint needs an admin key".into()));
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The answer for a caller who is not let in.
pub fn denied(d: Denied) -> Response {
    match d {
        Denied::Unauthenticated(m) => {
            let mut r = error_response(StatusCode::UNAUTHORIZED, "unauthorized", m);
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            r
        }
        Denied::Forbidden(m) => error_response(StatusCode::FORBIDDEN, "forbidden", &m),
        Denied::RateLimited(l) => {
            let message = format!(
                "rate limit on {} reached; retry in {:.1}s",
                l.which,
                l.retry_after.as_secs_f64()
            );
            let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message);
            with_rate_headers(&mut r, &l.headers);
            let secs = l.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert("retry-after", HeaderValue::from(secs));
            r
        }
        Denied::Budget {
            limit_usd,
            resets_at_ms,
        } => {
            let reset = resets_at_ms.map_or("never (a total budget)".to_string(), |ms| format!("at {ms} (Unix ms)"));
            let message = format!("budget of ${limit_usd} for this period is spent; it resets {reset}");
            let body = json!({"error": {
                "type": "budget_exceeded",
                "code": "budget_exceeded",
                "message": message,
                "budget_usd": limit_usd,
                "resets_at_ms": resets_at_ms,
            }});
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            if let Some(ms) = resets_at_ms {
                let secs = ms.saturating_sub(unix_ms()).div_ceil(1000).max(1);
                r.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            r
        }
    }
}

/// Adds `x-ratelimit-*` headers to an answer.
pub fn with_rate_headers(r: &mut Response, headers: &RateHeaders) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
}

/// Why a routing request got no answer from a model.
pub enum Refusal {
    /// Not let in: model list, rate or budget.
    Denied(Denied),
    /// Let in, and routing failed.
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Failed(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Denied(d) => denied(d),
            Refusal::Failed(e) => ApiError(e).into_response(),
        }
    }
}

/// Lets `req` in for `who`, the one way every routing endpoint does it:
/// every model the request names must be on the key's list (403), a
/// request that names none is narrowed to that list, and the key's rates
/// and budget must allow it (429). The request goes on with the key
/// recorded beside its answer (so only that key may send feedback on it),
/// with the `x-ratelimit-*` headers to send back.
async fn admit(gw: &Gateway, who: &Principal, mut req: RouteRequest) -> Result<(RouteRequest, RateHeaders), Refusal> {
    req.key = who.id().map(String::from);
    let mut rate = RateHeaders::new();
    if let Principal::Key(key) = who {
        let named: Vec<&str> = req
            .pinned
            .iter()
            .chain(req.preference.models.iter().flatten())
            .map(String::as_str)
            .collect();
        // Counted against `tpm` before the upstream has said.
        let tokens = req.chat.estimated_prompt_tokens().clamp(1, u32::MAX as u64) as u32;
        rate = gw
            .access
            .admit(who, &named, tokens, unix_ms())
            .await
            .map_err(Refusal::Denied)?;
        if named.is_empty() {
            req.preference.models.clone_from(&key.models);
        }
    }
    Ok((req, rate))
}

/// Routes `req` for `who` (see [`admit`]) and charges its cost to the key.
pub async fn route_as(
    gw: &Gateway,
    who: &Principal,
    req: RouteRequest,
    received: Instant,
) -> Result<(Routed, RateHeaders), Refusal> {
    let (req, rate) = admit(gw, who, req).await?;
    let routed = gw.route(req, received).await?;
    gw.access.charge(who, routed.cost_usd, unix_ms());
    Ok((routed, rate))
}

/// [`route_as`] for a streamed answer: the cost is known, and charged,
/// when the stream ends (or the client leaves).
pub async fn stream_as(
    gw: &Arc<Gateway>,
    who: &Principal,
    req: RouteRequest,
    received: Instant,
) -> Result<(Streaming, RateHeaders), Refusal> {
    let (req, rate) = admit(gw, who, req).await?;
    let mut streaming = gw.route_stream(req, received).await?;
    if let Some(cost) = streaming.cost.take() {
        let (gw, who) = (gw.clone(), who.clone());
        tokio::spawn(async move {
            if let Ok(usd) = cost.await {
                gw.access.charge(&who, usd, unix_ms());
            }
        });
    }
    Ok((streaming, rate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Login {
    api_key: String,
}
qroute_core::objects_only!(Login);

/// `POST /v1/auth/login` (public): a short-lived bearer token for a key.
pub async fn login(State(gw): State<Arc<Gateway>>, ApiJson(body): ApiJson<Login>) -> Response {
    match gw.access.login(&body.api_key, unix_ms()) {
        Ok((token, expires_in)) => Json(json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in,
        }))
        .into_response(),
        Err(d) => denied(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        let get = Method::GET;
        let post = Method::POST;
        for (m, p, s) in [
            (&get, "/v1/health", Scope::Public),
            (&post, "/v1/auth/login", Scope::Public),
            (&get, "/openapi.json", Scope::Public),
            (&get, "/ui/index.html", Scope::Public),
            (&get, "/uix", Scope::Key),
            (&post, "/v1/health", Scope::Key),
            (&post, "/v1/execute", Scope::Key),
            (&post, "/v1/feedback", Scope::Key),
            (&get, "/metrics", Scope::Key),
            (&get, "/v1/experiments", Scope::Admin),
            (&post, "/v1/experiments/x/stop", Scope::Admin),
            (&get, "/v1/keys/key_1", Scope::Admin),
            (&get, "/v1/admin/experiences", Scope::Admin),
            (&get, "/v1/shadow", Scope::Admin),
            (&get, "/v1/stats", Scope::Admin),
            (&get, "/v1/auth/me", Scope::Key),
        ] {
            assert_eq!(scope(m, p, false), s, "{m} {p}");
        }
        assert_eq!(scope(&get, "/metrics", true), Scope::Public);
    }
}
