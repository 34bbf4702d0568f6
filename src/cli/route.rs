//! `qroute route`: one routing decision for a prompt, as JSON.

use std::path::PathBuf;

use qroute_core::catalog::ModelCard;
use qroute_core::features::RequestContext;
use qroute_core::policy::{checkpoint, Exploration, OperatingPoint, PolicyConfig};
use qroute_gateway::engine::Decider;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::output::say;

/// Route one prompt: score every candidate and pick one (prints JSON).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    persona: Option<String>,
    /// λ: quality given up per unit of normalised cost.
    #[arg(long, default_value_t = 0.1)]
    cost_weight: f32,
    /// μ: quality given up per unit of normalised latency.
    #[arg(long, default_value_t = 0.0)]
    latency_weight: f32,
    /// A policy directory; the embedded default when absent.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Pick the best-scoring model instead of sampling under the gateway's
    /// default exploration.
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let policy = match &a.policy {
        Some(dir) => checkpoint::load(dir)?,
        None => qroute_gateway::embedded::policy()?,
    };
    let config = PolicyConfig {
        exploration: if a.greedy {
            Exploration::Greedy
        } else {
            Exploration::default()
        },
        ..PolicyConfig::default()
    };
    let decider = Decider::new(policy.spec.clone(), &config)?;
    let features = decider.featurizer.featurize(&RequestContext {
        prompt: &a.prompt,
        task_type: a.task.as_deref(),
        persona: a.persona.as_deref(),
        metadata: &[],
    });
    let point = OperatingPoint {
        cost_weight: a.cost_weight,
        latency_weight: a.latency_weight,
    };
    let cards: Vec<&ModelCard> = policy.catalog.models.iter().collect();
    let ids: Vec<&str> = cards.iter().map(|c| c.id.as_str()).collect();
    let choice = decider.choose(
        &policy,
        &config.strategy,
        &ids,
        &cards,
        &features,
        point,
        &mut ChaCha8Rng::seed_from_u64(a.seed),
    )?;
    let decision = RouteDecision {
        model: ids[choice.chosen].to_string(),
        propensity: choice.propensities[choice.chosen],
        policy_version: policy.version,
        cost_weight: point.cost_weight,
        latency_weight: point.latency_weight,
        candidates: (0..cards.len())
            .map(|i| RouteCandidate {
                model: ids[i].to_string(),
                expected_quality: choice.predictions[i].quality,
                expected_cost_usd: choice.predictions[i].cost as f64 * policy.scales.cost_usd,
                score: choice.scores[i],
                propensity: choice.propensities[i],
            })
            .collect(),
    };
    say!("{}", serde_json::to_string_pretty(&decision)?)?;
    Ok(())
}

/// One routing decision, as `route` prints it.
#[derive(serde::Serialize)]
struct RouteDecision {
    model: String,
    propensity: f32,
    policy_version: u64,
    cost_weight: f32,
    latency_weight: f32,
    candidates: Vec<RouteCandidate>,
}

#[derive(serde::Serialize)]
struct RouteCandidate {
    model: String,
    expected_quality: f32,
    expected_cost_usd: f64,
    score: f32,
    propensity: f32,
}
