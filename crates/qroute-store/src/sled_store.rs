//! [`SledStore`]: the experience store on sled plus an append-only data file.
//! See the module docs of [the crate docs](crate) for the layout, the flush policy
//! and what a crash can leave behind.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use rand::{Rng, RngCore};
use sled::{Batch, Tree};

use qroute_core::error::{Error, Result};
use qroute_core::store::{ExperienceStore, Sampling};

use super::codec;
use super::data_file::DataFile;
use qroute_core::record::{
    validate_request_id, Answered, DecisionRecord, Experience, Feedback, FeedbackRecord, Outcome,
};

/// The key in sled's default tree that records the store format.
const FORMAT_KEY: &[u8] = b"qroute.store.format";
/// The store format this code writes and reads (1 kept decisions in sled).
const FORMAT: u64 = 2;
/// Decisions per entry of the `index` tree. Keeps entries at a few KB: sled
/// rewrites whole leaves (up to 17 entries), and a leaf written as one log
/// message over a quarter of sled's segment size (128 KB by default) goes to
/// a separate "blob" file, which sled 0.34 never fsyncs.
const INDEX_CHUNK: usize = 256;

/// The experience store: decisions in an append-only data file, their index,
/// outcomes and the rewarded set in sled. Cheap to share across threads
/// (`&self` everywhere).
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    /// first seq (u64 BE) → encoded [`codec::IndexChunk`] of up to
    /// [`INDEX_CHUNK`] consecutive decisions: the commit record of appends.
    index_tree: Tree,
    /// request_id ++ 0x00 ++ model → encoded Outcome.
    outcomes: Tree,
    /// seq (u64 BE) → () for every decision that has at least one outcome.
    rewarded: Tree,
    /// request_id → JSON [`Answered`].
    answers: Tree,
    /// decision id → JSON [`FeedbackRecord`] (keyed by the decision that
    /// answered, so joining it to an experience is one lookup).
    feedback: Tree,
    /// The encoded decisions, back to back in sequence order.
    data: DataFile,
    /// Serialises appends.
    writer: Mutex<Writer>,
    /// Serialises `record_feedback`'s read-modify-write.
    feedback_lock: Mutex<()>,
    /// Where each decision lies and which seq each request id has.
    index: RwLock<Index>,
    /// Number of committed decisions, for `len` without a lock.
    count: AtomicU64,
    /// The keys of `rewarded`, sorted, for O(1) random access in sampling.
    rewarded_index: RwLock<Vec<u64>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The append side's state, behind the append lock.
#[derive(Default)]
struct Writer {
    /// Set once an index commit failed half-way through in sled's memory:
    /// further appends are refused until the store is reopened (which
    /// recovers sled's last consistent state).
    poisoned: bool,
    /// Reused encoding buffer: the data of one append, written in one go.
    buf: Vec<u8>,
}

/// Largest encoding buffer kept between appends.
const KEEP_BUF: usize = 16 << 20;

/// The in-memory index of committed decisions, rebuilt from the `index` tree
/// on open: about 40 bytes per decision.
#[derive(Default)]
struct Index {
    /// `ends[seq]`: the data-file offset just past decision `seq` (it starts
    /// where `seq - 1` ends, or at 0). Its last element is the committed end.
    ends: Vec<u64>,
    /// id hash → seq of the first decision whose request id has that hash.
    by_hash: HashMap<u64, u64>,
    /// Request ids whose hash an earlier, different id already took (rare:
    /// a 64-bit hash collision) → seq.
    collided: HashMap<String, u64>,
}

