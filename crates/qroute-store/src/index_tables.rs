//! The in-memory index's two per-decision tables, [`Ends`] (where each
//! decision's record lies) and [`IdTable`] (which decision has a request
//! id), packed to about 12 bytes per decision. They are kept for every
//! stored decision, so they grow with the store: as a `Vec<u64>` of end
//! offsets and a `HashMap<u64, u64>` of id hashes they took about 28 bytes
//! per decision, a fifth of a loaded gateway's memory growth.

use std::collections::HashMap;

/// Decisions per anchor of [`Ends`]: finding a record's offset sums at most
/// this many lengths, and anchors cost 8 / 64 bytes per decision.
const ANCHOR_EVERY: usize = 64;

/// Where consecutive decisions lie in the store's logical data stream:
/// their lengths (4 bytes each) and, every [`ANCHOR_EVERY`] decisions, the
/// offset where one starts.
#[derive(Debug)]
pub(crate) struct Ends {
    /// Logical offset where the first decision starts.
    start: u64,
    /// Logical offset where the last decision ends (`start` when empty).
    end: u64,
    /// Length of each decision's record (a frame's length field is a u32,
    /// so every record's length fits).
    lens: Vec<u32>,
    /// `anchors[j]`: the offset where decision `j * ANCHOR_EVERY` starts.
    anchors: Vec<u64>,
}

impl Ends {
    pub(crate) fn new(start: u64) -> Ends {
        Ends {
            start,
            end: start,
            lens: Vec::new(),
            anchors: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Where the next decision will start.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Moves an empty table to start at `start`.
    pub(crate) fn restart_at(&mut self, start: u64) {
        debug_assert!(self.is_empty());
        self.start = start;
        self.end = start;
    }

    /// Adds the next decision, `len` bytes long.
    pub(crate) fn push(&mut self, len: u32) {
        if self.lens.len().is_multiple_of(ANCHOR_EVERY) {
            self.anchors.push(self.end);
        }
        self.lens.push(len);
        self.end += u64::from(len);
    }

    /// Logical start and end of decision `i`.
    pub(crate) fn span(&self, i: usize) -> Option<(u64, u64)> {
        let len = u64::from(*self.lens.get(i)?);
        let block = i / ANCHOR_EVERY;
        let start = self.anchors[block]
            + self.lens[block * ANCHOR_EVERY..i]
                .iter()
                .map(|&l| u64::from(l))
                .sum::<u64>();
        Some((start, start + len))
    }

    /// Logical start and end of the first `k` decisions, in order.
    pub(crate) fn spans(&self, k: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.lens[..k.min(self.lens.len())].iter().scan(self.start, |at, &len| {
            let start = *at;
            *at += u64::from(len);
            Some((start, *at))
        })
    }

    /// Forgets the first `k` decisions.
    pub(crate) fn drop_front(&mut self, k: usize) {
        let k = k.min(self.lens.len());
        self.start = self.span(k).map_or(self.end, |(start, _)| start);
        self.lens.drain(..k);
        self.anchors.clear();
        let mut at = self.start;
        for (i, &len) in self.lens.iter().enumerate() {
            if i.is_multiple_of(ANCHOR_EVERY) {
                self.anchors.push(at);
            }
            at += u64::from(len);
        }
    }
}

/// Newest ids kept in a hash map before appends fold them into
/// the sorted table: bounds the map at about 2 MB, and a fold copies the
/// sorted table (8 bytes per decision) once per this many appends.
const FRESH_MAX: usize = 1 << 16;

/// Which decision has a request id, by the id's 64-bit hash (`id_hash` in
/// `sled_store.rs`). The newest ids sit in a hash map; older ones in one
/// table sorted by the hash's high 32 bits, with the seq relative to
/// `origin`: 8 bytes each, no slack. A lookup returns every seq whose id may
/// be the one sought, and the caller reads each record to compare ids: the
/// sorted table's 32-bit hashes add a wrong candidate for about one lookup
/// in 2,000 with two million decisions stored.
///
/// Appends fold once per [`FRESH_MAX`] of them, building the new table
/// under the index's read lock (a few ms with two million decisions) and
/// taking the write lock only to put it in place.
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    /// id hash → seq of the first fresh decision whose id has that hash.
    fresh: HashMap<u64, u64>,
    /// Fresh request ids whose hash an earlier, different fresh id already
    /// took (a 64-bit hash collision, rare) → (hash, seq).
    collided: HashMap<String, (u64, u64)>,
    /// (high 32 bits of the id hash, seq − `origin`), sorted by hash.
    sorted: Vec<(u32, u32)>,
    /// The seq the sorted table's seqs count from.
    origin: u64,
}

impl IdTable {
    /// Records that decision `seq` has an id whose hash is `hash`; `false`
    /// if another fresh id has that hash, in which case the caller must
    /// [`IdTable::insert_collided`] it by request id.
    pub(crate) fn insert(&mut self, hash: u64, seq: u64) -> bool {
        match self.fresh.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }

    pub(crate) fn insert_collided(&mut self, id: String, hash: u64, seq: u64) {
        self.collided.entry(id).or_insert((hash, seq));
    }

    /// Appends to `out` every seq whose request id may be `id` (hash `hash`).
    pub(crate) fn candidates(&self, id: &str, hash: u64, out: &mut Vec<u64>) {
        out.extend(self.fresh.get(&hash).copied());
        out.extend(self.collided.get(id).map(|&(_, seq)| seq));
        let high = (hash >> 32) as u32;
        let from = self.sorted.partition_point(|&(h, _)| h < high);
        out.extend(
            self.sorted[from..]
                .iter()
                .take_while(|&&(h, _)| h == high)
                .map(|&(_, rel)| self.origin + u64::from(rel)),
        );
    }

