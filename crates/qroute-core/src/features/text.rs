//! The featurizer: hashed word and character n-grams, lengths, task and
//! persona, and structural cues (code, math, multiple choice, script).

use super::hashing::{combine, hash_bytes, mix};
use super::Features;
use serde::{Deserialize, Serialize};

/// Number of dense slots at the end of the vector (lengths and cues).
pub const DENSE_SLOTS: u32 = 32;

/// Dense slot holding `ln(1 + chars) / 10`; the policy reads the prompt length
/// back from it to estimate per-model cost.
pub const SLOT_LOG_CHARS: u32 = 1;

/// What a request looks like to the featurizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    pub prompt: &'a str,
    pub task_type: Option<&'a str>,
    pub persona: Option<&'a str>,
    /// Free-form `key=value` pairs the caller wants the policy to see.
    pub metadata: &'a [(&'a str, &'a str)],
}

/// The vector layout. Stored in every checkpoint; a policy refuses features
/// made under another spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Bump when the featurizer's output changes for the same spec values.
    pub version: u32,
    /// Total dimension: hashed buckets followed by [`DENSE_SLOTS`] dense slots.
    pub dim: u32,
    /// Seed of every hash.
    pub seed: u64,
    /// Words beyond this many are ignored, which bounds latency on huge prompts.
    pub max_words: u32,
    /// Weight of the word-boundary character trigrams relative to words.
    pub char_weight: f32,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            version: 1,
            dim: 8192,
            seed: 0x71_72_6f_75_74_65, // "qroute"
            max_words: 2048,
            char_weight: 0.5,
        }
    }
}

// Namespaces keep word, bigram, trigram and categorical hashes apart.
const NS_WORD: u64 = 1;
const NS_BIGRAM: u64 = 2;
const NS_CHAR: u64 = 3;
const NS_TASK: u64 = 4;
const NS_TASK_FAMILY: u64 = 5;
const NS_PERSONA: u64 = 6;
const NS_META: u64 = 7;

/// Turns requests into [`Features`] under one [`FeatureSpec`]. Cheap to clone
/// and share; it holds no state besides the spec.
#[derive(Debug, Clone)]
pub struct Featurizer {
    spec: FeatureSpec,
    hashed: u32,
}

