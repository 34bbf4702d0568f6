//! qroute-store: the embedded experience store (the default backend of
//! [`qroute_core::store::ExperienceStore`]) and the group-commit writer
//! that turns a server's many concurrent writes into few durable calls.
//!
//! Every routing decision, and the outcomes joined to it later, are kept
//! durably on disk for training.
//!
//! # Layout
//!
//! A store is one directory holding a sled database and the data segments
//! (store format 5; the key `qroute.store.format` in sled's default tree):
//!
//! - `decisions-{first_seq:020}.dat`: data segments, each holding the encoded
//!   [`DecisionRecord`]s (see `codec.rs`), each in a frame (its length and
//!   CRC-32, see `data_file.rs`), from sequence number `first_seq` up to the
//!   next segment's first, back to back in sequence (insertion) order;
//!   past the records of the newest segment, up to a MiB of zeros written
//!   ahead of them (a sync then overwrites blocks instead of growing the
//!   file; cut off when the segment is full or the store is closed). An append writes its records at the end of the newest
//!   segment in one write; once that segment holds 64 MiB (or the limits of
//!   [`StoreOptions`]), the next append starts a new one. Segments exist so
//!   that retention can free disk: dropping a whole old file is cheap and
//!   crash-safe, cutting the front off one file is neither. A store written
//!   before segments (format 2) has one `decisions.dat`, read as the segment
//!   that starts at 0: such a store opens as it is (and is marked format 5,
//!   so an older build refuses it instead of misreading it).
//! - sled tree `index`: first sequence number (u64 big-endian) → one entry
//!   per run of up to 256 consecutive decisions of one append: the offset of
//!   the first, then each one's framed length and a 64-bit hash of its
//!   request id. Offsets count in the "logical" data stream, the
//!   concatenation of every segment ever written (so a format 2 store's
//!   entries stay valid); a segment starts where the entry for its
//!   `first_seq` starts. Entries are contiguous (each starts where the
//!   previous one ended, in sequence numbers and in bytes), and an append
//!   never spans two segments; together they say which prefix of the data is
//!   committed. Entries stay at a few KB because sled 0.34 writes any log
//!   message over a quarter of its segment size (whole leaves of up to 17
//!   values included) to a separate blob file it never fsyncs.
//! - sled tree `outcomes_by_seq`: the decision's sequence number (u64
//!   big-endian) ++ model → encoded [`Outcome`]. Its keys say which
//!   decisions are rewarded.
//! - sled tree `answers_by_seq`: sequence number of the request's own
//!   decision (the one whose id is the request id) → JSON [`Answered`]:
//!   which decision and model answered the caller (written with the
//!   outcomes).
//!
//!   Both are keyed by sequence number, so rows land at the end of their
//!   tree. Format 4 keyed them by request id, with a `rewarded` tree
//!   beside them: each row went to a random leaf, mostly outside sled's
//!   4 MiB cache. A million decisions with an outcome and an answer each
//!   grew a store-only process by 104 bytes per decision after the first
//!   200,000 and took 223 s; keyed by sequence number, 50 bytes and 96 s.
//!   Open moves a format 4 store's rows to the new trees (a crash midway
//!   moves them again on the next open) and drops the old ones.
//! - sled tree `feedback`: request id → JSON [`FeedbackRecord`]; joined to
//!   the experience of the decision that answered.
//! - key `qroute.store.truncation` in sled's default tree: what retention
//!   removed so far ([`Truncation`]: how many decisions, the oldest kept
//!   sequence number `first_kept`, and the time of the newest removed one).
//!   Absent until retention first removed something.
//! - other sled trees: documents ([`put_doc_json`]: experiments, keys).
//!   Retention never touches them.
//!
//! On open the `index` tree is loaded into memory (about 12 bytes per
//! decision kept; `index_tables.rs`): the length of every decision's record
//! (with its offset every 64), and request-id hash → sequence number, the
//! newest 65,536 in a hash map and the rest in a sorted table of 32-bit
//! hashes (an id whose hash an earlier fresh id already has is kept by full
//! id instead). A lookup by id is a hash probe and a binary search, one
//! positioned read of the data file per candidate and a check that the
//! record read has that id; sampling reads the record at a sequence number
//! directly. The sequence numbers of the outcomes' keys are loaded into a
//! bitmap, one bit per decision with a running count every 512 bits
//! (`rewarded.rs`): sampling finds the k-th rewarded decision with a binary
//! search and a few popcounts, so it draws only experiences that have
//! outcomes without a rejection loop.
//!
//! The group writer does not wait on the locks sampling holds. The trainer
//! samples at nice 19, and a thread that low is easily preempted inside a
//! critical section; a writer blocked behind it holds back every
//! acknowledgement queued after it. (A first bitmap, whose k-th lookup held
//! the lock ~10x longer than indexing a sorted vector did, was reverted when
//! the gateway's p99 at 2,000 req/s with a 0 ms upstream came out worse in
//! most runs with it.) So the writer queues newly rewarded decisions on a
//! channel and merges them only when the set's lock is free, and the
//! sampling cache's `forget`, which the writer calls after each outcome,
//! takes no lock. At 2,000 req/s the trainer had woken a blocked writer
//! 250–390 times in 20 s; now it does not. (The index's lock is still
//! shared: sampling takes it to find a record it must read from disk, for
//! the time of one lookup.) The writer finds the decisions it joins
//! outcomes and answers to in a ring of the newest 8,192 it appended
//! (`newest.rs`), without reading them back.
//!
//! Sampling keeps what it decoded: the newest 16,384 sequence numbers each
//! have a slot for their decoded experience, shared with every later draw
//! until an outcome or feedback write forgets it (`recent.rs`). The
//! trainer's recency-weighted replay draws ~90% of its batches from there.
//! The id hashes of decisions with feedback are kept too (8 bytes each),
//! so reading the many without feedback costs no lookup for it.
//!
//! Why not the decisions themselves in sled: sled rewrites a whole leaf (up
//! to 17 values) when it consolidates or splits it, so appending ~1.8 KB
//! values costs about three times their size in log writes plus a B-tree
//! insert each (~35 µs per record measured), and a value large enough to hold
//! a whole batch becomes an unsynced blob file. The data file is written once,
//! sequentially, and sled only carries a few small index entries per append.
//!
//! # Retention
//!
//! Without `[store.retention]` the store grows by each decision (about
//! 1.5–2 KB with its index entry and outcomes) for ever.
//! [`SledStore::apply_retention`], which a server calls now and then,
//! removes the oldest *segments* whose every decision is past a limit (older
//! than `max_age_ms` by its `time_ms`, or outside the newest
//! `max_experiences` decisions or `max_bytes` of data), together with those
//! decisions' index entries, outcomes, answers and feedback. So it keeps everything within the limits and at most one
//! segment more (a format 2 store's `decisions.dat` is one segment, and is
//! only removed once all of it is past retention). Sequence numbers never
//! change: decisions `first_kept..len` are stored, `len` still counts every
//! decision ever appended, `get` of a removed id is `None`, sampling never
//! returns one and `iter_from(0)` starts at `first_kept`. Reports built on
//! the store read [`SledStore::truncation`] to say what they no longer see.
//!
//! A prune (1) commits the new truncation record (its `first_kept` is the
//! commit point) and flushes sled, (2) drops the decisions from the
//! in-memory index, (3) deletes their feedback, outcomes and answers, then
//! their `index` entries, then their segment files. The index entries and
//! the files go last because they are how the request ids of the removed
//! decisions (the keys of their feedback) are found again: a crash after (1)
//! leaves entries and files below `first_kept`, which open never serves and
//! uses to finish (3). Appends wait only for (1) and (2).
//!
//! # Flush policy
//!
//! Every [`SledStore::append_decisions`] and [`SledStore::record_outcomes`]
//! call is durable before it returns `Ok`. An append (1) writes its records,
//! each in a frame (its length and CRC-32), past the committed end of the
//! newest segment and fdatasyncs it, (2) inserts their `index` entries in
//! order, unsynced, (3) publishes them to readers. When it returns `Ok`, what
//! it wrote survives a crash of the process or the machine: sled's next flush
//! (its own, every 500 ms, or any call's) makes the entries durable, and if a
//! crash comes first, open finds the synced frames past the committed end
//! and commits them again. When it returns an error, nothing it wrote may be
//! relied on. A call is therefore the group-commit unit: a thousand records
//! in one call cost one data write and one sync, a thousand calls of one
//! record cost a thousand of each. The ack waits for one sync, not two in a
//! row (the data, then sled's log), and sled's log is written out in larger,
//! fewer pieces. `record_outcomes` writes the outcomes, then flushes sled;
//! `record_outcomes_unsynced` and
//! `record_answers` leave that flush to a later call or to sled's own (the
//! group-commit writer syncs them only when someone waits for an outcome).
//! [`SledStore::apply_retention`] is durable on return too.
//!
//! Segments of a store older than format 4 hold bare records: they are read
//! as they are, and the first append after the upgrade starts a framed
//! segment (key `qroute.store.framed_from`: its first sequence number).
//!
//! The hot path uses plain sled inserts, not batches: sled 0.34 writes out
//! and syncs its log buffer twice for every batch (on its I/O threads), which
//! was a third of a loaded gateway's CPU, while a crash recovers a prefix of
//! sled's log either way.
//!
//! What a crash (SIGKILL, power loss) between those writes can leave, and
//! why it is harmless:
//!
//! - sled recovers a prefix of its log, so a crash keeps a prefix of the
//!   index entries, whose records were synced before they were written: a
//!   committed entry never points at missing data. The records past the last
//!   recovered entry are read back frame by frame, from there through every
//!   segment that starts where the last one found ends, and committed again;
//!   the scan stops at the first frame that is torn or fails its checksum (an
//!   append whose sync never returned: never acknowledged; or the zeros
//!   written ahead), and the segment is cut back to the end of what it
//!   found. A whole segment file starting
//!   past that is deleted. (A segment shorter than the index commits, or
//!   missing, means data was lost outside the store's control: open fails
//!   instead of guessing.)
//! - A new segment's directory entry is synced when the file is created,
//!   before any data in it is written.
//! - Outcomes and answers not yet flushed by sled are lost; nothing
//!   acknowledged depends on them (a waiter of an outcome is answered after
//!   a flush). Sled writes them after the index entries of their decisions,
//!   so none survives without its decision.
//!
//! If an insert of step 2 fails, earlier ones may be in sled's memory, so
//! the store refuses further appends until it is reopened. A failed data
//! write or sync is cut off the segment again (or, if that fails too, the
//! store refuses appends until it is reopened), so that open never finds
//! part of it as if it had been acknowledged.
//!
//! A server that acknowledges one request at a time must not append per
//! request. It should hand each decision (or outcome) to a single writer task
//! together with a reply channel; the writer collects whatever arrives within
//! a short window (a few milliseconds, or until a batch of a few hundred
//! records is full), makes one `append_decisions` / `record_outcomes` call for
//! the whole group, and only then answers every waiting request (an error
//! answers all of them with the error). Nothing may be acknowledged before the
//! call covering it has returned `Ok`. A duplicate of an already stored
//! decision is accepted as a no-op, so a writer may retry a failed batch.

