//! The lab's integration tests: one binary, one module per feature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod cascade;
mod hull;
mod ope;
mod simulate;
