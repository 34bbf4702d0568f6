//! Outcome → reward at the request's operating point.
//!
//! `r = quality − λ·cost/C − μ·latency/L`, with C and L the policy's
//! [`Scales`]: λ = 1 prices the dearest model's average call at one unit of
//! quality.

use crate::policy::{OperatingPoint, Scales};

/// The reward of one observed outcome. A missing latency costs nothing.
pub fn reward(quality: f32, cost_usd: f64, latency_ms: Option<f64>, point: OperatingPoint, scales: &Scales) -> f32 {
    let cost = (cost_usd / scales.cost_usd) as f32;
    let latency = latency_ms.map_or(0.0, |l| (l / scales.latency_ms) as f32);
    quality - point.cost_weight * cost - point.latency_weight * latency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_prices_cost_and_latency() {
        let s = Scales {
            cost_usd: 0.01,
            latency_ms: 1000.0,
        };
        let p = OperatingPoint {
            cost_weight: 0.5,
            latency_weight: 0.2,
        };
        // 1.0 − 0.5·(0.005/0.01) − 0.2·(500/1000) = 0.65
        assert!((reward(1.0, 0.005, Some(500.0), p, &s) - 0.65).abs() < 1e-6);
        assert!((reward(1.0, 0.005, None, p, &s) - 0.75).abs() < 1e-6);
        assert_eq!(reward(0.3, 0.0, None, OperatingPoint::cost(0.0), &s), 0.3);
    }
}
