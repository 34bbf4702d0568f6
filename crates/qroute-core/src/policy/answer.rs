//! The answer-quality head: what an answer itself says about whether it is
//! good, so a cascade can keep a cheap model's answer or pay for a stronger
//! one. A prompt tells a router only so much (the "plateau" of prompt-only
//! routers); an answer that is cut off, refuses, loops or is a tenth of the
//! usual length is often a bad one, and the model that wrote it is known.
//!
//! The head is a logistic regression over the model (one weight each), a
//! few shape features of the answer, and the policy's own prompt-only
//! quality prediction for that model (as a logit), so it refines what the
//! router already believed instead of starting over. It is small on
//! purpose: it is trained on the few thousand recorded answers a dataset
//! has, and runs once per first-stage answer on the serving path.

use serde::{Deserialize, Serialize};

/// Shape features of an answer, in [`ANSWER_FEATURES`] order.
pub const ANSWER_FEATURES: [&str; 14] = [
    "ln_chars",
    "ln_chars_over_prompt",
    "ln_lines",
    "list_lines",
    "code_fence",
    "refusal",
    "ends_cleanly",
    "ends_with_number",
    "ln_digits",
    "distinct_words",
    "empty",
    "non_ascii",
    "ln_sums_right",
    "ln_sums_wrong",
];

/// Phrases that open or make a refusal, lower-cased.
const REFUSALS: [&str; 7] = [
    "i'm sorry",
    "i am sorry",
    "i cannot",
    "i can't",
    "as an ai",
    "i apologize",
    "i'm unable",
];

/// The features of `answer` to `prompt` (see [`ANSWER_FEATURES`]).
pub fn answer_features(prompt: &str, answer: &str) -> [f32; 14] {
    let ln = |x: usize| (1.0 + x as f32).ln();
    let chars = answer.chars().count();
    let trimmed = answer.trim_end();
    let lines: Vec<&str> = answer.lines().filter(|l| !l.trim().is_empty()).collect();
    let listed = lines
        .iter()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("- ")
                || t.starts_with("* ")
                || t.split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .count();
    let head: String = answer.chars().take(200).collect::<String>().to_lowercase();
    let words: Vec<&str> = answer.split_whitespace().collect();
    let mut distinct: Vec<&str> = words.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let last_word = words
        .last()
        .map_or("", |w| w.trim_end_matches(['.', '!', ')', '*', '$']));
    let (right, wrong) = check_sums(answer);
    [
        ln(chars),
        ln(chars) - ln(prompt.chars().count()),
        ln(lines.len()),
        listed as f32 / lines.len().max(1) as f32,
        f32::from(u8::from(answer.contains("```"))),
        f32::from(u8::from(REFUSALS.iter().any(|r| head.contains(r)))),
        f32::from(u8::from(
            trimmed.ends_with(['.', '!', '?', ')', '"', '`', '*', ':']) || trimmed.ends_with(char::is_numeric),
        )),
        f32::from(u8::from(
            !last_word.is_empty() && last_word.replace([',', '.'], "").parse::<f64>().is_ok(),
        )),
        ln(answer.chars().filter(char::is_ascii_digit).count()),
        distinct.len() as f32 / words.len().max(1) as f32,
        f32::from(u8::from(trimmed.is_empty())),
        answer.chars().filter(|c| !c.is_ascii()).count() as f32 / chars.max(1) as f32,
        ln(right),
        ln(wrong),
    ]
}

