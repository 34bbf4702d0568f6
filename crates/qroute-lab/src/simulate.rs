//! `qroute simulate`: online learning under bandit feedback, on a dataset
//! streamed as traffic. Each policy sees only the outcomes of the models it
//! ran; the simulator holds the full table and never hands it over.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::bandits::{
    draw_without_replacement, BanditPolicy, BestSingle, Feedback, Linear, LinearRule, Pick, Projection, Step, Uniform,
};
use qroute_core::catalog::ModelCard;
use qroute_core::dataset::{Dataset, Row};
use qroute_core::features::{Features, Featurizer};
use qroute_core::policy::cascade::{best_answer, next_call};
use qroute_core::policy::explore::distribution;
use qroute_core::policy::{DqnPolicy, Exploration, OperatingPoint, Policy, Prediction};
use qroute_core::record::{DecisionRecord, Experience, Outcome};
use qroute_core::store::ExperienceStore;
use qroute_core::store::Sampling;
use qroute_core::{Error, Result};
use qroute_learn::answer_head::OnlineHead;
use qroute_learn::offline::{featurize_rows, initial_policy, OfflineConfig};
use qroute_learn::online::{learn_from, Labels};
use qroute_learn::{Learner, LearnerConfig};
use qroute_store::SledStore;

/// How many models run per prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum FeedbackMode {
    /// One model; its outcome is all the policy sees.
    Bandit,
    /// `k` models in parallel; the best answer is returned, all `k` costs are paid.
    Variations(usize),
    /// A cascade of at most this many models: the policy's pick first, then
    /// more while the policy (reading the recorded answers) says so; the
    /// answer it keeps is returned and every model run is paid for. Only
    /// the DQN reads answers; the baselines run one model.
    Cascade(usize),
}

impl FeedbackMode {
    pub fn parse(s: &str) -> Result<FeedbackMode> {
        match s {
            "bandit" => Ok(FeedbackMode::Bandit),
            "cascade" => Ok(FeedbackMode::Cascade(qroute_core::policy::cascade::DEFAULT_MAX_CALLS)),
            _ => {
                let k = |prefix: &str| {
                    s.strip_prefix(prefix)
                        .and_then(|k| k.parse::<usize>().ok())
                        .filter(|&k| k >= 1)
                };
                match (k("variations="), k("cascade=")) {
                    (Some(k), _) => Ok(FeedbackMode::Variations(k)),
                    (_, Some(n)) => Ok(FeedbackMode::Cascade(n)),
                    _ => Err(Error::InvalidInput(format!(
                        "--feedback `{s}`: expected `bandit`, `variations=K` or `cascade[=N]`"
                    ))),
                }
            }
        }
    }

    pub fn k(&self) -> usize {
        match self {
            FeedbackMode::Bandit | FeedbackMode::Cascade(_) => 1,
            FeedbackMode::Variations(k) => *k,
        }
    }
}

/// A change of the world mid-stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// From this round (1-based) on.
    pub round: usize,
    pub model: String,
    /// Added to the model's quality (clamped to [0, 1]).
    pub quality_delta: f32,
    /// Multiplies the model's cost.
    pub cost_factor: f64,
}

