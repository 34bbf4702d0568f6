//! `qroute serve`: the gateway.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use qroute_gateway::config::Config;
use qroute_gateway::{http, Gateway};

/// Run the gateway: /v1/execute, /v1/chat/completions, health, metrics.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML config (see config/example.toml); the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overriding the config's.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Keep the experience store and the policy registry under this
    /// directory (DIR/store, DIR/policies), overriding the config's paths.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve a non-loopback address without a master key, so that anyone
    /// who can reach the port spends the configured providers' keys.
    #[arg(long)]
    insecure_no_auth: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    };
    if let Some(addr) = args.listen {
        cfg.listen = addr;
    }
    if let Some(dir) = args.data_dir {
        cfg.store.path = dir.join("store");
        cfg.learning.registry = Some(dir.join("policies"));
    }
    let addr = cfg.listen;
    if !addr.ip().is_loopback() && cfg.auth.master_keys().is_empty() && !args.insecure_no_auth {
        anyhow::bail!(
            "refusing to serve {addr} without authentication: set QROUTE_MASTER_KEY (see README, Security), \
             listen on 127.0.0.1, or pass --insecure-no-auth"
        );
    }
    let store = cfg.store.location();
    let gw = Arc::new(Gateway::build(cfg)?);
    crate::resident_memory::release_freed_pages();
    qroute_gateway::embedded::bundled().for_each(crate::resident_memory::release_read_once);
    super::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            store = %store,
            policy_version = gw.policy().version,
            models = gw.models.len(),
            "qroute serving"
        );
        http::serve(gw.clone(), listener, shutdown_signal()).await?;
        gw.stop_learning();
        tracing::info!("stopped; every acknowledged record is on disk");
        anyhow::Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
