//! The CLI's own output on stdout. A command's result goes through [`say!`]
//! so that a closed pipe (`qroute route … | head -1`) ends the command
//! quietly instead of panicking the way `println!` does.

#![allow(clippy::print_stdout)]

use std::io::Write;

/// Writes one line to stdout.
pub fn line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")
}

/// `println!` that returns an `io::Result` (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// A report's title: the dataset's file name and the split, e.g.
/// `alpaca_eval.jsonl (test split)`.
pub fn split_title(data: &std::path::Path, split: &str) -> String {
    let name = data
        .file_name()
        .map_or("dataset".into(), |n| n.to_string_lossy().into_owned());
    format!("{name} ({split} split)")
}

/// Whether `e` is stdout's reader having gone away (EPIPE).
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
