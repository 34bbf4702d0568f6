//! The experience store as a trait: what the gateway, the trainers, the
//! experiments and the lab need from a log of decisions and outcomes,
//! whichever backend keeps it (sled embedded, PostgreSQL shared).
//!
//! Every write method is durable when it returns `Ok` (see the backend's
//! flush policy), and a duplicate of a stored decision is a no-op, so a
//! writer may retry a failed batch.

use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::record::{Answered, DecisionRecord, Experience, Feedback, FeedbackRecord, Outcome};
use crate::{Error, Result};

/// How replay sampling picks experiences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every experience with an outcome is equally likely.
    Uniform,
    /// Newer records favoured: the age (in records, from the newest) of a
    /// sampled record is ~ exponential with this half-life (truncated to the
    /// records there are). `half_life: 0` always returns the newest.
    Recent { half_life: usize },
}

/// A log of routing decisions with their outcomes, answers and feedback.
///
/// Decisions are numbered in insertion order (sequence numbers, from 0);
/// [`ExperienceStore::iter_from`] walks them in that order.
pub trait ExperienceStore: Send + Sync {
    /// Appends decisions; durable on `Ok`. A decision whose request id is
    /// already stored with the same content is skipped.
    fn append_decisions(&self, records: &[DecisionRecord]) -> Result<()>;

    /// Records outcomes of stored decisions (one per chosen model); a
    /// repeat for the same request and model replaces the earlier one.
    fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()>;

    /// Records which decision and model answered each request.
    fn record_answers(&self, answers: &[Answered]) -> Result<()>;

    /// Which decision and model answered `request_id`.
    fn answered(&self, request_id: &str) -> Result<Option<Answered>>;

    /// Joins feedback to the answer of `request_id`: returns the stored
    /// record and the one it replaced. Feedback later than `window_ms`
    /// after the answer is kept, flagged `late`, and not applied to the
    /// outcome's quality.
    fn record_feedback(
        &self,
        request_id: &str,
        feedback: Feedback,
        window_ms: u64,
    ) -> Result<(FeedbackRecord, Option<FeedbackRecord>)>;

    /// The experience of one decision (by its request id, or a fallback's
    /// `{request_id}/fallback-n`).
    fn get(&self, request_id: &str) -> Result<Option<Experience>>;

    /// Sequence number one past the newest decision.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` experiences with at least one outcome, drawn with replacement as
    /// `how` says; fewer only when the store has none with outcomes.
    fn sample(&self, n: usize, how: &Sampling, rng: &mut dyn RngCore) -> Result<Vec<Experience>>;

    /// Experiences in insertion order from sequence number `from` (or the
    /// oldest one retention kept, if later) to the newest committed one.
    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = Result<Experience>> + '_>;

    /// Saves a small JSON document under `key` in the collection `kind`
    /// (experiments, keys); durable on `Ok`.
    fn put_doc_json(&self, kind: &str, key: &str, json: &[u8]) -> Result<()>;

    /// Every document of collection `kind`, in key order.
    fn docs_json(&self, kind: &str) -> Result<Vec<Vec<u8>>>;

    /// Forces everything written so far to disk.
    fn flush(&self) -> Result<()>;
}

/// Typed access to [`ExperienceStore`]'s documents.
pub trait Documents {
    fn put_doc<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<()>;
    fn docs<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>>;
}

impl<S: ExperienceStore + ?Sized> Documents for S {
    fn put_doc<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value).map_err(|e| Error::Store(format!("encoding a {kind} document: {e}")))?;
        self.put_doc_json(kind, key, &json)
    }

    fn docs<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        self.docs_json(kind)?
            .iter()
            .map(|d| serde_json::from_slice(d).map_err(|e| Error::Store(format!("corrupt {kind} document: {e}"))))
            .collect()
    }
}
