//! Candidate models: what the policy knows about a model besides its id, so
//! that a model it has never seen still gets a sensible score.

use serde::{Deserialize, Serialize};

/// One candidate model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    /// Expected cost of one call: `base_cost_usd + cost_per_char_usd × prompt chars`.
    /// From list prices, `cost_per_char_usd = input price per token / 4` and
    /// `base_cost_usd` is the expected output's price.
    pub cost_per_char_usd: f64,
    pub base_cost_usd: f64,
    /// Mean observed cost per call; the policy's cost prior for the model.
    pub mean_cost_usd: f64,
    /// Mean observed latency per call, when known.
    #[serde(default)]
    pub mean_latency_ms: Option<f64>,
    /// Capability tags (`code`, `math`, `open-weights`, …), hashed into the model features.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ModelCard {
    /// Expected cost in USD of sending a prompt of `chars` characters.
    pub fn estimate_cost(&self, chars: f32) -> f64 {
        (self.base_cost_usd + self.cost_per_char_usd * chars as f64).max(0.0)
    }

    /// A card from list prices, for a model no policy has seen yet.
    /// `expected_output_tokens` prices the answer; prompts are taken at four
    /// characters a token, and the mean cost at a 1000-character prompt.
    pub fn from_prices(
        id: &str,
        input_per_mtok: f64,
        output_per_mtok: f64,
        expected_output_tokens: f64,
        tags: Vec<String>,
    ) -> ModelCard {
        let cost_per_char_usd = input_per_mtok / 1e6 / 4.0;
        let base_cost_usd = output_per_mtok / 1e6 * expected_output_tokens;
        ModelCard {
            id: id.to_string(),
            cost_per_char_usd,
            base_cost_usd,
            mean_cost_usd: base_cost_usd + cost_per_char_usd * 1000.0,
            mean_latency_ms: None,
            tags,
        }
    }

    /// Fits a card from observed calls: `(prompt chars, cost, latency)`. The
    /// cost line is least squares, clamped so neither term goes negative.
    pub fn fit(id: &str, calls: &[(f32, f64, Option<f64>)]) -> ModelCard {
        let n = calls.len().max(1) as f64;
        let mean_x = calls.iter().map(|c| c.0 as f64).sum::<f64>() / n;
        let mean_y = calls.iter().map(|c| c.1).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for &(x, y, _) in calls {
            sxy += (x as f64 - mean_x) * (y - mean_y);
            sxx += (x as f64 - mean_x).powi(2);
        }
        let mut slope = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
        let mut base = mean_y - slope * mean_x;
        if base < 0.0 {
            // Through the origin instead.
            base = 0.0;
            let sx2: f64 = calls.iter().map(|c| (c.0 as f64).powi(2)).sum();
            let sxy0: f64 = calls.iter().map(|c| c.0 as f64 * c.1).sum();
            slope = if sx2 > 0.0 { sxy0 / sx2 } else { 0.0 };
        }
        let lat: Vec<f64> = calls.iter().filter_map(|c| c.2).collect();
        ModelCard {
            id: id.to_string(),
            cost_per_char_usd: slope,
            base_cost_usd: base,
            mean_cost_usd: mean_y,
            mean_latency_ms: (!lat.is_empty()).then(|| lat.iter().sum::<f64>() / lat.len() as f64),
            tags: Vec::new(),
        }
    }
}

/// The candidate set a policy was trained with, in a fixed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub models: Vec<ModelCard>,
}

impl Catalog {
    pub fn get(&self, id: &str) -> Option<&ModelCard> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.models.iter().position(|m| m.id == id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.models.iter().map(|m| m.id.clone()).collect()
    }

    /// The highest mean cost of any model: the unit that normalises cost in
    /// rewards, so cost weight λ = 1 prices the dearest model's average call
    /// at one unit of quality.
    pub fn cost_scale(&self) -> f64 {
        self.models
            .iter()
            .map(|m| m.mean_cost_usd)
            .fold(0.0, f64::max)
            .max(1e-12)
    }

    /// Like [`Catalog::cost_scale`] for latency; 1 s when nothing is known.
    pub fn latency_scale(&self) -> f64 {
        let max = self.models.iter().filter_map(|m| m.mean_latency_ms).fold(0.0, f64::max);
        if max > 0.0 {
            max
        } else {
            1000.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_price_line() {
        let calls: Vec<_> = (1..50)
            .map(|i| (i as f32 * 10.0, 0.001 + 2e-6 * i as f64 * 10.0, Some(100.0)))
            .collect();
        let card = ModelCard::fit("m", &calls);
        assert!((card.cost_per_char_usd - 2e-6).abs() < 1e-9);
        assert!((card.base_cost_usd - 0.001).abs() < 1e-7);
        assert_eq!(card.mean_latency_ms, Some(100.0));
        assert!((card.estimate_cost(100.0) - 0.0012).abs() < 1e-7);
    }

    #[test]
    fn fit_never_goes_negative() {
        let calls = vec![(10.0, 0.0, None), (1000.0, 1.0, None), (2000.0, 2.5, None)];
        let card = ModelCard::fit("m", &calls);
        assert!(card.base_cost_usd >= 0.0 && card.cost_per_char_usd >= 0.0);
        assert!(card.estimate_cost(0.0) >= 0.0);
    }
}
