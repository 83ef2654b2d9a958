//! Rate limits: per client address (before authentication), and per key, per app and per
//! tenant (after it). Each is a GCRA limit (governor) with a rate and a burst, off unless
//! configured. A limited request gets `429` with `Retry-After` and the `RateLimit-*`
//! headers of the limit it hit.
//!
//! In-process: with several instances each enforces its own share. (Redis-shared counters
//! are still to come; see the perimeter issue.)

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A configured limit: `rate` per `per`, bursting to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parses `100/s`, `6000/m`, `50000/h`, optionally with a burst: `100/s,burst=200`.
    /// The burst defaults to the count.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate like 100/s, 6000/m or 100/s,burst=200");
        let (rate, burst) = match s.split_once(',') {
            Some((r, b)) => (r.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match burst {
            None => count,
            Some(b) => b
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?,
        };
        Ok(Rate { count, per, burst })
    }

    fn quota(&self) -> Quota {
        let period = self.per / self.count.get();
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(self.burst)
    }
}

/// Which limits apply.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    pub per_ip: Option<Rate>,
    pub per_key: Option<Rate>,
    pub per_app: Option<Rate>,
    pub per_tenant: Option<Rate>,
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Limit {
    scope: &'static str,
    rate: Rate,
    limiter: Keyed,
}

impl Limit {
    fn new(scope: &'static str, rate: Option<Rate>) -> Option<Limit> {
        rate.map(|rate| Limit {
            scope,
            rate,
            limiter: RateLimiter::keyed(rate.quota()).with_middleware(),
        })
    }

    fn check(&self, key: &str) -> Result<(), Limited> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(_) => Ok(()),
            Err(not_until) => Err(Limited {
                scope: self.scope,
                limit: self.rate.burst.get(),
                window: self.rate.per,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
        }
    }
}

/// A request over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `ip`, `key`, `app` or `tenant`.
    pub scope: &'static str,
    pub limit: u32,
    pub window: Duration,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least 1 (HTTP's `Retry-After` has no fractions).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// The limiters of this process.
pub struct RateLimits {
    ip: Option<Limit>,
    key: Option<Limit>,
    app: Option<Limit>,
    tenant: Option<Limit>,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            ip: Limit::new("ip", config.per_ip),
            key: Limit::new("key", config.per_key),
            app: Limit::new("app", config.per_app),
            tenant: Limit::new("tenant", config.per_tenant),
        }
    }

    /// Before authentication: the client address.
    pub fn check_ip(&self, ip: &str) -> Result<(), Limited> {
        self.ip.as_ref().map_or(Ok(()), |l| l.check(ip))
    }

    /// After authentication: the key, its app, its tenant (narrowest first).
    pub fn check_caller(&self, key: &str, app: &str, tenant: &str) -> Result<(), Limited> {
        for (limit, id) in [(&self.key, key), (&self.app, app), (&self.tenant, tenant)] {
            if let Some(l) = limit {
                l.check(id)?;
            }
        }
        Ok(())
    }

    /// Forgets the state of keys that are back to full capacity (memory stays bounded by
    /// the clients active within one window).
    pub fn retain_recent(&self) {
        for l in [&self.ip, &self.key, &self.app, &self.tenant]
            .into_iter()
            .flatten()
        {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = Rate::parse("100/s").unwrap();
        assert_eq!(
            (r.count.get(), r.per, r.burst.get()),
            (100, Duration::from_secs(1), 100)
        );
        let r = Rate::parse("6000/m, burst=50").unwrap();
        assert_eq!(
            (r.count.get(), r.per, r.burst.get()),
            (6000, Duration::from_secs(60), 50)
        );
        for bad in [
            "",
            "100",
            "0/s",
            "100/d",
            "100/s,burst=0",
            "x/s",
            "100/s,b=3",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_burst_passes_then_the_rest_waits() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_key: Some(Rate::parse("1/m,burst=3").unwrap()),
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(limits.check_caller("key_a", "app", "tnt").is_ok());
        }
        let limited = limits.check_caller("key_a", "app", "tnt").unwrap_err();
        assert_eq!(limited.scope, "key");
        assert_eq!(limited.limit, 3);
        assert!(
            (50..=60).contains(&limited.retry_after_secs()),
            "{limited:?}"
        );
        assert!(
            limits.check_caller("key_b", "app", "tnt").is_ok(),
            "other keys unaffected"
        );
        assert!(
            limits.check_ip("192.0.2.1").is_ok(),
            "no per-ip limit configured"
        );
    }

    #[test]
    fn the_app_limit_spans_its_keys() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_app: Some(Rate::parse("1/h,burst=2").unwrap()),
            ..Default::default()
        });
        assert!(limits.check_caller("k1", "app_a", "t").is_ok());
        assert!(limits.check_caller("k2", "app_a", "t").is_ok());
        assert_eq!(
            limits.check_caller("k3", "app_a", "t").unwrap_err().scope,
            "app"
        );
        assert!(limits.check_caller("k3", "app_b", "t").is_ok());
    }
}
