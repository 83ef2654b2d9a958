//! Rate limits: per client address (before authentication), and per key, per app and per
//! tenant (after it). Each is a GCRA limit (governor) with a rate and a burst, off unless
//! configured. A limited request gets `429` with `Retry-After` and the `RateLimit-*`
//! headers of the limit it hit.
//!
//! Two backends behind one type: in process (the default; with several instances each
//! enforces the limits on its own share of the traffic), or shared by every instance
//! through Redis ([`crate::shared_counters`], the same GCRA in a Lua script). When Redis
//! does not answer, a request is checked in process instead (see that module's failure
//! policy): limits never switch off.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::shared_counters::SharedCounters;

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

    /// GCRA's emission interval: one request per this.
    fn interval(&self) -> Duration {
        (self.per / self.count.get()).max(Duration::from_nanos(1))
    }

    /// GCRA's tolerance: how far ahead of the schedule a burst may run.
    fn tolerance(&self) -> Duration {
        self.interval() * (self.burst.get() - 1)
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.interval())
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
            Err(not_until) => {
                Err(self.limited(not_until.wait_time_from(DefaultClock::default().now())))
            }
        }
    }

    fn limited(&self, retry_after: Duration) -> Limited {
        Limited {
            scope: self.scope,
            limit: self.rate.burst.get(),
            window: self.rate.per,
            retry_after,
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

/// Where the counters live.
enum Backend {
    InProcess,
    /// Shared through Redis; the in-process limiters are the fallback.
    Redis(Arc<SharedCounters>),
}

/// The configured limits, checked in process or through Redis.
pub struct RateLimits {
    ip: Option<Limit>,
    key: Option<Limit>,
    app: Option<Limit>,
    tenant: Option<Limit>,
    backend: Backend,
}

impl RateLimits {
    /// Limits counted in this process.
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            ip: Limit::new("ip", config.per_ip),
            key: Limit::new("key", config.per_key),
            app: Limit::new("app", config.per_app),
            tenant: Limit::new("tenant", config.per_tenant),
            backend: Backend::InProcess,
        }
    }

    /// Limits counted in Redis, shared by every instance using the same Redis and key
    /// prefix (in process while Redis does not answer).
    pub fn shared(config: &RateLimitConfig, counters: Arc<SharedCounters>) -> RateLimits {
        RateLimits {
            backend: Backend::Redis(counters),
            ..RateLimits::new(config)
        }
    }

    /// Before authentication: the client address.
    pub async fn check_ip(&self, ip: &str) -> Result<(), Limited> {
        self.check(&[(&self.ip, ip)]).await
    }

    /// After authentication: the key, its app, its tenant (narrowest first).
    pub async fn check_caller(&self, key: &str, app: &str, tenant: &str) -> Result<(), Limited> {
        self.check(&[(&self.key, key), (&self.app, app), (&self.tenant, tenant)])
            .await
    }

    /// Checks the configured ones of `limits` in order; the first that refuses answers.
    async fn check(&self, limits: &[(&Option<Limit>, &str)]) -> Result<(), Limited> {
        let active: Vec<(&Limit, &str)> = limits
            .iter()
            .filter_map(|(l, id)| l.as_ref().map(|l| (l, *id)))
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        if let Backend::Redis(shared) = &self.backend {
            let specs: Vec<_> = active
                .iter()
                .map(|(l, id)| (l.scope, *id, l.rate.interval(), l.rate.tolerance()))
                .collect();
            // One round trip for every limit of the request; `Err`: fall back below.
            if let Ok(answer) = shared.gcra(&specs).await {
                let spent = answer.map_or(active.len(), |(i, _)| i);
                // The in-process limiters follow this instance's own traffic, so that if
                // Redis goes away they carry on from it rather than from a full burst.
                for (l, id) in &active[..spent] {
                    let _ = l.check(id);
                }
                return match answer {
                    None => Ok(()),
                    Some((i, wait)) => Err(active[i].0.limited(wait)),
                };
            }
        }
        for (l, id) in active {
            l.check(id)?;
        }
        Ok(())
    }

    /// The address limit's scope, interval and tolerance, when one is configured: for the
    /// guard's single round trip to Redis.
    pub(crate) fn ip_spec(&self) -> Option<(&'static str, Duration, Duration)> {
        self.ip
            .as_ref()
            .map(|l| (l.scope, l.rate.interval(), l.rate.tolerance()))
    }

    /// Redis allowed the address: the in-process limiter follows this instance's traffic.
    pub(crate) fn note_ip(&self, ip: &str) {
        if let Some(l) = &self.ip {
            let _ = l.check(ip);
        }
    }

    /// The refusal of the address limit (Redis said to wait `wait`).
    pub(crate) fn ip_limited(&self, wait: Duration) -> Option<Limited> {
        self.ip.as_ref().map(|l| l.limited(wait))
    }

    /// The Redis counters, in shared mode.
    pub(crate) fn shared_counters(&self) -> Option<&Arc<SharedCounters>> {
        match &self.backend {
            Backend::Redis(s) => Some(s),
            Backend::InProcess => None,
        }
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

    async fn the_burst_passes_then_the_rest_waits(limits: RateLimits) {
        for _ in 0..3 {
            assert!(limits.check_caller("key_a", "app", "tnt").await.is_ok());
        }
        let limited = limits
            .check_caller("key_a", "app", "tnt")
            .await
            .unwrap_err();
        assert_eq!(limited.scope, "key");
        assert_eq!(limited.limit, 3);
        assert!(
            (50..=60).contains(&limited.retry_after_secs()),
            "{limited:?}"
        );
        assert!(
            limits.check_caller("key_b", "app", "tnt").await.is_ok(),
            "other keys unaffected"
        );
        assert!(
            limits.check_ip("192.0.2.1").await.is_ok(),
            "no per-ip limit configured"
        );
    }

    fn burst_config() -> RateLimitConfig {
        RateLimitConfig {
            per_key: Some(Rate::parse("1/m,burst=3").unwrap()),
            ..Default::default()
        }
    }

    async fn the_app_limit_spans_its_keys(limits: RateLimits) {
        assert!(limits.check_caller("k1", "app_a", "t").await.is_ok());
        assert!(limits.check_caller("k2", "app_a", "t").await.is_ok());
        assert_eq!(
            limits
                .check_caller("k3", "app_a", "t")
                .await
                .unwrap_err()
                .scope,
            "app"
        );
        assert!(limits.check_caller("k3", "app_b", "t").await.is_ok());
    }

    fn app_config() -> RateLimitConfig {
        RateLimitConfig {
            per_app: Some(Rate::parse("1/h,burst=2").unwrap()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn in_process() {
        the_burst_passes_then_the_rest_waits(RateLimits::new(&burst_config())).await;
        the_app_limit_spans_its_keys(RateLimits::new(&app_config())).await;
    }

    /// The same answers through Redis (127.0.0.1:6379, keys under a fresh prefix).
    #[tokio::test]
    async fn in_redis() {
        let shared = crate::shared_counters::tests::local_redis();
        assert!(shared.warm_up().await, "Redis at 127.0.0.1:6379");
        let limits = RateLimits::shared(&burst_config(), shared.clone());
        the_burst_passes_then_the_rest_waits(limits).await;
        the_app_limit_spans_its_keys(RateLimits::shared(&app_config(), shared.clone())).await;
        // Another instance (its own limiter, the same Redis) sees the same counters.
        let other = RateLimits::shared(&burst_config(), shared);
        assert_eq!(
            other
                .check_caller("key_a", "app", "tnt")
                .await
                .unwrap_err()
                .scope,
            "key"
        );
    }

    /// Redis unreachable: the in-process limiters answer instead, and it is counted.
    #[test]
    fn unreachable_redis_falls_back_in_process() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let shared = crate::shared_counters::tests::closed_port_redis().await;
                let limits = RateLimits::shared(&burst_config(), shared);
                the_burst_passes_then_the_rest_waits(limits).await;
            })
        });
        let text = handle.render();
        assert!(
            text.contains("portcullis_redis_fallbacks_total{check=\"rate_limit\"} 5"),
            "{text}"
        );
    }
}
