//! Training: the learning rule, offline jobs and the online trainer.

pub mod learner;
pub mod offline;
pub mod online;

pub use learner::{Learner, LearnerConfig, Observation, StepStats};
