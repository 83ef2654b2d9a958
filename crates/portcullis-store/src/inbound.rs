//! Inbound (MO) messages: sender number and body sealed, deduplicated by the provider's
//! own message id per connection.

use portcullis_domain::{AppId, Channel, ConnectionId, E164, InboundId, TenantId};
use sqlx::QueryBuilder;

use crate::{Cursor, Page, Store, StoreError, Tx, on_pool, on_tx, paginate, push_cursor};

const SENDER: &str = "inbound.sender";
const BODY: &str = "inbound.body";

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
