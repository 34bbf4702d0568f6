//! The experience store on PostgreSQL: one log shared by every gateway
//! replica and the trainer (`[store] url = "postgres://…"`).
//!
//! The same contract as the sled store ([`ExperienceStore`]'s docs), with
//! PostgreSQL's commit as the durability point:
//!
//! - **Appends** are one call of the `append_decisions` SQL function
//!   (schema migration 2), one statement in its own transaction: it locks
//!   the `next_seq` counter row, refuses a request id stored with other
//!   content, skips identical ones, inserts the rest and moves the counter.
//!   The row lock is held until commit (and for no client round trip), so sequence numbers
//!   commit in order across replicas: a reader following `iter_from` never
//!   sees a later number before an earlier one. One group commit is one
//!   transaction, whatever its size.
//! - **Outcomes** are upserted with the decision's `rewarded` row in one
//!   transaction. [`ExperienceStore::record_outcomes_unsynced`] commits with
//!   `synchronous_commit = off`: PostgreSQL writes WAL in order, so the
//!   group writer's next (synchronous) append commit makes them durable.
//!   Answers are written the same way, as the sled store leaves them to its
//!   next flush.
//! - **Sampling**: `rewarded` numbers decisions densely (`rank`) in the
//!   order they got their first outcome. A draw is a rank, uniform or by
//!   age in ranks as [`Sampling::Recent`] says (the sled store draws from
//!   its rewarded index the same way, in sequence order; outcomes arrive
//!   within seconds of their decision, so the two orders nearly agree).
//!   Retention leaves holes at the old end, and a draw in a hole takes the
//!   next present rank.
//! - **Retention** moves `first_kept` first (the commit point: every read
//!   filters by it), then deletes in batches of [`DELETE_BATCH`] decisions
//!   with their outcomes, answers, feedback and `rewarded` rows.

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use tokio_postgres::Row;

use qroute_core::record::{
    validate_request_id, Answered, DecisionRecord, Experience, Feedback, FeedbackRecord, Outcome,
};
use qroute_core::store::{ExperienceStore, Pruned, Retention, Sampling, Truncation};
use qroute_core::{Error, Result};

use super::{pg_err, Pg};
use crate::codec;
use crate::sled_store::pick;

/// Decisions deleted per retention transaction.
pub const DELETE_BATCH: i64 = 5_000;

/// Rows `iter_from` fetches per query.
const PAGE: i64 = 256;

/// A decision with its outcomes and feedback, by whatever `WHERE` follows.
const EXPERIENCES: &str = r#"
    SELECT d.seq, d.record,
           ARRAY(SELECT o.outcome FROM outcomes o WHERE o.request_id = d.request_id
                 ORDER BY o.model COLLATE "C") AS outcomes,
           f.record::text AS feedback
    FROM decisions d LEFT JOIN feedback f ON f.decision_id = d.request_id
    WHERE d.seq >= (SELECT value FROM meta WHERE key = 'first_kept')"#;

/// The experience store on PostgreSQL (see the module docs).
#[derive(Debug)]
pub struct PgStore {
    pg: Pg,
}

