//! One file per command. Each parses its own arguments (clap `Args`) and
//! wires library parts together; none holds logic of its own beyond that.

pub mod bench;
pub mod evaluate;
pub mod experiment;
pub mod export;
pub mod judges;
pub mod mock;
pub mod ope;
pub mod output;
pub mod policy;
pub mod remote;
pub mod route;
pub mod serve;
pub mod simulate;
pub mod train;

use std::path::Path;

use anyhow::Context;

/// A multi-threaded tokio runtime for commands that talk HTTP.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Opens an existing experience store for reading. A path that is not an
/// existing store is an error, and nothing is created.
pub fn open_store(dir: &Path) -> anyhow::Result<qroute_store::SledStore> {
    qroute_store::SledStore::open_existing(dir).with_context(|| {
        format!(
            "opening {} (is a gateway serving from it? stop it, or use --url to ask it)",
            dir.display()
        )
    })
}
