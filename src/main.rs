//! The `qroute` command line: one file per command under `cli/`, each of
//! which only wires library crates together.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: the gateway allocates small short-lived buffers per request
/// (JSON, headers, records); glibc's malloc and free were ~8% of its CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeping mimalloc's resident memory to what is in use. It commits its
/// arenas eagerly on Linux (where memory overcommits),
/// and what it commits gets touched: an idle gateway was 62 MB resident
/// with eager commit and 28 MB without (sled alone allocates 21 MB of
/// zeroed metric histograms, which a lazily committed arena never touches).
/// The first arena is reserved at the first allocation, before `main`, so
/// the option is set from a constructor that runs before any allocation.
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still overrides it.
/// And it keeps freed pages until later allocations come by
/// ([`resident_memory::release_freed_pages`]).
#[allow(unsafe_code)]
mod resident_memory {
    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_t` (the same
    /// position in its v2 and v3 headers).
    const ARENA_EAGER_COMMIT: i32 = 4;

    extern "C" {
        fn mi_option_set_default(option: i32, value: std::ffi::c_long);
        fn mi_collect(force: bool);
    }

    /// Gives the pages this thread freed back to the OS now. mimalloc
    /// purges freed pages only as later allocations come by, so what
    /// startup built and dropped (config, catalog, policy loading) stayed
    /// resident in an idle gateway: about 2 MB of its 36.
    pub fn release_freed_pages() {
        // SAFETY: mi_collect frees nothing still in use and takes no
        // pointers; any thread may call it at any time.
        unsafe { mi_collect(true) }
    }

    extern "C" fn set() {
        // SAFETY: mi_option_set_default stores one option's default value
        // (an environment variable still takes precedence); it takes no
        // pointers, allocates nothing, and may be called before mimalloc
        // has initialised.
        unsafe { mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
    }

    /// Run by the loader with the other ELF constructors, before `main`
    /// and before the Rust runtime's first allocation.
    #[used]
    #[cfg_attr(target_os = "linux", link_section = ".init_array")]
    static SET: extern "C" fn() = set;
}

#[derive(Parser)]
#[command(
    name = "qroute",
    version,
    about = "An engine that learns which LLM should answer each request"
)]
struct Cli {
    /// How log lines (on stderr) are written: `text` for people, `json`
    /// (one object per line) for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    Judges(cli::judges::Args),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`). Text is
/// coloured only on a terminal (and not under `NO_COLOR`): escape codes
/// in a file or a log collector are noise. JSON puts each event's fields at
/// the top level and keeps its spans' fields (the request id among them).
fn init_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
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
        Command::Judges(a) => cli::judges::run(a),
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
