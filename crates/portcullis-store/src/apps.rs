//! Apps: a tenant's sending applications, with their senders, allowed purposes, limits
//! and ordered provider route.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use portcullis_domain::route::{RouteEntry, RouteScope};
use portcullis_domain::{AppId, Channel, ConnectionId, PurposeSet, TenantId, policy};

use crate::tenants::TenantSettings;
use serde::Serialize;

use crate::db::Backend;
use crate::{Db, StoreError, found, now_ms, on_pool, on_tx};

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub id: AppId,
    pub tenant_id: TenantId,
    pub name: String,
    pub senders: Vec<String>,
    pub allowed_purposes: PurposeSet,
    pub max_body_chars: u32,
    pub policy: PolicySettings,
    pub created_at: i64,
}

/// An app's policy settings as stored. Every field has a default, so settings written by
/// an older version still load.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PolicySettings {
    /// Require a consent record for every non-essential purpose, not only marketing.
    pub consent_for_non_essential: bool,
    /// `defer` (default) or `refuse` non-essential messages in the recipient's quiet hours.
    pub quiet_hours: String,
    /// ISO regions the app may send to; `None`: the countries of its own E.164 senders
    /// (see [`App::policy`]), or any if `allow_all_countries`.
    pub allowed_countries: Option<Vec<String>>,
    /// Send to any country (an explicit operator choice; high-risk prefixes keep their
    /// hourly budget).
    pub allow_all_countries: bool,
    /// The app's segments per day (`None`: unlimited).
    pub daily_segment_quota: Option<u64>,
    /// The app's segments per month.
    pub monthly_segment_quota: Option<u64>,
    /// At most this many non-essential messages per recipient per day (`None`: no cap).
    pub recipient_daily_cap: Option<u32>,
    /// Below this many messages a minute nothing is a burst (0: burst detection off).
    pub burst_min_per_minute: u32,
    /// A minute above this many times the previous hour's average minute is a burst.
    pub burst_factor: u32,
    /// Messages per hour to high-risk prefixes before they are refused.
    pub high_risk_per_hour: u32,
    /// Hold new messages after this many invalid-number failures in an hour (0: off).
    pub hold_after_invalid_failures: u32,
    /// Refuse bodies linking to URL shorteners.
    pub block_url_shorteners: bool,
    /// Refuse bodies linking to these domains (and their subdomains).
    pub blocked_domains: Vec<String>,
    /// Append the opt-out footer to non-essential messages.
    pub opt_out_footer: bool,
    /// The footer's text.
    pub opt_out_footer_text: String,
    /// Extra opt-out keywords besides the defaults.
    pub extra_opt_out_keywords: Vec<String>,
    /// Reply to HELP / INFO.
    pub help_text: String,
    /// The one confirmation sent after an opt-out.
    pub opt_out_confirmation: String,
    /// The confirmation sent after an opt-in.
    pub opt_in_confirmation: String,
    /// Show recipients' full numbers in this app's webhooks and realtime events (masked by
    /// default).
    pub webhook_full_numbers: bool,
    /// Browser origins allowed to open the realtime stream. A request without an `Origin`
    /// (a server-side client) is not affected.
    pub realtime_origins: Vec<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            consent_for_non_essential: false,
            quiet_hours: "defer".to_owned(),
            allowed_countries: None,
            allow_all_countries: false,
            daily_segment_quota: None,
            monthly_segment_quota: None,
            recipient_daily_cap: Some(policy::DEFAULT_RECIPIENT_DAILY_CAP),
            burst_min_per_minute: policy::BurstRule::default().min_per_minute,
            burst_factor: policy::BurstRule::default().factor,
            high_risk_per_hour: policy::DEFAULT_HIGH_RISK_PER_HOUR,
            hold_after_invalid_failures: policy::DEFAULT_HOLD_AFTER_INVALID_FAILURES,
            block_url_shorteners: false,
            blocked_domains: Vec::new(),
            opt_out_footer: false,
            opt_out_footer_text: portcullis_domain::content::DEFAULT_FOOTER.to_owned(),
            extra_opt_out_keywords: Vec::new(),
            help_text: "Reply STOP to unsubscribe, START to resubscribe. Msg & data rates may apply.".to_owned(),
            opt_out_confirmation: "You are unsubscribed and will receive no further messages. Reply START to resubscribe."
                .to_owned(),
            opt_in_confirmation: "You are subscribed again. Reply STOP to unsubscribe.".to_owned(),
            webhook_full_numbers: false,
            realtime_origins: Vec::new(),
        }
    }
}

