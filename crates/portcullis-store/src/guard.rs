//! The guard's state that is not about one recipient: usage counters (quotas and velocity)
//! and kill switches.
//!
//! Counters are rows keyed by what they count and the period they count it in
//! ([`CounterKeys`]); a new period is a new key, so nothing resets at midnight, and rows are
//! pruned after they expire. Increments are upserts (`count = count + n`), atomic on both
//! backends, so several instances sharing one PostgreSQL count together. Quota checks that
//! must be exact read the rows under a row lock inside the accepting transaction
//! ([`lock_counters`]).

use std::cell::RefCell;
use std::collections::HashMap;

use jiff::Timestamp;
use portcullis_domain::quota::{Periods, periods};
use portcullis_domain::{AppId, TenantId};
use sqlx::QueryBuilder;

use crate::tenants::TenantSettings;
use crate::{Backend, Db, StoreError, Tx, now_ms, on_pool, on_tx};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

thread_local! {
    /// The periods this thread worked out last, and the zone they are in. They change
    /// once a day, and working them out again is four time-zone conversions per message.
    static LAST_PERIODS: RefCell<Option<(Option<String>, Periods)>> = const { RefCell::new(None) };
}

/// [`periods`] in the tenant's zone, from the thread's last answer while `ts` is in the
/// same day of the same zone.
fn periods_of(settings: &TenantSettings, ts: Timestamp) -> Periods {
    LAST_PERIODS.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((zone, p)) = last.as_ref()
            && *zone == settings.timezone
            && p.day_start <= ts
            && ts < p.day_end
        {
            return p.clone();
        }
        let p = periods(ts, &settings.time_zone());
        *last = Some((settings.timezone.clone(), p.clone()));
        p
    })
}

/// A counter and when its row may be pruned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Counter {
    pub key: String,
    pub expires_at: i64,
}

impl Counter {
    fn new(key: String, expires_at: i64) -> Counter {
        Counter { key, expires_at }
    }
}

/// The counters one message of an app touches, at one instant.
#[derive(Debug, Clone)]
pub struct CounterKeys {
    /// Segments of the app today (tenant's zone).
    pub app_day: Counter,
    pub app_month: Counter,
    pub tenant_day: Counter,
    pub tenant_month: Counter,
    /// Messages of the app this minute (UTC).
    pub app_minute: Counter,
    /// Messages of the app this hour, and the previous hour (the burst baseline).
    pub app_hour: Counter,
    pub app_previous_hour: Counter,
    /// Messages of the app to high-risk prefixes this hour.
    pub high_risk_hour: Counter,
    /// The app's sends that failed for invalid numbers this hour.
    pub invalid_hour: Counter,
    /// When the tenant's day started (unix ms): today's messages to a recipient count
    /// from here.
    pub day_start: i64,
}

impl CounterKeys {
    pub fn new(tenant: &TenantId, app: &AppId, settings: &TenantSettings, now: i64) -> Self {
        let ts = Timestamp::from_millisecond(now).unwrap_or(Timestamp::UNIX_EPOCH);
        let p = periods_of(settings, ts);
        let (a, t) = (app.as_str(), tenant.as_str());
        let minute = now.div_euclid(MINUTE_MS);
        let hour = now.div_euclid(HOUR_MS);
        let hour_counter =
            |kind: &str, h: i64| Counter::new(format!("a:{a}:{kind}:{h}"), (h + 3) * HOUR_MS);
        CounterKeys {
            app_day: Counter::new(
                format!("a:{a}:d:{}", p.day),
                p.day_end.as_millisecond() + DAY_MS,
            ),
            app_month: Counter::new(
                format!("a:{a}:m:{}", p.month),
                p.month_end.as_millisecond() + DAY_MS,
            ),
            tenant_day: Counter::new(
                format!("t:{t}:d:{}", p.day),
                p.day_end.as_millisecond() + DAY_MS,
            ),
            tenant_month: Counter::new(
                format!("t:{t}:m:{}", p.month),
                p.month_end.as_millisecond() + DAY_MS,
            ),
            app_minute: Counter::new(format!("a:{a}:mi:{minute}"), (minute + 2) * MINUTE_MS),
            app_hour: hour_counter("h", hour),
            app_previous_hour: hour_counter("h", hour - 1),
            high_risk_hour: hour_counter("hr", hour),
            invalid_hour: hour_counter("inv", hour),
            day_start: p.day_start.as_millisecond(),
        }
    }

