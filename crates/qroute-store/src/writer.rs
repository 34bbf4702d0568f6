//! The group-commit writer: one thread that turns many concurrent writes
//! into few durable store calls (the pattern the [crate docs](crate)
//! prescribe for a server).
//!
//! Requests hand their decision or outcome over a channel, with a reply
//! channel when they must know it is durable. The thread takes whatever has
//! queued (up to [`MAX_GROUP`] records), commits its decisions with one
//! `append_decisions` call (one sync) and its outcomes unsynced, syncing them
//! only if someone waits for one (see `Group::commit`), and only then answers
//! every waiter. There is no artificial wait window: while one group
//! is being synced the next one queues, so groups grow with load and a lone
//! request pays for one sync only.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use qroute_core::record::{Answered, DecisionRecord, Outcome};
use qroute_core::store::ExperienceStore;
use qroute_core::{Error, Result};

/// Most records in one group commit.
pub const MAX_GROUP: usize = 512;

type Reply = Option<oneshot::Sender<std::result::Result<(), String>>>;

enum Job {
    // Boxed: a decision is several times the size of the other jobs.
    Decision(Box<DecisionRecord>, Reply),
    Outcome(Outcome, Reply),
    Answered(Answered),
}

/// Handle to the writer thread. Dropping it drains the queue and joins the
/// thread, so everything handed over before the drop is written.
pub struct GroupWriter {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl GroupWriter {
    /// Starts the writer. `on_commit(outcomes)` runs after each group that
    /// recorded outcomes (the server wakes the online trainer with it).
    pub fn spawn(store: Arc<dyn ExperienceStore>, on_commit: impl Fn(usize) + Send + 'static) -> Result<GroupWriter> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("qroute-writer".into())
            .spawn(move || run(store.as_ref(), rx, on_commit))
            .map_err(|e| Error::io("spawning the store writer thread", e))?;
        Ok(GroupWriter {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Writes `record`; resolves once it is durable.
    pub async fn decision(&self, record: DecisionRecord) -> Result<()> {
        let (reply, wait) = oneshot::channel();
        if !self.send(Job::Decision(Box::new(record), Some(reply))) {
            return Err(stopped());
        }
        answer(wait.await)
    }

    /// Queues `record` without waiting for it: durable within one group
    /// commit. A failure is logged.
    pub fn decision_later(&self, record: DecisionRecord) {
        if !self.send(Job::Decision(Box::new(record), None)) {
            tracing::error!("the store writer has stopped; a decision was dropped");
        }
    }

    /// Queues which decision and model answered a request; written after
    /// the outcomes of its group, so feedback never finds an answer whose
    /// outcome is missing.
    pub fn answered_later(&self, answered: Answered) {
        if !self.send(Job::Answered(answered)) {
            tracing::error!("the store writer has stopped; an answer record was dropped");
        }
    }

    /// Writes `outcome`; resolves once it is durable.
    pub async fn outcome(&self, outcome: Outcome) -> Result<()> {
        let (reply, wait) = oneshot::channel();
        if !self.send(Job::Outcome(outcome, Some(reply))) {
            return Err(stopped());
        }
        answer(wait.await)
    }

    /// Queues `outcome` without waiting for it: it is written with the next
    /// group commit and durable with the store's next flush (sled's within
    /// 500 ms). A failure is logged.
    pub fn outcome_later(&self, outcome: Outcome) {
        if !self.send(Job::Outcome(outcome, None)) {
            tracing::error!("the store writer has stopped; an outcome was dropped");
        }
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn stopped() -> Error {
    Error::Unavailable("the experience store writer has stopped".into())
}

fn answer(r: std::result::Result<std::result::Result<(), String>, oneshot::error::RecvError>) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(Error::Unavailable(format!(
            "the experience store refused the write: {message}"
        ))),
        Err(_) => Err(stopped()),
    }
}

fn reply(to: Vec<Reply>, result: &Result<()>) {
    for r in to.into_iter().flatten() {
        let _ = r.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }
}

fn run(store: &dyn ExperienceStore, rx: mpsc::Receiver<Job>, on_commit: impl Fn(usize)) {
    while let Ok(first) = rx.recv() {
        let mut group = Group::default();
        group.add(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.add(job),
                Err(_) => break,
            }
        }
        group.commit(store, &on_commit);
    }
    // Everything handed over is durable once the writer is dropped.
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "the experience store's last flush failed");
    }
}

/// What one group commit writes, with who waits for it.
#[derive(Default)]
struct Group {
    decisions: Vec<DecisionRecord>,
    decision_replies: Vec<Reply>,
    outcomes: Vec<Outcome>,
    outcome_replies: Vec<Reply>,
    answers: Vec<Answered>,
}

impl Group {
    fn add(&mut self, job: Job) {
        match job {
            Job::Decision(d, r) => {
                self.decisions.push(*d);
                self.decision_replies.push(r);
            }
            Job::Outcome(o, r) => {
                self.outcomes.push(o);
                self.outcome_replies.push(r);
            }
            Job::Answered(a) => self.answers.push(a),
        }
    }

    fn len(&self) -> usize {
        self.decisions.len() + self.outcomes.len() + self.answers.len()
    }

