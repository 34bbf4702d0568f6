//! Small fixtures for the workspace's tests (feature `testing`, enabled by
//! the other crates' dev-dependencies; never in a release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;

use crate::catalog::{Catalog, ModelCard};
use crate::features::FeatureSpec;
use crate::policy::network::Network;
use crate::policy::{DqnPolicy, Scales};

/// A two-model policy ("cheap", "dear") with random weights and a small
/// feature space.
pub fn toy_policy(seed: u64) -> DqnPolicy {
    let spec = FeatureSpec {
        dim: 512,
        ..FeatureSpec::default()
    };
    let arch = DqnPolicy::arch_for(&spec);
    let net = Network::new(arch, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let catalog = Catalog {
        models: vec![
            ModelCard::fit("cheap", &[(100.0, 0.0001, Some(200.0)), (200.0, 0.0002, Some(300.0))]),
            ModelCard::fit("dear", &[(100.0, 0.01, Some(900.0)), (200.0, 0.02, Some(1200.0))]),
        ],
    };
    let scales = Scales {
        cost_usd: catalog.cost_scale(),
        latency_ms: catalog.latency_scale(),
    };
    DqnPolicy::new(1, net, catalog, spec, scales, vec![]).unwrap()
}
