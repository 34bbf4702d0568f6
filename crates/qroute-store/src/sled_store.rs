//! [`SledStore`]: the experience store on sled plus append-only data segments.
//! See the module docs of [the crate docs](crate) for the layout, the flush
//! policy, retention and what a crash can leave behind.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::{Rng, RngCore};
use sled::{Batch, Tree};

use qroute_core::error::{Error, Result};
use qroute_core::store::{ExperienceStore, Pruned, Retention, Sampling, Truncation};

use super::codec;
use super::data_file::{self, DataFile};
use super::index_tables::{Ends, IdTable};
use super::newest::{self, Joinable, NewestDecisions};
use super::recent::{Lookup, Recent};
use super::rewarded::RewardedSet;
use qroute_core::record::{
    validate_request_id, Answered, DecisionRecord, Experience, Feedback, FeedbackRecord, Outcome,
};

/// The key in sled's default tree that records the store format.
const FORMAT_KEY: &[u8] = b"qroute.store.format";
/// The store format this code writes: decisions in segments, retention,
/// records framed (length and checksum) in the segments from
/// [`FRAMED_FROM_KEY`] on, outcomes and answers keyed by their decision's
/// sequence number.
const FORMAT: u64 = 5;
/// Outcomes and answers keyed by request id, with a `rewarded` tree beside
/// them: still read, their rows moved to [`OUTCOMES_TREE`] and
/// [`ANSWERS_TREE`] on open and the store marked [`FORMAT`].
const FORMAT_OUTCOMES_BY_ID: u64 = 4;
/// Segments without frames: still read, and marked [`FORMAT`] on open, with
/// the next append starting a framed segment (and outcomes moved as for
/// [`FORMAT_OUTCOMES_BY_ID`]).
const FORMAT_UNFRAMED: u64 = 3;
/// The format before segments (one `decisions.dat`): still read, and
/// marked [`FORMAT`] on open (its data file is read as the first segment).
/// Format 1 kept decisions in sled and is refused.
const FORMAT_SINGLE_FILE: u64 = 2;
/// The key in sled's default tree that holds the first sequence number
/// (u64 BE) of the first segment whose records are framed: 0 for a store
/// created as format 4, the length at the upgrade for an older one.
const FRAMED_FROM_KEY: &[u8] = b"qroute.store.framed_from";
/// The key in sled's default tree that records what retention removed: the
/// encoded [`Truncation`]. Its `first_kept` is the commit point of a prune.
const TRUNCATION_KEY: &[u8] = b"qroute.store.truncation";
/// Decisions per entry of the `index` tree. Keeps entries at a few KB: sled
/// rewrites whole leaves (up to 17 entries), and a leaf written as one log
/// message over a quarter of sled's segment size (128 KB by default) goes to
/// a separate "blob" file, which sled 0.34 never fsyncs.
const INDEX_CHUNK: usize = 256;
/// The sled tree of outcomes: seq (u64 BE) ++ model → encoded Outcome.
/// Sequential keys, where format 4's were request ids: a row lands in the
/// tree's newest leaf instead of a random one far outside sled's cache, and
/// the tree alone says which decisions are rewarded.
const OUTCOMES_TREE: &str = "outcomes_by_seq";
/// The sled tree of answers: seq (u64 BE) of the request's decision → JSON
/// [`Answered`]; sequential for the same reason.
const ANSWERS_TREE: &str = "answers_by_seq";
/// Format 4's trees, keyed by request id: emptied into the trees above and
/// dropped on open, `rewarded` with them.
const BY_ID_TREES: [(&str, &str); 2] = [("outcomes", OUTCOMES_TREE), ("answers", ANSWERS_TREE)];
const REWARDED_TREE: &str = "rewarded";
/// Pruned decisions whose rows are deleted per sled batch.
const PURGE_BATCH: usize = 1024;

/// Default size at which the store starts a new data segment: retention
/// frees disk a whole segment at a time, so this is its granularity (about
/// 35,000 decisions of 1.8 KB), while keeping the number of files small.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default bound on sled's in-memory page cache. sled's own default is
/// 1 GiB, which it fills towards as the store grows, and it counts pages by
/// their serialised size, so the memory it holds is a few times the bound:
/// with 32 MiB, heaptrack put 55 MB of a 70 MB heap peak in sled's cached
/// nodes after 30k requests, and a gateway at 1,000 req/s grew 1.3 KB per
/// request. With 4 MiB it grows 0.37 KB per request over the same run, at
/// the same CPU per request: the outcome and answer rows are written once
/// and read back mostly while recent.
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 20;

/// How many of the newest decoded experiences replay sampling keeps. The
/// trainer's default sampling halves its weight every 5,000 rewarded
/// decisions, so the newest 16,384 receive about 90% of its draws: those
/// come from memory instead of a read, a decode and sled lookups each
/// (8,192 slots left a third of the draws, and most of the trainer's CPU,
/// outside). A short prompt's experience is about 1 KB decoded, so the
/// cache holds about 16 MB once full; it fills only while a trainer samples.
pub const DEFAULT_RECENT_EXPERIENCES: usize = 16_384;

/// How [`SledStore::open_with`] opens a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Create the store when `path` holds none (`true`, as
    /// [`SledStore::open`]); `false` refuses instead and creates nothing (as
    /// [`SledStore::open_existing`]).
    pub create: bool,
    /// An append starts a new data segment once the current one holds this
    /// many bytes ([`DEFAULT_SEGMENT_BYTES`]) ...
    pub segment_bytes: u64,
    /// ... or this many decisions (unlimited by default). Smaller segments
    /// let retention follow its limits more closely, at one file each.
    pub segment_decisions: u64,
    /// Bound on sled's page cache ([`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: u64,
    /// Decoded experiences kept for replay sampling, by sequence number
    /// ([`DEFAULT_RECENT_EXPERIENCES`]; 0 keeps none).
    pub recent_experiences: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            create: true,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_decisions: u64::MAX,
            cache_bytes: DEFAULT_CACHE_BYTES,
            recent_experiences: DEFAULT_RECENT_EXPERIENCES,
        }
    }
}

/// The experience store: decisions in append-only data segments, their
/// index, outcomes and the rewarded set in sled. Cheap to share across
/// threads (`&self` everywhere).
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    /// first seq (u64 BE) → encoded [`codec::IndexChunk`] of up to
    /// [`INDEX_CHUNK`] consecutive decisions: the commit record of appends.
    index_tree: Tree,
    /// seq (u64 BE) ++ model → encoded Outcome ([`OUTCOMES_TREE`]).
    outcomes: Tree,
    /// seq (u64 BE) → JSON [`Answered`] ([`ANSWERS_TREE`]).
    answers: Tree,
    /// decision id → JSON [`FeedbackRecord`] (keyed by the decision that
    /// answered, so joining it to an experience is one lookup).
    feedback: Tree,
    /// When an append starts a new segment.
    segment_bytes: u64,
    segment_decisions: u64,
    /// Serialises appends (and the commit of a prune).
    writer: Mutex<Writer>,
    /// Serialises `record_feedback`'s read-modify-write.
    feedback_lock: Mutex<()>,
    /// Serialises `apply_retention` calls.
    prune_lock: Mutex<()>,
    /// Held (shared) by writes that join rows to a decision (outcomes,
    /// feedback) from finding the decision until their rows are written, and
    /// (exclusive) by a prune while it removes decisions from the index: a
    /// row is either written before the prune deletes the rows of its
    /// decision, or its decision is no longer found.
    join_gate: RwLock<()>,
    /// Where each decision lies and which seq each request id has.
    index: RwLock<Index>,
    /// Number of committed decisions, for `len` without a lock.
    count: AtomicU64,
    /// The decisions with outcomes (the seqs of `outcomes`' keys), sorted,
    /// for O(1) random access in sampling.
    rewarded: RewardedSet,
    /// Decoded experiences replay sampling drew lately, forgotten when a
    /// write changes them.
    recent: Option<Recent>,
    /// [`id_hash`] of every decision id with a `feedback` row (a superset:
    /// retention leaves them). Most decisions get no feedback, and reading
    /// an experience then skips a lookup at a random key in a tree far
    /// larger than sled's cache: half of a sampling miss's reads.
    with_feedback: RwLock<HashSet<u64>>,
    /// What joins need of the newest appended decisions, so an outcome or
    /// answer for a decision just written reads nothing back from disk.
    newest: NewestDecisions,
}