    /// The decisions in one append, which syncs them, and their waiters
    /// answered at once; then the outcomes, unsynced (those of this group's
    /// decisions too: a queued-ack decision and its outcome in one group),
    /// synced by one flush only when someone waits for one (otherwise the
    /// store's own flush makes them durable soon after: sled's within
    /// 500 ms); then the answers, never before their outcome.
    fn commit(self, store: &dyn ExperienceStore, on_commit: &impl Fn(usize)) {
        let Group {
            decisions,
            decision_replies,
            outcomes,
            outcome_replies,
            answers,
        } = self;
        let appended = store.append_decisions(&decisions);
        if let Err(e) = &appended {
            tracing::error!(error = %e, records = decisions.len(), "group commit of decisions failed");
        }
        reply(decision_replies, &appended);

        let mut to_join: Vec<(Outcome, Reply)> = outcomes.into_iter().zip(outcome_replies).collect();
        let mut joined = Vec::new();
        if let Err(e) = &appended {
            // Outcomes of this group's decisions: those are not stored, so
            // they fail with the same error.
            let in_group: HashSet<&str> = decisions.iter().map(|d| d.request_id.as_str()).collect();
            let (failed, rest) = to_join
                .into_iter()
                .partition(|(o, _)| in_group.contains(o.request_id.as_str()));
            to_join = rest;
            joined.extend(
                failed
                    .into_iter()
                    .map(|(_, r): (Outcome, Reply)| (r, Err(Error::Store(e.to_string())))),
            );
        }
        joined.extend(join_outcomes(store, to_join));
        let waited_for = joined.iter().any(|(r, result)| r.is_some() && result.is_ok());
        let synced = if waited_for { store.flush() } else { Ok(()) };
        finish(joined, &synced, on_commit);
        if let Err(e) = store.record_answers(&answers) {
            tracing::error!(error = %e, records = answers.len(), "answer records not written");
        }
    }
}

/// Joins `outcomes` to their decisions, unsynced: all in one call, or one at
/// a time when that fails, so one bad outcome (an unknown request id) does
/// not fail the others. Each waiter's result, not yet answered.
fn join_outcomes(store: &dyn ExperienceStore, outcomes: Vec<(Outcome, Reply)>) -> Vec<(Reply, Result<()>)> {
    if outcomes.is_empty() {
        return Vec::new();
    }
    let (all, replies): (Vec<Outcome>, Vec<Reply>) = outcomes.into_iter().unzip();
    if store.record_outcomes_unsynced(&all).is_ok() {
        return replies.into_iter().map(|r| (r, Ok(()))).collect();
    }
    all.into_iter()
        .zip(replies)
        .map(|(o, r)| {
            let result = store.record_outcomes_unsynced(std::slice::from_ref(&o));
            if let Err(e) = &result {
                tracing::warn!(error = %e, request_id = %o.request_id, "outcome not recorded");
            }
            (r, result)
        })
        .collect()
}

/// Answers the waiters of joined outcomes once `synced` says whether they
/// are durable, and tells the trainer how many landed.
fn finish(joined: Vec<(Reply, Result<()>)>, synced: &Result<()>, on_commit: &impl Fn(usize)) {
    let mut written = 0;
    for (r, result) in joined {
        let result = result.and_then(|()| synced.as_ref().map(|_| ()).map_err(|e| Error::Store(e.to_string())));
        written += usize::from(result.is_ok());
        reply(vec![r], &result);
    }
    if written > 0 {
        on_commit(written);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SledStore;
    use qroute_core::features::Features;

    /// A one-feature decision choosing model `a` (also `recent.rs`'s fixture).
    pub(crate) fn decision(id: &str) -> DecisionRecord {
        DecisionRecord {
            request_id: id.into(),
            time_ms: 1,
            features: Features {
                dim: 8,
                indices: vec![1],
                values: vec![1.0],
            },
            candidates: vec!["a".into(), "b".into()],
            propensities: vec![0.5, 0.5],
            chosen: vec!["a".into()],
            policy_version: 0,
            cost_weight: 0.0,
            latency_weight: 0.0,
            task: None,
            experiment: None,
            shadow: None,
        }
    }

    fn outcome(id: &str, model: &str) -> Outcome {
        Outcome {
            request_id: id.into(),
            model: model.into(),
            quality: Some(1.0),
            cost_usd: 0.1,
            latency_ms: 5.0,
            error: None,
            time_ms: 2,
            ttft_ms: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_durable_and_bad_ones_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ExperienceStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let c = commits.clone();
            Arc::new(
                GroupWriter::spawn(store.clone(), move |n| {
                    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                })
                .unwrap(),
            )
        };
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("r{i}");
                w.decision(decision(&id)).await.unwrap();
                w.outcome(outcome(&id, "a")).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // An outcome for a model that was not chosen fails on its own.
        let bad = writer.outcome(outcome("r0", "b")).await;
        assert!(bad.is_err());
        writer.outcome_later(outcome("r1", "a"));
        drop(Arc::try_unwrap(writer).ok().expect("last handle"));
        assert_eq!(store.len(), 200);
        for i in 0..200 {
            let e = store.get(&format!("r{i}")).unwrap().unwrap();
            assert_eq!(e.outcomes.len(), 1);
        }
        assert_eq!(commits.load(std::sync::atomic::Ordering::Relaxed), 201);
    }
}
