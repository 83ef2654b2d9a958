//! Outbound messages and their status history.
//!
//! Recipient, body and metadata are sealed under the keyring with the message id in the
//! AAD; the recipient is also kept as a keyed blind index for filtering. Writes that the
//! pipeline makes in bulk (accept, claim, outcomes, receipts) take a [`Tx`] so they commit
//! together with their queue jobs.

use portcullis_domain::template::WhatsappTemplate;
use portcullis_domain::{
    AppId, Channel, ConnectionId, E164, Encoding, KeyId, MessageId, MessageStatus, Milestone,
    Purpose, TenantId,
};
use std::collections::HashMap;

use serde::Serialize;
use sqlx::QueryBuilder;

use crate::{Cursor, Page, Store, StoreError, Tx, now_ms, on_pool, on_tx, paginate, push_cursor};

const RECIPIENT: &str = "messages.recipient";
const BODY: &str = "messages.body";
const METADATA: &str = "messages.metadata";
const TEMPLATE: &str = "messages.template";
const EXPIRED_DETAIL: &str = "validity period ended before the message could be sent";

/// A message about to be accepted.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub key_id: KeyId,
    pub to: E164,
    pub from: Option<String>,
    pub channel: Channel,
    pub purpose: Purpose,
    pub body: String,
    pub metadata: Option<serde_json::Value>,
    pub encoding: Encoding,
    pub segments: u32,
    pub status: MessageStatus,
    pub test_mode: bool,
    pub send_at: Option<i64>,
    /// Past this time the message expires instead of being sent.
    pub expires_at: i64,
    pub created_at: i64,
}

/// A message with its personal data sealed, ready to insert.
#[derive(Debug, Clone)]
pub struct SealedMessage {
    pub message: NewMessage,
    recipient_sealed: Vec<u8>,
    recipient_index: String,
    body_sealed: Vec<u8>,
    metadata_sealed: Option<Vec<u8>>,
    template_sealed: Option<Vec<u8>>,
}

impl SealedMessage {
    /// The recipient's blind index ([`Store::phone_index`]).
    pub fn recipient_index(&self) -> &str {
        &self.recipient_index
    }
}

/// A stored message, opened.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub to: E164,
    pub from: Option<String>,
    pub channel: Channel,
    pub purpose: Purpose,
    pub body: String,
    pub metadata: Option<serde_json::Value>,
    /// The WhatsApp template to send instead of `body`, if the app asked for one.
    pub template: Option<WhatsappTemplate>,
    pub encoding: Encoding,
    pub segments: u32,
    pub status: MessageStatus,
    pub test_mode: bool,
    pub send_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub connection_id: Option<ConnectionId>,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One entry of a message's status history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryEntry {
    pub status: Milestone,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    tenant_id: String,
    app_id: String,
    recipient_sealed: Vec<u8>,
    sender: Option<String>,
    channel: String,
    purpose: String,
    body_sealed: Vec<u8>,
    metadata_sealed: Option<Vec<u8>>,
    template_sealed: Option<Vec<u8>>,
    encoding: String,
    segments: i64,
    status: String,
    test_mode: i64,
    send_at: Option<i64>,
    expires_at: Option<i64>,
    connection_id: Option<String>,
    provider_message_id: Option<String>,
    error_code: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, app_id, recipient_sealed, sender, channel, purpose, \
     body_sealed, metadata_sealed, template_sealed, encoding, segments, status, test_mode, send_at, \
     expires_at, connection_id, provider_message_id, error_code, created_at, updated_at";

fn parse_encoding(s: &str) -> Result<Encoding, StoreError> {
    match s {
        "gsm7" => Ok(Encoding::Gsm7),
        "ucs2" => Ok(Encoding::Ucs2),
        other => Err(StoreError::corrupt(format!("unknown encoding {other}"))),
    }
}

fn encoding_str(e: Encoding) -> &'static str {
    match e {
        Encoding::Gsm7 => "gsm7",
        Encoding::Ucs2 => "ucs2",
    }
}

impl Store {
    fn open_message(&self, r: MessageRow) -> Result<MessageRecord, StoreError> {
        let to = self.open_string(RECIPIENT, &r.id, &r.recipient_sealed)?;
        let body = self.open_string(BODY, &r.id, &r.body_sealed)?;
        let metadata = match &r.metadata_sealed {
            Some(m) => Some(
                serde_json::from_str(&self.open_string(METADATA, &r.id, m)?)
                    .map_err(StoreError::corrupt)?,
            ),
            None => None,
        };
        let template = match &r.template_sealed {
            Some(t) => Some(
                serde_json::from_str(&self.open_string(TEMPLATE, &r.id, t)?)
                    .map_err(StoreError::corrupt)?,
            ),
            None => None,
        };
        Ok(MessageRecord {
            template,
            to: E164::from_trusted(to),
            body,
            metadata,
            tenant_id: TenantId::from_trusted(r.tenant_id),
            app_id: AppId::from_trusted(r.app_id),
            from: r.sender,
            channel: Channel::parse(&r.channel).map_err(StoreError::corrupt)?,
            purpose: Purpose::parse(&r.purpose).map_err(StoreError::corrupt)?,
            encoding: parse_encoding(&r.encoding)?,
            segments: u32::try_from(r.segments).map_err(StoreError::corrupt)?,
            status: MessageStatus::parse(&r.status).map_err(StoreError::corrupt)?,
            test_mode: r.test_mode != 0,
            send_at: r.send_at,
            expires_at: r.expires_at,
            connection_id: r.connection_id.map(ConnectionId::from_trusted),
            provider_message_id: r.provider_message_id,
            error_code: r.error_code,
            created_at: r.created_at,
            updated_at: r.updated_at,
            id: MessageId::from_trusted(r.id),
        })
    }

