//! The shared write transaction (group commit) against a real SQLite file, and its
//! pass-through on PostgreSQL: writers share a transaction, each keeps or loses only its
//! own work, and nobody hears "committed" before readers can see it.

mod common;

use std::time::Duration;

use common::FreshPostgres;
use portcullis_store::{Db, Pool, StoreError, Tx, on_pool, on_tx};

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/g.db", dir.path().display()))
        .await
        .unwrap();
    create_scratch(&db).await;
    (db, dir)
}

/// The table every test writes to: one integer key per writer.
async fn create_scratch(db: &Db) {
    on_pool!(db.write(), |p| sqlx::query(
        "CREATE TABLE scratch (n BIGINT PRIMARY KEY)"
    )
    .execute(p)
    .await
    .map(drop))
    .unwrap();
}

async fn insert(tx: &mut Tx, n: i64) -> Result<(), StoreError> {
    on_tx!(tx, |c| sqlx::query("INSERT INTO scratch (n) VALUES ($1)")
        .bind(n)
        .execute(c)
        .await
        .map(drop))?;
    Ok(())
}

async fn count_in(tx: &mut Tx) -> i64 {
    on_tx!(tx, |c| sqlx::query_scalar("SELECT COUNT(*) FROM scratch")
        .fetch_one(c)
        .await)
    .unwrap()
}

/// What a reader outside the transaction sees: only committed rows.
async fn committed(db: &Db) -> Vec<i64> {
    let read: &Pool = db.read();
    on_pool!(read, |p| sqlx::query_scalar(
        "SELECT n FROM scratch ORDER BY n"
    )
    .fetch_all(p)
    .await)
    .unwrap()
}

#[tokio::test]
async fn a_queued_writer_joins_the_open_transaction() {
    let (db, _dir) = sqlite().await;
    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    // B queues for its turn while A holds it.
    let db2 = db.clone();
    let b = tokio::spawn(async move {
        let mut b = db2.begin_shared().await.unwrap();
        let inside = count_in(&mut b).await;
        let outside = committed(&db2).await;
        insert(&mut b, 2).await.unwrap();
        b.commit().await.unwrap();
        (inside, outside)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.commit().await.unwrap();
    let (inside, outside) = b.await.unwrap();
    // B ran in A's transaction: it saw A's row before anyone outside could.
    assert_eq!(inside, 1);
    assert!(
        outside.is_empty(),
        "A's row was committed alone: {outside:?}"
    );
    assert_eq!(committed(&db).await, vec![1, 2]);
}

#[tokio::test]
async fn many_concurrent_writers_all_land_and_each_hears_only_after_commit() {
    let (db, _dir) = sqlite().await;
    let mut tasks = Vec::new();
    for n in 0..200 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_shared().await.unwrap();
            insert(&mut tx, n).await.unwrap();
            tx.commit().await.unwrap();
            // Committed means a reader on another connection sees it.
            assert!(committed(&db).await.contains(&n));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(committed(&db).await, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_writer_loses_only_its_own_work() {
    let (db, _dir) = sqlite().await;
    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    let db_b = db.clone();
    let b = tokio::spawn(async move {
        // A writer whose second statement fails and returns early with `?`.
        let run = async {
            let mut b = db_b.begin_shared().await?;
            insert(&mut b, 2).await?;
            insert(&mut b, 1).await?; // duplicate key
            b.commit().await
        };
        run.await
    });
    let db_c = db.clone();
    let c = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = db_c.begin_shared().await.unwrap();
        insert(&mut c, 3).await.unwrap();
        c.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.commit().await.unwrap();
    let err = b.await.unwrap().unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    c.await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3]);

    // An explicit rollback likewise undoes only its own rows.
    let mut d = db.begin_shared().await.unwrap();
    insert(&mut d, 4).await.unwrap();
    d.rollback().await.unwrap();
    let mut e = db.begin_shared().await.unwrap();
    insert(&mut e, 5).await.unwrap();
    e.commit().await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3, 5]);
}