impl Drift {
    /// `round=R,model=M[,quality=Δ][,cost=F]`.
    pub fn parse(s: &str) -> Result<Drift> {
        let mut d = Drift {
            round: 0,
            model: String::new(),
            quality_delta: 0.0,
            cost_factor: 1.0,
        };
        let bad = |m: String| Error::InvalidInput(format!("--drift `{s}`: {m}"));
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            match k.trim() {
                "round" => d.round = v.parse().map_err(|_| bad(format!("round `{v}`")))?,
                "model" => d.model = v.to_string(),
                "quality" => d.quality_delta = v.parse().map_err(|_| bad(format!("quality `{v}`")))?,
                "cost" => d.cost_factor = v.parse().map_err(|_| bad(format!("cost `{v}`")))?,
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        if d.round == 0 || d.model.is_empty() {
            return Err(bad("needs round=R and model=M".into()));
        }
        Ok(d)
    }
}

/// Which policies to run.
pub const POLICIES: [&str; 6] = ["dqn", "uniform", "best-single", "egreedy-linear", "linucb", "thompson"];

#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    pub feedback: FeedbackMode,
    /// λ of `quality − λ·cost/C`.
    pub cost_weight: f32,
    pub epochs: usize,
    pub shuffle_seed: Option<u64>,
    pub seed: u64,
    /// Rounds per point of the learning curve.
    pub window: usize,
    pub policies: Vec<String>,
    pub drift: Option<Drift>,
    /// DQN: replay batch per round.
    pub batch: usize,
    /// DQN: steps between published snapshots. 1, like the gateway's
    /// `learning.publish_every`: a snapshot ten rounds stale keeps choosing
    /// what the last rounds taught against (AlpacaEval, 3 seeds, λ = 1: mean
    /// regret 0.082 publishing every 10 steps, 0.066 every step).
    pub publish_every: u64,
    /// Dimension of the random projection the linear baselines use.
    pub projection_dim: usize,
    /// DQN: SquareCB's γ at round t is `dqn_gamma·√t`. 300: the DQN's
    /// scores are rewards in quality units, and a gap of 0.05 should leave a
    /// model about 1/(K + 15·√t) of the rounds; γ₀ 30 explored ten times as
    /// much and paid for it in regret (AlpacaEval, 3 seeds, λ = 0.1 / 0.5 /
    /// 1, earlier learning rule, publishing every 10 steps: 0.072 / 0.081 /
    /// 0.088 at γ₀ 30, 0.054 / 0.067 / 0.081 at 300; with the current rule
    /// and 6 seeds, 100 and 500 were worse than 300 at some λ).
    pub dqn_gamma: f32,
    /// DQN: gradient steps per round.
    pub dqn_steps: usize,
    /// DQN: the learning rule (the online trainer's by default, so the
    /// simulator measures what the gateway does).
    pub dqn_learner: LearnerConfig,
    /// Evaluate every policy's greedy choices on the test split every this
    /// many rounds (and at the end); `None`: no held-out curve.
    pub eval_every: Option<usize>,
    /// Keep the DQN's experience log (decisions with propensities, and
    /// outcomes) in this store directory, for off-policy evaluation;
    /// `None`: a temporary store.
    pub log_dir: Option<std::path::PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            feedback: FeedbackMode::Bandit,
            cost_weight: 0.5,
            epochs: 1,
            shuffle_seed: None,
            seed: 1,
            window: 500,
            policies: POLICIES.iter().map(|s| s.to_string()).collect(),
            drift: None,
            batch: 64,
            publish_every: 1,
            projection_dim: 64,
            dqn_gamma: 300.0,
            dqn_steps: 1,
            dqn_learner: LearnerConfig::online(),
            eval_every: None,
            log_dir: None,
        }
    }
}

/// qroute's DQN as a bandit policy, learning through the same pieces as
/// the server: decisions and outcomes go into a sled store, the learner
/// samples it (recency-weighted) and steps, and choices come from the last
/// published snapshot.
pub struct DqnBandit {
    learner: Learner,
    snapshot: DqnPolicy,
    store: SledStore,
    _dir: tempfile::TempDir,
    cards: Vec<ModelCard>,
    point: OperatingPoint,
    rng: ChaCha8Rng,
    batch: usize,
    publish_every: u64,
    steps: u64,
    rounds: u64,
    gamma0: f32,
    steps_per_round: usize,
    floor: f32,
    last_dist: Vec<f32>,
    /// Values answers in cascades, learned from the answers it ran.
    head: OnlineHead,
}

impl DqnBandit {
    pub fn new(policy: DqnPolicy, point: OperatingPoint, cfg: &SimConfig) -> Result<DqnBandit> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("creating the simulator's store", e))?;
        let store = SledStore::open(match &cfg.log_dir {
            Some(d) => d.clone(),
            None => dir.path().join("experiences"),
        })?;
        let cards = policy.catalog.models.clone();
        let head = OnlineHead::new(&cards.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        let learner_cfg = cfg.dqn_learner.clone();
        let snapshot = policy.clone();
        Ok(DqnBandit {
            learner: Learner::new(policy, learner_cfg, cfg.seed),
            snapshot,
            store,
            _dir: dir,
            cards,
            point,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xd9),
            batch: cfg.batch,
            publish_every: cfg.publish_every,
            steps: 0,
            rounds: 0,
            gamma0: cfg.dqn_gamma,
            steps_per_round: cfg.dqn_steps.max(1),
            floor: 0.002,
            last_dist: Vec::new(),
            head,
        })
    }

    /// The policy as last published.
    pub fn policy(&self) -> &DqnPolicy {
        &self.snapshot
    }

    /// The last published snapshot's predictions for every model.
    fn predictions(&self, x: &Features) -> Vec<Prediction> {
        let cards: Vec<&ModelCard> = self.cards.iter().collect();
        let mut preds = Vec::with_capacity(cards.len());
        if self.snapshot.predict(x, &cards, &mut preds).is_err() {
            preds = vec![Prediction::default(); cards.len()];
        }
        preds
    }

    pub fn store(&self) -> &SledStore {
        &self.store
    }
}

