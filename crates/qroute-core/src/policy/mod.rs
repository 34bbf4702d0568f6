//! Policies: score candidates, explore, checkpoint.

pub mod action;
pub mod answer;
pub mod cascade;
pub mod checkpoint;
pub mod config;
pub mod dqn;
pub mod explore;
pub mod frozen;
pub mod network;
pub mod simd;
pub mod strategy;

pub use action::Scales;
pub use config::{PolicyConfig, ShadowConfig};
pub use dqn::{DqnPolicy, OperatingPoint, Policy, Prediction, QualityPrior};
pub use explore::{Choice, Exploration, Explorer};
pub use frozen::FrozenPolicy;
pub use strategy::Strategy;
