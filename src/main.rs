//! The `qroute` command line: one file per command under `cli/`, each of
//! which only wires library crates together.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the gateway allocates small short-lived buffers per request
/// (JSON, headers, records); glibc's malloc and free were ~8% of its CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "qroute",
    version,
    about = "An engine that learns which LLM should answer each request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(cli::serve::Args),
    Bench(cli::bench::Args),
    Ope(cli::ope::Args),
    /// A/B experiments between routing strategies: list them, write their results.
    Experiment {
        #[command(subcommand)]
        command: cli::experiment::Command,
    },
    Export(cli::export::Args),
    /// The policy registry: list, show, export and roll back versions.
    Policy {
        #[command(subcommand)]
        command: cli::policy::Command,
    },
    MockProvider(cli::mock::Args),
    Train(cli::train::Args),
    Simulate(cli::simulate::Args),
    Route(cli::route::Args),
    Evaluate(cli::evaluate::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Ope(a) => cli::ope::run(a),
        Command::Experiment { command } => cli::experiment::run(command),
        Command::Export(a) => cli::export::run(a),
        Command::Policy { command } => cli::policy::run(command),
        Command::MockProvider(a) => cli::mock::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Route(a) => cli::route::run(a),
        Command::Evaluate(a) => cli::evaluate::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head -1`): nothing to say.
        Err(e) if cli::output::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
