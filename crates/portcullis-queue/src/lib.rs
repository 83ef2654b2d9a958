//! Portcullis's durable job queue, kept in the same database as the data it works on.
//!
//! - **Enqueue inside the caller's transaction** ([`enqueue`]): a job exists exactly when the
//!   state change that needs it committed, so an accepted message can never lack its send
//!   job and a rolled-back request leaves no job behind.
//! - **Leased claims** ([`claim`]): a claim sets `locked_until`; a worker that dies simply
//!   lets its lease run out and the job becomes claimable again. PostgreSQL claims with
//!   `FOR UPDATE SKIP LOCKED` so several processes share a queue without blocking; SQLite has
//!   a single writer, so the claim's `UPDATE … RETURNING` is atomic on its own.
//! - **Fencing**: every claim increments `attempts`, and [`complete`]/[`retry`]/[`bury`] only
//!   touch the job if its attempt count is still the one the caller claimed, so a worker
//!   whose lease ran out cannot undo the work of the worker that took over.
//! - **Backoff and dead letters**: [`backoff`] is exponential with jitter; a job out of
//!   attempts is kept with `state = 'dead'` and its last error, visible to operators.

use std::time::Duration;

use portcullis_domain::JobId;
use portcullis_store::{Backend, Db, StoreError, Tx, on_pool, on_tx};
use rand::RngExt;
use sqlx::QueryBuilder;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: &'static str,
    pub payload: String,
    pub run_at: i64,
    pub max_attempts: u32,
}

/// A job this worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    pub payload: String,
    /// Attempts including this one; also the fencing token of this claim.
    pub attempt: i64,
    pub max_attempts: i64,
    /// When the job became due.
    pub run_at: i64,
}

