//! Cascades: call one model, read its answer, and pay for another only when
//! the expected gain at the request's operating point is worth its cost.
//!
//! The first call is the plain routing decision. Once an answer is in, its
//! cost is spent; what is left to decide is whether the best answer so far
//! (valued by the [answer head](super::answer::AnswerHead), which reads the
//! answer itself) is worth less than another candidate's prompt-only
//! `quality − λ·cost`. The same rule decides each further step, so a
//! cascade is the router's own trade-off applied with more information,
//! and it never calls a model twice.

use super::dqn::{OperatingPoint, Prediction};

/// The most models one cascade pays for, unless configured.
pub const DEFAULT_MAX_CALLS: usize = 2;

/// The next model to call, given the candidates' prompt-only predictions,
/// those already `called`, and the best answer so far valued at
/// `best_answer_quality`; `None` to stop. Never a model in `called`.
pub fn next_call(
    preds: &[Prediction],
    called: &[usize],
    best_answer_quality: f32,
    point: OperatingPoint,
    max_calls: usize,
) -> Option<usize> {
    if called.len() >= max_calls {
        return None;
    }
    preds
        .iter()
        .enumerate()
        .filter(|(i, _)| !called.contains(i))
        .map(|(i, p)| (i, p.score(point)))
        .filter(|&(_, s)| s > best_answer_quality)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The answer to keep among those received: the one the head values most
/// (the first among ties).
pub fn best_answer(valued: &[(usize, f32)]) -> Option<(usize, f32)> {
    valued.iter().copied().reduce(|a, b| if b.1 > a.1 { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(quality: f32, cost: f32) -> Prediction {
        Prediction {
            quality,
            cost,
            latency: 0.0,
        }
    }

    #[test]
    fn escalates_only_when_the_gain_beats_the_cost() {
        let preds = [p(0.7, 0.01), p(0.95, 0.5)];
        let cheap = OperatingPoint::cost(1.0);
        // A good first answer: 0.9 > 0.95 − 0.5.
        assert_eq!(next_call(&preds, &[0], 0.9, cheap, 2), None);
        // A bad one: 0.2 < 0.45.
        assert_eq!(next_call(&preds, &[0], 0.2, cheap, 2), Some(1));
        // Quality first: any answer below 0.95 is worth replacing.
        assert_eq!(next_call(&preds, &[0], 0.9, OperatingPoint::cost(0.0), 2), Some(1));
        // Never twice, never past the limit.
        assert_eq!(next_call(&preds, &[0, 1], 0.0, cheap, 3), None);
        assert_eq!(next_call(&preds, &[0], 0.0, cheap, 1), None);
    }

    #[test]
    fn keeps_the_best_valued_answer() {
        assert_eq!(best_answer(&[(3, 0.4), (1, 0.8), (2, 0.8)]), Some((1, 0.8)));
        assert_eq!(best_answer(&[]), None);
    }
}
