//! Events for apps: what their webhooks and realtime subscribers are told.
//!
//! An event is written in the transaction of the change it reports (the outbox pattern),
//! together with a row in `event_outbox` (written by a trigger, so no writer of events can
//! forget it); the relay takes outbox rows in its own
//! transaction and creates the deliveries. So an event exists if and only if its change
//! committed, and is fanned out at least once.
//!
//! Rows keep a snapshot of non-personal fields only. The message or inbound message the
//! event is about is read when the event is rendered, so personal data stays sealed in one
//! place (and an erased subject leaves nothing behind in old events).

use portcullis_domain::{AppId, E164, EventId, EventType, TenantId};
use sqlx::QueryBuilder;

use crate::messages::StatusChange;
use crate::{Store, StoreError, Tx, on_pool, on_tx};

const PHONE: &str = "events.phone";

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub kind: EventType,
    /// The message (`msg_…`) or inbound message (`inb_…`) the event is about.
    pub subject_id: Option<String>,
    /// Non-personal snapshot fields.
    pub data: serde_json::Value,
    /// The recipient of a `recipient.*` event.
    pub phone: Option<E164>,
    pub created_at: i64,
}

/// A stored event, opened.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Commit-independent insertion order, for resuming a stream.
    pub seq: i64,
    pub id: EventId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub kind: EventType,
    pub subject_id: Option<String>,
    pub data: serde_json::Value,
    pub phone: Option<E164>,
    pub created_at: i64,
}

/// An event taken off the outbox: who it is for and what kind it is, without its data.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub kind: EventType,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    tenant_id: String,
    app_id: String,
    r#type: String,
    subject_id: Option<String>,
    data: String,
    phone_sealed: Option<Vec<u8>>,
    created_at: i64,
}

const COLUMNS: &str =
    "seq, id, tenant_id, app_id, type, subject_id, data, phone_sealed, created_at";

impl Store {
    fn open_event(&self, r: EventRow) -> Result<EventRecord, StoreError> {
        let phone = match &r.phone_sealed {
            Some(p) => Some(E164::from_trusted(self.open_string(PHONE, &r.id, p)?)),
            None => None,
        };
        Ok(EventRecord {
            seq: r.seq,
            kind: EventType::parse(&r.r#type).map_err(StoreError::corrupt)?,
            data: serde_json::from_str(&r.data).map_err(StoreError::corrupt)?,
            phone,
            tenant_id: TenantId::from_trusted(r.tenant_id),
            app_id: AppId::from_trusted(r.app_id),
            subject_id: r.subject_id,
            created_at: r.created_at,
            id: EventId::from_trusted(r.id),
        })
    }

    /// Writes events (and so their outbox rows) in a transaction of their own, for events that
    /// change nothing else (a security alert).
    pub async fn emit_app_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        self.insert_app_events(&mut tx, events).await?;
        tx.commit().await
    }

