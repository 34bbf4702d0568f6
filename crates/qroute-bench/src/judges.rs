//! `qroute judges`: how well the gateway's variation judges pick the best of
//! k answers, measured on answers real models recorded.
//!
//! The judges ([`Judge::Heuristic`], [`Judge::Agreement`]) decide which of a
//! request's variations is returned and label every model's quality for
//! learning, yet they had only been tested on hand-written strings. A routing
//! dataset that keeps each model's answer (`outcomes.MODEL.response`) next to
//! its judged quality lets us replay what a k-variation request would have
//! seen: for each prompt, draw k of the models that answered, hand their
//! recorded answers to each judge, and compare the judge's scores with the
//! recorded quality.
//!
//! Per judge the report gives:
//! - pick accuracy: how often the top-scored answer is among the best
//!   recorded quality of the k;
//! - the mean recorded quality of that pick;
//! - Kendall's τ-b between scores and quality, pooled over the pairs of
//!   answers within a row (pairs across rows compare different prompts,
//!   whose difficulty would dominate), and Spearman's ρ averaged over the
//!   rows where both the scores and the quality vary.
//!
//! Two reference rows frame the judges: "random" (a constant score, so the
//! chance of a random pick) and "oracle" (the recorded quality itself, the
//! best of k). When several answers share the top score the pick is a coin
//! toss among them, and the report counts its expected value exactly rather
//! than drawing one: that is what the gateway's first-in-order tie break
//! amounts to when the order carries no information, and it keeps the
//! numbers free of a second source of noise.

use serde::Serialize;

use qroute_core::dataset::Row;
use qroute_core::{Error, Result};
use qroute_gateway::exec::judge::{Answer, Judge};
use qroute_gateway::exec::providers::{ChatRequest, Completion};

/// The reference row that scores every answer the same (a random pick).
pub const RANDOM: &str = "random";
/// The reference row that scores every answer by its recorded quality.
pub const ORACLE: &str = "oracle";

/// One scorer's results over the measured rows.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeScore {
    /// The judge's name ([`Judge::name`]), or [`RANDOM`] / [`ORACLE`].
    pub judge: String,
    /// Expected share of rows whose pick has the best recorded quality of
    /// its k answers.
    pub pick_accuracy: f64,
    /// Expected mean recorded quality of the pick.
    pub pick_quality: f64,
    /// Mean over rows of the pick's quality minus the k answers' mean (a
    /// random pick's expected quality): the judge's gain over chance on the
    /// same draw, which cancels the draw's own luck.
    pub quality_gain: f64,
    /// Standard error of [`JudgeScore::quality_gain`] over rows, to tell a
    /// gain from noise.
    pub quality_gain_se: f64,
    /// Kendall's τ-b between score and quality over within-row pairs;
    /// `None` when the scorer never separates two answers.
    pub kendall_tau_b: Option<f64>,
    /// Spearman's ρ averaged over [`JudgeScore::spearman_rows`]; `None` when
    /// no row has both varying scores and varying quality.
    pub spearman: Option<f64>,
    /// Rows where both the scores and the quality vary (ρ is defined).
    pub spearman_rows: usize,
    /// Share of rows whose top score is shared by two or more answers, where
    /// the pick falls back to chance.
    pub top_tied: f64,
}

/// What [`measure`] found.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeReport {
    /// Answers asked for per row.
    pub k: usize,
    pub seed: u64,
    /// Rows measured: those with at least two recorded answers.
    pub rows: usize,
    /// Rows left out for having fewer than two recorded answers.
    pub skipped: usize,
    /// Fewest and most answers drawn in a measured row (below `k` where
    /// fewer models answered).
    pub min_answers: usize,
    pub max_answers: usize,
    /// Share of rows where two or more of the drawn answers share the best
    /// recorded quality (what lifts the random pick above 1/k).
    pub best_tied: f64,
    /// The judges in the order asked, then [`RANDOM`] and [`ORACLE`].
    pub judges: Vec<JudgeScore>,
}

