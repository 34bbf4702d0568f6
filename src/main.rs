//! The `qroute` command line. It only wires library parts together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use qroute::catalog::ModelCard;
use qroute::config::Config;
use qroute::dataset::Dataset;
use qroute::eval::simulate::{self, Drift, FeedbackMode, SimConfig};
use qroute::eval::{evaluate, report};
use qroute::features::{Featurizer, RequestContext};
use qroute::policy::{checkpoint, DqnPolicy, Exploration, Explorer, OperatingPoint, Policy};
use qroute::server::{self, Gateway};
use qroute::train::offline::{self, OfflineConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// mimalloc: the gateway allocates small short-lived buffers per request
/// (JSON, headers, records); glibc's malloc and free were ~8% of its CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "qroute",
    version,
    about = "An engine that learns which LLM should answer each request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: /v1/execute, /v1/chat/completions, health, metrics.
    Serve {
        /// A TOML config (see config/example.toml); the embedded default when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Keep the experience store under this directory (DIR/store),
        /// overriding the config's store path.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Load-test the gateway against the mock upstream on loopback: requests
    /// per second and the gateway's added latency (p50, p99) per concurrency.
    Bench {
        /// Comma-separated numbers of concurrent clients.
        #[arg(long, default_value = "1,8,32,64")]
        concurrency: String,
        /// Seconds per level.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// The mock upstream's latency per answer, in ms.
        #[arg(long, default_value_t = 0.0)]
        upstream_latency_ms: f64,
        /// Gateway worker threads.
        #[arg(long, default_value_t = 2)]
        gateway_threads: usize,
        /// Answer before the decision record is durable (store.durable_ack = false).
        #[arg(long)]
        queued_ack: bool,
        /// Variations per request.
        #[arg(long, default_value_t = 1)]
        variations: usize,
        /// Standard deviation of the mock's latency, in ms.
        #[arg(long, default_value_t = 0.0)]
        upstream_jitter_ms: f64,
        /// Enrol every request in a running two-arm experiment (unit: user).
        #[arg(long)]
        experiment: bool,
        /// Score every request with a shadow policy as well.
        #[arg(long)]
        shadow: bool,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Off-policy evaluation of a target policy from logged decisions: IPS,
    /// SNIPS and doubly robust, each with a 95% interval (prints JSON).
    Ope {
        /// An experience store directory, or an exported JSONL file.
        #[arg(long)]
        logs: PathBuf,
        /// The target: a policy directory (its greedy choice)…
        #[arg(long)]
        policy: Option<PathBuf>,
        /// …or always this model…
        #[arg(long)]
        fixed: Option<String>,
        /// …or a uniform choice.
        #[arg(long)]
        uniform: bool,
        /// Scales (cost and latency units of the reward) from this policy;
        /// the target policy's, else the embedded default's.
        #[arg(long)]
        scales_from: Option<PathBuf>,
        /// A routing dataset the logs were simulated from: also replay the
        /// target's true value on the logged prompts.
        #[arg(long)]
        dataset: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A/B experiments between routing strategies: list them, write their results.
    Experiment {
        #[command(subcommand)]
        command: ExperimentCommand,
    },
    /// Export an experience store: JSONL, one experience per line (features
    /// included), or, for an `--out` ending in `.parquet`, a flat Parquet
    /// table with one row per outcome for pandas/DuckDB/Polars (features not
    /// exported: use JSONL for them).
    Export {
        #[arg(long)]
        store: PathBuf,
        /// Output file; `.parquet` writes Parquet, anything else JSONL.
        #[arg(long)]
        out: PathBuf,
    },
    /// An OpenAI-, Anthropic- and Gemini-compatible mock upstream for tests and
    /// load tests. Faults by model name: error, flaky, timeout, slow, ratelimit,
    /// reject, delay<N>.
    MockProvider {
        #[arg(long, default_value_t = 9100)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Mean latency of an answer, in ms.
        #[arg(long, default_value_t = 0.0)]
        latency_ms: f64,
        /// Standard deviation of the latency, in ms.
        #[arg(long, default_value_t = 0.0)]
        jitter_ms: f64,
        /// Latency of models named `slow`, in ms.
        #[arg(long, default_value_t = 1000)]
        slow_ms: u64,
    },
    /// Train a policy offline from a dataset with full information.
    Train {
        /// Dataset JSONL (see DESIGN.md for the schema).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        /// Output policy directory (model.safetensors + policy.json).
        #[arg(long)]
        out: PathBuf,
        /// A training job spec (TOML, the fields of OfflineConfig).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Online learning over the train split as a stream, under bandit feedback,
    /// against the standard baselines; then the DQN's decisions on the test split.
    Simulate {
        #[arg(long)]
        data: PathBuf,
        /// `bandit` or `variations=K`.
        #[arg(long, default_value = "bandit")]
        feedback: String,
        /// Directory for report.{json,md}, learning curves and the test evaluation (test/).
        #[arg(long)]
        report: PathBuf,
        /// Decisions on the test split, in the `evaluate` format.
        #[arg(long)]
        decisions: PathBuf,
        /// One line per round and policy: {policy, round, id, models, propensities, reward, regret}.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// λ in `quality − λ·cost/C`.
        #[arg(long, default_value_t = 0.5)]
        cost_weight: f32,
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Shuffle the stream (file order otherwise).
        #[arg(long)]
        shuffle_seed: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Comma-separated: dqn, uniform, best-single, egreedy-linear, linucb, thompson.
        #[arg(long, default_value = "dqn,uniform,best-single,egreedy-linear,linucb,thompson")]
        policies: String,
        /// `round=R,model=M[,quality=Δ][,cost=F]`: the world changes at round R.
        #[arg(long)]
        drift: Option<String>,
        /// Rounds per point of the learning curves.
        #[arg(long, default_value_t = 500)]
        window: usize,
        /// DQN exploration: SquareCB's γ at round t is this times √t.
        #[arg(long, default_value_t = 30.0)]
        dqn_gamma: f32,
        /// DQN gradient steps per round.
        #[arg(long, default_value_t = 1)]
        dqn_steps: usize,
        /// Evaluate every policy's greedy choices on the test split every N
        /// rounds (a held-out learning curve against USD spent).
        #[arg(long)]
        eval_every: Option<usize>,
        /// Keep the DQN's experience log in this store directory (for `qroute ope`).
        #[arg(long)]
        log_dir: Option<PathBuf>,
    },
    /// Route one prompt: score every candidate and pick one (prints JSON).
    Route {
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        persona: Option<String>,
        /// λ: quality given up per unit of normalised cost.
        #[arg(long, default_value_t = 0.1)]
        cost_weight: f32,
        /// μ: quality given up per unit of normalised latency.
        #[arg(long, default_value_t = 0.0)]
        latency_weight: f32,
        /// A policy directory; the embedded default when absent.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Pick the best-scoring model instead of sampling under SquareCB.
        #[arg(long)]
        greedy: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Sweep a policy over operating points on a split; write decisions and a report.
    Evaluate {
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
    },
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Write an experiment's per-arm results as OUT/ID.md and OUT/ID.png.
    ///
    /// Reads them from an experience store directory (--store; sled locks it,
    /// so no gateway may be serving from it: ask a running gateway with --url
    /// instead) or from a running gateway's `GET /v1/experiments/ID` (--url).
    Report {
        /// An experience store directory. The gateway must not be running on it.
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        store: Option<PathBuf>,
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
    /// Print each experiment in a store: id, status and arms, one per line.
    /// The gateway must not be running on the store.
    List {
        #[arg(long)]
        store: PathBuf,
    },
}

/// `GET /v1/experiments/{id}`'s answer.
#[derive(serde::Deserialize)]
struct ExperimentAnswer {
    experiment: qroute::experiment::Experiment,
    #[allow(dead_code)]
    status: qroute::experiment::Status,
    results: qroute::experiment::results::Results,
}

/// Opens an existing store for reading (never creates one).
fn open_store(dir: &Path) -> anyhow::Result<qroute::store::SledStore> {
    if !dir.is_dir() {
        anyhow::bail!("no experience store at {}", dir.display());
    }
    qroute::store::SledStore::open(dir).with_context(|| {
        format!(
            "opening {} (is a gateway serving from it? stop it, or use --url to ask it)",
            dir.display()
        )
    })
}

fn stored_experiments(store: &qroute::store::SledStore) -> anyhow::Result<Vec<qroute::experiment::Experiment>> {
    let mut all: Vec<qroute::experiment::Experiment> = store.docs("experiments")?;
    all.sort_by_key(|e| e.created_ms);
    Ok(all)
}

fn experiment_cmd(command: ExperimentCommand) -> anyhow::Result<()> {
    use qroute::experiment::report::write;
    use qroute::experiment::results::{self, Options};
    match command {
        ExperimentCommand::List { store } => {
            let store = open_store(&store)?;
            let now = qroute::unix_ms();
            let all = stored_experiments(&store)?;
            if all.is_empty() {
                eprintln!("no experiments in this store");
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
                println!("{}\t{}\t{}{holdout}", e.spec.id, e.status(now).as_str(), arms.join(" "));
            }
            Ok(())
        }
        ExperimentCommand::Report {
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
                        None => Config::embedded_default(),
                    };
                    let policy = match &cfg.policy.path {
                        Some(p) => checkpoint::load(p)?,
                        None => checkpoint::embedded_default()?,
                    };
                    let store = open_store(&dir)?;
                    let all = stored_experiments(&store)?;
                    let Some(experiment) = all.iter().find(|e| e.spec.id == id).cloned() else {
                        let known: Vec<&str> = all.iter().map(|e| e.spec.id.as_str()).collect();
                        let known = if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        };
                        anyhow::bail!("no experiment {id:?} in {}; known: {known}", dir.display());
                    };
                    let opts = Options {
                        level: 0.95,
                        scales: policy.scales,
                        default_quality: cfg.learning.default_quality,
                    };
                    let results = results::compute(&store, &experiment, &opts, qroute::unix_ms())?;
                    (experiment, results)
                }
                (None, Some(url)) => {
                    let endpoint = format!("{}/v1/experiments/{id}", url.trim_end_matches('/'));
                    let answer: ExperimentAnswer = runtime()?.block_on(async {
                        let resp = reqwest::Client::builder()
                            .timeout(std::time::Duration::from_secs(120))
                            .build()?
                            .get(&endpoint)
                            .send()
                            .await
                            .with_context(|| format!("GET {endpoint}"))?;
                        let status = resp.status();
                        let body = resp.text().await.with_context(|| format!("GET {endpoint}"))?;
                        if !status.is_success() {
                            anyhow::bail!("GET {endpoint}: {status}: {}", body.trim());
                        }
                        serde_json::from_str(&body).with_context(|| format!("GET {endpoint}: unexpected answer"))
                    })?;
                    (answer.experiment, answer.results)
                }
                _ => anyhow::bail!("give exactly one of --store DIR or --url URL"),
            };
            let (md, png) = write(&results, &experiment, &out)?;
            println!("{}", md.display());
            println!("{}", png.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn ope_cmd(
    logs: &Path,
    policy: Option<PathBuf>,
    fixed: Option<String>,
    uniform: bool,
    scales_from: Option<PathBuf>,
    dataset: Option<PathBuf>,
    seed: u64,
) -> anyhow::Result<()> {
    use qroute::eval::ope::{self, FixedModel, Greedy, TargetPolicy, Uniform};
    let scales = match (&scales_from, &policy) {
        (Some(p), _) | (None, Some(p)) => checkpoint::load(p)?.scales,
        (None, None) => checkpoint::embedded_default()?.scales,
    };
    let target: Box<dyn TargetPolicy> = match (policy, fixed, uniform) {
        (Some(p), None, false) => Box::new(Greedy(checkpoint::load(&p)?)),
        (None, Some(m), false) => Box::new(FixedModel(m)),
        (None, None, true) => Box::new(Uniform),
        _ => anyhow::bail!("give exactly one target: --policy DIR, --fixed MODEL or --uniform"),
    };
    let experiences = ope::read_logs(logs)?;
    let report = ope::evaluate(&experiences, target.as_ref(), &scales, seed)?;
    let mut out = serde_json::to_value(&report)?;
    if let Some(path) = dataset {
        let ds = Dataset::load(&path)?;
        let (truth, n) = ope::replay_value(&experiences, target.as_ref(), &scales, &ds)?;
        out["replayed_truth"] = serde_json::json!({"value": truth, "decisions": n});
    }
    let shadows = ope::shadow_agreement(&experiences);
    if !shadows.is_empty() {
        out["shadow_agreement"] = serde_json::to_value(shadows)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn serve(config: Option<&Path>, listen: Option<std::net::SocketAddr>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(),
    };
    if let Some(addr) = listen {
        cfg.listen = addr;
    }
    if let Some(dir) = data_dir {
        cfg.store.path = dir.join("store");
    }
    let addr = cfg.listen;
    let store = cfg.store.path.clone();
    let gw = std::sync::Arc::new(Gateway::build(cfg)?);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            store = %store.display(),
            policy_version = gw.policy().version,
            models = gw.models.len(),
            "qroute serving"
        );
        server::serve(gw, listener, shutdown_signal()).await?;
        tracing::info!("stopped; every acknowledged record is on disk");
        anyhow::Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config.as_deref(), listen, data_dir),
        Command::Bench {
            concurrency,
            seconds,
            upstream_latency_ms,
            gateway_threads,
            queued_ack,
            variations,
            upstream_jitter_ms,
            experiment,
            shadow,
            json,
        } => {
            let cfg = qroute::bench::BenchConfig {
                concurrency: concurrency
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--concurrency: comma-separated integers")?,
                duration: std::time::Duration::from_secs_f64(seconds),
                upstream_latency_ms,
                gateway_threads,
                durable_ack: !queued_ack,
                variations,
                upstream_jitter_ms,
                experiment,
                shadow,
                ..Default::default()
            };
            let results = qroute::bench::run(&cfg, |r| {
                eprintln!(
                    "c={:<4} {:>8.0} req/s  overhead p50 {:.3} ms p99 {:.3} ms  (direct {:.0} req/s)",
                    r.concurrency, r.gateway_rps, r.overhead_ms.p50, r.overhead_ms.p99, r.direct_rps
                )
            })?;
            println!("{}", qroute::bench::markdown(&results, &cfg));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
            }
            Ok(())
        }
        Command::Ope {
            logs,
            policy,
            fixed,
            uniform,
            scales_from,
            dataset,
            seed,
        } => ope_cmd(&logs, policy, fixed, uniform, scales_from, dataset, seed),
        Command::Experiment { command } => experiment_cmd(command),
        Command::Export { store, out } => {
            let store = qroute::store::SledStore::open(&store)?;
            if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
                let n = qroute::eval::export::export_parquet(&store, &out)?;
                eprintln!("exported {n} rows (one per outcome) to {}", out.display());
            } else {
                let n = qroute::eval::export::export_jsonl(&store, &out)?;
                eprintln!("exported {n} experiences to {}", out.display());
            }
            Ok(())
        }
        Command::MockProvider {
            port,
            host,
            latency_ms,
            jitter_ms,
            slow_ms,
        } => {
            let cfg = qroute::mock_provider::MockConfig {
                latency_ms,
                jitter_ms,
                slow_ms,
                ..Default::default()
            };
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind((host, port)).await?;
                tracing::info!(addr = %listener.local_addr()?, "mock provider listening");
                qroute::mock_provider::serve(listener, cfg).await?;
                anyhow::Ok(())
            })
        }
        Command::Train {
            data,
            split,
            out,
            config,
            epochs,
            seed,
            quiet,
        } => train(&data, &split, &out, config.as_deref(), epochs, seed, quiet),
        Command::Evaluate {
            data,
            policy,
            split,
            decisions,
            report,
            points,
        } => evaluate_cmd(&data, &policy, &split, &decisions, &report, points),
        Command::Simulate {
            data,
            feedback,
            report,
            decisions,
            trace,
            cost_weight,
            epochs,
            shuffle_seed,
            seed,
            policies,
            drift,
            window,
            dqn_gamma,
            dqn_steps,
            eval_every,
            log_dir,
        } => {
            let cfg = SimConfig {
                feedback: FeedbackMode::parse(&feedback)?,
                cost_weight,
                epochs,
                shuffle_seed,
                seed,
                window,
                policies: policies
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
                drift: drift.as_deref().map(Drift::parse).transpose()?,
                dqn_gamma,
                dqn_steps,
                eval_every,
                log_dir,
                ..SimConfig::default()
            };
            let ds = Dataset::load(&data)?;
            let (sim, dqn) = simulate::simulate(&ds, &cfg, trace.as_deref())?;
            report::write_simulation(&sim, &report)?;
            println!("{:<16} {:>12} {:>12}", "policy", "mean reward", "mean regret");
            for r in &sim.results {
                println!("{:<16} {:>12.4} {:>12.4}", r.policy, r.mean_reward, r.mean_regret);
            }
            match dqn {
                Some(policy) => {
                    let fz = Featurizer::new(policy.spec.clone())?;
                    let train = ds.split("train");
                    let feats = offline::featurize_rows(&fz, &train);
                    let grid = offline::calibrate_points(&policy, &feats.iter().collect::<Vec<_>>(), 41)?;
                    let eval = evaluate::evaluate(&policy, &ds, "test", &grid)?;
                    evaluate::write_decisions(&eval, &decisions)?;
                    report::write(
                        &eval,
                        &report.join("test"),
                        "qroute after the simulated stream (test split)",
                    )?;
                    println!(
                        "dqn on the test split: AIQ {:.4}, C95 {}, Q@best {:.4}",
                        eval.router.aiq,
                        eval.router.c95.map_or("n/a".into(), |c| format!("{c:.3}")),
                        eval.router.q_at_best
                    );
                }
                None => eprintln!("no dqn in --policies: no test decisions written"),
            }
            Ok(())
        }
        Command::Route {
            prompt,
            task,
            persona,
            cost_weight,
            latency_weight,
            policy,
            greedy,
            seed,
        } => {
            let policy = match policy {
                Some(dir) => checkpoint::load(&dir)?,
                None => checkpoint::embedded_default()?,
            };
            let req = RequestContext {
                prompt: &prompt,
                task_type: task.as_deref(),
                persona: persona.as_deref(),
                metadata: &[],
            };
            let point = OperatingPoint {
                cost_weight,
                latency_weight,
            };
            let kind = if greedy {
                Exploration::Greedy
            } else {
                Exploration::default()
            };
            let explorer = Explorer::new(kind, 0.005, None);
            let decision = route(&policy, &req, point, &explorer, &mut ChaCha8Rng::seed_from_u64(seed))?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(())
        }
    }
}

