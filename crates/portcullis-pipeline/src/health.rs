//! Per-connection health, as the send workers see it: a circuit breaker that moves traffic
//! to the next connection of a route when one is failing, the slow-down a provider asks
//! for (`429`, `Retry-After`), and pacing per sender number (`sender_mps`).
//!
//! All of it is per process and in memory. Every instance learns a provider's state from
//! its own sends within a few messages, which is faster than sharing it would be; the
//! price is that `sender_mps` holds per instance (two instances can send twice the rate).
//!
//! The breaker is written here rather than taken from a crate because its inputs are ours:
//! a provider that refuses a message (a permanent error) is a working provider, a throttled
//! one is working but busy, and only an unavailable one counts against its circuit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use portcullis_domain::ConnectionId;

/// When a connection's circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct CircuitConfig {
    /// How many recent attempts the failure rate is taken over.
    pub window: usize,
    /// Fewer attempts than this never open the circuit on the rate alone.
    pub min_attempts: usize,
    /// The share of failed attempts among the recent ones that opens the circuit.
    pub failure_ratio: f64,
    /// This many failures in a row open it whatever the rate.
    pub consecutive_failures: u32,
    /// How long an opened circuit stays open before a probe; doubled each time a probe
    /// fails, up to `max_open`.
    pub open_for: Duration,
    pub max_open: Duration,
    /// How long a throttled connection rests when the provider did not say.
    pub throttle_default: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            window: 20,
            min_attempts: 10,
            failure_ratio: 0.5,
            consecutive_failures: 5,
            open_for: Duration::from_secs(10),
            max_open: Duration::from_secs(300),
            throttle_default: Duration::from_secs(1),
        }
    }
}

/// What one attempt on a connection showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The provider answered (accepted the message, or refused it for a reason of its own).
    Answered,
    /// The provider failed: its 5xx, a timeout, no connection.
    Failed,
    /// The provider asked us to slow down, for this long if it said.
    Throttled(Option<Duration>),
}

/// Why a connection cannot take a message now, and when it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub until: Instant,
    pub reason: &'static str,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; everything else waits for its answer.
    HalfOpen {
        probe_since: Instant,
    },
}

#[derive(Debug)]
struct Circuit {
    state: State,
    /// How many times in a row it has opened (sets the next open period).
    opened: u32,
    recent: VecDeque<bool>,
    consecutive: u32,
    slow_until: Option<Instant>,
}

impl Circuit {
    fn new() -> Circuit {
        Circuit {
            state: State::Closed,
            opened: 0,
            recent: VecDeque::new(),
            consecutive: 0,
            slow_until: None,
        }
    }
}

/// A probe that got no answer in this time (its task died) lets another one go.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The health of every connection this process sends on.
#[derive(Debug, Default)]
pub struct Health {
    config: CircuitConfig,
    circuits: Mutex<HashMap<ConnectionId, Circuit>>,
}

