//! `qroute ope`: off-policy evaluation from logged decisions.

use std::path::PathBuf;

use qroute_core::dataset::Dataset;
use qroute_core::policy::checkpoint;
use qroute_lab::ope::{self, FixedModel, Greedy, TargetPolicy, Uniform};

use super::output::say;

/// Off-policy evaluation of a target policy from logged decisions: IPS,
/// SNIPS and doubly robust, each with a 95% interval (prints JSON).
#[derive(clap::Args)]
pub struct Args {
    /// An experience store directory (no gateway serving from it), a shared
    /// store's `postgres://` URL, or an exported JSONL file.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    logs: Option<PathBuf>,
    /// A running gateway, e.g. http://127.0.0.1:8080: its experience log,
    /// read while it serves.
    #[arg(long)]
    url: Option<String>,
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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let scales = match (&a.scales_from, &a.policy) {
        (Some(p), _) | (None, Some(p)) => checkpoint::load(p)?.scales,
        (None, None) => qroute_gateway::embedded::policy()?.scales,
    };
    let target: Box<dyn TargetPolicy> = match (a.policy, a.fixed, a.uniform) {
        (Some(p), None, false) => Box::new(Greedy(checkpoint::load(&p)?)),
        (None, Some(m), false) => Box::new(FixedModel(m)),
        (None, None, true) => Box::new(Uniform),
        _ => anyhow::bail!("give exactly one target: --policy DIR, --fixed MODEL or --uniform"),
    };
    let experiences = match (&a.logs, &a.url) {
        (Some(path), None) if path.is_dir() || qroute_store::pg::is_postgres_url(&path.to_string_lossy()) => {
            let store = super::open_store(&path.to_string_lossy())?;
            if let Some(t) = store.truncation()? {
                eprintln!(
                    "warning: truncated: store retention removed {} older experiences (before sequence number {}); \
                     the estimates cover what is kept",
                    t.removed, t.first_kept
                );
            }
            store.iter_from(0).collect::<qroute_core::Result<Vec<_>>>()?
        }
        (Some(path), None) => ope::read_logs(path)?,
        (None, Some(url)) => {
            let bytes = super::remote::Remote::new(url)?.get_bytes("/v1/admin/experiences")?;
            ope::read_jsonl(bytes.as_slice(), std::path::Path::new(url))?
        }
        _ => anyhow::bail!("give exactly one of --logs PATH or --url URL"),
    };
    let report = ope::evaluate(&experiences, target.as_ref(), &scales, a.seed)?;
    let mut out = serde_json::to_value(&report)?;
    if let Some(path) = a.dataset {
        let ds = Dataset::load(&path)?;
        let (truth, n) = ope::replay_value(&experiences, target.as_ref(), &scales, &ds)?;
        out["replayed_truth"] = serde_json::json!({"value": truth, "decisions": n});
    }
    let shadows = ope::shadow_agreement(&experiences);
    if !shadows.is_empty() {
        out["shadow_agreement"] = serde_json::to_value(shadows)?;
    }
    say!("{}", serde_json::to_string_pretty(&out)?)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