impl App {
    /// The app's policy in the domain's terms, for the guard, with its tenant's quotas.
    ///
    /// Without an explicit country list the app may send to the countries of its own
    /// E.164 senders (the countries it was set up for): a stolen key cannot then pump
    /// traffic to the other side of the world. An app with only alphanumeric senders has
    /// no such default and sends anywhere until a list is set.
    pub fn policy(&self, tenant: &TenantSettings) -> policy::AppPolicy {
        let p = &self.policy;
        let allowed_countries = p.allowed_countries.clone().or_else(|| {
            if p.allow_all_countries {
                return None;
            }
            let mut regions: Vec<String> = self
                .senders
                .iter()
                .filter_map(|s| sender_region(s))
                .collect();
            regions.sort();
            regions.dedup();
            (!regions.is_empty()).then_some(regions)
        });
        policy::AppPolicy {
            allowed_purposes: self.allowed_purposes,
            consent_for_non_essential: p.consent_for_non_essential,
            quiet_hours: if p.quiet_hours == "refuse" {
                policy::QuietHoursMode::Refuse
            } else {
                policy::QuietHoursMode::Defer
            },
            allowed_countries,
            quotas: portcullis_domain::quota::QuotaLimits {
                app_daily: p.daily_segment_quota,
                app_monthly: p.monthly_segment_quota,
                tenant_daily: tenant.daily_segment_quota,
                tenant_monthly: tenant.monthly_segment_quota,
            },
            recipient_daily_cap: p.recipient_daily_cap,
            burst: (p.burst_min_per_minute > 0).then_some(policy::BurstRule {
                min_per_minute: p.burst_min_per_minute,
                factor: p.burst_factor.max(1),
            }),
            high_risk_per_hour: p.high_risk_per_hour,
            hold_after_invalid_failures: (p.hold_after_invalid_failures > 0)
                .then_some(p.hold_after_invalid_failures),
            links: portcullis_domain::content::LinkRules {
                block_shorteners: p.block_url_shorteners,
                blocked_domains: p.blocked_domains.clone(),
            },
            opt_out_footer: p.opt_out_footer.then(|| p.opt_out_footer_text.clone()),
        }
    }
}

/// The region of a sender number (`None` for alphanumeric senders), remembered: the
/// guard asks on every request, parsing a number costs tens of microseconds, and the set of
/// senders is small.
fn sender_region(sender: &str) -> Option<String> {
    static KNOWN: LazyLock<RwLock<HashMap<String, Option<String>>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    if let Some(region) = KNOWN.read().unwrap_or_else(|p| p.into_inner()).get(sender) {
        return region.clone();
    }
    let region = portcullis_domain::E164::parse(sender)
        .ok()
        .and_then(|n| n.region());
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    // Bounded, whatever is stored in the apps table.
    if known.len() < 100_000 {
        known.insert(sender.to_owned(), region.clone());
    }
    region
}

#[derive(sqlx::FromRow)]
pub(crate) struct AppRow {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) name: String,
    pub(crate) senders: String,
    pub(crate) allowed_purposes: String,
    pub(crate) max_body_chars: i64,
    pub(crate) policy: String,
    pub(crate) created_at: i64,
}