fn seq_of(v: i64) -> u64 {
    v.max(0) as u64
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Store(format!("encoding JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Store(format!("corrupt {what} in postgres: {e}")))
}

fn experience(row: &Row) -> Result<(u64, Experience)> {
    let seq = seq_of(row.get(0));
    let decision = codec::decode_decision(row.get::<_, &[u8]>(1))?;
    let outcomes = row
        .get::<_, Vec<&[u8]>>(2)
        .into_iter()
        .map(codec::decode_outcome)
        .collect::<Result<Vec<_>>>()?;
    let feedback = row
        .get::<_, Option<&str>>(3)
        .map(|s| from_json::<FeedbackRecord>(s, "feedback"))
        .transpose()?;
    Ok((
        seq,
        Experience {
            decision,
            outcomes,
            feedback,
        },
    ))
}

impl PgStore {
    /// Opens (creating and migrating as needed) the store `url` names.
    pub fn open(url: &str) -> Result<PgStore> {
        Ok(PgStore { pg: Pg::open(url)? })
    }

    /// Opens an existing store for reading; creates and migrates nothing.
    pub fn open_existing(url: &str) -> Result<PgStore> {
        Ok(PgStore {
            pg: Pg::open_existing(url)?,
        })
    }

    pub fn pg(&self) -> &Pg {
        &self.pg
    }

    fn meta(&self, key: &'static str) -> Result<u64> {
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            let row = conn
                .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .map_err(pg_err("reading the store's counters"))?;
            Ok(seq_of(row.get(0)))
        })
    }

    /// Validates outcomes against their decisions and writes them with the
    /// decisions' `rewarded` rows in one transaction.
    fn write_outcomes(&self, outcomes: &[Outcome], synchronous: bool) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        for o in outcomes {
            o.validate()?;
        }
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            let tx = conn.transaction().await.map_err(pg_err("recording outcomes"))?;
            write_outcomes_in(&tx, outcomes).await?;
            if !synchronous {
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await
                    .map_err(pg_err("recording outcomes"))?;
            }
            tx.commit().await.map_err(pg_err("committing outcomes"))
        })
    }
}

/// Checks each outcome names a stored decision and one of its chosen
/// models, then upserts them (a later one for the same request and model
/// wins) and marks their decisions rewarded.
async fn write_outcomes_in(tx: &tokio_postgres::Transaction<'_>, outcomes: &[Outcome]) -> Result<()> {
    let mut ids: Vec<&str> = outcomes.iter().map(|o| o.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            "SELECT request_id, seq, record FROM decisions
             WHERE request_id = ANY($1) AND seq >= (SELECT value FROM meta WHERE key = 'first_kept')",
            &[&ids],
        )
        .await
        .map_err(pg_err("finding the outcomes' decisions"))?;
    let mut decisions: HashMap<String, (i64, Vec<String>)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let chosen = codec::decision_chosen(row.get::<_, &[u8]>(2))?;
        decisions.insert(row.get(0), (row.get(1), chosen));
    }
    // Later outcomes for one (request, model) win, as in one sled call.
    let mut latest: HashMap<(&str, &str), Vec<u8>> = HashMap::with_capacity(outcomes.len());
    for o in outcomes {
        let id = o.request_id.as_str();
        let value = codec::outcome_row(o, decisions.get(id).map(|(_, chosen)| chosen.as_slice()))?;
        latest.insert((id, o.model.as_str()), value);
    }
    let seqs: Vec<i64> = decisions.values().map(|(seq, _)| *seq).collect();
    let (mut req, mut model, mut body) = (Vec::new(), Vec::new(), Vec::new());
    for ((r, m), b) in latest {
        req.push(r);
        model.push(m);
        body.push(b);
    }
    tx.execute(
        "INSERT INTO outcomes (request_id, model, outcome)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
         ON CONFLICT (request_id, model) DO UPDATE SET outcome = excluded.outcome",
        &[&req, &model, &body],
    )
    .await
    .map_err(pg_err("writing outcomes"))?;
    tx.execute(
        // Filtered first, so that a repeat does not use up a rank (ranks
        // stay dense, which sampling relies on).
        "INSERT INTO rewarded (seq) SELECT s FROM UNNEST($1::bigint[]) AS t(s)
         WHERE NOT EXISTS (SELECT 1 FROM rewarded WHERE seq = s) ORDER BY s
         ON CONFLICT (seq) DO NOTHING",
        &[&seqs],
    )
    .await
    .map_err(pg_err("marking decisions rewarded"))?;
    Ok(())
}