    /// The counters the guard reads before accepting a message.
    pub fn read_set(&self) -> [&Counter; 8] {
        [
            &self.app_day,
            &self.app_month,
            &self.tenant_day,
            &self.tenant_month,
            &self.app_minute,
            &self.app_previous_hour,
            &self.high_risk_hour,
            &self.invalid_hour,
        ]
    }

    /// The quota counters, in the order of [`portcullis_domain::quota::QuotaUsage`].
    pub fn quota_set(&self) -> [&Counter; 4] {
        [
            &self.app_day,
            &self.app_month,
            &self.tenant_day,
            &self.tenant_month,
        ]
    }
}

/// Values of counters by key (a missing row is 0).
pub type CounterValues = HashMap<String, i64>;

/// Reads the counter values for `counters`, outside any transaction.
pub async fn read_counters(db: &Db, counters: &[&Counter]) -> Result<CounterValues, StoreError> {
    if counters.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = on_pool!(db.read(), |p| {
        let mut qb = QueryBuilder::new("SELECT key, count FROM usage_counters WHERE key IN (");
        let mut sep = qb.separated(", ");
        for c in counters {
            sep.push_bind(c.key.as_str());
        }
        qb.push(")");
        qb.build_query_as().fetch_all(p).await
    })?;
    Ok(rows.into_iter().collect())
}

/// Reads counters inside the caller's transaction and keeps them locked until it ends, so
/// a quota check and the increment that follows are one step even across instances.
pub async fn lock_counters(
    tx: &mut Tx,
    backend: Backend,
    counters: &[&Counter],
) -> Result<CounterValues, StoreError> {
    if counters.is_empty() {
        return Ok(HashMap::new());
    }
    // On PostgreSQL rows must exist to be locked: create the missing ones at zero first.
    // SQLite has one writer, so inside a write transaction nobody else can change them and
    // a missing row simply reads as 0 (one statement fewer on the writer per batch).
    if backend == Backend::Postgres {
        add_usage(tx, &counters.iter().map(|c| (*c, 0)).collect::<Vec<_>>()).await?;
    }
    let rows: Vec<(String, i64)> = on_tx!(&mut *tx, |c| {
        let mut qb = QueryBuilder::new("SELECT key, count FROM usage_counters WHERE key IN (");
        let mut sep = qb.separated(", ");
        for c in counters {
            sep.push_bind(c.key.as_str());
        }
        qb.push(")");
        if backend == Backend::Postgres {
            qb.push(" ORDER BY key FOR UPDATE");
        }
        qb.build_query_as().fetch_all(c).await
    })?;
    Ok(rows.into_iter().collect())
}

