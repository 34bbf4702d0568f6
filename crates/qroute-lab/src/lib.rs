//! qroute-lab: what ML engineers run offline. RouterBench-style metrics
//! ([`metrics`]), the `evaluate` sweep, the online simulator with its bandit
//! baselines, off-policy evaluation, experiment reports, plots and export.

pub mod bandits;
pub mod evaluate;
pub mod experiment_report;
pub mod export;
pub mod metrics;
pub mod ope;
pub mod plots;
pub mod report;
pub mod simulate;
