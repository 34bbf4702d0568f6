//! The `qroute` command line, run as a process: the commands the README
//! and `training/README.md` document, on small datasets and stores the
//! tests build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod experiment_report;
mod export;
mod replicas;
mod serve;
mod train_evaluate;