impl BanditPolicy for DqnBandit {
    fn name(&self) -> &str {
        "dqn"
    }

    fn choose(&mut self, _: &str, x: &Features, k: usize) -> Pick {
        let cards: Vec<&ModelCard> = self.cards.iter().collect();
        let scores = self
            .snapshot
            .scores(x, &cards, self.point)
            .unwrap_or_else(|_| vec![0.0; cards.len()]);
        // SquareCB's γ grows as √t (Foster & Rakhlin): explore less as the
        // estimates sharpen.
        self.rounds += 1;
        let gamma = self.gamma0 * (self.rounds as f32).sqrt().max(1.0);
        self.last_dist = distribution(Exploration::SquareCb { gamma }, self.floor, &scores);
        draw_without_replacement(&self.last_dist, k, &mut self.rng)
    }

    /// The highest score of the last published snapshot.
    fn best(&mut self, _: &str, x: &Features) -> usize {
        let cards: Vec<&ModelCard> = self.cards.iter().collect();
        let scores = self
            .snapshot
            .scores(x, &cards, self.point)
            .unwrap_or_else(|_| vec![0.0; cards.len()]);
        qroute_core::policy::explore::argmax(&scores)
    }

    /// The gateway's cascade rule (`qroute_core::policy::cascade`) with the
    /// online head valuing the answers.
    fn cascade_step(&mut self, prompt: &str, x: &Features, answers: &[(usize, &str)], max_calls: usize) -> Step {
        let preds = self.predictions(x);
        let valued: Vec<(usize, f32)> = answers
            .iter()
            .enumerate()
            .map(|(i, &(m, a))| (i, self.head.value(m, preds[m].quality, prompt, a)))
            .collect();
        let Some((best, value)) = best_answer(&valued) else {
            return Step::Keep(0);
        };
        let called: Vec<usize> = answers.iter().map(|a| a.0).collect();
        match next_call(&preds, &called, value, self.point, max_calls) {
            Some(m) => Step::Call(m),
            None => Step::Keep(best),
        }
    }

    fn learn_answer(&mut self, prompt: &str, x: &Features, model: usize, answer: &str, quality: f32) {
        let prompt_quality = self.predictions(x)[model].quality;
        self.head.observe(model, prompt_quality, prompt, answer, quality);
    }

    fn learn(&mut self, id: &str, x: &Features, pick: &Pick, feedback: &[Feedback]) {
        // The same prompt comes back every epoch: one record per round.
        let request_id = format!("{id}/{}", self.rounds);
        let decision = DecisionRecord {
            request_id: request_id.clone(),
            time_ms: self.steps,
            features: x.clone(),
            candidates: self.cards.iter().map(|c| c.id.clone()).collect(),
            propensities: self.last_dist.clone(),
            chosen: pick.models.iter().map(|&m| self.cards[m].id.clone()).collect(),
            policy_version: self.snapshot.version,
            cost_weight: self.point.cost_weight,
            latency_weight: self.point.latency_weight,
            task: None,
            experiment: None,
            shadow: None,
        };
        let outcomes: Vec<Outcome> = feedback
            .iter()
            .map(|f| Outcome {
                request_id: request_id.clone(),
                model: self.cards[f.model].id.clone(),
                quality: Some(f.quality),
                cost_usd: f.cost_usd,
                latency_ms: f.latency_ms.unwrap_or(0.0),
                error: None,
                time_ms: self.steps,
                ttft_ms: None,
            })
            .collect();
        let newest = Arc::new(Experience {
            decision,
            outcomes,
            feedback: None,
        });
        let logged = self
            .store
            .append_decisions(std::slice::from_ref(&newest.decision))
            .and_then(|_| self.store.record_outcomes(&newest.outcomes));
        if let Err(e) = logged {
            tracing::warn!(error = %e, "simulator could not log an experience");
            return;
        }
        // Recency: half the weight on roughly the last quarter of the log
        // (at least 256, at most 2000 rounds), so a changed world is followed
        // within a few hundred rounds.
        let half_life = (self.store.len() / 4).clamp(256, 2_000);
        for _ in 0..self.steps_per_round {
            // Combined experience replay (Zhang & Sutton, 2017): the newest
            // experience joins every sampled batch, so a new kind of prompt
            // is learned from at once rather than when replay happens on it.
            let mut batch = self
                .store
                .sample(
                    self.batch.saturating_sub(1),
                    &Sampling::Recent { half_life },
                    &mut self.learner.rng,
                )
                .unwrap_or_default();
            batch.push(newest.clone());
            if learn_from(&mut self.learner, &batch, &Labels::default()).is_some() {
                self.steps += 1;
                if self.steps.is_multiple_of(self.publish_every.max(1)) {
                    self.snapshot = self.learner.snapshot(self.snapshot.version + 1);
                }
            }
        }
    }
}

