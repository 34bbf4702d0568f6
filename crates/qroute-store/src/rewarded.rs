//! The set of rewarded decisions (those with an outcome), for O(1)-ish
//! random access in replay sampling: filled by the group writer, read by the
//! trainer.
//!
//! **The writer never waits for it.** The trainer samples under this set's
//! lock at nice 19, and a thread that low is easily preempted while it holds
//! the lock; a writer blocked on it would hold back every acknowledgement
//! queued behind it until the scheduler ran the trainer again, a stall of
//! tens to hundreds of milliseconds on a busy machine. So the writer queues
//! new seqs on a channel (a send takes no lock) and merges them only if the
//! lock is free at that moment; whoever takes the lock next merges the rest.
//!
//! **One bit per decision** ([`SeqSet`]), where a sorted `Vec<u64>` took 8
//! bytes: the set covers every stored decision, so it grows with the store.
//! Finding the k-th member takes a binary search and a few popcounts,
//! about ten times longer than indexing a vector, which is why the writer
//! must not wait on it: the first bitmap (2bc952f, before the queue) was
//! reverted when the gateway's p99 at 2,000 req/s came out worse in most
//! runs with it.

use std::sync::{mpsc, Mutex, MutexGuard, TryLockError};

pub(crate) struct RewardedSet {
    locked: Mutex<Locked>,
    queue: mpsc::Sender<u64>,
}

/// The set under its lock, with the seqs queued but not yet merged.
pub(crate) struct Locked {
    set: SeqSet,
    queued: mpsc::Receiver<u64>,
}

impl RewardedSet {
    /// An empty set of seqs from `first` on (the oldest kept decision).
    pub(crate) fn new(first: u64) -> RewardedSet {
        let (queue, queued) = mpsc::channel();
        RewardedSet {
            locked: Mutex::new(Locked {
                set: SeqSet::new(first),
                queued,
            }),
            queue,
        }
    }

    /// Adds `seqs` without waiting for the lock (see the module docs).
    pub(crate) fn add(&self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            // The receiver lives as long as `self`: the send cannot fail.
            let _ = self.queue.send(seq);
        }
        match self.locked.try_lock() {
            Ok(mut locked) => locked.merge(),
            Err(TryLockError::Poisoned(e)) => e.into_inner().merge(),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// The set, with every seq added so far: for sampling, retention and
    /// open.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Locked> {
        let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        locked.merge();
        locked
    }
}

impl Locked {
    fn merge(&mut self) {
        for seq in self.queued.try_iter() {
            self.set.insert(seq);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.set.len() == 0
    }

    /// Adds `seq` (open rebuilds the set this way).
    pub(crate) fn insert(&mut self, seq: u64) {
        self.set.insert(seq);
    }

    /// The member at position `k` in seq order.
    pub(crate) fn nth(&self, k: usize) -> Option<u64> {
        self.set.nth(k)
    }

    pub(crate) fn remove(&mut self, seq: u64) {
        self.set.remove(seq);
    }

    /// Forgets the members before `first` (retention removed them).
    pub(crate) fn drop_below(&mut self, first: u64) {
        self.set.drop_below(first);
    }

    /// Every member, in order.
    #[cfg(test)]
    pub(crate) fn members(&self) -> Vec<u64> {
        (0..self.len()).filter_map(|k| self.nth(k)).collect()
    }
}

/// Words of [`SeqSet`] per running count.
const BLOCK_WORDS: usize = 8;

/// A set of seqs as one bit per decision from `base` on, with a running
/// count every 512 bits, so that the k-th member is found with a binary
/// search and a few popcounts.
#[derive(Debug, Default)]
struct SeqSet {
    /// The seq of bit 0 of `words[0]`: a multiple of 64.
    base: u64,
    words: Vec<u64>,
    /// `before[b]`: members in the words before `b * BLOCK_WORDS`.
    before: Vec<u64>,
    count: u64,
}

impl SeqSet {
    /// An empty set that will hold seqs from `first` on.
    fn new(first: u64) -> SeqSet {
        SeqSet {
            base: first / 64 * 64,
            ..SeqSet::default()
        }
    }

    fn len(&self) -> usize {
        self.count as usize
    }

    /// Word and bit of `seq`, if it is at or past `base`.
    fn position(&self, seq: u64) -> Option<(usize, u64)> {
        let bit = seq.checked_sub(self.base)?;
        Some((usize::try_from(bit / 64).ok()?, 1 << (bit % 64)))
    }

