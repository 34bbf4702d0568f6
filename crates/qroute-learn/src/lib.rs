//! qroute-learn: everything that changes a policy's weights, kept out of
//! the serving path. The backward pass ([`grad`]), the optimiser
//! ([`adam`]), the one learning rule every trainer drives ([`learner`]),
//! offline jobs from datasets ([`offline`]) and the online trainer that
//! learns from the experience store while traffic flows ([`online`]).

pub mod adam;
pub mod config;
pub mod grad;
pub mod learner;
pub mod offline;
pub mod online;

pub use config::LearningConfig;
pub use learner::{Learner, LearnerConfig, Observation, StepStats};
