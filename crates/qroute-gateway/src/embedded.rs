//! What `qroute serve` runs with when given no config: the default config,
//! the shipped policy and the bundled dataset its simulated providers answer
//! from, compiled into the binary so qroute runs with no files around it.

use std::path::Path;

use qroute_core::policy::{checkpoint, DqnPolicy};
use qroute_core::Result;

/// The configuration `qroute serve` runs with when given none: simulated
/// providers backed by the bundled datasets and the shipped policy.
pub const CONFIG: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml"));

/// The bundled datasets a simulated provider may name instead of a path,
/// with their bytes: RouteLLM's MMLU + GSM8K (2 models) and AlpacaEval
/// (11 models, every recorded answer).
pub const DATASETS: &[(&str, &[u8])] = &[
    (
        "embedded:routellm_mmlu_gsm8k",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/routellm_mmlu_gsm8k.jsonl"
        )),
    ),
    (
        "embedded:alpaca_eval",
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/alpaca_eval.jsonl")),
    ),
];

/// The bytes of bundled dataset `name` (`embedded:…`), if there is one.
pub fn dataset(name: &str) -> Option<&'static [u8]> {
    DATASETS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

const POLICY_META: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../policies/default/policy.json"
));
const POLICY_WEIGHTS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../policies/default/model.safetensors"
));

/// Every bundled byte: the datasets and the shipped policy. Each is read at
/// most once, at start (decoded into owned values), so the binary hands
/// their pages back once the gateway is built (3 MB of an idle gateway's
/// resident memory is the policy's weights); a later read faults them in
/// again from the executable.
pub fn bundled() -> impl Iterator<Item = &'static [u8]> {
    DATASETS
        .iter()
        .map(|(_, bytes)| *bytes)
        .chain([POLICY_META, POLICY_WEIGHTS])
}

/// The policy shipped in `policies/default`.
pub fn policy() -> Result<DqnPolicy> {
    checkpoint::from_bytes(POLICY_META, POLICY_WEIGHTS, Path::new("<embedded policies/default>"))
}

#[cfg(test)]
mod tests {
    use qroute_core::features::{Featurizer, RequestContext};
    use qroute_core::policy::Policy;

    #[test]
    fn the_shipped_policy_loads_and_scores() {
        let p = super::policy().unwrap();
        assert!(p.operating_points.len() >= 21);
        let fz = Featurizer::new(p.spec.clone()).unwrap();
        let x = fz.featurize(&RequestContext {
            prompt: "What is 17 * 23?",
            task_type: Some("gsm8k"),
            ..Default::default()
        });
        let cards: Vec<_> = p.catalog.models.iter().collect();
        let mut out = Vec::new();
        p.predict(&x, &cards, &mut out).unwrap();
        assert!(out.iter().all(|o| (0.0..=1.0).contains(&o.quality) && o.cost > 0.0));
    }
}
