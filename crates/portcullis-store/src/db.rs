//! Connection pools for the two supported backends and the dispatch macros that let one
//! body of SQL serve both.
//!
//! We keep one `enum` per pool kind instead of sqlx's `Any` driver: `Any` converts every
//! argument and row at run time and supports only basic types, while the enum lets each
//! backend run its native driver. Query text is shared (SQLite accepts `$N` placeholders);
//! the few statements that differ (`FOR UPDATE SKIP LOCKED`) branch on [`Backend`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, SqliteConnection, SqlitePool, Transaction};

use crate::StoreError;
use crate::group::{Group, SharedTx};
use crate::lead::SqliteTx;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool of one backend.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open write transaction of one backend.
pub enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$p` bound to the concrete pool of whichever backend `$pool` is.
/// The body is type-checked once per backend, so it must compile for both.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

/// A read connection kept by one long-lived task instead of borrowed from the pool for
/// each query: the batched readers (API keys, the guard), which run a query every few
/// requests.
///
/// sqlx pings every connection returned to its pool, whatever the pool's options: on
/// SQLite a round trip to the connection's thread, on PostgreSQL one to the server. For
/// the batched readers that was one extra hand-off per query. A held connection is taken
/// out of the pool's count (`detach`), so the pool may open another in its place; after
/// an error it is dropped and the next query takes a fresh one.
pub struct HeldReader {
    pool: Pool,
    conn: Option<Conn>,
}

/// A connection of one backend.
pub enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl HeldReader {
    /// A reader on `db`'s read pool; it takes its connection with its first query.
    pub fn new(db: &Db) -> HeldReader {
        HeldReader {
            pool: db.read.clone(),
            conn: None,
        }
    }

    /// The held connection, taken from the pool if there is none.
    pub async fn conn(&mut self) -> Result<&mut Conn, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match &self.pool {
                Pool::Sqlite(p) => Conn::Sqlite(p.acquire().await?.detach()),
                Pool::Postgres(p) => Conn::Postgres(p.acquire().await?.detach()),
            },
        };
        Ok(self.conn.insert(conn))
    }

    /// Drops the connection (after an error: it may be broken).
    pub fn discard(&mut self) {
        self.conn = None;
    }

    /// Whether an error says the connection broke (a server restarted, an idle connection
    /// closed by the server or a proxy) rather than that the query did: a read that failed
    /// so is worth once more on a fresh connection.
    pub fn worth_retrying(err: &sqlx::Error) -> bool {
        matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P")))
    }
}

/// Where a read runs: a connection borrowed from the read pool for the one query, or the
/// connection a [`HeldReader`] keeps.
pub enum ReadVia<'a> {
    Pool(&'a Pool),
    Held(&'a mut HeldReader),
}

/// Runs `$body` with `$e` bound to whichever executor `$via` ([`ReadVia`]) names. A held
/// connection whose query failed is discarded, and a read that failed because the
/// connection did (see [`HeldReader::worth_retrying`]) runs once more on a fresh one, so
/// requests do not fail where the pool's ping would have caught the dead connection. The
/// body must compile for the pools and the connections of both backends, and may run
/// twice.
#[macro_export]
macro_rules! on_read {
    ($via:expr, |$e:ident| $body:expr) => {
        match $via {
            $crate::db::ReadVia::Pool($crate::db::Pool::Sqlite($e)) => $body,
            $crate::db::ReadVia::Pool($crate::db::Pool::Postgres($e)) => $body,
            $crate::db::ReadVia::Held(held) => {
                let mut retried = false;
                loop {
                    let result = match held.conn().await {
                        Ok($crate::db::Conn::Sqlite($e)) => $body,
                        Ok($crate::db::Conn::Postgres($e)) => $body,
                        Err(e) => Err(e),
                    };
                    match result {
                        Err(err) => {
                            held.discard();
                            if retried || !$crate::db::HeldReader::worth_retrying(&err) {
                                break Err(err);
                            }
                            retried = true;
                        }
                        ok => break ok,
                    }
                }
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the connection inside the transaction `$tx`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $c = t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// The database: a read pool and a write pool.
///
/// SQLite allows one writer at a time; giving writes their own single-connection pool
/// makes writers queue fairly inside sqlx instead of spinning on `SQLITE_BUSY`, while
/// readers (WAL mode) never wait for the writer. On PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    read: Pool,
    write: Pool,
    backend: Backend,
    /// SQLite's shared write transaction (`None` on PostgreSQL).
    group: Option<Arc<Group>>,
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        let db = Self::connect_without_migrating(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without touching the schema.
    pub async fn connect_without_migrating(url: &str) -> Result<Db, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(StoreError::config)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            let pool = Pool::Postgres(pool);
            Ok(Db {
                read: pool.clone(),
                write: pool,
                backend: Backend::Postgres,
                group: None,
            })
        } else if url.starts_with("sqlite:") {
            // FULL synchronous: a commit is on disk before we answer 202. Throughput comes
            // from committing many requests per transaction, not from weaker durability.
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::config)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("wal_autocheckpoint", "4000")
                .pragma("temp_store", "memory")
                // sqlx's worker thread hands rows over through a channel of this size and
                // stops at a full one until the task awaiting them is scheduled again: at the
                // default (50), a batch of a few hundred rows took several of those waits,
                // on the single writer, while it held the shared transaction.
                .row_buffer_size(1024);
            // No ping before handing out a connection: an SQLite connection is a thread of
            // ours, not a socket that can go stale, and the ping is a round trip to that
            // thread on every acquire (measured: a large share of the futex wake-ups).
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Db {
                read: Pool::Sqlite(read),
                group: Some(Group::start(write.clone())),
                write: Pool::Sqlite(write),
                backend: Backend::Sqlite,
            })
        } else {
            Err(StoreError::Config(
                "database URL must start with sqlite:// or postgres://".to_owned(),
            ))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads.
    pub fn read(&self) -> &Pool {
        &self.read
    }

    /// The pool for single-statement writes outside a transaction.
    pub fn write(&self) -> &Pool {
        &self.write
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`) so a transaction never fails half-way on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.write {
            Pool::Sqlite(p) => Tx::Sqlite(SqliteTx::new(p.begin_with("BEGIN IMMEDIATE").await?)),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Begins a write transaction that, on SQLite, is shared with the other writers of
    /// the pipeline and committed with them (`group`). For the hot, batched writers; a
    /// writer that must not wait on others' statements takes [`Db::begin`].
    pub async fn begin_shared(&self) -> Result<SharedTx, StoreError> {
        match &self.group {
            Some(group) => group.join().await,
            None => Ok(SharedTx::own(self.begin().await?)),
        }
    }

    /// Runs the migrations of this backend (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.write {
            Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.read, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(&self.write, |p| p.close().await);
        on_pool!(&self.read, |p| p.close().await);
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.tx.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.tx.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Milliseconds since the Unix epoch: the one time representation in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
