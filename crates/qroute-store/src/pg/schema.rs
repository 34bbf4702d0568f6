//! The PostgreSQL schema and its migrations, embedded in the binary.
//!
//! Migrations are numbered and applied in order, each in its own
//! transaction, by whichever process takes the schema's advisory lock first
//! (the others wait, then find nothing to do), so several replicas can start
//! at once. `schema_migrations` records what was applied. A read command
//! only [`check`]s: it never creates or changes a schema.

use deadpool_postgres::Pool;
use qroute_core::{Error, Result};

use super::{pg_err, Pg};

/// `(version, SQL)`: never edit a released entry, add a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    -- Counters: next_seq (one past the newest decision; its row lock orders
    -- appends, so sequence numbers commit in order), first_kept, removed,
    -- pruned_before_ms (what retention removed).
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta VALUES ('next_seq', 0), ('first_kept', 0), ('removed', 0), ('pruned_before_ms', 0);

    -- Decisions in the store's binary encoding (the sled store's codec).
    CREATE TABLE decisions (
        seq BIGINT PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        time_ms BIGINT NOT NULL,
        record BYTEA NOT NULL
    );
    CREATE INDEX decisions_time ON decisions (time_ms);

    CREATE TABLE outcomes (
        request_id TEXT NOT NULL,
        model TEXT NOT NULL,
        outcome BYTEA NOT NULL,
        PRIMARY KEY (request_id, model)
    );
    -- Decisions with at least one outcome, numbered densely as they got
    -- their first one: replay sampling draws a rank.
    CREATE TABLE rewarded (rank BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL UNIQUE);
    CREATE TABLE answers (request_id TEXT PRIMARY KEY, answered JSONB NOT NULL);
    -- Keyed by the decision that answered (Answered::decision_id).
    CREATE TABLE feedback (decision_id TEXT PRIMARY KEY, record JSONB NOT NULL);
    -- Small documents: experiments, keys, spend.
    CREATE TABLE docs (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (kind, key)
    );

    -- The policy registry: one row per version, the checkpoint's two
    -- files byte for byte (policy.json, model.safetensors).
    CREATE TABLE policy_versions (
        version BIGINT PRIMARY KEY,
        created_ms BIGINT NOT NULL,
        policy_json BYTEA NOT NULL,
        weights BYTEA NOT NULL
    );
    -- The next unused version number (never reused, across rollbacks).
    INSERT INTO meta VALUES ('next_policy_version', 1);
    "#,
    ),
    (
        2,
        r#"
    -- One append in one statement: the next_seq row lock (which orders
    -- appends across replicas) is held for this call and its commit, not
    -- for a client's round trips. Returns the request id of a decision
    -- already stored with other content (nothing written), else NULL.
    CREATE FUNCTION append_decisions(ids TEXT[], times BIGINT[], records BYTEA[]) RETURNS TEXT
    LANGUAGE plpgsql AS $$
    DECLARE
        next BIGINT;
        conflict TEXT;
    BEGIN
        SELECT value INTO next FROM meta WHERE key = 'next_seq' FOR UPDATE;
        SELECT d.request_id INTO conflict
        FROM decisions d JOIN UNNEST(ids, records) AS t(id, rec) ON d.request_id = t.id
        WHERE d.record <> t.rec LIMIT 1;
        IF conflict IS NOT NULL THEN
            RETURN conflict;
        END IF;
        WITH fresh AS (
            SELECT t.id, t.tm, t.rec, row_number() OVER (ORDER BY t.ord) - 1 AS k
            FROM UNNEST(ids, times, records) WITH ORDINALITY AS t(id, tm, rec, ord)
            WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.request_id = t.id)
        ), inserted AS (
            INSERT INTO decisions (seq, request_id, time_ms, record)
            SELECT next + k, id, tm, rec FROM fresh RETURNING 1
        )
        UPDATE meta SET value = next + (SELECT count(*) FROM inserted) WHERE key = 'next_seq';
        RETURN NULL;
    END
    $$;
    "#,
    ),
];

/// The newest schema version this build knows.
pub const VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// A 64-bit advisory lock key per schema, so two stores in one database do
/// not wait for each other.
pub fn lock_key(schema: &str, purpose: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes().chain([0]).chain(purpose.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Creates the schema if missing and applies every migration not applied
/// yet.
pub(super) async fn migrate(pool: Pool, schema: String) -> Result<()> {
    let mut conn = Pg::conn(&pool).await?;
    let key = lock_key(&schema, "migrate");
    conn.execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(pg_err("taking the migration lock"))?;
    let result = async {
        conn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_ms BIGINT NOT NULL);"
        ))
        .await
        .map_err(pg_err("creating the schema"))?;
        let applied = applied_version(&conn).await?;
        if applied > VERSION {
            return Err(newer(applied));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            let tx = conn.transaction().await.map_err(pg_err("migrating"))?;
            tx.batch_execute(sql)
                .await
                .map_err(pg_err(&format!("applying migration {version}")))?;
            tx.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)",
                &[version, &(qroute_core::unix_ms() as i64)],
            )
            .await
            .map_err(pg_err("recording a migration"))?;
            tx.commit().await.map_err(pg_err("committing a migration"))?;
            tracing::info!(schema, version, "applied store migration");
        }
        Ok(())
    }
    .await;
    let unlocked = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(pg_err("releasing the migration lock"));
    result.and(unlocked.map(drop))
}

/// Checks that the schema exists at this build's version, changing nothing.
pub(super) async fn check(pool: Pool, schema: String) -> Result<()> {
    let conn = Pg::conn(&pool).await?;
    let exists = conn
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg_err("reading the schema"))?
        .get::<_, bool>(0);
    if !exists {
        return Err(Error::InvalidInput(format!(
            "no qroute store in schema {schema:?} of that database (a gateway or trainer creates it)"
        )));
    }
    match applied_version(&conn).await? {
        v if v > VERSION => Err(newer(v)),
        v if v < VERSION => Err(Error::InvalidInput(format!(
            "the store in schema {schema:?} is at version {v}; start a gateway of this build on it once to migrate it"
        ))),
        _ => Ok(()),
    }
}

async fn applied_version(conn: &tokio_postgres::Client) -> Result<i32> {
    Ok(conn
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await
        .map_err(pg_err("reading schema_migrations"))?
        .get(0))
}

fn newer(v: i32) -> Error {
    Error::InvalidInput(format!(
        "the store's schema is at version {v}, newer than this build's {VERSION}: upgrade qroute"
    ))
}
