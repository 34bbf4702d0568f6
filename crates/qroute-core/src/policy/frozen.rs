//! A checkpoint loaded to score live traffic beside the serving policy (an
//! experiment arm, a shadow), frozen at the version saved there.

use std::path::Path;
use std::sync::Arc;

use super::{checkpoint, DqnPolicy};
use crate::catalog::ModelCard;
use crate::features::FeatureSpec;
use crate::{Error, Result};

pub struct FrozenPolicy {
    pub policy: Arc<DqnPolicy>,
    /// The served models as this policy knows them, in the served order:
    /// its own card for a model in its catalog (a checkpoint may know a
    /// model better, or differently, than the serving policy), else the
    /// served card. Resolved once here, not per request.
    pub cards: Vec<ModelCard>,
}

impl FrozenPolicy {
    /// Loads the policy directory `dir`. Its features must be `spec`, the
    /// serving policy's: requests are featurized once, for every policy
    /// that scores them.
    pub fn load(dir: &Path, spec: &FeatureSpec, served: &[ModelCard]) -> Result<FrozenPolicy> {
        FrozenPolicy::new(checkpoint::load(dir)?, &dir.display().to_string(), spec, served)
    }

    /// Freezes a loaded policy (`name` says where from, in errors), with the
    /// same checks as [`FrozenPolicy::load`].
    pub fn new(policy: DqnPolicy, name: &str, spec: &FeatureSpec, served: &[ModelCard]) -> Result<FrozenPolicy> {
        if &policy.spec != spec {
            return Err(Error::InvalidInput(format!(
                "checkpoint {name} was trained on other features than the serving policy's (dim {} vs {})",
                policy.spec.dim, spec.dim
            )));
        }
        let cards = served
            .iter()
            .map(|c| policy.catalog.get(&c.id).unwrap_or(c).clone())
            .collect();
        Ok(FrozenPolicy {
            policy: Arc::new(policy),
            cards,
        })
    }
}
