//! Inbound (MO) messages: sender number and body sealed, deduplicated by the provider's
//! own message id per connection.

use std::collections::BTreeMap;

use portcullis_domain::{AppId, Channel, ConnectionId, E164, InboundId, TenantId};
use sqlx::QueryBuilder;

use crate::{Cursor, Page, Store, StoreError, Tx, now_ms, on_pool, on_tx, paginate, push_cursor};

const SENDER: &str = "inbound.sender";
const BODY: &str = "inbound.body";
const PART_SENDER: &str = "inbound_parts.sender";
const PART_BODY: &str = "inbound_parts.body";

/// How long a completed set of parts is remembered, so a part the SMSC delivers again is a
/// duplicate rather than the start of a new message.
const COMPLETED_KEPT_MS: i64 = 10 * 60 * 1000;
/// How long a set of parts waits for the missing ones before it is recorded as it is.
pub const INCOMPLETE_WAIT_MS: i64 = 60 * 60 * 1000;

/// Where a part of a concatenated inbound message belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlace {
    /// The sender's reference, shared by the parts of one message.
    pub reference: u16,
    pub total: u8,
    /// 1 for the first part.
    pub seq: u8,
}

#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub id: InboundId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub connection_id: ConnectionId,
    pub provider_message_id: String,
    pub from: E164,
    pub to: String,
    pub channel: Channel,
    pub body: String,
    pub received_at: i64,
}

#[derive(sqlx::FromRow)]
struct InboundRow {
    id: String,
    tenant_id: String,
    app_id: String,
    connection_id: String,
    provider_message_id: String,
    sender_sealed: Vec<u8>,
    recipient: String,
    channel: String,
    body_sealed: Vec<u8>,
    received_at: i64,
}