    /// Writes events (and so their outbox rows) inside the caller's transaction.
    pub async fn insert_app_events(
        &self,
        tx: &mut Tx,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        for chunk in events.chunks(300) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|e| {
                    let phone = e
                        .phone
                        .as_ref()
                        .map(|p| self.seal(PHONE, e.id.as_str(), p.as_str().as_bytes()));
                    (e, e.data.to_string(), phone)
                })
                .collect();
            on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO events (id, tenant_id, app_id, type, subject_id, data, phone_sealed, created_at) ",
                );
                qb.push_values(&rows, |mut b, (e, data, phone)| {
                    b.push_bind(e.id.as_str())
                        .push_bind(e.tenant_id.as_str())
                        .push_bind(e.app_id.as_str())
                        .push_bind(e.kind.as_str())
                        .push_bind(e.subject_id.as_deref())
                        .push_bind(data.as_str())
                        .push_bind(phone.as_ref())
                        .push_bind(e.created_at);
                });
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    /// Writes the events of message status changes. The app and tenant come from the
    /// message row, in the same statement, so callers need not carry them.
    pub(crate) async fn insert_status_events(
        &self,
        tx: &mut Tx,
        changes: &[StatusChange],
        now: i64,
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, EventType, String, &str)> = changes
            .iter()
            .filter_map(|c| {
                let kind = EventType::for_status(c.status)?;
                let mut data = serde_json::json!({ "status": c.status.as_str() });
                if let Some(conn) = &c.connection_id {
                    data["connection_id"] = conn.as_str().into();
                }
                if let Some(pid) = &c.provider_message_id {
                    data["provider_message_id"] = pid.as_str().into();
                }
                if c.error_code.is_some() || c.detail.is_some() {
                    data["error"] = serde_json::json!({ "code": c.error_code, "detail": c.detail });
                }
                Some((
                    EventId::new().into_string(),
                    kind,
                    data.to_string(),
                    c.id.as_str(),
                ))
            })
            .collect();
        for chunk in rows.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO events (id, tenant_id, app_id, type, subject_id, data, created_at) \
                     SELECT v.column1, m.tenant_id, m.app_id, v.column2, m.id, v.column3, ",
                );
                qb.push_bind(now).push(" FROM (");
                qb.push_values(chunk, |mut b, (id, kind, data, msg)| {
                    b.push_bind(id.as_str())
                        .push_bind(kind.as_str())
                        .push_bind(data.as_str())
                        .push_bind(*msg);
                });
                qb.push(") AS v JOIN messages m ON m.id = v.column4");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    /// Takes up to `limit` events off the outbox, oldest first, inside the relay's
    /// transaction: if it rolls back, they stay for the next try. Concurrent relays (several
    /// instances on PostgreSQL) skip each other's rows.
    ///
    /// Only what fanning out needs is read, not the events' data: most events have no
    /// webhook endpoint and no realtime subscriber to be rendered for, and those that do are
    /// loaded when rendered ([`Store::events_by_ids`]).
    pub async fn take_outbox(
        &self,
        tx: &mut Tx,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        type Head = (i64, String, String, String, String);
        let limit = i64::from(limit);
        let rows: Vec<Head> = match tx {
            // One writer: nothing else touches the outbox between the read and the delete,
            // and every outbox row has its event (the sweep keeps those), so the rows
            // deleted are exactly those read. Both statements go in one round trip (sqlx
            // binds `$1` to both).
            Tx::Sqlite(t) => {
                sqlx::query_as(
                    "SELECT e.seq, e.id, e.tenant_id, e.app_id, e.type FROM event_outbox o \
                     JOIN events e ON e.seq = o.seq ORDER BY o.seq LIMIT $1; \
                     DELETE FROM event_outbox WHERE seq <= \
                     (SELECT max(seq) FROM (SELECT seq FROM event_outbox ORDER BY seq LIMIT $1))",
                )
                .bind(limit)
                .fetch_all(t)
                .await?
            }
            Tx::Postgres(c) => {
                sqlx::query_as(
                    "WITH taken AS (DELETE FROM event_outbox WHERE seq IN \
                     (SELECT seq FROM event_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING seq) \
                     SELECT e.seq, e.id, e.tenant_id, e.app_id, e.type FROM taken \
                     JOIN events e ON e.seq = taken.seq ORDER BY e.seq",
                )
                .bind(limit)
                .fetch_all(&mut **c)
                .await?
            }
        };
        rows.into_iter()
            .map(|(_, id, tenant_id, app_id, kind)| {
                Ok(OutboxEntry {
                    kind: EventType::parse(&kind).map_err(StoreError::corrupt)?,
                    id: EventId::from_trusted(id),
                    tenant_id: TenantId::from_trusted(tenant_id),
                    app_id: AppId::from_trusted(app_id),
                })
            })
            .collect()
    }

    /// Events by id (any app: the caller holds ids it was given by the store).
    pub async fn events_by_ids(&self, ids: &[&str]) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<EventRow> = on_pool!(self.db.read(), |p| {
                let mut qb =
                    QueryBuilder::new(format!("SELECT {COLUMNS} FROM events WHERE id IN ("));
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") ORDER BY seq");
                qb.build_query_as().fetch_all(p).await
            })?;
            for r in rows {
                out.push(self.open_event(r)?);
            }
        }
        Ok(out)
    }

    /// The position of one of an app's events in its stream, for resuming after it.
    pub async fn event_seq(&self, app: &AppId, id: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT seq FROM events WHERE app_id = $1 AND id = $2"
        )
        .bind(app.as_str())
        .bind(id)
        .fetch_optional(p)
        .await)?;
        row.map(|(s,)| s).ok_or(StoreError::NotFound)
    }

    /// An app's events after position `after_seq`, oldest first.
    pub async fn events_since(
        &self,
        app: &AppId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<EventRow> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events WHERE app_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            )))
            .bind(app.as_str())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await
        })?;
        rows.into_iter().map(|r| self.open_event(r)).collect()
    }

    /// Deletes events older than `before` that no delivery still waits for.
    pub async fn sweep_events(&self, before: i64) -> Result<u64, StoreError> {
        let n = on_pool!(self.db.write(), |p| sqlx::query(
            "DELETE FROM events WHERE created_at < $1 AND id NOT IN \
             (SELECT event_id FROM webhook_deliveries WHERE status = 'pending') \
             AND seq NOT IN (SELECT seq FROM event_outbox)"
        )
        .bind(before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
