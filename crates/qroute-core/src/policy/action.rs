//! The action vector: what the network sees of a candidate model. Static
//! parts come from the model's card; two pair features combine the card's
//! price line with this prompt's length.

use crate::catalog::ModelCard;
use crate::features::tag_hash;

/// One-hot id slots: models of the training catalog get one each, in catalog
/// order. A model beyond them, or new at serve time, has none and is scored
/// from its card alone.
pub const ID_SLOTS: usize = 32;
const TAG_SLOTS: usize = 8;
const CARD_SLOTS: usize = 4;
/// Pair features: estimated cost of this prompt on this model.
pub const PAIR_SLOTS: usize = 2;
pub const ACTION_DIM: usize = ID_SLOTS + TAG_SLOTS + CARD_SLOTS + PAIR_SLOTS;
/// Where the pair features start.
pub const PAIR_OFFSET: usize = ID_SLOTS + TAG_SLOTS + CARD_SLOTS;

/// Normalisers carried in the checkpoint: cost and latency are divided by
/// these before they reach the network or the reward.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scales {
    pub cost_usd: f64,
    pub latency_ms: f64,
}

/// The static half of the action vector (zeros where the pair features go).
pub fn static_features(card: &ModelCard, id_slot: Option<usize>, scales: &Scales) -> Vec<f32> {
    let mut a = vec![0f32; ACTION_DIM];
    if let Some(slot) = id_slot.filter(|&s| s < ID_SLOTS) {
        a[slot] = 1.0;
    }
    for tag in &card.tags {
        a[ID_SLOTS + (tag_hash(tag) % TAG_SLOTS as u64) as usize] = 1.0;
    }
    let o = ID_SLOTS + TAG_SLOTS;
    a[o] = ln_ratio(card.mean_cost_usd, scales.cost_usd);
    a[o + 1] = ln_ratio(card.cost_per_char_usd * 1000.0, scales.cost_usd);
    match card.mean_latency_ms {
        Some(l) => a[o + 2] = ln_ratio(l, scales.latency_ms),
        None => a[o + 3] = 1.0,
    }
    a
}

/// Fills the pair features for a prompt of `chars` characters.
pub fn set_pair_features(a: &mut [f32], card: &ModelCard, chars: f32, scales: &Scales) {
    let est = card.estimate_cost(chars);
    a[PAIR_OFFSET] = ln_ratio(est, scales.cost_usd);
    a[PAIR_OFFSET + 1] = ((est / scales.cost_usd) as f32).min(5.0);
}

/// `ln(v / scale)` squashed to a small range; 0 for unknown or zero values.
fn ln_ratio(v: f64, scale: f64) -> f32 {
    if v <= 0.0 || scale <= 0.0 {
        return -2.0;
    }
    ((v / scale).ln() as f32 / 5.0).clamp(-3.0, 3.0)
}
