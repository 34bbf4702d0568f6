//! The group-commit writer: one thread that turns many concurrent writes
//! into few durable store calls (the pattern the [crate docs](crate)
//! prescribe for a server).
//!
//! Requests hand their decision or outcome over a channel, with a reply
//! channel when they must know it is durable. The thread takes whatever has
//! queued (up to [`MAX_GROUP`] records), commits it with one
//! `append_decisions` and one `record_outcomes` call, and only then answers
//! every waiter. There is no artificial wait window: while one group is
//! being synced the next one queues, so groups grow with load and a lone
//! request pays for one sync only.

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

    /// Queues `outcome` without waiting for it: it is durable within one
    /// group commit. A failure is logged.
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
        let mut decisions = Vec::new();
        let mut decision_replies = Vec::new();
        let mut outcomes = Vec::new();
        let mut outcome_replies = Vec::new();
        let mut answers = Vec::new();
        let mut job = Some(first);
        let mut n = 0;
        while let Some(j) = job.take() {
            match j {
                Job::Decision(d, r) => {
                    decisions.push(*d);
                    decision_replies.push(r);
                }
                Job::Outcome(o, r) => {
                    outcomes.push(o);
                    outcome_replies.push(r);
                }
                Job::Answered(a) => answers.push(a),
            }
            n += 1;
            if n < MAX_GROUP {
                job = rx.try_recv().ok();
            }
        }

        let appended = store.append_decisions(&decisions);
        if let Err(e) = &appended {
            tracing::error!(error = %e, records = decisions.len(), "group commit of decisions failed");
            // Their outcomes cannot be joined; fail them with the same error
            // rather than letting them fail the rest of the group.
            let failed: std::collections::HashSet<&str> = decisions.iter().map(|d| d.request_id.as_str()).collect();
            let (mut keep, mut keep_replies) = (Vec::new(), Vec::new());
            for (o, r) in outcomes.drain(..).zip(outcome_replies.drain(..)) {
                if failed.contains(o.request_id.as_str()) {
                    reply(vec![r], &Err(Error::Store(e.to_string())));
                } else {
                    keep.push(o);
                    keep_replies.push(r);
                }
            }
            (outcomes, outcome_replies) = (keep, keep_replies);
        }
        reply(decision_replies, &appended);

        if !outcomes.is_empty() {
            record_outcomes(store, outcomes, outcome_replies, &on_commit);
        }
        if let Err(e) = store.record_answers(&answers) {
            tracing::error!(error = %e, records = answers.len(), "answer records not written");
        }
    }
}

fn record_outcomes(
    store: &dyn ExperienceStore,
    outcomes: Vec<Outcome>,
    outcome_replies: Vec<Reply>,
    on_commit: &impl Fn(usize),
) {
    {
        match store.record_outcomes(&outcomes) {
            Ok(()) => {
                reply(outcome_replies, &Ok(()));
                on_commit(outcomes.len());
            }
            Err(_) => {
                // All or nothing failed; one at a time, so one bad outcome
                // (an unknown request id) does not fail the others.
                let mut written = 0;
                for (o, r) in outcomes.into_iter().zip(outcome_replies) {
                    let result = store.record_outcomes(std::slice::from_ref(&o));
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, request_id = %o.request_id, "outcome not recorded");
                    } else {
                        written += 1;
                    }
                    reply(vec![r], &result);
                }
                if written > 0 {
                    on_commit(written);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledStore;
    use qroute_core::features::Features;

    fn decision(id: &str) -> DecisionRecord {
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