/// Running sums for one scorer.
#[derive(Default)]
struct Tally {
    hits: f64,
    quality: f64,
    /// Sum and sum of squares of the per-row gain over a random pick.
    gain: f64,
    gain_sq: f64,
    top_tied: usize,
    /// Within-row pairs: concordant, discordant, tied in score only, tied in
    /// quality only (pairs tied in both count in neither τ-b term).
    concordant: u64,
    discordant: u64,
    score_ties: u64,
    quality_ties: u64,
    spearman_sum: f64,
    spearman_rows: usize,
}

impl Tally {
    /// Adds one row: `scores` and `quality` are in the same answer order.
    fn add(&mut self, scores: &[f64], quality: &[f64]) {
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let best = quality.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let picks: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] == top).collect();
        let n = picks.len().max(1) as f64;
        self.hits += picks.iter().filter(|&&i| quality[i] == best).count() as f64 / n;
        let picked = picks.iter().map(|&i| quality[i]).sum::<f64>() / n;
        self.quality += picked;
        let gain = picked - quality.iter().sum::<f64>() / quality.len().max(1) as f64;
        self.gain += gain;
        self.gain_sq += gain * gain;
        if picks.len() > 1 {
            self.top_tied += 1;
        }
        for i in 0..scores.len() {
            for j in i + 1..scores.len() {
                let (ds, dq) = (scores[i] - scores[j], quality[i] - quality[j]);
                match (ds == 0.0, dq == 0.0) {
                    (true, true) => {}
                    (true, false) => self.score_ties += 1,
                    (false, true) => self.quality_ties += 1,
                    (false, false) if (ds > 0.0) == (dq > 0.0) => self.concordant += 1,
                    (false, false) => self.discordant += 1,
                }
            }
        }
        if let Some(rho) = spearman(scores, quality) {
            self.spearman_sum += rho;
            self.spearman_rows += 1;
        }
    }

    fn finish(self, judge: &str, rows: usize) -> JudgeScore {
        let rows_f = rows.max(1) as f64;
        let (c, d) = (self.concordant as f64, self.discordant as f64);
        let denom = ((c + d + self.score_ties as f64) * (c + d + self.quality_ties as f64)).sqrt();
        let gain = self.gain / rows_f;
        let var = (self.gain_sq / rows_f - gain * gain).max(0.0) * rows_f / (rows_f - 1.0).max(1.0);
        JudgeScore {
            judge: judge.to_string(),
            quality_gain: gain,
            quality_gain_se: (var / rows_f).sqrt(),
            pick_accuracy: self.hits / rows_f,
            pick_quality: self.quality / rows_f,
            kendall_tau_b: (c + d > 0.0 && denom > 0.0).then(|| (c - d) / denom),
            spearman: (self.spearman_rows > 0).then(|| self.spearman_sum / self.spearman_rows as f64),
            spearman_rows: self.spearman_rows,
            top_tied: self.top_tied as f64 / rows_f,
        }
    }
}

/// Ranks from 1, ties given their average rank (what Spearman's ρ with ties
/// needs).
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's ρ (Pearson's r of the ranks); `None` when either side is
/// constant, where a correlation means nothing.
fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// SplitMix64: a few lines of seeded randomness, so the draw depends on
/// nothing but the seed (and this crate on no RNG crate).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2^-40 for any
    /// realistic model count.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct items of `from`, in random order (partial Fisher–Yates).
    fn draw(&mut self, mut from: Vec<usize>, k: usize) -> Vec<usize> {
        let k = k.min(from.len());
        for i in 0..k {
            let j = i + self.below(from.len() - i);
            from.swap(i, j);
        }
        from.truncate(k);
        from
    }
}

