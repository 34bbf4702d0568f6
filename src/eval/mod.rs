//! Evaluation: RouterBench-style metrics, the `evaluate` sweep, the online
//! simulator with its bandit baselines, plots and reports.

pub mod bandits;
pub mod evaluate;
pub mod export;
pub mod metrics;
pub mod ope;
pub mod plots;
pub mod report;
pub mod simulate;
