//! qroute-lab: what ML engineers run offline. The `evaluate` sweep (its
//! metrics are `qroute_core::frontier`), the online simulator with its
//! bandit baselines, off-policy evaluation, experiment reports, plots and
//! export.

pub mod bandits;
pub mod evaluate;
pub mod experiment_report;
pub mod export;
pub mod ope;
pub mod plots;
pub mod report;
pub mod simulate;

/// Creates (truncating) the output file `path`, and its folder if missing:
/// a fresh clone has no `reports/`, and every command that writes a file
/// there must work on one.
pub(crate) fn create_file(path: &std::path::Path) -> qroute_core::Result<std::fs::File> {
    let ctx = || format!("creating {}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| qroute_core::Error::io(ctx(), e))?;
    }
    std::fs::File::create(path).map_err(|e| qroute_core::Error::io(ctx(), e))
}
