//! The `[store]` config section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the experience store lives and when a write counts as durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the experience store; created when missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// `true` (the default): a response waits until its decision record is
    /// durable (the sync overlaps the upstream call, so it only shows when
    /// the upstream answers faster than a disk sync). `false`: records are
    /// queued and durable within one group commit after the response, and
    /// a crash in that window can lose them.
    #[serde(default = "yes")]
    pub durable_ack: bool,
}

fn yes() -> bool {
    true
}

fn default_store_path() -> PathBuf {
    PathBuf::from("qroute-data/store")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            durable_ack: true,
        }
    }
}