    /// Seals a message's personal data. Done by the request handler, on whatever core it
    /// runs on, so the single committer only writes.
    pub fn seal_message(&self, m: NewMessage) -> Result<SealedMessage, StoreError> {
        let id = m.id.as_str();
        let metadata_sealed = match &m.metadata {
            Some(v) => Some(
                self.seal(
                    METADATA,
                    id,
                    serde_json::to_string(v)
                        .map_err(StoreError::corrupt)?
                        .as_bytes(),
                ),
            ),
            None => None,
        };
        Ok(SealedMessage {
            recipient_sealed: self.seal(RECIPIENT, id, m.to.as_str().as_bytes()),
            recipient_index: self.phone_index(&m.to),
            body_sealed: self.seal(BODY, id, m.body.as_bytes()),
            metadata_sealed,
            template_sealed: None,
            message: m,
        })
    }

    /// Makes a sealed message a WhatsApp template message. Separate from
    /// [`seal_message`](Store::seal_message) so the many places that build plain messages
    /// need not know templates exist.
    pub fn seal_template(
        &self,
        sealed: &mut SealedMessage,
        template: &WhatsappTemplate,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(template).map_err(StoreError::corrupt)?;
        sealed.template_sealed =
            Some(self.seal(TEMPLATE, sealed.message.id.as_str(), json.as_bytes()));
        Ok(())
    }

    /// Inserts accepted messages inside the caller's transaction.
    pub async fn insert_messages(
        &self,
        tx: &mut Tx,
        msgs: &[&SealedMessage],
    ) -> Result<(), StoreError> {
        // Multi-row INSERTs: at thousands of messages a second the per-statement round
        // trip, not the row, is what costs. 20 columns × 500 rows stays under SQLite's
        // and PostgreSQL's bind-parameter limits.
        for chunk in msgs.chunks(500) {
            on_tx!(tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO messages (id, tenant_id, app_id, key_id, recipient_sealed, \
                     recipient_index, sender, channel, purpose, body_sealed, metadata_sealed, \
                     template_sealed, encoding, segments, status, test_mode, send_at, expires_at, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut b, s| {
                    let m = &s.message;
                    b.push_bind(m.id.as_str())
                        .push_bind(m.tenant_id.as_str())
                        .push_bind(m.app_id.as_str())
                        .push_bind(m.key_id.as_str())
                        .push_bind(&s.recipient_sealed)
                        .push_bind(&s.recipient_index)
                        .push_bind(m.from.as_deref())
                        .push_bind(m.channel.as_str())
                        .push_bind(m.purpose.as_str())
                        .push_bind(&s.body_sealed)
                        .push_bind(s.metadata_sealed.as_ref())
                        .push_bind(s.template_sealed.as_ref())
                        .push_bind(encoding_str(m.encoding))
                        .push_bind(i64::from(m.segments))
                        .push_bind(m.status.as_str())
                        .push_bind(i64::from(m.test_mode))
                        .push_bind(m.send_at)
                        .push_bind(m.expires_at)
                        .push_bind(m.created_at)
                        .push_bind(m.created_at);
                });
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        // A message's first history entry is implied by its row (queued or scheduled);
        // a held one says so explicitly, so its history keeps showing the hold after a
        // review moved it on.
        let held: Vec<_> = msgs
            .iter()
            .filter(|s| s.message.status == MessageStatus::Held)
            .map(|s| {
                (
                    s.message.id.clone(),
                    HistoryEntry {
                        status: MessageStatus::Held.into(),
                        at: s.message.created_at,
                        connection_id: None,
                        provider_message_id: None,
                        part: None,
                        detail: None,
                    },
                )
            })
            .collect();
        insert_events(tx, &held).await
    }

    /// One message of an app.
    pub async fn get_message(
        &self,
        app: &AppId,
        id: &MessageId,
    ) -> Result<MessageRecord, StoreError> {
        let row: Option<MessageRow> =
            on_pool!(self.db.read(), |p| sqlx::query_as(sqlx::AssertSqlSafe(
                format!("SELECT {COLUMNS} FROM messages WHERE app_id = $1 AND id = $2")
            ))
            .bind(app.as_str())
            .bind(id.as_str())
            .fetch_optional(p)
            .await)?;
        self.open_message(row.ok_or(StoreError::NotFound)?)
    }

    /// Messages by id, of any app: for rendering events whose scope the caller holds.
    pub async fn messages_by_ids(&self, ids: &[&str]) -> Result<Vec<MessageRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<MessageRow> = on_pool!(self.db.read(), |p| {
                let mut qb =
                    QueryBuilder::new(format!("SELECT {COLUMNS} FROM messages WHERE id IN ("));
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build_query_as().fetch_all(p).await
            })?;
            for r in rows {
                out.push(self.open_message(r)?);
            }
        }
        Ok(out)
    }