    /// Forgets the decisions before `base`.
    pub(crate) fn retain_from(&mut self, base: u64) {
        self.fresh.retain(|_, seq| *seq >= base);
        self.collided.retain(|_, (_, seq)| *seq >= base);
        let origin = self.origin;
        self.sorted.retain(|&(_, rel)| origin + u64::from(rel) >= base);
    }

    /// Whether the fresh ids are due to be folded into the sorted table
    /// ([`FRESH_MAX`] of them).
    pub(crate) fn fold_due(&self) -> bool {
        self.fresh.len() + self.collided.len() >= FRESH_MAX
    }

    /// Folds every fresh id into the sorted table.
    pub(crate) fn fold(&mut self) {
        if let Some(folded) = self.folded() {
            self.install(folded);
        }
    }

    /// The sorted table with every fresh id folded in, built from `&self`
    /// so that appends can build it under a read lock; `None` if there is
    /// nothing to fold, or if the seqs span more than a u32 counts (4
    /// billion decisions kept), in which case they stay in the hash map.
    pub(crate) fn folded(&self) -> Option<Folded> {
        let fresh_seqs = self
            .fresh
            .values()
            .copied()
            .chain(self.collided.values().map(|&(_, seq)| seq));
        let old_seqs = self.sorted.iter().map(|&(_, rel)| self.origin + u64::from(rel));
        let lo = fresh_seqs.clone().chain(old_seqs.clone()).min()?;
        let hi = fresh_seqs.chain(old_seqs).max()?;
        if self.fresh.is_empty() && self.collided.is_empty() || u32::try_from(hi - lo).is_err() {
            return None;
        }
        // `hi - lo` fits a u32, so every seq's offset from `lo` does.
        let rel = |seq: u64| (seq - lo) as u32;
        let origin = self.origin;
        let mut sorted: Vec<(u32, u32)> = self
            .sorted
            .iter()
            .map(|&(h, r)| (h, rel(origin + u64::from(r))))
            .chain(self.fresh.iter().map(|(&hash, &seq)| ((hash >> 32) as u32, rel(seq))))
            .chain(
                self.collided
                    .values()
                    .map(|&(hash, seq)| ((hash >> 32) as u32, rel(seq))),
            )
            .collect();
        // The stable sort finds the old table as one sorted run and merges
        // the sorted fresh ids into it in linear time.
        sorted.sort();
        Some(Folded { sorted, origin: lo })
    }

    /// Puts a table from [`IdTable::folded`] in place. No id may have been
    /// added or forgotten since it was built (appends and prunes both hold
    /// the append lock around the two calls).
    pub(crate) fn install(&mut self, folded: Folded) {
        self.sorted = folded.sorted;
        self.origin = folded.origin;
        self.fresh.clear();
        self.collided.clear();
    }
}

/// A sorted table of [`IdTable`] with the fresh ids folded in.
pub(crate) struct Folded {
    sorted: Vec<(u32, u32)>,
    origin: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_lengths_across_anchors_and_drops() {
        let mut ends = Ends::new(1000);
        let lens: Vec<u32> = (0..300).map(|i| 10 + i % 7).collect();
        for &l in &lens {
            ends.push(l);
        }
        let mut at = 1000;
        for (i, &l) in lens.iter().enumerate() {
            assert_eq!(ends.span(i), Some((at, at + u64::from(l))), "decision {i}");
            at += u64::from(l);
        }
        assert_eq!(ends.end(), at);
        assert_eq!(ends.span(300), None);
        let all: Vec<_> = ends.spans(300).collect();
        assert_eq!(all[130], ends.span(130).unwrap());

        ends.drop_front(130);
        assert_eq!(ends.len(), 170);
        assert_eq!(ends.span(0), Some(all[130]));
        assert_eq!(ends.span(169), Some(all[299]));
        assert_eq!(ends.span(100), Some(all[230]));
        ends.drop_front(170);
        assert!(ends.is_empty());
        assert_eq!(ends.end(), at);
        ends.push(5);
        assert_eq!(ends.span(0), Some((at, at + 5)));
    }

    fn lookup(t: &IdTable, id: &str, hash: u64) -> Vec<u64> {
        let mut out = Vec::new();
        t.candidates(id, hash, &mut out);
        out
    }

    #[test]
    fn ids_are_found_before_and_after_folding_and_forgotten_when_pruned() {
        let mut t = IdTable::default();
        let hash = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for seq in 0..100 {
            assert!(t.insert(hash(seq), 500 + seq));
        }
        assert!(!t.insert(hash(7), 600));
        t.insert_collided("other".into(), hash(7), 600);
        assert_eq!(lookup(&t, "x", hash(3)), vec![503]);
        t.fold();
        assert!(t.fresh.is_empty() && t.collided.is_empty());
        for seq in 0..100 {
            assert!(lookup(&t, "x", hash(seq)).contains(&(500 + seq)), "seq {seq}");
        }
        // The collided id is found by its hash now, beside the first.
        assert_eq!(lookup(&t, "other", hash(7)), vec![507, 600]);
        assert!(t.insert(hash(200), 601));
        assert_eq!(lookup(&t, "x", hash(200)), vec![601]);

        t.retain_from(550);
        assert!(lookup(&t, "x", hash(3)).is_empty());
        assert_eq!(lookup(&t, "x", hash(60)), vec![560]);
        t.fold();
        assert_eq!(lookup(&t, "x", hash(200)), vec![601]);
        assert_eq!(lookup(&t, "x", hash(99)), vec![599]);
        assert_eq!(t.sorted.len(), 52);
    }
}