impl Featurizer {
    pub fn new(spec: FeatureSpec) -> crate::Result<Self> {
        if spec.dim <= DENSE_SLOTS * 2 {
            return Err(crate::Error::InvalidInput(format!(
                "feature dim {} is too small (need > {})",
                spec.dim,
                DENSE_SLOTS * 2
            )));
        }
        let hashed = spec.dim - DENSE_SLOTS;
        Ok(Featurizer { spec, hashed })
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    pub fn dim(&self) -> u32 {
        self.spec.dim
    }

    /// Deterministic: the same request and spec give bit-identical output.
    pub fn featurize(&self, req: &RequestContext<'_>) -> Features {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let scratch = &mut *scratch;
            scratch.reset(self.hashed as usize);
            let mut acc: Vec<(u32, f32)> = std::mem::take(&mut scratch.pending);
            acc.clear();
            let stats = self.text_ngrams(req.prompt, &mut acc);
            for &(i, v) in &acc {
                scratch.add(i, v);
            }
            scratch.pending = acc;
            scratch.touched.sort_unstable();
            // Sublinear term frequency, then unit L2 norm over the text block.
            let mut norm2 = 0.0f32;
            for &i in &scratch.touched {
                let v = &mut scratch.acc[i as usize];
                *v = sublinear(*v);
                norm2 += *v * *v;
            }
            let inv = 1.0 / norm2.sqrt().max(1e-6);
            for &i in &scratch.touched {
                scratch.acc[i as usize] *= inv;
            }
            // Categorical features are not normalised with the text.
            let mut added = false;
            let mut cat = |(i, v): (u32, f32), scratch: &mut Scratch| {
                added |= scratch.add(i, v);
            };
            if let Some(task) = req.task_type.filter(|t| !t.is_empty()) {
                cat(self.bucket(NS_TASK, task.as_bytes(), 1.0), scratch);
                if let Some((family, _)) = task.split_once('/') {
                    cat(self.bucket(NS_TASK_FAMILY, family.as_bytes(), 1.0), scratch);
                }
            }
            if let Some(persona) = req.persona.filter(|p| !p.is_empty()) {
                cat(self.bucket(NS_PERSONA, persona.as_bytes(), 1.0), scratch);
            }
            for (k, v) in req.metadata {
                let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
                kv.extend_from_slice(k.as_bytes());
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cat(self.bucket(NS_META, &kv, 1.0), scratch);
            }
            if added {
                scratch.touched.sort_unstable();
            }
            let n = scratch.touched.len() + DENSE_SLOTS as usize;
            let mut indices = Vec::with_capacity(n);
            let mut values = Vec::with_capacity(n);
            for &i in &scratch.touched {
                let v = scratch.acc[i as usize];
                if v != 0.0 {
                    indices.push(i);
                    values.push(v);
                }
            }
            for (slot, v) in stats.dense().into_iter().enumerate() {
                if v != 0.0 {
                    indices.push(self.hashed + slot as u32);
                    values.push(v);
                }
            }
            Features {
                dim: self.spec.dim,
                indices,
                values,
            }
        })
    }

    /// Maps a hash to a bucket and a sign (signed hashing halves collision bias).
    #[inline]
    fn bucket_of(&self, h: u64, weight: f32) -> (u32, f32) {
        let idx = (h % self.hashed as u64) as u32;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        (idx, sign * weight)
    }

    fn bucket(&self, ns: u64, bytes: &[u8], weight: f32) -> (u32, f32) {
        self.bucket_of(hash_bytes(self.spec.seed ^ mix(ns), bytes), weight)
    }

    /// One pass over the prompt: word unigrams and bigrams, the character
    /// trigrams at each word's start and end (`^ab`, `yz$`: prefixes and
    /// suffixes carry most of what characters add, at a fraction of the
    /// non-zeros of every inner trigram, which measured both better and
    /// cheaper on the routing data), and the counts behind the dense cues.
    fn text_ngrams(&self, prompt: &str, acc: &mut Vec<(u32, f32)>) -> TextStats {
        let mut stats = TextStats::default();
        let word_seed = self.spec.seed ^ mix(NS_WORD);
        let bigram_seed = self.spec.seed ^ mix(NS_BIGRAM);
        let char_seed = self.spec.seed ^ mix(NS_CHAR);
        let cw = self.spec.char_weight;

        let mut prev_word: Option<u64> = None;
        let mut word_hash = word_seed;
        let mut word_len = 0u32;
        // The last two characters of the current word, for trigrams; '^' marks the start.
        let (mut c1, mut c2) = ('^' as u64, '^' as u64);
        let mut words = 0u32;
        let mut line_start = true;
        let mut line_prefix: [char; 4] = ['\0'; 4];
        let mut line_prefix_len = 0usize;

        let end_word = |word_hash: u64,
                        word_len: &mut u32,
                        c1: u64,
                        c2: u64,
                        prev_word: &mut Option<u64>,
                        acc: &mut Vec<(u32, f32)>| {
            if *word_len == 0 {
                return;
            }
            let wh = mix(word_hash ^ *word_len as u64);
            acc.push(self.bucket_of(wh, 1.0));
            if let Some(p) = *prev_word {
                acc.push(self.bucket_of(combine(combine(bigram_seed, p), wh), 1.0));
            }
            // Closing trigram with the end mark.
            acc.push(self.bucket_of(trigram(char_seed, c1, c2, '$' as u64), cw));
            *prev_word = Some(wh);
            *word_len = 0;
        };

        for ch in prompt.chars() {
            stats.chars += 1;
            if ch == '\n' {
                stats.lines += 1;
                if line_prefix_len >= 2 {
                    stats.note_line_prefix(&line_prefix[..line_prefix_len]);
                }
                line_start = true;
                line_prefix_len = 0;
            } else if line_start && !(line_prefix_len == 0 && ch.is_whitespace()) {
                if line_prefix_len < line_prefix.len() {
                    line_prefix[line_prefix_len] = ch;
                    line_prefix_len += 1;
                } else {
                    line_start = false;
                }
            }
            stats.note_char(ch);
            if ch.is_alphanumeric() {
                if words >= self.spec.max_words {
                    continue;
                }
                if word_len == 0 {
                    word_hash = word_seed;
                    c1 = '^' as u64;
                    c2 = '^' as u64;
                }
                let lc = lower(ch) as u64;
                // FNV-1a step; `end_word` mixes the result once.
                word_hash = (word_hash ^ lc).wrapping_mul(0x0000_0100_0000_01b3);
                word_len += 1;
                if word_len == 2 {
                    // Opening trigram with the start mark.
                    acc.push(self.bucket_of(trigram(char_seed, c1, c2, lc), cw));
                }
                c1 = c2;
                c2 = lc;
            } else {
                if word_len > 0 {
                    words += 1;
                    stats.words += 1;
                    stats.word_chars += word_len;
                }
                end_word(word_hash, &mut word_len, c1, c2, &mut prev_word, acc);
                stats.note_symbol(ch);
            }
        }
        if word_len > 0 {
            stats.words += 1;
            stats.word_chars += word_len;
        }
        end_word(word_hash, &mut word_len, c1, c2, &mut prev_word, acc);
        if line_prefix_len >= 2 {
            stats.note_line_prefix(&line_prefix[..line_prefix_len]);
        }
        stats.finish(prompt);
        stats
    }
}

