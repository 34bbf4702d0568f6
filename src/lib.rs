//! qroute: an engine that learns which LLM should answer each request.
//!
//! The data flow runs one direction (see DESIGN.md); a module may use what
//! comes before it in this list, never what comes after:
//!
//! `catalog, dataset → features → policy → reward → store → train → eval`
//!
//! The CLI in `main.rs` only wires these parts together.

pub mod error;

pub mod catalog;
pub mod dataset;
pub mod eval;
pub mod features;
pub mod policy;
pub mod reward;
pub mod store;
pub mod train;

pub use error::{Error, Result};
