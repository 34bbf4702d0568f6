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

use anyhow::Context;

/// A multi-threaded tokio runtime for commands that talk HTTP.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Opens an existing experience store for reading: a sled store's
/// directory or a `postgres://` URL. Anything else is an error, and nothing
/// is created or migrated.
pub fn open_store(location: &str) -> anyhow::Result<std::sync::Arc<dyn qroute_core::store::ExperienceStore>> {
    qroute_store::open_existing(location).with_context(|| {
        if qroute_store::pg::is_postgres_url(location) {
            "opening the PostgreSQL store".to_string()
        } else {
            format!("opening {location} (is a gateway serving from it? stop it, or use --url to ask it)")
        }
    })
}
