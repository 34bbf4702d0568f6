//! qroute-learn: everything that changes a policy's weights, kept out of
//! the serving path. The backward pass ([`grad`]), the optimiser
//! ([`adam`]), the one learning rule every trainer drives ([`learner`]),
//! offline jobs from datasets ([`offline`]) and the online trainer that
//! learns from the experience store while traffic flows ([`online`]), and
//! the registry its versions are checkpointed in ([`registry`]), which a
//! gateway that does not train follows ([`watch`]). With the `tch` feature,
//! `torch` runs the same learning rule in libtorch (CPU or CUDA) for offline jobs.

pub mod adam;
pub mod answer_head;
pub mod config;
pub mod grad;
pub mod learner;
pub mod offline;
pub mod online;
pub mod prior;
pub mod registry;
pub mod registry_pg;
#[cfg(feature = "tch")]
pub mod torch;
pub mod watch;

pub use config::{LearningConfig, LearningMode};
pub use learner::{Learner, LearnerConfig, Observation, StepStats};