/// Replays `rows` through `judges`: for each row with at least two recorded
/// answers, draws `k` of the models that answered (all of them where fewer
/// did; seeded by `seed`), judges their answers as a `k`-variation request
/// to the row's prompt would be judged, and scores the judges against the
/// recorded quality. `models` names the models, indexed like each row's
/// outcomes; the judges see the names as the answers' models.
///
/// With `limit`, stops after that many measured rows (a quick look at a
/// large file).
///
/// The draw is the same for every judge, so their differences are the
/// judges' alone. Judges that need I/O (an LLM judge) run on a private
/// current-thread runtime; the free ones never wait on it.
pub fn measure(
    models: &[String],
    rows: &[&Row],
    judges: &[Judge],
    k: usize,
    seed: u64,
    limit: Option<usize>,
) -> Result<JudgeReport> {
    measure_with(models, rows, judges, &[], k, seed, limit)
}

/// A scorer that is not one of the gateway's judges, measured beside them
/// on the same draws: e.g. a policy's answer head.
pub struct Scorer<'a> {
    pub name: &'a str,
    /// Scores of the answers of models `drawn` (indices into the row's
    /// outcomes) to `row`'s prompt, in that order.
    pub score: &'a (dyn Fn(&Row, &[usize]) -> Vec<f64> + 'a),
}

