//! One error type for the whole engine. Each variant knows the HTTP status it
//! maps to, so the server layer never has to guess.

use std::path::PathBuf;

/// Every failure qroute can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset line that does not fit the JSONL schema: names the file, the
    /// 1-based line number and the offending field.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Dataset {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    /// Bad input from a caller (a request, a CLI flag, a config value).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A policy checkpoint that cannot be read or does not match its metadata.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Something was looked up by id and is not there.
    #[error("not found: {0}")]
    NotFound(String),
    /// The experience store failed (its backend, or encoding).
    #[error("store: {0}")]
    Store(String),
    /// A config file that cannot be used: names the file and, where the
    /// parser knows them, the line and the field.
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The request conflicts with the current state (an id that exists, an
    /// experiment that would overlap a running one).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request body over the configured limit.
    #[error("request body too large: {0}")]
    PayloadTooLarge(String),
    /// Every upstream attempt failed; carries the last upstream error.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The upstream refused the request as the client sent it (a 400 or
    /// 422 of its own): relayed with that status, since trying again
    /// cannot help and the client can fix it.
    #[error("the model refused the request: {message}")]
    Rejected { status: u16, message: String },
    /// The request's deadline passed before any upstream answered.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No candidate can take the request right now (every circuit breaker is
    /// open), or a dependency such as the store refused the write.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Unavailable for a known while: every allowed model's breaker is open
    /// and the first probe is allowed in `retry_after_ms`.
    #[error("unavailable: {message}")]
    RetryLater { message: String, retry_after_ms: u64 },
    #[error("io: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Dataset { .. } | Error::InvalidInput(_) => 400,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::Upstream(_) => 502,
            Error::Rejected { status, .. } => *status,
            Error::Unavailable(_) | Error::RetryLater { .. } => 503,
            Error::Timeout(_) => 504,
            Error::Checkpoint { .. } | Error::Store(_) | Error::Io { .. } | Error::Config { .. } => 500,
        }
    }

    /// A short machine-readable name for the `type` field of JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Dataset { .. } => "invalid_dataset",
            Error::InvalidInput(_) => "invalid_request",
            Error::Checkpoint { .. } => "checkpoint_error",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Store(_) => "store_error",
            Error::Io { .. } => "io_error",
            Error::Config { .. } => "config_error",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::Upstream(_) => "upstream_error",
            Error::Rejected { .. } => "invalid_request",
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) | Error::RetryLater { .. } => "unavailable",
        }
    }

    /// How long the caller should wait before retrying, when that is known
    /// (the `Retry-After` of a 503).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::RetryLater { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
