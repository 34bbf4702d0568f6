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

    /// Hands back the pages of `bytes`, a part of the executable's
    /// read-only data that was read once and is not needed again, so they
    /// stop counting as this process's resident memory. Best effort: an
    /// error (a kernel before 5.4) leaves them resident.
    pub fn release_read_once(bytes: &'static [u8]) {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end <= start {
            return;
        }
        // SAFETY: the range is whole pages inside a `'static` shared slice
        // of the executable's read-only data, which nothing writes.
        // MADV_PAGEOUT only reclaims pages: their contents stay what they
        // were (the next read faults them in again), so no reference into
        // them changes meaning. Unlike MADV_DONTNEED, it would keep them
        // even if the loader had copied the data into anonymous memory.
        let advised = unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxPageOut,
            )
        };
        if let Err(e) = advised {
            tracing::debug!(error = %e, "could not hand back the pages of bundled data");
        }
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

    #[cfg(test)]
    mod tests {
        /// Handing pages back changes no byte: the bundled data reads and
        /// decodes as before.
        #[test]
        fn bundled_data_reads_the_same_after_its_pages_are_handed_back() {
            let sums: Vec<u64> = qroute_gateway::embedded::bundled().map(checksum).collect();
            let policy = qroute_gateway::embedded::policy().unwrap();
            qroute_gateway::embedded::bundled().for_each(super::release_read_once);
            assert_eq!(
                qroute_gateway::embedded::bundled().map(checksum).collect::<Vec<_>>(),
                sums
            );
            assert_eq!(qroute_gateway::embedded::policy().unwrap().net, policy.net);
        }

        fn checksum(bytes: &[u8]) -> u64 {
            bytes.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b))
        }
    }
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
