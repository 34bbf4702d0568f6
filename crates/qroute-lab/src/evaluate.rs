//! `qroute evaluate`: sweep a policy over operating points on a split and
//! measure its cost–quality curve against the single models and the oracle,
//! routing plainly or as a cascade over the recorded answers.

use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use qroute_core::catalog::ModelCard;
use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::Featurizer;
use qroute_core::frontier::{aiq, c95, mean_of_choices, mean_point, q_at_best, single_model_points, CostQuality};
use qroute_core::policy::answer::AnswerHead;
use qroute_core::policy::cascade::{best_answer, next_call};
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

/// How the sweep decides each prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// One model per prompt: the policy's choice.
    Route,
    /// The plain choice first, then (`qroute_core::policy::cascade`) more
    /// models while the answers so far, valued by the policy's answer head
    /// on the recorded responses, are worth less than another model's
    /// expected quality net of its cost; at most `max_calls` models.
    Cascade { max_calls: usize },
}

/// One prompt's decision at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The model whose answer is kept (index into `models`).
    pub model: usize,
    /// Every model paid for, in call order; `[model]` when routing plainly.
    pub called: Vec<usize>,
}

/// The router at one operating point.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub point: usize,
    pub cost_weight: f32,
    /// Mean over prompts of the summed cost of every model called.
    pub cost: f64,
    pub quality: f64,
    /// Share of prompts whose kept answer is each model's, indexed like
    /// `models`.
    pub shares: Vec<f64>,
    /// Mean models called per prompt (1 when routing plainly).
    pub calls: f64,
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
    pub mode: Mode,
    pub prompts: usize,
    /// Prompts with no recorded answer, which a cascade routes plainly (as
    /// it does any prompt whose first model's answer was not recorded).
    pub unanswered: usize,
    pub models: Vec<String>,
    pub points: Vec<PointResult>,
    pub singles: Vec<SingleModel>,
    /// Per prompt the best quality, the cheapest model among ties.
    pub oracle: CostQuality,
    pub router: Summary,
    pub single_models: Summary,
    /// The oracle swept over cost weights with true outcomes.
    pub oracle_sweep: Summary,
    /// For a cascade: plain routing by the same policy at the same points,
    /// to compare with.
    pub plain: Option<Summary>,
    #[serde(skip)]
    pub plain_curve: Vec<CostQuality>,
    #[serde(skip)]
    pub ids: Vec<String>,
    /// `decisions[point][prompt]`.
    #[serde(skip)]
    pub decisions: Vec<Vec<Decision>>,
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

/// Sweeps `points` (cost weights, cheapest first) over `split`, routing
/// plainly.
pub fn evaluate(policy: &DqnPolicy, ds: &Dataset, split: &str, points: &[f32]) -> Result<Evaluation> {
    evaluate_with(policy, ds, split, points, Mode::Route)
}

/// Sweeps `points` over `split` in `mode`. A cascade needs the policy's
/// answer head (trained from recorded answers) and answers in the split.
pub fn evaluate_with(policy: &DqnPolicy, ds: &Dataset, split: &str, points: &[f32], mode: Mode) -> Result<Evaluation> {
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
    let plain_choices: Vec<Vec<usize>> = points
        .iter()
        .map(|&lambda| preds.iter().map(|p| plain_choice(p, lambda)).collect())
        .collect();
    let (decisions, unanswered) = match mode {
        Mode::Route => (
            plain_choices
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|&m| Decision {
                            model: m,
                            called: vec![m],
                        })
                        .collect()
                })
                .collect(),
            0,
        ),
        Mode::Cascade { max_calls } => cascade_decisions(policy, ds, &rows, &preds, points, max_calls)?,
    };
    let mut results = Vec::with_capacity(points.len());
    for (i, (&lambda, chosen)) in points.iter().zip(&decisions).enumerate() {
        let (mut cost, mut quality, mut calls) = (0.0, 0.0, 0usize);
        let mut shares = vec![0.0; k];
        for (r, d) in rows.iter().zip(chosen) {
            cost += d.called.iter().map(|&m| r.outcomes[m].cost_usd).sum::<f64>();
            quality += f64::from(r.outcomes[d.model].quality);
            calls += d.called.len();
            shares[d.model] += 1.0 / rows.len() as f64;
        }
        let n = rows.len() as f64;
        results.push(PointResult {
            point: i,
            cost_weight: lambda,
            cost: cost / n,
            quality: quality / n,
            shares,
            calls: calls as f64 / n,
        });
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
    let plain_curve: Vec<CostQuality> = match mode {
        Mode::Route => Vec::new(),
        Mode::Cascade { .. } => plain_choices
            .iter()
            .map(|c| mean_of_choices(rows.iter().copied().zip(c.iter().copied())))
            .collect(),
    };
    Ok(Evaluation {
        dataset: ds.path.display().to_string(),
        split: split.to_string(),
        policy_version: policy.version,
        mode,
        prompts: rows.len(),
        unanswered,
        models: ds.models.clone(),
        router: Summary::of(&curve, &single_points),
        single_models: Summary::of(&single_points, &single_points),
        oracle_sweep: Summary::of(&oracle_curve, &single_points),
        plain: (!plain_curve.is_empty()).then(|| Summary::of(&plain_curve, &single_points)),
        plain_curve,
        points: results,
        singles,
        oracle,
        ids: rows.iter().map(|r| r.id.clone()).collect(),
        decisions,
        oracle_curve,
    })
}

