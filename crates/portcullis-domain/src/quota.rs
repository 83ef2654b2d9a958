//! Segment quotas and the calendar periods they are counted in.
//!
//! Quotas count segments, not messages: a 3-segment message uses 3 units (API.md). Daily
//! windows start at 00:00 in the tenant's time zone (UTC unless the tenant sets one), monthly
//! windows on the 1st. Counters are keyed by the period's civil date, so a window "resets"
//! simply by a new key coming into use; nothing has to run at midnight.
//!
//! [`exceeded`] is the one rule, used both by the guard's early look and by the group
//! committer's exact check under lock (see `portcullis-pipeline::accept`).

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Segment limits of an app and of its tenant. `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// The app's segments per day.
    pub app_daily: Option<u64>,
    /// The app's segments per month.
    pub app_monthly: Option<u64>,
    /// The tenant's segments per day, all its apps together.
    pub tenant_daily: Option<u64>,
    /// The tenant's segments per month.
    pub tenant_monthly: Option<u64>,
}

impl QuotaLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.app_daily.is_some()
            || self.app_monthly.is_some()
            || self.tenant_daily.is_some()
            || self.tenant_monthly.is_some()
    }
}

/// Segments already used in the current periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The app today.
    pub app_day: u64,
    /// The app this month.
    pub app_month: u64,
    /// The tenant today.
    pub tenant_day: u64,
    /// The tenant this month.
    pub tenant_month: u64,
}

/// Why `segments` more would not fit, or `None` if they fit. A message is all or nothing:
/// a 3-segment message with 2 units left is refused, not sent in part.
pub fn exceeded(limits: &QuotaLimits, used: &QuotaUsage, segments: u64) -> Option<String> {
    let checks = [
        ("app", "daily", limits.app_daily, used.app_day),
        ("app", "monthly", limits.app_monthly, used.app_month),
        ("tenant", "daily", limits.tenant_daily, used.tenant_day),
        (
            "tenant",
            "monthly",
            limits.tenant_monthly,
            used.tenant_month,
        ),
    ];
    checks.into_iter().find_map(|(who, period, limit, used)| {
        let limit = limit?;
        (used.saturating_add(segments) > limit).then(|| {
            format!(
                "the {who}'s {period} quota of {limit} segments would be exceeded ({used} used, this message needs {segments})",
            )
        })
    })
}

/// The calendar periods an instant falls in, for counter keys and their expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    /// `YYYY-MM-DD` in the tenant's zone.
    pub day: String,
    /// `YYYY-MM` in the tenant's zone.
    pub month: String,
    /// When the day ends.
    pub day_end: Timestamp,
    /// When the month ends.
    pub month_end: Timestamp,
    /// When the day started (counts of today's messages start here).
    pub day_start: Timestamp,
}

/// The day and month `now` falls in, in `tz`.
pub fn periods(now: Timestamp, tz: &TimeZone) -> Periods {
    let local = now.to_zoned(tz.clone());
    let date = local.date();
    let day_start = date
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .unwrap_or(now);
    let day_end = date
        .tomorrow()
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(now);
    let month_end = date
        .first_of_month()
        .checked_add(jiff::Span::new().months(1))
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(now);
    Periods {
        day: date.strftime("%Y-%m-%d").to_string(),
        month: date.strftime("%Y-%m").to_string(),
        day_end,
        month_end,
        day_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(app_daily: u64) -> QuotaLimits {
        QuotaLimits {
            app_daily: Some(app_daily),
            ..QuotaLimits::default()
        }
    }

    #[test]
    fn boundaries() {
        let used = QuotaUsage {
            app_day: 98,
            ..QuotaUsage::default()
        };
        // 2 units left.
        assert_eq!(exceeded(&limits(100), &used, 1), None);
        assert_eq!(exceeded(&limits(100), &used, 2), None);
        let why = exceeded(&limits(100), &used, 3).expect("3 segments with 2 left");
        assert!(why.contains("daily quota of 100"), "{why}");
        // Exactly at the limit: nothing more fits.
        let full = QuotaUsage {
            app_day: 100,
            ..QuotaUsage::default()
        };
        assert!(exceeded(&limits(100), &full, 1).is_some());
        // No limits: anything fits.
        assert_eq!(
            exceeded(&QuotaLimits::default(), &full, u64::MAX),
            None,
            "unlimited"
        );
        // The tenant's month counts too.
        let tenant = QuotaLimits {
            tenant_monthly: Some(10),
            ..QuotaLimits::default()
        };
        let used = QuotaUsage {
            tenant_month: 9,
            ..QuotaUsage::default()
        };
        assert!(
            exceeded(&tenant, &used, 2)
                .unwrap()
                .contains("tenant's monthly")
        );
    }

    #[test]
    fn periods_follow_the_tenant_zone() {
        let now: Timestamp = "2026-03-31T23:30:00Z".parse().unwrap();
        let utc = periods(now, &TimeZone::UTC);
        assert_eq!(
            (utc.day.as_str(), utc.month.as_str()),
            ("2026-03-31", "2026-03")
        );
        assert_eq!(utc.day_end, "2026-04-01T00:00:00Z".parse().unwrap());
        assert_eq!(utc.month_end, "2026-04-01T00:00:00Z".parse().unwrap());
        // 01:30 on April 1st in Berlin (CEST): already the next day and month there.
        let berlin = periods(now, &TimeZone::get("Europe/Berlin").unwrap());
        assert_eq!(
            (berlin.day.as_str(), berlin.month.as_str()),
            ("2026-04-01", "2026-04")
        );
        assert_eq!(berlin.day_start, "2026-03-31T22:00:00Z".parse().unwrap());
        assert_eq!(berlin.day_end, "2026-04-01T22:00:00Z".parse().unwrap());
        // A DST day is 23 hours long in New York.
        let ny = periods(
            "2026-03-08T12:00:00Z".parse().unwrap(),
            &TimeZone::get("America/New_York").unwrap(),
        );
        assert_eq!(
            ny.day_end.duration_since(ny.day_start),
            jiff::SignedDuration::from_hours(23)
        );
    }
}
