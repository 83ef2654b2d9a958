//! Webhook endpoints, the per-app signing secret, and deliveries with their attempt log.
//!
//! Endpoint URLs and secrets are sealed (a URL may carry a receiver's token in its query).
//! A delivery is one event for one endpoint; it is leased while an attempt is in flight and
//! settled fenced by its attempt number, like a send job, so an attempt whose lease was
//! taken over after a crash cannot overwrite the newer one.

use std::collections::HashMap;

use portcullis_crypto::{Secret, WebhookSecret};
use portcullis_domain::{AppId, DeliveryId, EventId, EventType, TenantId, WebhookEndpointId};
use sqlx::QueryBuilder;

use crate::events::NewEvent;
use crate::{
    Cursor, Page, Store, StoreError, Tx, found, now_ms, on_pool, on_tx, paginate, push_cursor,
};

const URL: &str = "webhook_endpoints.url";
const SECRET: &str = "webhook_secrets.secret";
const PREVIOUS: &str = "webhook_secrets.previous";

/// A receiver of an app's events.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub url: String,
    /// Empty: every event type.
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Endpoint {
    /// Whether the endpoint is subscribed to events of type `t`.
    pub fn wants(&self, t: EventType) -> bool {
        self.events.is_empty() || self.events.contains(&t)
    }
}

/// Fields of a new endpoint, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub enabled: bool,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    tenant_id: String,
    app_id: String,
    url_sealed: Vec<u8>,
    events: String,
    description: Option<String>,
    enabled: i64,
    disabled_reason: Option<String>,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, app_id, url_sealed, events, description, enabled, \
     disabled_reason, failing_since, created_at, updated_at";

/// A delivery with its attempts, as listed to the app.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: String,
    pub event_type: EventType,
    /// `pending`, `succeeded`, `failed` or `blocked`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub log: Vec<Attempt>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i64,
    pub at: i64,
    /// `sent` (2xx), `failed` or `blocked`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error_class: Option<String>,
    /// A short, sanitized excerpt of the response or error; never the whole body.
    pub excerpt: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts, \
     next_attempt_at, last_status_code, last_error, created_at, updated_at";

/// A delivery to create.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: String,
    pub event_type: EventType,
}

/// A delivery leased to a worker for one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub id: DeliveryId,
    pub app_id: AppId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: String,
    /// This attempt's number, the fence of its settlement.
    pub attempt: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: DeliveryId,
    pub endpoint_id: WebhookEndpointId,
    pub attempt: i64,
    pub at: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub latency_ms: Option<i64>,
    pub error_class: Option<String>,
    pub excerpt: Option<String>,
}

/// How an attempt ends the delivery, or when the next one is due.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded,
    RetryAt(i64),
    /// No more attempts (the schedule ran out, or the receiver said 410 Gone).
    Failed,
    /// The destination is not allowed (SSRF guard); not retried.
    Blocked,
    /// Not attempted (the endpoint was busy): released to be claimed again at this time,
    /// without counting an attempt.
    Deferred(i64),
}

/// Filters for [`Store::list_deliveries`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<WebhookEndpointId>,
    pub event_id: Option<String>,
    pub status: Option<String>,
    pub event_type: Option<EventType>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// The current secret, and the previous one while its overlap lasts.
#[derive(Clone)]
pub struct SigningSecrets {
    pub current: WebhookSecret,
    pub previous: Option<(WebhookSecret, i64)>,
}

impl SigningSecrets {
    /// The secrets that sign at `now`.
    pub fn active(&self, now: i64) -> Vec<WebhookSecret> {
        let mut v = vec![self.current.clone()];
        if let Some((p, until)) = &self.previous
            && *until > now
        {
            v.push(p.clone());
        }
        v
    }
}

fn parse_events(json: &str) -> Result<Vec<EventType>, StoreError> {
    let names: Vec<String> = serde_json::from_str(json).map_err(StoreError::corrupt)?;
    names
        .iter()
        .map(|n| EventType::parse(n).map_err(StoreError::corrupt))
        .collect()
}

