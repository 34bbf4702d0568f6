//! `qroute train`: offline training from a dataset with full information.

use std::path::PathBuf;

use anyhow::Context;
use qroute_core::dataset::Dataset;
use qroute_core::policy::checkpoint;
use qroute_learn::offline::{self, OfflineConfig};

/// Train a policy offline from a dataset with full information.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset JSONL (see docs/design.md for the schema).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Output policy directory (model.safetensors + policy.json).
    #[arg(long)]
    out: PathBuf,
    /// A training job spec (TOML, the fields of OfflineConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<OfflineConfig>(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => OfflineConfig::default(),
    };
    if let Some(e) = a.epochs {
        cfg.epochs = e;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let ds = Dataset::load(&a.data)?;
    let started = std::time::Instant::now();
    let outcome = offline::train(&ds, &a.split, &cfg, !a.quiet)?;
    let secs = started.elapsed().as_secs_f64();
    let epochs_run = outcome.history.last().map_or(0, |e| e.epoch);
    let training = serde_json::json!({
        "data": a.data.display().to_string(),
        "split": a.split,
        "rows": ds.split(&a.split).len(),
        "config": cfg,
        "best_epoch": outcome.best_epoch,
        "epochs_run": epochs_run,
        "history": outcome.history,
        "seconds": secs,
    });
    checkpoint::save(&outcome.policy, &a.out, training)?;
    eprintln!(
        "trained on {} prompts × {} models in {secs:.1}s; best epoch {} of {epochs_run}; wrote {}",
        ds.split(&a.split).len(),
        ds.models.len(),
        outcome.best_epoch,
        a.out.display()
    );
    Ok(())
}