/// A store closed cleanly leaves its newest segment as long as its records
/// (without the zeros written ahead of them).
impl Drop for SledStore {
    fn drop(&mut self) {
        let index = self.index.read().unwrap_or_else(lock_err);
        if let Some(seg) = index.segments.last() {
            if let Err(e) = seg.file.seal(index.end() - seg.start) {
                tracing::warn!("experience store {}: {e}", self.path.display());
            }
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("first_kept", &self.first_kept())
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

/// One data segment: the decisions from `first_seq` up to the next segment's
/// first (or the newest), back to back.
struct Segment {
    first_seq: u64,
    /// Position of its first byte in the store's "logical" data stream: the
    /// concatenation of every segment ever written, in which the `index`
    /// tree's offsets count (so a single-file store's offsets stay valid).
    start: u64,
    file: DataFile,
    /// Whether its records are framed (see `data_file.rs`): every segment a
    /// format 4 store started.
    framed: bool,
    /// The newest `time_ms` of its decisions; `None` until retention first
    /// needs it (read from the file once; appends keep it up to date).
    max_time: Mutex<Option<u64>>,
}

impl Segment {
    /// The record stored at `offset` of its file in `len` bytes (its frame,
    /// where it has one).
    fn record(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.file.read(offset, len)?;
        if self.framed {
            data_file::unframe(bytes)
        } else {
            Ok(bytes)
        }
    }
}

/// The in-memory index of the stored decisions, rebuilt from the `index`
/// tree on open: about 12 bytes per decision.
struct Index {
    /// Sequence number of the first decision in `ends`: the oldest decision
    /// retention kept.
    base: u64,
    /// Where decision `seq` lies (at `seq - base`); its end is the
    /// committed end.
    ends: Ends,
    /// Which seq each request id has.
    ids: IdTable,
    /// The data segments holding `base..len()`, oldest first; the last one is
    /// where appends go (it may be empty).
    segments: Vec<Arc<Segment>>,
}

/// Where one segment's decisions lie: seqs `first..end_seq`, ending at
/// logical offset `end`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    first: u64,
    end_seq: u64,
    end: u64,
}

/// What a prune took out of the [`Index`]: enough to find the request ids
/// of the removed decisions (their rows are deleted after the commit).
struct Removed {
    /// (seq, logical start, logical end) of each removed decision.
    spans: Vec<(u64, u64, u64)>,
    segments: Vec<Arc<Segment>>,
}

impl Index {
    fn new(base: u64) -> Index {
        Index {
            base,
            ends: Ends::new(0),
            ids: IdTable::default(),
            segments: Vec::new(),
        }
    }

    /// One past the newest seq.
    fn len(&self) -> u64 {
        self.base + self.ends.len() as u64
    }

    /// The committed end (logical).
    fn end(&self) -> u64 {
        self.ends.end()
    }

    /// Logical start and end of decision `seq`, if stored.
    fn logical_span(&self, seq: u64) -> Option<(u64, u64)> {
        self.ends.span(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    /// The segment, offset in its file and length of decision `seq`, if
    /// stored.
    fn span(&self, seq: u64) -> Option<(Arc<Segment>, u64, usize)> {
        let (start, end) = self.logical_span(seq)?;
        let seg = segment_of(&self.segments, seq)?;
        Some((seg.clone(), start.checked_sub(seg.start)?, (end - start) as usize))
    }

    fn bounds(&self, i: usize) -> Bounds {
        let seg = &self.segments[i];
        let (end_seq, end) = match self.segments.get(i + 1) {
            Some(next) => (next.first_seq, next.start),
            None => (self.len(), self.end()),
        };
        Bounds {
            first: seg.first_seq,
            end_seq,
            end,
        }
    }

    /// Appends the next decision, `len` bytes long; returns `false` if
    /// `hash` is taken, in which case the caller must
    /// [`IdTable::insert_collided`] it by request id.
    fn push(&mut self, len: u32, hash: u64) -> bool {
        let seq = self.len();
        self.ends.push(len);
        self.ids.insert(hash, seq)
    }

    /// Forgets the decisions before `new_base` (a segment boundary, or
    /// `len()`) and the segments holding them.
    fn prune_to(&mut self, new_base: u64) -> Removed {
        let k = (new_base.saturating_sub(self.base) as usize).min(self.ends.len());
        let old_base = self.base;
        let spans = (self.ends.spans(k).enumerate())
            .map(|(i, (start, end))| (old_base + i as u64, start, end))
            .collect();
        self.ends.drop_front(k);
        self.base += k as u64;
        let base = self.base;
        self.ids.retain_from(base);
        let keep_from = self.segments.partition_point(|s| s.first_seq < base);
        let segments = self.segments.drain(..keep_from).collect();
        Removed { spans, segments }
    }
}

/// The index entries (with the seq of their first decision), one run per
/// data file, of the framed records past `index`'s committed end: the synced
/// tail of an append whose index entries a crash kept sled from writing.
/// Adds them to `index`, and the start of each data file they continue into
/// to `file_starts`. Scans the data file holding the committed end from
/// there, then each file that starts where the last record found ends; stops
/// at the first torn or damaged frame (an append that was never
/// acknowledged: its sync had not returned).
fn recover_tail(
    index: &mut Index,
    files: &[(u64, PathBuf)],
    file_starts: &mut HashMap<u64, Option<u64>>,
    framed_from: u64,
) -> Result<Vec<(u64, codec::IndexChunk)>> {
    let mut runs = Vec::new();
    let Some(mut at) = files.iter().rposition(|&(first, _)| first <= index.len()) else {
        return Ok(runs);
    };
    loop {
        let (first, path) = &files[at];
        if *first < index.base || *first < framed_from {
            break;
        }
        let start = if *first == index.len() {
            index.end()
        } else {
            match file_starts.get(first).copied().flatten() {
                Some(start) => start,
                // Not where a committed decision starts: open reports it.
                None => break,
            }
        };
        file_starts.insert(*first, Some(start));
        let Some(from) = index.end().checked_sub(start) else {
            break;
        };
        let frames = DataFile::open_read(path)?.frames_from(from)?;
        let (run_seq, run_offset) = (index.len(), index.end());
        let mut entries = Vec::with_capacity(frames.len());
        for (len, record) in frames {
            let (id, _) = codec::decision_id_and_time(&record)?;
            let (seq, hash) = (index.len(), id_hash(&id));
            if !index.push(record_len(len)?, hash) {
                index.ids.insert_collided(id, hash, seq);
            }
            entries.push((len, hash));
        }
        if !entries.is_empty() {
            runs.push((
                run_seq,
                codec::IndexChunk {
                    offset: run_offset,
                    entries,
                },
            ));
        }
        match files.iter().position(|&(f, _)| f == index.len()) {
            Some(next) if next != at => at = next,
            _ => break,
        }
    }
    Ok(runs)
}

/// Inserts the `index` entries of the consecutive decisions from `first_seq`
/// on, starting at logical `offset`, with (framed length, id hash) each, in
/// pieces of [`INDEX_CHUNK`], in order.
fn insert_index_entries(tree: &Tree, first_seq: u64, offset: u64, entries: &[(u64, u64)]) -> sled::Result<()> {
    let (mut seq, mut offset) = (first_seq, offset);
    let mut value = Vec::new();
    for chunk in entries.chunks(INDEX_CHUNK) {
        value.clear();
        codec::encode_index_chunk(offset, chunk, &mut value);
        tree.insert(seq_key(seq), value.as_slice())?;
        seq += chunk.len() as u64;
        offset += chunk.iter().map(|&(len, _)| len).sum::<u64>();
    }
    Ok(())
}

/// The segment of `segments` (sorted) that holds `seq`.
fn segment_of(segments: &[Arc<Segment>], seq: u64) -> Option<&Arc<Segment>> {
    let pos = segments.partition_point(|s| s.first_seq <= seq);
    segments.get(pos.checked_sub(1)?)
}

/// A stored record's length as the in-memory index keeps it: a frame's
/// length field is a u32, so only a corrupt index holds a longer one.
fn record_len(len: u64) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Store(format!("corrupt index: a record of {len} bytes")))
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

/// The key of the outcome of `model` in decision `seq` (of its answer, with
/// no model): the seq first, so a decision's outcomes are one prefix and new
/// ones go at the tree's end.
fn outcome_key(seq: u64, model: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + model.len());
    k.extend_from_slice(&seq_key(seq));
    k.extend_from_slice(model);
    k
}

/// The decision seq of an [`outcome_key`].
fn outcome_seq(key: &[u8]) -> Result<u64> {
    parse_seq(key.get(..8).unwrap_or(key))
}

fn encode_truncation(t: &Truncation) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&t.removed.to_be_bytes());
    b[8..16].copy_from_slice(&t.first_kept.to_be_bytes());
    b[16..].copy_from_slice(&t.pruned_before_ms.to_be_bytes());
    b
}

fn decode_truncation(bytes: &[u8]) -> Result<Truncation> {
    let field = |i: usize| -> Result<u64> {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| Error::Store(format!("corrupt truncation record of {} bytes", bytes.len())))
    };
    if bytes.len() != 24 {
        return Err(Error::Store(format!(
            "corrupt truncation record of {} bytes",
            bytes.len()
        )));
    }
    Ok(Truncation {
        removed: field(0)?,
        first_kept: field(1)?,
        pruned_before_ms: field(2)?,
    })
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