impl TryFrom<AppRow> for App {
    type Error = StoreError;
    fn try_from(r: AppRow) -> Result<Self, StoreError> {
        Ok(App {
            id: AppId::from_trusted(r.id),
            tenant_id: TenantId::from_trusted(r.tenant_id),
            name: r.name,
            senders: serde_json::from_str(&r.senders).map_err(StoreError::corrupt)?,
            allowed_purposes: serde_json::from_str(&r.allowed_purposes)
                .map_err(StoreError::corrupt)?,
            max_body_chars: u32::try_from(r.max_body_chars).map_err(StoreError::corrupt)?,
            policy: serde_json::from_str(&r.policy).map_err(StoreError::corrupt)?,
            created_at: r.created_at,
        })
    }
}

const COLUMNS: &str =
    "id, tenant_id, name, senders, allowed_purposes, max_body_chars, policy, created_at";

/// Creates an app with the defaults of a new app: every purpose but marketing, the default
/// body limit, no senders.
pub async fn create(db: &Db, tenant: &TenantId, name: &str) -> Result<App, StoreError> {
    let app = App {
        id: AppId::new(),
        tenant_id: tenant.clone(),
        name: name.to_owned(),
        senders: Vec::new(),
        allowed_purposes: PurposeSet::default_for_new_app(),
        max_body_chars: portcullis_domain::body::DEFAULT_MAX_BODY_CHARS as u32,
        policy: PolicySettings::default(),
        created_at: now_ms(),
    };
    let purposes = serde_json::to_string(&app.allowed_purposes).map_err(StoreError::corrupt)?;
    let res = on_pool!(db.write(), |p| {
        sqlx::query(
        "INSERT INTO apps (id, tenant_id, name, senders, allowed_purposes, max_body_chars, created_at)
         SELECT $1, id, $3, '[]', $4, $5, $6 FROM tenants WHERE id = $2"
    )
    .bind(app.id.as_str())
    .bind(tenant.as_str())
    .bind(&app.name)
    .bind(&purposes)
    .bind(i64::from(app.max_body_chars))
    .bind(app.created_at)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    if res == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(app)
}

/// An app of a tenant.
pub async fn get(db: &Db, tenant: &TenantId, id: &AppId) -> Result<App, StoreError> {
    let row: Option<AppRow> = on_pool!(db.read(), |p| sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT {COLUMNS} FROM apps WHERE tenant_id = $1 AND id = $2")
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// An app by id alone: for the operator CLI, which acts across tenants.
pub async fn get_any_tenant(db: &Db, id: &AppId) -> Result<App, StoreError> {
    let row: Option<AppRow> = on_pool!(db.read(), |p| sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT {COLUMNS} FROM apps WHERE id = $1")
    ))
    .bind(id.as_str())
    .fetch_optional(p)
    .await)?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// Apps, optionally of one tenant (operator listing).
pub async fn list(db: &Db, tenant: Option<&TenantId>) -> Result<Vec<App>, StoreError> {
    let rows: Vec<AppRow> = on_pool!(db.read(), |p| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM apps WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY created_at, id"
    )))
    .bind(tenant.map(|t| t.as_str()))
    .fetch_all(p)
    .await
    })?;
    rows.into_iter().map(App::try_from).collect()
}