/// The writer that opened a transaction fails while another waits for its turn: the
/// waiting writer sees none of the failed one's work, and a writer that joins behind one
/// and rolls back takes nothing of the first's with it.
#[tokio::test]
async fn a_failed_opening_writer_leaves_the_next_nothing_of_its_work() {
    let (db, _dir) = sqlite().await;
    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    a.commit().await.unwrap();

    // B opens the next transaction.
    let mut b = db.begin_shared().await.unwrap();
    insert(&mut b, 2).await.unwrap();
    let db_c = db.clone();
    let c = tokio::spawn(async move {
        let mut c = db_c.begin_shared().await.unwrap();
        // B's row is gone by the time C has its turn.
        assert_eq!(count_in(&mut c).await, 1);
        insert(&mut c, 3).await.unwrap();
        c.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = insert(&mut b, 1).await.unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    // Abandoned as `?` would: undone on a task of its own.
    drop(b);
    c.await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3]);

    // A first writer that keeps its work, then one that joins and rolls back: the
    // first's work stays.
    let mut d = db.begin_shared().await.unwrap();
    insert(&mut d, 4).await.unwrap();
    let db_e = db.clone();
    let e = tokio::spawn(async move {
        let mut e = db_e.begin_shared().await.unwrap();
        insert(&mut e, 5).await.unwrap();
        e.rollback().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.commit().await.unwrap();
    e.await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3, 4]);
}

#[tokio::test]
async fn a_writer_cancelled_mid_turn_loses_only_its_own_work() {
    let (db, _dir) = sqlite().await;
    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    let (inserted_tx, inserted) = tokio::sync::oneshot::channel();
    let db_b = db.clone();
    let b = tokio::spawn(async move {
        let mut b = db_b.begin_shared().await.unwrap();
        insert(&mut b, 2).await.unwrap();
        inserted_tx.send(()).unwrap();
        // Never finishes its turn: the task is aborted here.
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let db_c = db.clone();
    let c = tokio::spawn(async move {
        let mut c = db_c.begin_shared().await.unwrap();
        insert(&mut c, 3).await.unwrap();
        c.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = tokio::spawn(a.commit());
    inserted.await.unwrap();
    b.abort();
    a.await.unwrap().unwrap();
    c.await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3]);
}

/// A writer that looked and changed nothing ends its turn without undoing anything; the
/// writers after it keep or lose their own work as usual, and a writer that only ended
/// its turn (`keep`) hears of the commit when it waits for it.
#[tokio::test]
async fn a_writer_that_changed_nothing_leaves_the_others_their_work() {
    let (db, _dir) = sqlite().await;
    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    let a = a.keep().await.unwrap();
    let mut b = db.begin_shared().await.unwrap();
    assert_eq!(count_in(&mut b).await, 1);
    b.unchanged().await.unwrap();
    let mut c = db.begin_shared().await.unwrap();
    insert(&mut c, 2).await.unwrap();
    c.rollback().await.unwrap();
    let mut d = db.begin_shared().await.unwrap();
    insert(&mut d, 3).await.unwrap();
    d.commit().await.unwrap();
    a.wait().await.unwrap();
    assert_eq!(committed(&db).await, vec![1, 3]);
}

#[tokio::test]
async fn on_postgres_each_writer_has_its_own_transaction() {
    let (fresh, db) = FreshPostgres::create("pcl_group").await;
    create_scratch(&db).await;

    let mut a = db.begin_shared().await.unwrap();
    insert(&mut a, 1).await.unwrap();
    // B does not wait for A: it has a transaction of its own and cannot see A's row.
    let mut b = db.begin_shared().await.unwrap();
    assert_eq!(count_in(&mut b).await, 0);
    insert(&mut b, 2).await.unwrap();
    b.commit().await.unwrap();
    a.rollback().await.unwrap();
    assert_eq!(committed(&db).await, vec![2]);

    db.close().await;
    fresh.remove().await;
}
