//! The gateway's integration tests: one binary, one module per feature, all
//! against the real servers (the gateway and the mock upstream on
//! 127.0.0.1 ports, real HTTP both ways) through [`harness`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod harness;

mod auth;
mod cache;
mod cascade;
mod durable;
mod edge;
mod experiments;
mod feedback;
mod fuzz;
mod http;
mod judges;
mod learning;
mod metrics;
mod providers;
mod resilience;
mod sanitize;
mod streaming;
mod surface;
mod translate;
mod variations;
