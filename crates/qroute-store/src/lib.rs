//! qroute-store: the embedded experience store (the default backend of
//! [`qroute_core::store::ExperienceStore`]) and the group-commit writer
//! that turns a server's many concurrent writes into few durable calls.
//!
//! Every routing decision, and the outcomes joined to it later, are kept
//! durably on disk for training.
//!
//! # Layout
//!
//! A store is one directory holding a sled database and one data file:
//!
//! - `decisions.dat`: every encoded [`DecisionRecord`] (see `codec.rs`), back
//!   to back in sequence (insertion) order, nothing else. Decision `n` is the
//!   `n`-th record in it; an append adds its records at the end in one write.
//! - sled tree `index`: first sequence number (u64 big-endian) → one entry
//!   per run of up to 256 consecutive decisions of one append: the file
//!   offset of the first, then each one's encoded length and a 64-bit hash
//!   of its request id. Entries are contiguous (each starts where the
//!   previous one ended, in sequence numbers and in bytes); together they say
//!   which prefix of the data file is committed. Entries stay at a few KB
//!   because sled 0.34 writes any log message over a quarter of its segment
//!   size (whole leaves of up to 17 values included) to a separate blob file
//!   it never fsyncs.
//! - sled tree `outcomes`: request_id ++ `0x00` ++ model → encoded
//!   [`Outcome`], so a prefix scan finds every outcome of a request (request
//!   ids may not contain NUL);
//! - sled tree `rewarded`: sequence number → () for each decision with at
//!   least one outcome.
//! - sled tree `answers`: request id → JSON [`Answered`]: which decision and
//!   model answered the caller (written with the outcomes).
//! - sled tree `feedback`: request id → JSON [`FeedbackRecord`]; joined to
//!   the experience of the decision that answered.
//!
//! On open the `index` tree is loaded into memory (about 40 bytes per
//! decision): the end offset of every decision, and request-id hash →
//! sequence number (an id whose hash an earlier id already has is kept by
//! full id instead). A lookup by id is a hash probe, one positioned read of
//! the data file and a check that the record read has that id; sampling
//! reads the record at a sequence number directly. `rewarded` is loaded into
//! a sorted vector (8 bytes per rewarded decision), which gives sampling O(1)
//! random access and lets it draw only experiences that have outcomes
//! without a rejection loop.
//!
//! Why not the decisions themselves in sled: sled rewrites a whole leaf (up
//! to 17 values) when it consolidates or splits it, so appending ~1.8 KB
//! values costs about three times their size in log writes plus a B-tree
//! insert each (~35 µs per record measured), and a value large enough to hold
//! a whole batch becomes an unsynced blob file. The data file is written once,
//! sequentially, and sled only carries a few small index entries per append.
//!
//! # Flush policy
//!
//! Every [`SledStore::append_decisions`] and [`SledStore::record_outcomes`]
//! call is durable before it returns `Ok`. An append (1) writes its records
//! past the committed end of the data file and fdatasyncs it, (2) commits
//! them with one atomic sled batch of `index` entries, (3) publishes them to
//! readers, (4) flushes sled. When it returns `Ok`, what it wrote survives a
//! crash of the process or the machine; when it returns an error, nothing it
//! wrote may be relied on. A call is therefore the group-commit unit: a
//! thousand records in one call cost one data write and two syncs, a thousand
//! calls of one record cost a thousand of each. Appends are serialised up to
//! step 3; they do not wait for each other's sled flush, and one flush makes
//! everything written before it durable. `record_outcomes` writes the new
//! `rewarded` entries in one sled batch, then the outcomes in another, then
//! flushes sled.
//!
//! What a crash (SIGKILL, power loss) between those writes can leave, and
//! why it is harmless:
//!
//! - Records in the data file past the committed end (killed after step 1,
//!   before step 2 was durable), possibly torn: never acknowledged. Open cuts
//!   the file back to the committed end; the next append would overwrite
//!   them anyway.
//! - A sled batch is recovered whole or not at all, and its records were
//!   synced before it was written, so a committed entry never points at
//!   missing data. (A data file shorter than the index commits means data
//!   was lost outside the store's control: open fails instead of guessing.)
//! - `rewarded` entries without outcomes (killed between the two batches of
//!   `record_outcomes`): sampling skips such an entry (and drops it from the
//!   in-memory index); outcomes recorded later make it count. Never the
//!   other way round, which would hide outcomes from sampling.
//!
//! If the sled batch of step 2 fails, part of it may be in sled's memory, so
//! the store refuses further appends until it is reopened (recovery keeps
//! only whole batches). A failed data write or sync changes nothing: the
//! next append writes at the same offset.
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

pub(crate) mod codec;
pub mod config;
mod data_file;
pub mod sled_store;
pub mod writer;

pub use config::{RetentionConfig, StoreConfig};
pub use sled_store::{SledStore, StoreOptions, DEFAULT_SEGMENT_BYTES};
pub use writer::GroupWriter;
