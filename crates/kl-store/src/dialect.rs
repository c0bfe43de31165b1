//! SQLite and PostgreSQL behind one set of queries.
//!
//! The store talks to both through sqlx's `Any` driver, so each query is written once, in the
//! SQL the two share:
//! - placeholders are `$1..$N`: PostgreSQL's own, and sqlx-sqlite binds `$N` by its number;
//! - values are the types `Any` carries: text, `i64`, bytes. Times are RFC 3339 text or Unix
//!   microseconds (`i64`), as they always were on SQLite, computed in Rust: no SQL date
//!   functions. Booleans are stored as 0/1, and `u64`s as `i64`;
//! - upserts are `ON CONFLICT … DO UPDATE/NOTHING` (never SQLite's `INSERT OR IGNORE/REPLACE`),
//!   and both support `RETURNING`;
//! - `SUM` is cast to `BIGINT` (PostgreSQL sums `BIGINT` into `NUMERIC`, which `Any` cannot
//!   read); two-argument `MIN` (SQLite) and `LEAST` (PostgreSQL) are written as `CASE`.
//!
//! The schema is the same table for table, in one migrations directory per backend with the
//! same numbering (`migrations/sqlite`, `migrations/postgres`). PostgreSQL's spells SQLite's
//! `INTEGER` as `BIGINT`, `BLOB` as `BYTEA`, `INTEGER PRIMARY KEY AUTOINCREMENT` as an identity
//! column, drops `WITHOUT ROWID`, gives the dead letters an explicit `rowid` (their listing
//! order), and declares text `COLLATE "C"` so it compares bytewise as on SQLite.
//!
//! What differs beyond the SQL is here: opening a pool, and [`Store::begin_write`]. The broker's
//! lease (`FOR UPDATE SKIP LOCKED`) and its durable enqueue (SQLite's `synchronous`) are in
//! `queue.rs`, next to the queries they change.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Transaction};

use crate::{Result, Store};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connections per store: SQLite serialises writers anyway, and a PostgreSQL server is shared.
const MAX_CONNECTIONS: u32 = 8;

/// How long a SQLite writer waits for another's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL advisory lock that stands in for SQLite's database write lock.
const WRITE_LOCK: i64 = 0x6b6c_5f73_746f_7265; // "kl_store"

/// A pool on the SQLite file at `path`, created if missing, in WAL mode with a busy timeout
/// and foreign keys on. `Any` opens SQLite from a URL, which carries none of these settings,
/// so each new connection sets them itself.
pub(crate) async fn connect_sqlite(path: &Path) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .to_url_lossy();
    let options = AnyConnectOptions::from_url(&url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .after_connect(|conn, _| {
            Box::pin(async move {
                let pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON;",
                    SQLITE_BUSY_TIMEOUT.as_millis()
                );
                // Built from constants above: nothing to inject.
                conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A pool on the PostgreSQL database at `url`.
pub(crate) async fn connect_postgres(url: &str) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    // sqlx's TLS takes rustls' process-wide crypto provider, which rustls cannot choose itself
    // when several are linked (`kl` links ring for kube and aws-lc-rs for the S3 client):
    // aws-lc-rs, as sqlx's TLS feature names. One a process installed already stays.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let options = AnyConnectOptions::from_str(url)?;
    Ok(AnyPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await?)
}

impl Store {
    /// Begins a transaction that holds the store's one write lock from its first statement,
    /// for read-then-write transactions (quota checks, merges) that must not interleave.
    /// SQLite: `BEGIN IMMEDIATE` takes the database's write lock. PostgreSQL: a transaction
    /// advisory lock, so these transactions are serialised as on SQLite, while plain writes
    /// and reads go on beside them.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `SqliteConnectOptions` used to set, now set by every connection of the `Any` pool.
    #[tokio::test]
    async fn sqlite_connections_run_wal_with_a_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let pool = connect_sqlite(&dir.path().join("kl.db")).await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..2 {
            let mut conn = pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            for (pragma, want) in [
                ("PRAGMA busy_timeout", 10_000),
                ("PRAGMA foreign_keys", 1),
                ("PRAGMA synchronous", 1),
            ] {
                let got: i64 = sqlx::query_scalar(pragma).fetch_one(&mut *conn).await.unwrap();
                assert_eq!(got, want, "{pragma}");
            }
            // Held, so the second round gets a second connection.
            conns.push(conn);
        }
    }
}
