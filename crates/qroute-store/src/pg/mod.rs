//! PostgreSQL, shared by every replica: the connection handle the
//! PostgreSQL experience store ([`PgStore`]) and the PostgreSQL policy
//! registry (in `qroute-learn`) are built on, and the schema they share.
//!
//! A store is named by one URL, `postgres://user@host:port/db?schema=name`
//! (`schema` defaults to `qroute`; every table lives in it, so one database
//! can hold several stores, as the tests do). Everything else in the URL is
//! tokio-postgres's (libpq's) own syntax.
//!
//! Why a private runtime: [`ExperienceStore`] is a blocking trait (sled
//! is), called from the group writer's thread, from `spawn_blocking` and
//! now and then from an async handler. The pool's connections are driven by
//! this handle's own small tokio runtime, and a blocking call waits for its
//! query there: from a plain thread by `block_on`, from inside another
//! runtime on a scoped helper thread (a runtime may not block on itself).
//!
//! [`ExperienceStore`]: qroute_core::store::ExperienceStore

mod schema;
mod store;

use std::future::Future;
use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use qroute_core::{Error, Result};
use tokio_postgres::NoTls;

pub use schema::lock_key;
pub use store::PgStore;

/// The schema a URL without `?schema=` uses.
pub const DEFAULT_SCHEMA: &str = "qroute";

/// Connections one process keeps open: the group writer's, a trainer's,
/// readers', and the registry's.
const POOL_SIZE: usize = 8;

/// Whether `location` names a PostgreSQL store (else it is a directory).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A parsed store URL: the connection settings and the schema.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    schema: String,
    /// The URL without credentials, for messages.
    shown: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgUrl {
    /// Parses `postgres://…[?schema=name]`. The error names what is wrong
    /// and never repeats a password.
    pub fn parse(url: &str) -> Result<PgUrl> {
        if !is_postgres_url(url) {
            return Err(Error::InvalidInput(
                "store url: must start with postgres:// or postgresql://".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) => schema = v.to_string(),
                _ => rest.push(pair),
            }
        }
        if schema.is_empty()
            || schema.len() > 63
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || schema.as_bytes()[0].is_ascii_digit()
        {
            return Err(Error::InvalidInput(format!(
                "store url: schema {schema:?} must be 1–63 lowercase letters, digits or _, not starting with a digit"
            )));
        }
        let joined = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config =
            tokio_postgres::Config::from_str(&joined).map_err(|e| Error::InvalidInput(format!("store url: {e}")))?;
        if config.get_user().is_none() {
            config.user(std::env::var("USER").as_deref().unwrap_or("postgres"));
        }
        if config.get_application_name().is_none() {
            config.application_name("qroute");
        }
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let shown = format!(
            "postgres://{host}/{}?schema={schema}",
            config.get_dbname().unwrap_or_default()
        );
        Ok(PgUrl { config, schema, shown })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The settings of one connection, for a caller that keeps its own
    /// (the registry's LISTEN connection).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A connection pool on its own runtime, with the schema migrated (or
/// checked, for a reader).
pub struct Pg {
    /// Always `Some` until drop, which shuts it down in the background: a
    /// gateway drops its store from inside its own runtime, where a plain
    /// drop of another runtime panics.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    url: PgUrl,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("url", &self.url).finish()
    }
}

/// A PostgreSQL error as the store reports it (the server's message, no
/// connection details).
pub fn pg_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| match e.as_db_error() {
        Some(db) => Error::Store(format!("postgres: {what}: {}", db.message())),
        None => Error::Store(format!("postgres: {what}: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    Error::Store(format!("postgres: no connection: {e}"))
}

impl Pg {
    /// Connects and migrates the schema to this build's version (creating
    /// it when missing), under an advisory lock so that replicas starting
    /// together migrate once.
    pub fn open(url: &str) -> Result<Pg> {
        let pg = Pg::connect(url)?;
        pg.block_on(schema::migrate(pg.pool.clone(), pg.url.schema.clone()))?;
        Ok(pg)
    }

    /// Connects to an existing store without creating or migrating
    /// anything: what read commands (`export`, `ope`) use. A database
    /// without the schema, or with a newer one, is an error.
    pub fn open_existing(url: &str) -> Result<Pg> {
        let pg = Pg::connect(url)?;
        pg.block_on(schema::check(pg.pool.clone(), pg.url.schema.clone()))?;
        Ok(pg)
    }

    fn connect(url: &str) -> Result<Pg> {
        let url = PgUrl::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qroute-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the postgres runtime", e))?;
        let mut config = url.config.clone();
        // Every statement names its tables unqualified; the schema is the
        // connection's search path.
        config.options(format!("-c search_path={}", url.schema));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Store(format!("postgres: building the pool: {e}")))?;
        let pg = Pg {
            runtime: Some(runtime),
            pool,
            url,
        };
        // Fail at open, with the server's reason, rather than at first use.
        pg.block_on({
            let pool = pg.pool.clone();
            let shown = pg.url.shown.clone();
            async move {
                pool.get()
                    .await
                    .map(drop)
                    .map_err(|e| Error::Store(format!("postgres: connecting to {shown}: {e}")))
            }
        })?;
        Ok(pg)
    }

    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `fut` on this handle's runtime and waits for it, from any
    /// thread (see the module docs).
    pub fn block_on<T: Send>(&self, fut: impl Future<Output = T> + Send) -> T {
        let runtime = self.runtime();
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(fut);
        }
        std::thread::scope(|s| {
            let handle = s.spawn(|| runtime.block_on(fut));
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A pooled connection.
    pub async fn conn(pool: &Pool) -> Result<deadpool_postgres::Object> {
        pool.get().await.map_err(pool_err)
    }

    /// Spawns `fut` on this handle's runtime (a background listener).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime().spawn(fut)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        match &self.runtime {
            Some(r) => r,
            // Only `drop` takes it, and nothing runs after drop.
            None => unreachable!("the postgres runtime is gone before its handle"),
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
