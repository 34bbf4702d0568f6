//! Building blocks for A/B experiments between routing strategies
//! (`crate::policy::Strategy`).
//!
//! An experiment compares two or more strategies on live traffic. Two pieces
//! are needed before any wiring into the server can happen, and both live
//! here, free of I/O and of any other qroute module:
//!
//! - [`assign`]: sticky, deterministic assignment of a unit (a user, a tenant,
//!   a conversation) to an arm or to the holdout, with the propensity of that
//!   assignment so that logged data can later be reweighted.
//! - [`stats`]: per-arm summaries, fixed-sample confidence intervals, Welch's
//!   two-sample comparison, quantiles for latency, and an always-valid
//!   confidence sequence that stays correct when results are watched
//!   continuously ("peeking").

pub mod assign;
pub mod stats;