    /// The status history of a message whose scope the caller has already checked. The
    /// first entry is the message's creation.
    pub async fn message_history(
        &self,
        msg: &MessageRecord,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        type Row = (
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
        );
        // In the order recorded, not by `at`: providers stamp their reports in their own
        // clock and resolution (WhatsApp in whole seconds), so a `read` would otherwise sort
        // before the `sent` it follows.
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT status, at, connection_id, provider_message_id, part, detail \
             FROM message_events WHERE message_id = $1 ORDER BY seq"
        )
        .bind(msg.id.as_str())
        .fetch_all(p)
        .await)?;
        let first = if msg.send_at.is_some() {
            MessageStatus::Scheduled
        } else {
            MessageStatus::Queued
        };
        // What the guard said when the message was accepted (an exemption, a deferral, a
        // hold) explains its first entry: the earliest such event of the message.
        let accepted_with: Option<(String,)> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT reason FROM policy_events WHERE message_id = $1 AND app_id = $2 \
             AND kind IN ('allowed_exempt', 'deferred', 'held') ORDER BY created_at, id LIMIT 1"
        )
        .bind(msg.id.as_str())
        .bind(msg.app_id.as_str())
        .fetch_optional(p)
        .await)?;
        let detail = accepted_with.map(|r| r.0);
        let held_first = rows
            .first()
            .is_some_and(|r| r.0 == MessageStatus::Held.as_str() && r.1 == msg.created_at);
        let mut out = Vec::with_capacity(rows.len() + 1);
        if !held_first {
            out.push(HistoryEntry {
                status: first.into(),
                at: msg.created_at,
                connection_id: None,
                provider_message_id: None,
                part: None,
                detail: detail.clone(),
            });
        }
        let mut first_detail = held_first.then_some(detail).flatten();
        for (status, at, connection_id, provider_message_id, part, detail) in rows {
            let detail = detail.or_else(|| first_detail.take());
            out.push(HistoryEntry {
                status: Milestone::parse(&status).map_err(StoreError::corrupt)?,
                at,
                connection_id,
                provider_message_id,
                part,
                detail,
            });
        }
        Ok(out)
    }

    /// A page of an app's messages, newest first.
    pub async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<MessageRecord>, StoreError> {
        let limit = limit.clamp(1, 100);
        let to_index = filter.to.as_ref().map(|p| self.phone_index(p));
        let rows: Vec<MessageRow> = on_pool!(self.db.read(), |p| {
            let mut qb =
                QueryBuilder::new(format!("SELECT {COLUMNS} FROM messages WHERE app_id = "));
            qb.push_bind(app.as_str());
            if let Some(s) = filter.status {
                qb.push(" AND status = ").push_bind(s.as_str());
            }
            if let Some(ix) = &to_index {
                qb.push(" AND recipient_index = ").push_bind(ix.as_str());
            }
            push_cursor(&mut qb, "created_at", cursor);
            qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            qb.build_query_as().fetch_all(p).await
        })?;
        let items = rows
            .into_iter()
            .map(|r| self.open_message(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |m| Cursor {
            at: m.created_at,
            id: m.id.as_str().to_owned(),
        }))
    }

    /// Cancels a message that has not been handed to a provider yet.
    pub async fn cancel_message(
        &self,
        app: &AppId,
        id: &MessageId,
    ) -> Result<MessageRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let res = on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE messages SET status = 'canceled', updated_at = $1 \
             WHERE app_id = $2 AND id = $3 AND status IN ('queued', 'scheduled', 'held')"
        )
        .bind(now)
        .bind(app.as_str())
        .bind(id.as_str())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        if res == 0 {
            tx.rollback().await?;
            let current = self.get_message(app, id).await?;
            return Err(StoreError::Conflict(format!(
                "a message in status {} can no longer be canceled",
                current.status.as_str()
            )));
        }
        insert_events(
            &mut tx,
            &[(
                id.clone(),
                HistoryEntry {
                    status: MessageStatus::Canceled.into(),
                    at: now,
                    connection_id: None,
                    provider_message_id: None,
                    part: None,
                    detail: None,
                },
            )],
        )
        .await?;
        tx.commit().await?;
        self.get_message(app, id).await
    }

    /// Releases a held message after review: `queued` when approved (the caller enqueues
    /// its send job in the same transaction), `canceled` when rejected. Returns the
    /// message as it was.
    pub async fn review_held(
        &self,
        tx: &mut Tx,
        app: &AppId,
        id: &MessageId,
        approve: bool,
        detail: &str,
    ) -> Result<MessageRecord, StoreError> {
        let now = now_ms();
        let status = if approve {
            MessageStatus::Queued
        } else {
            MessageStatus::Canceled
        };
        let row: Option<MessageRow> = on_tx!(&mut *tx, |c| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE messages SET status = $1, updated_at = $2 \
                 WHERE app_id = $3 AND id = $4 AND status = 'held' RETURNING {COLUMNS}"
            )))
            .bind(status.as_str())
            .bind(now)
            .bind(app.as_str())
            .bind(id.as_str())
            .fetch_optional(c)
            .await
        })?;
        let Some(row) = row else {
            // Unknown, another app's, or no longer held: the caller tells them apart.
            return Err(StoreError::NotFound);
        };
        insert_events(
            tx,
            &[(
                id.clone(),
                HistoryEntry {
                    status: status.into(),
                    at: now,
                    connection_id: None,
                    provider_message_id: None,
                    part: None,
                    detail: Some(detail.to_owned()),
                },
            )],
        )
        .await?;
        self.open_message(row)
    }

    /// Why each of these held messages was held: `(code, reason)` of its `held` policy
    /// event.
    pub async fn hold_reasons(
        &self,
        app: &AppId,
        ids: &[&str],
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String, String)> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(
                "SELECT message_id, code, reason FROM policy_events WHERE kind = 'held' AND app_id = ",
            );
            qb.push_bind(app.as_str()).push(" AND message_id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(p).await
        })?;
        Ok(rows.into_iter().map(|(m, c, r)| (m, (c, r))).collect())
    }

    /// The app and tenant of each message (the send worker's look before it claims messages
    /// for sending, while a queue-stopping pause is in force).
    pub async fn message_owners(
        &self,
        tx: &mut Tx,
        ids: &[&str],
    ) -> Result<Vec<(MessageId, TenantId, AppId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, String)> = on_tx!(tx, |c| {
            let mut qb =
                QueryBuilder::new("SELECT id, tenant_id, app_id FROM messages WHERE id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(c).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(m, t, a)| {
                (
                    MessageId::from_trusted(m),
                    TenantId::from_trusted(t),
                    AppId::from_trusted(a),
                )
            })
            .collect())
    }

    /// Moves claimed messages to `sending` and returns the ones that are still to be sent
    /// (a message canceled meanwhile is left alone). `sending` is accepted as a starting
    /// state because a job whose lease expired after a crash finds its message there.
    pub async fn begin_sending(
        &self,
        tx: &mut Tx,
        ids: &[MessageId],
        now: i64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<MessageRow> = on_tx!(tx, |c| {
            let mut qb = QueryBuilder::new("UPDATE messages SET status = 'sending', updated_at = ");
            qb.push_bind(now);
            qb.push(" WHERE status IN ('queued', 'scheduled', 'sending') AND id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(id.as_str());
            }
            qb.push(format!(") RETURNING {COLUMNS}"));
            qb.build_query_as().fetch_all(c).await
        })?;
        let msgs = rows
            .into_iter()
            .map(|r| self.open_message(r))
            .collect::<Result<Vec<_>, _>>()?;
        let events: Vec<_> = msgs
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    HistoryEntry {
                        status: MessageStatus::Sending.into(),
                        at: now,
                        connection_id: None,
                        provider_message_id: None,
                        part: None,
                        detail: None,
                    },
                )
            })
            .collect();
        insert_events(tx, &events).await?;
        Ok(msgs)
    }

    /// Records what the provider said about each send attempt. Returns the status changes
    /// made, for metrics and events.
    ///
    /// One statement per kind of outcome, not per message: at thousands of messages a second
    /// the statement round trips through the single SQLite writer are what limit throughput.
    pub async fn record_outcomes(
        &self,
        tx: &mut Tx,
        outcomes: &[SendOutcome],
        now: i64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let mut changes = Vec::with_capacity(outcomes.len());
        let mut events = Vec::with_capacity(outcomes.len());
        let mut sent = Vec::new();
        let mut retried = Vec::new();
        let mut failed = Vec::new();
        let mut expired = Vec::new();
        let mut deferred = Vec::new();
        let mut multipart = Vec::new();
        let mut new_parts: Vec<(&MessageId, &ConnectionId, &(u32, String))> = Vec::new();
        let entry = |status: MessageStatus,
                     connection_id: Option<&ConnectionId>,
                     pid: Option<&String>,
                     detail: Option<String>| HistoryEntry {
            status: status.into(),
            at: now,
            connection_id: connection_id.map(|c| c.as_str().to_owned()),
            provider_message_id: pid.cloned(),
            part: None,
            detail,
        };
        let part_entry = |conn: &ConnectionId, (part, pid): &(u32, String)| HistoryEntry {
            part: Some(i64::from(*part)),
            ..entry(MessageStatus::Sent, Some(conn), Some(pid), None)
        };
        for o in outcomes {
            match o {
                SendOutcome::Sent {
                    id,
                    connection_id,
                    provider_message_id,
                    parts,
                } => {
                    sent.push((
                        id.as_str(),
                        connection_id.as_str(),
                        // Empty when every part went out in earlier attempts.
                        Some(provider_message_id.as_str()).filter(|p| !p.is_empty()),
                    ));
                    if parts.is_empty() {
                        events.push((
                            id.clone(),
                            entry(
                                MessageStatus::Sent,
                                Some(connection_id),
                                Some(provider_message_id),
                                None,
                            ),
                        ));
                    } else {
                        multipart.push(id.as_str());
                        for p in parts {
                            events.push((id.clone(), part_entry(connection_id, p)));
                            new_parts.push((id, connection_id, p));
                        }
                    }
                    changes.push(StatusChange {
                        id: id.clone(),
                        status: MessageStatus::Sent,
                        connection_id: Some(connection_id.clone()),
                        provider_message_id: Some(provider_message_id.clone())
                            .filter(|p| !p.is_empty()),
                        error_code: None,
                        detail: None,
                    });
                }
                SendOutcome::PartsSent {
                    id,
                    connection_id,
                    parts,
                } => {
                    for p in parts {
                        events.push((id.clone(), part_entry(connection_id, p)));
                        new_parts.push((id, connection_id, p));
                    }
                }
                SendOutcome::Retry {
                    id,
                    connection_id,
                    detail,
                } => {
                    retried.push(id.as_str());
                    events.push((
                        id.clone(),
                        entry(
                            MessageStatus::Queued,
                            connection_id.as_ref(),
                            None,
                            Some(detail.clone()),
                        ),
                    ));
                }
                SendOutcome::Failed {
                    id,
                    connection_id,
                    code,
                    detail,
                } => {
                    failed.push((
                        id.as_str(),
                        connection_id.as_ref().map(|c| c.as_str()),
                        code.as_str(),
                    ));
                    events.push((
                        id.clone(),
                        entry(
                            MessageStatus::Failed,
                            connection_id.as_ref(),
                            None,
                            Some(detail.clone()),
                        ),
                    ));
                    changes.push(StatusChange {
                        id: id.clone(),
                        status: MessageStatus::Failed,
                        connection_id: connection_id.clone(),
                        provider_message_id: None,
                        error_code: Some(code.clone()),
                        detail: Some(detail.clone()),
                    });
                }
                SendOutcome::Deferred {
                    id,
                    status,
                    until,
                    detail,
                } => {
                    deferred.push((id.as_str(), status.as_str(), *until));
                    events.push((id.clone(), entry(*status, None, None, Some(detail.clone()))));
                }
                SendOutcome::FailedOver {
                    id,
                    connection_id,
                    detail,
                } => {
                    events.push((
                        id.clone(),
                        entry(
                            MessageStatus::Sending,
                            Some(connection_id),
                            None,
                            Some(format!("{detail}; trying the next connection of the route")),
                        ),
                    ));
                }
                SendOutcome::Expired { id } => {
                    expired.push(id.as_str());
                    events.push((
                        id.clone(),
                        entry(
                            MessageStatus::Expired,
                            None,
                            None,
                            Some(EXPIRED_DETAIL.to_owned()),
                        ),
                    ));
                    changes.push(StatusChange {
                        id: id.clone(),
                        status: MessageStatus::Expired,
                        connection_id: None,
                        provider_message_id: None,
                        error_code: Some("validity_expired".to_owned()),
                        detail: Some(EXPIRED_DETAIL.to_owned()),
                    });
                }
            }
        }
        for chunk in sent.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE messages SET status = 'sent', error_code = NULL, updated_at = ",
                );
                qb.push_bind(now);
                qb.push(", connection_id = v.column2, provider_message_id = v.column3 FROM (");
                qb.push_values(chunk, |mut b, (id, conn, pid)| {
                    b.push_bind(*id).push_bind(*conn).push_bind(*pid);
                });
                qb.push(") AS v WHERE messages.id = v.column1 AND messages.status = 'sending'");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        for chunk in failed.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb =
                    QueryBuilder::new("UPDATE messages SET status = 'failed', updated_at = ");
                qb.push_bind(now);
                qb.push(", connection_id = COALESCE(v.column2, messages.connection_id), error_code = v.column3 FROM (");
                qb.push_values(chunk, |mut b, (id, conn, code)| {
                    b.push_bind(*id).push_bind(*conn).push_bind(*code);
                });
                qb.push(") AS v WHERE messages.id = v.column1 AND messages.status IN ('sending', 'queued', 'scheduled')");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        set_status_where(tx, "queued", None, &retried, now, "status = 'sending'").await?;
        for chunk in deferred.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb =
                    QueryBuilder::new("UPDATE messages SET status = v.column2, updated_at = ");
                qb.push_bind(now);
                // A scheduled message shows when it will go.
                qb.push(", send_at = CASE WHEN v.column2 = 'scheduled' THEN v.column3 ELSE messages.send_at END FROM (");
                qb.push_values(chunk, |mut b, (id, status, until)| {
                    b.push_bind(*id).push_bind(*status).push_bind(*until);
                });
                qb.push(") AS v WHERE messages.id = v.column1 AND messages.status = 'sending'");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        set_status_where(
            tx,
            "expired",
            Some("validity_expired"),
            &expired,
            now,
            "status IN ('sending', 'queued', 'scheduled')",
        )
        .await?;
        insert_parts(tx, &new_parts, now).await?;
        insert_events(tx, &events).await?;
        self.insert_status_events(tx, &changes, now).await?;
        // A part may have failed while the rest were still being sent.
        if !multipart.is_empty() {
            changes.extend(self.settle_parts(tx, &multipart).await?);
        }
        // A receipt can overtake the submit response; any that did are waiting.
        let mut sent_refs: Vec<(&ConnectionId, &str)> = outcomes
            .iter()
            .filter_map(|o| match o {
                SendOutcome::Sent {
                    connection_id,
                    provider_message_id,
                    parts,
                    ..
                } if parts.is_empty() => Some((connection_id, provider_message_id.as_str())),
                _ => None,
            })
            .collect();
        sent_refs.extend(
            new_parts
                .iter()
                .map(|(_, conn, (_, pid))| (*conn, pid.as_str())),
        );
        if !sent_refs.is_empty() {
            changes.extend(self.reapply_unmatched(tx, &sent_refs).await?.changes);
        }
        Ok(changes)
    }

    async fn reapply_unmatched(
        &self,
        tx: &mut Tx,
        refs: &[(&ConnectionId, &str)],
    ) -> Result<ReceiptsApplied, StoreError> {
        // One statement per connection (usually one per batch), not one per message: this
        // runs for every message recorded as sent.
        let mut by_connection: HashMap<&str, Vec<&str>> = HashMap::new();
        for (conn, pid) in refs {
            by_connection.entry(conn.as_str()).or_default().push(pid);
        }
        let mut rows: Vec<UnmatchedRow> = Vec::new();
        for (conn, pids) in by_connection {
            for chunk in pids.chunks(500) {
                let found: Vec<UnmatchedRow> = on_tx!(&mut *tx, |c| {
                    let mut qb =
                        QueryBuilder::new("DELETE FROM unmatched_receipts WHERE connection_id = ");
                    qb.push_bind(conn).push(" AND provider_message_id IN (");
                    let mut sep = qb.separated(", ");
                    for pid in chunk {
                        sep.push_bind(*pid);
                    }
                    qb.push(") RETURNING connection_id, provider_message_id, status, detail, received_at");
                    qb.build_query_as().fetch_all(c).await
                })?;
                rows.extend(found);
            }
        }
        if rows.is_empty() {
            return Ok(ReceiptsApplied::default());
        }
        self.apply_receipts(tx, &receipts_from_rows(rows)?).await
    }

    /// Applies kept receipts whose message (or part) has since been recorded as sent.
    ///
    /// [`Store::record_outcomes`] re-applies waiting receipts as it records `sent`, but on
    /// PostgreSQL a receipt can be inserted into `unmatched_receipts` by a transaction that
    /// commits after the `sent` transaction looked (READ COMMITTED sees neither the other's
    /// uncommitted message update nor its uncommitted receipt). This sweep closes that gap
    /// without cross-transaction locking; the recorder runs it every second.
    pub async fn reconcile_unmatched(&self, tx: &mut Tx) -> Result<ReceiptsApplied, StoreError> {
        let rows: Vec<UnmatchedRow> = on_tx!(&mut *tx, |c| {
            sqlx::query_as(
            "DELETE FROM unmatched_receipts WHERE id IN (\
             SELECT u.id FROM unmatched_receipts u JOIN messages m \
             ON m.connection_id = u.connection_id AND m.provider_message_id = u.provider_message_id \
             UNION SELECT u.id FROM unmatched_receipts u JOIN message_parts p \
             ON p.connection_id = u.connection_id AND p.provider_message_id = u.provider_message_id \
             LIMIT 500) RETURNING connection_id, provider_message_id, status, detail, received_at"
        )
        .fetch_all(c)
        .await
        })?;
        if rows.is_empty() {
            return Ok(ReceiptsApplied::default());
        }
        self.apply_receipts(tx, &receipts_from_rows(rows)?).await
    }

    /// Applies delivery receipts. A receipt whose message cannot be found (yet) is kept in
    /// `unmatched_receipts`, never dropped.
    ///
    /// A receipt for one part of a message sent in parts moves that part; the message
    /// follows when every part is delivered, or as soon as one is not.
    ///
    /// Batched like [`Store::record_outcomes`]: one lookup per connection, one update per
    /// resulting status, whatever the number of receipts.
    pub async fn apply_receipts(
        &self,
        tx: &mut Tx,
        receipts: &[Receipt],
    ) -> Result<ReceiptsApplied, StoreError> {
        let mut applied = ReceiptsApplied::default();
        if receipts.is_empty() {
            return Ok(applied);
        }
        let mut by_connection: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in receipts {
            by_connection
                .entry(r.connection_id.as_str())
                .or_default()
                .push(r.provider_message_id.as_str());
        }
        // (connection, provider id) → what the receipt is about, with its status as the
        // batch moves it along.
        let mut current: HashMap<(String, String), Target> = HashMap::new();
        for (conn, pids) in &by_connection {
            for chunk in pids.chunks(500) {
                // Parts first: a message sent in parts is known by its parts' references.
                let parts: Vec<(String, i64, String, String)> = on_tx!(&mut *tx, |c| {
                    let mut qb = QueryBuilder::new(
                        "SELECT message_id, part, status, provider_message_id FROM message_parts WHERE connection_id = ",
                    );
                    qb.push_bind(*conn).push(" AND provider_message_id IN (");
                    let mut sep = qb.separated(", ");
                    for pid in chunk {
                        sep.push_bind(*pid);
                    }
                    qb.push(")");
                    qb.build_query_as().fetch_all(c).await
                })?;
                let part_refs: std::collections::HashSet<String> =
                    parts.iter().map(|p| p.3.clone()).collect();
                for (id, part, status, pid) in parts {
                    let status = MessageStatus::parse(&status).map_err(StoreError::corrupt)?;
                    current.insert(((*conn).to_owned(), pid), Target::Part(id, part, status));
                }
                let rest: Vec<&str> = chunk
                    .iter()
                    .copied()
                    .filter(|pid| !part_refs.contains(*pid))
                    .collect();
                if rest.is_empty() {
                    continue;
                }
                let rows: Vec<(String, String, String)> = on_tx!(&mut *tx, |c| {
                    let mut qb = QueryBuilder::new(
                        "SELECT id, status, provider_message_id FROM messages WHERE connection_id = ",
                    );
                    qb.push_bind(*conn).push(" AND provider_message_id IN (");
                    let mut sep = qb.separated(", ");
                    for pid in &rest {
                        sep.push_bind(*pid);
                    }
                    qb.push(")");
                    qb.build_query_as().fetch_all(c).await
                })?;
                for (id, status, pid) in rows {
                    let status = MessageStatus::parse(&status).map_err(StoreError::corrupt)?;
                    current.insert(((*conn).to_owned(), pid), Target::Message(id, status));
                }
            }
        }
        let now = now_ms();
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut unmatched = Vec::new();
        let mut final_status: HashMap<String, MessageStatus> = HashMap::new();
        let mut part_status: HashMap<(String, i64), MessageStatus> = HashMap::new();
        let mut settle: Vec<String> = Vec::new();
        for r in receipts {
            let key = (
                r.connection_id.as_str().to_owned(),
                r.provider_message_id.clone(),
            );
            let conn = r.connection_id.as_str().to_owned();
            let Some(target) = current.get_mut(&key) else {
                *applied.unmatched.entry(conn).or_default() += 1;
                unmatched.push(r);
                continue;
            };
            *applied.matched.entry(conn).or_default() += 1;
            // A `read` moves a message that has no receipt yet on to `delivered`.
            let reached = r.status.status();
            let (id, part) = match target {
                Target::Message(id, status) => {
                    if status.can_transition_to(reached) {
                        *status = reached;
                        final_status.insert(id.clone(), reached);
                        changes.push(StatusChange {
                            id: MessageId::from_trusted(id.clone()),
                            status: reached,
                            connection_id: Some(r.connection_id.clone()),
                            provider_message_id: Some(r.provider_message_id.clone()),
                            error_code: None,
                            detail: r.detail.clone(),
                        });
                    }
                    (id.clone(), None)
                }
                Target::Part(id, part, status) => {
                    if status.can_transition_to(reached) {
                        *status = reached;
                        part_status.insert((id.clone(), *part), reached);
                        settle.push(id.clone());
                    }
                    (id.clone(), Some(*part))
                }
            };
            // Recorded even when it changes nothing (a late or repeated receipt), so the
            // history shows everything the provider said.
            events.push((
                MessageId::from_trusted(id),
                HistoryEntry {
                    status: r.status,
                    at: r.at,
                    connection_id: Some(r.connection_id.as_str().to_owned()),
                    provider_message_id: Some(r.provider_message_id.clone()),
                    part,
                    detail: r.detail.clone(),
                },
            ));
        }
        let mut by_status: HashMap<MessageStatus, Vec<&str>> = HashMap::new();
        for (id, status) in &final_status {
            by_status.entry(*status).or_default().push(id.as_str());
        }
        for (status, ids) in by_status {
            // Receipts move a message on from `sending`/`sent` only; another writer (a
            // second instance) that already settled it wins.
            set_status_where(
                tx,
                status.as_str(),
                None,
                &ids,
                now,
                "status IN ('sending', 'sent')",
            )
            .await?;
        }
        let part_updates: Vec<(&str, i64, &str)> = part_status
            .iter()
            .map(|((id, part), status)| (id.as_str(), *part, status.as_str()))
            .collect();
        for chunk in part_updates.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb =
                    QueryBuilder::new("UPDATE message_parts SET status = v.column3, updated_at = ");
                qb.push_bind(now);
                qb.push(" FROM (");
                qb.push_values(chunk, |mut b, (id, part, status)| {
                    b.push_bind(*id).push_bind(*part).push_bind(*status);
                });
                qb.push(") AS v WHERE message_parts.message_id = v.column1 AND message_parts.part = v.column2");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        for chunk in unmatched.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO unmatched_receipts (id, connection_id, provider_message_id, status, detail, received_at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(portcullis_domain::EventId::new().as_str().to_owned())
                        .push_bind(r.connection_id.as_str())
                        .push_bind(r.provider_message_id.as_str())
                        .push_bind(r.status.as_str())
                        .push_bind(r.detail.as_deref())
                        .push_bind(r.at);
                });
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        insert_events(tx, &events).await?;
        self.insert_status_events(tx, &changes, now).await?;
        if !settle.is_empty() {
            settle.sort();
            settle.dedup();
            let ids: Vec<&str> = settle.iter().map(String::as_str).collect();
            changes.extend(self.settle_parts(tx, &ids).await?);
        }
        applied.changes = changes;
        Ok(applied)
    }

    /// Moves messages sent in parts on from their parts: `delivered` once every part is
    /// (and the message is `sent`, i.e. every part was submitted), or the status of the
    /// first part that was not delivered as soon as there is one.
    async fn settle_parts(
        &self,
        tx: &mut Tx,
        ids: &[&str],
    ) -> Result<Vec<StatusChange>, StoreError> {
        let mut rows: Vec<PartRow> = Vec::new();
        for chunk in ids.chunks(300) {
            let found: Vec<PartRow> = on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "SELECT m.id AS message_id, m.status AS message_status, p.part, p.status, \
                     p.connection_id, p.provider_message_id \
                     FROM message_parts p JOIN messages m ON m.id = p.message_id WHERE p.message_id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") ORDER BY m.id, p.part");
                qb.build_query_as().fetch_all(c).await
            })?;
            rows.extend(found);
        }
        let parse = |s: &str| MessageStatus::parse(s).map_err(StoreError::corrupt);
        let now = now_ms();
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut by_status: HashMap<MessageStatus, Vec<String>> = HashMap::new();
        for parts in rows.chunk_by(|a, b| a.message_id == b.message_id) {
            let id = parts[0].message_id.clone();
            let status = parse(&parts[0].message_status)?;
            let total = parts.len();
            let mut failed = None;
            let mut delivered = 0;
            for p in parts {
                match parse(&p.status)? {
                    MessageStatus::Delivered => delivered += 1,
                    s @ (MessageStatus::Undelivered
                    | MessageStatus::Failed
                    | MessageStatus::Expired) => {
                        failed = failed.or(Some((p, s)));
                    }
                    _ => {}
                }
            }
            let (reached, detail, last) = match failed {
                Some((p, part_status)) => (
                    part_status,
                    format!("part {} of {total} {part_status}", p.part),
                    p,
                ),
                None if status == MessageStatus::Sent && delivered == total => (
                    MessageStatus::Delivered,
                    format!("all {total} parts delivered"),
                    &parts[total - 1],
                ),
                None => continue,
            };
            if !status.can_transition_to(reached) {
                continue;
            }
            let message_id = MessageId::from_trusted(id.clone());
            events.push((
                message_id.clone(),
                HistoryEntry {
                    status: reached.into(),
                    at: now,
                    connection_id: None,
                    provider_message_id: None,
                    part: None,
                    detail: Some(detail.clone()),
                },
            ));
            changes.push(StatusChange {
                id: message_id,
                status: reached,
                connection_id: Some(ConnectionId::from_trusted(last.connection_id.clone())),
                provider_message_id: Some(last.provider_message_id.clone()),
                error_code: None,
                detail: Some(detail),
            });
            by_status.entry(reached).or_default().push(id);
        }
        for (status, ids) in &by_status {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            set_status_where(
                tx,
                status.as_str(),
                None,
                &ids,
                now,
                "status IN ('sending', 'sent')",
            )
            .await?;
        }
        insert_events(tx, &events).await?;
        self.insert_status_events(tx, &changes, now).await?;
        Ok(changes)
    }

    /// The parts of each listed message that earlier attempts already handed to a
    /// provider, so a retry sends only the rest.
    pub async fn parts_sent(
        &self,
        tx: &mut Tx,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<u32>>, StoreError> {
        let mut out: HashMap<String, Vec<u32>> = HashMap::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(String, i64)> = on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "SELECT message_id, part FROM message_parts WHERE message_id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build_query_as().fetch_all(c).await
            })?;
            for (id, part) in rows {
                out.entry(id)
                    .or_default()
                    .push(u32::try_from(part).map_err(StoreError::corrupt)?);
            }
        }
        Ok(out)
    }

    /// Messages handed to a connection and still awaiting their receipt: what a provider
    /// that keeps its state outside our process must be reminded of after a restart.
    pub async fn awaiting_receipt(
        &self,
        connection: &ConnectionId,
    ) -> Result<Vec<(String, E164)>, StoreError> {
        type Row = (String, String, Vec<u8>);
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT id, provider_message_id, recipient_sealed FROM messages \
             WHERE connection_id = $1 AND status = 'sent' AND provider_message_id IS NOT NULL"
        )
        .bind(connection.as_str())
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|(id, pid, sealed)| {
                Ok((
                    pid,
                    E164::from_trusted(self.open_string(RECIPIENT, &id, &sealed)?),
                ))
            })
            .collect()
    }
}

