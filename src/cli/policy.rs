//! `qroute policy`: the policy registry, in a data directory or behind a
//! running gateway (`--url`).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use qroute_core::calendar::iso_utc;
use qroute_core::policy::checkpoint;
use qroute_learn::registry::{writer_id, Entry, Registry};

use super::output::say;
use super::remote::Remote;

/// Where the registry is: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// A gateway's data directory (its registry is DIR/policies).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A registry: a directory, or a shared store's `postgres://` URL.
    #[arg(long)]
    registry: Option<String>,
    /// A running gateway, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
}

/// The policy registry: every version the trainer checkpointed.
#[derive(clap::Subcommand)]
pub enum Command {
    /// One line per registered version: version, source, parent, steps,
    /// experiences, time.
    List(Source),
    /// A version's policy.json.
    Show {
        version: u64,
        #[command(flatten)]
        source: Source,
    },
    /// Writes a version as a policy directory (model.safetensors +
    /// policy.json), usable as `policy.path`, `--policy` or an experiment arm.
    Export {
        version: u64,
        /// Output directory (created).
        out: PathBuf,
        #[command(flatten)]
        source: Source,
    },
    /// Serves a version again: registers a copy of it as the newest
    /// version, which a running gateway picks up within a second.
    Rollback {
        version: u64,
        #[command(flatten)]
        source: Source,
    },
}

enum Where {
    Local(Registry),
    Remote(Remote),
}

fn open(s: Source) -> anyhow::Result<Where> {
    Ok(match (s.data_dir, s.registry, s.url) {
        (Some(d), None, None) => Where::Local(Registry::open_existing(d.join("policies"))?),
        (None, Some(r), None) => Where::Local(Registry::open_location(&r)?),
        (None, None, Some(u)) => Where::Remote(Remote::new(&u)?),
        _ => anyhow::bail!("give exactly one of --data-dir, --registry or --url"),
    })
}

fn line(e: &Value, serving: Option<u64>) -> String {
    let v = e["version"].as_u64().unwrap_or(0);
    let l = &e["lineage"];
    let mark = if serving == Some(v) { "\tserving" } else { "" };
    if l.is_null() {
        return format!("v{v}\t-{mark}");
    }
    let parent = l["parent"].as_u64().map_or("-".into(), |p| format!("v{p}"));
    format!(
        "v{v}\t{}\tparent={parent}\tsteps={}\texperiences={}\t{}{mark}",
        l["source"].as_str().unwrap_or("?"),
        l["steps"],
        l["experiences"],
        iso_utc(l["created_ms"].as_u64().unwrap_or(0)),
    )
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List(source) => {
            let (entries, serving): (Vec<Value>, Option<u64>) = match open(source)? {
                Where::Local(reg) => {
                    let all: Vec<Entry> = reg.entries()?;
                    (all.iter().map(serde_json::to_value).collect::<Result<_, _>>()?, None)
                }
                Where::Remote(r) => {
                    let v: Value = r.get_json("/v1/admin/policies")?;
                    (
                        v["versions"].as_array().cloned().unwrap_or_default(),
                        v["serving"].as_u64(),
                    )
                }
            };
            if entries.is_empty() {
                eprintln!("no registered versions");
            }
            for e in &entries {
                say!("{}", line(e, serving))?;
            }
        }
        Command::Show { version, source } => {
            let meta: Value = match open(source)? {
                Where::Local(reg) => serde_json::from_slice(&reg.file(version, checkpoint::META_FILE)?)?,
                Where::Remote(r) => r.get_json(&format!("/v1/admin/policies/{version}"))?,
            };
            say!("{}", serde_json::to_string_pretty(&meta)?)?;
        }
        Command::Export { version, out, source } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            match open(source)? {
                Where::Local(reg) => {
                    for file in [checkpoint::WEIGHTS_FILE, checkpoint::META_FILE] {
                        let path = out.join(file);
                        std::fs::write(&path, reg.file(version, file)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
                Where::Remote(r) => {
                    for file in [checkpoint::WEIGHTS_FILE, checkpoint::META_FILE] {
                        r.download(&format!("/v1/admin/policies/{version}/files/{file}"), &out.join(file))?;
                    }
                    // Refuse to leave a directory that does not load.
                    checkpoint::load(&out)?;
                }
            }
            say!("{}", out.display())?;
        }
        Command::Rollback { version, source } => {
            let (new, parent) = match open(source)? {
                Where::Local(reg) => {
                    let e = reg.rollback(version, &writer_id())?;
                    (e.version, version)
                }
                Where::Remote(r) => {
                    let v: Value = r.post_json(&format!("/v1/admin/policies/{version}/rollback"))?;
                    (v["version"].as_u64().unwrap_or(0), version)
                }
            };
            say!("v{new}\t(copy of v{parent})")?;
        }
    }
    Ok(())
}
