//! The request id and chosen models of the newest appended decisions, by
//! sequence number, so joining rows to a decision just written reads
//! nothing back from disk.
//!
//! A request's outcome and its answer record reach the writer moments after
//! its decision (one upstream call later). Each join found the decision in
//! the index, then read its record back from the data file (a positioned
//! read, the frame check) and decoded its id and chosen models: a fifth of
//! what joining an outcome and an answer cost (`store_append/joins_1000`:
//! 21.4 → ~17 ms per 1,000), about 4 µs of the writer's ~100 µs per request.
//! Here the writer keeps what a join needs of the decisions it appended
//! last; older decisions are read from disk as before.
//!
//! Exactness: a decision's id and chosen models never change once
//! committed, and a sequence number is never reused, so an entry can only
//! be missing (overwritten by a newer seq in its slot), never wrong. Callers
//! look up only the seqs the index still holds, so a pruned decision's
//! entry is never used.

use std::sync::{Arc, Mutex};

/// Decisions held: at 2,000 req/s, the last four seconds of them, far more
/// than an upstream call takes; a join that misses reads from disk.
pub(crate) const CAPACITY: usize = 8192;

/// What a join needs of one committed decision.
#[derive(Clone)]
pub(crate) struct Joinable {
    pub(crate) seq: u64,
    pub(crate) request_id: Arc<str>,
    pub(crate) chosen: Arc<[String]>,
}

/// Slots by `seq % capacity`: the newest `capacity` decisions all fit.
pub(crate) struct NewestDecisions {
    slots: Mutex<Vec<Option<Joinable>>>,
}

impl NewestDecisions {
    /// A ring of `capacity` slots (at least one).
    pub(crate) fn new(capacity: usize) -> NewestDecisions {
        NewestDecisions {
            slots: Mutex::new(vec![None; capacity.max(1)]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Joinable>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the decisions of one append (call only once they are
    /// committed).
    pub(crate) fn keep(&self, appended: impl IntoIterator<Item = Joinable>) {
        let mut slots = self.lock();
        let n = slots.len() as u64;
        for j in appended {
            let i = (j.seq % n) as usize;
            slots[i] = Some(j);
        }
    }

    /// Decision `seq`, if it is still held.
    pub(crate) fn get(&self, seq: u64) -> Option<Joinable> {
        let slots = self.lock();
        let i = (seq % slots.len() as u64) as usize;
        slots[i].as_ref().filter(|j| j.seq == seq).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joinable(seq: u64) -> Joinable {
        Joinable {
            seq,
            request_id: format!("r{seq}").into(),
            chosen: vec![format!("m{seq}")].into(),
        }
    }

    #[test]
    fn the_newest_decisions_are_held_until_a_newer_seq_takes_the_slot() {
        let ring = NewestDecisions::new(4);
        ring.keep((0..6).map(joinable));
        assert!(
            ring.get(0).is_none() && ring.get(1).is_none(),
            "4 and 5 took their slots"
        );
        for seq in 2..6 {
            let j = ring.get(seq).expect("held");
            assert_eq!(
                (j.seq, &*j.request_id, &j.chosen[..]),
                (seq, &*format!("r{seq}"), &[format!("m{seq}")][..])
            );
        }
        assert!(ring.get(9).is_none(), "never appended");
    }
}
