//! Upgrading to the outbox keyed by event position (migration 14) on a database that has
//! events waiting to be relayed: the waiting ones stay waiting, the relayed ones do not
//! come back, and events written after the upgrade join the outbox by themselves.

mod common;

use common::FreshPostgres;
use portcullis_store::{Db, Pool, on_pool};

const BEFORE: i64 = 13;

async fn exec(db: &Db, sql: &str) {
    on_pool!(db.write(), |p| sqlx::raw_sql(sqlx::AssertSqlSafe(
        sql.to_owned()
    ))
    .execute(p)
    .await
    .map(drop))
    .unwrap();
}

async fn outbox(db: &Db) -> Vec<String> {
    on_pool!(db.read(), |p| sqlx::query_scalar(
        "SELECT e.id FROM event_outbox o JOIN events e ON e.seq = o.seq ORDER BY o.seq"
    )
    .fetch_all(p)
    .await)
    .unwrap()
}

fn event(id: &str) -> String {
    format!(
        "INSERT INTO events (id, tenant_id, app_id, type, data, created_at) \
         VALUES ('{id}', 'tnt_1', 'app_1', 'message.sent', '{{}}', 1)"
    )
}

async fn upgrade_keeps_waiting_events(db: Db) {
    match db.write() {
        Pool::Sqlite(p) => {
            sqlx::migrate!("./migrations/sqlite")
                .run_to(BEFORE, p)
                .await
        }
        Pool::Postgres(p) => {
            sqlx::migrate!("./migrations/postgres")
                .run_to(BEFORE, p)
                .await
        }
    }
    .unwrap();
    // Three events; the first was relayed already.
    for id in ["evt_a", "evt_b", "evt_c"] {
        exec(&db, &event(id)).await;
    }
    exec(
        &db,
        "INSERT INTO event_outbox (event_id, created_at) VALUES ('evt_b', 1), ('evt_c', 1)",
    )
    .await;

    db.migrate().await.unwrap();
    assert_eq!(outbox(&db).await, ["evt_b", "evt_c"]);
    exec(&db, &event("evt_d")).await;
    assert_eq!(outbox(&db).await, ["evt_b", "evt_c", "evt_d"]);
    db.close().await;
}

#[tokio::test]
async fn sqlite_upgrade_keeps_waiting_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect_without_migrating(&format!("sqlite://{}/m.db", dir.path().display()))
        .await
        .unwrap();
    upgrade_keeps_waiting_events(db).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_waiting_events() {
    let (fresh, db) = FreshPostgres::create("pcl_outbox").await;
    upgrade_keeps_waiting_events(db).await;
    fresh.remove().await;
}
