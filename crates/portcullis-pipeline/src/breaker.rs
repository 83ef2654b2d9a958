//! The failure-storm breaker: when an app's or a provider connection's sends fail at a
//! high rate, sending on it is paused automatically and a policy event (and the audit
//! trail) says why.
//!
//! The windows are per process: each instance watches what its own workers see, which is
//! enough to notice a storm (every instance sees its share of it) and needs no shared
//! state; the pause it sets is shared through the database like any other. An app paused
//! by the breaker stays paused until a person resumes it — a storm of failures from an
//! app usually means a bug or abuse that someone must look at. A connection is paused for
//! a cool-down and then tried again, since a provider's outage usually ends on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Thresholds of the breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// Fewer attempts than this in the window never trip (a few failures are normal).
    pub min_attempts: u32,
    /// The share of failed attempts that trips it.
    pub failure_ratio: f64,
    /// How long a tripped connection rests before it is tried again.
    pub connection_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(300),
            min_attempts: 50,
            failure_ratio: 0.5,
            connection_cooldown: Duration::from_secs(300),
        }
    }
}

/// What tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    pub attempts: u32,
    pub failures: u32,
}

impl Trip {
    /// The sentence the pause and its event carry.
    pub fn reason(&self, what: &str, window: Duration) -> String {
        format!(
            "failure storm: {} of the {what}'s last {} sends failed within {} minutes; paused automatically",
            self.failures,
            self.attempts,
            window.as_secs().div_ceil(60)
        )
    }
}

/// Ten buckets over the window: old outcomes leave a bucket at a time.
const BUCKETS: i64 = 10;

#[derive(Debug, Default)]
struct Window {
    /// (bucket number, attempts, failures)
    buckets: Vec<(i64, u32, u32)>,
}

/// Sliding failure windows by key (an app or a connection id).
#[derive(Debug, Default)]
pub struct Breaker {
    config: BreakerConfig,
    windows: Mutex<HashMap<String, Window>>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Records outcomes for `key` at `now_ms`; returns a trip the first time the window
    /// crosses the threshold (the window then starts afresh).
    pub fn observe(&self, key: &str, attempts: u32, failures: u32, now_ms: i64) -> Option<Trip> {
        if attempts == 0 {
            return None;
        }
        let width = (self.config.window.as_millis() as i64 / BUCKETS).max(1);
        let bucket = now_ms.div_euclid(width);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(key.to_owned()).or_default();
        w.buckets.retain(|(b, _, _)| *b > bucket - BUCKETS);
        match w.buckets.last_mut() {
            Some((b, a, f)) if *b == bucket => {
                *a += attempts;
                *f += failures;
            }
            _ => w.buckets.push((bucket, attempts, failures)),
        }
        let (a, f) = w
            .buckets
            .iter()
            .fold((0u32, 0u32), |(a, f), (_, x, y)| (a + x, f + y));
        if a >= self.config.min_attempts && f64::from(f) >= f64::from(a) * self.config.failure_ratio
        {
            w.buckets.clear();
            return Some(Trip {
                attempts: a,
                failures: f,
            });
        }
        None
    }

    /// Forgets old windows (of apps and connections that stopped sending).
    pub fn sweep(&self, now_ms: i64) {
        let width = (self.config.window.as_millis() as i64 / BUCKETS).max(1);
        let bucket = now_ms.div_euclid(width);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.retain(|_, w| w.buckets.iter().any(|(b, _, _)| *b > bucket - BUCKETS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window: Duration::from_secs(300),
            min_attempts: 10,
            failure_ratio: 0.5,
            connection_cooldown: Duration::from_secs(60),
        })
    }

    #[test]
    fn trips_once_at_the_threshold() {
        let b = breaker();
        // Failures alone below the minimum: nothing.
        assert_eq!(b.observe("app", 9, 9, 0), None);
        // The tenth attempt crosses both thresholds.
        assert_eq!(
            b.observe("app", 1, 1, 1_000),
            Some(Trip {
                attempts: 10,
                failures: 10
            })
        );
        // The window started afresh.
        assert_eq!(b.observe("app", 1, 1, 2_000), None);
    }

    #[test]
    fn successes_dilute_and_old_outcomes_leave() {
        let b = breaker();
        assert_eq!(b.observe("c", 100, 40, 0), None, "40 % is below the ratio");
        // Five minutes later the old outcomes have left the window.
        assert_eq!(b.observe("c", 8, 8, 301_000), None, "too few attempts");
        assert!(b.observe("c", 2, 1, 302_000).is_some(), "9 of 10");
        // Keys are independent.
        assert_eq!(b.observe("other", 9, 9, 302_000), None);
    }

    #[test]
    fn sweep_forgets_idle_keys() {
        let b = breaker();
        b.observe("a", 1, 1, 0);
        b.sweep(1_000_000);
        assert!(b.windows.lock().unwrap().is_empty());
    }
}
