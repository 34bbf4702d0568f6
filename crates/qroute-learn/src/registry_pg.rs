//! The policy registry in PostgreSQL, beside the shared experience store
//! (`policy_versions` in the store's schema): what several gateway replicas
//! and one trainer process share.
//!
//! - A version is one row: its `policy.json` as JSONB and its
//!   `model.safetensors` bytes, inserted in one transaction that also sends
//!   `NOTIFY {schema}_policy`, so every replica's listener learns of it at
//!   commit and its watcher loads it at once (polling stays as the backstop
//!   for a dropped listener connection).
//! - Version numbers come from the `next_policy_version` counter row,
//!   updated in its own committed transaction: never reused, across
//!   processes and crashes.
//! - The trainer lock is a session advisory lock on a connection kept for
//!   as long as the lock is held: when a trainer dies, PostgreSQL closes its
//!   session and the lock passes to a waiting trainer.

use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use futures_util::StreamExt;
use qroute_core::policy::{checkpoint, DqnPolicy};
use qroute_core::{Error, Result};
use qroute_store::pg::{pg_err, Pg};

/// Listener reconnects this long after its connection fails.
const RELISTEN: Duration = Duration::from_secs(1);

/// The registry tables of a PostgreSQL store.
pub struct PgRegistry {
    pg: Arc<Pg>,
    /// Threads to wake when a version is published (the watchers).
    wake: Arc<Mutex<Vec<Thread>>>,
    listening: Mutex<bool>,
}

impl std::fmt::Debug for PgRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRegistry").field("url", self.pg.url()).finish()
    }
}

/// Held while a process trains into the registry: the connection whose
/// session holds the advisory lock.
pub struct PgTrainerLock {
    /// Taken out of the pool: dropping it closes the session, which
    /// releases the lock (a pooled one would keep it).
    _conn: deadpool_postgres::ClientWrapper,
    /// The runtime that drives the session: it must outlive the lock.
    _pg: Arc<Pg>,
}

impl PgTrainerLock {
    /// Whether the session holding the lock is still open: PostgreSQL
    /// releases the lock when it ends (a restart, a dropped connection),
    /// and then another trainer may take it.
    pub fn is_held(&self) -> bool {
        !self._conn.is_closed()
    }
}

impl std::fmt::Debug for PgTrainerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTrainerLock")
    }
}

impl PgRegistry {
    /// The registry of the store `url` names (migrated when missing).
    pub fn open(url: &str) -> Result<PgRegistry> {
        Ok(PgRegistry::new(Pg::open(url)?))
    }

    /// For reading: creates and migrates nothing.
    pub fn open_existing(url: &str) -> Result<PgRegistry> {
        Ok(PgRegistry::new(Pg::open_existing(url)?))
    }

    fn new(pg: Pg) -> PgRegistry {
        PgRegistry {
            pg: Arc::new(pg),
            wake: Arc::new(Mutex::new(Vec::new())),
            listening: Mutex::new(false),
        }
    }

    pub fn location(&self) -> String {
        self.pg.url().to_string()
    }

    fn channel(&self) -> String {
        format!("{}_policy", self.pg.url().schema())
    }