fn events_json(events: &[EventType]) -> String {
    serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>())
        .expect("strings serialize")
}

impl Store {
    fn open_endpoint(&self, r: EndpointRow) -> Result<Endpoint, StoreError> {
        Ok(Endpoint {
            url: self.open_string(URL, &r.id, &r.url_sealed)?,
            events: parse_events(&r.events)?,
            tenant_id: TenantId::from_trusted(r.tenant_id),
            app_id: AppId::from_trusted(r.app_id),
            description: r.description,
            enabled: r.enabled != 0,
            disabled_reason: r.disabled_reason,
            failing_since: r.failing_since,
            created_at: r.created_at,
            updated_at: r.updated_at,
            id: WebhookEndpointId::from_trusted(r.id),
        })
    }

    fn open_secret(
        &self,
        column: &str,
        app: &str,
        sealed: &[u8],
    ) -> Result<WebhookSecret, StoreError> {
        let s = Secret::new(self.open_string(column, app, sealed)?);
        WebhookSecret::from_whsec(s.expose()).map_err(StoreError::corrupt)
    }

    /// Creates an endpoint. The app's signing secret is created with its first endpoint
    /// and returned then, and only then.
    pub async fn create_endpoint(
        &self,
        tenant: &TenantId,
        app: &AppId,
        new: &NewEndpoint,
    ) -> Result<(Endpoint, Option<Secret<String>>), StoreError> {
        let id = WebhookEndpointId::new();
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, |c| {
            sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, app_id, url_sealed, events, description, \
             enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(app.as_str())
        .bind(self.seal(URL, id.as_str(), new.url.as_bytes()))
        .bind(events_json(&new.events))
        .bind(new.description.as_deref())
        .bind(i64::from(new.enabled))
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        let secret = WebhookSecret::generate();
        let whsec = secret.to_whsec_string();
        let created = on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO webhook_secrets (app_id, tenant_id, secret_sealed, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (app_id) DO NOTHING"
        )
        .bind(app.as_str())
        .bind(tenant.as_str())
        .bind(self.seal(SECRET, app.as_str(), whsec.expose().as_bytes()))
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        let endpoint = self.get_endpoint(app, &id).await?;
        Ok((endpoint, (created == 1).then_some(whsec)))
    }

    /// One endpoint of an app.
    pub async fn get_endpoint(
        &self,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<Endpoint, StoreError> {
        let row: Option<EndpointRow> = on_pool!(self.db.read(), |p| sqlx::query_as(
            sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE app_id = $1 AND id = $2"
            ))
        )
        .bind(app.as_str())
        .bind(id.as_str())
        .fetch_optional(p)
        .await)?;
        self.open_endpoint(row.ok_or(StoreError::NotFound)?)
    }

