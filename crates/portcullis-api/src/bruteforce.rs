//! Brute-force protection: 10 failed authentications from one client address within 5
//! minutes (a sliding window) block that address for 15 minutes; while blocked, every
//! request from it is `429` with `Retry-After`, valid key or not.
//!
//! Addresses are grouped the way attackers get them: an IPv4 address alone, an IPv6
//! address by its /64 (one subscriber's allocation). The table is bounded: under a flood of
//! failures from many addresses it first forgets expired entries, then unblocked ones, so
//! memory stays flat and blocked addresses stay blocked.
//!
//! Two backends behind [`BruteForce`]: the in-process table (the default), or the failure
//! window and the block kept in Redis ([`crate::shared_counters`]) so that failures
//! against any instance count together and a block holds on every instance. In Redis mode
//! the in-process table still follows this instance's own failures: when Redis does not
//! answer, it decides instead (per instance, never off), and a block it holds stands.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::shared_counters::{AddressAnswer, SharedCounters};

pub const MAX_FAILURES: usize = 10;
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
pub const BLOCK_MS: i64 = 15 * 60 * 1000;
const DEFAULT_CAPACITY: usize = 100_000;

/// The unit a block applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    /// The first 64 bits.
    V6([u8; 8]),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    ClientKey::V6(prefix)
                }
            },
        }
    }
}

/// `203.0.113.9`, or `2001:db8:1:2::/64` (names the client in Redis keys).
impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(octets) => Ipv4Addr::from(*octets).fmt(f),
            ClientKey::V6(prefix) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<i64>,
    blocked_until: Option<i64>,
}

/// Where the failures are counted.
enum Backend {
    InProcess,
    Redis(Arc<SharedCounters>),
}

/// Brute-force protection, in process or shared through Redis; callers see one type.
pub struct BruteForce {
    table: FailureTable,
    backend: Backend,
}

impl Default for BruteForce {
    /// In process.
    fn default() -> Self {
        BruteForce {
            table: FailureTable::default(),
            backend: Backend::InProcess,
        }
    }
}

impl BruteForce {
    /// The window and the blocks in Redis, shared by every instance using the same Redis
    /// and key prefix.
    pub fn shared(counters: Arc<SharedCounters>) -> BruteForce {
        BruteForce {
            table: FailureTable::default(),
            backend: Backend::Redis(counters),
        }
    }

    /// Milliseconds until `key` is unblocked, if it is blocked (`now`: unix ms, for the
    /// in-process table; Redis uses its own clock).
    pub async fn blocked_for(&self, key: ClientKey, now: i64) -> Option<i64> {
        let local = self.table.blocked_for(key, now);
        if let Backend::Redis(shared) = &self.backend
            && let Ok(shared) = shared.blocked_for(&key.to_string()).await
        {
            return shared.max(local);
        }
        local
    }

    /// The in-process table's answer alone.
    pub(crate) fn local_blocked_for(&self, key: ClientKey, now: i64) -> Option<i64> {
        self.table.blocked_for(key, now)
    }

    /// The Redis counters, in shared mode.
    pub(crate) fn shared_counters(&self) -> Option<&Arc<SharedCounters>> {
        match &self.backend {
            Backend::Redis(s) => Some(s),
            Backend::InProcess => None,
        }
    }

    /// Records a failed authentication; returns true if it (newly) blocks the address.
    pub async fn record_failure(&self, key: ClientKey, now: i64) -> bool {
        let local = self.table.record_failure(key, now);
        if let Backend::Redis(shared) = &self.backend
            && let Ok(blocked) = shared
                .record_failure(&key.to_string(), MAX_FAILURES, WINDOW_MS, BLOCK_MS)
                .await
        {
            return blocked;
        }
        local
    }