/// A status change the store made, for metrics and events.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub id: MessageId,
    pub status: MessageStatus,
    /// The provider connection the change came from, if any.
    pub connection_id: Option<ConnectionId>,
    pub provider_message_id: Option<String>,
    /// Why a message failed, as a stable code.
    pub error_code: Option<String>,
    pub detail: Option<String>,
}

/// Filters for [`Store::list_messages`].
#[derive(Debug, Default, Clone)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub to: Option<E164>,
}

/// What a provider said about one send attempt.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    Sent {
        id: MessageId,
        connection_id: ConnectionId,
        provider_message_id: String,
        /// The parts this attempt submitted, for a message sent in separately acknowledged
        /// parts: (part number from 1, the provider's reference for it). Empty otherwise.
        parts: Vec<(u32, String)>,
    },
    /// Parts of a message accepted by an attempt that then failed on another part: kept
    /// so their receipts match and the retry skips them; only history besides. The
    /// message's own outcome follows.
    PartsSent {
        id: MessageId,
        connection_id: ConnectionId,
        parts: Vec<(u32, String)>,
    },
    Retry {
        id: MessageId,
        connection_id: Option<ConnectionId>,
        detail: String,
    },
    Failed {
        id: MessageId,
        connection_id: Option<ConnectionId>,
        code: String,
        detail: String,
    },
    /// Not handed to any provider: its validity period ran out while it waited.
    Expired { id: MessageId },
    /// An attempt on one connection failed and the message moved on to the next one of its
    /// route in the same round: only a history entry, the message's own outcome follows.
    FailedOver {
        id: MessageId,
        connection_id: ConnectionId,
        detail: String,
    },
    /// Not handed to any provider yet: the guard's last check says later (quiet hours at
    /// the recipient: `scheduled` at `until`; a pause: back to `queued`).
    Deferred {
        id: MessageId,
        status: MessageStatus,
        until: i64,
        detail: String,
    },
}