/// Adds to counters (creating their rows), inside the caller's transaction. Deltas for the
/// same key are summed first, so a batch costs one statement per distinct counter.
pub async fn add_usage(tx: &mut Tx, deltas: &[(&Counter, i64)]) -> Result<(), StoreError> {
    let mut merged: Vec<(&Counter, i64)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for &(c, d) in deltas {
        match at.get(c.key.as_str()) {
            Some(&i) => merged[i].1 += d,
            None => {
                at.insert(c.key.as_str(), merged.len());
                merged.push((c, d));
            }
        }
    }
    // Keys in a fixed order, so two PostgreSQL transactions lock rows in the same order
    // and cannot deadlock each other.
    merged.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    for chunk in merged.chunks(200) {
        on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new("INSERT INTO usage_counters (key, count, expires_at) ");
            qb.push_values(chunk, |mut b, (counter, delta)| {
                b.push_bind(counter.key.as_str())
                    .push_bind(*delta)
                    .push_bind(counter.expires_at);
            });
            qb.push(
                " ON CONFLICT (key) DO UPDATE SET count = usage_counters.count + excluded.count",
            );
            qb.build().execute(c).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// Deletes counters past their expiry.
pub async fn prune_counters(db: &Db, now: i64) -> Result<u64, StoreError> {
    on_pool!(db.write(), |p| sqlx::query(
        "DELETE FROM usage_counters WHERE expires_at < $1"
    )
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))
    .map_err(StoreError::from)
}

/// A kill switch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    /// `global`, `tenant`, `app` or `connection`.
    pub scope: String,
    /// The tenant, app or connection id (`""` for global).
    pub target: String,
    pub stop_queue: bool,
    pub reason: String,
    /// `cli`, `api_key:<id>`, `breaker`.
    pub source: String,
    pub created_at: i64,
    /// When the pause ends by itself.
    pub until_at: Option<i64>,
}

/// Sets (or replaces) a pause.
pub async fn set_pause(db: &Db, p: &PauseRecord) -> Result<(), StoreError> {
    on_pool!(db.write(), |pool| sqlx::query(
        "INSERT INTO pauses (scope, target, stop_queue, reason, source, created_at, until_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (scope, target) DO UPDATE SET \
         stop_queue = excluded.stop_queue, reason = excluded.reason, source = excluded.source, \
         created_at = excluded.created_at, until_at = excluded.until_at"
    )
    .bind(&p.scope)
    .bind(&p.target)
    .bind(i64::from(p.stop_queue))
    .bind(&p.reason)
    .bind(&p.source)
    .bind(p.created_at)
    .bind(p.until_at)
    .execute(pool)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Lifts a pause. Returns whether one was in force.
pub async fn clear_pause(db: &Db, scope: &str, target: &str) -> Result<bool, StoreError> {
    let n = on_pool!(db.write(), |p| sqlx::query(
        "DELETE FROM pauses WHERE scope = $1 AND target = $2"
    )
    .bind(scope)
    .bind(target)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Every pause in force (expired ones are left out).
pub async fn list_pauses(db: &Db) -> Result<Vec<PauseRecord>, StoreError> {
    type Row = (String, String, i64, String, String, i64, Option<i64>);
    let rows: Vec<Row> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT scope, target, stop_queue, reason, source, created_at, until_at FROM pauses \
         WHERE until_at IS NULL OR until_at > $1 ORDER BY scope, target"
    )
    .bind(now_ms())
    .fetch_all(p)
    .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(scope, target, stop_queue, reason, source, created_at, until_at)| PauseRecord {
                scope,
                target,
                stop_queue: stop_queue != 0,
                reason,
                source,
                created_at,
                until_at,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's remembered periods are only reused for the same zone and day.
    #[test]
    fn remembered_periods_follow_the_zone_and_the_day() {
        let zone = |z: Option<&str>| TenantSettings {
            timezone: z.map(str::to_owned),
            ..TenantSettings::default()
        };
        let (utc, tokyo) = (zone(None), zone(Some("Asia/Tokyo")));
        // 2026-03-31 23:30 UTC is already 1 April in Tokyo.
        let t = Timestamp::from_second(1_774_999_800).unwrap();
        let minutes = |m: i64| t + jiff::SignedDuration::from_mins(m);
        for (settings, ts) in [
            (&utc, t),
            (&utc, minutes(20)),
            (&utc, minutes(31)),
            (&tokyo, minutes(31)),
            (&utc, minutes(31)),
            (&tokyo, t),
        ] {
            assert_eq!(periods_of(settings, ts), periods(ts, &settings.time_zone()));
        }
        assert_eq!(periods_of(&utc, t).month, "2026-03");
        assert_eq!(periods_of(&utc, minutes(31)).month, "2026-04");
        assert_eq!(periods_of(&tokyo, t).day, "2026-04-01");
    }
}