//!
//! [`DecisionRecord`]: qroute_core::record::DecisionRecord
//! [`Outcome`]: qroute_core::record::Outcome
//! [`Answered`]: qroute_core::record::Answered
//! [`FeedbackRecord`]: qroute_core::record::FeedbackRecord
//! [`Truncation`]: qroute_core::store::Truncation
//! [`put_doc_json`]: qroute_core::store::ExperienceStore::put_doc_json
//! [`SledStore::apply_retention`]: qroute_core::store::ExperienceStore::apply_retention
//! [`SledStore::truncation`]: qroute_core::store::ExperienceStore::truncation
//! [`SledStore::append_decisions`]: qroute_core::store::ExperienceStore::append_decisions
//! [`SledStore::record_outcomes`]: qroute_core::store::ExperienceStore::record_outcomes

pub(crate) mod codec;
pub mod config;
mod data_file;
mod index_tables;
mod newest;
pub mod pg;
pub mod pruner;
mod recent;
mod rewarded;
pub mod sled_store;
pub mod writer;

pub use config::{RetentionConfig, StoreConfig};
pub use pg::PgStore;
pub use pruner::Pruner;
pub use sled_store::{SledStore, StoreOptions, DEFAULT_SEGMENT_BYTES};

use std::sync::Arc;

use qroute_core::store::ExperienceStore;

/// Opens (creating when missing) the store `cfg` names: PostgreSQL when
/// `url` is set, else the sled store at `path`.
pub fn open(cfg: &StoreConfig) -> qroute_core::Result<Arc<dyn ExperienceStore>> {
    Ok(match &cfg.url {
        Some(url) => Arc::new(PgStore::open(url)?),
        None => Arc::new(SledStore::open(&cfg.path)?),
    })
}

/// Opens an existing store for reading, creating and migrating nothing:
/// `location` is a `postgres://` URL or a sled store's directory (what
/// `--store` takes on the command line).
pub fn open_existing(location: &str) -> qroute_core::Result<Arc<dyn ExperienceStore>> {
    Ok(if pg::is_postgres_url(location) {
        Arc::new(PgStore::open_existing(location)?)
    } else {
        Arc::new(SledStore::open_existing(location)?)
    })
}
pub use writer::GroupWriter;
