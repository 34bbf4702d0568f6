//! qroute: an engine that learns which LLM should answer each request.
//!
//! The data flow runs one direction (see DESIGN.md); a module may use what
//! comes before it in this list, never what comes after:
//!
//! `config, catalog, dataset → features → policy → exec → reward → store →
//! train → eval`
//!
//! `server` (the HTTP gateway) and the CLI in `main.rs` sit on top and wire
//! these parts together. `mock_provider` is a stand-alone upstream for tests
//! and load tests.

pub mod error;

pub mod bench;

pub mod catalog;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod exec;
pub mod experiment;
pub mod features;
pub mod mock_provider;
pub mod policy;
pub mod reward;
pub mod server;
pub mod store;
pub mod train;

pub use error::{Error, Result};

/// Unix time now, in milliseconds: the clock of every record's `time_ms`.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