/// Checks the arithmetic an answer shows (`16 - 3 = 13`, `<<9*2=18>>`):
/// how many `expression = number` claims hold and how many do not. A
/// worked answer with a wrong sum is much more often a wrong answer.
pub fn check_sums(answer: &str) -> (usize, usize) {
    let bytes = answer.as_bytes();
    let (mut right, mut wrong) = (0, 0);
    for (at, _) in answer.match_indices('=') {
        let start = bytes[..at]
            .iter()
            .rposition(|b| !b"0123456789.,+-*/() $".contains(b))
            .map_or(0, |i| i + 1);
        let lhs = &answer[start..at];
        let mut rhs = answer[at + 1..].trim_start_matches([' ', '$']);
        // GSM8K's calculator annotation sits between a claim and its value.
        if let Some(after) = rhs.strip_prefix("<<").and_then(|r| r.split_once(">>")) {
            rhs = after.1;
        }
        let end = rhs
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .unwrap_or(rhs.len());
        let (Some(claimed), Some(value)) = (number(rhs[..end].trim_end_matches(['.', ','])), eval_sum(lhs)) else {
            continue;
        };
        if (value - claimed).abs() <= (0.01 * claimed.abs()).max(0.01) {
            right += 1;
        } else {
            wrong += 1;
        }
    }
    (right, wrong)
}

fn number(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.replace(',', "").parse().ok()
}

/// The value of `a op b op …` with + − × ÷ and parentheses, or `None` if
/// `text` is not one (no operator, a stray symbol, division by zero).
fn eval_sum(text: &str) -> Option<f64> {
    let tokens: Vec<char> = text.chars().filter(|c| !matches!(c, ' ' | '$' | ',')).collect();
    let tokens = tokens.strip_prefix(&['+'][..]).unwrap_or(&tokens);
    if !tokens.iter().skip(1).any(|c| matches!(c, '+' | '-' | '*' | '/')) {
        return None;
    }
    let mut pos = 0;
    let v = sum(tokens, &mut pos)?;
    (pos == tokens.len() && v.is_finite()).then_some(v)
}

fn sum(t: &[char], pos: &mut usize) -> Option<f64> {
    let mut v = product(t, pos)?;
    while let Some(&op) = t.get(*pos).filter(|c| matches!(c, '+' | '-')) {
        *pos += 1;
        let r = product(t, pos)?;
        v = if op == '+' { v + r } else { v - r };
    }
    Some(v)
}

fn product(t: &[char], pos: &mut usize) -> Option<f64> {
    let mut v = atom(t, pos)?;
    while let Some(&op) = t.get(*pos).filter(|c| matches!(c, '*' | '/')) {
        *pos += 1;
        let r = atom(t, pos)?;
        v = if op == '*' {
            v * r
        } else if r != 0.0 {
            v / r
        } else {
            return None;
        };
    }
    Some(v)
}

fn atom(t: &[char], pos: &mut usize) -> Option<f64> {
    match t.get(*pos)? {
        '(' => {
            *pos += 1;
            let v = sum(t, pos)?;
            (t.get(*pos) == Some(&')')).then(|| *pos += 1)?;
            Some(v)
        }
        '-' => {
            *pos += 1;
            atom(t, pos).map(|v| -v)
        }
        _ => {
            let start = *pos;
            while t.get(*pos).is_some_and(|c| c.is_ascii_digit() || *c == '.') {
                *pos += 1;
            }
            t[start..*pos].iter().collect::<String>().parse().ok()
        }
    }
}

/// A fitted head. `weights` holds, in order: one per model in `models`, one
/// per standardised answer feature, and one for the prompt-only logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerHead {
    pub models: Vec<String>,
    /// Mean and standard deviation of each answer feature on the training
    /// answers, so the weights are comparable and the fit well conditioned.
    pub feature_mean: Vec<f32>,
    pub feature_std: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

/// The inputs of the head for one answer, before its weights.
pub fn head_inputs(model: Option<usize>, n_models: usize, features: &[f32; 14], prompt_quality: f32) -> Vec<f32> {
    let mut x = vec![0f32; n_models + ANSWER_FEATURES.len() + 1];
    if let Some(m) = model.filter(|&m| m < n_models) {
        x[m] = 1.0;
    }
    x[n_models..n_models + ANSWER_FEATURES.len()].copy_from_slice(features);
    x[n_models + ANSWER_FEATURES.len()] = logit(prompt_quality);
    x
}

pub fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

