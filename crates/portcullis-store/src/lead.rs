//! A SQLite write transaction that can send statements ahead of the next one in the same
//! round trip: the group commit's `SAVEPOINT` for a member travels with the member's
//! first statement instead of alone.
//!
//! Every statement is a hand-off from a task to sqlx's thread for the connection and
//! back, measured at 160–195 µs under load while the shared transaction's turn is held,
//! against 7–17 µs for SQLite to run a `SAVEPOINT`. sqlx runs a string of several
//! statements as one command and binds the arguments to them in order, so prepending
//! statements that take no arguments changes nothing for the statement's own. What sqlx
//! does not do is keep their results apart: their completions are skipped here, so
//! `rows_affected` and the rows are the statement's own.

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::sqlite::{SqliteQueryResult, SqliteRow, SqliteStatement, SqliteTypeInfo};
use sqlx::{Either, Execute, Executor, Sqlite, Transaction};

/// SQLite's side of [`crate::db::Tx`]: the transaction and what must run before its next
/// statement.
#[derive(Debug)]
pub struct SqliteTx {
    pub(crate) tx: Transaction<'static, Sqlite>,
    pub(crate) lead: Lead,
}

/// Statements waiting to go ahead of the next one, and what became of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lead {
    /// Nothing waiting.
    None,
    /// `sql`, `statements` statements without arguments, goes in front of the next
    /// statement.
    Pending {
        sql: &'static str,
        statements: usize,
    },
    /// They ran.
    Ran,
    /// The string carrying them failed before all of them had run: what they would have
    /// done is unknown.
    Failed,
}

impl SqliteTx {
    pub(crate) fn new(tx: Transaction<'static, Sqlite>) -> SqliteTx {
        SqliteTx {
            tx,
            lead: Lead::None,
        }
    }
}

/// The store's statements run on the transaction through this (see [`crate::on_tx`]): a
/// pending [`Lead`] goes with the first of them.
impl<'c> Executor<'c> for &'c mut SqliteTx {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        mut query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let SqliteTx { tx, lead } = self;
        let Lead::Pending { sql, statements } = *lead else {
            return tx.fetch_many(query);
        };
        let args = match query.take_arguments() {
            Ok(args) => args.unwrap_or_default(),
            Err(e) => return stream::once(async { Err(sqlx::Error::Encode(e)) }).boxed(),
        };
        let persistent = query.persistent();
        let joined = format!("{sql}; {}", query.sql().as_str());
        let joined = sqlx::query_with(sqlx::AssertSqlSafe(joined), args).persistent(persistent);
        // Until their completions have come back, an error may be theirs.
        *lead = Lead::Failed;
        let mut ahead = statements;
        tx.fetch_many(joined)
            .try_filter_map(move |step| {
                let step = match step {
                    Either::Left(_) if ahead > 0 => {
                        ahead -= 1;
                        if ahead == 0 {
                            *lead = Lead::Ran;
                        }
                        None
                    }
                    step => Some(step),
                };
                async move { Ok(step) }
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        if !matches!(self.lead, Lead::Pending { .. }) {
            return self.tx.fetch_optional(query);
        }
        // Read to the end: whether the statements ahead ran is known from their
        // completions, and the string's effects are then all done.
        Box::pin(async move {
            let mut steps = self.fetch_many(query);
            let mut first = None;
            while let Some(step) = steps.try_next().await? {
                if let Either::Right(row) = step {
                    first.get_or_insert(row);
                }
            }
            Ok(first)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.tx.prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.tx.describe(sql)
    }
}
