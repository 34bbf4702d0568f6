//! `qroute export`: the experience log as JSONL or Parquet.

use std::path::PathBuf;

/// Export an experience store: JSONL, one experience per line (features
/// included), or, for an `--out` ending in `.parquet`, a flat Parquet
/// table with one row per outcome for pandas/DuckDB/Polars (features not
/// exported: use JSONL for them).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    store: PathBuf,
    /// Output file; `.parquet` writes Parquet, anything else JSONL.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let store = super::open_store(&a.store)?;
    if a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        let n = qroute_lab::export::export_parquet(&store, &a.out)?;
        eprintln!("exported {n} rows (one per outcome) to {}", a.out.display());
    } else {
        let n = qroute_lab::export::export_jsonl(&store, &a.out)?;
        eprintln!("exported {n} experiences to {}", a.out.display());
    }
    Ok(())
}
