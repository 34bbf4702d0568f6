//! `qroute judges`: the free variation judges (and, with `--policy`, a
//! policy's answer head) measured on recorded answers.

use std::path::PathBuf;

use anyhow::Context;
use qroute_bench::judges::Scorer;
use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::Featurizer;
use qroute_core::policy::{checkpoint, DqnPolicy, Policy};
use qroute_gateway::exec::judge::Judge;
use qroute_learn::offline::row_request;

use super::output::{say, split_title};

/// Measure the free variation judges (heuristic, agreement), and with
/// --policy a policy's answer head, on answers a dataset recorded: how often
/// each picks the best of k, the quality of its pick, and how its scores
/// rank against the recorded quality.
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
    /// A policy with an answer head (trained on recorded answers): its
    /// head is measured beside the judges, as a cascade would use it (each
    /// answer valued with the policy's prompt-only estimate for its model).
    #[arg(long)]
    policy: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ds = Dataset::load(&a.data)?;
    let rows = ds.split(&a.split);
    if rows.is_empty() {
        anyhow::bail!("{}: no rows in split {:?}", a.data.display(), a.split);
    }
    let policy = a.policy.as_deref().map(checkpoint::load).transpose()?;
    let head_scores = |row: &Row, drawn: &[usize]| -> Vec<f64> {
        let Some(p) = policy.as_ref() else {
            return Vec::new();
        };
        head_values(p, &ds.models, row, drawn).unwrap_or_default()
    };
    let mut scorers = Vec::new();
    if let Some(p) = &policy {
        anyhow::ensure!(
            p.answer_head.is_some(),
            "{}: the policy has no answer head (train it on data with recorded answers)",
            a.policy.as_deref().map_or(String::new(), |d| d.display().to_string())
        );
        scorers.push(Scorer {
            name: "answer head",
            score: &head_scores,
        });
    }
    let report = qroute_bench::judges::measure_with(
        &ds.models,
        &rows,
        &[Judge::Heuristic, Judge::Agreement],
        &scorers,
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
    let title = split_title(&a.data, &a.split);
    say!("{}", qroute_bench::judges::markdown(&report, &title))?;
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The answer head's value of each drawn model's recorded answer to `row`,
/// given the policy's prompt-only quality estimate for that model.
fn head_values(policy: &DqnPolicy, models: &[String], row: &Row, drawn: &[usize]) -> anyhow::Result<Vec<f64>> {
    let head = policy.answer_head.as_ref().context("no answer head")?;
    let fz = Featurizer::new(policy.spec.clone())?;
    let x = fz.featurize(&row_request(row));
    let cards: Vec<_> = drawn
        .iter()
        .map(|&m| {
            policy
                .catalog
                .get(&models[m])
                .context("a model the policy does not know")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut preds = Vec::new();
    policy.predict(&x, &cards, &mut preds)?;
    Ok(drawn
        .iter()
        .zip(&preds)
        .map(|(&m, p)| {
            let answer = row.responses[m].as_deref().unwrap_or_default();
            f64::from(head.predict(&models[m], p.quality, &row.prompt, answer))
        })
        .collect())
}
