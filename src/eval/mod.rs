//! Evaluation: routing datasets, RouterBench-style metrics and plots.

pub mod bandits;
pub mod dataset;
pub mod evaluate;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod simulate;