    pub fn versions(&self) -> Result<Vec<u64>> {
        let pool = self.pg.pool().clone();
        let rows = self.pg.block_on(async move {
            Pg::conn(&pool)
                .await?
                .query("SELECT version FROM policy_versions ORDER BY version", &[])
                .await
                .map_err(pg_err("listing policy versions"))
        })?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    /// Version `v`'s `training` metadata, or `None` when not registered.
    pub fn training(&self, v: u64) -> Result<Option<serde_json::Value>> {
        let pool = self.pg.pool().clone();
        let row = self.pg.block_on(async move {
            Pg::conn(&pool)
                .await?
                .query_opt(
                    "SELECT (convert_from(policy_json, 'UTF8')::jsonb -> 'training')::text
                     FROM policy_versions WHERE version = $1",
                    &[&(v as i64)],
                )
                .await
                .map_err(pg_err("reading a policy version"))
        })?;
        row.map(|r| {
            let text: Option<&str> = r.get(0);
            serde_json::from_str(text.unwrap_or("null"))
                .map_err(|e| Error::Store(format!("policy version {v}: corrupt metadata: {e}")))
        })
        .transpose()
    }

    /// Version `v`'s two files, `(policy.json, model.safetensors)`, or
    /// `None` when not registered.
    pub fn files(&self, v: u64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let pool = self.pg.pool().clone();
        let row = self.pg.block_on(async move {
            Pg::conn(&pool)
                .await?
                .query_opt(
                    "SELECT policy_json, weights FROM policy_versions WHERE version = $1",
                    &[&(v as i64)],
                )
                .await
                .map_err(pg_err("loading a policy version"))
        })?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Version `v`, or `None` when not registered.
    pub fn load(&self, v: u64) -> Result<Option<DqnPolicy>> {
        let origin = std::path::PathBuf::from(format!("{}/v{v}", self.location()));
        self.files(v)?
            .map(|(meta, weights)| checkpoint::from_bytes(&meta, &weights, &origin))
            .transpose()
    }

    /// The next unused version number, at least `at_least` and past every
    /// registered one; committed before it is returned.
    pub fn allocate(&self, at_least: u64) -> Result<u64> {
        let pool = self.pg.pool().clone();
        let row = self.pg.block_on(async move {
            Pg::conn(&pool)
                .await?
                .query_one(
                    "UPDATE meta SET value = greatest(value, $1::bigint, 1,
                         (SELECT coalesce(max(version) + 1, 0) FROM policy_versions)) + 1
                     WHERE key = 'next_policy_version' RETURNING value - 1",
                    &[&(at_least.min(i64::MAX as u64) as i64)],
                )
                .await
                .map_err(pg_err("allocating a policy version"))
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Registers `policy` (its own version number) with `training` metadata
    /// and notifies every listener at commit. `Ok(false)`: that version is
    /// already registered, nothing written.
    pub fn insert(&self, policy: &DqnPolicy, training: serde_json::Value) -> Result<bool> {
        let origin = std::path::PathBuf::from(format!("{}/v{}", self.location(), policy.version));
        let (meta, weights) = checkpoint::to_bytes(policy, training, &origin)?;
        let (v, channel) = (policy.version as i64, self.channel());
        let pool = self.pg.pool().clone();
        self.pg.block_on(async move {
            let mut conn = Pg::conn(&pool).await?;
            let tx = conn.transaction().await.map_err(pg_err("registering a policy"))?;
            let n = tx
                .execute(
                    "INSERT INTO policy_versions (version, created_ms, policy_json, weights)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING",
                    &[&v, &(qroute_core::unix_ms() as i64), &meta, &weights],
                )
                .await
                .map_err(pg_err("registering a policy"))?;
            tx.execute("SELECT pg_notify($1, $2)", &[&channel, &v.to_string()])
                .await
                .map_err(pg_err("announcing a policy"))?;
            tx.commit().await.map_err(pg_err("committing a policy"))?;
            Ok(n == 1)
        })
    }

    /// Removes all but the newest `keep` versions; how many were removed.
    pub fn prune(&self, keep: usize) -> Result<usize> {
        let pool = self.pg.pool().clone();
        let n = self.pg.block_on(async move {
            Pg::conn(&pool)
                .await?
                .execute(
                    "DELETE FROM policy_versions WHERE version NOT IN
                       (SELECT version FROM policy_versions ORDER BY version DESC LIMIT $1)",
                    &[&(keep.max(1) as i64)],
                )
                .await
                .map_err(pg_err("pruning policy versions"))
        })?;
        Ok(n as usize)
    }

    /// Takes the trainer lock: at once or `Err` when `wait` is false, else
    /// waiting (checking every second) until the holder's session ends.
    pub fn lock_trainer(&self, wait: bool) -> Result<PgTrainerLock> {
        let key = qroute_store::pg::lock_key(self.pg.url().schema(), "trainer");
        let pool = self.pg.pool().clone();
        let (location, pg) = (self.location(), self.pg.clone());
        self.pg.block_on(async move {
            let conn = Pg::conn(&pool).await?;
            let mut said = false;
            loop {
                let got: bool = conn
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .map_err(pg_err("taking the trainer lock"))?
                    .get(0);
                if got {
                    return Ok(PgTrainerLock {
                        _conn: deadpool_postgres::Object::take(conn),
                        _pg: pg,
                    });
                }
                if !wait {
                    return Err(Error::InvalidInput(format!(
                        "another trainer is publishing to {location} (a gateway with learning.mode = \"online\", or qroute train --follow)"
                    )));
                }
                if !said {
                    tracing::info!(%location, "another trainer holds the lock; waiting to take over");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// Unparks `thread` whenever a version is published (by any process):
    /// starts this registry's LISTEN connection on first use.
    pub fn wake_on_publish(&self, thread: Thread) {
        self.wake.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        let mut listening = self.listening.lock().unwrap_or_else(|e| e.into_inner());
        if *listening {
            return;
        }
        *listening = true;
        let mut config = self.pg.url().config().clone();
        config.options(format!("-c search_path={}", self.pg.url().schema()));
        let (channel, wake) = (self.channel(), self.wake.clone());
        self.pg.spawn(async move {
            loop {
                if let Err(e) = listen(&config, &channel, &wake).await {
                    tracing::warn!(error = %e, "policy registry listener; reconnecting");
                }
                tokio::time::sleep(RELISTEN).await;
            }
        });
    }
}

/// One LISTEN session: wakes every registered thread per notification
/// (and once on connecting, in case one was missed while disconnected).
async fn listen(config: &tokio_postgres::Config, channel: &str, wake: &Mutex<Vec<Thread>>) -> Result<()> {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(pg_err("connecting the registry listener"))?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let wake_all = || {
        for t in wake.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.unpark();
        }
    };
    let statement = format!("LISTEN \"{channel}\"");
    let subscribe = client.batch_execute(&statement);
    // The connection must be polled for the LISTEN to complete.
    tokio::pin!(subscribe);
    loop {
        tokio::select! {
            done = &mut subscribe => { done.map_err(pg_err("LISTEN"))?; break; }
            msg = messages.next() => match msg {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg_err("registry listener")(e)),
                None => return Ok(()),
            },
        }
    }
    wake_all();
    while let Some(msg) = messages.next().await {
        match msg {
            Ok(tokio_postgres::AsyncMessage::Notification(_)) => wake_all(),
            Ok(_) => {}
            Err(e) => return Err(pg_err("registry listener")(e)),
        }
    }
    Ok(())
}