/// Opens sled's database, waiting up to a second for its file lock: a
/// store closed just before (a restart in the same process, a test) may
/// still be held by sled's background threads for a moment.
fn open_sled(path: &Path, cache_bytes: u64) -> std::result::Result<sled::Db, sled::Error> {
    let mut tries = 0;
    loop {
        match sled::Config::new().path(path).cache_capacity(cache_bytes).open() {
            // sled reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e)) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether `path` holds a store (or at least a sled database): a directory
/// with sled's `conf` and `db` files. Looks only; creates nothing.
fn is_store_dir(path: &Path) -> bool {
    path.is_dir() && path.join("conf").is_file() && path.join("db").is_file()
}

fn no_store(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "no experience store at {} (expected a directory with the store's sled database)",
        path.display()
    ))
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`: loads the
    /// index of committed decisions and the rewarded set, cuts off any
    /// uncommitted tail of the data, and finishes a prune a crash
    /// interrupted.
    ///
    /// sled's background threads can hold the directory's file lock for a
    /// moment after the previous handle in this process was dropped (or
    /// after the previous process exited), so a held lock is retried for up
    /// to a second before it is an error (the error then says another
    /// process has the store open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Opens the store in directory `path` only if there is one: a missing
    /// or empty directory, or one without the store's sled database, is
    /// `Error::InvalidInput` ("no experience store at PATH") and nothing is
    /// created on disk. For readers (reports, exports) that must not leave
    /// an empty store behind a mistyped path.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(
            path,
            &StoreOptions {
                create: false,
                ..StoreOptions::default()
            },
        )
    }

    /// [`SledStore::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !options.create && !is_store_dir(&path) {
            return Err(no_store(&path));
        }
        let db = open_sled(&path, options.cache_bytes).map_err(|e| {
            Error::Store(format!(
                "opening experience store {}: {e} (is another process using it?)",
                path.display()
            ))
        })?;
        // The first segment with framed records; an older store's is its
        // length, known once its index is loaded.
        let mut framed_from = None;
        match db.get(FORMAT_KEY).map_err(sled_err)? {
            None if !options.create => return Err(no_store(&path)),
            Some(v) if v.as_ref() == FORMAT.to_be_bytes() || v.as_ref() == FORMAT_OUTCOMES_BY_ID.to_be_bytes() => {
                let v = db.get(FRAMED_FROM_KEY).map_err(sled_err)?.ok_or_else(|| {
                    Error::Store(format!("experience store {}: no {FRAMED_FROM_KEY:?}", path.display()))
                })?;
                framed_from = Some(parse_seq(&v)?);
            }
            None => {
                db.insert(FRAMED_FROM_KEY, &seq_key(0)).map_err(sled_err)?;
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                framed_from = Some(0);
            }
            // A single-file store (read as its first segment), or one with
            // unframed segments: marked below, so that a build that cannot
            // read frames refuses it instead of misreading it.
            Some(v)
                if v.as_ref() == FORMAT_SINGLE_FILE.to_be_bytes() || v.as_ref() == FORMAT_UNFRAMED.to_be_bytes() => {}
            Some(v) => {
                return Err(Error::Store(format!(
                    "experience store {} has format {:?}, this build reads formats {FORMAT_SINGLE_FILE} to {FORMAT}",
                    path.display(),
                    v.as_ref()
                )))
            }
        }
        let index_tree = db.open_tree("index").map_err(sled_err)?;
        let outcomes = db.open_tree(OUTCOMES_TREE).map_err(sled_err)?;
        let answers = db.open_tree(ANSWERS_TREE).map_err(sled_err)?;
        let feedback = db.open_tree("feedback").map_err(sled_err)?;

        let first_kept = match db.get(TRUNCATION_KEY).map_err(sled_err)? {
            Some(v) => decode_truncation(&v)?.first_kept,
            None => 0,
        };
        let files = data_file::list_segments(&path)?;
        // Logical offsets of the index entries that start a data file.
        let mut file_starts: HashMap<u64, Option<u64>> = files.iter().map(|&(seq, _)| (seq, None)).collect();

        let mut index = Index::new(first_kept);
        // Index entries of decisions a prune removed whose rows a crash kept
        // it from deleting: (first seq, entry).
        let mut pruned_chunks = Vec::new();
        let mut collisions = Vec::new();
        for kv in index_tree.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let first = parse_seq(&k)?;
            let chunk = codec::decode_index_chunk(&v)?;
            if let Some(s) = file_starts.get_mut(&first) {
                *s = Some(chunk.offset);
            }
            if first < first_kept {
                if first + chunk.entries.len() as u64 > first_kept {
                    return Err(Error::Store(format!(
                        "corrupt index: entry for seq {first} spans the oldest kept decision {first_kept}"
                    )));
                }
                pruned_chunks.push((first, chunk));
                continue;
            }
            if index.ends.is_empty() {
                index.ends.restart_at(chunk.offset);
            }
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
                if !index.push(record_len(len)?, hash) {
                    collisions.push((seq, hash));
                }
            }
        }
        if index.ends.is_empty() {
            // Nothing kept: new data continues the logical stream after what
            // was pruned (any offset would do; this keeps them increasing).
            index.ends.restart_at(pruned_chunks.last().map_or(0, |(_, c)| {
                c.offset + c.entries.iter().map(|&(len, _)| len).sum::<u64>()
            }));
        }
        let framed_from = match framed_from {
            // An acknowledged append whose index entries sled lost: its
            // frames are past the committed end. Committed again before the
            // data files are cut back to that end below.
            Some(framed_from) => {
                let recovered = recover_tail(&mut index, &files, &mut file_starts, framed_from)?;
                for (first, run) in &recovered {
                    insert_index_entries(&index_tree, *first, run.offset, &run.entries).map_err(sled_err)?;
                }
                if !recovered.is_empty() {
                    db.flush().map_err(sled_err)?;
                }
                framed_from
            }
            None => {
                let framed_from = index.len();
                db.insert(FRAMED_FROM_KEY, &seq_key(framed_from)).map_err(sled_err)?;
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                framed_from
            }
        };
        let len = index.len();

        // The data files: those of pruned decisions are deleted (below),
        // those past the committed decisions were never committed (an append
        // that started a segment and died before its commit was durable).
        let mut below = Vec::new();
        let mut beyond = Vec::new();
        let mut kept = Vec::new();
        for (first, file) in files {
            if first < first_kept {
                below.push((first, file));
            } else if first > len {
                beyond.push(file);
            } else {
                kept.push((first, file));
            }
        }
        if len > first_kept && kept.first().is_none_or(|&(f, _)| f != first_kept) {
            return Err(Error::Store(format!(
                "experience store {}: no data file holds decisions {first_kept}.. (the index commits {}): decisions were lost",
                path.display(),
                len - first_kept
            )));
        }
        let mut starts = Vec::with_capacity(kept.len());
        for (first, file) in &kept {
            let start = if *first == len {
                index.end()
            } else {
                file_starts.get(first).copied().flatten().ok_or_else(|| {
                    Error::Store(format!(
                        "corrupt store: data file {} does not start at a committed decision",
                        file.display()
                    ))
                })?
            };
            starts.push(start);
        }
        for (i, (first, file)) in kept.iter().enumerate() {
            let start = starts[i];
            let end = starts.get(i + 1).copied().unwrap_or(index.end());
            let data = DataFile::open(file, end.saturating_sub(start))?;
            index.segments.push(Arc::new(Segment {
                first_seq: *first,
                start,
                file: data,
                framed: *first >= framed_from,
                max_time: Mutex::new(None),
            }));
        }
        for (seq, hash) in collisions {
            let (seg, offset, len) = index
                .span(seq)
                .ok_or_else(|| Error::Store(format!("index has no decision {seq}")))?;
            let decision = codec::decode_decision(&seg.record(offset, len)?)?;
            index.ids.insert_collided(decision.request_id, hash, seq);
        }
        index.ids.fold();

        let mut with_feedback = HashSet::new();
        for kv in feedback.iter() {
            let (k, _) = kv.map_err(sled_err)?;
            with_feedback.insert(id_hash(&String::from_utf8_lossy(&k)));
        }
        let store = SledStore {
            path,
            db,
            index_tree,
            outcomes,
            answers,
            feedback,
            segment_bytes: options.segment_bytes.max(1),
            segment_decisions: options.segment_decisions.max(1),
            writer: Mutex::new(Writer::default()),
            feedback_lock: Mutex::new(()),
            prune_lock: Mutex::new(()),
            join_gate: RwLock::new(()),
            index: RwLock::new(index),
            count: AtomicU64::new(len),
            rewarded: RewardedSet::new(first_kept),
            recent: (options.recent_experiences > 0).then(|| Recent::new(options.recent_experiences)),
            with_feedback: RwLock::new(with_feedback),
            newest: NewestDecisions::new(newest::CAPACITY),
        };

        // Finish a prune that a crash interrupted after its commit: the rows
        // of the removed decisions (found through their index entries and
        // data files, both deleted last), then the files.
        let mut removed = Removed {
            spans: Vec::new(),
            segments: Vec::new(),
        };
        for (first, file) in &below {
            if let Some(start) = file_starts.get(first).copied().flatten() {
                removed.segments.push(Arc::new(Segment {
                    first_seq: *first,
                    start,
                    file: DataFile::open_read(file)?,
                    framed: *first >= framed_from,
                    max_time: Mutex::new(None),
                }));
            }
        }
        for (first, chunk) in &pruned_chunks {
            let mut at = chunk.offset;
            for (i, &(len, _)) in chunk.entries.iter().enumerate() {
                removed.spans.push((first + i as u64, at, at + len));
                at += len;
            }
        }
        store.purge(&removed, first_kept)?;
        for file in below.iter().map(|(_, f)| f).chain(&beyond) {
            data_file::remove(file)?;
        }
        if !below.is_empty() || !beyond.is_empty() {
            data_file::sync_dir(&store.path)?;
        }
        store.move_rows_keyed_by_id()?;
        if store.db.get(FORMAT_KEY).map_err(sled_err)?.as_deref() != Some(&FORMAT.to_be_bytes()[..]) {
            store.db.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(sled_err)?;
            store.db.flush().map_err(sled_err)?;
        }
        {
            let mut rewarded = store.rewarded.lock();
            for kv in store.outcomes.range(seq_key(first_kept)..) {
                let (k, _) = kv.map_err(sled_err)?;
                let seq = outcome_seq(&k)?;
                // Outcomes are only recorded for committed decisions.
                if seq < len {
                    rewarded.insert(seq);
                }
            }
        }
        Ok(store)
    }

    /// Moves the outcomes and answers of a store older than format 5, keyed
    /// by request id (`id ++ 0x00 ++ model`, or `id`), to the trees keyed by
    /// their decision's seq (`seq ++ model`, or `seq`), then drops the old
    /// trees and `rewarded` (which the new keys make redundant). Rows whose
    /// decision retention removed are left behind. A crash midway leaves the
    /// old trees, so the next open moves them again (the same rows under the
    /// same keys): they go only once the new ones are durable.
    fn move_rows_keyed_by_id(&self) -> Result<()> {
        let names = self.db.tree_names();
        let mut moved = false;
        for (old_name, new_name) in BY_ID_TREES {
            if !names.iter().any(|n| n.as_ref() == old_name.as_bytes()) {
                continue;
            }
            moved = true;
            let old = self.db.open_tree(old_name).map_err(sled_err)?;
            let new = self.db.open_tree(new_name).map_err(sled_err)?;
            // Rows are sorted by request id, so a decision's rows come together.
            let mut last: Option<(Vec<u8>, Option<u64>)> = None;
            for kv in old.iter() {
                let (k, v) = kv.map_err(sled_err)?;
                let (id, model) = match k.iter().position(|&b| b == 0) {
                    Some(nul) => (&k[..nul], &k[nul + 1..]),
                    None => (&k[..], &[][..]),
                };
                let seq = match &last {
                    Some((last_id, seq)) if last_id.as_slice() == id => *seq,
                    _ => {
                        let id_str = String::from_utf8_lossy(id);
                        let seq = self.find(&id_str, id_hash(&id_str))?.map(|(seq, _)| seq);
                        last = Some((id.to_vec(), seq));
                        seq
                    }
                };
                if let Some(seq) = seq {
                    new.insert(outcome_key(seq, model), v).map_err(sled_err)?;
                }
            }
        }
        if !moved {
            return Ok(());
        }
        self.db.flush().map_err(sled_err)?;
        self.db.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        for name in BY_ID_TREES.map(|(old, _)| old).into_iter().chain([REWARDED_TREE]) {
            self.db.drop_tree(name).map_err(sled_err)?;
        }
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// Sequence number of the oldest decision still stored.
    fn base(&self) -> u64 {
        self.index.read().unwrap_or_else(lock_err).base
    }

    /// The segment an append of decisions from `first_seq`, at logical
    /// offset `offset`, goes to: the newest, or a new one once that is full.
    fn segment_for_append(&self, first_seq: u64, offset: u64) -> Result<Arc<Segment>> {
        let last = self.index.read().unwrap_or_else(lock_err).segments.last().cloned();
        if let Some(seg) = last {
            let decisions = first_seq - seg.first_seq;
            let bytes = offset - seg.start;
            // An unframed segment (of a store older than format 4) takes no
            // more records.
            if seg.framed && (decisions == 0 || (bytes < self.segment_bytes && decisions < self.segment_decisions)) {
                return Ok(seg);
            }
            seg.file.seal(bytes)?;
        }
        // A new, empty segment (its directory entry durable before any data
        // in it is committed). If the append then fails, it stays the
        // newest segment and the next append writes into it.
        let seg = Arc::new(Segment {
            first_seq,
            start: offset,
            file: DataFile::create(&self.path, &data_file::segment_name(first_seq))?,
            framed: true,
            max_time: Mutex::new(Some(0)),
        });
        self.index.write().unwrap_or_else(lock_err).segments.push(seg.clone());
        Ok(seg)
    }

    /// The part of [`SledStore::append_decisions`] under the append lock:
    /// checks, encodes into `buf`, writes, commits and publishes.
    fn append_locked(&self, records: &[DecisionRecord], buf: &mut Vec<u8>, poisoned: &mut bool) -> Result<()> {
        // (record, framed length, id hash) of each record to write.
        let mut new: Vec<(&DecisionRecord, u32, u64)> = Vec::with_capacity(records.len());
        // Only this writer changes the index, so what this check sees stays
        // true until the commit below.
        for r in records {
            let start = buf.len();
            let record = data_file::frame(buf, |out| codec::encode_decision(r, out))?;
            let hash = id_hash(&r.request_id);
            if let Some((_, old)) = self.find(&r.request_id, hash)? {
                let same = old == buf[record..] || codec::decode_decision(&old).is_ok_and(|d| d == *r);
                buf.truncate(start);
                if same {
                    continue;
                }
                return Err(Error::InvalidInput(format!(
                    "decision {:?}: request_id already stored with a different record",
                    r.request_id
                )));
            }
            // `frame` refuses a record whose frame's length does not fit.
            let len = u32::try_from(buf.len() - start)
                .map_err(|_| Error::InvalidInput("a decision record of 4 GiB or more".into()))?;
            new.push((r, len, hash));
        }

        if !new.is_empty() {
            let (first_seq, offset) = {
                let index = self.index.read().unwrap_or_else(lock_err);
                (index.len(), index.end())
            };
            let seg = self.segment_for_append(first_seq, offset)?;
            // 1. The framed records, synced: durable from here on, as open
            //    recovers synced frames past the committed end. A failed
            //    write is cut off again, so that no part of it is found
            //    there later (as if it had been acknowledged).
            if let Err(e) = seg.file.write_synced(offset - seg.start, buf) {
                if seg.file.cut(offset - seg.start).is_err() {
                    *poisoned = true;
                }
                return Err(e);
            }
            // 2. Their index entries, in order, left to sled's next flush
            //    (a crash loses a suffix of them, which open recovers from
            //    the frames). Plain inserts, not one sled batch: sled writes
            //    its log buffer out twice for every batch (two writes and
            //    syncs on its I/O threads, which were a third of the
            //    gateway's CPU under load), and the entries need no batch to
            //    be safe.
            let entries: Vec<(u64, u64)> = new.iter().map(|&(_, len, hash)| (u64::from(len), hash)).collect();
            if let Err(e) = insert_index_entries(&self.index_tree, first_seq, offset, &entries) {
                // Some entries may be in sled's memory: let nothing build on
                // them.
                *poisoned = true;
                return Err(sled_err(e));
            }
            // 3. Publish to readers, keeping what joins need first.
            self.newest.keep(new.iter().enumerate().map(|(i, &(r, _, _))| Joinable {
                seq: first_seq + i as u64,
                request_id: r.request_id.as_str().into(),
                chosen: r.chosen.as_slice().into(),
            }));
            let mut index = self.index.write().unwrap_or_else(lock_err);
            for &(r, len, hash) in &new {
                let seq = index.len();
                if !index.push(len, hash) {
                    index.ids.insert_collided(r.request_id.clone(), hash, seq);
                }
            }
            self.count.store(index.len(), Ordering::Release);
            let fold_due = index.ids.fold_due();
            drop(index);
            if fold_due {
                // Built under the read lock; only this writer changes the
                // index meanwhile.
                let folded = self.index.read().unwrap_or_else(lock_err).ids.folded();
                if let Some(folded) = folded {
                    self.index.write().unwrap_or_else(lock_err).ids.install(folded);
                }
            }
            let mut max_time = seg.max_time.lock().unwrap_or_else(lock_err);
            if let Some(t) = max_time.as_mut() {
                *t = new.iter().map(|&(r, _, _)| r.time_ms).fold(*t, u64::max);
            }
        }
        Ok(())
    }

    /// Seq, request id and chosen models of the committed decision with
    /// this request id: what joining a row to it needs, from `newest` when it
    /// was appended lately, else read back from its segment.
    fn locate(&self, request_id: &str) -> Result<Option<Joinable>> {
        let hash = id_hash(request_id);
        let mut candidates = Vec::new();
        {
            // Under the index lock, so a held entry is of a decision the
            // index still has (a prune removes it from the index first).
            let index = self.index.read().unwrap_or_else(lock_err);
            index.ids.candidates(request_id, hash, &mut candidates);
            let mut found = None;
            candidates.retain(|&seq| match self.newest.get(seq) {
                Some(j) => {
                    if &*j.request_id == request_id {
                        found = Some(j);
                    }
                    false
                }
                None => true,
            });
            if found.is_some() {
                return Ok(found);
            }
        }
        match self.first_stored_with_id(candidates, request_id)? {
            None => Ok(None),
            Some((seq, bytes)) => Ok(Some(Joinable {
                seq,
                request_id: request_id.into(),
                chosen: codec::decision_chosen(&bytes)?.into(),
            })),
        }
    }

    /// Seq and encoded record of the committed decision with this request id
    /// (whose hash is `hash`).
    fn find(&self, request_id: &str, hash: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let mut candidates = Vec::new();
        self.index
            .read()
            .unwrap_or_else(lock_err)
            .ids
            .candidates(request_id, hash, &mut candidates);
        self.first_stored_with_id(candidates, request_id)
    }

    /// Seq and encoded record of the first of `candidates` (seqs whose id
    /// hash matched) that is stored under `request_id`, read from disk.
    fn first_stored_with_id(&self, candidates: Vec<u64>, request_id: &str) -> Result<Option<(u64, Vec<u8>)>> {
        for seq in candidates {
            if let Some(bytes) = self.read_decision(seq)? {
                if codec::request_id_is(&bytes, request_id)? {
                    return Ok(Some((seq, bytes)));
                }
            }
        }
        Ok(None)
    }

    /// The encoded decision with sequence number `seq`, if stored. The
    /// segment's file stays readable while this holds it, even if a prune
    /// deletes it meanwhile.
    fn read_decision(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let span = self.index.read().unwrap_or_else(lock_err).span(seq);
        span.map(|(seg, offset, len)| seg.record(offset, len)).transpose()
    }

    /// The experience with sequence number `seq`, or `None` if there is none.
    fn get_seq(&self, seq: u64) -> Result<Option<Experience>> {
        match self.read_decision(seq)? {
            None => Ok(None),
            Some(bytes) => self.experience(seq, codec::decode_decision(&bytes)?).map(Some),
        }
    }

    /// [`SledStore::get_seq`], shared, served from and kept in `recent`.
    fn get_recent(&self, seq: u64) -> Result<Option<Arc<Experience>>> {
        let Some(recent) = &self.recent else {
            return Ok(self.get_seq(seq)?.map(Arc::new));
        };
        match recent.get(seq) {
            Lookup::Hit(e) => Ok(Some(e)),
            Lookup::Miss(ticket) => {
                let read = self.get_seq(seq)?.map(Arc::new);
                if let Some(e) = &read {
                    recent.put(seq, ticket, e.clone());
                }
                Ok(read)
            }
        }
    }

    /// Drops `seq` from `recent`: called after every write that changes its
    /// experience.
    fn changed(&self, seq: u64) {
        if let Some(recent) = &self.recent {
            recent.forget(seq);
        }
    }

    /// `decision`, stored as `seq`, joined with its outcomes.
    fn experience(&self, seq: u64, decision: DecisionRecord) -> Result<Experience> {
        // One point lookup per chosen model (outcomes exist only for those),
        // in model-name order: cheaper than a prefix scan on the trainer's
        // path, which reads tens of thousands of experiences a second.
        let mut chosen: Vec<&String> = decision.chosen.iter().collect();
        chosen.sort_unstable();
        chosen.dedup();
        let mut outcomes = Vec::with_capacity(chosen.len());
        for model in chosen {
            if let Some(v) = self
                .outcomes
                .get(outcome_key(seq, model.as_bytes()))
                .map_err(sled_err)?
            {
                outcomes.push(codec::decode_outcome(&v)?);
            }
        }
        let has_feedback = self
            .with_feedback
            .read()
            .unwrap_or_else(lock_err)
            .contains(&id_hash(&decision.request_id));
        let feedback = if has_feedback {
            self.feedback
                .get(decision.request_id.as_bytes())
                .map_err(sled_err)?
                .map(|v| json_decode::<FeedbackRecord>(&v, "feedback"))
                .transpose()?
        } else {
            None
        };
        Ok(Experience {
            decision,
            outcomes,
            feedback,
        })
    }

    /// The newest `time_ms` in the segment with these bounds (read from its
    /// file the first time, then kept).
    fn max_time(&self, seg: &Segment, b: Bounds) -> Result<u64> {
        if let Some(t) = *seg.max_time.lock().unwrap_or_else(lock_err) {
            return Ok(t);
        }
        let mut max = 0;
        for seq in b.first..b.end_seq {
            if let Some(bytes) = self.read_decision(seq)? {
                max = max.max(codec::decision_id_and_time(&bytes)?.1);
            }
        }
        let mut cached = seg.max_time.lock().unwrap_or_else(lock_err);
        // An append may have set it meanwhile (only for the newest segment,
        // whose bounds the caller holds the append lock for).
        let t = cached.map_or(max, |t| t.max(max));
        *cached = Some(t);
        Ok(t)
    }

    /// Whether the segment with bounds `b` is past retention, given the
    /// store's current `len` and logical `end`: `Some(its newest time_ms)`
    /// if so. A segment is removed only when every decision in it is past
    /// at least one limit (the limits are monotone in age, so its newest
    /// decision decides). An empty segment never is.
    fn past_retention(&self, seg: &Segment, b: Bounds, keep: &Retention, now_ms: u64) -> Result<Option<u64>> {
        if b.end_seq <= b.first {
            return Ok(None);
        }
        let (len, end) = {
            let index = self.index.read().unwrap_or_else(lock_err);
            (index.len(), index.end())
        };
        let by_count = keep.max_experiences.is_some_and(|m| len - b.end_seq >= m);
        let by_bytes = keep.max_bytes.is_some_and(|m| end - b.end >= m);
        if !by_count && !by_bytes && keep.max_age_ms.is_none() {
            return Ok(None);
        }
        let newest = self.max_time(seg, b)?;
        let by_age = keep
            .max_age_ms
            .is_some_and(|age| now_ms.checked_sub(age).is_some_and(|cutoff| newest < cutoff));
        Ok((by_count || by_bytes || by_age).then_some(newest))
    }

    /// Deletes the feedback of the decisions in `removed` (reading their
    /// request ids from the segments in `removed`), the outcomes, answers and
    /// `index` entries before `first_kept`, then the segments' files. Every
    /// step is idempotent, and the index entries and files go last, so if a
    /// crash interrupts it, open finds what is left and finishes it.
    fn purge(&self, removed: &Removed, first_kept: u64) -> Result<()> {
        let mut ids = Vec::with_capacity(PURGE_BATCH);
        for &(seq, start, end) in &removed.spans {
            let Some(seg) = segment_of(&removed.segments, seq).filter(|s| s.start <= start) else {
                continue;
            };
            let read = seg
                .record(start - seg.start, (end - start) as usize)
                .and_then(|bytes| codec::decision_id_and_time(&bytes));
            match read {
                Ok((id, _)) => ids.push(id),
                // The decision is gone either way; only its rows stay behind.
                Err(e) => tracing::warn!("experience store {}: pruned decision {seq}: {e}", self.path.display()),
            }
            if ids.len() >= PURGE_BATCH {
                self.delete_rows(&ids)?;
                ids.clear();
            }
        }
        self.delete_rows(&ids)?;
        let below = ..seq_key(first_kept);
        for tree in [&self.outcomes, &self.answers] {
            let mut batch = Batch::default();
            for kv in tree.range(below) {
                batch.remove(kv.map_err(sled_err)?.0);
            }
            tree.apply_batch(batch).map_err(sled_err)?;
        }
        self.db.flush().map_err(sled_err)?;
        let mut batch = Batch::default();
        let mut any = false;
        for kv in self.index_tree.range(below) {
            batch.remove(kv.map_err(sled_err)?.0);
            any = true;
        }
        if any {
            self.index_tree.apply_batch(batch).map_err(sled_err)?;
            self.db.flush().map_err(sled_err)?;
        }
        for seg in &removed.segments {
            data_file::remove(seg.file.path())?;
        }
        if !removed.segments.is_empty() {
            data_file::sync_dir(&self.path)?;
        }
        Ok(())
    }

    /// Deletes the feedback of each decision id (`purge` deletes outcomes
    /// and answers by seq).
    fn delete_rows(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut feedback = Batch::default();
        for id in ids {
            feedback.remove(id.as_bytes());
        }
        self.feedback.apply_batch(feedback).map_err(sled_err)?;
        Ok(())
    }

    /// [`ExperienceStore::record_outcomes`], unsynced, for a caller holding
    /// the join gate.
    fn record_outcomes_joined(&self, outcomes: &[Outcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // request_id → its decision.
        let mut decisions: HashMap<&str, Joinable> = HashMap::new();
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            o.validate()?;
            let id = o.request_id.as_str();
            if !decisions.contains_key(id) {
                if let Some(j) = self.locate(id)? {
                    decisions.insert(id, j);
                }
            }
            let decision = decisions.get(id);
            let value = codec::outcome_row(o, decision.map(|j| &j.chosen[..]))?;
            // `outcome_row` refuses an outcome without a decision.
            if let Some(j) = decision {
                rows.push((outcome_key(j.seq, o.model.as_bytes()), value));
            }
        }
        // Plain inserts, not sled batches, which cost two log writes each
        // (see `append_locked`); nothing here is acknowledged before the
        // caller's sync.
        for (key, value) in rows {
            self.outcomes.insert(key, value).map_err(sled_err)?;
        }
        for j in decisions.values() {
            self.changed(j.seq);
        }
        // Every seq of this call, not only the new ones: sampling may have
        // dropped one as stale (a crash leftover) just before its outcomes
        // landed.
        self.rewarded.add(decisions.values().map(|j| j.seq));
        Ok(())
    }
}

