//! A fresh PostgreSQL database per test, for the store's own tests.

use portcullis_store::Db;

pub struct FreshPostgres {
    admin: sqlx::PgPool,
    name: String,
}

impl FreshPostgres {
    /// Creates an empty database named after `prefix` and this process, and connects to it
    /// without migrating.
    pub async fn create(prefix: &str) -> (FreshPostgres, Db) {
        let admin_url = std::env::var("PORTCULLIS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("{prefix}_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("PostgreSQL reachable");
        let fresh = FreshPostgres { admin, name };
        fresh.drop_database().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            fresh.name
        )))
        .execute(&fresh.admin)
        .await
        .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap();
        let db = Db::connect_without_migrating(&format!("{base}/{}", fresh.name))
            .await
            .unwrap();
        (fresh, db)
    }

    async fn drop_database(&self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .unwrap();
    }

    /// Drops the database (close the test's `Db` first).
    pub async fn remove(self) {
        self.drop_database().await;
    }
}