/// Hash of three characters: code points fit in 21 bits, so they pack
/// exactly into one word and need a single mix.
#[inline]
fn trigram(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    mix(seed ^ (a << 42) ^ (b << 21) ^ c)
}

#[inline]
fn lower(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        c.to_lowercase().next().unwrap_or(c)
    }
}

/// `sign(v)·ln(1 + |v|)`. Counts are multiples of ½ almost always, so
/// small ones come from a table.
#[inline]
fn sublinear(v: f32) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 128]> = std::sync::OnceLock::new();
    let a = v.abs();
    let twice = a * 2.0;
    let r = if twice < 128.0 && twice.fract() == 0.0 {
        TABLE.get_or_init(|| std::array::from_fn(|k| (k as f32 / 2.0).ln_1p()))[twice as usize]
    } else {
        a.ln_1p()
    };
    r.copysign(v)
}

/// Per-thread accumulator for hashed buckets: a dense array plus the list of
/// buckets touched, so merging costs one pass and one small sort.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    /// `stamp[i] == generation` marks bucket `i` as touched in this call.
    stamp: Vec<u32>,
    generation: u32,
    touched: Vec<u32>,
    pending: Vec<(u32, f32)>,
}

impl Scratch {
    fn reset(&mut self, size: usize) {
        if self.acc.len() < size {
            self.acc.resize(size, 0.0);
            self.stamp.resize(size, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
        self.touched.clear();
    }

    /// Adds `v` to bucket `i`; true when the bucket was new.
    #[inline]
    fn add(&mut self, i: u32, v: f32) -> bool {
        let k = i as usize;
        if self.stamp[k] == self.generation {
            self.acc[k] += v;
            false
        } else {
            self.stamp[k] = self.generation;
            self.acc[k] = v;
            self.touched.push(i);
            true
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Counts gathered in the same pass as the n-grams.
#[derive(Default)]
struct TextStats {
    chars: u32,
    words: u32,
    word_chars: u32,
    lines: u32,
    digits: u32,
    uppercase: u32,
    math_symbols: u32,
    code_symbols: u32,
    non_ascii: u32,
    cjk: u32,
    cyrillic: u32,
    arabic: u32,
    questions: u32,
    choice_lines: u32,
    list_lines: u32,
    code_fence: bool,
    latex: bool,
    url: bool,
    code_keywords: u32,
    ends_with_answer_cue: bool,
}

impl TextStats {
    #[inline]
    fn note_char(&mut self, ch: char) {
        if ch.is_ascii_digit() {
            self.digits += 1;
        } else if ch.is_uppercase() {
            self.uppercase += 1;
        }
        if !ch.is_ascii() {
            self.non_ascii += 1;
            let c = ch as u32;
            if (0x4E00..=0x9FFF).contains(&c) || (0x3040..=0x30FF).contains(&c) || (0xAC00..=0xD7AF).contains(&c) {
                self.cjk += 1;
            } else if (0x0400..=0x04FF).contains(&c) {
                self.cyrillic += 1;
            } else if (0x0600..=0x06FF).contains(&c) {
                self.arabic += 1;
            }
        }
    }

    #[inline]
    fn note_symbol(&mut self, ch: char) {
        match ch {
            '+' | '-' | '*' | '/' | '=' | '^' | '<' | '>' | '%' => self.math_symbols += 1,
            '{' | '}' | ';' | '(' | ')' | '[' | ']' | '_' | '#' => self.code_symbols += 1,
            '?' => self.questions += 1,
            _ => {}
        }
    }

    /// A line opening like `A.`, `B)`, `(C)` is a multiple-choice option; one
    /// like `- `, `* ` or `1.` is a list item.
    fn note_line_prefix(&mut self, p: &[char]) {
        let choice = |c: char| matches!(c, 'A'..='H' | 'a'..='h');
        let is_choice = (choice(p[0]) && matches!(p[1], '.' | ')' | ':'))
            || (p[0] == '(' && p.len() >= 3 && choice(p[1]) && p[2] == ')');
        if is_choice {
            self.choice_lines += 1;
        } else if matches!(p[0], '-' | '*' | '•') && p[1] == ' ' || p[0].is_ascii_digit() && matches!(p[1], '.' | ')')
        {
            self.list_lines += 1;
        }
    }

    fn finish(&mut self, prompt: &str) {
        self.code_fence = prompt.contains("```");
        self.latex = prompt.contains("\\frac") || prompt.contains("$$") || prompt.contains("\\(");
        self.url = prompt.contains("http://") || prompt.contains("https://");
        const KEYWORDS: [&str; 10] = [
            "def ", "return ", "function", "class ", "import ", "#include", "fn ", "public ", "const ", "=>",
        ];
        self.code_keywords = KEYWORDS.iter().filter(|k| prompt.contains(*k)).count() as u32;
        let tail = prompt.trim_end().as_bytes();
        self.ends_with_answer_cue = tail.len() >= 7 && tail[tail.len() - 7..].eq_ignore_ascii_case(b"answer:");
        if self.lines == 0 && self.chars > 0 {
            self.lines = 1;
        } else if self.chars > 0 {
            self.lines += 1;
        }
    }

    /// The dense block, in slot order. Slot [`SLOT_LOG_CHARS`] must stay the
    /// log length.
    fn dense(&self) -> [f32; DENSE_SLOTS as usize] {
        let mut d = [0f32; DENSE_SLOTS as usize];
        let chars = self.chars.max(1) as f32;
        let words = self.words.max(1) as f32;
        let frac = |n: u32| n as f32 / chars;
        d[0] = 1.0;
        d[SLOT_LOG_CHARS as usize] = (self.chars as f32).ln_1p() / 10.0;
        d[2] = (self.words as f32).ln_1p() / 8.0;
        d[3] = (self.lines as f32).ln_1p() / 5.0;
        d[4] = self.code_fence as u8 as f32;
        d[5] = (self.code_keywords as f32 / 3.0).min(1.0);
        d[6] = (frac(self.code_symbols) * 10.0).min(1.0);
        d[7] = (frac(self.digits) * 5.0).min(1.0);
        d[8] = (frac(self.math_symbols) * 10.0).min(1.0);
        d[9] = self.latex as u8 as f32;
        d[10] = (self.choice_lines >= 2) as u8 as f32;
        d[11] = (self.choice_lines as f32 / 4.0).min(1.0);
        d[12] = (self.questions > 0) as u8 as f32;
        d[13] = frac(self.non_ascii);
        d[14] = frac(self.cjk);
        d[15] = frac(self.cyrillic);
        d[16] = frac(self.arabic);
        d[17] = frac(self.uppercase);
        d[18] = self.ends_with_answer_cue as u8 as f32;
        d[19] = (self.word_chars as f32 / words / 10.0).min(1.0);
        d[20] = self.url as u8 as f32;
        d[21] = (self.list_lines as f32 / 5.0).min(1.0);
        d
    }
}

/// Reads the prompt length back from a feature vector made under any spec
/// (the dense block always sits at the end).
pub fn prompt_chars(f: &Features) -> f32 {
    let slot = f.dim - DENSE_SLOTS + SLOT_LOG_CHARS;
    match f.indices.binary_search(&slot) {
        Ok(pos) => (f.values[pos] * 10.0).exp() - 1.0,
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fz() -> Featurizer {
        Featurizer::new(FeatureSpec::default()).unwrap()
    }

    fn req(prompt: &str) -> RequestContext<'_> {
        RequestContext {
            prompt,
            task_type: Some("mmlu/anatomy"),
            persona: Some("student"),
            metadata: &[],
        }
    }

    #[test]
    fn features_are_deterministic() {
        let f = fz();
        let p = "What is the largest bone in the human body?\nA. Femur\nB. Tibia\nC. Skull\nD. Rib\nAnswer:";
        let a = f.featurize(&req(p));
        let b = fz().featurize(&req(p));
        assert_eq!(a, b);
        // Bit-identical values, not just approximately equal.
        let bits = |x: &Features| x.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
    }

    #[test]
    fn indices_are_sorted_unique_and_in_range() {
        let f = fz();
        let x = f.featurize(&req("fn main() { println!(\"hi\"); } // код 数学 ```rust```"));
        assert!(x.indices.windows(2).all(|w| w[0] < w[1]));
        assert!(x.indices.iter().all(|&i| i < x.dim));
        assert_eq!(x.indices.len(), x.values.len());
        assert!(x.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn text_block_has_unit_norm() {
        let f = fz();
        let x = f.featurize(&RequestContext {
            prompt: "the cat sat on the mat",
            ..Default::default()
        });
        let hashed = f.dim() - DENSE_SLOTS;
        let n2: f32 = x.iter().filter(|&(i, _)| (i as u32) < hashed).map(|(_, v)| v * v).sum();
        assert!((n2 - 1.0).abs() < 1e-4, "norm² = {n2}");
    }

    #[test]
    fn different_prompts_tasks_and_personas_differ() {
        let f = fz();
        let a = f.featurize(&req("Explain photosynthesis."));
        let b = f.featurize(&req("Explain mitosis."));
        assert_ne!(a, b);
        let c = f.featurize(&RequestContext {
            task_type: Some("gsm8k"),
            ..req("Explain photosynthesis.")
        });
        assert_ne!(a, c);
        let d = f.featurize(&RequestContext {
            persona: Some("lawyer"),
            ..req("Explain photosynthesis.")
        });
        assert_ne!(a, d);
    }

    #[test]
    fn structural_cues_fire() {
        let f = fz();
        let dense = |p: &str| {
            let x = f
                .featurize(&RequestContext {
                    prompt: p,
                    ..Default::default()
                })
                .to_dense();
            x[(f.dim() - DENSE_SLOTS) as usize..].to_vec()
        };
        let mc = dense("Which is a mammal?\nA. Shark\nB. Whale\nC. Trout\nD. Eel\nAnswer:");
        assert_eq!(mc[10], 1.0, "multiple choice");
        assert_eq!(mc[18], 1.0, "answer cue");
        assert_eq!(mc[12], 1.0, "question mark");
        let code = dense("```python\ndef f(x):\n    return x + 1\n```");
        assert_eq!(code[4], 1.0, "code fence");
        assert!(code[5] > 0.0, "code keywords");
        let math = dense("Solve 3x^2 + 2x - 5 = 0 for x, given x > 0.");
        assert!(math[7] > 0.0 && math[8] > 0.0, "digits and math symbols");
        let ru = dense("Привет, как дела?");
        assert!(ru[15] > 0.5, "cyrillic script");
        let zh = dense("你好世界");
        assert!(zh[14] > 0.5, "CJK script");
    }

    #[test]
    fn prompt_length_round_trips_through_the_dense_slot() {
        let f = fz();
        let p = "x".repeat(1234);
        let x = f.featurize(&RequestContext {
            prompt: &p,
            ..Default::default()
        });
        assert!((prompt_chars(&x) - 1234.0).abs() < 1.0);
    }

    #[test]
    fn huge_prompt_is_bounded_by_max_words() {
        let f = fz();
        let p = "word ".repeat(100_000);
        let x = f.featurize(&RequestContext {
            prompt: &p,
            ..Default::default()
        });
        assert!(x.nnz() < 100);
    }

    #[test]
    fn empty_prompt_is_fine() {
        let x = fz().featurize(&RequestContext::default());
        assert!(x.values.iter().all(|v| v.is_finite()));
    }
}