impl ExperienceStore for PgStore {
    /// One transaction: all or nothing, durable at its commit. The same
    /// checks as the sled store (a request id twice in one call, or stored
    /// with other content, is `InvalidInput`); an identical stored decision
    /// is skipped.
    fn append_decisions(&self, records: &[DecisionRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut encoded: HashMap<&str, Vec<u8>> = HashMap::with_capacity(records.len());
        for r in records {
            r.validate()?;
            let mut bytes = Vec::new();
            codec::encode_decision(r, &mut bytes);
            if encoded.insert(r.request_id.as_str(), bytes).is_some() {
                return Err(Error::InvalidInput(format!(
                    "decision {:?}: request_id appears twice in one append",
                    r.request_id
                )));
            }
        }
        let ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
        let times: Vec<i64> = records.iter().map(|r| r.time_ms as i64).collect();
        let bodies: Vec<&[u8]> = ids.iter().map(|id| encoded[id].as_slice()).collect();
        let pool = self.pg.pool().clone();
        let conflict: Option<String> = self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.query_one("SELECT append_decisions($1, $2, $3)", &[&ids, &times, &bodies])
                .await
                .map(|row| row.get(0))
                .map_err(pg_err("appending decisions"))
        })?;
        match conflict {
            Some(id) => Err(Error::InvalidInput(format!(
                "decision {id:?}: a different decision with that request_id is already stored"
            ))),
            None => Ok(()),
        }
    }

    fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        self.write_outcomes(outcomes, true)
    }

    /// Committed without waiting for the WAL flush: durable once a later
    /// synchronous commit returns (a later group's append, `flush`), or once
    /// PostgreSQL's WAL writer flushes (within `wal_writer_delay`).
    fn record_outcomes_unsynced(&self, outcomes: &[Outcome]) -> Result<()> {
        self.write_outcomes(outcomes, false)
    }

    /// Committed without waiting for the WAL flush, as the sled store leaves
    /// answers to its next flush.
    fn record_answers(&self, answers: &[Answered]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let mut latest: HashMap<&str, String> = HashMap::with_capacity(answers.len());
        for a in answers {
            validate_request_id(&a.request_id)?;
            latest.insert(a.request_id.as_str(), json(a)?);
        }
        let (ids, bodies): (Vec<&str>, Vec<String>) = latest.into_iter().unzip();
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            let tx = conn.transaction().await.map_err(pg_err("recording answers"))?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg_err("recording answers"))?;
            tx.execute(
                "INSERT INTO answers (request_id, answered)
                 SELECT r, b::jsonb FROM UNNEST($1::text[], $2::text[]) AS t(r, b)
                 ON CONFLICT (request_id) DO UPDATE SET answered = excluded.answered",
                &[&ids, &bodies],
            )
            .await
            .map_err(pg_err("recording answers"))?;
            tx.commit().await.map_err(pg_err("committing answers"))
        })
    }

    fn answered(&self, request_id: &str) -> Result<Option<Answered>> {
        let pool = self.pg.pool().clone();
        let row = self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.query_opt(
                "SELECT answered::text FROM answers WHERE request_id = $1",
                &[&request_id],
            )
            .await
            .map_err(pg_err("reading an answer"))
        })?;
        row.map(|r| from_json(r.get::<_, &str>(0), "answer")).transpose()
    }

    /// As the sled store's: late feedback is kept and flagged, feedback in
    /// time sets the answering outcome's quality. The answer's row is locked
    /// for the transaction, so concurrent repeats (on any replica) count
    /// every revision.
    fn record_feedback(
        &self,
        request_id: &str,
        feedback: Feedback,
        window_ms: u64,
    ) -> Result<(FeedbackRecord, Option<FeedbackRecord>)> {
        feedback.validate()?;
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            let tx = conn.transaction().await.map_err(pg_err("recording feedback"))?;
            let answered: Answered = match tx
                .query_opt(
                    "SELECT answered::text FROM answers WHERE request_id = $1 FOR UPDATE",
                    &[&request_id],
                )
                .await
                .map_err(pg_err("finding the answer"))?
            {
                Some(row) => from_json(row.get::<_, &str>(0), "answer")?,
                None => {
                    return Err(Error::NotFound(format!(
                        "request_id {request_id:?}: no answered request with that id (unknown, or every model failed)"
                    )))
                }
            };
            let previous: Option<FeedbackRecord> = tx
                .query_opt(
                    "SELECT record::text FROM feedback WHERE decision_id = $1",
                    &[&answered.decision_id],
                )
                .await
                .map_err(pg_err("reading feedback"))?
                .map(|row| from_json(row.get::<_, &str>(0), "feedback"))
                .transpose()?;
            let mut record = FeedbackRecord::join(feedback, answered, previous.as_ref(), window_ms);
            if !record.late {
                let current = tx
                    .query_opt(
                        "SELECT outcome FROM outcomes WHERE request_id = $1 AND model = $2",
                        &[&record.answered.decision_id, &record.answered.model],
                    )
                    .await
                    .map_err(pg_err("reading the answer's outcome"))?;
                if let Some(row) = current {
                    let mut o = codec::decode_outcome(row.get::<_, &[u8]>(0))?;
                    o.quality = Some(record.feedback.quality);
                    write_outcomes_in(&tx, std::slice::from_ref(&o)).await?;
                    record.applied = true;
                }
            }
            tx.execute(
                "INSERT INTO feedback (decision_id, record) VALUES ($1, $2::text::jsonb)
                 ON CONFLICT (decision_id) DO UPDATE SET record = excluded.record",
                &[&record.answered.decision_id, &json(&record)?],
            )
            .await
            .map_err(pg_err("writing feedback"))?;
            tx.commit().await.map_err(pg_err("committing feedback"))?;
            Ok((record, previous))
        })
    }

    fn get(&self, request_id: &str) -> Result<Option<Experience>> {
        if validate_request_id(request_id).is_err() {
            return Ok(None);
        }
        let pool = self.pg.pool().clone();
        let row = self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.query_opt(&format!("{EXPERIENCES} AND d.request_id = $1"), &[&request_id])
                .await
                .map_err(pg_err("reading an experience"))
        })?;
        row.map(|r| experience(&r).map(|(_, e)| e)).transpose()
    }

    /// One query (the `next_seq` counter): every replica's appends count.
    fn len(&self) -> usize {
        match self.meta("next_seq") {
            Ok(n) => n as usize,
            Err(e) => {
                tracing::warn!(error = %e, "reading the store's length");
                0
            }
        }
    }

    /// Draws ranks of `rewarded` (uniformly, or newest-rewarded first as
    /// `how` says) and reads each drawn decision; a rank whose decision
    /// retention just removed is drawn again.
    fn sample(&self, n: usize, how: &Sampling, rng: &mut dyn RngCore) -> Result<Vec<Arc<Experience>>> {
        let mut out = Vec::with_capacity(n);
        let recent = matches!(how, Sampling::Recent { .. });
        for _round in 0..8 {
            if out.len() >= n {
                break;
            }
            let pool = self.pg.pool().clone();
            let range = self.pg.block_on(async move {
                let conn = Pg::conn(&pool).await?;
                conn.query_one("SELECT min(rank), max(rank) FROM rewarded", &[])
                    .await
                    .map_err(pg_err("sampling"))
            })?;
            let (Some(lo), Some(hi)) = (range.get::<_, Option<i64>>(0), range.get::<_, Option<i64>>(1)) else {
                break;
            };
            let span = (hi - lo + 1) as usize;
            let draws: Vec<i64> = (out.len()..n)
                .map(|_| lo + pick(span, how, &mut &mut *rng) as i64)
                .collect();
            // The rank drawn, or the nearest present one (ranks of removed
            // decisions leave holes): after it, or before it for recency.
            let near = if recent {
                "(SELECT seq FROM rewarded WHERE rank <= r ORDER BY rank DESC LIMIT 1)"
            } else {
                "(SELECT seq FROM rewarded WHERE rank >= r ORDER BY rank LIMIT 1)"
            };
            let pool = self.pg.pool().clone();
            let (seqs, rows) = self.pg.block_on(async move {
                let conn = Pg::conn(&pool).await?;
                let picked = conn
                    .query(&format!("SELECT {near} FROM UNNEST($1::bigint[]) AS t(r)"), &[&draws])
                    .await
                    .map_err(pg_err("sampling"))?;
                let seqs: Vec<i64> = picked.iter().filter_map(|r| r.get::<_, Option<i64>>(0)).collect();
                let rows = conn
                    .query(&format!("{EXPERIENCES} AND d.seq = ANY($1)"), &[&seqs])
                    .await
                    .map_err(pg_err("reading sampled experiences"))?;
                Ok::<_, Error>((seqs, rows))
            })?;
            let mut by_seq = HashMap::with_capacity(rows.len());
            for row in &rows {
                let (seq, e) = experience(row)?;
                if !e.outcomes.is_empty() {
                    by_seq.insert(seq, Arc::new(e));
                }
            }
            out.extend(seqs.iter().filter_map(|s| by_seq.get(&seq_of(*s)).cloned()));
        }
        out.truncate(n);
        Ok(out)
    }

    /// Pages of [`PAGE`] experiences, up to the newest decision committed
    /// when the iteration started.
    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = Result<Experience>> + '_> {
        let end = self.len() as i64;
        let mut next = from as i64;
        let mut page: std::vec::IntoIter<Experience> = Vec::new().into_iter();
        let mut failed = false;
        Box::new(std::iter::from_fn(move || loop {
            if let Some(e) = page.next() {
                return Some(Ok(e));
            }
            if failed || next >= end {
                return None;
            }
            let pool = self.pg.pool().clone();
            let rows = self.pg.block_on(async move {
                let conn = Pg::conn(&pool).await?;
                conn.query(
                    &format!("{EXPERIENCES} AND d.seq >= $1 AND d.seq < $2 ORDER BY d.seq LIMIT $3"),
                    &[&next, &end, &PAGE],
                )
                .await
                .map_err(pg_err("reading experiences"))
            });
            let decoded = rows.and_then(|rows| rows.iter().map(experience).collect::<Result<Vec<_>>>());
            match decoded {
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
                Ok(batch) if batch.is_empty() => next = end,
                Ok(batch) => {
                    next = batch.last().map_or(end, |(s, _)| *s as i64 + 1);
                    page = batch.into_iter().map(|(_, e)| e).collect::<Vec<_>>().into_iter();
                }
            }
        }))
    }

    fn put_doc_json(&self, kind: &str, key: &str, json: &[u8]) -> Result<()> {
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.execute(
                "INSERT INTO docs (kind, key, body) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
                &[&kind, &key, &json],
            )
            .await
            .map(drop)
            .map_err(pg_err("saving a document"))
        })
    }

    fn docs_json(&self, kind: &str) -> Result<Vec<Vec<u8>>> {
        let pool = self.pg.pool().clone();
        let rows = self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.query(
                r#"SELECT body FROM docs WHERE kind = $1 ORDER BY key COLLATE "C""#,
                &[&kind],
            )
            .await
            .map_err(pg_err("reading documents"))
        })?;
        Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
    }

    /// A synchronous commit of a transaction with an id: PostgreSQL flushes
    /// the WAL up to it, which covers every asynchronous commit before.
    fn flush(&self) -> Result<()> {
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            let tx = conn.transaction().await.map_err(pg_err("flushing"))?;
            tx.batch_execute("SELECT txid_current()")
                .await
                .map_err(pg_err("flushing"))?;
            tx.commit().await.map_err(pg_err("flushing"))
        })
    }

    fn apply_retention(&self, keep: &Retention, now_ms: u64) -> Result<Pruned> {
        let pool = self.pg.pool().clone();
        let keep = *keep;
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            // (1) The commit point: move first_kept (under the append lock,
            //     so no append interleaves).
            let tx = conn.transaction().await.map_err(pg_err("retention"))?;
            let next: i64 = tx
                .query_one("SELECT value FROM meta WHERE key = 'next_seq' FOR UPDATE", &[])
                .await
                .map_err(pg_err("retention"))?
                .get(0);
            let first: i64 = tx
                .query_one("SELECT value FROM meta WHERE key = 'first_kept'", &[])
                .await
                .map_err(pg_err("retention"))?
                .get(0);
            let mut cut = first;
            if let Some(max) = keep.max_experiences {
                cut = cut.max(next - max.min(i64::MAX as u64) as i64);
            }
            if let Some(age) = keep.max_age_ms {
                let oldest_kept = now_ms.saturating_sub(age) as i64;
                let row = tx
                    .query_one(
                        "SELECT coalesce(max(seq) + 1, $2) FROM decisions WHERE seq >= $2 AND time_ms < $1",
                        &[&oldest_kept, &first],
                    )
                    .await
                    .map_err(pg_err("retention by age"))?;
                cut = cut.max(row.get(0));
            }
            if let Some(bytes) = keep.max_bytes {
                let row = tx
                    .query_one(
                        "SELECT coalesce(max(seq) + 1, $2) FROM (
                           SELECT seq, sum(octet_length(record)) OVER (ORDER BY seq DESC) AS newer
                           FROM decisions WHERE seq >= $2) t
                         WHERE newer > $1",
                        &[&(bytes.min(i64::MAX as u64) as i64), &first],
                    )
                    .await
                    .map_err(pg_err("retention by size"))?;
                cut = cut.max(row.get(0));
            }
            let cut = cut.min(next);
            if cut <= first {
                tx.commit().await.map_err(pg_err("retention"))?;
                return Ok(Pruned {
                    removed: 0,
                    first_kept: seq_of(first),
                });
            }
            let newest_removed: i64 = tx
                .query_one(
                    "SELECT coalesce(max(time_ms), 0) FROM decisions WHERE seq >= $1 AND seq < $2",
                    &[&first, &cut],
                )
                .await
                .map_err(pg_err("retention"))?
                .get(0);
            tx.execute(
                "UPDATE meta SET value = CASE key
                   WHEN 'first_kept' THEN $1
                   WHEN 'removed' THEN value + $2
                   ELSE greatest(value, $3) END
                 WHERE key IN ('first_kept', 'removed', 'pruned_before_ms')",
                &[&cut, &(cut - first), &newest_removed],
            )
            .await
            .map_err(pg_err("retention"))?;
            tx.commit().await.map_err(pg_err("committing retention"))?;
            // (2) Delete what is below first_kept, in batches; a crash here
            //     leaves rows no read sees, and the next call deletes them.
            delete_below(&mut conn, cut).await?;
            Ok(Pruned {
                removed: seq_of(cut - first),
                first_kept: seq_of(cut),
            })
        })
    }

    fn first_kept(&self) -> u64 {
        self.meta("first_kept").unwrap_or(0)
    }

    fn truncation(&self) -> Result<Option<Truncation>> {
        let pool = self.pg.pool().clone();
        let rows = self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            conn.query("SELECT key, value FROM meta", &[])
                .await
                .map_err(pg_err("reading the truncation"))
        })?;
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == k)
                .map_or(0, |r| seq_of(r.get(1)))
        };
        Ok((get("removed") > 0).then(|| Truncation {
            removed: get("removed"),
            first_kept: get("first_kept"),
            pruned_before_ms: get("pruned_before_ms"),
        }))
    }
}

