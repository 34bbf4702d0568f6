//! Reports: the same figures as JSON (for tools), Markdown (for people) and
//! a PNG of the cost–quality curve.

use std::fmt::Write as _;
use std::path::Path;

use super::evaluate::{Evaluation, Mode, Summary};
use super::plots::{cost_quality_png, Curve, Marker};
use qroute_core::{Error, Result};

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("not reached".into(), |x| format!("{x:.3}"))
}

fn summary_row(name: &str, s: &Summary) -> String {
    format!("| {name} | {:.4} | {} | {:.4} |\n", s.aiq, fmt_opt(s.c95), s.q_at_best)
}

/// The routers to compare, named: qroute (as a cascade, beside its plain
/// routing), the single models and the oracle.
pub fn summaries(eval: &Evaluation) -> Vec<(&'static str, &Summary)> {
    let mut out = Vec::with_capacity(4);
    match (&eval.mode, &eval.plain) {
        (Mode::Cascade { .. }, Some(plain)) => {
            out.push(("qroute cascade", &eval.router));
            out.push(("qroute routing", plain));
        }
        _ => out.push(("qroute", &eval.router)),
    }
    out.push(("single models", &eval.single_models));
    out.push(("oracle", &eval.oracle_sweep));
    out
}

/// The Markdown report.
pub fn markdown(eval: &Evaluation) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# qroute evaluation\n");
    let _ = writeln!(
        md,
        "Dataset `{}`, split `{}`, {} prompts, policy version {}.\n",
        eval.dataset, eval.split, eval.prompts, eval.policy_version
    );
    if let Mode::Cascade { max_calls } = eval.mode {
        let _ = writeln!(
            md,
            "Cascade: the routed model first, then up to {} more while the answer head values the best answer so far below another model's expected quality net of its cost. Costs sum every model called. {} prompts had no recorded answer and were routed plainly.\n",
            max_calls.saturating_sub(1),
            eval.unanswered
        );
    }
    md.push_str("| router | AIQ | C95 | Q@best |\n|---|---|---|---|\n");
    for (name, s) in summaries(eval) {
        md.push_str(&summary_row(name, s));
    }
    md.push_str(
        "\nAIQ: area under the non-decreasing convex hull over the single models' cost range, divided by the range. ",
    );
    md.push_str("C95: least cost reaching 95% of the best single model's quality, as a share of its cost. ");
    md.push_str("Q@best: best quality at no more than the best single model's cost.\n\n");
    md.push_str("## Single models\n\n| model | mean cost (USD) | mean quality |\n|---|---|---|\n");
    for s in &eval.singles {
        let _ = writeln!(md, "| {} | {:.6} | {:.4} |", s.model, s.cost, s.quality);
    }
    let _ = writeln!(
        md,
        "| oracle (best per prompt) | {:.6} | {:.4} |",
        eval.oracle.cost, eval.oracle.quality
    );
    md.push_str("\n## Operating points\n\n| point | cost weight λ | mean cost (USD) | mean quality | top model (share) | calls per prompt |\n|---|---|---|---|---|---|\n");
    for p in &eval.points {
        let (top, share) = p
            .shares
            .iter()
            .enumerate()
            .fold((0, 0.0), |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc });
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.6} | {:.4} | {} ({:.0}%) | {:.2} |",
            p.point,
            p.cost_weight,
            p.cost,
            p.quality,
            eval.models[top],
            share * 100.0,
            p.calls
        );
    }
    md
}

/// Writes `report.json`, `report.md` and `cost_quality.png` into `dir`.
pub fn write(eval: &Evaluation, dir: &Path, title: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let json = serde_json::to_vec_pretty(eval).map_err(|e| Error::io("encoding report", e.into()))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    };
    write("report.json", &json)?;
    write("report.md", markdown(eval).as_bytes())?;
    let mut markers: Vec<Marker> = eval
        .singles
        .iter()
        .map(|s| Marker {
            name: s.model.clone(),
            point: qroute_core::frontier::CostQuality::new(s.cost, s.quality),
        })
        .collect();
    markers.push(Marker {
        name: "oracle".into(),
        point: eval.oracle,
    });
    let mut curves = Vec::with_capacity(2);
    for (name, s) in summaries(eval) {
        let points = match name {
            "qroute routing" => eval.plain_curve.clone(),
            "qroute" | "qroute cascade" => eval.curve(),
            _ => continue,
        };
        curves.push(Curve {
            name: format!("{name} (AIQ {:.3})", s.aiq),
            points,
        });
    }
    cost_quality_png(&dir.join("cost_quality.png"), title, &curves, &markers)
}