impl AnswerHead {
    /// Standardises the answer-feature part of `x` in place.
    pub fn standardise(&self, x: &mut [f32]) {
        let k = self.models.len();
        for (i, v) in x[k..k + ANSWER_FEATURES.len()].iter_mut().enumerate() {
            *v = (*v - self.feature_mean[i]) / self.feature_std[i];
        }
    }

    /// The probability that `answer` by `model` is good, given the router's
    /// prompt-only estimate `prompt_quality` for that model. A model the
    /// head never saw gets no model weight.
    pub fn predict(&self, model: &str, prompt_quality: f32, prompt: &str, answer: &str) -> f32 {
        let m = self.models.iter().position(|x| x == model);
        self.probability(&self.inputs(m, prompt_quality, prompt, answer))
    }

    /// The standardised inputs for `answer` by the model at position
    /// `model` of [`AnswerHead::models`] (`None`: one it never saw).
    pub fn inputs(&self, model: Option<usize>, prompt_quality: f32, prompt: &str, answer: &str) -> Vec<f32> {
        let mut x = head_inputs(
            model,
            self.models.len(),
            &answer_features(prompt, answer),
            prompt_quality,
        );
        self.standardise(&mut x);
        x
    }

    /// The probability for already standardised inputs.
    pub fn probability(&self, x: &[f32]) -> f32 {
        let z = self.bias + x.iter().zip(&self.weights).map(|(a, w)| a * w).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_see_truncation_refusal_lists_and_numbers() {
        let f = answer_features("Q?", "I'm sorry, but I can't help with that.");
        assert_eq!(f[5], 1.0, "refusal");
        assert_eq!(f[6], 1.0, "ends cleanly");
        let cut = answer_features("Q?", "The first step is to open the");
        assert_eq!(cut[6], 0.0, "cut off mid-sentence");
        let list = answer_features("Q?", "Steps:\n1. Mix\n2. Bake\n- Serve");
        assert!((list[3] - 0.75).abs() < 1e-6, "{}", list[3]);
        let gsm = answer_features("Q?", "So she has 3 + 4 = 7 apples.\nThe answer is 1,250.");
        assert_eq!(gsm[7], 1.0, "ends with a number");
        assert_eq!(answer_features("Q?", "  ")[10], 1.0, "empty");
        let looped = answer_features("Q?", "yes yes yes yes yes yes yes yes");
        assert!(looped[9] < 0.2);
    }

    #[test]
    fn shown_arithmetic_is_checked() {
        assert_eq!(check_sums("16 - 3 = 13 eggs, then 13 - 4 = 9."), (2, 0));
        assert_eq!(check_sums("sells 9 * $2 = $<<9*2=18>>18 a day"), (2, 0));
        assert_eq!(check_sums("(80,000 + 50,000) * 1.5 = 195,000"), (1, 0));
        assert_eq!(check_sums("So 7 * 8 = 54 and 10 / 4 = 2.5"), (1, 1));
        // Not sums: no operator, a division by zero, a variable.
        assert_eq!(check_sums("x = 5, so a = b and 3 = 3"), (0, 0));
        assert_eq!(check_sums("5 / 0 = 7"), (0, 0));
    }

    #[test]
    fn the_head_reads_its_weights() {
        let head = AnswerHead {
            models: vec!["a".into(), "b".into()],
            feature_mean: vec![0.0; 14],
            feature_std: vec![1.0; 14],
            // Refusals are bad; nothing else counts.
            weights: {
                let mut w = vec![0.0; 2 + 14 + 1];
                w[2 + 5] = -4.0;
                w
            },
            bias: 2.0,
        };
        let good = head.predict("a", 0.5, "Q?", "Paris is the capital of France.");
        let bad = head.predict("a", 0.5, "Q?", "I'm sorry, I cannot answer.");
        assert!(good > 0.85 && bad < 0.15, "{good} {bad}");
        // An unknown model only loses its model weight.
        assert_eq!(
            head.predict("zzz", 0.5, "Q?", "Paris."),
            head.predict("a", 0.5, "Q?", "Paris.")
        );
    }
}
