//! `qroute evaluate`: a policy's sweep over operating points on a split.

use std::path::PathBuf;

use qroute_core::dataset::Dataset;
use qroute_core::features::Featurizer;
use qroute_core::policy::checkpoint;
use qroute_lab::{evaluate, report};
use qroute_learn::offline;

use super::output::{say, split_title};

/// Sweep a policy over operating points on a split; write decisions and a report.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    policy: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    /// One line {"id", "point", "model", "cost_weight"} per prompt per point.
    #[arg(long)]
    decisions: PathBuf,
    /// Directory for report.json, report.md and cost_quality.png.
    #[arg(long)]
    report: PathBuf,
    /// Recalibrate this many operating points on the split's prompts
    /// (predictions only) instead of the policy's own grid.
    #[arg(long)]
    points: Option<usize>,
    /// `route`: one model per prompt. `cascade`: the routed model first,
    /// then stronger ones while its recorded answer, judged by the
    /// policy's answer head, is not worth keeping at the point's cost
    /// weight (needs a policy trained on data with `response`s).
    #[arg(long, value_enum, default_value = "route")]
    strategy: StrategyArg,
    /// With --strategy cascade: the most models one prompt pays for.
    #[arg(long, default_value_t = qroute_core::policy::cascade::DEFAULT_MAX_CALLS)]
    max_calls: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Route,
    Cascade,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let ds = Dataset::load(&a.data)?;
    let policy = checkpoint::load(&a.policy)?;
    let grid = match a.points {
        Some(n) => {
            let fz = Featurizer::new(policy.spec.clone())?;
            let rows = ds.split(&a.split);
            let feats = offline::featurize_rows(&fz, &rows);
            offline::calibrate_points(&policy, &feats.iter().collect::<Vec<_>>(), n)?
        }
        None => policy.operating_points.clone(),
    };
    if grid.len() < 21 {
        anyhow::bail!(
            "{} operating points; the sweep needs at least 21 (use --points)",
            grid.len()
        );
    }
    let mode = match a.strategy {
        StrategyArg::Route => evaluate::Mode::Route,
        StrategyArg::Cascade => evaluate::Mode::Cascade { max_calls: a.max_calls },
    };
    let eval = evaluate::evaluate_with(&policy, &ds, &a.split, &grid, mode)?;
    if eval.unanswered > 0 {
        eprintln!(
            "{} of {} prompts have no recorded answer to judge: routed plainly",
            eval.unanswered, eval.prompts
        );
    }
    evaluate::write_decisions(&eval, &a.decisions)?;
    let title = split_title(&a.data, &a.split);
    report::write(&eval, &a.report, &title)?;
    let c95 = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.3}"));
    say!("{:<14} {:>8} {:>8} {:>8}", "", "AIQ", "C95", "Q@best")?;
    for (name, s) in report::summaries(&eval) {
        say!("{name:<14} {:>8.4} {:>8} {:>8.4}", s.aiq, c95(s.c95), s.q_at_best)?;
    }
    eprintln!(
        "{} prompts × {} points → {}; report in {}",
        eval.prompts,
        grid.len(),
        a.decisions.display(),
        a.report.display()
    );
    Ok(())
}
