//! The on-disk encoding of decisions and outcomes.
//!
//! A compact, versioned binary format written by hand (no new dependency):
//! the first byte is the format tag ([`TAG_V2`] for decisions, [`TAG_V1`]
//! otherwise; a decision written as V1 is still read); integers are LEB128 varints,
//! floats are raw little-endian bits (so every value round-trips bit for bit),
//! strings are a varint byte length then UTF-8, `Option`s a 0/1 byte then the
//! value. Feature indices are stored as zig-zag varint deltas, which takes
//! 1 byte per index for gaps under 64 and 2 for gaps under 8192, instead of
//! 4 (and still round-trips if a caller breaks the "strictly increasing"
//! rule); values stay exact f32s. A decision with 300 non-zeros of 8192 and
//! 11 candidates takes about 1.8 KB.
//!
//! The same primitives encode the entries of the store's sled `index` tree
//! ([`IndexChunk`]).
//!
//! A value whose first byte is `{` is read as serde_json, so a later format
//! change (or a hand-written JSON record) stays readable.
//!
//! Decoding never panics on bad bytes: a truncated or corrupt value is an
//! [`Error::Store`].

use qroute_core::error::{Error, Result};
use qroute_core::features::Features;

use qroute_core::record::{DecisionRecord, ExperimentTag, Outcome, ShadowPick};

/// Format tag of the binary encoding in this file.
pub(crate) const TAG_V1: u8 = 1;
/// Decisions since experiments and shadow policies: V1's fields, then an
/// optional [`ExperimentTag`] and an optional [`ShadowPick`]. Outcomes of
/// streamed answers: V1's fields, then the time to first token (other
/// outcomes stay V1, a byte shorter).
pub(crate) const TAG_V2: u8 = 2;

pub(crate) fn encode_decision(r: &DecisionRecord, out: &mut Vec<u8>) {
    out.reserve(64 + r.features.indices.len() * 6 + r.candidates.len() * 24);
    out.push(TAG_V2);
    put_str(out, &r.request_id);
    put_varint(out, r.time_ms);
    put_features(out, &r.features);
    put_varint(out, r.candidates.len() as u64);
    for c in &r.candidates {
        put_str(out, c);
    }
    put_varint(out, r.propensities.len() as u64);
    for &p in &r.propensities {
        out.extend_from_slice(&p.to_le_bytes());
    }
    put_varint(out, r.chosen.len() as u64);
    for c in &r.chosen {
        put_str(out, c);
    }
    put_varint(out, r.policy_version);
    out.extend_from_slice(&r.cost_weight.to_le_bytes());
    out.extend_from_slice(&r.latency_weight.to_le_bytes());
    put_opt_str(out, r.task.as_deref());
    match &r.experiment {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_str(out, &t.experiment);
            put_str(out, &t.arm);
            put_str(out, &t.strategy);
            out.extend_from_slice(&t.assignment_propensity.to_le_bytes());
            out.extend_from_slice(&t.unit.to_le_bytes());
        }
    }
    match &r.shadow {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, &s.name);
            put_varint(out, s.version);
            put_str(out, &s.model);
        }
    }
}