/// One round of one policy, as written to the trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceLine {
    pub policy: String,
    pub round: usize,
    pub id: String,
    pub models: Vec<String>,
    pub propensities: Vec<f32>,
    pub reward: f32,
    pub regret: f32,
}

/// A policy's greedy choices on the test split, part-way through the stream.
#[derive(Debug, Clone, Serialize)]
pub struct TestPoint {
    pub round: usize,
    /// What the policy had paid for its choices on the stream so far (all k
    /// calls with variations): the data-efficiency axis at equal cost.
    pub spent_usd: f64,
    /// Mean quality, cost and reward of its greedy choice per test prompt.
    pub quality: f64,
    pub cost_usd: f64,
    pub reward: f64,
}

/// Mean reward and regret over one window of rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub round: usize,
    pub mean_reward: f64,
    pub mean_regret: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    pub rounds: usize,
    pub mean_reward: f64,
    pub mean_regret: f64,
    pub curve: Vec<CurvePoint>,
    /// Held-out evaluations every `eval_every` rounds (empty without it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_curve: Vec<TestPoint>,
    /// With drift: rounds after the change until the drifted model's share
    /// of the trailing 100 rounds is below 10% (`None`: never).
    pub drift_recovery_rounds: Option<usize>,
    /// With drift: the drifted model's share in the 100 rounds before it.
    pub drift_share_before: Option<f64>,
}

/// Per-prompt reward of every model at λ, with drift applied.
struct World<'a> {
    rows: Vec<&'a Row>,
    lambda: f32,
    cost_scale: f64,
    drift: Option<(usize, usize, f32, f64)>,
}