/// One routing decision, as `route` prints it.
#[derive(serde::Serialize)]
struct RouteDecision {
    model: String,
    propensity: f32,
    policy_version: u64,
    cost_weight: f32,
    latency_weight: f32,
    candidates: Vec<RouteCandidate>,
}

#[derive(serde::Serialize)]
struct RouteCandidate {
    model: String,
    expected_quality: f32,
    expected_cost_usd: f64,
    score: f32,
    propensity: f32,
}

fn route(
    policy: &DqnPolicy,
    req: &RequestContext<'_>,
    point: OperatingPoint,
    explorer: &Explorer,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<RouteDecision> {
    let x = Featurizer::new(policy.spec.clone())?.featurize(req);
    let cards: Vec<&ModelCard> = policy.catalog.models.iter().collect();
    let mut preds = Vec::new();
    policy.predict(&x, &cards, &mut preds)?;
    let scores: Vec<f32> = preds.iter().map(|p| p.score(point)).collect();
    let choice = explorer
        .choose(&scores, rng)
        .context("the policy has no candidate models")?;
    Ok(RouteDecision {
        model: cards[choice.chosen].id.clone(),
        propensity: choice.propensity(),
        policy_version: policy.version,
        cost_weight: point.cost_weight,
        latency_weight: point.latency_weight,
        candidates: cards
            .iter()
            .zip(&preds)
            .zip(&scores)
            .zip(&choice.propensities)
            .map(|(((c, p), &s), &pr)| RouteCandidate {
                model: c.id.clone(),
                expected_quality: p.quality,
                expected_cost_usd: p.cost as f64 * policy.scales.cost_usd,
                score: s,
                propensity: pr,
            })
            .collect(),
    })
}

fn train(
    data: &Path,
    split: &str,
    out: &Path,
    config: Option<&Path>,
    epochs: Option<usize>,
    seed: Option<u64>,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut cfg = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<OfflineConfig>(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => OfflineConfig::default(),
    };
    if let Some(e) = epochs {
        cfg.epochs = e;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    let ds = Dataset::load(data)?;
    let started = std::time::Instant::now();
    let outcome = offline::train(&ds, split, &cfg, !quiet)?;
    let secs = started.elapsed().as_secs_f64();
    let last = outcome.history.last().expect("trained at least one epoch");
    let training = serde_json::json!({
        "data": data.display().to_string(),
        "split": split,
        "rows": ds.split(split).len(),
        "config": cfg,
        "best_epoch": outcome.best_epoch,
        "epochs_run": last.epoch,
        "history": outcome.history,
        "seconds": secs,
    });
    checkpoint::save(&outcome.policy, out, training)?;
    eprintln!(
        "trained on {} prompts × {} models in {secs:.1}s; best epoch {} of {}; wrote {}",
        ds.split(split).len(),
        ds.models.len(),
        outcome.best_epoch,
        last.epoch,
        out.display()
    );
    Ok(())
}

fn evaluate_cmd(
    data: &Path,
    policy_dir: &Path,
    split: &str,
    decisions: &Path,
    report_dir: &Path,
    points: Option<usize>,
) -> anyhow::Result<()> {
    let ds = Dataset::load(data)?;
    let policy = checkpoint::load(policy_dir)?;
    let grid = match points {
        Some(n) => {
            let fz = Featurizer::new(policy.spec.clone())?;
            let rows = ds.split(split);
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
    let eval = evaluate::evaluate(&policy, &ds, split, &grid)?;
    evaluate::write_decisions(&eval, decisions)?;
    let title = format!(
        "{} ({} split)",
        data.file_name()
            .map_or("dataset".into(), |n| n.to_string_lossy().into_owned()),
        split
    );
    report::write(&eval, report_dir, &title)?;
    let c95 = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.3}"));
    println!("{:<14} {:>8} {:>8} {:>8}", "", "AIQ", "C95", "Q@best");
    for (name, s) in [
        ("qroute", &eval.router),
        ("single models", &eval.single_models),
        ("oracle", &eval.oracle_sweep),
    ] {
        println!("{name:<14} {:>8.4} {:>8} {:>8.4}", s.aiq, c95(s.c95), s.q_at_best);
    }
    eprintln!(
        "{} prompts × {} points → {}; report in {}",
        eval.prompts,
        grid.len(),
        decisions.display(),
        report_dir.display()
    );
    Ok(())
}
