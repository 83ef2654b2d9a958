//! Rate-limit and brute-force counters shared by every instance through Redis
//! (`PORTCULLIS_REDIS_URL`). Each check is one atomic Lua script (or one command) run on
//! Redis's own clock, so instances with skewed clocks still agree.
//!
//! Keys are `{prefix}:rl:{scope}:{id}` (a limit's theoretical arrival time) and
//! `{prefix}:bf:fail:{client}` / `{prefix}:bf:block:{client}` (a sorted set of recent
//! failures, and a block marker). Every key carries a TTL that ends when its state would
//! no longer change an answer, so Redis memory is bounded by the clients active within one
//! window.
//!
//! When Redis cannot answer (down, unreachable, slow), the caller falls back to the
//! in-process counters for that request: protection degrades to per-instance, it is never
//! switched off, and the API keeps answering. Each fallback is counted in
//! `portcullis_redis_fallbacks_total{check}`; the first failure after a success is logged
//! as a security warning. After a failure Redis is left alone for [`RETRY_AFTER`] so an
//! outage costs at most one slow request per second instead of one per request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use portcullis_crypto::Secret;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis command must answer within this, or the request falls back.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, how long requests use the in-process counters before Redis is tried
/// again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The GCRA loop as a Lua function over `KEYS[first..]` (limit j's arguments stay
/// `ARGV[2j-1]`, `ARGV[2j]`), shared by the two scripts below.
macro_rules! gcra_lua {
    () => {
        r"
local function gcra(first)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for j = 1, #KEYS - first + 1 do
    local key = KEYS[first + j - 1]
    local interval = tonumber(ARGV[2 * j - 1])
    local tolerance = tonumber(ARGV[2 * j])
    local tat = tonumber(redis.call('GET', key)) or now
    local earliest = tat - tolerance
    if now < earliest then
      return {j, earliest - now}
    end
    local next_tat = math.max(tat, now) + interval
    redis.call('SET', key, string.format('%.0f', next_tat),
      'PX', math.floor((next_tat - now) / 1000) + 1)
  end
  return {0, 0}
end
"
    };
}

/// GCRA, the algorithm governor uses in process, for one or more limits checked in order.
///
/// `KEYS[i]`: limit i's theoretical arrival time (TAT), microseconds on Redis's clock.
/// `ARGV[2i-1]`: its emission interval T = period / count (µs); `ARGV[2i]`: its tolerance
/// tau = T × (burst − 1) (µs). A request is allowed by a limit when now ≥ TAT − tau, and
/// then moves the TAT to max(TAT, now) + T. Returns `{0, 0}` when every limit allowed it,
/// or `{i, wait_µs}` for the first limit that refused it: later limits are not touched and
/// earlier ones keep the unit they spent, exactly as the in-process check. A TAT key
/// expires when its TAT passes: from then on it is the same as no key (a full burst).
const GCRA_SCRIPT: &str = concat!(gcra_lua!(), "return gcra(1)");

/// Everything asked of an address before authentication, in one round trip: `KEYS[1]` is
/// its brute-force block marker (`{-1, ms}` while it exists, nothing else touched), then
/// GCRA over `KEYS[2..]` exactly as [`GCRA_SCRIPT`].
const ADDRESS_SCRIPT: &str = concat!(
    gcra_lua!(),
    "local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then
  return {-1, ttl}
end
return gcra(2)"
);

/// One failed authentication of a client, the sliding window and the block.
///
/// `KEYS[1]`: the client's recent failures (a sorted set scored by time in ms on Redis's
/// clock); `KEYS[2]`: its block marker. `ARGV`: max failures, window ms, block ms, a member
/// name unique to this call. A blocked client's failure is not counted. Otherwise the
/// failures at or before now − window leave the set, this one joins it, and when the set
/// holds max failures it is deleted and the block marker set for the block's length:
/// returns 1 (newly blocked), else 0. The set expires one window after its latest failure.
const FAILURE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_failures = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= max_failures then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
redis.call('PEXPIRE', KEYS[1], window)
return 0
";

/// What Redis says of an address before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressAnswer {
    /// Blocked for this many more milliseconds.
    Blocked(i64),
    /// Over its rate limit: retry after this long.
    Limited(Duration),
    Allowed,
}

/// The configured Redis URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("PORTCULLIS_REDIS_URL {url}: {reason}")]
pub struct SharedCountersError {
    /// The URL with its password replaced by `***`.
    pub url: String,
    pub reason: String,
}