/// [`measure`], with `scorers` measured after the judges.
pub fn measure_with(
    models: &[String],
    rows: &[&Row],
    judges: &[Judge],
    scorers: &[Scorer<'_>],
    k: usize,
    seed: u64,
    limit: Option<usize>,
) -> Result<JudgeReport> {
    if k < 2 {
        return Err(Error::InvalidInput(format!(
            "k = {k}: judging needs at least two answers to choose between"
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the judges' runtime", e))?;
    let mut rng = SplitMix(seed);
    let mut tallies: Vec<Tally> = (0..judges.len() + scorers.len() + 2)
        .map(|_| Tally::default())
        .collect();
    let (mut measured, mut skipped, mut best_tied) = (0usize, 0usize, 0usize);
    let (mut min_answers, mut max_answers) = (usize::MAX, 0usize);
    for row in rows {
        if limit.is_some_and(|l| measured >= l) {
            break;
        }
        let answered: Vec<usize> = (0..row.responses.len())
            .filter(|&m| row.responses[m].is_some() && m < row.outcomes.len())
            .collect();
        if answered.len() < 2 {
            skipped += 1;
            continue;
        }
        let drawn = rng.draw(answered, k);
        min_answers = min_answers.min(drawn.len());
        max_answers = max_answers.max(drawn.len());
        let completions: Vec<Completion> = drawn
            .iter()
            .map(|&m| Completion {
                text: row.responses[m].clone().unwrap_or_default(),
                finish_reason: "stop".into(),
                ..Completion::default()
            })
            .collect();
        let answers: Vec<Answer<'_>> = drawn
            .iter()
            .zip(&completions)
            .map(|(&m, completion)| Answer {
                model: models.get(m).map_or("", String::as_str),
                completion,
            })
            .collect();
        let quality: Vec<f64> = drawn.iter().map(|&m| f64::from(row.outcomes[m].quality)).collect();
        let best = quality.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if quality.iter().filter(|&&q| q == best).count() > 1 {
            best_tied += 1;
        }
        let request = ChatRequest::user(&row.prompt);
        for (judge, tally) in judges.iter().zip(&mut tallies) {
            let scores: Vec<f64> = rt
                .block_on(judge.judge(&request, &answers))
                .iter()
                .map(|j| f64::from(j.score))
                .collect();
            if scores.len() != answers.len() {
                return Err(Error::Unavailable(format!(
                    "judge {} returned {} scores for {} answers",
                    judge.name(),
                    scores.len(),
                    answers.len()
                )));
            }
            tally.add(&scores, &quality);
        }
        for (scorer, tally) in scorers.iter().zip(&mut tallies[judges.len()..]) {
            tally.add(&(scorer.score)(row, &drawn), &quality);
        }
        let n = judges.len() + scorers.len();
        tallies[n].add(&vec![0.0; quality.len()], &quality);
        tallies[n + 1].add(&quality, &quality);
        measured += 1;
    }
    let names: Vec<&str> = judges
        .iter()
        .map(|j| -> &str { j.name() })
        .chain(scorers.iter().map(|s| s.name))
        .chain([RANDOM, ORACLE])
        .collect();
    Ok(JudgeReport {
        k,
        seed,
        rows: measured,
        skipped,
        min_answers: if measured == 0 { 0 } else { min_answers },
        max_answers,
        best_tied: best_tied as f64 / measured.max(1) as f64,
        judges: tallies
            .into_iter()
            .zip(names)
            .map(|(t, name)| t.finish(name, measured))
            .collect(),
    })
}

/// The report as a Markdown table, `title` (the dataset and split) first.
pub fn markdown(report: &JudgeReport, title: &str) -> String {
    let drawn = if report.min_answers == report.max_answers {
        format!("{}", report.max_answers)
    } else {
        format!("{}–{}", report.min_answers, report.max_answers)
    };
    let mut s = format!(
        "{title}: {} rows, k = {} ({drawn} answers drawn per row, seed {}), {} rows without two answers skipped; \
         the best recorded quality is shared in {:.1}% of rows.\n\n\
         | judge | pick accuracy | quality of pick | gain over random (± s.e.) | Kendall τ-b (within rows) | Spearman ρ (mean per row) | top score tied |\n\
         |---|---|---|---|---|---|---|\n",
        report.rows,
        report.k,
        report.seed,
        report.skipped,
        100.0 * report.best_tied
    );
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:+.3}"));
    for j in &report.judges {
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:+.3} ± {:.3} | {} | {} (n={}) | {:.1}% |\n",
            j.judge,
            j.pick_accuracy,
            j.pick_quality,
            j.quality_gain,
            j.quality_gain_se,
            opt(j.kendall_tau_b),
            opt(j.spearman),
            j.spearman_rows,
            100.0 * j.top_tied
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use qroute_core::dataset::ModelOutcome;

    fn row(prompt: &str, answers: &[(Option<&str>, f32)]) -> Row {
        Row {
            id: prompt.into(),
            task: "t".into(),
            split: "test".into(),
            prompt: prompt.into(),
            outcomes: answers
                .iter()
                .map(|&(_, quality)| ModelOutcome {
                    quality,
                    cost_usd: 0.0,
                    latency_ms: None,
                })
                .collect(),
            responses: answers.iter().map(|(a, _)| a.map(String::from)).collect(),
        }
    }

    fn models() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn score<'a>(r: &'a JudgeReport, name: &str) -> &'a JudgeScore {
        r.judges.iter().find(|j| j.judge == name).unwrap()
    }

    /// Arithmetic rows where the majority is right and a refusal is wrong:
    /// agreement must always pick a right answer, the heuristic must avoid
    /// the refusal, and the reference rows must be what they claim.
    #[test]
    fn known_answers() {
        let rows = [
            row(
                "What is 2 + 3?",
                &[(Some("2 + 3 = 5"), 1.0), (Some("It is 5."), 1.0), (Some("6"), 0.0)],
            ),
            row(
                "What is 7 * 6?",
                &[
                    (Some("42"), 1.0),
                    (Some("I can't help with that."), 0.0),
                    (Some("The answer is 42"), 1.0),
                ],
            ),
            row(
                "What is 9 - 4?",
                &[(Some("9 - 4 = 3"), 0.0), (Some("5"), 1.0), (Some("That gives 5"), 1.0)],
            ),
            // Too few answers: skipped.
            row("What is 1 + 1?", &[(Some("2"), 1.0), (None, 0.0), (None, 0.0)]),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let r = measure(&models(), &refs, &[Judge::Heuristic, Judge::Agreement], 3, 7, None).unwrap();
        assert_eq!((r.rows, r.skipped, r.min_answers, r.max_answers), (3, 1, 3, 3));
        assert_eq!(r.judges.len(), 4);
        // Every row has two best answers of three.
        assert!((r.best_tied - 1.0).abs() < 1e-12);

        let agreement = score(&r, "agreement");
        assert!((agreement.pick_accuracy - 1.0).abs() < 1e-12, "{agreement:?}");
        assert!((agreement.pick_quality - 1.0).abs() < 1e-12);
        // Agreement scores are 2/3, 2/3, 1/3 in quality order: every
        // separated pair is concordant.
        assert!((agreement.kendall_tau_b.unwrap() - 1.0).abs() < 1e-12);

        // The heuristic tells apart only the refusal: a certain hit in row 2,
        // a 2-in-3 coin toss in rows 1 and 3.
        let heuristic = score(&r, "heuristic");
        assert!((heuristic.pick_accuracy - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((heuristic.top_tied - 1.0).abs() < 1e-12);
        assert_eq!(heuristic.spearman_rows, 1);
        assert!(heuristic.spearman.unwrap() > 0.0);

        let random = score(&r, RANDOM);
        assert!((random.pick_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((random.pick_quality - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(random.kendall_tau_b, None);
        assert_eq!(random.spearman, None);

        let oracle = score(&r, ORACLE);
        assert!((oracle.pick_accuracy - 1.0).abs() < 1e-12);
        assert!((oracle.pick_quality - 1.0).abs() < 1e-12);
        assert_eq!(oracle.kendall_tau_b, Some(1.0));
        assert_eq!(oracle.spearman, Some(1.0));

        let md = markdown(&r, "tiny");
        // Agreement gains 1/3 over the random pick's 2/3 in every row.
        assert!((agreement.quality_gain - 1.0 / 3.0).abs() < 1e-12);
        assert!(agreement.quality_gain_se < 1e-6);
        assert!(random.quality_gain.abs() < 1e-12);
        assert!(
            md.contains("| agreement | 1.000 | 1.000 | +0.333 ± 0.000 | +1.000 |"),
            "{md}"
        );
    }

    /// A judge that prefers the wrong answer gets a negative correlation.
    #[test]
    fn anti_correlated_judge() {
        let rows = [row(
            "Say hi",
            &[(Some("I cannot do that."), 1.0), (Some("Hello there!"), 0.0)],
        )];
        let refs: Vec<&Row> = rows.iter().collect();
        let r = measure(&models(), &refs, &[Judge::Heuristic], 2, 0, None).unwrap();
        let h = score(&r, "heuristic");
        assert_eq!(h.pick_accuracy, 0.0);
        assert_eq!(h.kendall_tau_b, Some(-1.0));
        assert_eq!(h.spearman, Some(-1.0));
    }

    #[test]
    fn draws_are_seeded_distinct_and_capped() {
        let rows: Vec<Row> = (0..50)
            .map(|i| {
                row(
                    &format!("q{i}"),
                    &[(Some("x"), 0.1), (Some("yy"), 0.5), (Some("zzz"), 0.9)],
                )
            })
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let a = measure(&models(), &refs, &[Judge::Heuristic], 2, 1, None).unwrap();
        let b = measure(&models(), &refs, &[Judge::Heuristic], 2, 1, None).unwrap();
        assert_eq!(score(&a, RANDOM).pick_quality, score(&b, RANDOM).pick_quality);
        assert_eq!((a.min_answers, a.max_answers), (2, 2));
        // k above the models that answered draws all of them.
        let all = measure(&models(), &refs, &[Judge::Heuristic], 5, 1, None).unwrap();
        assert_eq!((all.min_answers, all.max_answers), (3, 3));
        assert!((score(&all, RANDOM).pick_quality - 0.5).abs() < 1e-6);
        assert!(measure(&models(), &refs, &[Judge::Heuristic], 1, 1, None).is_err());
        let few = measure(&models(), &refs, &[Judge::Heuristic], 2, 1, Some(4)).unwrap();
        assert_eq!(few.rows, 4);

        let mut rng = SplitMix(3);
        for _ in 0..100 {
            let mut d = rng.draw((0..11).collect(), 5);
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 5);
        }
    }

    #[test]
    fn spearman_with_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 1.0], &[0.0, 1.0]), None);
    }
}
