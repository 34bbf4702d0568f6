//! Errors as HTTP answers: every failure is a JSON body
//! `{"error": {"type": …, "message": …}}` with the status the error knows,
//! including the ones axum's extractors produce (bad JSON, a wrong type, an
//! over-large body, a body that is not JSON or arrives too slowly), so a
//! client never sees a bare-text error or a panic.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::json;

use qroute_core::Error;

use super::edge::body_timeout_in;

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
        // A 500 is our own failure: its detail (a file path, a store's
        // message) goes to the log, and the caller gets the kind and the
        // request id to quote. Every other status says what the caller can
        // act on.
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        }
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            INTERNAL_MESSAGE.to_string()
        } else {
            self.0.to_string()
        };
        let mut r = error_response(status, self.0.kind(), &message);
        if let Some(ms) = self.0.retry_after_ms() {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(ms.div_ceil(1000).max(1)));
        }
        r
    }
}

/// What a 500 says instead of its detail.
pub const INTERNAL_MESSAGE: &str =
    "the gateway failed internally; its log has the detail under this response's x-request-id";

/// The JSON error body every endpoint answers with.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    // `code` is a string, as OpenAI sends it (typed SDKs reject a number).
    let body = json!({"error": {"type": kind, "message": message, "code": kind}});
    (status, Json(body)).into_response()
}

/// A JSON request body whose every failure is a JSON error: a syntax
/// error or a wrong type is a 400 naming the field, line and column, a body
/// over the limit a 413, and one that does not arrive within
/// `[server] body_read_timeout_ms` a 408.
///
/// The content type must be JSON (`application/json`, with or without
/// parameters, or a `+json` type), else 415: a web page can send
/// `text/plain` or a form to any address without the browser asking first,
/// but not `application/json`, so this is what keeps other sites from
/// spending money or steering learning through a user's browser.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(unsupported_media_type(req.headers().get(CONTENT_TYPE)));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if let Some(timeout) = body_timeout_in(&r) {
                return error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout", &timeout.to_string());
            }
            ApiError(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(r.body_text())
            } else {
                Error::InvalidInput(format!("reading the request body: {}", r.body_text()))
            })
            .into_response()
        })?;
        parse_json(&bytes).map(ApiJson).map_err(|e| ApiError(e).into_response())
    }
}

/// Whether a `Content-Type` announces JSON: `application/json` or
/// `application/…+json`, any parameters (`; charset=utf-8`) ignored.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or(value).trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || (subtype.len() > 5 && subtype.ends_with("+json")))
}

fn unsupported_media_type(got: Option<&HeaderValue>) -> Response {
    let mut message = "the request body must be JSON: send `content-type: application/json`".to_string();
    match got {
        Some(v) => {
            let got: String = String::from_utf8_lossy(v.as_bytes()).chars().take(100).collect();
            message.push_str(&format!(" (got {got:?})"));
        }
        None => message.push_str(" (no content type was sent)"),
    }
    error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", &message)
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

/// Parses a request body, naming where it went wrong. The body must be one
/// JSON value: anything but whitespace after it is refused, as
/// `serde_json::from_slice` would.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let not_json = |e: serde_json::Error| Error::InvalidInput(format!("request body is not valid JSON: {e}"));
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof => not_json(inner),
            Category::Data | Category::Io if path == "." => Error::InvalidInput(format!("request body: {inner}")),
            Category::Data | Category::Io => Error::InvalidInput(format!("request body: field `{path}`: {inner}")),
        }
    })?;
    de.end().map_err(not_json)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: Error) -> (StatusCode, serde_json::Value) {
        let r = ApiError(e).into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_internal_error_keeps_its_detail_out_of_the_body() {
        let (status, body) = body_of(Error::Store("/var/lib/qroute/secret.db: disk full".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["type"], "store_error");
        assert_eq!(body["error"]["message"], INTERNAL_MESSAGE);
        // The caller's own mistakes are still explained.
        let (status, body) = body_of(Error::InvalidInput("field `model`: unknown".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].as_str().unwrap().contains("`model`"));
    }

    #[test]
    fn a_body_is_one_json_value() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[allow(dead_code)]
            n: u32,
        }
        assert!(parse_json::<Body>(b" {\"n\": 1}\n ").is_ok());
        let err = parse_json::<Body>(b"{\"n\": 1} {\"n\": 2}").unwrap_err().to_string();
        assert!(err.contains("not valid JSON") && err.contains("trailing"), "{err}");
        let err = parse_json::<Body>(b"{\"n\": -1}").unwrap_err().to_string();
        assert!(err.contains("field `n`"), "{err}");
    }

    #[test]
    fn json_content_types() {
        let check = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            is_json_content_type(&h)
        };
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            assert!(check(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("text/json"),
            Some("application/+json"),
            Some("application/jsonp"),
            Some(""),
        ] {
            assert!(!check(bad), "{bad:?}");
        }
    }
}
