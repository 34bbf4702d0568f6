//! The experience store as a trait: what the gateway, the trainers, the
//! experiments and the lab need from a log of decisions and outcomes,
//! whichever backend keeps it (sled embedded, PostgreSQL shared).
//!
//! Every write method is durable when it returns `Ok` (see the backend's
//! flush policy), and a duplicate of a stored decision is a no-op, so a
//! writer may retry a failed batch.

use std::sync::Arc;

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

/// How much experience a store keeps (`[store.retention]`): an experience
/// past any limit that is set may be removed by
/// [`ExperienceStore::apply_retention`]. `None` everywhere keeps everything.
///
/// The limits are lower bounds on what is kept, not exact sizes: a backend
/// may remove old experiences in blocks (the sled store drops whole data
/// segments), so it keeps everything within the limits and somewhat more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove experiences whose decision is more than this many milliseconds
    /// older (by its `time_ms`) than the `now_ms` given to `apply_retention`.
    pub max_age_ms: Option<u64>,
    /// Keep the newest this many decisions; older ones may be removed.
    pub max_experiences: Option<u64>,
    /// Keep the newest decisions up to this many bytes of stored decision
    /// data (outcomes and indexes not counted); older ones may be removed.
    pub max_bytes: Option<u64>,
}

/// What one [`ExperienceStore::apply_retention`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Decisions removed by this call (with their outcomes, answers and
    /// feedback).
    pub removed: u64,
    /// Sequence number of the oldest decision still stored after the call.
    pub first_kept: u64,
}

/// What retention has removed over the store's whole life, so reports built
/// on the store (off-policy evaluation, experiment results) can say they
/// only cover what was kept: "truncated: `removed` experiences before
/// `pruned_before_ms` removed by retention".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncation {
    /// Decisions removed so far, all calls together.
    pub removed: u64,
    /// Sequence number of the oldest decision still stored.
    pub first_kept: u64,
    /// The `time_ms` of the newest decision removed (Unix milliseconds).
    pub pruned_before_ms: u64,
}

/// A log of routing decisions with their outcomes, answers and feedback.
///
/// Decisions are numbered in insertion order (sequence numbers, from 0);
/// [`ExperienceStore::iter_from`] walks them in that order. Sequence numbers
/// never change: retention removes the oldest decisions, after which the
/// stored ones are `first_kept()..len()`.
pub trait ExperienceStore: Send + Sync {
    /// Appends decisions; durable on `Ok`. A decision whose request id is
    /// already stored with the same content is skipped.
    fn append_decisions(&self, records: &[DecisionRecord]) -> Result<()>;

    /// Records outcomes of stored decisions (one per chosen model); a
    /// repeat for the same request and model replaces the earlier one.
    fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()>;

    /// [`ExperienceStore::record_outcomes`] without its sync: the outcomes
    /// are durable once `flush` returns (a backend may make them durable
    /// sooner). A group-commit writer writes its group's outcomes this way
    /// and syncs once for the whole group, if anyone waits for one. By
    /// default it syncs anyway.
    fn record_outcomes_unsynced(&self, outcomes: &[Outcome]) -> Result<()> {
        self.record_outcomes(outcomes)
    }

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

    /// Sequence number one past the newest decision. Not a count once
    /// retention has removed decisions: see [`ExperienceStore::retained`].
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` experiences with at least one outcome, drawn with replacement as
    /// `how` says; fewer only when the store has none with outcomes. Shared,
    /// not owned: the trainer draws the same recent experiences again and
    /// again, and a store may hand out one decoded copy each time.
    fn sample(&self, n: usize, how: &Sampling, rng: &mut dyn RngCore) -> Result<Vec<Arc<Experience>>>;

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

    /// Removes the experiences past `keep` at time `now_ms` (Unix
    /// milliseconds): the oldest decisions, with their outcomes, answers and
    /// feedback. Documents are never removed. Durable on `Ok`; afterwards
    /// [`ExperienceStore::get`] no longer finds them, sampling never returns
    /// them and [`ExperienceStore::iter_from`] starts after them. A server
    /// calls it now and then (it is cheap when nothing is due).
    fn apply_retention(&self, keep: &Retention, now_ms: u64) -> Result<Pruned>;

    /// Sequence number of the oldest decision still stored (0 until
    /// retention removed any; `len()` when it removed all).
    fn first_kept(&self) -> u64 {
        0
    }

    /// Number of decisions stored: `len() - first_kept()`.
    fn retained(&self) -> u64 {
        (self.len() as u64).saturating_sub(self.first_kept())
    }

    /// What retention has removed so far, or `None` if it never removed
    /// anything.
    fn truncation(&self) -> Result<Option<Truncation>> {
        Ok(None)
    }
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
