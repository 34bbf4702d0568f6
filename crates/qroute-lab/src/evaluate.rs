//! `qroute evaluate`: sweep a policy over operating points on a split and
//! measure its cost–quality curve against the single models and the oracle.

use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use super::metrics::{aiq, c95, mean_of_choices, mean_point, q_at_best, single_model_points, CostQuality};
use qroute_core::catalog::ModelCard;
use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::Featurizer;
use qroute_core::policy::explore::argmax;
use qroute_core::policy::{DqnPolicy, OperatingPoint, Policy, Prediction};
use qroute_core::{Error, Result};
use qroute_learn::offline::row_request;

/// The three numbers of one router.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub aiq: f64,
    /// `None` when 95% of the best single model's quality is never reached.
    pub c95: Option<f64>,
    pub q_at_best: f64,
}

impl Summary {
    pub fn of(router: &[CostQuality], singles: &[CostQuality]) -> Summary {
        Summary {
            aiq: aiq(router, singles),
            c95: c95(router, singles),
            q_at_best: q_at_best(router, singles),
        }
    }
}

/// The router at one operating point.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub point: usize,
    pub cost_weight: f32,
    pub cost: f64,
    pub quality: f64,
    /// Share of prompts sent to each model, indexed like `models`.
    pub shares: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SingleModel {
    pub model: String,
    pub cost: f64,
    pub quality: f64,
}

/// Everything `evaluate` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub dataset: String,
    pub split: String,
    pub policy_version: u64,
    pub prompts: usize,
    pub models: Vec<String>,
    pub points: Vec<PointResult>,
    pub singles: Vec<SingleModel>,
    /// Per prompt the best quality, the cheapest model among ties.
    pub oracle: CostQuality,
    pub router: Summary,
    pub single_models: Summary,
    /// The oracle swept over cost weights with true outcomes.
    pub oracle_sweep: Summary,
    #[serde(skip)]
    pub ids: Vec<String>,
    /// `choices[point][prompt]`: index into `models`.
    #[serde(skip)]
    pub choices: Vec<Vec<usize>>,
    #[serde(skip)]
    pub oracle_curve: Vec<CostQuality>,
}

impl Evaluation {
    pub fn curve(&self) -> Vec<CostQuality> {
        self.points
            .iter()
            .map(|p| CostQuality::new(p.cost, p.quality))
            .collect()
    }

    pub fn single_points(&self) -> Vec<CostQuality> {
        self.singles
            .iter()
            .map(|s| CostQuality::new(s.cost, s.quality))
            .collect()
    }
}

/// The policy's cards for the dataset's models, in dataset order.
pub fn cards_for<'p>(policy: &'p DqnPolicy, ds: &Dataset) -> Result<Vec<&'p ModelCard>> {
    ds.models
        .iter()
        .map(|m| {
            policy.catalog.get(m).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "model `{m}` of {} is not in the policy's catalog ({})",
                    ds.path.display(),
                    policy.catalog.ids().join(", ")
                ))
            })
        })
        .collect()
}

/// Predictions for every row, in row order.
pub fn predict_rows(policy: &DqnPolicy, cards: &[&ModelCard], rows: &[&Row]) -> Result<Vec<Vec<Prediction>>> {
    let fz = Featurizer::new(policy.spec.clone())?;
    rows.par_iter()
        .map(|r| {
            let x = fz.featurize(&row_request(r));
            let mut out = Vec::with_capacity(cards.len());
            policy.predict(&x, cards, &mut out)?;
            Ok(out)
        })
        .collect()
}