/// The connection to Redis and the scripts, shared by the rate limits and the brute-force
/// table.
pub struct SharedCounters {
    conn: ConnectionManager,
    prefix: String,
    url: String,
    gcra: redis::Script,
    address: redis::Script,
    failure: redis::Script,
    /// Unix ms before which Redis is not tried (after a failure).
    skip_until_ms: AtomicI64,
    healthy: AtomicBool,
    /// Makes failure-set members unique across instances.
    instance: String,
    sequence: AtomicU64,
}

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounters")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedCounters {
    /// Prepares a connection to `url` (`redis://`, `rediss://` for TLS, `unix://`) whose
    /// keys all start with `prefix:`. Nothing is dialled yet: an unreachable Redis does not
    /// stop start-up; the first checks fall back and say so. Must run inside Tokio.
    pub fn connect(
        url: &Secret<String>,
        prefix: &str,
    ) -> Result<SharedCounters, SharedCountersError> {
        let redacted = redact_url(url.expose());
        let fail = |reason: String| SharedCountersError {
            url: redacted.clone(),
            reason,
        };
        if prefix.trim().is_empty() {
            return Err(fail("the Redis key prefix must not be empty".to_owned()));
        }
        let client = redis::Client::open(url.expose().as_str())
            // The error may quote the URL; say only what kind of error it is.
            .map_err(|e| fail(format!("not a usable Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OPERATION_TIMEOUT))
            .set_response_timeout(Some(OPERATION_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| fail(format!("{:?}", e.kind())))?;
        Ok(SharedCounters {
            conn,
            prefix: prefix.trim().to_owned(),
            url: redacted,
            gcra: redis::Script::new(GCRA_SCRIPT),
            address: redis::Script::new(ADDRESS_SCRIPT),
            failure: redis::Script::new(FAILURE_SCRIPT),
            skip_until_ms: AtomicI64::new(0),
            healthy: AtomicBool::new(true),
            instance: portcullis_crypto::random_token("", 12).expose().clone(),
            sequence: AtomicU64::new(0),
        })
    }

    /// The URL with its password replaced by `***` (for logs).
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Connects and loads the scripts now, logging the outcome (a warning if Redis is not
    /// reachable: the checks fall back until it is).
    pub async fn warm_up(&self) -> bool {
        let mut conn = self.conn.clone();
        let loaded = self
            .run("startup", async {
                self.gcra.load_async(&mut conn).await?;
                self.address.load_async(&mut conn).await?;
                self.failure.load_async(&mut conn).await
            })
            .await
            .is_some();
        if loaded {
            tracing::info!(redis = %self.url, prefix = %self.prefix, "rate limits and brute-force blocking are shared through Redis");
        }
        loaded
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// Runs GCRA over `limits` (`(scope, id, interval, tolerance)`, checked in order) and
    /// returns the index of the first limit that refuses the request with the wait, or
    /// `None` when all allow it. `Err(())`: Redis did not answer; fall back.
    pub(crate) async fn gcra(
        &self,
        limits: &[(&str, &str, Duration, Duration)],
    ) -> Result<Option<(usize, Duration)>, ()> {
        let mut invocation = self.gcra.prepare_invoke();
        for (scope, id, interval, tolerance) in limits {
            invocation
                .key(self.key(&["rl", scope, id]))
                .arg(micros(*interval).max(1))
                .arg(micros(*tolerance));
        }
        let mut conn = self.conn.clone();
        let (index, wait): (i64, i64) = self
            .run("rate_limit", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await
            .ok_or(())?;
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .map(|i| (i, Duration::from_micros(u64::try_from(wait).unwrap_or(0)))))
    }

    /// The address checks in one round trip: `client`'s block, then its rate limit if one
    /// is given (`(scope, id, interval, tolerance)`). `Err(())`: fall back.
    pub(crate) async fn address(
        &self,
        client: &str,
        limit: Option<(&str, &str, Duration, Duration)>,
    ) -> Result<AddressAnswer, ()> {
        let mut invocation = self.address.prepare_invoke();
        invocation.key(self.key(&["bf", "block", client]));
        if let Some((scope, id, interval, tolerance)) = limit {
            invocation
                .key(self.key(&["rl", scope, id]))
                .arg(micros(interval).max(1))
                .arg(micros(tolerance));
        }
        let mut conn = self.conn.clone();
        let (code, value): (i64, i64) = self
            .run("address", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await
            .ok_or(())?;
        Ok(match code {
            // -1 (no expiry) cannot be written by us: treat as a full block.
            -1 if value < 0 => AddressAnswer::Blocked(crate::bruteforce::BLOCK_MS),
            -1 => AddressAnswer::Blocked(value),
            0 => AddressAnswer::Allowed,
            _ => AddressAnswer::Limited(Duration::from_micros(u64::try_from(value).unwrap_or(0))),
        })
    }

    /// Milliseconds until `client` is unblocked, if it is blocked.
    pub(crate) async fn blocked_for(&self, client: &str) -> Result<Option<i64>, ()> {
        let key = self.key(&["bf", "block", client]);
        let mut conn = self.conn.clone();
        let ttl: i64 = self
            .run("brute_force", async move {
                redis::cmd("PTTL").arg(key).query_async(&mut conn).await
            })
            .await
            .ok_or(())?;
        // -2: no block; -1 (no expiry) cannot be written by us: treat as a full block.
        Ok(match ttl {
            -2 => None,
            t if t < 0 => Some(crate::bruteforce::BLOCK_MS),
            t => Some(t),
        })
    }

    /// Records a failed authentication of `client`; true if it (newly) blocks it.
    pub(crate) async fn record_failure(
        &self,
        client: &str,
        max_failures: usize,
        window_ms: i64,
        block_ms: i64,
    ) -> Result<bool, ()> {
        let member = format!(
            "{}-{}",
            self.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(self.key(&["bf", "fail", client]))
            .key(self.key(&["bf", "block", client]))
            .arg(max_failures)
            .arg(window_ms)
            .arg(block_ms)
            .arg(member);
        let mut conn = self.conn.clone();
        let blocked: i64 = self
            .run("brute_force", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await
            .ok_or(())?;
        Ok(blocked == 1)
    }

    /// Runs one Redis operation under the failure policy: `None` means "fall back to the
    /// in-process counters for this request" (counted, and logged when Redis goes away).
    async fn run<T>(
        &self,
        check: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let now = portcullis_store::now_ms();
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            fallback(check);
            return None;
        }
        let error = match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
            Ok(Ok(value)) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "security", redis = %self.url, "Redis is reachable again: rate limits and brute-force blocking are shared again");
                }
                return Some(value);
            }
            Ok(Err(e)) => redis_error(&e),
            Err(_) => format!("no answer within {} ms", OPERATION_TIMEOUT.as_millis()),
        };
        let retry_ms = i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.skip_until_ms
            .store(portcullis_store::now_ms() + retry_ms, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                target: "security",
                redis = %self.url,
                error = %error,
                "Redis unreachable: rate limits and brute-force blocking fall back to this instance's own counters (each instance now enforces them alone) until it answers again"
            );
        } else {
            tracing::debug!(redis = %self.url, error = %error, "Redis still unreachable");
        }
        fallback(check);
        None
    }
}

fn fallback(check: &'static str) {
    if check != "startup" {
        metrics::counter!("portcullis_redis_fallbacks_total", "check" => check).increment(1);
    }
}

/// A Redis error without anything the server echoed back (which could quote our input).
fn redis_error(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection failed".to_owned()
    } else {
        format!("{:?}", e.kind())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `url` with any password replaced by `***` (and any username kept); an unparseable URL
/// is not shown at all.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// The test Redis (127.0.0.1:6379), under a prefix no other test run uses.
    pub(crate) fn local_redis() -> Arc<SharedCounters> {
        let prefix = format!(
            "portcullis-test-{}",
            portcullis_crypto::random_token("", 12).expose()
        );
        Arc::new(
            SharedCounters::connect(&Secret::new("redis://127.0.0.1:6379".to_owned()), &prefix)
                .unwrap(),
        )
    }

    /// A Redis URL at a port nothing listens on.
    pub(crate) async fn closed_port_redis() -> Arc<SharedCounters> {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Arc::new(
            SharedCounters::connect(
                &Secret::new(format!("redis://:s3cret@127.0.0.1:{port}")),
                "p",
            )
            .unwrap(),
        )
    }

    async fn pttl(shared: &SharedCounters, key: &str) -> i64 {
        let mut conn = shared.conn.clone();
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_address_script_answers_block_then_limit() {
        let shared = local_redis();
        let second = Duration::from_secs(1);
        // Two per second, no extra burst: T = 500 ms, tau = 0.
        let limit = Some(("ip", "192.0.2.7", second / 2, Duration::ZERO));
        assert_eq!(
            shared.address("192.0.2.7", limit).await,
            Ok(AddressAnswer::Allowed)
        );
        match shared.address("192.0.2.7", limit).await {
            Ok(AddressAnswer::Limited(wait)) => assert!(wait <= second / 2, "{wait:?}"),
            other => panic!("{other:?}"),
        }
        // Without a limit configured, only the block is asked about.
        assert_eq!(
            shared.address("192.0.2.7", None).await,
            Ok(AddressAnswer::Allowed)
        );
        for _ in 0..10 {
            shared
                .record_failure("192.0.2.7", 10, 300_000, 900_000)
                .await
                .unwrap();
        }
        match shared.address("192.0.2.7", limit).await {
            Ok(AddressAnswer::Blocked(ms)) => assert!((899_000..=900_000).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
        // Another address is untouched.
        assert_eq!(
            shared
                .address(
                    "192.0.2.8",
                    Some(("ip", "192.0.2.8", second / 2, Duration::ZERO))
                )
                .await,
            Ok(AddressAnswer::Allowed)
        );
    }

    #[tokio::test]
    async fn every_key_expires_when_its_state_stops_mattering() {
        let shared = local_redis();
        let hour = Duration::from_secs(3600);
        // 1/h, burst 3: after one request the TAT is one interval ahead.
        let limits = [("key", "key_ttl", hour, hour * 2)];
        assert_eq!(shared.gcra(&limits).await, Ok(None));
        let ttl = pttl(&shared, &shared.key(&["rl", "key", "key_ttl"])).await;
        assert!((3_599_000..=3_600_001).contains(&ttl), "{ttl}");
        assert_eq!(shared.gcra(&limits).await, Ok(None));
        assert_eq!(shared.gcra(&limits).await, Ok(None));
        let (index, wait) = shared.gcra(&limits).await.unwrap().unwrap();
        assert_eq!(index, 0);
        assert!(wait > Duration::from_secs(3590) && wait <= hour, "{wait:?}");
        let ttl = pttl(&shared, &shared.key(&["rl", "key", "key_ttl"])).await;
        assert!(ttl <= 3 * 3_600_001, "{ttl}");

        // A failure set lives one window after its latest failure; a block, its length.
        assert_eq!(
            shared
                .record_failure("192.0.2.1", 3, 300_000, 900_000)
                .await,
            Ok(false)
        );
        let ttl = pttl(&shared, &shared.key(&["bf", "fail", "192.0.2.1"])).await;
        assert!((299_000..=300_000).contains(&ttl), "{ttl}");
        assert_eq!(shared.blocked_for("192.0.2.1").await, Ok(None));
        assert_eq!(
            shared
                .record_failure("192.0.2.1", 3, 300_000, 900_000)
                .await,
            Ok(false)
        );
        assert_eq!(
            shared
                .record_failure("192.0.2.1", 3, 300_000, 900_000)
                .await,
            Ok(true)
        );
        assert_eq!(
            pttl(&shared, &shared.key(&["bf", "fail", "192.0.2.1"])).await,
            -2
        );
        let blocked = shared.blocked_for("192.0.2.1").await.unwrap().unwrap();
        assert!((899_000..=900_000).contains(&blocked), "{blocked}");
        // While blocked, failures are not counted (and do not extend the block).
        assert_eq!(
            shared
                .record_failure("192.0.2.1", 3, 300_000, 900_000)
                .await,
            Ok(false)
        );
        assert_eq!(
            pttl(&shared, &shared.key(&["bf", "fail", "192.0.2.1"])).await,
            -2
        );
        assert_eq!(shared.blocked_for("192.0.2.2").await, Ok(None));
    }

    #[tokio::test]
    async fn the_failure_window_slides() {
        let shared = local_redis();
        // A 300 ms window: two failures, wait it out, two more do not block (max 3).
        for _ in 0..2 {
            assert_eq!(
                shared.record_failure("198.51.100.1", 3, 300, 60_000).await,
                Ok(false)
            );
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
        for _ in 0..2 {
            assert_eq!(
                shared.record_failure("198.51.100.1", 3, 300, 60_000).await,
                Ok(false)
            );
        }
        assert_eq!(
            shared.record_failure("198.51.100.1", 3, 300, 60_000).await,
            Ok(true)
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_skipped_for_a_while() {
        let shared = closed_port_redis().await;
        assert!(!shared.warm_up().await);
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(shared.blocked_for("192.0.2.1").await, Err(()));
        }
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "no dialling per request"
        );
        assert!(shared.redacted_url().contains(":***@"));
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("redis://:s3cret@cache.internal:6379/2"),
            "redis://:***@cache.internal:6379/2"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("::s3cret@@"), "<unparseable URL>");
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_without_quoting_its_password() {
        let err = SharedCounters::connect(&Secret::new("http://:s3cret@host".to_owned()), "p")
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