impl Index {
    fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    fn end(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Data-file offset and length of decision `seq`, if committed.
    fn span(&self, seq: u64) -> Option<(u64, usize)> {
        let i = usize::try_from(seq).ok()?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some((start, (end - start) as usize))
    }

    /// Appends the next decision; returns `false` if `hash` is taken, in which
    /// case the caller must [`Index::add_collided`] it by request id.
    fn push(&mut self, len: u64, hash: u64) -> bool {
        let seq = self.len();
        self.ends.push(self.end() + len);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }

    fn add_collided(&mut self, id: String, seq: u64) {
        self.collided.entry(id).or_insert(seq);
    }
}

/// The 64-bit hash of a request id kept in the index (on disk, so it must
/// never change): FNV-1a with a final avalanche (splitmix64's finaliser).
fn id_hash(id: &str) -> u64 {
    // Unit tests force collisions with ids starting "collide-".
    #[cfg(test)]
    if id.starts_with("collide-") {
        return 0x0C01_11DE;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn parse_seq(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Store(format!("bad sequence key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn outcome_prefix(request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(request_id.len() + 1);
    k.extend_from_slice(request_id.as_bytes());
    k.push(0);
    k
}

fn outcome_key(request_id: &str, model: &str) -> Vec<u8> {
    let mut k = outcome_prefix(request_id);
    k.extend_from_slice(model.as_bytes());
    k
}

/// sled's errors as the store's.
fn sled_err(e: sled::Error) -> Error {
    Error::Store(e.to_string())
}

fn lock_err<T>(e: std::sync::PoisonError<T>) -> T {
    // Shared state is only updated after the write it mirrors has succeeded,
    // so a panic elsewhere cannot leave it half-updated.
    e.into_inner()
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`: loads the
    /// index of committed decisions and the rewarded set, and cuts off any
    /// uncommitted tail of the data file.
    ///
    /// sled's background threads can hold the directory's file lock for a
    /// moment after the previous handle in this process was dropped (or
    /// after the previous process exited), so a held lock is retried for up
    /// to a second before it is an error (the error then says another
    /// process has the store open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => break db,
                // sled reports a held lock as an `Other` I/O error with this text.
                Err(sled::Error::Io(e)) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(Error::Store(format!(
                        "opening experience store {}: {e} (is another process using it?)",
                        path.display()
                    )))
                }
            }
        };
        match db.get(FORMAT_KEY).map_err(sled_err)? {
            None => {
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(sled_err)?;
            }
            Some(v) if v.as_ref() == FORMAT.to_be_bytes() => {}
            Some(v) => {
                return Err(Error::Store(format!(
                    "experience store {} has format {:?}, this build reads format {FORMAT}",
                    path.display(),
                    v.as_ref()
                )))
            }
        }
        let index_tree = db.open_tree("index").map_err(sled_err)?;
        let outcomes = db.open_tree("outcomes").map_err(sled_err)?;
        let rewarded = db.open_tree("rewarded").map_err(sled_err)?;
        let answers = db.open_tree("answers").map_err(sled_err)?;
        let feedback = db.open_tree("feedback").map_err(sled_err)?;

        let mut index = Index::default();
        let mut collisions = Vec::new();
        for kv in index_tree.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let first = parse_seq(&k)?;
            let chunk = codec::decode_index_chunk(&v)?;
            if first != index.len() || chunk.offset != index.end() {
                return Err(Error::Store(format!(
                    "corrupt index: entry for seq {first} at offset {} follows {} decisions ending at {}",
                    chunk.offset,
                    index.len(),
                    index.end()
                )));
            }
            for (len, hash) in chunk.entries {
                let seq = index.len();
                if !index.push(len, hash) {
                    collisions.push(seq);
                }
            }
        }
        let data = DataFile::open(&path, index.end())?;
        for seq in collisions {
            let (offset, len) = index
                .span(seq)
                .ok_or_else(|| Error::Store(format!("index has no decision {seq}")))?;
            let decision = codec::decode_decision(&data.read(offset, len)?)?;
            index.add_collided(decision.request_id, seq);
        }

        let len = index.len();
        let mut rewarded_index = Vec::new();
        for kv in rewarded.iter() {
            let (k, _) = kv.map_err(sled_err)?;
            let seq = parse_seq(&k)?;
            // Outcomes are only recorded for committed decisions.
            if seq < len {
                rewarded_index.push(seq);
            }
        }
        Ok(SledStore {
            path,
            db,
            index_tree,
            outcomes,
            rewarded,
            answers,
            feedback,
            data,
            writer: Mutex::new(Writer::default()),
            feedback_lock: Mutex::new(()),
            index: RwLock::new(index),
            count: AtomicU64::new(len),
            rewarded_index: RwLock::new(rewarded_index),
        })
    }

    /// The part of [`SledStore::append_decisions`] under the append lock:
    /// checks, encodes into `buf`, writes, commits and publishes.
    fn append_locked(&self, records: &[DecisionRecord], buf: &mut Vec<u8>, poisoned: &mut bool) -> Result<()> {
        // (record, encoded length, id hash) of each record to write.
        let mut new: Vec<(&DecisionRecord, u64, u64)> = Vec::with_capacity(records.len());
        // Only this writer changes the index, so what this check sees stays
        // true until the commit below.
        for r in records {
            let start = buf.len();
            codec::encode_decision(r, buf);
            let hash = id_hash(&r.request_id);
            if let Some((_, old)) = self.find(&r.request_id, hash)? {
                let same = old == buf[start..] || codec::decode_decision(&old).is_ok_and(|d| d == *r);
                buf.truncate(start);
                if same {
                    continue;
                }
                return Err(Error::InvalidInput(format!(
                    "decision {:?}: request_id already stored with a different record",
                    r.request_id
                )));
            }
            new.push((r, (buf.len() - start) as u64, hash));
        }

        if !new.is_empty() {
            let (first_seq, offset) = {
                let index = self.index.read().unwrap_or_else(lock_err);
                (index.len(), index.end())
            };
            // 1. The records, synced. Past the committed end they are
            //    invisible until step 2 commits them.
            self.data.write_synced(offset, buf)?;
            // 2. The commit: their index entries in one atomic sled batch.
            let mut batch = Batch::default();
            let mut chunk_seq = first_seq;
            let mut chunk_offset = offset;
            let mut entry = Vec::new();
            let mut value = Vec::new();
            for chunk in new.chunks(INDEX_CHUNK) {
                entry.clear();
                entry.extend(chunk.iter().map(|&(_, len, hash)| (len, hash)));
                value.clear();
                codec::encode_index_chunk(chunk_offset, &entry, &mut value);
                batch.insert(&seq_key(chunk_seq), value.as_slice());
                chunk_seq += chunk.len() as u64;
                chunk_offset += entry.iter().map(|&(len, _)| len).sum::<u64>();
            }
            if let Err(e) = self.index_tree.apply_batch(batch) {
                // Part of the batch may be in sled's memory (never in its
                // recovered state): let nothing build on it.
                *poisoned = true;
                return Err(sled_err(e));
            }
            // 3. Publish to readers.
            let mut index = self.index.write().unwrap_or_else(lock_err);
            for &(r, len, hash) in &new {
                let seq = index.len();
                if !index.push(len, hash) {
                    index.add_collided(r.request_id.clone(), seq);
                }
            }
            self.count.store(index.len(), Ordering::Release);
        }
        Ok(())
    }

    /// Seq and encoded record of the committed decision with this request id
    /// (whose hash is `hash`).
    fn find(&self, request_id: &str, hash: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let (by_hash, collided) = {
            let index = self.index.read().unwrap_or_else(lock_err);
            (
                index.by_hash.get(&hash).copied(),
                index.collided.get(request_id).copied(),
            )
        };
        for seq in by_hash.into_iter().chain(collided) {
            if let Some(bytes) = self.read_decision(seq)? {
                if codec::request_id_is(&bytes, request_id)? {
                    return Ok(Some((seq, bytes)));
                }
            }
        }
        Ok(None)
    }

    /// The encoded decision with sequence number `seq`, if committed.
    fn read_decision(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let span = self.index.read().unwrap_or_else(lock_err).span(seq);
        span.map(|(offset, len)| self.data.read(offset, len)).transpose()
    }

    /// The experience with sequence number `seq`, or `None` if there is none.
    fn get_seq(&self, seq: u64) -> Result<Option<Experience>> {
        match self.read_decision(seq)? {
            None => Ok(None),
            Some(bytes) => self.experience(codec::decode_decision(&bytes)?).map(Some),
        }
    }

    /// `decision` joined with its outcomes.
    fn experience(&self, decision: DecisionRecord) -> Result<Experience> {
        let mut outcomes = Vec::new();
        for kv in self.outcomes.scan_prefix(outcome_prefix(&decision.request_id)) {
            let (_, v) = kv.map_err(sled_err)?;
            outcomes.push(codec::decode_outcome(&v)?);
        }
        let feedback = match self.feedback.get(decision.request_id.as_bytes()).map_err(sled_err)? {
            Some(v) => Some(json_decode::<FeedbackRecord>(&v, "feedback")?),
            None => None,
        };
        Ok(Experience {
            decision,
            outcomes,
            feedback,
        })
    }
}

impl ExperienceStore for SledStore {
    /// Durable on return (flushed to disk): the group-commit unit. Many
    /// records, one data write, one fdatasync and one sled flush.
    ///
    /// All or nothing: every record is checked first (`Error::InvalidInput`
    /// for an empty request id or one with a NUL byte, `propensities` not the
    /// length of `candidates`, features with unequal index and value counts, a
    /// request id twice in `records`, or a request id already stored with a
    /// different record), then all are written to the data file in one write,
    /// synced, and committed by one atomic sled batch of index entries. A
    /// record identical to the stored one is skipped, so retrying a call whose
    /// result was lost is safe.
    fn append_decisions(&self, records: &[DecisionRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(records.len());
        for r in records {
            r.validate()?;
            if !seen.insert(r.request_id.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "decision {:?}: request_id appears twice in one append",
                    r.request_id
                )));
            }
        }

        let mut writer = self.writer.lock().unwrap_or_else(lock_err);
        if writer.poisoned {
            return Err(Error::Store(
                "an earlier append failed part-way through its commit; reopen the store".into(),
            ));
        }
        let mut buf = std::mem::take(&mut writer.buf);
        buf.clear();
        let result = self.append_locked(records, &mut buf, &mut writer.poisoned);
        if buf.capacity() <= KEEP_BUF {
            writer.buf = buf;
        }
        drop(writer);
        result?;
        // 4. Make the commit durable (also when everything was a retried
        //    duplicate whose first flush may have failed).
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// Joins outcomes to their decision by request_id; an outcome for an
    /// unknown request_id is `Error::NotFound`. Durable on return. A second
    /// outcome for the same (request_id, model) replaces the first.
    ///
    /// All or nothing: besides `NotFound`, an outcome whose `model` is not
    /// among the decision's `chosen` models, or whose `quality` lies outside
    /// `[0, 1]`, is `Error::InvalidInput` and nothing is written. Within one
    /// call, a later outcome for the same (request_id, model) wins.
    fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // request_id → (seq, chosen models) of its decision.
        let mut decisions: HashMap<&str, (u64, Vec<String>)> = HashMap::new();
        let mut ob = Batch::default();
        let mut value = Vec::new();
        for o in outcomes {
            o.validate()?;
            let id = o.request_id.as_str();
            if !decisions.contains_key(id) {
                let Some((seq, bytes)) = self.find(id, id_hash(id))? else {
                    return Err(Error::NotFound(format!(
                        "outcome for request_id {id:?}: no decision recorded with that id"
                    )));
                };
                let d = codec::decode_decision(&bytes)?;
                decisions.insert(id, (seq, d.chosen));
            }
            let (_, chosen) = &decisions[id];
            if !chosen.contains(&o.model) {
                return Err(Error::InvalidInput(format!(
                    "outcome for request_id {id:?}: model {:?} was not chosen for it (chosen: {chosen:?})",
                    o.model
                )));
            }
            value.clear();
            codec::encode_outcome(o, &mut value);
            ob.insert(outcome_key(id, &o.model), value.as_slice());
        }
        let mut new_seqs: Vec<u64> = {
            let index = self.rewarded_index.read().unwrap_or_else(lock_err);
            decisions
                .values()
                .map(|&(seq, _)| seq)
                .filter(|seq| index.binary_search(seq).is_err())
                .collect()
        };
        new_seqs.sort_unstable();
        // Rewarded entries first, outcomes second, each one atomic batch: a
        // crash in between leaves rewarded entries without outcomes, which
        // sampling skips; never outcomes that sampling cannot reach.
        if !new_seqs.is_empty() {
            let mut rb = Batch::default();
            for &seq in &new_seqs {
                rb.insert(&seq_key(seq), &[]);
            }
            self.rewarded.apply_batch(rb).map_err(sled_err)?;
        }
        self.outcomes.apply_batch(ob).map_err(sled_err)?;
        {
            // Every seq of this call, not only the new ones: sampling may have
            // dropped one as stale (a crash leftover) just before its
            // outcomes landed.
            let mut index = self.rewarded_index.write().unwrap_or_else(lock_err);
            for &(seq, _) in decisions.values() {
                // Outcomes mostly arrive for recent decisions: inserting near
                // the end of the sorted vector is cheap.
                if let Err(pos) = index.binary_search(&seq) {
                    index.insert(pos, seq);
                }
            }
        }
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// The decision with this request id and every outcome recorded for it
    /// (ordered by model name), or `None` if no such decision was appended.
    fn get(&self, request_id: &str) -> Result<Option<Experience>> {
        if validate_request_id(request_id).is_err() {
            return Ok(None);
        }
        match self.find(request_id, id_hash(request_id))? {
            None => Ok(None),
            Some((_, bytes)) => self.experience(codec::decode_decision(&bytes)?).map(Some),
        }
    }

    /// Records which decision and model answered each request, so feedback
    /// sent later on the request id finds its answer. Not flushed: durable
    /// with the next flush of any call (sled also flushes every 500 ms).
    /// Losing one in a crash only means feedback on that request is refused.
    fn record_answers(&self, answers: &[Answered]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let mut b = Batch::default();
        for a in answers {
            validate_request_id(&a.request_id)?;
            b.insert(a.request_id.as_bytes(), json_encode(a)?);
        }
        self.answers.apply_batch(b).map_err(sled_err)?;
        Ok(())
    }

    /// The answer recorded for a request id.
    fn answered(&self, request_id: &str) -> Result<Option<Answered>> {
        match self.answers.get(request_id.as_bytes()).map_err(sled_err)? {
            Some(v) => json_decode(&v, "answer").map(Some),
            None => Ok(None),
        }
    }

    /// Joins feedback to the answer of `request_id`. Durable on return.
    ///
    /// - An id with no recorded answer is `Error::NotFound` (unknown, or no
    ///   model answered it).
    /// - A repeat replaces the earlier feedback (its `revisions` count goes
    ///   up); the earlier record is returned.
    /// - Feedback that arrives more than `window_ms` after the answer is
    ///   kept with `late: true` and does not change the outcome.
    /// - Feedback in time sets the answering outcome's quality, so the
    ///   trainer learns it instead of the judged or default quality.
    fn record_feedback(
        &self,
        request_id: &str,
        feedback: Feedback,
        window_ms: u64,
    ) -> Result<(FeedbackRecord, Option<FeedbackRecord>)> {
        if !(0.0..=1.0).contains(&feedback.quality) {
            return Err(Error::InvalidInput(format!(
                "feedback quality {} must lie in [0, 1]",
                feedback.quality
            )));
        }
        // One feedback write at a time: read, relabel and record together,
        // so concurrent repeats cannot lose a revision or split the value.
        let _one_at_a_time = self.feedback_lock.lock().unwrap_or_else(lock_err);
        let answered = self.answered(request_id)?.ok_or_else(|| {
            Error::NotFound(format!(
                "request_id {request_id:?}: no answered request with that id (unknown, or every model failed)"
            ))
        })?;
        let key = answered.decision_id.clone();
        let previous = match self.feedback.get(key.as_bytes()).map_err(sled_err)? {
            Some(v) => Some(json_decode::<FeedbackRecord>(&v, "feedback")?),
            None => None,
        };
        let late = feedback.time_ms.saturating_sub(answered.time_ms) > window_ms;
        let mut record = FeedbackRecord {
            revisions: previous.as_ref().map_or(1, |p| p.revisions + 1),
            feedback,
            answered,
            late,
            applied: false,
        };
        if !late {
            let current = self
                .outcomes
                .get(outcome_key(&record.answered.decision_id, &record.answered.model))
                .map_err(sled_err)?
                .map(|v| codec::decode_outcome(&v))
                .transpose()?;
            if let Some(mut o) = current {
                o.quality = Some(record.feedback.quality);
                self.record_outcomes(std::slice::from_ref(&o))?;
                record.applied = true;
            }
        }
        self.feedback
            .insert(key.as_bytes(), json_encode(&record)?)
            .map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok((record, previous))
    }

    /// Number of decisions.
    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire) as usize
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` experiences drawn with replacement; only experiences that have at
    /// least one outcome are returned. Returns fewer than `n` only if the
    /// store has none with outcomes (then an empty vector).
    fn sample(&self, n: usize, how: &Sampling, rng: &mut dyn RngCore) -> Result<Vec<Experience>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let picks: Vec<u64> = {
                let index = self.rewarded_index.read().unwrap_or_else(lock_err);
                if index.is_empty() {
                    break;
                }
                (out.len()..n)
                    .map(|_| index[pick(index.len(), how, &mut &mut *rng)])
                    .collect()
            };
            let mut stale = Vec::new();
            for seq in picks {
                match self.get_seq(seq)? {
                    Some(e) if !e.outcomes.is_empty() => out.push(e),
                    // A rewarded entry whose outcomes never got written (a
                    // crash between the two batches of `record_outcomes`):
                    // drop it from the in-memory index and draw again. Each
                    // round either fills `out` or shrinks the index.
                    _ => stale.push(seq),
                }
            }
            if !stale.is_empty() {
                let mut index = self.rewarded_index.write().unwrap_or_else(lock_err);
                index.retain(|s| !stale.contains(s));
            }
        }
        Ok(out)
    }

    /// Experiences in insertion order, from sequence number `from` (for
    /// export/iteration), up to the newest committed one.
    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = Result<Experience>> + '_> {
        Box::new((from..).map_while(move |seq| self.get_seq(seq).transpose()))
    }

    /// Saves a small JSON document under `key` in the tree named `kind`
    /// (experiments' definitions live beside the experience they produce).
    /// Flushed before returning: a saved document survives a crash.
    fn put_doc_json(&self, kind: &str, key: &str, json: &[u8]) -> Result<()> {
        self.db
            .open_tree(kind)
            .map_err(sled_err)?
            .insert(key.as_bytes(), json)
            .map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// Every document saved under `kind`, in key order.
    fn docs_json(&self, kind: &str) -> Result<Vec<Vec<u8>>> {
        self.db
            .open_tree(kind)
            .map_err(sled_err)?
            .iter()
            .map(|kv| Ok(kv.map_err(sled_err)?.1.to_vec()))
            .collect()
    }

    /// Forces everything written so far to disk.
    fn flush(&self) -> Result<()> {
        self.data.sync()?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }
}

fn json_encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(format!("encoding a record: {e}")))
}

fn json_decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("corrupt {what} record: {e}")))
}