/// One kept part of a concatenated inbound message.
#[derive(sqlx::FromRow)]
struct PartRow {
    set_key: String,
    seq: i64,
    total: i64,
    tenant_id: String,
    app_id: String,
    connection_id: String,
    sender_sealed: Vec<u8>,
    recipient: String,
    channel: String,
    body_sealed: Vec<u8>,
    received_at: i64,
    completed_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, app_id, connection_id, provider_message_id, sender_sealed, \
     recipient, channel, body_sealed, received_at";

impl Store {
    /// Stores an inbound message. Returns false when the provider already delivered it
    /// (same connection and provider message id): duplicates are ignored, not errors.
    pub async fn insert_inbound(
        &self,
        tx: &mut Tx,
        m: &InboundMessage,
    ) -> Result<bool, StoreError> {
        let id = m.id.as_str();
        let res = on_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO inbound_messages (id, tenant_id, app_id, connection_id, provider_message_id, \
             sender_sealed, sender_index, recipient, channel, body_sealed, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (connection_id, provider_message_id) DO NOTHING"
        )
        .bind(id)
        .bind(m.tenant_id.as_str())
        .bind(m.app_id.as_str())
        .bind(m.connection_id.as_str())
        .bind(&m.provider_message_id)
        .bind(self.seal(SENDER, id, m.from.as_str().as_bytes()))
        .bind(self.phone_index(&m.from))
        .bind(&m.to)
        .bind(m.channel.as_str())
        .bind(self.seal(BODY, id, m.body.as_bytes()))
        .bind(m.received_at)
        .execute(c)
    .await
    .map(|r| r.rows_affected())
        })?;
        Ok(res == 1)
    }

    /// Whether `from` sent the app a message on `channel` at or after `since` (ms): the
    /// WhatsApp customer service window. Uses the blind index, so nothing is opened.
    pub async fn has_inbound_since(
        &self,
        app: &AppId,
        from: &E164,
        channel: Channel,
        since: i64,
    ) -> Result<bool, StoreError> {
        let index = self.phone_index(from);
        let row: Option<(i64,)> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT received_at FROM inbound_messages WHERE app_id = $1 AND sender_index = $2 \
             AND channel = $3 AND received_at >= $4 LIMIT 1"
        )
        .bind(app.as_str())
        .bind(&index)
        .bind(channel.as_str())
        .bind(since)
        .fetch_optional(p)
        .await)?;
        Ok(row.is_some())
    }

    /// A page of an app's inbound messages, newest first.
    pub async fn list_inbound(
        &self,
        app: &AppId,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<InboundMessage>, StoreError> {
        let limit = limit.clamp(1, 100);
        let rows: Vec<InboundRow> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {COLUMNS} FROM inbound_messages WHERE app_id = "
            ));
            qb.push_bind(app.as_str());
            push_cursor(&mut qb, "received_at", cursor);
            qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            qb.build_query_as().fetch_all(p).await
        })?;
        let items = rows
            .into_iter()
            .map(|r| self.open_inbound(r))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(paginate(items, limit, |m| Cursor {
            at: m.received_at,
            id: m.id.as_str().to_owned(),
        }))
    }

    /// Inbound messages by id, of any app: for rendering events whose scope the caller holds.
    pub async fn inbound_by_ids(&self, ids: &[&str]) -> Result<Vec<InboundMessage>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<InboundRow> = on_pool!(self.db.read(), |p| {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {COLUMNS} FROM inbound_messages WHERE id IN ("
                ));
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build_query_as().fetch_all(p).await
            })?;
            for r in rows {
                out.push(self.open_inbound(r)?);
            }
        }
        Ok(out)
    }

    /// Keeps one part of a concatenated inbound message (`m` holds the part's text). Returns
    /// the whole message when this part completes it; `None` while parts are missing, and
    /// for a part already kept (a redelivery).
    pub async fn add_inbound_part(
        &self,
        tx: &mut Tx,
        m: &InboundMessage,
        place: PartPlace,
    ) -> Result<Option<InboundMessage>, StoreError> {
        let key = self.keyring.blind_index_hex(
            "inbound_part",
            format!(
                "{}\n{}\n{}\n{}\n{}",
                m.connection_id.as_str(),
                m.from.as_str(),
                m.to,
                place.reference,
                place.total
            )
            .as_bytes(),
        );
        let row = format!("{key}:{}", place.seq);
        let inserted = on_tx!(&mut *tx, |c| {
            sqlx::query(
                "INSERT INTO inbound_parts (set_key, seq, total, tenant_id, app_id, connection_id, \
                 sender_sealed, recipient, channel, body_sealed, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (set_key, seq) DO NOTHING",
            )
            .bind(&key)
            .bind(i64::from(place.seq))
            .bind(i64::from(place.total))
            .bind(m.tenant_id.as_str())
            .bind(m.app_id.as_str())
            .bind(m.connection_id.as_str())
            .bind(self.seal(PART_SENDER, &row, m.from.as_str().as_bytes()))
            .bind(&m.to)
            .bind(m.channel.as_str())
            .bind(self.seal(PART_BODY, &row, m.body.as_bytes()))
            .bind(m.received_at)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Ok(None);
        }
        let mut sets = self.take_part_sets(tx, &[key], false).await?;
        Ok(sets.pop())
    }

    /// Sets of parts that have waited [`INCOMPLETE_WAIT_MS`] for a missing part, recorded
    /// with what arrived (each gap marked) so no part is lost; and forgets completed sets
    /// older than a few minutes.
    pub async fn overdue_inbound_parts(
        &self,
        tx: &mut Tx,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let now = now_ms();
        on_tx!(&mut *tx, |c| {
            sqlx::query("DELETE FROM inbound_parts WHERE completed_at < $1")
                .bind(now - COMPLETED_KEPT_MS)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let keys: Vec<(String,)> = on_tx!(&mut *tx, |c| {
            sqlx::query_as(
                "SELECT DISTINCT set_key FROM inbound_parts \
                 WHERE completed_at IS NULL AND received_at < $1 LIMIT 100",
            )
            .bind(now - INCOMPLETE_WAIT_MS)
            .fetch_all(c)
            .await
        })?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.into_iter().map(|k| k.0).collect();
        self.take_part_sets(tx, &keys, true).await
    }

    /// The messages of the listed sets, each marked completed (its bodies emptied): sets
    /// with every part, or with `incomplete` also those with parts missing.
    async fn take_part_sets(
        &self,
        tx: &mut Tx,
        keys: &[String],
        incomplete: bool,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        let rows: Vec<PartRow> = on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new(
                "SELECT set_key, seq, total, tenant_id, app_id, connection_id, sender_sealed, \
                 recipient, channel, body_sealed, received_at, completed_at \
                 FROM inbound_parts WHERE set_key IN (",
            );
            let mut sep = qb.separated(", ");
            for k in keys {
                sep.push_bind(k.as_str());
            }
            qb.push(") ORDER BY set_key, seq");
            qb.build_query_as().fetch_all(c).await
        })?;
        let mut sets: BTreeMap<String, Vec<PartRow>> = BTreeMap::new();
        for r in rows {
            sets.entry(r.set_key.clone()).or_default().push(r);
        }
        let mut out = Vec::new();
        let now = now_ms();
        for (key, parts) in sets {
            let total = parts[0].total;
            let whole = parts.len() as i64 == total;
            if parts.iter().any(|p| p.completed_at.is_some()) || !(whole || incomplete) {
                continue;
            }
            let mut body = String::new();
            let mut expected = 1;
            for p in &parts {
                // A missing part is marked where it belongs, so the reader sees the gap.
                for gap in expected..p.seq {
                    body.push_str(&format!("[part {gap} of {total} missing]"));
                }
                body.push_str(&self.open_string(
                    PART_BODY,
                    &format!("{key}:{}", p.seq),
                    &p.body_sealed,
                )?);
                expected = p.seq + 1;
            }
            for gap in expected..=total {
                body.push_str(&format!("[part {gap} of {total} missing]"));
            }
            let first = &parts[0];
            let from = self.open_string(
                PART_SENDER,
                &format!("{key}:{}", first.seq),
                &first.sender_sealed,
            )?;
            let received_at = parts.iter().map(|p| p.received_at).max().unwrap_or(now);
            on_tx!(&mut *tx, |c| {
                sqlx::query(
                    "UPDATE inbound_parts SET completed_at = $1, body_sealed = $2 WHERE set_key = $3",
                )
                .bind(now)
                .bind(Vec::<u8>::new())
                .bind(&key)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
            })?;
            out.push(InboundMessage {
                id: InboundId::new(),
                tenant_id: TenantId::from_trusted(first.tenant_id.clone()),
                app_id: AppId::from_trusted(first.app_id.clone()),
                connection_id: ConnectionId::from_trusted(first.connection_id.clone()),
                // The set's key (a keyed digest) and its first arrival: the same reference
                // reused by the sender much later is a new message.
                provider_message_id: format!(
                    "concat-{}-{}",
                    &key[..32.min(key.len())],
                    first.received_at
                ),
                from: E164::from_trusted(from),
                to: first.recipient.clone(),
                channel: Channel::parse(&first.channel).map_err(StoreError::corrupt)?,
                body,
                received_at,
            });
        }
        Ok(out)
    }

    fn open_inbound(&self, r: InboundRow) -> Result<InboundMessage, StoreError> {
        Ok(InboundMessage {
            from: E164::from_trusted(self.open_string(SENDER, &r.id, &r.sender_sealed)?),
            body: self.open_string(BODY, &r.id, &r.body_sealed)?,
            tenant_id: TenantId::from_trusted(r.tenant_id),
            app_id: AppId::from_trusted(r.app_id),
            connection_id: ConnectionId::from_trusted(r.connection_id),
            provider_message_id: r.provider_message_id,
            to: r.recipient,
            channel: Channel::parse(&r.channel).map_err(StoreError::corrupt)?,
            received_at: r.received_at,
            id: InboundId::from_trusted(r.id),
        })
    }
}
