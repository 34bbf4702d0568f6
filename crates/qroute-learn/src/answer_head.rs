//! Fitting the answer-quality head (`qroute_core::policy::answer`) on a
//! dataset's recorded answers.
//!
//! Each recorded answer is one example: the model, the answer's shape, and
//! the router's prompt-only quality prediction for that model, made by a
//! network that never saw the prompt (cross-validation's out-of-fold
//! predictions), so the head learns how much to trust the router on
//! prompts it has not trained on, not on ones it has memorised.

use qroute_core::dataset::Row;
use qroute_core::policy::answer::{answer_features, head_inputs, AnswerHead, ANSWER_FEATURES};

/// L2 penalty on the weights (not the bias), per example.
const L2: f32 = 1e-3;
const STEPS: usize = 1500;
const LEARNING_RATE: f32 = 0.5;

/// Fits the head on every recorded answer in `rows`, whose prompt-only
/// quality prediction for model `m` of row `i` is `prompt_quality[i][m]`.
/// `None` when the rows record no answers.
pub fn fit(models: &[String], rows: &[&Row], prompt_quality: &[Vec<f32>]) -> Option<AnswerHead> {
    let k = models.len();
    let mut xs: Vec<Vec<f32>> = Vec::new();
    let mut ys: Vec<f32> = Vec::new();
    for (row, q) in rows.iter().zip(prompt_quality) {
        for (m, answer) in row.responses.iter().enumerate() {
            if let Some(answer) = answer {
                xs.push(head_inputs(Some(m), k, &answer_features(&row.prompt, answer), q[m]));
                ys.push(row.outcomes[m].quality);
            }
        }
    }
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f32;
    let f = ANSWER_FEATURES.len();
    let mut feature_mean = vec![0f32; f];
    let mut feature_std = vec![0f32; f];
    for x in &xs {
        for j in 0..f {
            feature_mean[j] += x[k + j] / n;
        }
    }
    for x in &xs {
        for j in 0..f {
            feature_std[j] += (x[k + j] - feature_mean[j]).powi(2) / n;
        }
    }
    for s in &mut feature_std {
        // A constant feature (no code in GSM8K's answers) keeps weight 0.
        *s = s.sqrt().max(1e-3);
    }
    let mut head = AnswerHead {
        models: models.to_vec(),
        feature_mean,
        feature_std,
        weights: vec![0.0; xs[0].len()],
        bias: 0.0,
    };
    for x in &mut xs {
        head.standardise(x);
    }
    // Full-batch gradient descent on the mean log loss: convex, a few
    // thousand examples of a few dozen inputs, so a fixed schedule
    // converges and the result does not depend on an order.
    let mut grad = vec![0f32; head.weights.len()];
    for _ in 0..STEPS {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut grad_bias = 0.0;
        for (x, &y) in xs.iter().zip(&ys) {
            let err = head.probability(x) - y;
            grad_bias += err / n;
            grad.iter_mut().zip(x).for_each(|(g, v)| *g += err * v / n);
        }
        for (w, g) in head.weights.iter_mut().zip(&grad) {
            *w -= LEARNING_RATE * (g + L2 * *w);
        }
        head.bias -= LEARNING_RATE * grad_bias;
    }
    Some(head)
}

/// A head learned one answer at a time, for the simulator's cascades: the
/// same inputs and model as [`fit`], unstandardised, stepped with AdaGrad
/// on each answer whose quality is seen. It starts out trusting the router
/// (weight 1 on its prompt-only logit, 0 elsewhere), so its first values
/// are the router's own estimates.
pub struct OnlineHead {
    head: AnswerHead,
    /// AdaGrad's sums of squared gradients, per weight, then the bias.
    g2: Vec<f32>,
}

/// AdaGrad's step size for the online head.
const ONLINE_LR: f32 = 0.5;

impl OnlineHead {
    pub fn new(models: &[String]) -> OnlineHead {
        let k = models.len();
        let f = ANSWER_FEATURES.len();
        let mut weights = vec![0.0; k + f + 1];
        weights[k + f] = 1.0;
        OnlineHead {
            head: AnswerHead {
                models: models.to_vec(),
                feature_mean: vec![0.0; f],
                feature_std: vec![1.0; f],
                weights,
                bias: 0.0,
            },
            g2: vec![0.0; k + f + 2],
        }
    }

    /// The value of `answer` by model `m`, given the router's estimate.
    pub fn value(&self, m: usize, prompt_quality: f32, prompt: &str, answer: &str) -> f32 {
        let x = self.head.inputs(Some(m), prompt_quality, prompt, answer);
        self.head.probability(&x)
    }

    /// One step towards `quality`, the answer's observed quality.
    pub fn observe(&mut self, m: usize, prompt_quality: f32, prompt: &str, answer: &str, quality: f32) {
        let x = self.head.inputs(Some(m), prompt_quality, prompt, answer);
        let err = self.head.probability(&x) - quality;
        let n = self.head.weights.len();
        for (i, (w, v)) in self.head.weights.iter_mut().zip(&x).enumerate() {
            let g = err * v;
            self.g2[i] += g * g;
            *w -= ONLINE_LR * g / (self.g2[i].sqrt() + 1e-6);
        }
        self.g2[n] += err * err;
        self.head.bias -= ONLINE_LR * err / (self.g2[n].sqrt() + 1e-6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::dataset::ModelOutcome;

    fn row(answers: [&str; 2], quality: [f32; 2]) -> Row {
        Row {
            id: String::new(),
            task: "t".into(),
            split: "train".into(),
            prompt: "Explain it.".into(),
            outcomes: quality
                .iter()
                .map(|&q| ModelOutcome {
                    quality: q,
                    cost_usd: 0.001,
                    latency_ms: None,
                })
                .collect(),
            responses: answers.iter().map(|a| Some(a.to_string())).collect(),
        }
    }

    #[test]
    fn learns_that_refusals_are_bad_answers() {
        let models = vec!["a".to_string(), "b".to_string()];
        let rows: Vec<Row> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    row(["A full and helpful answer.", "I'm sorry, I cannot help."], [1.0, 0.0])
                } else {
                    row(
                        ["I'm sorry, I cannot help.", "Another complete answer here."],
                        [0.0, 1.0],
                    )
                }
            })
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let q = vec![vec![0.5, 0.5]; rows.len()];
        let head = fit(&models, &refs, &q).unwrap();
        let good = head.predict("a", 0.5, "Explain it.", "A full and helpful answer.");
        let bad = head.predict("a", 0.5, "Explain it.", "I'm sorry, I cannot help.");
        assert!(good > 0.8 && bad < 0.2, "{good} {bad}");
        assert!(fit(&models, &refs[..0], &q).is_none());
    }

    #[test]
    fn the_online_head_starts_at_the_router_and_learns_refusals() {
        let models = vec!["a".to_string()];
        let mut head = OnlineHead::new(&models);
        let (good, bad) = ("A full and helpful answer.", "I'm sorry, I cannot help.");
        assert!((head.value(0, 0.8, "Q?", good) - 0.8).abs() < 1e-4);
        for _ in 0..300 {
            head.observe(0, 0.6, "Q?", good, 1.0);
            head.observe(0, 0.6, "Q?", bad, 0.0);
        }
        assert!(head.value(0, 0.6, "Q?", good) > 0.8);
        assert!(head.value(0, 0.6, "Q?", bad) < 0.2);
    }
}
