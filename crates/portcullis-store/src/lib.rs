//! Portcullis persistence: the SQLite and PostgreSQL pools, migrations, and one module per
//! aggregate (tenants, apps, API keys, messages, inbound messages, idempotency records,
//! provider connections).
//!
//! Rules every module follows:
//! - A function that reads tenant data takes the tenant or app it is scoped to; the only
//!   unscoped lookup is [`keys::find_by_prefixes_with_app`], which is how a scope is established.
//! - Personal data is sealed by [`Store`] before it is written and opened after it is
//!   read, so no caller can forget to; the AAD names the row and column.
//! - Time is unix milliseconds ([`db::now_ms`]).

pub mod apps;
pub mod audit;
pub mod connections;
pub mod db;
pub mod events;
mod group;
pub mod guard;
pub mod idempotency;
pub mod inbound;
pub mod keys;
pub mod lead;
pub mod messages;
pub mod policy;
pub mod provider_tokens;
pub mod tenants;
pub mod webhooks;

use std::sync::Arc;

use portcullis_crypto::Keyring;

pub use db::{Backend, Db, HeldReader, Pool, ReadVia, Tx, now_ms};
pub use group::{Durable, SharedTx};

/// Errors of the persistence layer. Callers at the HTTP edge turn every variant except
/// [`StoreError::NotFound`] and [`StoreError::Conflict`] into an opaque 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A broken invariant of ours, not of the data or the database.
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl StoreError {
    pub(crate) fn config(e: impl std::fmt::Display) -> Self {
        StoreError::Config(e.to_string())
    }

    pub(crate) fn corrupt(e: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(e.to_string())
    }

    /// True when the error is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation())
    }
}

/// The database together with the keyring that seals personal data in it.
#[derive(Clone, Debug)]
pub struct Store {
    pub db: Db,
    keyring: Arc<Keyring>,
}

impl Store {
    pub fn new(db: Db, keyring: Arc<Keyring>) -> Store {
        Store { db, keyring }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Seals a value for `table.column` of row `id`.
    pub(crate) fn seal(&self, column: &str, id: &str, plaintext: &[u8]) -> Vec<u8> {
        self.keyring.seal(plaintext, aad(column, id).as_bytes())
    }

    pub(crate) fn open_string(
        &self,
        column: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<String, StoreError> {
        let bytes = self
            .keyring
            .open(sealed, aad(column, id).as_bytes())
            .map_err(StoreError::corrupt)?;
        String::from_utf8(bytes).map_err(StoreError::corrupt)
    }

    /// The keyed blind index of a phone number, for equality lookups without plaintext.
    pub fn phone_index(&self, phone: &portcullis_domain::E164) -> String {
        self.keyring
            .blind_index_hex("phone", phone.as_str().as_bytes())
    }
}

fn aad(column: &str, id: &str) -> String {
    format!("{column}:{id}")
}

/// `Ok` when a scoped write touched a row, `NotFound` when nothing matched: another
/// tenant's or app's id is indistinguishable from a missing one.
pub(crate) fn found(rows_affected: u64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// An opaque pagination cursor: the sort key of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        let at = at.parse().ok()?;
        if id.is_empty()
            || id.len() > 80
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        Some(Cursor {
            at,
            id: id.to_owned(),
        })
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Appends the keyset condition of a newest-first listing ordered by (`column`, id).
pub(crate) fn push_cursor<DB: sqlx::Database>(
    qb: &mut sqlx::QueryBuilder<DB>,
    column: &'static str,
    cursor: Option<&Cursor>,
) where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if let Some(c) = cursor {
        qb.push(format!(" AND ({column} < "))
            .push_bind(c.at)
            .push(format!(" OR ({column} = "))
            .push_bind(c.at)
            .push(" AND id < ")
            .push_bind(c.id.clone())
            .push("))");
    }
}

/// Cuts a `limit + 1` fetch to a page and its next cursor.
pub(crate) fn paginate<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> Cursor,
) -> Page<T> {
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(&cursor_of)
    } else {
        None
    };
    Page { items, next }
}
