//! Errors as HTTP answers: every failure is a JSON body
//! `{"error": {"type": …, "message": …}}` with the status the error knows,
//! including the ones axum's extractors produce (bad JSON, a wrong type, an
//! over-large body), so a client never sees a bare-text error or a panic.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::json;

use qroute_core::Error;

/// An [`Error`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        }
        error_response(status, self.0.kind(), &self.0.to_string())
    }
}

/// The JSON error body every endpoint answers with.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    // `code` is a string, as OpenAI sends it (typed SDKs reject a number).
    let body = json!({"error": {"type": kind, "message": message, "code": kind}});
    (status, Json(body)).into_response()
}

/// A JSON request body whose every failure is an [`ApiError`]: a syntax
/// error or a wrong type is a 400 naming the field, line and column, and a
/// body over the limit a 413. Any content type is accepted, so that a bare
/// `curl -d '{…}'` works.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            ApiError(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(r.body_text())
            } else {
                Error::InvalidInput(format!("reading the request body: {}", r.body_text()))
            })
        })?;
        parse_json(&bytes).map(ApiJson).map_err(ApiError)
    }
}

/// A query string whose every failure is a JSON 400 naming the parameter
/// (axum's own `Query` answers in plain text).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|r| ApiError(Error::InvalidInput(r.body_text())))
    }
}

/// Path parameters whose every failure is a JSON 400 naming the parameter
/// (axum's own `Path` answers in plain text).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|r| ApiError(Error::InvalidInput(r.body_text())))
    }
}

/// Parses a request body, naming where it went wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof => Error::InvalidInput(format!("request body is not valid JSON: {inner}")),
            Category::Data | Category::Io if path == "." => Error::InvalidInput(format!("request body: {inner}")),
            Category::Data | Category::Io => Error::InvalidInput(format!("request body: field `{path}`: {inner}")),
        }
    })
}
