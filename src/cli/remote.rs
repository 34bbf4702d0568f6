//! Talking to a running gateway's admin endpoints (`--url`), for commands
//! that would otherwise need its store or registry, which sled keeps to the
//! serving process. Sends `Authorization: Bearer $QROUTE_API_KEY` when that
//! variable is set.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngCore;
use serde::de::DeserializeOwned;

use qroute_core::record::{Answered, DecisionRecord, Experience, Feedback, FeedbackRecord, Outcome};
use qroute_core::store::{ExperienceStore, Pruned, Retention, Sampling};
use qroute_core::{Error, Result};

/// A gateway's base URL, with a runtime to call it from synchronous code.
#[derive(Clone)]
pub struct Remote {
    base: String,
    client: reqwest::Client,
    key: Option<String>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Remote {
    pub fn new(url: &str) -> anyhow::Result<Remote> {
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            key: std::env::var("QROUTE_API_KEY").ok().filter(|k| !k.is_empty()),
            runtime: Arc::new(super::runtime()?),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Sends, and turns a non-2xx answer into an error carrying the
    /// gateway's message.
    async fn send(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::Response> {
        let what = format!("{method} {}{path}", self.base);
        let resp = self.request(method, path).send().await.with_context(|| what.clone())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(body);
        anyhow::bail!("{what}: {status}: {}", message.trim())
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let resp = self.send(reqwest::Method::GET, path).await?;
            resp.json()
                .await
                .with_context(|| format!("GET {path}: unexpected answer"))
        })
    }

    pub fn post_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.runtime.block_on(async {
            let resp = self.send(reqwest::Method::POST, path).await?;
            resp.json()
                .await
                .with_context(|| format!("POST {path}: unexpected answer"))
        })
    }

    /// Streams the answer into `out` (created), chunk by chunk; returns
    /// the bytes written. A transfer cut short is an error.
    pub fn download(&self, path: &str, out: &Path) -> anyhow::Result<u64> {
        self.runtime.block_on(async {
            let mut resp = self.send(reqwest::Method::GET, path).await?;
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
            );
            let mut n = 0u64;
            while let Some(chunk) = resp
                .chunk()
                .await
                .with_context(|| format!("GET {path}: transfer cut short"))?
            {
                file.write_all(&chunk)
                    .with_context(|| format!("writing {}", out.display()))?;
                n += chunk.len() as u64;
            }
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all().with_context(|| format!("syncing {}", out.display()))?;
            Ok(n)
        })
    }

    /// The whole answer as bytes.
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.runtime.block_on(async {
            let resp = self.send(reqwest::Method::GET, path).await?;
            Ok(resp
                .bytes()
                .await
                .with_context(|| format!("GET {path}: transfer cut short"))?
                .to_vec())
        })
    }
}

/// A running gateway's experience store, read over its admin endpoints: what
/// `qroute train --follow --url` samples from. Read-only: every write is
/// refused.
pub struct RemoteStore {
    remote: Remote,
    /// The store's length as last seen, and when.
    len: AtomicU64,
    seen: Mutex<Option<Instant>>,
}

/// How stale the cached length may get before `len` asks again.
const LEN_MAX_AGE: Duration = Duration::from_millis(200);

#[derive(serde::Deserialize)]
struct Sample {
    len: u64,
    experiences: Vec<Experience>,
}

impl RemoteStore {
    pub fn new(remote: Remote) -> RemoteStore {
        RemoteStore {
            remote,
            len: AtomicU64::new(0),
            seen: Mutex::new(None),
        }
    }

    fn saw(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

fn remote_err(e: anyhow::Error) -> Error {
    Error::Unavailable(format!("{e:#}"))
}

fn read_only() -> Error {
    Error::InvalidInput("a gateway's store is read-only over --url".into())
}

impl ExperienceStore for RemoteStore {
    fn append_decisions(&self, _: &[DecisionRecord]) -> Result<()> {
        Err(read_only())
    }
    fn record_outcomes(&self, _: &[Outcome]) -> Result<()> {
        Err(read_only())
    }
    fn record_answers(&self, _: &[Answered]) -> Result<()> {
        Err(read_only())
    }
    fn answered(&self, _: &str) -> Result<Option<Answered>> {
        Err(read_only())
    }
    fn record_feedback(&self, _: &str, _: Feedback, _: u64) -> Result<(FeedbackRecord, Option<FeedbackRecord>)> {
        Err(read_only())
    }
    fn get(&self, _: &str) -> Result<Option<Experience>> {
        Err(read_only())
    }

    fn len(&self) -> usize {
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < LEN_MAX_AGE);
        if !fresh {
            match self.remote.get_json::<serde_json::Value>("/v1/health") {
                Ok(h) => self.saw(h["store_records"].as_u64().unwrap_or(0)),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not reach the gateway"),
            }
        }
        self.len.load(Ordering::Relaxed) as usize
    }

    fn sample(&self, n: usize, how: &Sampling, _rng: &mut dyn RngCore) -> Result<Vec<Arc<Experience>>> {
        let path = match how {
            Sampling::Uniform => format!("/v1/admin/experiences/sample?n={n}"),
            Sampling::Recent { half_life } => format!("/v1/admin/experiences/sample?n={n}&half_life={half_life}"),
        };
        let s: Sample = self.remote.get_json(&path).map_err(remote_err)?;
        self.saw(s.len);
        Ok(s.experiences.into_iter().map(Arc::new).collect())
    }

    fn iter_from(&self, _: u64) -> Box<dyn Iterator<Item = Result<Experience>> + '_> {
        Box::new(std::iter::once(Err(read_only())))
    }
    fn put_doc_json(&self, _: &str, _: &str, _: &[u8]) -> Result<()> {
        Err(read_only())
    }
    fn docs_json(&self, _: &str) -> Result<Vec<Vec<u8>>> {
        Err(read_only())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn apply_retention(&self, _: &Retention, _: u64) -> Result<Pruned> {
        Err(read_only())
    }
}
