//! `qroute judges`: the free variation judges measured on recorded answers.

use std::path::PathBuf;

use anyhow::Context;
use qroute_core::dataset::Dataset;
use qroute_gateway::exec::judge::Judge;

use super::output::say;

/// Measure the free variation judges (heuristic, agreement) on answers a
/// dataset recorded: how often each picks the best of k, the quality of its
/// pick, and how its scores rank against the recorded quality.
#[derive(clap::Args)]
pub struct Args {
    /// A routing dataset whose outcomes carry `response`s.
    #[arg(long)]
    data: PathBuf,
    /// Answers drawn per prompt (all that answered, where fewer did).
    #[arg(long, default_value_t = 3)]
    k: usize,
    #[arg(long, default_value = "test")]
    split: String,
    /// Seed of the draw of models per prompt.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many prompts with answers.
    #[arg(long)]
    limit: Option<usize>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ds = Dataset::load(&a.data)?;
    let rows = ds.split(&a.split);
    if rows.is_empty() {
        anyhow::bail!("{}: no rows in split {:?}", a.data.display(), a.split);
    }
    let report = qroute_bench::judges::measure(
        &ds.models,
        &rows,
        &[Judge::Heuristic, Judge::Agreement],
        a.k,
        a.seed,
        a.limit,
    )?;
    if report.rows == 0 {
        anyhow::bail!(
            "{}: no row of split {:?} has two recorded answers (outcomes.MODEL.response)",
            a.data.display(),
            a.split
        );
    }
    let title = format!(
        "{} ({} split)",
        a.data
            .file_name()
            .map_or("dataset".into(), |n| n.to_string_lossy().into_owned()),
        a.split
    );
    say!("{}", qroute_bench::judges::markdown(&report, &title))?;
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