    /// Entries in the in-process table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// The in-process failure table.
pub struct FailureTable {
    capacity: usize,
    table: Mutex<HashMap<ClientKey, Entry>>,
}

impl Default for FailureTable {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FailureTable {
    pub fn with_capacity(capacity: usize) -> FailureTable {
        FailureTable {
            capacity: capacity.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Entry>> {
        // Each operation leaves every entry whole; a poisoned lock is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds until `key` is unblocked, if it is blocked at `now`.
    pub fn blocked_for(&self, key: ClientKey, now: i64) -> Option<i64> {
        let table = self.lock();
        let until = table.get(&key)?.blocked_until?;
        (until > now).then_some(until - now)
    }

    /// Records a failed authentication; returns true if it (newly) blocks the address.
    pub fn record_failure(&self, key: ClientKey, now: i64) -> bool {
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= self.capacity {
            Self::make_room(&mut table, self.capacity, now);
        }
        let entry = table.entry(key).or_default();
        if entry.blocked_until.is_some_and(|u| u > now) {
            return false;
        }
        entry.blocked_until = None;
        while entry
            .failures
            .front()
            .is_some_and(|&t| t <= now - WINDOW_MS)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() >= MAX_FAILURES {
            entry.failures.clear();
            entry.blocked_until = Some(now + BLOCK_MS);
            return true;
        }
        false
    }

    fn make_room(table: &mut HashMap<ClientKey, Entry>, capacity: usize, now: i64) {
        table.retain(|_, e| {
            e.blocked_until.is_some_and(|u| u > now)
                || e.failures.back().is_some_and(|&t| t > now - WINDOW_MS)
        });
        if table.len() < capacity {
            return;
        }
        // Still full of live entries: forget some that are not blocked (their attacker
        // loses progress, which is the safe direction), keeping every block.
        let target = capacity - capacity / 10 - 1;
        let mut excess = table.len().saturating_sub(target);
        table.retain(|_, e| {
            if excess == 0 || e.blocked_until.is_some_and(|u| u > now) {
                return true;
            }
            excess -= 1;
            false
        });
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn too_many(retry_after_ms: i64) -> Response {
    let secs = u64::try_from(retry_after_ms).unwrap_or(0).div_ceil(1000);
    crate::error::too_many_requests("too_many_requests", secs, &[])
}

/// Refuses blocked addresses before anything else runs, and counts every `401` answered.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(ip) = req.extensions().get::<ClientAddr>().map(|c| c.0) else {
        return next.run(req).await;
    };
    let key = ClientKey::from(ip);
    let now = portcullis_store::now_ms();
    let ip_text = ip.to_string();
    let (blocked, limited) = match address_in_redis(&state, key, &ip_text, now).await {
        Some(answer) => answer,
        // In process, or Redis did not answer: each check on its own (each falls back).
        None => {
            tokio::join!(
                state.bruteforce.blocked_for(key, now),
                state.ratelimits.check_ip(&ip_text)
            )
        }
    };
    if let Some(ms) = blocked {
        metrics::counter!("portcullis_security_events_total", "kind" => "blocked_request")
            .increment(1);
        return too_many(ms);
    }
    if let Err(limited) = limited {
        return ApiError::RateLimited(limited).into_response();
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        metrics::counter!("portcullis_security_events_total", "kind" => "auth_failure")
            .increment(1);
        if state
            .bruteforce
            .record_failure(key, portcullis_store::now_ms())
            .await
        {
            metrics::counter!("portcullis_security_events_total", "kind" => "address_blocked")
                .increment(1);
            tracing::warn!(target: "security", client = %ip, "address blocked after repeated authentication failures");
        }
    }
    res
}

/// The block and the address limit in one Redis round trip, when both live there (on the
/// path of every request, so one call instead of two). `None`: not shared, or Redis did not
/// answer.
async fn address_in_redis(
    state: &AppState,
    key: ClientKey,
    ip: &str,
    now: i64,
) -> Option<(Option<i64>, Result<(), crate::ratelimit::Limited>)> {
    let shared = state.bruteforce.shared_counters()?;
    state.ratelimits.shared_counters()?;
    let spec = state
        .ratelimits
        .ip_spec()
        .map(|(scope, interval, tolerance)| (scope, ip, interval, tolerance));
    let answer = shared.address(&key.to_string(), spec).await.ok()?;
    // A block this instance holds stands whatever Redis says.
    let local = state.bruteforce.local_blocked_for(key, now);
    Some(match answer {
        AddressAnswer::Blocked(ms) => (Some(ms.max(local.unwrap_or(0))), Ok(())),
        AddressAnswer::Limited(wait) => {
            (local, state.ratelimits.ip_limited(wait).map_or(Ok(()), Err))
        }
        AddressAnswer::Allowed => {
            state.ratelimits.note_ip(ip);
            (local, Ok(()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> ClientKey {
        ClientKey::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ten_failures_in_five_minutes_block_for_fifteen() {
        let bf = FailureTable::default();
        let k = v4("203.0.113.9");
        for i in 0..9 {
            assert!(!bf.record_failure(k, i * 1000));
        }
        assert_eq!(bf.blocked_for(k, 9_000), None);
        assert!(bf.record_failure(k, 9_000), "the tenth blocks");
        assert_eq!(bf.blocked_for(k, 9_000), Some(BLOCK_MS));
        assert_eq!(bf.blocked_for(k, 9_000 + BLOCK_MS - 1), Some(1));
        assert_eq!(bf.blocked_for(k, 9_000 + BLOCK_MS), None);
        assert_eq!(
            bf.blocked_for(v4("203.0.113.10"), 9_000),
            None,
            "others unaffected"
        );
    }

    #[test]
    fn the_window_slides() {
        let bf = FailureTable::default();
        let k = v4("198.51.100.1");
        bf.record_failure(k, 0);
        for i in 0..8 {
            bf.record_failure(k, 200_000 + i);
        }
        // The first failure (t=0) has left the window by t=300000: nine in the window.
        assert!(!bf.record_failure(k, WINDOW_MS));
        assert!(
            bf.record_failure(k, WINDOW_MS + 1),
            "ten within five minutes"
        );
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_by_address() {
        assert_eq!(v4("2001:db8:1:2::1"), v4("2001:db8:1:2:ffff::9"));
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        assert_eq!(v4("::ffff:192.0.2.1"), v4("192.0.2.1"));
    }

    #[test]
    fn client_keys_name_the_address_or_the_64() {
        assert_eq!(v4("203.0.113.9").to_string(), "203.0.113.9");
        assert_eq!(v4("::ffff:192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(v4("2001:db8:1:2:ffff::9").to_string(), "2001:db8:1:2::/64");
    }

    /// Two instances on one Redis: failures against either count together, the block
    /// holds on both, and an IPv6 /64 is one client.
    #[tokio::test]
    async fn in_redis_failures_and_blocks_are_shared() {
        let shared = crate::shared_counters::tests::local_redis();
        let (a, b) = (
            BruteForce::shared(shared.clone()),
            BruteForce::shared(shared),
        );
        let now = portcullis_store::now_ms();
        for i in 0..9u16 {
            let ip: IpAddr = format!("2001:db8:7:7::{i:x}").parse().unwrap();
            let bf = if i % 2 == 0 { &a } else { &b };
            assert!(!bf.record_failure(ClientKey::from(ip), now).await);
        }
        let k = v4("2001:db8:7:7::ffff");
        assert_eq!(a.blocked_for(k, now).await, None);
        assert!(b.record_failure(k, now).await, "the tenth blocks");
        for bf in [&a, &b] {
            let ms = bf.blocked_for(k, now).await.unwrap();
            assert!((BLOCK_MS - 1000..=BLOCK_MS).contains(&ms), "{ms}");
        }
        assert_eq!(a.blocked_for(v4("2001:db8:7:8::1"), now).await, None);
    }

    /// Redis unreachable: the in-process table decides, so protection stays on.
    #[tokio::test]
    async fn unreachable_redis_falls_back_to_the_table() {
        let bf = BruteForce::shared(crate::shared_counters::tests::closed_port_redis().await);
        let k = v4("203.0.113.50");
        for i in 0..9 {
            assert!(!bf.record_failure(k, i).await);
        }
        assert!(bf.record_failure(k, 9).await);
        assert_eq!(bf.blocked_for(k, 9).await, Some(BLOCK_MS));
    }

    #[test]
    fn a_flood_from_many_addresses_stays_bounded_and_keeps_blocks() {
        let bf = FailureTable::with_capacity(1000);
        let blocked = v4("192.0.2.200");
        for t in 0..10 {
            bf.record_failure(blocked, t);
        }
        for i in 0..50_000u32 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            bf.record_failure(ClientKey::from(ip), 100);
        }
        assert!(bf.len() <= 1000, "{}", bf.len());
        assert!(bf.blocked_for(blocked, 200).is_some());
    }
}