/// The policy's greedy choice at cost weight `lambda`.
fn plain_choice(preds: &[Prediction], lambda: f32) -> usize {
    let op = OperatingPoint::cost(lambda);
    argmax(&preds.iter().map(|x| x.score(op)).collect::<Vec<_>>())
}

/// Every point's cascade decisions, and how many prompts had no recorded
/// answer to judge (those are routed plainly).
fn cascade_decisions(
    policy: &DqnPolicy,
    ds: &Dataset,
    rows: &[&Row],
    preds: &[Vec<Prediction>],
    points: &[f32],
    max_calls: usize,
) -> Result<(Vec<Vec<Decision>>, usize)> {
    let head: &AnswerHead = policy.answer_head.as_ref().ok_or_else(|| {
        Error::InvalidInput(
            "--strategy cascade: the policy has no answer head; train it on data with recorded answers (`response`)"
                .into(),
        )
    })?;
    if max_calls == 0 {
        return Err(Error::InvalidInput("--max-calls: must be at least 1".into()));
    }
    let unanswered = rows.iter().filter(|r| r.responses.iter().all(Option::is_none)).count();
    if unanswered == rows.len() {
        return Err(Error::InvalidInput(format!(
            "--strategy cascade: {} records no answers (`response`) in this split, so a cascade has nothing to judge",
            ds.path.display()
        )));
    }
    // What the head makes of each recorded answer, once.
    let valued: Vec<Vec<Option<f32>>> = rows
        .par_iter()
        .zip(preds)
        .map(|(r, p)| {
            r.responses
                .iter()
                .enumerate()
                .map(|(m, a)| {
                    a.as_deref()
                        .map(|a| head.predict(&ds.models[m], p[m].quality, &r.prompt, a))
                })
                .collect()
        })
        .collect();
    let decisions = points
        .iter()
        .map(|&lambda| {
            preds
                .iter()
                .zip(&valued)
                .map(|(p, v)| cascade(p, v, lambda, max_calls))
                .collect()
        })
        .collect();
    Ok((decisions, unanswered))
}

/// One prompt's cascade at cost weight `lambda`, given the head's value of
/// each model's recorded answer (`None`: not recorded). Without a recorded
/// answer from the first model there is nothing to judge: it is a plain
/// routing decision.
fn cascade(preds: &[Prediction], valued: &[Option<f32>], lambda: f32, max_calls: usize) -> Decision {
    let op = OperatingPoint::cost(lambda);
    let first = plain_choice(preds, lambda);
    let Some(first_value) = valued[first] else {
        return Decision {
            model: first,
            called: vec![first],
        };
    };
    let mut called = vec![first];
    let mut answers = vec![(first, first_value)];
    while let Some((_, best)) = best_answer(&answers) {
        let Some(next) = next_call(preds, &called, best, op, max_calls) else {
            break;
        };
        called.push(next);
        // An answer the data did not record is valued at the router's
        // prompt-only estimate.
        answers.push((next, valued[next].unwrap_or(preds[next].quality)));
    }
    let model = best_answer(&answers).map_or(first, |a| a.0);
    Decision { model, called }
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

/// One line `{"id", "point", "model", "cost_weight"}` per prompt per point;
/// a cascade's lines add `"called"`, every model paid for.
pub fn write_decisions(eval: &Evaluation, path: &Path) -> Result<()> {
    let mut w = BufWriter::new(crate::create_file(path)?);
    #[derive(Serialize)]
    struct Line<'a> {
        id: &'a str,
        point: usize,
        model: &'a str,
        cost_weight: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        called: Option<Vec<&'a str>>,
    }
    let cascade = matches!(eval.mode, Mode::Cascade { .. });
    for (p, chosen) in eval.decisions.iter().enumerate() {
        for (id, d) in eval.ids.iter().zip(chosen) {
            let line = Line {
                id,
                point: p,
                model: &eval.models[d.model],
                cost_weight: eval.points[p].cost_weight,
                called: cascade.then(|| d.called.iter().map(|&m| eval.models[m].as_str()).collect()),
            };
            serde_json::to_writer(&mut w, &line).map_err(|e| Error::io("writing decisions", e.into()))?;
            w.write_all(b"\n").map_err(|e| Error::io("writing decisions", e))?;
        }
    }
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