pub async fn set_senders(db: &Db, app: &AppId, senders: &[String]) -> Result<(), StoreError> {
    let json = serde_json::to_string(senders).map_err(StoreError::corrupt)?;
    let res = on_pool!(db.write(), |p| sqlx::query(
        "UPDATE apps SET senders = $1 WHERE id = $2"
    )
    .bind(&json)
    .bind(app.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    found(res)
}

pub async fn set_allowed_purposes(
    db: &Db,
    app: &AppId,
    purposes: &PurposeSet,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(purposes).map_err(StoreError::corrupt)?;
    let res = on_pool!(db.write(), |p| sqlx::query(
        "UPDATE apps SET allowed_purposes = $1 WHERE id = $2"
    )
    .bind(&json)
    .bind(app.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    found(res)
}

/// Replaces the entries of the app's route that have exactly `scope` with `connections`,
/// in failover order (an empty list removes that scope). Entries of other scopes stay.
pub async fn set_route(
    db: &Db,
    app: &AppId,
    scope: &RouteScope,
    connections: &[ConnectionId],
) -> Result<(), StoreError> {
    let channel = scope.channel.map(|c| c.as_str());
    let countries = (!scope.countries.is_empty()).then(|| scope.countries.join(","));
    // Equal including NULLs: SQLite's `IS`, PostgreSQL's `IS NOT DISTINCT FROM`.
    let delete_scope = match db.backend() {
        Backend::Sqlite => {
            "DELETE FROM app_routes WHERE app_id = $1 AND channel IS $2 AND countries IS $3"
        }
        Backend::Postgres => {
            "DELETE FROM app_routes WHERE app_id = $1 \
             AND channel IS NOT DISTINCT FROM $2 AND countries IS NOT DISTINCT FROM $3"
        }
    };
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |c| {
        sqlx::query(delete_scope)
            .bind(app.as_str())
            .bind(channel)
            .bind(countries.as_deref())
            .execute(&mut *c)
            .await?;
        let (next,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM app_routes WHERE app_id = $1",
        )
        .bind(app.as_str())
        .fetch_one(&mut *c)
        .await?;
        for (i, conn) in connections.iter().enumerate() {
            sqlx::query(
                "INSERT INTO app_routes (app_id, position, connection_id, channel, countries) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(app.as_str())
            .bind(next + i as i64)
            .bind(conn.as_str())
            .bind(channel)
            .bind(countries.as_deref())
            .execute(&mut *c)
            .await?;
        }
        Ok::<(), sqlx::Error>(())
    })?;
    tx.commit().await
}

/// The app's route, every scope, in the operator's order.
pub async fn route(db: &Db, app: &AppId) -> Result<Vec<RouteEntry>, StoreError> {
    let rows: Vec<(String, Option<String>, Option<String>)> = on_pool!(db.read(), |p| {
        sqlx::query_as(
            "SELECT connection_id, channel, countries FROM app_routes WHERE app_id = $1 \
             ORDER BY position",
        )
        .bind(app.as_str())
        .fetch_all(p)
        .await
    })?;
    rows.into_iter()
        .map(|(conn, channel, countries)| {
            let channel = channel
                .map(|c| Channel::parse(&c))
                .transpose()
                .map_err(StoreError::corrupt)?;
            let countries: Vec<String> = countries
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            Ok(RouteEntry {
                connection_id: ConnectionId::from_trusted(conn),
                scope: RouteScope::new(channel, &countries).map_err(StoreError::corrupt)?,
            })
        })
        .collect()
}

/// The apps that send from `sender`, optionally only those of one tenant: how an inbound
/// message that names one of our numbers finds its app.
pub async fn find_by_sender(
    db: &Db,
    tenant: Option<&TenantId>,
    sender: &str,
) -> Result<Vec<App>, StoreError> {
    // The senders column is a JSON array; the LIKE narrows, the exact check decides.
    let pattern = format!("%\"{}\"%", sender.replace(['%', '_', '\\'], ""));
    let rows: Vec<AppRow> = on_pool!(db.read(), |p| {
        sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT {COLUMNS} FROM apps WHERE senders LIKE $1 AND ($2 IS NULL OR tenant_id = $2) ORDER BY created_at, id")
    ))
    .bind(&pattern)
    .bind(tenant.map(|t| t.as_str()))
    .fetch_all(p)
    .await
    })?;
    let apps = rows
        .into_iter()
        .map(App::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(apps
        .into_iter()
        .filter(|a| a.senders.iter().any(|s| s == sender))
        .collect())
}

/// Replaces the app's policy settings.
pub async fn set_policy(db: &Db, app: &AppId, policy: &PolicySettings) -> Result<(), StoreError> {
    let json = serde_json::to_string(policy).map_err(StoreError::corrupt)?;
    let n = on_pool!(db.write(), |p| sqlx::query(
        "UPDATE apps SET policy = $1 WHERE id = $2"
    )
    .bind(&json)
    .bind(app.as_str())
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    found(n)
}