impl ClaimedJob {
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Enqueues jobs inside the caller's transaction.
pub async fn enqueue(tx: &mut Tx, jobs: &[NewJob]) -> Result<(), StoreError> {
    for chunk in jobs.chunks(1000) {
        let now = portcullis_store::now_ms();
        on_tx!(&mut *tx, |c| {
            let mut qb = QueryBuilder::new(
                "INSERT INTO jobs (id, queue, payload, state, run_at, attempts, max_attempts, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, j| {
                b.push_bind(JobId::new().as_str().to_owned())
                    .push_bind(j.queue)
                    .push_bind(j.payload.as_str())
                    .push_bind("ready")
                    .push_bind(j.run_at)
                    .push_bind(0_i64)
                    .push_bind(i64::from(j.max_attempts))
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// Claims up to `limit` due jobs of `queue` for `lease`.
pub async fn claim(
    tx: &mut Tx,
    queue: &str,
    limit: u32,
    lease: Duration,
    owner: &str,
    now: i64,
) -> Result<Vec<ClaimedJob>, StoreError> {
    const DUE: &str = "SELECT id FROM jobs WHERE queue = $4 AND state = 'ready' AND run_at <= $3 \
         AND (locked_until IS NULL OR locked_until <= $3) ORDER BY run_at LIMIT $5";
    let sql = match tx.backend() {
        // A materialized CTE runs the locking select exactly once. As `id IN (subquery)`,
        // PostgreSQL may plan a semi join that re-runs it per row when the statistics call
        // `jobs` empty (as they do between bursts), which made claims take seconds.
        Backend::Postgres => format!(
            "WITH due AS MATERIALIZED ({DUE} FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET locked_until = $1, lease_owner = $2, attempts = jobs.attempts + 1, \
             updated_at = $3 FROM due WHERE jobs.id = due.id \
             RETURNING jobs.id, jobs.payload, jobs.attempts, jobs.max_attempts, jobs.run_at"
        ),
        Backend::Sqlite => format!(
            "UPDATE jobs SET locked_until = $1, lease_owner = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN ({DUE}) RETURNING id, payload, attempts, max_attempts, run_at"
        ),
    };
    let rows: Vec<(String, String, i64, i64, i64)> =
        on_tx!(&mut *tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now + lease.as_millis() as i64)
            .bind(owner)
            .bind(now)
            .bind(queue)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, payload, attempt, max_attempts, run_at)| ClaimedJob {
            id: JobId::from_trusted(id),
            payload,
            attempt,
            max_attempts,
            run_at,
        })
        .collect())
}

/// Removes finished jobs (only those still held under the caller's claim).
pub async fn complete(tx: &mut Tx, jobs: &[&ClaimedJob]) -> Result<(), StoreError> {
    for chunk in jobs.chunks(500) {
        on_tx!(&mut *tx, |c| {
            // `id IN` first: SQLite plans a row-value `IN` alone as a scan of the whole
            // table, so the primary-key lookup must come from a plain list.
            let mut qb = QueryBuilder::new("DELETE FROM jobs WHERE id IN (");
            let mut sep = qb.separated(", ");
            for j in chunk {
                sep.push_bind(j.id.as_str());
            }
            qb.push(") AND (id, attempts) IN (");
            let mut sep = qb.separated(", ");
            for j in chunk {
                sep.push("(")
                    .push_bind_unseparated(j.id.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(j.attempt)
                    .push_unseparated(")");
            }
            qb.push(")");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// Releases a job to run again at `run_at`, keeping `error` as its last error.
pub async fn retry(
    tx: &mut Tx,
    job: &ClaimedJob,
    run_at: i64,
    error: &str,
) -> Result<(), StoreError> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE jobs SET run_at = $1, locked_until = NULL, lease_owner = NULL, last_error = $2, updated_at = $3 \
         WHERE id = $4 AND attempts = $5"
    )
    .bind(run_at)
    .bind(error)
    .bind(portcullis_store::now_ms())
    .bind(job.id.as_str())
    .bind(job.attempt)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Puts a claimed job back to run at `run_at` without counting the claim as an attempt:
/// the job was not tried (its message waits for a pause to lift or for quiet hours to
/// end), so it must not creep towards its dead letter. `reason` is kept as the job's last
/// error, so [`wake`] can find the jobs waiting for the same thing.
pub async fn defer(
    tx: &mut Tx,
    job: &ClaimedJob,
    run_at: i64,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE jobs SET run_at = $1, locked_until = NULL, lease_owner = NULL, \
         attempts = attempts - 1, last_error = $2, updated_at = $3 WHERE id = $4 AND attempts = $5"
    )
    .bind(run_at)
    .bind(reason)
    .bind(portcullis_store::now_ms())
    .bind(job.id.as_str())
    .bind(job.attempt)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Makes every job deferred for `reason` due now (a pause was lifted: what it held back
/// goes without waiting out its recheck interval). Returns how many.
pub async fn wake(db: &Db, queue: &str, reason: &str) -> Result<u64, StoreError> {
    let now = portcullis_store::now_ms();
    on_pool!(db.write(), |p| sqlx::query(
        "UPDATE jobs SET run_at = $1, last_error = NULL, updated_at = $1 \
         WHERE queue = $2 AND state = 'ready' AND last_error = $3 AND run_at > $1"
    )
    .bind(now)
    .bind(queue)
    .bind(reason)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))
    .map_err(StoreError::from)
}

/// Moves a job to the dead-letter state with its last error.
pub async fn bury(tx: &mut Tx, job: &ClaimedJob, error: &str) -> Result<(), StoreError> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE jobs SET state = 'dead', locked_until = NULL, last_error = $1, updated_at = $2 \
         WHERE id = $3 AND attempts = $4"
    )
    .bind(error)
    .bind(portcullis_store::now_ms())
    .bind(job.id.as_str())
    .bind(job.attempt)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Exponential backoff with ±20% jitter: `base · 2^(attempt-1)`, capped at `max`.
pub fn backoff(attempt: i64, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let raw = base.saturating_mul(2_u32.saturating_pow(exp)).min(max);
    let jitter = rand::rng().random_range(0.8..1.2);
    raw.mul_f64(jitter)
}

/// Queue depth: jobs ready or leased, and dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: i64,
    pub dead: i64,
}

pub async fn depth(db: &Db, queue: &str) -> Result<Depth, StoreError> {
    let rows: Vec<(String, i64)> = on_pool!(db.read(), |p| sqlx::query_as(
        "SELECT state, COUNT(*) FROM jobs WHERE queue = $1 GROUP BY state"
    )
    .bind(queue)
    .fetch_all(p)
    .await)?;
    let mut d = Depth::default();
    for (state, n) in rows {
        match state.as_str() {
            "dead" => d.dead += n,
            _ => d.pending += n,
        }
    }
    Ok(d)
}

/// When the next job of `queue` becomes due (ready jobs only), so an idle worker can sleep
/// until then instead of polling.
///
/// A job is due at its `run_at`, or, while leased, when its lease runs out. Asked as one
/// expression over every ready job, that reads every row, and an idle worker asks after
/// every commit: with many messages scheduled ahead it cost a scan of all of them each
/// time. So it is asked in two index-ordered parts, each reading a handful of rows:
/// - the earliest job not leased: the first in `run_at` order that no lease holds (leased
///   jobs were due when claimed, so at most the jobs in flight are stepped over);
/// - the earliest lease to run out, among jobs due by now (every leased job is).
pub async fn next_due(db: &Db, queue: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let row: (Option<i64>,) = on_pool!(db.read(), |p| {
        sqlx::query_as(
            "SELECT MIN(t) FROM (\
             SELECT run_at AS t FROM (SELECT run_at FROM jobs WHERE queue = $1 AND state = 'ready' \
             AND (locked_until IS NULL OR locked_until <= run_at) ORDER BY run_at LIMIT 1) AS unleased \
             UNION ALL SELECT locked_until AS t FROM jobs WHERE queue = $1 AND state = 'ready' \
             AND run_at <= $2 AND locked_until > run_at) AS due",
        )
        .bind(queue)
        .bind(now)
        .fetch_one(p)
        .await
    })?;
    Ok(row.0)
}

/// A dead job, for operators.
#[derive(Debug, Clone)]
pub struct DeadJob {
    pub id: JobId,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

pub async fn dead_letters(db: &Db, queue: &str, limit: u32) -> Result<Vec<DeadJob>, StoreError> {
    let rows: Vec<(String, String, i64, Option<String>, i64)> =
        on_pool!(db.read(), |p| sqlx::query_as(
            "SELECT id, payload, attempts, last_error, updated_at FROM jobs \
         WHERE queue = $1 AND state = 'dead' ORDER BY updated_at DESC LIMIT $2"
        )
        .bind(queue)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, payload, attempts, last_error, updated_at)| DeadJob {
            id: JobId::from_trusted(id),
            payload,
            attempts,
            last_error,
            updated_at,
        })
        .collect())
}
