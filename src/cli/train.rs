//! `qroute train`: offline training from a dataset with full information,
//! or (`--follow`) online training beside a running gateway.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use qroute_core::dataset::Dataset;
use qroute_core::policy::checkpoint;
use qroute_core::store::ExperienceStore;
use qroute_gateway::config::Config;
use qroute_learn::learner::{Learner, LearnerConfig};
use qroute_learn::offline::{self, Backend, OfflineConfig};
use qroute_learn::online::{Checkpoints, OnlineConfig, OnlineTrainer};
use qroute_learn::registry::{Lineage, Registry};

use super::output::say;
use super::remote::{Remote, RemoteStore};

/// Train a policy offline from a dataset with full information; or, with
/// --follow, learn from a running gateway's experiences as they arrive and
/// publish each version to its registry.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset JSONL (see docs/design.md for the schema).
    #[arg(long, required_unless_present = "follow")]
    data: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    split: String,
    /// Output policy directory (model.safetensors + policy.json).
    #[arg(long, required_unless_present = "follow")]
    out: Option<PathBuf>,
    /// A training job spec (TOML, the fields of OfflineConfig).
    #[arg(long, conflicts_with = "follow")]
    config: Option<PathBuf>,
    /// Train beside running gateways (in `learning.mode = "external"`)
    /// until interrupted, publishing each version, which they serve within
    /// a second: from a shared store (--store postgres://…: any number of
    /// replicas; one trainer at a time, a second waits to take over), or
    /// from one gateway (--url and --registry).
    #[arg(long, conflicts_with_all = ["data", "out"])]
    follow: bool,
    /// With --follow: the shared store, `postgres://…?schema=…`, whose
    /// experience log it learns from and whose registry it publishes to.
    #[arg(long, requires = "follow", conflicts_with_all = ["url", "registry"])]
    store: Option<String>,
    /// The gateway, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
    /// The gateway's policy registry (its DATA_DIR/policies).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// With --follow: the gateway's TOML config, for its `[learning]`
    /// section (batch, replay ratio, labels, cadence); defaults otherwise.
    #[arg(long, requires = "follow")]
    gateway_config: Option<PathBuf>,
    /// Which library trains offline: `rust` (default; fastest at the
    /// shipped size) or `torch` (libtorch, on CUDA when present; needs a
    /// build with `--features tch`). Both write the same checkpoint.
    #[arg(long, default_value = "rust", conflicts_with = "follow")]
    backend: Backend,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.follow {
        return follow(a);
    }
    let (Some(data), Some(out)) = (a.data, a.out) else {
        anyhow::bail!("--data and --out are required");
    };
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
    let ds = Dataset::load(&data)?;
    let started = std::time::Instant::now();
    let outcome = offline::train_with(&ds, &a.split, &cfg, a.backend, !a.quiet)?;
    let secs = started.elapsed().as_secs_f64();
    let epochs_run = outcome.history.last().map_or(0, |e| e.epoch);
    let training = serde_json::json!({
        "data": data.display().to_string(),
        "split": a.split,
        "rows": ds.split(&a.split).len(),
        "backend": a.backend,
        "config": cfg,
        "best_epoch": outcome.best_epoch,
        "epochs_run": epochs_run,
        "history": outcome.history,
        "prior_cv": outcome.prior_cv,
    });
    checkpoint::save(&outcome.policy, &out, training)?;
    eprintln!(
        "trained on {} prompts × {} models in {secs:.1}s ({} backend); best epoch {} of {epochs_run}; quality prior weight {:.2}; wrote {}",
        ds.split(&a.split).len(),
        ds.models.len(),
        a.backend,
        outcome.best_epoch,
        outcome.policy.quality_prior.weight,
        out.display()
    );
    Ok(())
}

/// `train --follow`: the online trainer's loop in its own process,
/// sampling the shared store (or one gateway's, over HTTP) and
/// checkpointing every published version.
fn follow(a: Args) -> anyhow::Result<()> {
    let learning = match &a.gateway_config {
        Some(p) => Config::load(p)?.learning,
        None => Default::default(),
    };
    let (store, registry, source): (Arc<dyn ExperienceStore>, Registry, String) = match (a.store, a.url, a.registry) {
        (Some(url), None, None) if qroute_store::pg::is_postgres_url(&url) => {
            let store = qroute_store::PgStore::open(&url)?;
            let source = store.pg().url().to_string();
            (Arc::new(store), Registry::open_postgres(&url)?, source)
        }
        (None, Some(url), Some(dir)) => (
            Arc::new(RemoteStore::new(Remote::new(&url)?)),
            Registry::open_existing(&dir)?,
            url,
        ),
        _ => anyhow::bail!(
            "--follow needs --store postgres://… (a shared store), or --url and --registry (one gateway's)"
        ),
    };
    // On PostgreSQL a second trainer waits here and takes over when the
    // first one's session ends; a directory's lock fails at once.
    let lock = registry.wait_for_trainer_lock()?;
    let shared = qroute_store::pg::is_postgres_url(&source);
    let latest = loop {
        match registry.latest()? {
            Some(v) => break v,
            // Replicas register the base policy when they start.
            None if shared => std::thread::sleep(std::time::Duration::from_secs(1)),
            None => anyhow::bail!(
                "{} has no registered version yet: start the gateway first",
                registry.location()
            ),
        }
    };
    let policy = registry.load(latest)?;
    let lineage = registry.entry(latest)?.lineage.unwrap_or_else(|| Lineage {
        parent: None,
        base: qroute_learn::registry::fingerprint(&policy),
        source: "follow".into(),
        steps: 0,
        experiences: 0,
        created_ms: qroute_core::unix_ms(),
        writer: String::new(),
    });
    let location = registry.location();
    let mut checkpoints = Checkpoints::from_section(&learning, registry, lineage, "follow");
    // The gateway only sees what is registered: every version is.
    checkpoints.every = std::time::Duration::ZERO;
    let learner = Learner::new(policy, LearnerConfig::online(), rand::random());
    let trainer = OnlineTrainer::spawn(store, learner, OnlineConfig::from_section(&learning, Some(checkpoints)))?;
    eprintln!("following {source} from v{latest}; publishing into {location}");
    let runtime = super::runtime()?;
    let mut served = latest;
    runtime.block_on(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = super::serve::shutdown_signal() => break,
                _ = tick.tick() => {
                    if !lock.is_held() {
                        // Another trainer may hold it now: exit at once,
                        // without the final checkpoint a clean stop makes.
                        eprintln!("lost the trainer lock (its PostgreSQL session ended); exiting without publishing");
                        std::process::exit(3);
                    }
                    let v = trainer.policy().version;
                    if v != served {
                        served = v;
                        say!("v{v}	steps={}", trainer.stats().steps.load(Ordering::Relaxed))?;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    trainer.stop();
    eprintln!("stopped at v{}", trainer.policy().version);
    Ok(())
}
