//! The audit trail: every privileged action, append-only (the schema's triggers refuse
//! updates and deletes).

use portcullis_domain::{AppId, AuditEventId, TenantId};
use sqlx::QueryBuilder;

use crate::{Cursor, Db, Page, StoreError, now_ms, on_pool, paginate, push_cursor};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API key, by id.
    ApiKey(String),
    /// The command line on the server (`portcullis keys create …`), by OS user if known.
    Cli(Option<String>),
    /// The gateway itself (an endpoint disabled after 410, …).
    System,
}

impl Actor {
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Actor::ApiKey(k) => ("api_key", Some(k)),
            Actor::Cli(u) => ("cli", u.as_deref()),
            Actor::System => ("system", None),
        }
    }
}

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub tenant_id: Option<TenantId>,
    pub app_id: Option<AppId>,
    pub actor: Actor,
    /// `key.created`, `webhook.deleted`, …
    pub action: &'static str,
    pub target_type: Option<&'static str>,
    pub target_id: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    /// Non-secret details (never keys, secrets or unmasked numbers).
    pub detail: Option<serde_json::Value>,
}

/// A recorded action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: String,
    pub tenant_id: Option<String>,
    pub app_id: Option<String>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, tenant_id, app_id, actor_type, actor_id, action, target_type, \
     target_id, client_ip, request_id, detail, created_at";

/// Records an action.
pub async fn record(db: &Db, e: &NewAuditEvent) -> Result<(), StoreError> {
    let (actor_type, actor_id) = e.actor.parts();
    let id = AuditEventId::new();
    let detail = e.detail.as_ref().map(|d| d.to_string());
    on_pool!(db.write(), |p| sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, app_id, actor_type, actor_id, action, \
         target_type, target_id, client_ip, request_id, detail, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )
    .bind(id.as_str())
    .bind(e.tenant_id.as_ref().map(|t| t.as_str()))
    .bind(e.app_id.as_ref().map(|a| a.as_str()))
    .bind(actor_type)
    .bind(actor_id)
    .bind(e.action)
    .bind(e.target_type)
    .bind(e.target_id.as_deref())
    .bind(e.client_ip.as_deref())
    .bind(e.request_id.as_deref())
    .bind(detail.as_deref())
    .bind(now_ms())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// A page of an app's audit events, newest first.
pub async fn list(
    db: &Db,
    app: &AppId,
    filter: &AuditFilter,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Page<AuditEvent>, StoreError> {
    let limit = limit.clamp(1, 100);
    let rows: Vec<AuditEvent> = on_pool!(db.read(), |p| {
        let mut qb = QueryBuilder::new(format!(
            "SELECT {COLUMNS} FROM audit_events WHERE app_id = "
        ));
        qb.push_bind(app.as_str());
        if let Some(a) = &filter.action {
            qb.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(s) = filter.since {
            qb.push(" AND created_at >= ").push_bind(s);
        }
        if let Some(u) = filter.until {
            qb.push(" AND created_at < ").push_bind(u);
        }
        push_cursor(&mut qb, "created_at", cursor);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        qb.build_query_as().fetch_all(p).await
    })?;
    Ok(paginate(rows, limit, |e| Cursor {
        at: e.created_at,
        id: e.id.clone(),
    }))
}