pub(crate) fn decode_decision(bytes: &[u8]) -> Result<DecisionRecord> {
    let tag = match bytes.first() {
        Some(&t @ (TAG_V1 | TAG_V2)) => t,
        Some(b'{') => {
            return serde_json::from_slice(bytes)
                .map_err(|e| Error::Store(format!("corrupt decision record (json): {e}")))
        }
        Some(t) => return Err(corrupt(format!("unknown decision format tag {t}"))),
        None => return Err(corrupt("empty decision record")),
    };
    let mut r = Reader { buf: bytes, pos: 1 };
    let request_id = r.string("request_id")?;
    let time_ms = r.varint("time_ms")?;
    let features = r.features()?;
    let n = r.len("candidates", 1)?;
    let mut candidates = Vec::with_capacity(n);
    for _ in 0..n {
        candidates.push(r.string("candidates")?);
    }
    let n = r.len("propensities", 4)?;
    let mut propensities = Vec::with_capacity(n);
    for _ in 0..n {
        propensities.push(r.f32("propensities")?);
    }
    let n = r.len("chosen", 1)?;
    let mut chosen = Vec::with_capacity(n);
    for _ in 0..n {
        chosen.push(r.string("chosen")?);
    }
    let policy_version = r.varint("policy_version")?;
    let cost_weight = r.f32("cost_weight")?;
    let latency_weight = r.f32("latency_weight")?;
    let task = r.opt_string("task")?;
    let (mut experiment, mut shadow) = (None, None);
    if tag == TAG_V2 {
        if r.flag("experiment")? {
            experiment = Some(ExperimentTag {
                experiment: r.string("experiment.experiment")?,
                arm: r.string("experiment.arm")?,
                strategy: r.string("experiment.strategy")?,
                assignment_propensity: r.f32("experiment.assignment_propensity")?,
                unit: r.u64("experiment.unit")?,
            });
        }
        if r.flag("shadow")? {
            shadow = Some(ShadowPick {
                name: r.string("shadow.name")?,
                version: r.varint("shadow.version")?,
                model: r.string("shadow.model")?,
            });
        }
    }
    r.finish("decision")?;
    Ok(DecisionRecord {
        request_id,
        time_ms,
        features,
        candidates,
        propensities,
        chosen,
        policy_version,
        cost_weight,
        latency_weight,
        task,
        experiment,
        shadow,
    })
}

/// The stored form of an outcome, after the check both backends make: its
/// decision is stored (`chosen` is that decision's chosen models; `None`:
/// no decision with that id, `NotFound`) and its model is one of them
/// (else `InvalidInput`).
pub(crate) fn outcome_row(o: &Outcome, chosen: Option<&[String]>) -> Result<Vec<u8>> {
    let id = &o.request_id;
    let Some(chosen) = chosen else {
        return Err(Error::NotFound(format!(
            "outcome for request_id {id:?}: no decision recorded with that id"
        )));
    };
    if !chosen.contains(&o.model) {
        return Err(Error::InvalidInput(format!(
            "outcome for request_id {id:?}: model {:?} was not chosen for it (chosen: {chosen:?})",
            o.model
        )));
    }
    let mut value = Vec::new();
    encode_outcome(o, &mut value);
    Ok(value)
}

pub(crate) fn encode_outcome(o: &Outcome, out: &mut Vec<u8>) {
    out.push(if o.ttft_ms.is_some() { TAG_V2 } else { TAG_V1 });
    put_str(out, &o.request_id);
    put_str(out, &o.model);
    match o.quality {
        None => out.push(0),
        Some(q) => {
            out.push(1);
            out.extend_from_slice(&q.to_le_bytes());
        }
    }
    out.extend_from_slice(&o.cost_usd.to_le_bytes());
    out.extend_from_slice(&o.latency_ms.to_le_bytes());
    put_opt_str(out, o.error.as_deref());
    put_varint(out, o.time_ms);
    if let Some(ttft) = o.ttft_ms {
        out.extend_from_slice(&ttft.to_le_bytes());
    }
}

pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<Outcome> {
    let streamed = match bytes.first() {
        Some(&TAG_V1) => false,
        Some(&TAG_V2) => true,
        Some(b'{') => {
            return serde_json::from_slice(bytes)
                .map_err(|e| Error::Store(format!("corrupt outcome record (json): {e}")))
        }
        Some(t) => return Err(corrupt(format!("unknown outcome format tag {t}"))),
        None => return Err(corrupt("empty outcome record")),
    };
    let mut r = Reader { buf: bytes, pos: 1 };
    let request_id = r.string("request_id")?;
    let model = r.string("model")?;
    let quality = match r.byte("quality")? {
        0 => None,
        1 => Some(r.f32("quality")?),
        t => return Err(corrupt(format!("field `quality`: bad option tag {t}"))),
    };
    let cost_usd = r.f64("cost_usd")?;
    let latency_ms = r.f64("latency_ms")?;
    let error = r.opt_string("error")?;
    let time_ms = r.varint("time_ms")?;
    let ttft_ms = if streamed { Some(r.f64("ttft_ms")?) } else { None };
    r.finish("outcome")?;
    Ok(Outcome {
        request_id,
        model,
        quality,
        cost_usd,
        latency_ms,
        error,
        time_ms,
        ttft_ms,
    })
}

