//! `qroute export`: the experience log as JSONL or Parquet.

use std::path::PathBuf;

/// Export an experience store: JSONL, one experience per line (features
/// included), or, for an `--out` ending in `.parquet`, a flat Parquet
/// table with one row per outcome for pandas/DuckDB/Polars (features not
/// exported: use JSONL for them).
#[derive(clap::Args)]
pub struct Args {
    /// An experience store: a directory (no gateway may be serving from
    /// it) or a shared store's `postgres://…?schema=…` URL (read while
    /// gateways serve).
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    store: Option<String>,
    /// A running gateway, e.g. http://127.0.0.1:8080: JSONL streamed from
    /// its `GET /v1/admin/experiences` while it serves.
    #[arg(long)]
    url: Option<String>,
    /// Output file; `.parquet` writes Parquet, anything else JSONL.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let parquet = a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let store = match (a.store, a.url) {
        (Some(location), None) => super::open_store(&location)?,
        (None, Some(url)) => {
            if parquet {
                anyhow::bail!("--url exports JSONL; convert it, or export Parquet from a stopped gateway's --store");
            }
            super::remote::Remote::new(&url)?.download("/v1/admin/experiences", &a.out)?;
            let n = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&a.out)?)).count();
            eprintln!("exported {n} experiences to {}", a.out.display());
            return Ok(());
        }
        _ => anyhow::bail!("give exactly one of --store DIR|POSTGRES_URL or --url URL"),
    };
    if parquet {
        let n = qroute_lab::export::export_parquet(&*store, &a.out)?;
        eprintln!("exported {n} rows (one per outcome) to {}", a.out.display());
    } else {
        let n = qroute_lab::export::export_jsonl(&*store, &a.out)?;
        eprintln!("exported {n} experiences to {}", a.out.display());
    }
    Ok(())
}