/// Deletes every decision below `cut` with its rows, [`DELETE_BATCH`] at a
/// time, each batch its own transaction.
async fn delete_below(conn: &mut deadpool_postgres::Object, cut: i64) -> Result<()> {
    loop {
        let tx = conn.transaction().await.map_err(pg_err("retention"))?;
        let n = tx
            .execute(
                "WITH gone AS (
                   DELETE FROM decisions WHERE seq IN (
                     SELECT seq FROM decisions WHERE seq < $1 ORDER BY seq LIMIT $2)
                   RETURNING seq, request_id),
                 o AS (DELETE FROM outcomes WHERE request_id IN (SELECT request_id FROM gone)),
                 a AS (DELETE FROM answers WHERE answered->>'decision_id' IN (SELECT request_id FROM gone)),
                 f AS (DELETE FROM feedback WHERE decision_id IN (SELECT request_id FROM gone)),
                 r AS (DELETE FROM rewarded WHERE seq IN (SELECT seq FROM gone))
                 SELECT 1 FROM gone",
                &[&cut, &DELETE_BATCH],
            )
            .await
            .map_err(pg_err("deleting old experiences"))?;
        tx.commit().await.map_err(pg_err("committing retention"))?;
        if n < DELETE_BATCH as u64 {
            return Ok(());
        }
    }
}