/// Sweeps `points` (cost weights, cheapest first) over `split`.
pub fn evaluate(policy: &DqnPolicy, ds: &Dataset, split: &str, points: &[f32]) -> Result<Evaluation> {
    let rows = ds.split(split);
    if rows.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no rows in split `{split}`",
            ds.path.display()
        )));
    }
    let cards = cards_for(policy, ds)?;
    let preds = predict_rows(policy, &cards, &rows)?;
    let k = ds.models.len();
    let mut results = Vec::with_capacity(points.len());
    let mut choices = Vec::with_capacity(points.len());
    for (i, &lambda) in points.iter().enumerate() {
        let op = OperatingPoint::cost(lambda);
        let chosen: Vec<usize> = preds
            .iter()
            .map(|p| argmax(&p.iter().map(|x| x.score(op)).collect::<Vec<_>>()))
            .collect();
        let cq = mean_of_choices(rows.iter().copied().zip(chosen.iter().copied()));
        let mut shares = vec![0.0; k];
        for &c in &chosen {
            shares[c] += 1.0 / rows.len() as f64;
        }
        results.push(PointResult {
            point: i,
            cost_weight: lambda,
            cost: cq.cost,
            quality: cq.quality,
            shares,
        });
        choices.push(chosen);
    }
    let single_points = single_model_points(&rows, k);
    let singles = ds
        .models
        .iter()
        .zip(&single_points)
        .map(|(m, p)| SingleModel {
            model: m.clone(),
            cost: p.cost,
            quality: p.quality,
        })
        .collect();
    let oracle = mean_point(rows.iter().copied(), oracle_choice(0.0));
    let oracle_curve = oracle_sweep(&rows, &single_points);
    let curve: Vec<CostQuality> = results.iter().map(|p| CostQuality::new(p.cost, p.quality)).collect();
    Ok(Evaluation {
        dataset: ds.path.display().to_string(),
        split: split.to_string(),
        policy_version: policy.version,
        prompts: rows.len(),
        models: ds.models.clone(),
        router: Summary::of(&curve, &single_points),
        single_models: Summary::of(&single_points, &single_points),
        oracle_sweep: Summary::of(&oracle_curve, &single_points),
        points: results,
        singles,
        oracle,
        ids: rows.iter().map(|r| r.id.clone()).collect(),
        choices,
        oracle_curve,
    })
}

/// Per row, the model maximising `quality − λ·cost/C` on the true outcomes
/// (cheapest among ties), C being the dearest single model's mean cost.
fn oracle_choice(lambda_over_c: f64) -> impl FnMut(&Row) -> usize {
    move |r: &Row| {
        let mut best = 0;
        let val = |o: &qroute_core::dataset::ModelOutcome| o.quality as f64 - lambda_over_c * o.cost_usd;
        for (i, o) in r.outcomes.iter().enumerate() {
            let b = &r.outcomes[best];
            if val(o) > val(b) || (val(o) == val(b) && o.cost_usd < b.cost_usd) {
                best = i;
            }
        }
        best
    }
}

fn oracle_sweep(rows: &[&Row], singles: &[CostQuality]) -> Vec<CostQuality> {
    let c = singles.iter().map(|s| s.cost).fold(0.0, f64::max).max(1e-12);
    (0..=200)
        .map(|i| {
            let lambda = if i == 200 {
                1e9
            } else {
                10f64.powf(-3.0 + 6.0 * i as f64 / 200.0)
            };
            mean_point(rows.iter().copied(), oracle_choice(lambda / c))
        })
        .chain(std::iter::once(mean_point(rows.iter().copied(), oracle_choice(0.0))))
        .collect()
}

/// One line `{"id", "point", "model", "cost_weight"}` per prompt per point.
pub fn write_decisions(eval: &Evaluation, path: &Path) -> Result<()> {
    let mut w = BufWriter::new(crate::create_file(path)?);
    #[derive(Serialize)]
    struct Line<'a> {
        id: &'a str,
        point: usize,
        model: &'a str,
        cost_weight: f32,
    }
    for (p, chosen) in eval.choices.iter().enumerate() {
        for (id, &m) in eval.ids.iter().zip(chosen) {
            let line = Line {
                id,
                point: p,
                model: &eval.models[m],
                cost_weight: eval.points[p].cost_weight,
            };
            serde_json::to_writer(&mut w, &line).map_err(|e| Error::io("writing decisions", e.into()))?;
            w.write_all(b"\n").map_err(|e| Error::io("writing decisions", e))?;
        }
    }
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
