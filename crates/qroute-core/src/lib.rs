//! qroute-core: what every other crate builds on, in the order of the data
//! flow (`config → features → policy → exec → reward → store → train`):
//!
//! - [`catalog`] and [`dataset`]: the models and the routing datasets;
//! - [`features`]: a request as the sparse vector the policy reads;
//! - [`frontier`]: the cost–quality metrics (AIQ, C95, Q@best) that
//!   evaluation reports and training's cross-validation maximises;
//! - [`policy`]: the network's forward pass, exploration with honest
//!   propensities, rule strategies and checkpoints;
//! - [`reward`]: the one reward formula;
//! - [`record`] and [`store`]: the experience records and the
//!   [`store::ExperienceStore`] trait every backend implements.
//!
//! Nothing here does I/O beyond reading datasets and checkpoints, and
//! nothing here knows HTTP, sled or the optimiser.

pub mod calendar;
pub mod catalog;
pub mod dataset;
pub mod error;
pub mod features;
pub mod frontier;
pub mod objects;
pub mod policy;
pub mod record;
pub mod reward;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};

/// Unix time now, in milliseconds: the clock of every record's `time_ms`.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