impl World<'_> {
    fn outcome(&self, row: &Row, m: usize, round: usize) -> (f32, f64) {
        let o = &row.outcomes[m];
        match self.drift {
            Some((from, dm, dq, dc)) if round >= from && dm == m => ((o.quality + dq).clamp(0.0, 1.0), o.cost_usd * dc),
            _ => (o.quality, o.cost_usd),
        }
    }

    fn reward(&self, quality: f32, cost: f64) -> f32 {
        quality - self.lambda * (cost / self.cost_scale) as f32
    }

    /// The best single model's reward on this prompt: regret's reference.
    fn oracle(&self, row: &Row, round: usize) -> f32 {
        (0..row.outcomes.len())
            .map(|m| {
                let (q, c) = self.outcome(row, m, round);
                self.reward(q, c)
            })
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

/// `policy`'s greedy choice on every test prompt: mean quality, cost and
/// reward (without drift: the test split is the world as recorded).
fn held_out(
    policy: &mut dyn BanditPolicy,
    rows: &[&Row],
    xs: &[Features],
    world: &World,
    round: usize,
    spent_usd: f64,
) -> TestPoint {
    let (mut q, mut c, mut r) = (0f64, 0f64, 0f64);
    for (row, x) in rows.iter().zip(xs) {
        let o = &row.outcomes[policy.best(&row.id, x)];
        q += o.quality as f64;
        c += o.cost_usd;
        r += world.reward(o.quality, o.cost_usd) as f64;
    }
    let n = rows.len().max(1) as f64;
    TestPoint {
        round,
        spent_usd,
        quality: q / n,
        cost_usd: c / n,
        reward: r / n,
    }
}

/// Runs every policy over the same stream, and, given `test` rows with
/// their features and `cfg.eval_every`, evaluates each policy's greedy
/// choices on them as it learns. `trace` receives every round.
pub fn run(
    ds: &Dataset,
    policies: &mut [&mut dyn BanditPolicy],
    feats: &[Features],
    test: Option<(&[&Row], &[Features])>,
    cfg: &SimConfig,
    cost_scale: f64,
    mut trace: impl FnMut(&TraceLine) -> Result<()>,
) -> Result<Vec<PolicyResult>> {
    let rows = ds.split("train");
    let drift = match &cfg.drift {
        Some(d) => {
            let m = ds.model_index(&d.model).ok_or_else(|| {
                Error::InvalidInput(format!("--drift: no model `{}` in {}", d.model, ds.path.display()))
            })?;
            Some((d.round, m, d.quality_delta, d.cost_factor))
        }
        None => None,
    };
    let world = World {
        rows,
        lambda: cfg.cost_weight,
        cost_scale,
        drift,
    };
    let mut order: Vec<usize> = (0..world.rows.len()).collect();
    let mut shuffler = cfg.shuffle_seed.map(ChaCha8Rng::seed_from_u64);
    let k = cfg.feedback.k().min(ds.models.len());
    let n_rounds = world.rows.len() * cfg.epochs;
    let mut results: Vec<PolicyResult> = Vec::new();
    let mut sums = vec![(0f64, 0f64); policies.len()];
    let mut window = vec![(0f64, 0f64, 0usize); policies.len()];
    let mut curves: Vec<Vec<CurvePoint>> = vec![Vec::new(); policies.len()];
    let mut test_curves: Vec<Vec<TestPoint>> = vec![Vec::new(); policies.len()];
    let mut spent = vec![0f64; policies.len()];
    // Per policy: did round t's picks include the drifted model (for shares).
    let mut used_drifted: Vec<Vec<bool>> = vec![Vec::with_capacity(n_rounds); policies.len()];
    let mut round = 0;
    for _ in 0..cfg.epochs {
        if let Some(r) = shuffler.as_mut() {
            order.shuffle(r);
        }
        for &i in &order {
            round += 1;
            let row = world.rows[i];
            let x = &feats[i];
            let oracle = world.oracle(row, round);
            for (p, policy) in policies.iter_mut().enumerate() {
                let mut pick = policy.choose(&row.id, x, k);
                let kept = match cfg.feedback {
                    FeedbackMode::Cascade(max_calls) => Some(cascade(&mut **policy, row, x, &mut pick, max_calls)),
                    _ => None,
                };
                let feedback: Vec<Feedback> = pick
                    .models
                    .iter()
                    .map(|&m| {
                        let (q, c) = world.outcome(row, m, round);
                        Feedback {
                            model: m,
                            quality: q,
                            cost_usd: c,
                            latency_ms: row.outcomes[m].latency_ms,
                            reward: world.reward(q, c),
                        }
                    })
                    .collect();
                // The request's answer is the one the cascade kept, else the
                // best one run; every run is paid for.
                let answer_q = match kept {
                    Some(i) => feedback[i].quality,
                    None => feedback.iter().map(|f| f.quality).fold(0.0, f32::max),
                };
                let cost: f64 = feedback.iter().map(|f| f.cost_usd).sum();
                let reward = world.reward(answer_q, cost);
                if kept.is_some() {
                    for f in &feedback {
                        if let Some(answer) = row.responses[f.model].as_deref() {
                            policy.learn_answer(&row.prompt, x, f.model, answer, f.quality);
                        }
                    }
                }
                let regret = oracle - reward;
                policy.learn(&row.id, x, &pick, &feedback);
                trace(&TraceLine {
                    policy: policy.name().to_string(),
                    round,
                    id: row.id.clone(),
                    models: pick.models.iter().map(|&m| ds.models[m].clone()).collect(),
                    propensities: pick.propensities.clone(),
                    reward,
                    regret,
                })?;
                sums[p].0 += reward as f64;
                sums[p].1 += regret as f64;
                spent[p] += cost;
                if let (Some((rows, xs)), Some(every)) = (test, cfg.eval_every) {
                    if round % every.max(1) == 0 || round == n_rounds {
                        test_curves[p].push(held_out(&mut **policy, rows, xs, &world, round, spent[p]));
                    }
                }
                let w = &mut window[p];
                w.0 += reward as f64;
                w.1 += regret as f64;
                w.2 += 1;
                if w.2 == cfg.window || round == n_rounds {
                    curves[p].push(CurvePoint {
                        round,
                        mean_reward: w.0 / w.2 as f64,
                        mean_regret: w.1 / w.2 as f64,
                    });
                    *w = (0.0, 0.0, 0);
                }
                if let Some((_, dm, _, _)) = world.drift {
                    used_drifted[p].push(pick.models.contains(&dm));
                }
            }
        }
    }
    for (p, policy) in policies.iter().enumerate() {
        let (recovery, before) = match world.drift {
            Some((from, ..)) => drift_recovery(&used_drifted[p], from),
            None => (None, None),
        };
        results.push(PolicyResult {
            policy: policy.name().to_string(),
            rounds: round,
            mean_reward: sums[p].0 / round.max(1) as f64,
            mean_regret: sums[p].1 / round.max(1) as f64,
            curve: std::mem::take(&mut curves[p]),
            test_curve: std::mem::take(&mut test_curves[p]),
            drift_recovery_rounds: recovery,
            drift_share_before: before,
        });
    }
    Ok(results)
}

/// One cascade after `pick`'s first model: asks the policy, answer by
/// answer, whether to keep one or run another model (at most `max_calls`,
/// never one twice), adds every model run to `pick`, and returns the
/// position in `pick.models` of the answer kept. A prompt whose answers the
/// data did not record has nothing to read: the last answer run stands.
fn cascade(policy: &mut dyn BanditPolicy, row: &Row, x: &Features, pick: &mut Pick, max_calls: usize) -> usize {
    pick.models.truncate(1);
    pick.propensities.truncate(1);
    loop {
        let answers: Option<Vec<(usize, &str)>> = pick
            .models
            .iter()
            .map(|&m| row.responses[m].as_deref().map(|a| (m, a)))
            .collect();
        let Some(answers) = answers else {
            return pick.models.len() - 1;
        };
        match policy.cascade_step(&row.prompt, x, &answers, max_calls) {
            Step::Call(m) if !pick.models.contains(&m) && pick.models.len() < max_calls && m < row.outcomes.len() => {
                pick.models.push(m);
                // Given the answers, the step is certain.
                pick.propensities.push(1.0);
            }
            Step::Keep(i) if i < answers.len() => return i,
            _ => return 0,
        }
    }
}

/// Rounds after `from` (1-based) until the trailing-100 share of `used` is
/// below 10%, and the share in the 100 rounds before `from`.
pub fn drift_recovery(used: &[bool], from: usize) -> (Option<usize>, Option<f64>) {
    const W: usize = 100;
    let start = from.saturating_sub(1).min(used.len());
    let before = &used[start.saturating_sub(W)..start];
    let share_before = (!before.is_empty()).then(|| before.iter().filter(|&&u| u).count() as f64 / before.len() as f64);
    for end in (start + 1).max(W)..=used.len() {
        let share = used[end - W..end].iter().filter(|&&u| u).count() as f64 / W as f64;
        if share < 0.10 {
            return (Some(end - start), share_before);
        }
    }
    (None, share_before)
}

/// A fresh DQN policy for the simulator, priced on the train split.
pub fn fresh_dqn(ds: &Dataset, seed: u64) -> Result<DqnPolicy> {
    let rows = ds.split("train");
    initial_policy(
        ds,
        &rows,
        &OfflineConfig::default(),
        &mut ChaCha8Rng::seed_from_u64(seed),
    )
}

/// Builds the named baselines, in order; `None` marks where the DQN goes.
pub fn build_baselines(ds: &Dataset, cfg: &SimConfig, cost_scale: f64) -> Result<Vec<Option<Box<dyn BanditPolicy>>>> {
    let n = ds.models.len();
    let mut out: Vec<Option<Box<dyn BanditPolicy>>> = Vec::new();
    for (i, name) in cfg.policies.iter().enumerate() {
        let seed = cfg.seed.wrapping_add(i as u64 * 7919);
        let proj = || Projection::new(cfg.projection_dim, cfg.seed);
        let policy: Option<Box<dyn BanditPolicy>> = match name.as_str() {
            "dqn" => None,
            "uniform" => Some(Box::new(Uniform {
                models: n,
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
            "best-single" => {
                let rows = ds.split("train");
                let mut means: Vec<(f64, usize)> = (0..n)
                    .map(|m| {
                        let r: f64 = rows
                            .iter()
                            .map(|r| {
                                r.outcomes[m].quality as f64
                                    - cfg.cost_weight as f64 * r.outcomes[m].cost_usd / cost_scale
                            })
                            .sum();
                        (r / rows.len().max(1) as f64, m)
                    })
                    .collect();
                means.sort_by(|a, b| b.0.total_cmp(&a.0));
                Some(Box::new(BestSingle {
                    ranking: means.into_iter().map(|(_, m)| m).collect(),
                }))
            }
            "egreedy-linear" => Some(Box::new(Linear::new(
                LinearRule::EpsilonGreedy { epsilon: 0.1 },
                n,
                proj(),
                seed,
            ))),
            "linucb" => Some(Box::new(Linear::new(
                LinearRule::LinUcb { alpha: 0.5 },
                n,
                proj(),
                seed,
            ))),
            "thompson" => Some(Box::new(Linear::new(
                LinearRule::Thompson { scale: 0.3 },
                n,
                proj(),
                seed,
            ))),
            other => {
                return Err(Error::InvalidInput(format!(
                    "--policies: unknown policy `{other}` (known: {})",
                    POLICIES.join(", ")
                )))
            }
        };
        out.push(policy);
    }
    if cfg.policies.iter().filter(|p| *p == "dqn").count() > 1 {
        return Err(Error::InvalidInput("--policies: dqn listed twice".into()));
    }
    Ok(out)
}

/// Everything `simulate` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub dataset: String,
    pub config: SimConfig,
    /// C: the highest per-model mean cost on the train split.
    pub cost_scale: f64,
    pub results: Vec<PolicyResult>,
}

/// The whole command: stream, baselines, then the DQN's test decisions.
/// Returns the simulation and the trained DQN snapshot (if it ran).
pub fn simulate(ds: &Dataset, cfg: &SimConfig, trace_path: Option<&Path>) -> Result<(Simulation, Option<DqnPolicy>)> {
    let train = ds.split("train");
    if train.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no train split to stream",
            ds.path.display()
        )));
    }
    // C: the highest per-model mean cost on the train split, the same
    // scale the DQN's catalog is fitted with.
    let cost_scale = ds.fit_catalog(&train).cost_scale();
    let wants_dqn = cfg.policies.iter().any(|p| p == "dqn");
    let dqn = if wants_dqn {
        let p = fresh_dqn(ds, cfg.seed)?;
        Some(DqnBandit::new(p, OperatingPoint::cost(cfg.cost_weight), cfg)?)
    } else {
        None
    };
    let fz = Featurizer::new(OfflineConfig::default().features)?;
    let feats = featurize_rows(&fz, &train);
    let mut dqn = dqn;
    let mut baselines = build_baselines(ds, cfg, cost_scale)?;
    let mut policies: Vec<&mut dyn BanditPolicy> = Vec::new();
    let mut dqn_slot = dqn.as_mut();
    for b in baselines.iter_mut() {
        match b {
            Some(b) => policies.push(b.as_mut()),
            None => {
                if let Some(d) = dqn_slot.take() {
                    policies.push(d);
                }
            }
        }
    }
    let mut writer = match trace_path {
        Some(p) => Some(BufWriter::new(crate::create_file(p)?)),
        None => None,
    };
    let test_rows = ds.split("test");
    let test_feats = match cfg.eval_every {
        Some(_) => featurize_rows(&fz, &test_rows),
        None => Vec::new(),
    };
    let test = cfg.eval_every.map(|_| (test_rows.as_slice(), test_feats.as_slice()));
    let results = run(ds, &mut policies, &feats, test, cfg, cost_scale, |line| {
        if let Some(w) = writer.as_mut() {
            serde_json::to_writer(&mut *w, line).map_err(|e| Error::io("writing the trace", e.into()))?;
            w.write_all(b"\n").map_err(|e| Error::io("writing the trace", e))?;
        }
        Ok(())
    })?;
    if let Some(mut w) = writer {
        w.flush().map_err(|e| Error::io("writing the trace", e))?;
    }
    drop(policies);
    let policy = dqn.map(|d| d.policy().clone());
    Ok((
        Simulation {
            dataset: ds.path.display().to_string(),
            config: cfg.clone(),
            cost_scale,
            results,
        },
        policy,
    ))
}