/// The simulation report: `report.json`, `report.md`, and the learning
/// curves as `learning_reward.png` and `learning_regret.png`.
pub fn write_simulation(sim: &super::simulate::Simulation, dir: &Path) -> Result<()> {
    use super::plots::series_png;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let json = serde_json::to_vec_pretty(sim).map_err(|e| Error::io("encoding report", e.into()))?;
    std::fs::write(dir.join("report.json"), json).map_err(|e| Error::io("writing report.json", e))?;
    let mut md = String::new();
    let c = &sim.config;
    let _ = writeln!(md, "# qroute simulation\n");
    let _ = writeln!(
        md,
        "Dataset `{}`, train split streamed {} epoch(s), feedback {:?}, cost weight λ = {}, C = {:.6} USD, seed {}.\n",
        sim.dataset, c.epochs, c.feedback, c.cost_weight, sim.cost_scale, c.seed
    );
    md.push_str("| policy | rounds | mean reward | mean regret per round |");
    let drift = c.drift.is_some();
    if drift {
        md.push_str(" drifted model's share before | rounds to < 10% share |");
    }
    md.push_str("\n|---|---|---|---|");
    if drift {
        md.push_str("---|---|");
    }
    md.push('\n');
    for r in &sim.results {
        let _ = write!(
            md,
            "| {} | {} | {:.4} | {:.4} |",
            r.policy, r.rounds, r.mean_reward, r.mean_regret
        );
        if drift {
            let _ = write!(
                md,
                " {} | {} |",
                r.drift_share_before
                    .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
                r.drift_recovery_rounds.map_or("never".into(), |n| n.to_string())
            );
        }
        md.push('\n');
    }
    if let Some(d) = &c.drift {
        let _ = writeln!(
            md,
            "\nDrift at round {}: `{}` quality {:+}, cost ×{}.",
            d.round, d.model, d.quality_delta, d.cost_factor
        );
    }
    md.push_str("\nRegret is against the per-prompt oracle (the best single model's reward on each prompt).\n");
    if sim.results.iter().any(|r| !r.test_curve.is_empty()) {
        md.push_str(
            "\n## Held-out test split while learning\n\nEach policy's greedy choice per test prompt, \
             against what it had spent on the stream so far (all k calls with variations).\n\n\
             | policy | round | spent USD | test quality | test cost USD | test reward |\n|---|---|---|---|---|---|\n",
        );
        for r in &sim.results {
            for t in &r.test_curve {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {:.4} | {:.6} | {:.4} |",
                    r.policy, t.round, t.spent_usd, t.quality, t.cost_usd, t.reward
                );
            }
        }
    }
    std::fs::write(dir.join("report.md"), md).map_err(|e| Error::io("writing report.md", e))?;
    let series = |f: fn(&super::simulate::CurvePoint) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        sim.results
            .iter()
            .map(|r| {
                (
                    r.policy.clone(),
                    r.curve.iter().map(|p| (p.round as f64, f(p))).collect(),
                )
            })
            .collect()
    };
    let title = format!("{} (λ = {})", sim.dataset, c.cost_weight);
    series_png(
        &dir.join("learning_reward.png"),
        &title,
        "round",
        &format!("mean reward per {} rounds", c.window),
        &series(|p| p.mean_reward),
    )?;
    series_png(
        &dir.join("learning_regret.png"),
        &title,
        "round",
        &format!("mean regret per {} rounds", c.window),
        &series(|p| p.mean_regret),
    )?;
    let held_out: Vec<(String, Vec<(f64, f64)>)> = sim
        .results
        .iter()
        .filter(|r| !r.test_curve.is_empty())
        .map(|r| {
            (
                r.policy.clone(),
                r.test_curve.iter().map(|t| (t.spent_usd, t.reward)).collect(),
            )
        })
        .collect();
    if held_out.is_empty() {
        return Ok(());
    }
    series_png(
        &dir.join("test_reward_vs_spent.png"),
        &title,
        "USD spent on the stream",
        "test reward of greedy choices",
        &held_out,
    )
}