    /// A page of an app's endpoints, newest first.
    pub async fn list_endpoints(
        &self,
        app: &AppId,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<Endpoint>, StoreError> {
        let limit = limit.clamp(1, 100);
        let rows: Vec<EndpointRow> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE app_id = "
            ));
            qb.push_bind(app.as_str());
            push_cursor(&mut qb, "created_at", cursor);
            qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            qb.build_query_as().fetch_all(p).await
        })?;
        let items = rows
            .into_iter()
            .map(|r| self.open_endpoint(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |e| Cursor {
            at: e.created_at,
            id: e.id.as_str().to_owned(),
        }))
    }

    /// The enabled endpoints of the given apps: the relay's fan-out table.
    pub async fn enabled_endpoints(&self, apps: &[&str]) -> Result<Vec<Endpoint>, StoreError> {
        if apps.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EndpointRow> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE enabled = 1 AND app_id IN ("
            ));
            let mut sep = qb.separated(", ");
            for a in apps {
                sep.push_bind(*a);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter().map(|r| self.open_endpoint(r)).collect()
    }

    /// Endpoints by id (any app), whatever their state: the delivery worker's view.
    pub async fn endpoints_by_ids(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, Endpoint>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<EndpointRow> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id IN ("
            ));
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|r| {
                let e = self.open_endpoint(r)?;
                Ok((e.id.as_str().to_owned(), e))
            })
            .collect()
    }

    /// Updates an endpoint. Enabling it again clears the reason it was disabled and its
    /// failure streak.
    pub async fn update_endpoint(
        &self,
        app: &AppId,
        id: &WebhookEndpointId,
        patch: &EndpointPatch,
    ) -> Result<Endpoint, StoreError> {
        let current = self.get_endpoint(app, id).await?;
        let url = patch.url.clone().unwrap_or(current.url);
        let events = patch.events.clone().unwrap_or(current.events);
        let description = patch.description.clone().unwrap_or(current.description);
        let enabled = patch.enabled.unwrap_or(current.enabled);
        let reenabled = enabled && !current.enabled;
        let n = on_pool!(self.db.write(), |p| sqlx::query(
            "UPDATE webhook_endpoints SET url_sealed = $1, events = $2, description = $3, \
             enabled = $4, updated_at = $5, \
             disabled_reason = CASE WHEN $6 = 1 OR $4 = 1 THEN NULL ELSE disabled_reason END, \
             failing_since = CASE WHEN $6 = 1 THEN NULL ELSE failing_since END \
             WHERE app_id = $7 AND id = $8"
        )
        .bind(self.seal(URL, id.as_str(), url.as_bytes()))
        .bind(events_json(&events))
        .bind(description.as_deref())
        .bind(i64::from(enabled))
        .bind(now_ms())
        .bind(i64::from(reenabled))
        .bind(app.as_str())
        .bind(id.as_str())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        found(n)?;
        self.get_endpoint(app, id).await
    }

    /// Deletes an endpoint; its pending deliveries end as failed.
    pub async fn delete_endpoint(
        &self,
        app: &AppId,
        id: &WebhookEndpointId,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let n = on_tx!(&mut tx, |c| sqlx::query(
            "DELETE FROM webhook_endpoints WHERE app_id = $1 AND id = $2"
        )
        .bind(app.as_str())
        .bind(id.as_str())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        found(n)?;
        on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
             lease_until = NULL, last_error = 'endpoint deleted', updated_at = $1 \
             WHERE endpoint_id = $2 AND status = 'pending'"
        )
        .bind(now_ms())
        .bind(id.as_str())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        tx.commit().await
    }

    /// Disables endpoints, saying why (410 Gone, failing for days), and tells each app with
    /// a `webhook.endpoint_disabled` event in the same transaction.
    pub async fn disable_endpoints(&self, ids: &[&str], reason: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let mut events = Vec::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(String, String, String)> = on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ",
                );
                qb.push_bind(reason).push(", updated_at = ").push_bind(now);
                qb.push(" WHERE enabled = 1 AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") RETURNING id, tenant_id, app_id");
                qb.build_query_as().fetch_all(c).await
            })?;
            events.extend(rows.into_iter().map(|(id, tenant, app)| NewEvent {
                id: EventId::new(),
                tenant_id: TenantId::from_trusted(tenant),
                app_id: AppId::from_trusted(app),
                kind: EventType::EndpointDisabled,
                subject_id: Some(id.clone()),
                data: serde_json::json!({ "endpoint_id": id, "reason": reason }),
                phone: None,
                created_at: now,
            }));
        }
        self.insert_app_events(&mut tx, &events).await?;
        tx.commit().await
    }

    /// The signing secrets of the given apps.
    pub async fn signing_secrets(
        &self,
        apps: &[&str],
    ) -> Result<HashMap<String, SigningSecrets>, StoreError> {
        if apps.is_empty() {
            return Ok(HashMap::new());
        }
        type Row = (String, Vec<u8>, Option<Vec<u8>>, Option<i64>);
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(
                "SELECT app_id, secret_sealed, previous_sealed, previous_until FROM webhook_secrets WHERE app_id IN (",
            );
            let mut sep = qb.separated(", ");
            for a in apps {
                sep.push_bind(*a);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(app, secret, previous, until)| {
                let current = self.open_secret(SECRET, &app, &secret)?;
                let previous = match (previous, until) {
                    (Some(p), Some(u)) => Some((self.open_secret(PREVIOUS, &app, &p)?, u)),
                    _ => None,
                };
                Ok((app, SigningSecrets { current, previous }))
            })
            .collect()
    }

    /// Replaces the app's signing secret; the old one keeps signing alongside until
    /// `now + overlap_ms`. Returns the new secret, shown once.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        overlap_ms: i64,
    ) -> Result<Secret<String>, StoreError> {
        let now = now_ms();
        let secret = WebhookSecret::generate().to_whsec_string();
        let sealed = self.seal(SECRET, app.as_str(), secret.expose().as_bytes());
        let existing = self.signing_secrets(&[app.as_str()]).await?;
        let n = match existing.get(app.as_str()) {
            Some(s) => {
                let previous = self.seal(
                    PREVIOUS,
                    app.as_str(),
                    s.current.to_whsec_string().expose().as_bytes(),
                );
                on_pool!(self.db.write(), |p| sqlx::query(
                    "UPDATE webhook_secrets SET secret_sealed = $1, previous_sealed = $2, \
                     previous_until = $3 WHERE app_id = $4"
                )
                .bind(&sealed)
                .bind(&previous)
                .bind(now + overlap_ms)
                .bind(app.as_str())
                .execute(p)
                .await
                .map(|r| r.rows_affected()))?
            }
            None => on_pool!(self.db.write(), |p| sqlx::query(
                "INSERT INTO webhook_secrets (app_id, tenant_id, secret_sealed, created_at) \
                 VALUES ($1, $2, $3, $4)"
            )
            .bind(app.as_str())
            .bind(tenant.as_str())
            .bind(&sealed)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?,
        };
        found(n)?;
        Ok(secret)
    }

    /// Creates deliveries due now. With a lease they are already the caller's first
    /// attempt, so the relay can hand them straight to the delivery worker without a claim
    /// round trip; if the process dies first, the lease runs out and any worker claims them.
    ///
    /// A leased delivery is due (for anyone else) when its lease ends, so that is its
    /// `next_attempt_at`: the claim's index scan then never walks over deliveries that
    /// are held, however many a worker has queued.
    pub async fn insert_deliveries(
        &self,
        tx: &mut Tx,
        deliveries: &[NewDelivery],
        now: i64,
        lease_until: Option<i64>,
    ) -> Result<(), StoreError> {
        // Leased: counted as attempt 1 already. Unleased: the first claim makes it 1.
        let attempts = i64::from(lease_until.is_some());
        for chunk in deliveries.chunks(300) {
            on_tx!(&mut *tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO webhook_deliveries (id, tenant_id, app_id, endpoint_id, event_id, \
                     event_type, status, attempts, next_attempt_at, lease_until, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut b, d| {
                    b.push_bind(d.id.as_str())
                        .push_bind(d.tenant_id.as_str())
                        .push_bind(d.app_id.as_str())
                        .push_bind(d.endpoint_id.as_str())
                        .push_bind(d.event_id.as_str())
                        .push_bind(d.event_type.as_str())
                        .push_bind("pending")
                        .push_bind(attempts)
                        .push_bind(lease_until.unwrap_or(now))
                        .push_bind(lease_until)
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    /// Leases due deliveries whose previous lease (if any) has run out.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        self.claim_deliveries_except(now, lease_until, limit, &[])
            .await
    }

    /// Leases due deliveries whose previous lease (if any) has run out (and makes them due
    /// again when the new one ends, see [`Store::insert_deliveries`]), passing over those
    /// of the endpoints in `except` (whose queues in the worker are full: their rows stay
    /// here, unleased, until the worker has room for them).
    pub async fn claim_deliveries_except(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
        except: &[&str],
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        let lock = match self.db.backend() {
            crate::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::Backend::Sqlite => "",
        };
        let rows: Vec<(String, String, String, String, i64)> = on_pool!(self.db.write(), |p| {
            let mut qb = QueryBuilder::new(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ",
            );
            qb.push_bind(lease_until)
                .push(", next_attempt_at = ")
                .push_bind(lease_until)
                .push(
                    " WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
                 AND next_attempt_at <= ",
                );
            qb.push_bind(now)
                .push(" AND (lease_until IS NULL OR lease_until < ")
                .push_bind(now)
                .push(")");
            if !except.is_empty() {
                qb.push(" AND endpoint_id NOT IN (");
                let mut sep = qb.separated(", ");
                for e in except {
                    sep.push_bind(*e);
                }
                qb.push(")");
            }
            qb.push(" ORDER BY next_attempt_at LIMIT ")
                .push_bind(i64::from(limit))
                .push(lock)
                .push(") RETURNING id, app_id, endpoint_id, event_id, attempts");
            qb.build_query_as().fetch_all(p).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, app, endpoint, event, attempt)| DeliveryJob {
                id: DeliveryId::from_trusted(id),
                app_id: AppId::from_trusted(app),
                endpoint_id: WebhookEndpointId::from_trusted(endpoint),
                event_id: event,
                attempt,
            })
            .collect())
    }

    /// When the next pending delivery is due, if any.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError> {
        let row: (Option<i64>,) = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
        )
        .fetch_one(p)
        .await)?;
        Ok(row.0)
    }

    /// Records attempts and moves their deliveries on, in one transaction; updates the
    /// endpoints' failure streaks and returns the endpoints failing since before
    /// `disable_before` (the caller disables them).
    pub async fn settle_attempts(
        &self,
        results: &[AttemptResult],
        disable_before: i64,
    ) -> Result<Vec<String>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let (deferred, results): (Vec<&AttemptResult>, Vec<&AttemptResult>) = results
            .iter()
            .partition(|r| matches!(r.outcome, AttemptOutcome::Deferred(_)));
        let mut tx = self.db.begin().await?;
        for chunk in deferred.chunks(300) {
            on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_deliveries SET attempts = attempts - 1, lease_until = NULL, \
                     next_attempt_at = v.column3 FROM (",
                );
                qb.push_values(chunk, |mut b, r| {
                    let at = match r.outcome {
                        AttemptOutcome::Deferred(at) => at,
                        _ => now,
                    };
                    b.push_bind(r.delivery_id.as_str())
                        .push_bind(r.attempt)
                        .push_bind(at);
                });
                qb.push(
                    ") AS v WHERE webhook_deliveries.id = v.column1 \
                     AND webhook_deliveries.attempts = v.column2 \
                     AND webhook_deliveries.status = 'pending'",
                );
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        for chunk in results.chunks(200) {
            on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, at, outcome, status_code, \
                     latency_ms, error_class, excerpt) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    let outcome = match r.outcome {
                        AttemptOutcome::Succeeded => "sent",
                        AttemptOutcome::Blocked => "blocked",
                        _ => "failed",
                    };
                    b.push_bind(r.delivery_id.as_str())
                        .push_bind(r.attempt)
                        .push_bind(r.at)
                        .push_bind(outcome)
                        .push_bind(r.status_code.map(i64::from))
                        .push_bind(r.latency_ms)
                        .push_bind(r.error_class.as_deref())
                        .push_bind(r.excerpt.as_deref());
                });
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
            on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_deliveries SET status = v.column3, next_attempt_at = v.column4, \
                     last_status_code = v.column5, last_error = v.column6, lease_until = NULL, updated_at = ",
                );
                qb.push_bind(now).push(" FROM (");
                qb.push_values(chunk, |mut b, r| {
                    let (status, next) = match r.outcome {
                        AttemptOutcome::Succeeded => ("succeeded", None),
                        AttemptOutcome::RetryAt(at) | AttemptOutcome::Deferred(at) => {
                            ("pending", Some(at))
                        }
                        AttemptOutcome::Failed => ("failed", None),
                        AttemptOutcome::Blocked => ("blocked", None),
                    };
                    b.push_bind(r.delivery_id.as_str())
                        .push_bind(r.attempt)
                        .push_bind(status)
                        .push_bind(next)
                        .push_bind(r.status_code.map(i64::from))
                        .push_bind(r.error_class.as_deref());
                });
                qb.push(
                    ") AS v WHERE webhook_deliveries.id = v.column1 \
                     AND webhook_deliveries.attempts = v.column2 \
                     AND webhook_deliveries.status = 'pending'",
                );
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        let mut ok: Vec<&str> = Vec::new();
        let mut failing: Vec<&str> = Vec::new();
        for r in &results {
            match r.outcome {
                AttemptOutcome::Succeeded => ok.push(r.endpoint_id.as_str()),
                _ => failing.push(r.endpoint_id.as_str()),
            }
        }
        ok.sort_unstable();
        ok.dedup();
        failing.sort_unstable();
        failing.dedup();
        failing.retain(|f| ok.binary_search(f).is_err());
        let mut to_disable = Vec::new();
        if !ok.is_empty() {
            on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE failing_since IS NOT NULL AND id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in &ok {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        if !failing.is_empty() {
            let rows: Vec<(String, i64)> = on_tx!(&mut tx, |c| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ",
                );
                qb.push_bind(now).push(") WHERE id IN (");
                let mut sep = qb.separated(", ");
                for id in &failing {
                    sep.push_bind(*id);
                }
                qb.push(") RETURNING id, failing_since");
                qb.build_query_as().fetch_all(c).await
            })?;
            to_disable.extend(
                rows.into_iter()
                    .filter(|(_, since)| *since < disable_before)
                    .map(|(id, _)| id),
            );
        }
        tx.commit().await?;
        Ok(to_disable)
    }

    /// Ends the pending deliveries of disabled or deleted endpoints without an attempt.
    pub async fn fail_deliveries(&self, ids: &[&str], reason: &str) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            on_pool!(self.db.write(), |p| {
                let mut qb = QueryBuilder::new(
                    "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, last_error = ",
                );
                qb.push_bind(reason)
                    .push(", updated_at = ")
                    .push_bind(now_ms());
                qb.push(" WHERE status = 'pending' AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(p).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    fn delivery_from_row(r: DeliveryRow) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            event_type: EventType::parse(&r.event_type).map_err(StoreError::corrupt)?,
            endpoint_id: WebhookEndpointId::from_trusted(r.endpoint_id),
            event_id: r.event_id,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            log: Vec::new(),
            id: DeliveryId::from_trusted(r.id),
        })
    }

    async fn attach_attempts(&self, deliveries: &mut [Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        type Row = (
            String,
            i64,
            i64,
            String,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(
                "SELECT delivery_id, attempt, at, outcome, status_code, latency_ms, error_class, excerpt \
                 FROM webhook_attempts WHERE delivery_id IN (",
            );
            let mut sep = qb.separated(", ");
            for d in deliveries.iter() {
                sep.push_bind(d.id.as_str());
            }
            qb.push(") ORDER BY seq");
            qb.build_query_as().fetch_all(p).await
        })?;
        let mut by_id: HashMap<String, Vec<Attempt>> = HashMap::new();
        for (id, attempt, at, outcome, status_code, latency_ms, error_class, excerpt) in rows {
            by_id.entry(id).or_default().push(Attempt {
                attempt,
                at,
                outcome,
                status_code,
                latency_ms,
                error_class,
                excerpt,
            });
        }
        for d in deliveries {
            d.log = by_id.remove(d.id.as_str()).unwrap_or_default();
        }
        Ok(())
    }

    /// A page of an app's deliveries, newest first, with their attempts.
    pub async fn list_deliveries(
        &self,
        app: &AppId,
        filter: &DeliveryFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<Delivery>, StoreError> {
        let limit = limit.clamp(1, 100);
        let rows: Vec<DeliveryRow> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE app_id = "
            ));
            qb.push_bind(app.as_str());
            if let Some(e) = &filter.endpoint_id {
                qb.push(" AND endpoint_id = ").push_bind(e.as_str());
            }
            if let Some(e) = &filter.event_id {
                qb.push(" AND event_id = ").push_bind(e.as_str());
            }
            if let Some(s) = &filter.status {
                qb.push(" AND status = ").push_bind(s.as_str());
            }
            if let Some(t) = filter.event_type {
                qb.push(" AND event_type = ").push_bind(t.as_str());
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
        let mut items = rows
            .into_iter()
            .map(Self::delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_attempts(&mut items).await?;
        Ok(paginate(items, limit, |d| Cursor {
            at: d.created_at,
            id: d.id.as_str().to_owned(),
        }))
    }

    /// One delivery of an app, with its attempts.
    pub async fn get_delivery(&self, app: &AppId, id: &DeliveryId) -> Result<Delivery, StoreError> {
        let row: Option<DeliveryRow> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE app_id = $1 AND id = $2"
            )))
            .bind(app.as_str())
            .bind(id.as_str())
            .fetch_optional(p)
            .await
        })?;
        let mut d = vec![Self::delivery_from_row(row.ok_or(StoreError::NotFound)?)?];
        self.attach_attempts(&mut d).await?;
        Ok(d.remove(0))
    }

    /// Queues the events of the given (app-scoped) deliveries again, as new deliveries due
    /// now. The event, and so its `webhook-id`, stays the same.
    pub async fn redeliver(
        &self,
        tenant: &TenantId,
        app: &AppId,
        of: &[(WebhookEndpointId, String, EventType)],
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let now = now_ms();
        let new: Vec<NewDelivery> = of
            .iter()
            .map(|(endpoint, event, kind)| NewDelivery {
                id: DeliveryId::new(),
                tenant_id: tenant.clone(),
                app_id: app.clone(),
                endpoint_id: endpoint.clone(),
                event_id: event.clone(),
                event_type: *kind,
            })
            .collect();
        let mut tx = self.db.begin().await?;
        self.insert_deliveries(&mut tx, &new, now, None).await?;
        tx.commit().await?;
        Ok(new.into_iter().map(|d| d.id).collect())
    }

    /// The deliveries of an endpoint that ended failed or blocked within a time range:
    /// what a recover sends again.
    pub async fn unsuccessful_deliveries(
        &self,
        app: &AppId,
        endpoint: &WebhookEndpointId,
        since: i64,
        until: i64,
    ) -> Result<Vec<(WebhookEndpointId, String, EventType)>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self.db.read(), |p| sqlx::query_as(
            "SELECT event_id, event_type FROM webhook_deliveries WHERE app_id = $1 \
             AND endpoint_id = $2 AND status IN ('failed', 'blocked') \
             AND created_at >= $3 AND created_at < $4 ORDER BY created_at LIMIT 10000"
        )
        .bind(app.as_str())
        .bind(endpoint.as_str())
        .bind(since)
        .bind(until)
        .fetch_all(p)
        .await)?;
        let mut seen = std::collections::HashSet::new();
        rows.into_iter()
            .filter(|(event, _)| seen.insert(event.clone()))
            .map(|(event, kind)| {
                Ok((
                    endpoint.clone(),
                    event,
                    EventType::parse(&kind).map_err(StoreError::corrupt)?,
                ))
            })
            .collect()
    }

    /// Deletes finished deliveries (and their attempts) older than `before`.
    pub async fn sweep_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, |c| sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries \
             WHERE created_at < $1 AND status <> 'pending')"
        )
        .bind(before)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        let n = on_tx!(&mut tx, |c| sqlx::query(
            "DELETE FROM webhook_deliveries WHERE created_at < $1 AND status <> 'pending'"
        )
        .bind(before)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(n)
    }
}