/// Whether the encoded decision `bytes` has request id `id`, without decoding
/// the rest of the record (a hash-index hit is confirmed this way).
pub(crate) fn request_id_is(bytes: &[u8], id: &str) -> Result<bool> {
    match bytes.first() {
        Some(&(TAG_V1 | TAG_V2)) => {
            let mut r = Reader { buf: bytes, pos: 1 };
            let n = r.len("request_id", 1)?;
            Ok(r.take(n, "request_id")? == id.as_bytes())
        }
        _ => Ok(decode_decision(bytes)?.request_id == id),
    }
}

/// The `chosen` models of the encoded decision `bytes`, stepping over the
/// features instead of building them: the writer checks every outcome
/// against its decision's chosen models, and the features are most of a
/// record.
pub(crate) fn decision_chosen(bytes: &[u8]) -> Result<Vec<String>> {
    match bytes.first() {
        Some(&(TAG_V1 | TAG_V2)) => {
            let mut r = Reader { buf: bytes, pos: 1 };
            let n = r.len("request_id", 1)?;
            r.take(n, "request_id")?;
            r.varint("time_ms")?;
            r.skip_features()?;
            for _ in 0..r.len("candidates", 1)? {
                let n = r.len("candidates", 1)?;
                r.take(n, "candidates")?;
            }
            let n = r.len("propensities", 4)?;
            r.take(n * 4, "propensities")?;
            let n = r.len("chosen", 1)?;
            (0..n).map(|_| r.string("chosen")).collect()
        }
        _ => decode_decision(bytes).map(|d| d.chosen),
    }
}

/// The request id and `time_ms` of the encoded decision `bytes`, without
/// decoding the rest (retention reads these of every decision it removes).
pub(crate) fn decision_id_and_time(bytes: &[u8]) -> Result<(String, u64)> {
    match bytes.first() {
        Some(&(TAG_V1 | TAG_V2)) => {
            let mut r = Reader { buf: bytes, pos: 1 };
            let id = r.string("request_id")?;
            Ok((id, r.varint("time_ms")?))
        }
        _ => decode_decision(bytes).map(|d| (d.request_id, d.time_ms)),
    }
}

/// One entry of the store's sled `index` tree: where up to a few hundred
/// consecutive decisions lie in the data file. The first decision starts at
/// byte `offset`; each `(len, id_hash)` pair gives one decision's encoded
/// length and the hash of its request id, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexChunk {
    pub offset: u64,
    pub entries: Vec<(u64, u64)>,
}

/// Encodes an index entry: [`TAG_V1`], varint offset, varint count, then per
/// decision a varint length and the 8-byte little-endian id hash.
pub(crate) fn encode_index_chunk(offset: u64, entries: &[(u64, u64)], out: &mut Vec<u8>) {
    out.reserve(24 + entries.len() * 11);
    out.push(TAG_V1);
    put_varint(out, offset);
    put_varint(out, entries.len() as u64);
    for &(len, hash) in entries {
        put_varint(out, len);
        out.extend_from_slice(&hash.to_le_bytes());
    }
}

