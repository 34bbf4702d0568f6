//! qroute-experiment: A/B experiments between routing strategies
//! (`qroute_core::policy::Strategy`).
//!
//! An experiment compares two or more strategies on live traffic:
//!
//! - [`spec`]: what an experiment is (arms, unit key, window, holdout) and
//!   its lifecycle.
//! - [`registry`]: the experiments a gateway knows, ready to route with,
//!   persisted in the experience store.
//! - [`results`]: per-arm results computed from the store's decisions (the
//!   gateway serves them, the lab reports them: both use this crate, so
//!   neither needs the other).
//! - [`assign`]: sticky, deterministic assignment of a unit (a user, a tenant,
//!   a conversation) to an arm or to the holdout, with the propensity of that
//!   assignment so that logged data can later be reweighted.
//! - [`stats`]: per-arm summaries, fixed-sample confidence intervals, Welch's
//!   two-sample comparison, quantiles for latency, and an always-valid
//!   confidence sequence that stays correct when results are watched
//!   continuously ("peeking").

pub mod assign;
pub mod registry;
pub mod results;
pub mod spec;
pub mod stats;

pub use registry::{Enrollment, Experiments, LiveArm, LiveExperiment};
pub use spec::{ArmSpec, Experiment, ExperimentSpec, Status, UnitKey};