/// A position in `0..len` (len > 0) drawn as `how` says; the newest is `len - 1`.
fn pick(len: usize, how: &Sampling, rng: &mut impl Rng) -> usize {
    match *how {
        Sampling::Uniform => rng.gen_range(0..len),
        Sampling::Recent { half_life: 0 } => len - 1,
        Sampling::Recent { half_life } => {
            // Inverse CDF of the exponential with rate ln2/half_life truncated
            // to [0, len): no rejection loop, however long the half-life.
            let rate = std::f64::consts::LN_2 / half_life as f64;
            let mass = -(-rate * len as f64).exp_m1(); // P(age < len), untruncated
            let u: f64 = rng.gen();
            let age = -(-u * mass).ln_1p() / rate;
            let age = (age as usize).min(len - 1);
            len - 1 - age
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::features::Features;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rec(i: u64) -> DecisionRecord {
        DecisionRecord {
            request_id: format!("req-{i}"),
            time_ms: 1_700_000_000_000 + i,
            features: Features {
                dim: 64,
                indices: vec![1, (i % 60) as u32 + 2],
                values: vec![0.5, i as f32],
            },
            candidates: vec!["a".into(), "b".into(), "c".into()],
            propensities: vec![0.5, 0.25, 0.25],
            chosen: vec!["a".into(), "c".into()],
            policy_version: 7,
            cost_weight: 0.1,
            latency_weight: 0.01,
            task: i.is_multiple_of(2).then(|| "mmlu/anatomy".to_string()),
            experiment: None,
            shadow: None,
        }
    }

    fn out(i: u64, model: &str, q: f32) -> Outcome {
        Outcome {
            request_id: format!("req-{i}"),
            model: model.into(),
            quality: Some(q),
            cost_usd: 1e-4,
            latency_ms: 120.0,
            error: None,
            time_ms: 1_700_000_001_000 + i,
        }
    }

    /// Opens the store at `path` again ([`SledStore::open`] waits out the
    /// file lock sled's threads may still hold).
    fn reopen(path: impl AsRef<Path>) -> Result<SledStore> {
        SledStore::open(path)
    }

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path().join("store")).unwrap();
        (dir, s)
    }

    fn seq_of(e: &Experience) -> u64 {
        e.decision.request_id[4..].parse().unwrap()
    }

    #[test]
    fn round_trip() {
        let (_d, s) = store();
        assert!(s.is_empty());
        let recs: Vec<_> = (0..10).map(rec).collect();
        s.append_decisions(&recs).unwrap();
        assert_eq!(s.len(), 10);
        for r in &recs {
            let e = s.get(&r.request_id).unwrap().unwrap();
            assert_eq!(&e.decision, r);
            assert!(e.outcomes.is_empty());
        }
        assert!(s.get("req-10").unwrap().is_none());
        assert!(s.get("").unwrap().is_none());
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
        assert_eq!(all, recs);
    }

    #[test]
    fn outcomes_join_to_their_decision() {
        let (_d, s) = store();
        s.append_decisions(&[rec(0), rec(1)]).unwrap();
        s.record_outcomes(&[out(1, "c", 0.5), out(1, "a", 1.0)]).unwrap();
        let e = s.get("req-1").unwrap().unwrap();
        assert_eq!(e.decision, rec(1));
        assert_eq!(e.outcomes, vec![out(1, "a", 1.0), out(1, "c", 0.5)]);
        assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
    }

    #[test]
    fn a_second_outcome_replaces_the_first() {
        let (_d, s) = store();
        s.append_decisions(&[rec(0)]).unwrap();
        s.record_outcomes(&[out(0, "a", 0.0)]).unwrap();
        let mut later = out(0, "a", 0.9);
        later.error = Some("judge retried".into());
        s.record_outcomes(&[later.clone()]).unwrap();
        assert_eq!(s.get("req-0").unwrap().unwrap().outcomes, vec![later]);
        // Within one call the later one wins.
        s.record_outcomes(&[out(0, "c", 0.1), out(0, "c", 0.2)]).unwrap();
        assert_eq!(s.get("req-0").unwrap().unwrap().outcomes[1], out(0, "c", 0.2));
    }

    #[test]
    fn unknown_request_id_is_not_found_and_writes_nothing() {
        let (_d, s) = store();
        s.append_decisions(&[rec(0)]).unwrap();
        let err = s.record_outcomes(&[out(0, "a", 1.0), out(5, "a", 1.0)]).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert_eq!(err.http_status(), 404);
        assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(s.sample(4, &Sampling::Uniform, &mut rng).unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_rejected_whole() {
        let (_d, s) = store();
        let mut bad = rec(1);
        bad.propensities.pop();
        assert!(matches!(
            s.append_decisions(&[rec(0), bad]),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            s.append_decisions(&[rec(2), rec(2)]),
            Err(Error::InvalidInput(_))
        ));
        let mut nul = rec(3);
        nul.request_id = "a\0b".into();
        assert!(matches!(s.append_decisions(&[nul]), Err(Error::InvalidInput(_))));
        assert!(s.is_empty());
        assert!(s.get("req-0").unwrap().is_none());

        s.append_decisions(&[rec(0)]).unwrap();
        // Same record again: an idempotent retry, no new sequence number.
        s.append_decisions(&[rec(0), rec(1)]).unwrap();
        assert_eq!(s.len(), 2);
        let mut changed = rec(0);
        changed.policy_version += 1;
        assert!(matches!(s.append_decisions(&[changed]), Err(Error::InvalidInput(_))));
        assert_eq!(s.get("req-0").unwrap().unwrap().decision, rec(0));

        // A model that was not chosen, or a quality outside [0, 1].
        assert!(matches!(
            s.record_outcomes(&[out(0, "b", 1.0)]),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            s.record_outcomes(&[out(0, "a", 1.5)]),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            s.record_outcomes(&[out(0, "a", f32::NAN)]),
            Err(Error::InvalidInput(_))
        ));
        assert!(s.get("req-0").unwrap().unwrap().outcomes.is_empty());
    }

    #[test]
    fn sampling_returns_only_experiences_with_outcomes() {
        let (_d, s) = store();
        let recs: Vec<_> = (0..200).map(rec).collect();
        s.append_decisions(&recs).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert!(s.sample(10, &Sampling::Uniform, &mut rng).unwrap().is_empty());
        assert!(s
            .sample(10, &Sampling::Recent { half_life: 5 }, &mut rng)
            .unwrap()
            .is_empty());

        let with: Vec<u64> = (0..200).step_by(20).collect();
        let outs: Vec<_> = with.iter().map(|&i| out(i, "a", 0.5)).collect();
        s.record_outcomes(&outs).unwrap();
        for how in [Sampling::Uniform, Sampling::Recent { half_life: 3 }] {
            let got = s.sample(500, &how, &mut rng).unwrap();
            assert_eq!(got.len(), 500);
            let mut seen = HashSet::new();
            for e in &got {
                assert!(!e.outcomes.is_empty());
                assert!(with.contains(&seq_of(e)));
                assert_eq!(e.decision, rec(seq_of(e)));
                seen.insert(seq_of(e));
            }
            assert_eq!(seen.len(), with.len(), "{how:?}");
        }
        assert!(s.sample(0, &Sampling::Uniform, &mut rng).unwrap().is_empty());
    }

    fn rewarded_store(n: u64) -> (tempfile::TempDir, SledStore) {
        let (d, s) = store();
        let recs: Vec<_> = (0..n).map(rec).collect();
        s.append_decisions(&recs).unwrap();
        let outs: Vec<_> = (0..n).map(|i| out(i, "a", 1.0)).collect();
        s.record_outcomes(&outs).unwrap();
        (d, s)
    }

    #[test]
    fn recent_sampling_favours_new_records() {
        let n = 5000u64;
        let (_d, s) = rewarded_store(n);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let half_life = 250;
        let ages = |how: Sampling, rng: &mut ChaCha8Rng| -> Vec<u64> {
            let mut a: Vec<u64> = s
                .sample(4000, &how, rng)
                .unwrap()
                .iter()
                .map(|e| n - 1 - seq_of(e))
                .collect();
            a.sort_unstable();
            a
        };
        let recent = ages(Sampling::Recent { half_life }, &mut rng);
        let median = recent[recent.len() / 2];
        // The median of the age distribution is the half-life.
        assert!((200..=300).contains(&median), "median age {median}");
        let young = recent.iter().filter(|&&a| a < 4 * half_life as u64).count();
        // P(age < 4 half-lives) = 15/16.
        assert!(young as f64 / recent.len() as f64 > 0.9, "{young}");
        let uniform = ages(Sampling::Uniform, &mut rng);
        let umedian = uniform[uniform.len() / 2];
        assert!((2000..=3000).contains(&umedian), "uniform median age {umedian}");

        // A half-life far longer than the store: nearly uniform, and no
        // sample outside the store (truncation, not rejection).
        let long = ages(Sampling::Recent { half_life: 1_000_000 }, &mut rng);
        assert!(long.iter().all(|&a| a < n));
        let lmedian = long[long.len() / 2];
        assert!((2000..=3000).contains(&lmedian), "long half-life median {lmedian}");
        // Half-life 0: always the newest.
        let zero = ages(Sampling::Recent { half_life: 0 }, &mut rng);
        assert!(zero.iter().all(|&a| a == 0));
    }

    #[test]
    fn uniform_sampling_covers_the_range() {
        let n = 1000u64;
        let (_d, s) = rewarded_store(n);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let draws = 20_000;
        let got = s.sample(draws, &Sampling::Uniform, &mut rng).unwrap();
        assert_eq!(got.len(), draws);
        let mut deciles = [0usize; 10];
        let mut seen = HashSet::new();
        for e in &got {
            let i = seq_of(e);
            deciles[(i * 10 / n) as usize] += 1;
            seen.insert(i);
        }
        // Every record is hit with probability 1 - e^-20.
        assert_eq!(seen.len(), n as usize);
        for (d, &c) in deciles.iter().enumerate() {
            assert!((1700..=2300).contains(&c), "decile {d}: {c} of {draws}");
        }
    }

    #[test]
    fn reopening_keeps_sequence_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
            s.record_outcomes(&[out(2, "a", 0.25)]).unwrap();
        }
        let s = reopen(&path).unwrap();
        assert_eq!(s.len(), 5);
        s.append_decisions(&(5..8).map(rec).collect::<Vec<_>>()).unwrap();
        s.append_decisions(&[rec(8)]).unwrap();
        assert_eq!(s.len(), 9);
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap()).collect();
        assert_eq!(
            all.iter().map(|e| e.decision.clone()).collect::<Vec<_>>(),
            (0..9).map(rec).collect::<Vec<_>>()
        );
        assert_eq!(all[2].outcomes, vec![out(2, "a", 0.25)]);
        let tail: Vec<_> = s.iter_from(5).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(tail, vec![5, 6, 7, 8]);
        assert_eq!(s.iter_from(100).count(), 0);
        // The rewarded index survived the reopen.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let got = s.sample(3, &Sampling::Uniform, &mut rng).unwrap();
        assert!(got.iter().all(|e| seq_of(e) == 2));
        assert_eq!(got.len(), 3);
    }

    fn data_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("store").join(crate::data_file::DATA_FILE)
    }

    fn file_len(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().len()
    }

    /// SIGKILL after the data write, before the sled commit: the records sit
    /// past the committed end of the data file with no index entry. They were
    /// never acknowledged; reopening cuts them off and a retry appends them
    /// again.
    #[test]
    fn uncommitted_data_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
        }
        let committed = file_len(&data_path(&dir));
        let mut tail = Vec::new();
        for i in 5..8 {
            codec::encode_decision(&rec(i), &mut tail);
        }
        tail.extend_from_slice(&[1, 2, 3]); // and a torn write
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(data_path(&dir)).unwrap();
            f.write_all(&tail).unwrap();
        }
        let s = reopen(&path).unwrap();
        assert_eq!(file_len(&data_path(&dir)), committed);
        assert_eq!(s.len(), 5);
        assert!(s.get("req-5").unwrap().is_none());
        assert_eq!(s.iter_from(0).count(), 5);
        assert!(matches!(
            s.record_outcomes(&[out(6, "a", 1.0)]),
            Err(Error::NotFound(_))
        ));
        s.append_decisions(&(5..8).map(rec).collect::<Vec<_>>()).unwrap();
        drop(s);
        let s = reopen(&path).unwrap();
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
        assert_eq!(all, (0..8).map(rec).collect::<Vec<_>>());
    }

    /// An index that commits more than the data file holds means acknowledged
    /// data is gone: open says so instead of serving garbage.
    #[test]
    fn data_file_shorter_than_index_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..3).map(rec).collect::<Vec<_>>()).unwrap();
        }
        let f = std::fs::OpenOptions::new().write(true).open(data_path(&dir)).unwrap();
        f.set_len(file_len(&data_path(&dir)) - 1).unwrap();
        drop(f);
        let err = reopen(&path).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
    }

    #[test]
    fn other_store_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let db = sled::open(&path).unwrap();
            db.insert(FORMAT_KEY, &1u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = reopen(&path).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
    }

    /// SIGKILL between the two batches of `record_outcomes`: rewarded entries
    /// without outcomes. Sampling skips them, and outcomes recorded later
    /// make them count.
    #[test]
    fn rewarded_entries_without_outcomes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..10).map(rec).collect::<Vec<_>>()).unwrap();
            s.record_outcomes(&[out(2, "a", 1.0), out(4, "c", 0.5)]).unwrap();
            for seq in [7u64, 8] {
                s.rewarded.insert(seq_key(seq), &[]).unwrap();
            }
            s.flush().unwrap();
        }
        let s = reopen(&path).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for how in [Sampling::Uniform, Sampling::Recent { half_life: 0 }] {
            let got = s.sample(100, &how, &mut rng).unwrap();
            assert_eq!(got.len(), 100);
            assert!(got.iter().all(|e| [2, 4].contains(&seq_of(e))), "{how:?}");
        }
        s.record_outcomes(&[out(7, "c", 0.25)]).unwrap();
        let got = s.sample(20, &Sampling::Recent { half_life: 0 }, &mut rng).unwrap();
        assert!(got.iter().all(|e| seq_of(e) == 7));

        // Only such entries: sampling ends with nothing instead of looping.
        let (_d2, s2) = store();
        s2.append_decisions(&[rec(0), rec(1)]).unwrap();
        for seq in [0u64, 1] {
            s2.rewarded.insert(seq_key(seq), &[]).unwrap();
        }
        s2.rewarded_index.write().unwrap().extend([0, 1]);
        assert!(s2.sample(5, &Sampling::Uniform, &mut rng).unwrap().is_empty());
    }

    fn rec_id(i: u64, id: &str) -> DecisionRecord {
        DecisionRecord {
            request_id: id.into(),
            ..rec(i)
        }
    }

    #[test]
    fn hash_collisions_are_resolved_by_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let a = rec_id(0, "collide-a");
        let b = rec_id(1, "collide-b");
        let c = rec_id(2, "collide-c");
        assert_eq!(id_hash(&a.request_id), id_hash(&c.request_id));
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&[a.clone(), b.clone()]).unwrap();
            s.append_decisions(&[rec(9), c.clone()]).unwrap();
            // Identical retries are no-ops, changed records are refused.
            s.append_decisions(&[c.clone(), a.clone()]).unwrap();
            assert_eq!(s.len(), 4);
            let mut changed = b.clone();
            changed.time_ms += 1;
            assert!(matches!(s.append_decisions(&[changed]), Err(Error::InvalidInput(_))));
            let mut o = out(0, "c", 0.5);
            o.request_id = c.request_id.clone();
            s.record_outcomes(&[o]).unwrap();
        }
        let s = reopen(&path).unwrap();
        for r in [&a, &b, &c] {
            assert_eq!(&s.get(&r.request_id).unwrap().unwrap().decision, r);
        }
        assert!(s.get("collide-d").unwrap().is_none());
        assert_eq!(s.get("collide-c").unwrap().unwrap().outcomes.len(), 1);
        assert!(s.get("collide-a").unwrap().unwrap().outcomes.is_empty());
        let ids: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision.request_id).collect();
        assert_eq!(ids, ["collide-a", "collide-b", "req-9", "collide-c"]);
        s.append_decisions(&[rec_id(3, "collide-e")]).unwrap();
        assert_eq!(s.get("collide-e").unwrap().unwrap().decision, rec_id(3, "collide-e"));
    }

    #[test]
    fn large_appends_span_several_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let n = 2 * INDEX_CHUNK as u64 + 88;
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..n).map(rec).collect::<Vec<_>>()).unwrap();
            assert_eq!(s.index_tree.len(), 3);
            s.append_decisions(&[rec(n)]).unwrap();
            assert_eq!(s.index_tree.len(), 4);
        }
        let s = reopen(&path).unwrap();
        assert_eq!(s.len() as u64, n + 1);
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
        assert_eq!(all, (0..=n).map(rec).collect::<Vec<_>>());
        for i in [0, 255, 256, 511, 512, n] {
            assert_eq!(s.get(&format!("req-{i}")).unwrap().unwrap().decision, rec(i));
        }
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SledStore>();
        let (_d, s) = store();
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let s = &s;
                scope.spawn(move || {
                    for b in 0..5u64 {
                        let base = t * 1000 + b * 10;
                        s.append_decisions(&(base..base + 10).map(rec).collect::<Vec<_>>())
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(s.len(), 200);
        // Dense, every decision readable, each thread's batches in order.
        let ids: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(ids.len(), 200);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
        for t in 0..4u64 {
            let mine: Vec<u64> = ids.iter().copied().filter(|i| i / 1000 == t).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "thread {t}: {mine:?}");
        }
        // The index entries the threads committed are contiguous.
        let dir = s.path.clone();
        drop(s);
        assert_eq!(reopen(dir).unwrap().len(), 200);
    }
}
