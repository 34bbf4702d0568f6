//! `qroute simulate`: online learning over a dataset's train split as a stream.

use std::path::PathBuf;

use qroute_core::dataset::Dataset;
use qroute_core::features::Featurizer;
use qroute_lab::simulate::{self, Drift, FeedbackMode, SimConfig};
use qroute_lab::{evaluate, report};
use qroute_learn::offline;

use super::output::say;

/// Online learning over the train split as a stream, under bandit feedback,
/// against the standard baselines; then the DQN's decisions on the test split.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    data: PathBuf,
    /// `bandit` or `variations=K`.
    #[arg(long, default_value = "bandit")]
    feedback: String,
    /// Directory for report.{json,md}, learning curves and the test evaluation (test/).
    #[arg(long)]
    report: PathBuf,
    /// Decisions on the test split, in the `evaluate` format.
    #[arg(long)]
    decisions: PathBuf,
    /// One line per round and policy: {policy, round, id, models, propensities, reward, regret}.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// λ in `quality − λ·cost/C`.
    #[arg(long, default_value_t = 0.5)]
    cost_weight: f32,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Shuffle the stream (file order otherwise).
    #[arg(long)]
    shuffle_seed: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated: dqn, uniform, best-single, egreedy-linear, linucb, thompson.
    #[arg(long, default_value = "dqn,uniform,best-single,egreedy-linear,linucb,thompson")]
    policies: String,
    /// `round=R,model=M[,quality=Δ][,cost=F]`: the world changes at round R.
    #[arg(long)]
    drift: Option<String>,
    /// Rounds per point of the learning curves.
    #[arg(long, default_value_t = 500)]
    window: usize,
    /// DQN exploration: SquareCB's γ at round t is this times √t.
    #[arg(long, default_value_t = SimConfig::default().dqn_gamma)]
    dqn_gamma: f32,
    /// DQN gradient steps per round.
    #[arg(long, default_value_t = 1)]
    dqn_steps: usize,
    /// DQN learning rule overrides (defaults: the online trainer's,
    /// `LearnerConfig::online()`): row-wise AdaGrad step on the sparse input rows,
    #[arg(long)]
    dqn_sparse_lr: Option<f32>,
    /// … weight decay,
    #[arg(long)]
    dqn_weight_decay: Option<f32>,
    /// … and Adam's step size on the dense layers.
    #[arg(long)]
    dqn_lr: Option<f32>,
    /// DQN: gradient steps between published snapshots.
    #[arg(long)]
    dqn_publish_every: Option<u64>,
    /// Evaluate every policy's greedy choices on the test split every N
    /// rounds (a held-out learning curve against USD spent).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Keep the DQN's experience log in this store directory (for `qroute ope`).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let defaults = SimConfig::default();
    let mut learner = defaults.dqn_learner.clone();
    learner.sparse_lr = a.dqn_sparse_lr.unwrap_or(learner.sparse_lr);
    learner.weight_decay = a.dqn_weight_decay.unwrap_or(learner.weight_decay);
    learner.lr = a.dqn_lr.unwrap_or(learner.lr);
    let cfg = SimConfig {
        feedback: FeedbackMode::parse(&a.feedback)?,
        cost_weight: a.cost_weight,
        epochs: a.epochs,
        shuffle_seed: a.shuffle_seed,
        seed: a.seed,
        window: a.window,
        policies: a
            .policies
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        drift: a.drift.as_deref().map(Drift::parse).transpose()?,
        dqn_gamma: a.dqn_gamma,
        dqn_steps: a.dqn_steps,
        dqn_learner: learner,
        publish_every: a.dqn_publish_every.unwrap_or(defaults.publish_every),
        eval_every: a.eval_every,
        log_dir: a.log_dir,
        ..defaults
    };
    let ds = Dataset::load(&a.data)?;
    let (sim, dqn) = simulate::simulate(&ds, &cfg, a.trace.as_deref())?;
    report::write_simulation(&sim, &a.report)?;
    say!("{:<16} {:>12} {:>12}", "policy", "mean reward", "mean regret")?;
    for r in &sim.results {
        say!("{:<16} {:>12.4} {:>12.4}", r.policy, r.mean_reward, r.mean_regret)?;
    }
    let Some(policy) = dqn else {
        eprintln!("no dqn in --policies: no test decisions written");
        return Ok(());
    };
    let fz = Featurizer::new(policy.spec.clone())?;
    let train = ds.split("train");
    let feats = offline::featurize_rows(&fz, &train);
    let grid = offline::calibrate_points(&policy, &feats.iter().collect::<Vec<_>>(), 41)?;
    let eval = evaluate::evaluate(&policy, &ds, "test", &grid)?;
    evaluate::write_decisions(&eval, &a.decisions)?;
    report::write(
        &eval,
        &a.report.join("test"),
        "qroute after the simulated stream (test split)",
    )?;
    say!(
        "dqn on the test split: AIQ {:.4}, C95 {}, Q@best {:.4}",
        eval.router.aiq,
        eval.router.c95.map_or("n/a".into(), |c| format!("{c:.3}")),
        eval.router.q_at_best
    )?;
    Ok(())
}
