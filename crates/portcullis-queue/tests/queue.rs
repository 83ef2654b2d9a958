//! The queue against real SQLite and PostgreSQL: leases, expiry recovery, fencing,
//! retries, dead letters, and concurrent claimers never holding the same job.

use std::collections::HashSet;
use std::time::Duration;

use portcullis_queue::{NewJob, backoff, bury, claim, complete, depth, enqueue, next_due, retry};
use portcullis_store::{Db, now_ms};

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/q.db", dir.path().display()))
        .await
        .unwrap();
    (db, dir)
}

async fn postgres() -> (Db, String) {
    let admin = std::env::var("PORTCULLIS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!(
        "pcl_queue_{}",
        portcullis_crypto::random_token("", 10)
            .expose()
            .to_lowercase()
    );
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    (Db::connect(&format!("{base}/{name}")).await.unwrap(), name)
}

async fn drop_pg(name: &str) {
    let admin = std::env::var("PORTCULLIS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}

fn job(n: usize, run_at: i64) -> NewJob {
    NewJob {
        queue: "test",
        payload: format!("p{n}"),
        run_at,
        max_attempts: 3,
    }
}

async fn lifecycle(db: &Db) {
    let now = now_ms();
    let mut tx = db.begin().await.unwrap();
    enqueue(&mut tx, &[job(1, now), job(2, now + 60_000)])
        .await
        .unwrap();
    // Rolled back: nothing enqueued.
    tx.rollback().await.unwrap();
    assert_eq!(depth(db, "test").await.unwrap().pending, 0);

    let mut tx = db.begin().await.unwrap();
    enqueue(&mut tx, &[job(1, now), job(2, now + 60_000)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Only the due job is claimed; a second claim while leased gets nothing.
    let mut tx = db.begin().await.unwrap();
    let claimed = claim(&mut tx, "test", 10, Duration::from_millis(300), "w1", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].payload, "p1");
    assert_eq!(claimed[0].attempt, 1);
    let mut tx = db.begin().await.unwrap();
    assert!(
        claim(
            &mut tx,
            "test",
            10,
            Duration::from_secs(30),
            "w2",
            now + 100
        )
        .await
        .unwrap()
        .is_empty()
    );
    tx.commit().await.unwrap();

    // The lease runs out (the worker "crashed"): another worker takes it over.
    let mut tx = db.begin().await.unwrap();
    let taken = claim(
        &mut tx,
        "test",
        10,
        Duration::from_secs(30),
        "w2",
        now + 400,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempt, 2);

    // The stale worker's completion is fenced off; the job survives.
    let mut tx = db.begin().await.unwrap();
    complete(&mut tx, &[&claimed[0]]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(depth(db, "test").await.unwrap().pending, 2);

    // Retry, then the last attempt is buried as a dead letter.
    let mut tx = db.begin().await.unwrap();
    retry(&mut tx, &taken[0], now + 500, "provider timeout")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let third = claim(
        &mut tx,
        "test",
        10,
        Duration::from_secs(30),
        "w3",
        now + 600,
    )
    .await
    .unwrap();
    assert_eq!(third.len(), 1);
    assert!(third[0].is_last_attempt());
    bury(&mut tx, &third[0], "gave up").await.unwrap();
    tx.commit().await.unwrap();
    let d = depth(db, "test").await.unwrap();
    assert_eq!((d.pending, d.dead), (1, 1));
    let dead = portcullis_queue::dead_letters(db, "test", 10)
        .await
        .unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("gave up"));

    // The scheduled job becomes due and completes.
    let mut tx = db.begin().await.unwrap();
    let later = claim(
        &mut tx,
        "test",
        10,
        Duration::from_secs(30),
        "w1",
        now + 60_001,
    )
    .await
    .unwrap();
    complete(&mut tx, &later.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(depth(db, "test").await.unwrap().pending, 0);
}

async fn concurrent_claimers_never_share(db: &Db) {
    let now = now_ms();
    let jobs: Vec<_> = (0..2000).map(|n| job(n, now)).collect();
    let mut tx = db.begin().await.unwrap();
    enqueue(&mut tx, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..6 {
        let db = db.clone();
        set.spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut tx = db.begin().await.unwrap();
                let claimed = claim(
                    &mut tx,
                    "test",
                    37,
                    Duration::from_secs(60),
                    &format!("w{w}"),
                    now_ms(),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|j| j.payload));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 2000, "every job claimed");
    assert_eq!(unique.len(), 2000, "no job claimed twice while leased");
}

/// An idle worker sleeps until the earliest of: a job's `run_at`, a lease running out.
async fn next_due_is_the_earliest_run_or_lease_end(db: &Db) {
    let now = now_ms();
    assert_eq!(next_due(db, "test", now).await.unwrap(), None);
    let mut tx = db.begin().await.unwrap();
    // Scheduled far ahead in bulk (what made the old query scan), one due soon, one now.
    let mut jobs: Vec<NewJob> = (10..510).map(|n| job(n, now + 3_600_000)).collect();
    jobs.push(job(1, now - 1_000));
    jobs.push(job(2, now + 10_000));
    enqueue(&mut tx, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next_due(db, "test", now).await.unwrap(), Some(now - 1_000));

    // Leased for 5 s: due again when the lease runs out, before the next scheduled job.
    let mut tx = db.begin().await.unwrap();
    let claimed = claim(&mut tx, "test", 10, Duration::from_secs(5), "w1", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(next_due(db, "test", now).await.unwrap(), Some(now + 5_000));

    // A lease longer than the wait for the next job: the next job.
    let mut tx = db.begin().await.unwrap();
    retry(&mut tx, &claimed[0], now - 500, "again")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let claimed = claim(&mut tx, "test", 10, Duration::from_secs(60), "w1", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(next_due(db, "test", now).await.unwrap(), Some(now + 10_000));

    // Done with it: the next job again, and other queues are not looked at.
    let mut tx = db.begin().await.unwrap();
    complete(&mut tx, &[&claimed[0]]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next_due(db, "test", now).await.unwrap(), Some(now + 10_000));
    assert_eq!(next_due(db, "other", now).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_next_due() {
    let (db, _dir) = sqlite().await;
    next_due_is_the_earliest_run_or_lease_end(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_next_due() {
    let (db, name) = postgres().await;
    next_due_is_the_earliest_run_or_lease_end(&db).await;
    db.close().await;
    drop_pg(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lifecycle() {
    let (db, _dir) = sqlite().await;
    lifecycle(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lifecycle() {
    let (db, name) = postgres().await;
    lifecycle(&db).await;
    db.close().await;
    drop_pg(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_claimers() {
    let (db, _dir) = sqlite().await;
    concurrent_claimers_never_share(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_claimers() {
    let (db, name) = postgres().await;
    concurrent_claimers_never_share(&db).await;
    db.close().await;
    drop_pg(&name).await;
}

#[test]
fn backoff_grows_with_jitter_and_caps() {
    let base = Duration::from_secs(2);
    let max = Duration::from_secs(600);
    for attempt in 1..=12 {
        let d = backoff(attempt, base, max);
        let nominal = (base * 2u32.pow((attempt - 1) as u32)).min(max);
        assert!(
            d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2),
            "attempt {attempt}: {d:?}"
        );
    }
}