impl Health {
    pub fn new(config: CircuitConfig) -> Health {
        Health {
            config,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place on `conn` for one message, or says when to come back. A closed
    /// circuit admits everything; an open one nothing until its time is up, then exactly
    /// one probe.
    pub fn admit(&self, conn: &ConnectionId, now: Instant) -> Result<(), Unavailable> {
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = circuits.get_mut(conn) else {
            return Ok(());
        };
        if let Some(until) = c.slow_until {
            if until > now {
                return Err(Unavailable {
                    until,
                    reason: "the provider asked to slow down",
                });
            }
            c.slow_until = None;
        }
        match c.state {
            State::Closed => Ok(()),
            State::Open { until } if until > now => Err(Unavailable {
                until,
                reason: "circuit open after repeated provider failures",
            }),
            State::Open { .. } => {
                c.state = State::HalfOpen { probe_since: now };
                set_gauge(conn, 2.0);
                tracing::info!(connection = %conn, "circuit half-open: probing the provider");
                Ok(())
            }
            State::HalfOpen { probe_since } if now.duration_since(probe_since) > PROBE_TIMEOUT => {
                c.state = State::HalfOpen { probe_since: now };
                Ok(())
            }
            State::HalfOpen { probe_since } => Err(Unavailable {
                until: probe_since + PROBE_TIMEOUT.min(self.config.open_for),
                reason: "circuit half-open, a probe is out",
            }),
        }
    }

    /// Records what an attempt on `conn` showed.
    pub fn observe(&self, conn: &ConnectionId, what: Observed, now: Instant) {
        let cfg = &self.config;
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let c = circuits.entry(conn.clone()).or_insert_with(Circuit::new);
        let failed = match what {
            Observed::Throttled(wait) => {
                let until = now + wait.unwrap_or(cfg.throttle_default);
                c.slow_until = Some(c.slow_until.map_or(until, |u| u.max(until)));
                metrics::counter!("portcullis_connection_throttled_total", "connection" => conn.as_str().to_owned()).increment(1);
                // A throttled provider is answering: for the circuit, like a success.
                false
            }
            Observed::Answered => false,
            Observed::Failed => true,
        };
        c.recent.push_back(failed);
        while c.recent.len() > cfg.window {
            c.recent.pop_front();
        }
        c.consecutive = if failed { c.consecutive + 1 } else { 0 };
        match c.state {
            State::HalfOpen { .. } if !failed => {
                c.state = State::Closed;
                c.opened = 0;
                c.recent.clear();
                set_gauge(conn, 0.0);
                tracing::warn!(connection = %conn, "circuit closed: the provider answers again");
            }
            State::HalfOpen { .. } => self.open(conn, c, now),
            State::Closed if failed => {
                let failures = c.recent.iter().filter(|f| **f).count();
                let by_rate = c.recent.len() >= cfg.min_attempts
                    && failures as f64 >= cfg.failure_ratio * c.recent.len() as f64;
                if by_rate || c.consecutive >= cfg.consecutive_failures {
                    self.open(conn, c, now);
                }
            }
            // An answer to a send admitted before the circuit opened changes nothing.
            State::Closed | State::Open { .. } => {}
        }
    }

    fn open(&self, conn: &ConnectionId, c: &mut Circuit, now: Instant) {
        let period = self
            .config
            .open_for
            .saturating_mul(1 << c.opened.min(16))
            .min(self.config.max_open);
        c.opened += 1;
        c.state = State::Open {
            until: now + period,
        };
        set_gauge(conn, 1.0);
        metrics::counter!("portcullis_connection_circuit_opened_total", "connection" => conn.as_str().to_owned()).increment(1);
        tracing::warn!(
            connection = %conn,
            open_for_ms = period.as_millis() as u64,
            "circuit open: the provider keeps failing; traffic moves to the next connection of each route"
        );
    }

    /// `open`, `half_open` or `closed`, for readiness detail.
    pub fn state(&self, conn: &ConnectionId, now: Instant) -> &'static str {
        let circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        match circuits.get(conn).map(|c| &c.state) {
            Some(State::Open { until }) if *until > now => "open",
            Some(State::Open { .. } | State::HalfOpen { .. }) => "half_open",
            _ => "closed",
        }
    }
}

/// `portcullis_connection_circuit{connection}`: 0 closed, 1 open, 2 half-open.
fn set_gauge(conn: &ConnectionId, v: f64) {
    metrics::gauge!("portcullis_connection_circuit", "connection" => conn.as_str().to_owned())
        .set(v);
}

/// Paces sends per (connection, sender) to the connection's `sender_mps`.
///
/// A slot is taken only by a message about to be sent; one that would have to wait longer
/// than the horizon is told when its turn is likely and goes back to the queue without
/// a slot, so a burst waits in the durable queue rather than in memory.
#[derive(Debug, Default)]
pub struct Pacer {
    next_free: Mutex<HashMap<(ConnectionId, String), Instant>>,
}

/// How long a send may wait in the worker for its slot.
pub const PACING_HORIZON: Duration = Duration::from_millis(200);

impl Pacer {
    /// `Ok(wait)`: the message has a slot `wait` from now. `Err(at)`: the sender is busy
    /// until `at` (plus `ahead` messages already told to come back).
    pub fn reserve(
        &self,
        conn: &ConnectionId,
        sender: &str,
        per_second: f64,
        ahead: u32,
        now: Instant,
    ) -> Result<Duration, Instant> {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let mut slots = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let key = (conn.clone(), sender.to_owned());
        let free = slots.get(&key).copied().unwrap_or(now).max(now);
        let wait = free - now;
        if ahead == 0 && wait <= PACING_HORIZON {
            slots.insert(key, free + interval);
            Ok(wait)
        } else {
            Err(free + interval.saturating_mul(ahead))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionId {
        ConnectionId::from_trusted("conn_test".to_owned())
    }

    fn health() -> Health {
        Health::new(CircuitConfig::default())
    }

    #[test]
    fn consecutive_failures_open_then_a_probe_closes() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..4 {
            h.admit(&conn(), t0).unwrap();
            h.observe(&conn(), Observed::Failed, t0);
        }
        assert!(h.admit(&conn(), t0).is_ok(), "four failures keep it closed");
        h.observe(&conn(), Observed::Failed, t0);
        let closed = h.admit(&conn(), t0).unwrap_err();
        assert_eq!(closed.until, t0 + Duration::from_secs(10));
        assert_eq!(h.state(&conn(), t0), "open");

        let later = t0 + Duration::from_secs(11);
        h.admit(&conn(), later).expect("one probe");
        assert!(h.admit(&conn(), later).is_err(), "only one probe at a time");
        h.observe(&conn(), Observed::Answered, later);
        assert_eq!(h.state(&conn(), later), "closed");
        assert!(h.admit(&conn(), later).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_for_longer() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..5 {
            h.observe(&conn(), Observed::Failed, t0);
        }
        let t1 = t0 + Duration::from_secs(11);
        h.admit(&conn(), t1).unwrap();
        h.observe(&conn(), Observed::Failed, t1);
        assert_eq!(
            h.admit(&conn(), t1).unwrap_err().until,
            t1 + Duration::from_secs(20)
        );
    }

    #[test]
    fn the_failure_rate_opens_it() {
        let h = health();
        let t0 = Instant::now();
        // Alternating: never five in a row, but half of the last ten.
        for i in 0..9 {
            let what = if i % 2 == 0 {
                Observed::Failed
            } else {
                Observed::Answered
            };
            h.observe(&conn(), what, t0);
            assert!(h.admit(&conn(), t0).is_ok(), "after {} attempts", i + 1);
        }
        h.observe(&conn(), Observed::Answered, t0);
        assert!(h.admit(&conn(), t0).is_ok(), "4 of 10 failed");
        h.observe(&conn(), Observed::Failed, t0);
        assert!(h.admit(&conn(), t0).is_err(), "5 of 10 failed");
    }

    #[test]
    fn refusals_and_throttling_do_not_open_it_but_throttling_slows() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..50 {
            h.observe(&conn(), Observed::Answered, t0);
        }
        h.observe(
            &conn(),
            Observed::Throttled(Some(Duration::from_secs(3))),
            t0,
        );
        let slow = h.admit(&conn(), t0).unwrap_err();
        assert_eq!(slow.until, t0 + Duration::from_secs(3));
        assert_eq!(h.state(&conn(), t0), "closed");
        assert!(h.admit(&conn(), t0 + Duration::from_secs(3)).is_ok());
        h.observe(&conn(), Observed::Throttled(None), t0);
        assert_eq!(
            h.admit(&conn(), t0).unwrap_err().until,
            t0 + Duration::from_secs(1)
        );
        let other = ConnectionId::from_trusted("conn_other".to_owned());
        assert!(
            h.admit(&other, t0).is_ok(),
            "other connections are not slowed"
        );
    }

    #[test]
    fn pacing_gives_each_sender_its_rate() {
        let p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.reserve(&conn(), "+1555", 10.0, 0, t0), Ok(Duration::ZERO));
        assert_eq!(
            p.reserve(&conn(), "+1555", 10.0, 0, t0),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            p.reserve(&conn(), "+1555", 10.0, 0, t0),
            Ok(Duration::from_millis(200))
        );
        // Beyond the horizon: told when, no slot taken.
        let at = p.reserve(&conn(), "+1555", 10.0, 0, t0).unwrap_err();
        assert_eq!(at, t0 + Duration::from_millis(300));
        assert_eq!(
            p.reserve(&conn(), "+1555", 10.0, 2, t0).unwrap_err(),
            t0 + Duration::from_millis(500)
        );
        assert_eq!(p.reserve(&conn(), "+1666", 10.0, 0, t0), Ok(Duration::ZERO));
    }
}