pub(crate) fn decode_index_chunk(bytes: &[u8]) -> Result<IndexChunk> {
    match bytes.first() {
        Some(&TAG_V1) => {}
        Some(t) => return Err(corrupt(format!("unknown index entry format tag {t}"))),
        None => return Err(corrupt("empty index entry")),
    }
    let mut r = Reader { buf: bytes, pos: 1 };
    let offset = r.varint("index.offset")?;
    let n = r.len("index.entries", 9)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.varint("index.len")?;
        let b = r.take(8, "index.hash")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        entries.push((len, u64::from_le_bytes(a)));
    }
    r.finish("index entry")?;
    Ok(IndexChunk { offset, entries })
}

fn corrupt(msg: impl std::fmt::Display) -> Error {
    Error::Store(format!("corrupt record: {msg}"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_features(out: &mut Vec<u8>, f: &Features) {
    put_varint(out, u64::from(f.dim));
    put_varint(out, f.indices.len() as u64);
    // Written into pre-sized space (no per-byte capacity checks): a zig-zag
    // delta of two u32s takes at most 5 varint bytes.
    let start = out.len();
    out.resize(start + f.indices.len() * 5, 0);
    let dst = &mut out[start..];
    let mut pos = 0;
    let mut prev = 0i64;
    for &i in &f.indices {
        let d = i64::from(i) - prev;
        let mut z = ((d << 1) ^ (d >> 63)) as u64;
        while z >= 0x80 {
            dst[pos] = (z as u8) | 0x80;
            z >>= 7;
            pos += 1;
        }
        dst[pos] = z as u8;
        pos += 1;
        prev = i64::from(i);
    }
    out.truncate(start + pos);
    put_varint(out, f.values.len() as u64);
    let start = out.len();
    out.resize(start + f.values.len() * 4, 0);
    for (b, v) in out[start..].chunks_exact_mut(4).zip(&f.values) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&[u8]> {
        if self.remaining() < n {
            return Err(corrupt(format!("field `{field}`: truncated")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }

    fn varint(&mut self, field: &str) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt(format!("field `{field}`: varint too long")))
    }

    /// A length prefix, checked against the bytes left (each element takes at
    /// least `min_elem` bytes) so corrupt input cannot ask for a huge allocation.
    fn len(&mut self, field: &str, min_elem: usize) -> Result<usize> {
        let n = self.varint(field)?;
        if n > (self.remaining() / min_elem.max(1)) as u64 {
            return Err(corrupt(format!("field `{field}`: length {n} exceeds record")));
        }
        Ok(n as usize)
    }

    fn f32(&mut self, field: &str) -> Result<f32> {
        let b = self.take(4, field)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An option's 0/1 presence byte.
    fn flag(&mut self, field: &str) -> Result<bool> {
        match self.byte(field)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(corrupt(format!("field `{field}`: bad option tag {t}"))),
        }
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f64(&mut self, field: &str) -> Result<f64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    fn string(&mut self, field: &str) -> Result<String> {
        let n = self.len(field, 1)?;
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("field `{field}`: not UTF-8")))
    }

    fn opt_string(&mut self, field: &str) -> Result<Option<String>> {
        Ok(if self.flag(field)? {
            Some(self.string(field)?)
        } else {
            None
        })
    }

    fn features(&mut self) -> Result<Features> {
        let dim = self.varint("features.dim")?;
        let dim = u32::try_from(dim).map_err(|_| corrupt("field `features.dim`: too large"))?;
        let n = self.len("features.indices", 1)?;
        let mut indices = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            // Inline fast path for the usual 1-byte delta.
            let z = match self.buf.get(self.pos) {
                Some(&b) if b < 0x80 => {
                    self.pos += 1;
                    u64::from(b)
                }
                _ => self.varint("features.indices")?,
            };
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            let i = prev.wrapping_add(d);
            let i = u32::try_from(i).map_err(|_| corrupt("field `features.indices`: index out of range"))?;
            indices.push(i);
            prev = i64::from(i);
        }
        let n = self.len("features.values", 4)?;
        let values = self
            .take(n * 4, "features.values")?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Features { dim, indices, values })
    }

    /// Steps over encoded features (see [`Reader::features`]).
    fn skip_features(&mut self) -> Result<()> {
        self.varint("features.dim")?;
        for _ in 0..self.len("features.indices", 1)? {
            self.varint("features.indices")?;
        }
        let n = self.len("features.values", 4)?;
        self.take(n * 4, "features.values")?;
        Ok(())
    }

    fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            return Err(corrupt(format!("{what}: {} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> DecisionRecord {
        DecisionRecord {
            request_id: "req-ü-1".into(),
            time_ms: 1_700_000_000_123,
            features: Features {
                dim: 8192,
                indices: vec![0, 3, 127, 128, 8191],
                values: vec![1.0, -0.5, f32::MIN_POSITIVE, 3.25e7, 0.1],
            },
            candidates: vec!["a".into(), "model-b".into(), "".into()],
            propensities: vec![0.2, 0.7, 0.1],
            chosen: vec!["model-b".into()],
            policy_version: u64::MAX,
            cost_weight: 0.3,
            latency_weight: 0.0,
            task: Some("mmlu/anatomy".into()),
            experiment: None,
            shadow: None,
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            request_id: "req-ü-1".into(),
            model: "model-b".into(),
            quality: Some(0.75),
            cost_usd: 1.2e-5,
            latency_ms: 812.5,
            error: Some("timeout".into()),
            time_ms: 42,
            ttft_ms: None,
        }
    }

    #[test]
    fn decision_round_trips() {
        let mut d = decision();
        for task in [Some("t".to_string()), None] {
            d.task = task;
            let mut buf = Vec::new();
            encode_decision(&d, &mut buf);
            assert_eq!(decode_decision(&buf).unwrap(), d);
        }
    }

    #[test]
    fn experiment_and_shadow_round_trip() {
        let mut d = decision();
        d.experiment = Some(ExperimentTag {
            experiment: "exp-1".into(),
            arm: "cheap".into(),
            strategy: "cost_optimized".into(),
            assignment_propensity: 0.45,
            unit: u64::MAX - 7,
        });
        d.shadow = Some(ShadowPick {
            name: "candidate".into(),
            version: 300,
            model: "a".into(),
        });
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert_eq!(decode_decision(&buf).unwrap(), d);
        assert!(request_id_is(&buf, &d.request_id).unwrap());
        for cut in 0..buf.len() {
            assert!(decode_decision(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn chosen_is_read_without_the_rest() {
        let mut d = decision();
        d.chosen = vec!["b".into(), "a".into()];
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert_eq!(decision_chosen(&buf).unwrap(), d.chosen);
        let json = serde_json::to_vec(&d).unwrap();
        assert_eq!(decision_chosen(&json).unwrap(), d.chosen);
        // A cut record is an error, never a panic or a wrong answer (the
        // fields after `chosen` are not read, so a cut among them is fine).
        for cut in 0..buf.len() {
            if let Ok(chosen) = decision_chosen(&buf[..cut]) {
                assert_eq!(chosen, d.chosen, "cut at {cut}");
            }
        }
        assert!(decision_chosen(&buf[..buf.len() / 2]).is_err());
    }

    #[test]
    fn v1_decisions_are_still_read() {
        // A V1 record is V2's bytes without the two trailing option bytes.
        let d = decision();
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert_eq!(&buf[buf.len() - 2..], &[0, 0]);
        buf.truncate(buf.len() - 2);
        buf[0] = TAG_V1;
        assert_eq!(decode_decision(&buf).unwrap(), d);
    }

    #[test]
    fn unsorted_indices_still_round_trip() {
        let mut d = decision();
        d.features.indices = vec![9, 2, u32::MAX, 0, 0];
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert_eq!(decode_decision(&buf).unwrap(), d);
    }

    #[test]
    fn outcome_round_trips() {
        let mut o = outcome();
        let mut buf = Vec::new();
        encode_outcome(&o, &mut buf);
        assert_eq!(decode_outcome(&buf).unwrap(), o);
        o.quality = None;
        o.error = None;
        buf.clear();
        encode_outcome(&o, &mut buf);
        assert_eq!(decode_outcome(&buf).unwrap(), o);
        // A streamed outcome carries its time to first token (format V2);
        // the others keep V1's bytes.
        assert_eq!(buf[0], TAG_V1);
        o.ttft_ms = Some(31.25);
        buf.clear();
        encode_outcome(&o, &mut buf);
        assert_eq!(buf[0], TAG_V2);
        assert_eq!(decode_outcome(&buf).unwrap(), o);
        assert!(
            decode_outcome(&buf[..buf.len() - 1]).is_err(),
            "a cut V2 record is corrupt"
        );
    }

    #[test]
    fn request_id_check_reads_only_the_id() {
        let d = decision();
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert!(request_id_is(&buf, "req-ü-1").unwrap());
        assert!(!request_id_is(&buf, "req-ü-2").unwrap());
        assert!(!request_id_is(&buf, "req-ü-").unwrap());
        let json = serde_json::to_vec(&d).unwrap();
        assert!(request_id_is(&json, "req-ü-1").unwrap());
        assert!(request_id_is(&[], "x").is_err());
        assert!(request_id_is(&[TAG_V1, 5, b'a'], "a").is_err());
    }

    #[test]
    fn id_and_time_are_read_without_the_rest() {
        let d = decision();
        let mut buf = Vec::new();
        encode_decision(&d, &mut buf);
        assert_eq!(decision_id_and_time(&buf).unwrap(), (d.request_id.clone(), d.time_ms));
        let json = serde_json::to_vec(&d).unwrap();
        assert_eq!(decision_id_and_time(&json).unwrap(), (d.request_id, d.time_ms));
        assert!(decision_id_and_time(&buf[..3]).is_err());
        assert!(decision_id_and_time(&[]).is_err());
    }

    #[test]
    fn index_chunk_round_trips() {
        let entries = vec![(1800, 0), (1, u64::MAX), (300_000, 0x0123_4567_89ab_cdef)];
        let mut buf = Vec::new();
        encode_index_chunk(u64::MAX - 7, &entries, &mut buf);
        let c = decode_index_chunk(&buf).unwrap();
        assert_eq!(c.offset, u64::MAX - 7);
        assert_eq!(c.entries, entries);
        for cut in 0..buf.len() {
            assert!(matches!(decode_index_chunk(&buf[..cut]), Err(Error::Store(_))));
        }
        let mut long = buf.clone();
        long.push(0);
        assert!(matches!(decode_index_chunk(&long), Err(Error::Store(_))));
        assert!(matches!(decode_index_chunk(&[2, 0, 0]), Err(Error::Store(_))));
    }

    #[test]
    fn json_values_are_read_too() {
        let d = decision();
        let json = serde_json::to_vec(&d).unwrap();
        assert_eq!(decode_decision(&json).unwrap(), d);
        let o = outcome();
        let json = serde_json::to_vec(&o).unwrap();
        assert_eq!(decode_outcome(&json).unwrap(), o);
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_decision(&decision(), &mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(decode_decision(&buf[..cut]), Err(Error::Store(_))));
        }
        let mut long = buf.clone();
        long.push(0);
        assert!(matches!(decode_decision(&long), Err(Error::Store(_))));
        // A huge length prefix right after the tag.
        let bad = [TAG_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(decode_decision(&bad), Err(Error::Store(_))));
        assert!(matches!(decode_outcome(&[9, 1, 2]), Err(Error::Store(_))));
        let mut obuf = Vec::new();
        encode_outcome(&outcome(), &mut obuf);
        for cut in 0..obuf.len() {
            assert!(matches!(decode_outcome(&obuf[..cut]), Err(Error::Store(_))));
        }
    }
}
