//! Dev mode's first start: a tenant, an app with the documented sender and an admin key,
//! printed once with a ready `curl` line. A data dir that already has a tenant gets nothing
//! new.

use anyhow::Result;
use portcullis_crypto::KeyMode;
use portcullis_domain::Role;
use portcullis_store::{Db, apps, keys, tenants};

/// The bootstrap app's sender in dev mode.
pub const DEV_SENDER: &str = "+14155550199";

/// What a bootstrap created.
#[derive(Debug)]
pub struct Bootstrap {
    pub tenant_id: String,
    pub app_id: String,
    pub key_id: String,
    pub key: portcullis_crypto::Secret<String>,
}

/// Creates the dev tenant, app and admin key unless the database already has a tenant.
pub async fn bootstrap_dev(db: &Db) -> Result<Option<Bootstrap>> {
    if tenants::count(db).await? > 0 {
        return Ok(None);
    }
    let tenant = tenants::create(db, "dev").await?;
    let app = apps::create(db, &tenant.id, "dev").await?;
    apps::set_senders(db, &app.id, &[DEV_SENDER.to_owned()]).await?;
    let (record, new) = keys::create(
        db,
        &tenant.id,
        &app.id,
        Role::Admin,
        KeyMode::Live,
        Default::default(),
    )
    .await?;
    Ok(Some(Bootstrap {
        tenant_id: tenant.id.to_string(),
        app_id: app.id.to_string(),
        key_id: record.id.to_string(),
        key: new.plaintext,
    }))
}

/// Prints the bootstrap line (machine-readable, one line) and a ready `curl`.
pub fn print(b: &Bootstrap, listen: &str) {
    let line = serde_json::json!({
        "tenant_id": b.tenant_id,
        "app_id": b.app_id,
        "key_id": b.key_id,
        "key": b.key.expose(),
    });
    println!("bootstrap: {line}");
    println!(
        "Send a message through the simulator:\n  curl -s http://{listen}/v1/messages \\\n    -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\\n    -d '{{\"to\":\"+14155550100\",\"body\":\"Hello from Portcullis\",\"purpose\":\"transactional\"}}'",
        b.key.expose()
    );
    println!("This key is shown once. Store it now.");
}