/// What [`Store::apply_receipts`] did: the status changes, and per connection how many
/// receipts found their message (or part) and how many were kept unmatched.
#[derive(Debug, Default)]
pub struct ReceiptsApplied {
    pub changes: Vec<StatusChange>,
    pub matched: HashMap<String, u64>,
    pub unmatched: HashMap<String, u64>,
}

/// One part of a message, with its message's status, as [`Store::settle_parts`] reads it.
#[derive(sqlx::FromRow)]
struct PartRow {
    message_id: String,
    message_status: String,
    part: i64,
    status: String,
    connection_id: String,
    provider_message_id: String,
}

/// What a receipt's reference names: a message (id, status) or a part of one (message id,
/// part, the part's status).
enum Target {
    Message(String, MessageStatus),
    Part(String, i64, MessageStatus),
}

/// A delivery receipt in provider terms.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub connection_id: ConnectionId,
    pub provider_message_id: String,
    pub status: Milestone,
    pub detail: Option<String>,
    pub at: i64,
}

/// Sets `status` (and optionally `error_code`) on the listed messages still in a state
/// `guard` allows, in one statement per chunk.
async fn set_status_where(
    tx: &mut Tx,
    status: &'static str,
    error_code: Option<&'static str>,
    ids: &[&str],
    now: i64,
    guard: &'static str,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new("UPDATE messages SET status = ");
            qb.push_bind(status).push(", updated_at = ").push_bind(now);
            if let Some(code) = error_code {
                qb.push(", error_code = ").push_bind(code);
            }
            qb.push(" WHERE ").push(guard).push(" AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// A kept receipt as read back: connection, provider id, status, detail, received at.
type UnmatchedRow = (String, String, String, Option<String>, i64);

fn receipts_from_rows(rows: Vec<UnmatchedRow>) -> Result<Vec<Receipt>, StoreError> {
    rows.into_iter()
        .map(|(conn, pid, status, detail, at)| {
            Ok(Receipt {
                connection_id: ConnectionId::from_trusted(conn),
                provider_message_id: pid,
                status: Milestone::parse(&status).map_err(StoreError::corrupt)?,
                detail,
                at,
            })
        })
        .collect()
}

/// Records parts as `sent`; a part already recorded (a retry that re-reports it) is left.
async fn insert_parts(
    tx: &mut Tx,
    parts: &[(&MessageId, &ConnectionId, &(u32, String))],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in parts.chunks(300) {
        on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new(
                "INSERT INTO message_parts (message_id, part, connection_id, provider_message_id, status, updated_at) ",
            );
            qb.push_values(chunk, |mut b, (id, conn, (part, pid))| {
                b.push_bind(id.as_str())
                    .push_bind(i64::from(*part))
                    .push_bind(conn.as_str())
                    .push_bind(pid.as_str())
                    .push_bind(MessageStatus::Sent.as_str())
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (message_id, part) DO NOTHING");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

async fn insert_events(
    tx: &mut Tx,
    events: &[(MessageId, HistoryEntry)],
) -> Result<(), StoreError> {
    for chunk in events.chunks(500) {
        on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new(
                "INSERT INTO message_events (message_id, status, at, connection_id, provider_message_id, part, detail) ",
            );
            qb.push_values(chunk, |mut b, (id, e)| {
                b.push_bind(id.as_str())
                    .push_bind(e.status.as_str())
                    .push_bind(e.at)
                    .push_bind(e.connection_id.as_deref())
                    .push_bind(e.provider_message_id.as_deref())
                    .push_bind(e.part)
                    .push_bind(e.detail.as_deref());
            });
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}
