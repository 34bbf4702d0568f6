//! `qroute experiment`: list experiments, write an experiment's report.

use std::path::PathBuf;

use qroute_core::store::Documents;
use qroute_experiment::results::{self, Options, Results};
use qroute_experiment::{Experiment, Status};
use qroute_gateway::config::Config;
use qroute_lab::experiment_report::write;

use super::output::say;
use super::remote::Remote;

/// A/B experiments between routing strategies: list them, write their results.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write an experiment's per-arm results as OUT/ID.md and OUT/ID.png.
    ///
    /// Reads them from an experience store directory (--store; sled locks it,
    /// so no gateway may be serving from it: ask a running gateway with --url
    /// instead) or from a running gateway's `GET /v1/experiments/ID` (--url).
    Report {
        /// An experience store directory (the gateway must not be running on
        /// it) or a shared store's `postgres://` URL.
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        store: Option<String>,
        /// A running gateway, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// The experiment's id.
        #[arg(long)]
        id: String,
        /// Directory for the report (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// With --store: the gateway's TOML config, for the reward's scales
        /// (its policy's) and `learning.default_quality`; the embedded
        /// default when absent.
        #[arg(long, conflicts_with = "url")]
        config: Option<PathBuf>,
    },
    /// Print each experiment: id, status and arms, one per line.
    List {
        /// An experience store directory (no gateway may be serving from it)
        /// or a shared store's `postgres://` URL.
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        store: Option<String>,
        /// A running gateway, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
    },
}

/// `GET /v1/experiments/{id}`'s answer.
#[derive(serde::Deserialize)]
struct ExperimentAnswer {
    experiment: Experiment,
    #[allow(dead_code)]
    status: Status,
    results: Results,
}

/// `GET /v1/experiments`'s answer.
#[derive(serde::Deserialize)]
struct ListAnswer {
    experiments: Vec<Listed>,
}

#[derive(serde::Deserialize)]
struct Listed {
    experiment: Experiment,
}

fn stored_experiments(store: &dyn qroute_core::store::ExperienceStore) -> anyhow::Result<Vec<Experiment>> {
    let mut all: Vec<Experiment> = store.docs("experiments")?;
    all.sort_by_key(|e| e.created_ms);
    Ok(all)
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List { store, url } => {
            let now = qroute_core::unix_ms();
            let all = match (store, url) {
                (Some(dir), None) => stored_experiments(&*super::open_store(&dir)?)?,
                (None, Some(url)) => {
                    let answer: ListAnswer = Remote::new(&url)?.get_json("/v1/experiments")?;
                    answer.experiments.into_iter().map(|e| e.experiment).collect()
                }
                _ => anyhow::bail!("give exactly one of --store DIR or --url URL"),
            };
            if all.is_empty() {
                eprintln!("no experiments");
            }
            for e in all {
                let arms: Vec<String> = e
                    .spec
                    .arms
                    .iter()
                    .map(|a| {
                        let control = if a.name == e.spec.control() { " (control)" } else { "" };
                        format!("{}={}{control}", a.name, a.strategy.name())
                    })
                    .collect();
                let holdout = if e.spec.holdout > 0.0 {
                    format!(" holdout={}", e.spec.holdout)
                } else {
                    String::new()
                };
                say!("{}\t{}\t{}{holdout}", e.spec.id, e.status(now).as_str(), arms.join(" "))?;
            }
            Ok(())
        }
        Command::Report {
            store,
            url,
            id,
            out,
            config,
        } => {
            let (experiment, results) = match (store, url) {
                (Some(dir), None) => {
                    let cfg = match &config {
                        Some(p) => Config::load(p)?,
                        None => Config::embedded_default()?,
                    };
                    let policy = match &cfg.policy.path {
                        Some(p) => qroute_core::policy::checkpoint::load(p)?,
                        None => qroute_gateway::embedded::policy()?,
                    };
                    let store = super::open_store(&dir)?;
                    let all = stored_experiments(&*store)?;
                    let Some(experiment) = all.iter().find(|e| e.spec.id == id).cloned() else {
                        let known: Vec<&str> = all.iter().map(|e| e.spec.id.as_str()).collect();
                        let known = if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        };
                        anyhow::bail!("no experiment {id:?} in {dir}; known: {known}");
                    };
                    let opts = Options {
                        level: 0.95,
                        scales: policy.scales,
                        default_quality: cfg.learning.default_quality,
                    };
                    let results = results::compute(&*store, &experiment, &opts, qroute_core::unix_ms())?;
                    (experiment, results)
                }
                (None, Some(url)) => {
                    let answer: ExperimentAnswer = Remote::new(&url)?.get_json(&format!("/v1/experiments/{id}"))?;
                    (answer.experiment, answer.results)
                }
                _ => anyhow::bail!("give exactly one of --store DIR or --url URL"),
            };
            let (md, png) = write(&results, &experiment, &out)?;
            say!("{}", md.display())?;
            say!("{}", png.display())?;
            Ok(())
        }
    }
}