    /// Adds `seq`; `false` if it was there already, or lies before the
    /// set's start (a pruned decision).
    fn insert(&mut self, seq: u64) -> bool {
        let Some((w, mask)) = self.position(seq) else {
            return false;
        };
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
            // New blocks come after every member.
            self.before.resize(self.words.len().div_ceil(BLOCK_WORDS), self.count);
        }
        if self.words[w] & mask != 0 {
            return false;
        }
        self.words[w] |= mask;
        self.count += 1;
        // Members are mostly added near the end: few blocks follow.
        self.before[w / BLOCK_WORDS + 1..].iter_mut().for_each(|c| *c += 1);
        true
    }

    /// Takes `seq` out; `false` if it was not there.
    fn remove(&mut self, seq: u64) -> bool {
        match self.position(seq) {
            Some((w, mask)) if self.words.get(w).is_some_and(|word| word & mask != 0) => {
                self.words[w] &= !mask;
                self.count -= 1;
                self.before[w / BLOCK_WORDS + 1..].iter_mut().for_each(|c| *c -= 1);
                true
            }
            _ => false,
        }
    }

    /// The member at position `k` in seq order.
    fn nth(&self, k: usize) -> Option<u64> {
        let k = k as u64;
        if k >= self.count {
            return None;
        }
        let block = self.before.partition_point(|&c| c <= k) - 1;
        let mut rest = k - self.before[block];
        let first = block * BLOCK_WORDS;
        for (w, &word) in self.words[first..].iter().enumerate().take(BLOCK_WORDS) {
            let ones = u64::from(word.count_ones());
            if rest < ones {
                let mut word = word;
                for _ in 0..rest {
                    word &= word - 1;
                }
                return Some(self.base + (first + w) as u64 * 64 + u64::from(word.trailing_zeros()));
            }
            rest -= ones;
        }
        None
    }

    /// Forgets the members before `first`.
    fn drop_below(&mut self, first: u64) {
        let new_base = first / 64 * 64;
        if new_base > self.base {
            let drop = usize::try_from((new_base - self.base) / 64).unwrap_or(usize::MAX);
            self.words.drain(..drop.min(self.words.len()));
            self.base = new_base;
        }
        // The first word's bits below `first`'s own (of `base..first`).
        if let (Some((0, mask)), Some(word)) = (self.position(first), self.words.first_mut()) {
            *word &= !(mask - 1);
        }
        self.before.clear();
        let mut count = 0;
        for (w, word) in self.words.iter().enumerate() {
            if w.is_multiple_of(BLOCK_WORDS) {
                self.before.push(count);
            }
            count += u64::from(word.count_ones());
        }
        self.count = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_while_the_set_is_held_are_merged_by_the_next_holder() {
        let set = RewardedSet::new(0);
        set.add([1, 4]);
        {
            let held = set.lock();
            // On the holder's own thread: an add that waited for the lock
            // would never return.
            set.add([7, 2]);
            assert_eq!(held.members(), [1, 4], "queued, not merged under a held lock");
        }
        assert_eq!(set.lock().members(), [1, 2, 4, 7]);
        // With the lock free, an add merges at once; repeats are ignored.
        set.add([4, 9, 9]);
        assert_eq!(set.locked.lock().unwrap().members(), [1, 2, 4, 7, 9]);
    }

    #[test]
    fn seq_sets_count_find_and_forget_their_members() {
        let mut set = SeqSet::new(130);
        let members: Vec<u64> = (130..5_000).filter(|s| s % 3 == 0 || s % 7 == 0).collect();
        // Out of order, as delayed outcomes arrive.
        for &seq in members.iter().rev() {
            assert!(set.insert(seq));
        }
        assert!(!set.insert(members[10]));
        assert!(!set.insert(5), "before the start");
        assert_eq!(set.len(), members.len());
        for (k, &seq) in members.iter().enumerate() {
            assert_eq!(set.nth(k), Some(seq), "member {k}");
        }
        assert_eq!(set.nth(members.len()), None);

        assert!(set.remove(members[100]));
        assert!(!set.remove(members[100]));
        assert_eq!(set.nth(100), Some(members[101]));
        assert_eq!(set.len(), members.len() - 1);

        set.drop_below(1_001);
        let kept: Vec<u64> = members
            .iter()
            .copied()
            .filter(|&s| s >= 1_001 && s != members[100])
            .collect();
        assert_eq!(set.len(), kept.len());
        for (k, &seq) in kept.iter().enumerate() {
            assert_eq!(set.nth(k), Some(seq), "kept member {k}");
        }
        assert!(set.insert(6_000));
        assert_eq!(set.nth(kept.len()), Some(6_000));
    }
}
