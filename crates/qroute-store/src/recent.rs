//! A bounded cache of decoded experiences by sequence number, for replay
//! sampling.
//!
//! The trainer draws its batches mostly from the newest few thousand
//! rewarded decisions (recency-weighted replay), a few hundred times a
//! second. Reading each draw from disk meant a positioned read, a decode of
//! the whole record and sled lookups for its outcomes and feedback, every
//! time: most of the trainer's CPU and most of the process's allocations.
//! Here a decoded experience is kept, shared, until a newer sequence number
//! takes its slot or a write changes it.
//!
//! Exactness: every write that changes an experience (an outcome, feedback)
//! calls [`Recent::forget`] after the write. A reader takes a [`Ticket`]
//! before it reads from disk and may only store what it read if no `forget`
//! touched the slot in between, so a read that raced a write is never kept.
//!
//! `forget` takes no lock: it bumps the slot's generation, an atomic, and an
//! entry is served only while its slot's generation is the one it was
//! stored under. The group writer calls `forget` on the acknowledgement path
//! and the trainer, at nice 19, holds the slots' lock; were `forget` to take
//! it, a trainer preempted inside would stall the writer (and every request
//! waiting on it) until the scheduler ran the trainer again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qroute_core::record::Experience;

/// Slots of the cache: sequence numbers map to `seq % capacity`, so the
/// newest `capacity` decisions can all be held at once.
pub(crate) struct Recent {
    slots: Mutex<Vec<Slot>>,
    /// Each slot's generation, bumped by every [`Recent::forget`] of any
    /// sequence number in it, so a [`Ticket`] or entry from before no longer
    /// fits.
    generations: Vec<AtomicU64>,
}

#[derive(Default)]
struct Slot {
    seq: u64,
    /// The slot's generation when `experience` was stored.
    generation: u64,
    experience: Option<Arc<Experience>>,
}

/// Permission to store what a miss read from disk, valid until the slot is
/// next forgotten.
pub(crate) struct Ticket {
    slot: usize,
    generation: u64,
}

pub(crate) enum Lookup {
    Hit(Arc<Experience>),
    Miss(Ticket),
}

impl Recent {
    /// A cache of `capacity` slots (at least one).
    pub(crate) fn new(capacity: usize) -> Recent {
        let capacity = capacity.max(1);
        let mut slots = Vec::new();
        slots.resize_with(capacity, Slot::default);
        Recent {
            slots: Mutex::new(slots),
            generations: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot_of(&self, seq: u64) -> usize {
        (seq % self.generations.len() as u64) as usize
    }

    fn generation(&self, slot: usize) -> u64 {
        self.generations[slot].load(Ordering::SeqCst)
    }

    /// The cached experience `seq`, or a ticket to store it once read.
    pub(crate) fn get(&self, seq: u64) -> Lookup {
        let i = self.slot_of(seq);
        let slots = self.lock();
        let slot = &slots[i];
        let generation = self.generation(i);
        match &slot.experience {
            Some(e) if slot.seq == seq && slot.generation == generation => Lookup::Hit(e.clone()),
            _ => Lookup::Miss(Ticket { slot: i, generation }),
        }
    }

    /// Keeps `experience` as `seq`, unless its slot was forgotten since the
    /// ticket was taken (the read may predate a write). A `forget` that
    /// lands just after this check still voids the entry: it is served only
    /// under the generation it was stored with.
    pub(crate) fn put(&self, seq: u64, ticket: Ticket, experience: Arc<Experience>) {
        let mut slots = self.lock();
        if self.generation(ticket.slot) == ticket.generation {
            slots[ticket.slot] = Slot {
                seq,
                generation: ticket.generation,
                experience: Some(experience),
            };
        }
    }

    /// Voids `seq`'s slot (it changed, or is being removed): its entry and
    /// every ticket for it. Lock-free.
    pub(crate) fn forget(&self, seq: u64) {
        self.generations[self.slot_of(seq)].fetch_add(1, Ordering::SeqCst);
    }

    /// Voids every slot (retention removed decisions). Lock-free; the
    /// entries' memory is released as newer ones take their slots.
    pub(crate) fn clear(&self) {
        for g in &self.generations {
            g.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(id: &str) -> Arc<Experience> {
        Arc::new(Experience {
            decision: crate::writer::tests::decision(id),
            outcomes: Vec::new(),
            feedback: None,
        })
    }

    fn hit(r: &Recent, seq: u64) -> Option<String> {
        match r.get(seq) {
            Lookup::Hit(e) => Some(e.decision.request_id.clone()),
            Lookup::Miss(_) => None,
        }
    }

    fn fill(r: &Recent, seq: u64, id: &str) {
        let Lookup::Miss(t) = r.get(seq) else {
            panic!("{seq} is cached already")
        };
        r.put(seq, t, exp(id));
    }

    #[test]
    fn a_stored_experience_is_served_until_a_newer_seq_takes_its_slot() {
        let r = Recent::new(4);
        fill(&r, 1, "one");
        assert_eq!(hit(&r, 1).as_deref(), Some("one"));
        assert_eq!(hit(&r, 5), None, "seq 5 shares the slot but is not seq 1");
        fill(&r, 5, "five");
        assert_eq!(hit(&r, 5).as_deref(), Some("five"));
        assert_eq!(hit(&r, 1), None, "seq 1 was replaced");
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let r = Recent::new(4);
        let Lookup::Miss(ticket) = r.get(2) else { panic!() };
        // An outcome for seq 2 lands while the reader is on disk.
        r.forget(2);
        r.put(2, ticket, exp("stale"));
        assert_eq!(hit(&r, 2), None, "the stale read was dropped");
        // So does a write to another seq of the same slot: the reader may
        // have read that one's old state too, had it been asked for it.
        let Lookup::Miss(ticket) = r.get(2) else { panic!() };
        r.forget(6);
        r.put(2, ticket, exp("maybe stale"));
        assert_eq!(hit(&r, 2), None);
        fill(&r, 2, "fresh");
        assert_eq!(hit(&r, 2).as_deref(), Some("fresh"));
    }

    #[test]
    fn forget_and_clear_take_no_lock() {
        let r = Recent::new(4);
        fill(&r, 1, "one");
        let held = r.lock();
        // On the holder's own thread: a forget that waited for the lock
        // would never return.
        r.forget(1);
        r.clear();
        drop(held);
        assert_eq!(hit(&r, 1), None);
        // A ticket from before the forget stores nothing.
        let Lookup::Miss(ticket) = r.get(2) else { panic!() };
        {
            let _held = r.lock();
            r.forget(2);
        }
        r.put(2, ticket, exp("stale"));
        assert_eq!(hit(&r, 2), None);
    }

    #[test]
    fn forget_and_clear_drop_entries() {
        let r = Recent::new(8);
        fill(&r, 3, "three");
        fill(&r, 4, "four");
        r.forget(3);
        assert_eq!(hit(&r, 3), None);
        assert_eq!(hit(&r, 4).as_deref(), Some("four"));
        r.clear();
        assert_eq!(hit(&r, 4), None);
    }
}