impl ExperienceStore for SledStore {
    /// Durable on return (synced to disk): the group-commit unit. Many
    /// records, one data write and one fdatasync; their index entries go to
    /// sled unsynced (open recovers any that a crash lost from the records'
    /// frames), so outcomes staged before it are not synced by it.
    ///
    /// All or nothing: every record is checked first (`Error::InvalidInput`
    /// for an empty request id or one with a NUL byte, `propensities` not the
    /// length of `candidates`, features with unequal index and value counts, a
    /// request id twice in `records`, or a request id already stored with a
    /// different record), then all are written to the newest data segment in
    /// one write, synced, and committed by their index entries. A record identical to the stored one is skipped, so retrying
    /// a call whose result was lost is safe. (A request id whose decision
    /// retention removed is new again.)
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
        result
    }

    /// Joins outcomes to their decision by request_id; an outcome for an
    /// unknown request_id (or one retention removed) is `Error::NotFound`.
    /// Durable on return. A second outcome for the same (request_id, model)
    /// replaces the first.
    ///
    /// All or nothing: besides `NotFound`, an outcome whose `model` is not
    /// among the decision's `chosen` models, or whose `quality` lies outside
    /// `[0, 1]`, is `Error::InvalidInput` and nothing is written. Within one
    /// call, a later outcome for the same (request_id, model) wins.
    fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        self.record_outcomes_unsynced(outcomes)?;
        if !outcomes.is_empty() {
            self.db.flush().map_err(sled_err)?;
        }
        Ok(())
    }

    /// Written to sled's log, synced by the next `flush` (or sled's own
    /// flush within 500 ms).
    fn record_outcomes_unsynced(&self, outcomes: &[Outcome]) -> Result<()> {
        let _joining = self.join_gate.read().unwrap_or_else(lock_err);
        self.record_outcomes_joined(outcomes)
    }

    /// The decision with this request id and every outcome recorded for it
    /// (ordered by model name), or `None` if no such decision was appended
    /// (or retention removed it).
    fn get(&self, request_id: &str) -> Result<Option<Experience>> {
        if validate_request_id(request_id).is_err() {
            return Ok(None);
        }
        match self.find(request_id, id_hash(request_id))? {
            None => Ok(None),
            Some((seq, bytes)) => self.experience(seq, codec::decode_decision(&bytes)?).map(Some),
        }
    }

    /// Records which decision and model answered each request, so feedback
    /// sent later on the request id finds its answer. Kept under the seq of
    /// the request's own decision (the one whose id is the request id): an
    /// answer for a request with no stored decision is logged and skipped,
    /// as feedback could never be joined to it. Not flushed: durable with the
    /// next flush of any call (sled also flushes every 500 ms). Losing one in
    /// a crash only means feedback on that request is refused.
    fn record_answers(&self, answers: &[Answered]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        for a in answers {
            validate_request_id(&a.request_id)?;
        }
        let _joining = self.join_gate.read().unwrap_or_else(lock_err);
        let mut rows = Vec::with_capacity(answers.len());
        for a in answers {
            let id = a.request_id.as_str();
            match self.locate(id)? {
                Some(j) => rows.push((seq_key(j.seq), json_encode(a)?)),
                None => tracing::warn!(request_id = %id, "answer for a request with no stored decision not recorded"),
            }
        }
        // Plain inserts: a sled batch costs two log writes (see `append_locked`).
        for (key, value) in rows {
            self.answers.insert(key, value).map_err(sled_err)?;
        }
        Ok(())
    }

    /// The answer recorded for a request id.
    fn answered(&self, request_id: &str) -> Result<Option<Answered>> {
        let Some(j) = self.locate(request_id)? else {
            return Ok(None);
        };
        match self.answers.get(seq_key(j.seq)).map_err(sled_err)? {
            Some(v) => json_decode(&v, "answer").map(Some),
            None => Ok(None),
        }
    }

    /// Joins feedback to the answer of `request_id`. Durable on return.
    ///
    /// - An id with no recorded answer is `Error::NotFound` (unknown, no
    ///   model answered it, or retention removed it).
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
        feedback.validate()?;
        // One feedback write at a time: read, relabel and record together,
        // so concurrent repeats cannot lose a revision or split the value.
        let _one_at_a_time = self.feedback_lock.lock().unwrap_or_else(lock_err);
        let _joining = self.join_gate.read().unwrap_or_else(lock_err);
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
        let mut record = FeedbackRecord::join(feedback, answered, previous.as_ref(), window_ms);
        let seq = self.locate(&key)?.map(|j| j.seq);
        if let (false, Some(seq)) = (record.late, seq) {
            let current = self
                .outcomes
                .get(outcome_key(seq, record.answered.model.as_bytes()))
                .map_err(sled_err)?
                .map(|v| codec::decode_outcome(&v))
                .transpose()?;
            if let Some(mut o) = current {
                o.quality = Some(record.feedback.quality);
                self.record_outcomes_joined(std::slice::from_ref(&o))?;
                record.applied = true;
            }
        }
        self.with_feedback
            .write()
            .unwrap_or_else(lock_err)
            .insert(id_hash(&key));
        self.feedback
            .insert(key.as_bytes(), json_encode(&record)?)
            .map_err(sled_err)?;
        if let Some(seq) = seq {
            self.changed(seq);
        }
        self.db.flush().map_err(sled_err)?;
        Ok((record, previous))
    }

    /// Sequence number one past the newest decision: the number of decisions
    /// ever appended, not the number stored once retention removed some
    /// (that is [`ExperienceStore::retained`]).
    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire) as usize
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` experiences drawn with replacement; only experiences that have at
    /// least one outcome (and that retention kept) are returned. Returns
    /// fewer than `n` only if the store has none with outcomes (then an empty
    /// vector).
    fn sample(&self, n: usize, how: &Sampling, rng: &mut dyn RngCore) -> Result<Vec<Arc<Experience>>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let picks: Vec<u64> = {
                let index = self.rewarded.lock();
                if index.is_empty() {
                    break;
                }
                (out.len()..n)
                    .filter_map(|_| index.nth(pick(index.len(), how, &mut &mut *rng)))
                    .collect()
            };
            let mut stale = Vec::new();
            for seq in picks {
                match self.get_recent(seq)? {
                    Some(e) if !e.outcomes.is_empty() => out.push(e),
                    // A rewarded entry whose outcomes never got written (a
                    // crash between the two writes of `record_outcomes`), or
                    // one a concurrent prune just removed: drop it from the
                    // in-memory index and draw again. Each round either fills
                    // `out` or shrinks the index.
                    _ => stale.push(seq),
                }
            }
            if !stale.is_empty() {
                let mut index = self.rewarded.lock();
                for seq in stale {
                    index.remove(seq);
                }
            }
        }
        Ok(out)
    }

    /// Experiences in insertion order, from sequence number `from` (or the
    /// oldest one retention kept, if later; also when a prune overtakes the
    /// iteration), up to the newest committed one.
    fn iter_from(&self, from: u64) -> Box<dyn Iterator<Item = Result<Experience>> + '_> {
        let mut seq = from;
        Box::new(std::iter::from_fn(move || loop {
            match self.get_seq(seq) {
                Ok(Some(e)) => {
                    seq += 1;
                    return Some(Ok(e));
                }
                Ok(None) => {
                    let first_kept = self.base();
                    if seq >= first_kept {
                        return None;
                    }
                    seq = first_kept;
                }
                Err(e) => {
                    seq += 1;
                    return Some(Err(e));
                }
            }
        }))
    }

    /// Saves a small JSON document under `key` in the tree named `kind`
    /// (experiments' definitions live beside the experience they produce).
    /// Flushed before returning: a saved document survives a crash.
    /// Retention never removes documents.
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
        let newest = self.index.read().unwrap_or_else(lock_err).segments.last().cloned();
        if let Some(seg) = newest {
            seg.file.sync()?;
        }
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// Removes the oldest data segments whose every decision is past `keep`
    /// (see `past_retention`), with the decisions' outcomes,
    /// answers, feedback and index entries, and frees their disk space.
    /// Durable on `Ok`.
    ///
    /// Crash-safe in this order: (1) the new [`Truncation`] (whose
    /// `first_kept` says which decisions are gone) is committed to sled and
    /// flushed; (2) the decisions leave the in-memory index, so nothing finds
    /// them any more; (3) they leave the rewarded set, their rows and `index`
    /// entries are deleted, then their files. A crash after (1) leaves index
    /// entries and files below `first_kept`, which open ignores for reading
    /// and uses to finish (3). The append lock is held for (1) and (2) only.
    fn apply_retention(&self, keep: &Retention, now_ms: u64) -> Result<Pruned> {
        let _one_at_a_time = self.prune_lock.lock().unwrap_or_else(lock_err);
        // Segments other than the newest are sealed: no append changes them,
        // so whether they are past retention is decided without blocking
        // appends (reading their times from disk if needed). `len` only
        // grows, so a segment past retention stays past it.
        let sealed: Vec<(Arc<Segment>, Bounds)> = {
            let index = self.index.read().unwrap_or_else(lock_err);
            (0..index.segments.len().saturating_sub(1))
                .map(|i| (index.segments[i].clone(), index.bounds(i)))
                .collect()
        };
        let mut dropped = 0;
        let mut newest_dropped = None;
        for (seg, b) in &sealed {
            match self.past_retention(seg, *b, keep, now_ms)? {
                Some(t) => {
                    dropped += 1;
                    newest_dropped = newest_dropped.max(Some(t));
                }
                None => break,
            }
        }
        let writer = self.writer.lock().unwrap_or_else(lock_err);
        if dropped == sealed.len() {
            // Every sealed one goes: the rest (the newest, and any segment
            // appends started meanwhile) is decided under the append lock.
            loop {
                let next = {
                    let index = self.index.read().unwrap_or_else(lock_err);
                    (dropped < index.segments.len()).then(|| (index.segments[dropped].clone(), index.bounds(dropped)))
                };
                let Some((seg, b)) = next else { break };
                match self.past_retention(&seg, b, keep, now_ms)? {
                    Some(t) => {
                        dropped += 1;
                        newest_dropped = newest_dropped.max(Some(t));
                    }
                    None => break,
                }
            }
        }
        let (old_first_kept, new_first_kept) = {
            let index = self.index.read().unwrap_or_else(lock_err);
            let new = index.segments.get(dropped).map_or(index.len(), |s| s.first_seq);
            (index.base, new)
        };
        let Some(newest_dropped) = newest_dropped.filter(|_| new_first_kept > old_first_kept) else {
            return Ok(Pruned {
                removed: 0,
                first_kept: old_first_kept,
            });
        };
        // (1) The commit.
        let before = self.truncation()?.unwrap_or_default();
        let truncation = Truncation {
            removed: before.removed + (new_first_kept - old_first_kept),
            first_kept: new_first_kept,
            pruned_before_ms: before.pruned_before_ms.max(newest_dropped),
        };
        self.db
            .insert(TRUNCATION_KEY, &encode_truncation(&truncation))
            .map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        // (2) Gone for readers; no outcome or feedback write is half-way
        // through joining one of them.
        let removed = {
            let _no_joins = self.join_gate.write().unwrap_or_else(lock_err);
            let removed = self.index.write().unwrap_or_else(lock_err).prune_to(new_first_kept);
            if let Some(recent) = &self.recent {
                recent.clear();
            }
            removed
        };
        drop(writer);
        // Not under the append lock: the trainer holds the rewarded set's
        // lock at nice 19 (see `rewarded.rs`). Sampling drops a removed seq
        // it draws before this.
        self.rewarded.lock().drop_below(new_first_kept);
        // (3) Rows, entries and files.
        self.purge(&removed, new_first_kept)?;
        Ok(Pruned {
            removed: new_first_kept - old_first_kept,
            first_kept: new_first_kept,
        })
    }

    /// Sequence number of the oldest decision still stored.
    fn first_kept(&self) -> u64 {
        self.base()
    }

    /// What retention has removed so far (committed: survives reopening).
    fn truncation(&self) -> Result<Option<Truncation>> {
        self.db
            .get(TRUNCATION_KEY)
            .map_err(sled_err)?
            .map(|v| decode_truncation(&v))
            .transpose()
    }
}

fn json_encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(format!("encoding a record: {e}")))
}

fn json_decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("corrupt {what} record: {e}")))
}

/// A position in `0..len` (len > 0) drawn as `how` says; the newest is `len - 1`.
pub(crate) fn pick(len: usize, how: &Sampling, rng: &mut impl Rng) -> usize {
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
            ttft_ms: None,
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
        dir.path().join("store").join(data_file::segment_name(0))
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
            let db = open_sled(&path, DEFAULT_CACHE_BYTES).unwrap();
            db.insert(FORMAT_KEY, &1u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = reopen(&path).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
    }

    /// The rewarded set is rebuilt on open from the outcomes' keys, so
    /// sampling after a restart draws exactly the decisions with outcomes.
    #[test]
    fn sampling_after_reopen_draws_only_rewarded_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..10).map(rec).collect::<Vec<_>>()).unwrap();
            s.record_outcomes(&[out(2, "a", 1.0), out(4, "c", 0.5), out(4, "a", 0.5)])
                .unwrap();
        }
        let s = reopen(&path).unwrap();
        assert_eq!(s.rewarded.lock().members(), vec![2, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for how in [Sampling::Uniform, Sampling::Recent { half_life: 0 }] {
            let got = s.sample(100, &how, &mut rng).unwrap();
            assert_eq!(got.len(), 100);
            assert!(got.iter().all(|e| [2, 4].contains(&seq_of(e))), "{how:?}");
        }
        s.record_outcomes(&[out(7, "c", 0.25)]).unwrap();
        let got = s.sample(20, &Sampling::Recent { half_life: 0 }, &mut rng).unwrap();
        assert!(got.iter().all(|e| seq_of(e) == 7));
    }

    /// An index entry whose experience has no outcomes (one a concurrent
    /// prune emptied) is dropped by sampling, which then ends with nothing
    /// instead of looping.
    #[test]
    fn sampling_drops_rewarded_entries_without_outcomes() {
        let (_d, s) = store();
        s.append_decisions(&[rec(0), rec(1)]).unwrap();
        s.rewarded.lock().insert(0);
        s.rewarded.lock().insert(1);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        assert!(s.sample(5, &Sampling::Uniform, &mut rng).unwrap().is_empty());
        assert!(s.rewarded.lock().is_empty());
    }

    /// A store of format 4 kept outcomes and answers under request ids,
    /// with a `rewarded` tree: open moves them under their decisions' seqs,
    /// drops the old trees and marks format 5; all read back whole.
    #[test]
    fn rows_keyed_by_request_id_are_moved_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let outcomes = [out(1, "a", 1.0), out(3, "c", 0.5), out(3, "a", 0.25)];
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
            // Format 4's layout, written by hand.
            let old = s.db.open_tree("outcomes").unwrap();
            let old_answers = s.db.open_tree("answers").unwrap();
            let rewarded = s.db.open_tree(REWARDED_TREE).unwrap();
            for o in &outcomes {
                let mut key = o.request_id.as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(o.model.as_bytes());
                let mut value = Vec::new();
                codec::encode_outcome(o, &mut value);
                old.insert(key, value).unwrap();
            }
            // An outcome whose decision is unknown is left behind.
            old.insert(b"gone\0a", b"x").unwrap();
            old_answers.insert(b"req-3", json_encode(&answer(3)).unwrap()).unwrap();
            for seq in [1u64, 3] {
                rewarded.insert(seq_key(seq), &[]).unwrap();
            }
            s.db.insert(FORMAT_KEY, &FORMAT_OUTCOMES_BY_ID.to_be_bytes()).unwrap();
            s.flush().unwrap();
        }
        let s = reopen(&path).unwrap();
        assert_eq!(s.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(), FORMAT.to_be_bytes());
        let names = s.db.tree_names();
        for gone in ["outcomes", "answers", REWARDED_TREE] {
            assert!(!names.iter().any(|n| n.as_ref() == gone.as_bytes()), "{gone}");
        }
        assert_eq!(s.answered("req-3").unwrap(), Some(answer(3)));
        assert_eq!(s.answered("req-1").unwrap(), None);
        assert_eq!(count_keys(&s.outcomes), 3);
        assert_eq!(s.rewarded.lock().members(), vec![1, 3]);
        let mut got = s.get("req-3").unwrap().unwrap().outcomes;
        got.sort_by(|a, b| a.model.cmp(&b.model));
        assert_eq!(got, vec![outcomes[2].clone(), outcomes[1].clone()]);
        assert_eq!(s.get("req-1").unwrap().unwrap().outcomes, vec![outcomes[0].clone()]);
        assert!(s.get("req-2").unwrap().unwrap().outcomes.is_empty());
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
            s.record_outcomes(&[o.clone()]).unwrap();
            // An id never stored, with the same hash, joins nothing (from
            // the newest decisions here, from disk after the reopen).
            o.request_id = "collide-d".into();
            assert_eq!(id_hash("collide-d"), id_hash(&a.request_id));
            assert!(matches!(s.record_outcomes(&[o]), Err(Error::NotFound(_))));
        }
        let s = reopen(&path).unwrap();
        for r in [&a, &b, &c] {
            assert_eq!(&s.get(&r.request_id).unwrap().unwrap().decision, r);
        }
        assert!(s.get("collide-d").unwrap().is_none());
        let mut o = out(0, "c", 0.5);
        o.request_id = "collide-d".into();
        assert!(matches!(s.record_outcomes(&[o]), Err(Error::NotFound(_))));
        assert_eq!(s.get("collide-c").unwrap().unwrap().outcomes.len(), 1);
        assert!(s.get("collide-a").unwrap().unwrap().outcomes.is_empty());
        let ids: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision.request_id).collect();
        assert_eq!(ids, ["collide-a", "collide-b", "req-9", "collide-c"]);
        // Open folded every id into the sorted table, which still tells
        // retries from new records.
        s.append_decisions(&[c.clone(), b.clone(), rec(9)]).unwrap();
        assert_eq!(s.len(), 4);
        let mut changed = a.clone();
        changed.time_ms += 1;
        assert!(matches!(s.append_decisions(&[changed]), Err(Error::InvalidInput(_))));
        s.append_decisions(&[rec_id(3, "collide-e")]).unwrap();
        assert_eq!(s.get("collide-e").unwrap().unwrap().decision, rec_id(3, "collide-e"));
    }

    /// Joins to decisions the newest-decisions ring no longer holds read
    /// them back from disk: outcomes and answers land under the right seq,
    /// and a model the decision did not choose is still refused.
    #[test]
    fn rows_join_decisions_older_than_the_newest_ones_held() {
        let (_dir, s) = store();
        let n = newest::CAPACITY as u64 + 10;
        for first in (0..n).step_by(1000) {
            s.append_decisions(&(first..n.min(first + 1000)).map(rec).collect::<Vec<_>>())
                .unwrap();
        }
        assert!(s.newest.get(0).is_none() && s.newest.get(n - 1).is_some());
        for i in [0, n - 1] {
            s.record_outcomes(&[out(i, "a", 0.25)]).unwrap();
            let mut wrong = out(i, "a", 0.25);
            wrong.model = "not-chosen".into();
            assert!(matches!(s.record_outcomes(&[wrong]), Err(Error::InvalidInput(_))));
            s.record_answers(&[answer(i)]).unwrap();
            let e = s.get(&format!("req-{i}")).unwrap().unwrap();
            assert_eq!((seq_of(&e), e.outcomes.len()), (i, 1));
            assert_eq!(s.answered(&format!("req-{i}")).unwrap(), Some(answer(i)));
        }
    }

    /// Past 65,536 new ids, an append folds them into the sorted table
    /// (see `index_tables.rs`): they are still found, and still tell
    /// retries from new records.
    #[test]
    fn ids_folded_by_appends_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path().join("store")).unwrap();
        let n = 70_000u64;
        for first in (0..n).step_by(5_000) {
            s.append_decisions(&(first..first + 5_000).map(rec).collect::<Vec<_>>())
                .unwrap();
        }
        assert!(!s.index.read().unwrap().ids.fold_due());
        for i in [0, 1, 33_333, 65_535, 69_999] {
            assert_eq!(s.get(&format!("req-{i}")).unwrap().unwrap().decision, rec(i));
        }
        assert!(s.get("req-70000").unwrap().is_none());
        s.append_decisions(&[rec(12), rec(n)]).unwrap();
        assert_eq!(s.len() as u64, n + 1);
        let mut changed = rec(40_000);
        changed.time_ms += 1;
        assert!(matches!(s.append_decisions(&[changed]), Err(Error::InvalidInput(_))));
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

    // ---- strict open ----------------------------------------------------

    fn tree_of(dir: &Path) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                all.push(p);
            }
        }
        all.sort();
        all
    }

    #[test]
    fn open_existing_refuses_a_path_without_a_store_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").join("store");
        let err = SledStore::open_existing(&missing).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("no experience store at"), "{err}");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        assert!(!missing.exists());
        assert!(!dir.path().join("nope").exists());

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = SledStore::open_existing(&empty).unwrap_err();
        assert!(err.to_string().contains("no experience store at"), "{err}");
        assert!(tree_of(&empty).is_empty());

        // A directory of something else.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"hi").unwrap();
        std::fs::write(other.join("conf"), b"not sled").unwrap();
        assert!(SledStore::open_existing(&other).is_err());
        assert_eq!(tree_of(&other), vec![other.join("conf"), other.join("notes.txt")]);

        // A real store opens, empty or not.
        let path = dir.path().join("store");
        drop(SledStore::open(&path).unwrap());
        assert!(reopen_existing(&path).unwrap().is_empty());
        SledStore::open(&path).unwrap().append_decisions(&[rec(0)]).unwrap();
        let s = reopen_existing(&path).unwrap();
        assert_eq!(s.get("req-0").unwrap().unwrap().decision, rec(0));
    }

    fn reopen_existing(path: &Path) -> Result<SledStore> {
        SledStore::open_existing(path)
    }

    // ---- segments and retention -----------------------------------------

    /// A store whose segments hold `per_segment` decisions each.
    fn segmented(path: &Path, per_segment: u64) -> SledStore {
        SledStore::open_with(
            path,
            &StoreOptions {
                segment_decisions: per_segment,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    fn segment_files(path: &Path) -> Vec<u64> {
        data_file::list_segments(path)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// That `req-{i}` was answered by its own decision, with model `a`.
    fn answer(i: u64) -> Answered {
        Answered {
            request_id: format!("req-{i}"),
            decision_id: format!("req-{i}"),
            model: "a".into(),
            time_ms: rec(i).time_ms,
            key_id: None,
        }
    }

    /// Appends `from..to` in batches of `batch`, with an outcome for each and
    /// an answer for each.
    fn fill(s: &SledStore, from: u64, to: u64, batch: u64) {
        let mut i = from;
        while i < to {
            let end = (i + batch).min(to);
            s.append_decisions(&(i..end).map(rec).collect::<Vec<_>>()).unwrap();
            s.record_outcomes(&(i..end).map(|j| out(j, "a", 0.5)).collect::<Vec<_>>())
                .unwrap();
            s.record_answers(&(i..end).map(answer).collect::<Vec<_>>()).unwrap();
            i = end;
        }
    }

    fn feedback(q: f32) -> Feedback {
        Feedback {
            quality: q,
            kind: "quality".into(),
            value: f64::from(q),
            time_ms: 1_700_000_000_050,
        }
    }

    fn count_keys(t: &Tree) -> usize {
        t.iter().count()
    }

    #[test]
    fn feedback_is_joined_after_reopening() {
        // Which decisions have feedback is kept in memory and rebuilt on
        // open; reads skip the feedback lookup for the others.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            fill(&s, 0, 4, 4);
            s.record_feedback("req-1", feedback(0.9), 60_000).unwrap();
        }
        let s = reopen(&path).unwrap();
        let with = s.get("req-1").unwrap().unwrap();
        assert_eq!(with.feedback.map(|f| f.feedback.quality), Some(0.9));
        assert_eq!(with.outcomes[0].quality, Some(0.9));
        assert!(s.get("req-2").unwrap().unwrap().feedback.is_none());
        s.record_feedback("req-2", feedback(0.4), 60_000).unwrap();
        assert!(s.get("req-2").unwrap().unwrap().feedback.is_some());
    }

    #[test]
    fn appends_roll_into_segments_and_reads_span_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = segmented(&path, 10);
            for b in 0..7u64 {
                s.append_decisions(&(b * 5..b * 5 + 5).map(rec).collect::<Vec<_>>())
                    .unwrap();
            }
            assert_eq!(segment_files(&path), vec![0, 10, 20, 30]);
        }
        // Reopened with other limits: existing segments are read as they are.
        let s = SledStore::open(&path).unwrap();
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
        assert_eq!(all, (0..35).map(rec).collect::<Vec<_>>());
        for i in [0, 9, 10, 29, 34] {
            assert_eq!(s.get(&format!("req-{i}")).unwrap().unwrap().decision, rec(i));
        }
        assert_eq!(s.first_kept(), 0);
        assert_eq!(s.retained(), 35);
        assert_eq!(s.truncation().unwrap(), None);
        // Nothing due: nothing removed.
        let keep = Retention {
            max_experiences: Some(1000),
            ..Retention::default()
        };
        assert_eq!(
            s.apply_retention(&keep, u64::MAX).unwrap(),
            Pruned {
                removed: 0,
                first_kept: 0
            }
        );
    }

    #[test]
    fn retention_by_count_removes_whole_old_segments_and_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let s = segmented(&path, 10);
        s.put_doc_json("experiments", "e1", b"{\"name\":\"e1\"}").unwrap();
        fill(&s, 0, 100, 10);
        for i in [5u64, 69, 70, 99] {
            s.record_feedback(&format!("req-{i}"), feedback(0.9), 60_000).unwrap();
        }
        assert_eq!(segment_files(&path).len(), 10);

        let keep = Retention {
            max_experiences: Some(25),
            ..Retention::default()
        };
        // Newest 25 are 75..100: segments up to 60..70 lie wholly before them.
        let p = s.apply_retention(&keep, 0).unwrap();
        assert_eq!(
            p,
            Pruned {
                removed: 70,
                first_kept: 70
            }
        );
        assert_eq!(s.len(), 100);
        assert_eq!(s.first_kept(), 70);
        assert_eq!(s.retained(), 30);
        assert_eq!(
            s.truncation().unwrap(),
            Some(Truncation {
                removed: 70,
                first_kept: 70,
                pruned_before_ms: rec(69).time_ms
            })
        );
        assert_eq!(segment_files(&path), vec![70, 80, 90]);

        // Pruned ids are gone everywhere.
        for i in [0u64, 5, 69] {
            let id = format!("req-{i}");
            assert!(s.get(&id).unwrap().is_none(), "{id}");
            assert!(s.answered(&id).unwrap().is_none(), "{id}");
            assert!(s.feedback.get(id.as_bytes()).unwrap().is_none(), "{id}");
            assert!(matches!(
                s.record_outcomes(&[out(i, "a", 1.0)]),
                Err(Error::NotFound(_))
            ));
            assert!(matches!(
                s.record_feedback(&id, feedback(0.1), 60_000),
                Err(Error::NotFound(_))
            ));
        }
        assert_eq!(count_keys(&s.outcomes), 30);
        assert_eq!(
            s.outcomes.first().unwrap().map(|(k, _)| outcome_seq(&k).unwrap()),
            Some(70)
        );
        assert_eq!(count_keys(&s.answers), 30);
        assert_eq!(count_keys(&s.feedback), 2);
        assert_eq!(s.rewarded.lock().len(), 30);
        assert_eq!(parse_seq(&s.index_tree.first().unwrap().unwrap().0).unwrap(), 70);
        // Kept ones are whole.
        let e = s.get("req-70").unwrap().unwrap();
        assert_eq!(e.decision, rec(70));
        assert_eq!(e.outcomes.len(), 1);
        assert!(e.feedback.is_some());
        // Iteration starts at the oldest kept, sampling never returns a
        // pruned one.
        let seqs: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(seqs, (70..100).collect::<Vec<_>>());
        let seqs: Vec<u64> = s.iter_from(75).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(seqs, (75..100).collect::<Vec<_>>());
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for how in [Sampling::Uniform, Sampling::Recent { half_life: 1000 }] {
            let got = s.sample(500, &how, &mut rng).unwrap();
            assert_eq!(got.len(), 500);
            assert!(got.iter().all(|e| seq_of(e) >= 70), "{how:?}");
        }
        // Documents are never pruned.
        assert_eq!(s.docs_json("experiments").unwrap(), vec![b"{\"name\":\"e1\"}".to_vec()]);

        // Again: nothing more is due. A pruned id may be appended anew.
        assert_eq!(s.apply_retention(&keep, 0).unwrap().removed, 0);
        s.append_decisions(&[rec(100), rec_id(101, "req-3")]).unwrap();
        assert_eq!(s.get("req-3").unwrap().unwrap().decision, rec_id(101, "req-3"));
        assert_eq!(s.len(), 102);
    }

    #[test]
    fn retention_by_age_keeps_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = segmented(&path, 10);
            fill(&s, 0, 100, 10);
        }
        // Reopened: segment times are not known yet and are read from disk.
        let s = segmented(&path, 10);
        let now = rec(100).time_ms;
        let keep = Retention {
            max_age_ms: Some(50),
            ..Retention::default()
        };
        // Past retention: time_ms < now - 50, i.e. decisions 0..50.
        let p = s.apply_retention(&keep, now).unwrap();
        assert_eq!(p.first_kept, 50);
        assert_eq!(p.removed, 50);
        assert!(s.get("req-49").unwrap().is_none());
        assert_eq!(s.get("req-50").unwrap().unwrap().decision, rec(50));
        assert_eq!(s.truncation().unwrap().unwrap().pruned_before_ms, rec(49).time_ms);
        // A decision in a segment is only removed with the whole segment.
        let p = s.apply_retention(&keep, now + 5).unwrap();
        assert_eq!((p.removed, p.first_kept), (0, 50));
        // Much later everything is past it, the newest segment included;
        // appends then start a new segment.
        let p = s.apply_retention(&keep, now + 1_000_000).unwrap();
        assert_eq!((p.removed, p.first_kept), (50, 100));
        assert_eq!(s.retained(), 0);
        assert!(segment_files(&path).is_empty());
        assert_eq!(s.iter_from(0).count(), 0);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(s.sample(5, &Sampling::Uniform, &mut rng).unwrap().is_empty());
        assert_eq!(
            s.truncation().unwrap(),
            Some(Truncation {
                removed: 100,
                first_kept: 100,
                pruned_before_ms: rec(99).time_ms
            })
        );
        fill(&s, 100, 103, 3);
        assert_eq!(segment_files(&path), vec![100]);
        drop(s);
        let s = reopen(&path).unwrap();
        let seqs: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(seqs, vec![100, 101, 102]);
    }

    #[test]
    fn retention_by_bytes_keeps_at_least_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let s = segmented(&path, 10);
        fill(&s, 0, 100, 10);
        let per = {
            let mut b = Vec::new();
            codec::encode_decision(&rec(50), &mut b);
            b.len() as u64
        };
        let keep = Retention {
            max_bytes: Some(per * 25),
            ..Retention::default()
        };
        let p = s.apply_retention(&keep, 0).unwrap();
        // Record sizes vary by a byte or two: 25–35 decisions stay.
        assert!((60..=75).contains(&p.first_kept), "{p:?}");
        assert!(s.retained() >= 25);
    }

    #[test]
    fn reopening_after_pruning_keeps_first_kept_and_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = segmented(&path, 10);
            fill(&s, 0, 50, 10);
            let keep = Retention {
                max_experiences: Some(20),
                ..Retention::default()
            };
            assert_eq!(s.apply_retention(&keep, 0).unwrap().first_kept, 30);
        }
        let s = segmented(&path, 10);
        assert_eq!((s.len(), s.first_kept(), s.retained()), (50, 30, 20));
        assert!(s.get("req-29").unwrap().is_none());
        fill(&s, 50, 55, 5);
        assert_eq!(s.len(), 55);
        let seqs: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(seqs, (30..55).collect::<Vec<_>>());
        assert_eq!(s.truncation().unwrap().unwrap().removed, 30);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let got = s.sample(200, &Sampling::Uniform, &mut rng).unwrap();
        assert!(got.iter().all(|e| (30..55).contains(&seq_of(e))));
        // Counts accumulate across opens.
        let keep = Retention {
            max_experiences: Some(5),
            ..Retention::default()
        };
        let p = s.apply_retention(&keep, 0).unwrap();
        assert_eq!((p.removed, p.first_kept), (20, 50));
        drop(s);
        let s = reopen(&path).unwrap();
        let t = s.truncation().unwrap().unwrap();
        assert_eq!((t.removed, t.first_kept), (50, 50));
        assert_eq!(s.first_kept(), 50);
    }

    /// A crash right after a prune's commit: the truncation record says
    /// decisions before 20 are gone, but their index entries, rows and files
    /// are all still there. Open finishes the prune; leftover files of an
    /// even later point (rows and entries gone, files not) and a segment an
    /// append started but never committed are deleted too.
    #[test]
    fn open_finishes_an_interrupted_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = segmented(&path, 10);
            fill(&s, 0, 40, 10);
            s.record_feedback("req-3", feedback(0.5), 60_000).unwrap();
        }
        {
            let db = open_sled(&path, DEFAULT_CACHE_BYTES).unwrap();
            let t = Truncation {
                removed: 20,
                first_kept: 20,
                pruned_before_ms: rec(19).time_ms,
            };
            db.insert(TRUNCATION_KEY, &encode_truncation(&t)).unwrap();
            db.flush().unwrap();
        }
        std::fs::write(path.join(data_file::segment_name(41)), b"never committed").unwrap();
        assert_eq!(segment_files(&path), vec![0, 10, 20, 30, 41]);

        let s = reopen(&path).unwrap();
        assert_eq!(segment_files(&path), vec![20, 30]);
        assert_eq!((s.len(), s.first_kept(), s.retained()), (40, 20, 20));
        assert!(s.get("req-3").unwrap().is_none());
        assert!(s.answered("req-3").unwrap().is_none());
        assert_eq!(count_keys(&s.outcomes), 20);
        assert_eq!(count_keys(&s.answers), 20);
        assert_eq!(count_keys(&s.feedback), 0);
        assert_eq!(s.rewarded.lock().len(), 20);
        assert_eq!(count_keys(&s.index_tree), 2);
        let seqs: Vec<u64> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
        assert_eq!(seqs, (20..40).collect::<Vec<_>>());
        drop(s);

        // Files of pruned segments without index entries (a crash between
        // deleting the entries and the files) are deleted on open too.
        std::fs::write(path.join(data_file::segment_name(10)), b"leftover").unwrap();
        let s = reopen(&path).unwrap();
        assert_eq!(segment_files(&path), vec![20, 30]);
        assert_eq!(s.retained(), 20);
    }

    #[test]
    fn a_missing_kept_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = segmented(&path, 10);
            fill(&s, 0, 30, 10);
        }
        std::fs::remove_file(path.join(data_file::segment_name(10))).unwrap();
        let err = reopen(&path).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
    }

    /// A store written before segments (one `decisions.dat`, format 2) or
    /// before frames (segments of bare records, format 3): it opens, reads,
    /// grows in new, framed segments and prunes like any other.
    #[test]
    fn stores_of_older_formats_still_open() {
        for (format, file) in [
            (FORMAT_SINGLE_FILE, data_file::LEGACY_DATA_FILE.to_string()),
            (FORMAT_UNFRAMED, data_file::segment_name(0)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            {
                let db = open_sled(&path, DEFAULT_CACHE_BYTES).unwrap();
                db.insert(FORMAT_KEY, &format.to_be_bytes()).unwrap();
                let index = db.open_tree("index").unwrap();
                let mut data = Vec::new();
                let mut offset = 0;
                for first in [0u64, 3] {
                    let mut entries = Vec::new();
                    for i in first..first + 3 {
                        let before = data.len();
                        codec::encode_decision(&rec(i), &mut data);
                        entries.push(((data.len() - before) as u64, id_hash(&format!("req-{i}"))));
                    }
                    let mut v = Vec::new();
                    codec::encode_index_chunk(offset, &entries, &mut v);
                    index.insert(seq_key(first), v).unwrap();
                    offset = data.len() as u64;
                }
                // An append that died before its commit left bytes past the
                // committed end: cut off, not read as frames.
                data.extend_from_slice(b"uncommitted");
                std::fs::write(path.join(&file), &data).unwrap();
                db.flush().unwrap();
            }
            {
                // Segments of 10: the bare one takes no more records anyway.
                let s = segmented(&path, 10);
                assert_eq!(s.len(), 6);
                assert_eq!(s.get("req-4").unwrap().unwrap().decision, rec(4));
                fill(&s, 6, 12, 2);
                assert_eq!(segment_files(&path), vec![0, 6]);
                assert!(path.join(&file).exists());
            }
            let s = reopen(&path).unwrap();
            assert_eq!(s.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(), FORMAT.to_be_bytes());
            assert_eq!(s.db.get(FRAMED_FROM_KEY).unwrap().unwrap().as_ref(), seq_key(6));
            let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
            assert_eq!(all, (0..12).map(rec).collect::<Vec<_>>());
            let keep = Retention {
                max_experiences: Some(5),
                ..Retention::default()
            };
            assert_eq!(s.apply_retention(&keep, 0).unwrap().first_kept, 6);
            assert!(!path.join(&file).exists());
            assert!(s.get("req-0").unwrap().is_none());
            assert_eq!(s.get("req-6").unwrap().unwrap().decision, rec(6));
        }
    }

    /// Drops the `index` entries of the decisions from `from` on, as a crash
    /// before sled's flush loses the end of its log (entries are whole
    /// appends, so `from` must start one).
    fn lose_index_entries(s: &SledStore, from: u64) {
        for kv in s.index_tree.range(seq_key(from)..) {
            s.index_tree.remove(kv.unwrap().0).unwrap();
        }
        s.db.flush().unwrap();
    }

    /// An append is acknowledged once its framed records are synced; sled
    /// flushes their index entries later. Open finds the records past the
    /// committed end, across segments, hash collisions included, and the
    /// store goes on from there.
    #[test]
    fn acknowledged_decisions_whose_index_entries_were_lost_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let ids = |from: u64, to: u64| (from..to).map(rec).collect::<Vec<_>>();
        let collided = |i: u64| DecisionRecord {
            request_id: format!("collide-{i}"),
            ..rec(i)
        };
        {
            let s = segmented(&path, 4);
            s.append_decisions(&ids(0, 3)).unwrap();
            s.append_decisions(&[collided(3)]).unwrap();
            s.append_decisions(&ids(4, 7)).unwrap();
            s.append_decisions(&[collided(7)]).unwrap();
            s.append_decisions(&ids(8, 10)).unwrap();
            assert_eq!(segment_files(&path), vec![0, 4, 8]);
            lose_index_entries(&s, 3);
        }
        // A crash also leaves the zeros written ahead of the records.
        let newest = path.join(data_file::segment_name(8));
        let len = file_len(&newest);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap()
            .set_len(len + 4096)
            .unwrap();
        let want: Vec<_> = ids(0, 3)
            .into_iter()
            .chain([collided(3)])
            .chain(ids(4, 7))
            .chain([collided(7)])
            .chain(ids(8, 12))
            .collect();
        {
            let s = segmented(&path, 4);
            assert_eq!(s.len(), 10);
            assert_eq!(s.get("collide-7").unwrap().unwrap().decision, collided(7));
            assert_eq!(s.get("req-9").unwrap().unwrap().decision, rec(9));
            s.append_decisions(&ids(10, 12)).unwrap();
            s.record_outcomes(&[out(11, "a", 0.5)]).unwrap();
            // A retried append of recovered records is a no-op.
            s.append_decisions(&ids(8, 10)).unwrap();
        }
        let s = reopen(&path).unwrap();
        let all: Vec<_> = s.iter_from(0).map(|e| e.unwrap().decision).collect();
        assert_eq!(all, want);
        assert_eq!(s.get("collide-3").unwrap().unwrap().decision, collided(3));
        assert_eq!(s.get("req-11").unwrap().unwrap().outcomes.len(), 1);
    }

    /// The newest segment is written ahead with zeros (so that syncs of
    /// appends need not commit a new file size), cut off when the segment
    /// takes no more records and when the store is closed.
    #[test]
    fn segments_are_written_ahead_and_cut_to_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let seg = |first| path.join(data_file::segment_name(first));
        let s = segmented(&path, 3);
        s.append_decisions(&(0..2).map(rec).collect::<Vec<_>>()).unwrap();
        let records = s.index.read().unwrap().end();
        assert!(file_len(&seg(0)) > records, "no zeros ahead");
        s.append_decisions(&(2..4).map(rec).collect::<Vec<_>>()).unwrap();
        s.append_decisions(&(4..5).map(rec).collect::<Vec<_>>()).unwrap();
        let (second, end) = {
            let index = s.index.read().unwrap();
            (index.segments[1].start, index.end())
        };
        assert_eq!(file_len(&seg(0)), second, "the full segment is cut to its records");
        assert!(file_len(&seg(4)) > end - second, "no zeros ahead");
        drop(s);
        assert_eq!(file_len(&seg(4)), end - second, "closing cuts the newest segment");
        let s = reopen(&path).unwrap();
        assert_eq!(s.iter_from(0).count(), 5);
    }

    /// Recovery stops at a frame that fails its checksum or is cut short (an
    /// append whose sync never returned, so never acknowledged), and cuts it
    /// off: the next append writes over it.
    #[test]
    fn recovery_stops_at_a_damaged_or_torn_frame() {
        for damage in ["flip a byte", "cut short"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let file = data_path(&dir);
            {
                let s = SledStore::open(&path).unwrap();
                s.append_decisions(&(0..2).map(rec).collect::<Vec<_>>()).unwrap();
                s.append_decisions(&(2..4).map(rec).collect::<Vec<_>>()).unwrap();
                s.append_decisions(&(4..6).map(rec).collect::<Vec<_>>()).unwrap();
                let (_, start, _) = s.index.read().unwrap().span(4).unwrap();
                lose_index_entries(&s, 2);
                let mut data = std::fs::read(&file).unwrap();
                match damage {
                    "flip a byte" => data[start as usize + data_file::FRAME_HEADER + 3] ^= 1,
                    _ => data.truncate(start as usize + data_file::FRAME_HEADER + 3),
                }
                std::fs::write(&file, &data).unwrap();
            }
            {
                let s = reopen(&path).unwrap();
                assert_eq!(s.len(), 4, "{damage}");
                assert!(s.get("req-4").unwrap().is_none(), "{damage}");
                s.append_decisions(&[rec(6)]).unwrap();
            }
            let s = reopen(&path).unwrap();
            let all: Vec<_> = s.iter_from(0).map(|e| seq_of(&e.unwrap())).collect();
            assert_eq!(all, vec![0, 1, 2, 3, 6], "{damage}");
        }
    }

    /// A record read back must match its frame: damage is reported, not
    /// decoded.
    #[test]
    fn a_damaged_committed_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = SledStore::open(&path).unwrap();
            s.append_decisions(&(0..3).map(rec).collect::<Vec<_>>()).unwrap();
        }
        let file = data_path(&dir);
        let mut data = std::fs::read(&file).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&file, &data).unwrap();
        let s = reopen(&path).unwrap();
        assert!(s.get("req-0").unwrap().is_some());
        let err = s.get("req-2").unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn truncation_records_round_trip() {
        let t = Truncation {
            removed: 1,
            first_kept: u64::MAX,
            pruned_before_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_truncation(&encode_truncation(&t)).unwrap(), t);
        assert!(decode_truncation(&[0; 23]).is_err());
    }
}
