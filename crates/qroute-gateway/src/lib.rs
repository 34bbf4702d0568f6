//! qroute-gateway: the gateway. [`engine`] is the request pipeline
//! (candidates, features, the policy's draw, running the model or the
//! variations, recording the outcome) and knows nothing of HTTP; [`exec`]
//! holds the provider adapters, resilience, judges and ensembles it calls;
//! [`access`] is keys, tokens, limits and budgets;
//! [`shared`] is what replicas share through Redis (`[redis]`);
//! [`config`] aggregates the config sections each crate defines; [`http`]
//! is axum routes and tower layers that only translate.

pub mod access;
pub mod cache;
pub mod config;
pub mod embedded;
pub mod engine;
pub mod exec;
pub mod http;
pub mod server_config;
pub mod shared;

pub use engine::Gateway;
