//! The committer's screenings against a real SQLite store: a request that goes away
//! between its read and its decision withdraws its message without holding up the batch
//! or the committer, and a refusal's events are written with the batch.

use std::sync::Arc;

use portcullis_crypto::{KeyMode, Keyring, MasterKey};
use portcullis_domain::{Channel, E164, MessageBody, MessageId, MessageStatus, Purpose, Role};
use portcullis_pipeline::{AcceptOutcome, AcceptRequest, GuardRead, Pipeline, PipelineConfig};
use portcullis_store::guard::CounterKeys;
use portcullis_store::messages::NewMessage;
use portcullis_store::policy::NewPolicyEvent;
use portcullis_store::{Db, Store, apps, keys, now_ms, tenants};

struct Fixture {
    pipeline: Arc<Pipeline>,
    store: Store,
    tenant: tenants::Tenant,
    app: apps::App,
    key: keys::ApiKeyRecord,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/p.db", dir.path().display()))
        .await
        .unwrap();
    let store = Store::new(db.clone(), Arc::new(Keyring::new(&MasterKey::generate())));
    let tenant = tenants::create(&db, "t").await.unwrap();
    let app = apps::create(&db, &tenant.id, "a").await.unwrap();
    let (key, _) = keys::create(
        &db,
        &tenant.id,
        &app.id,
        Role::Sender,
        KeyMode::Test,
        keys::KeyLimits::default(),
    )
    .await
    .unwrap();
    let config = PipelineConfig {
        dev_mode: true,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::start(store.clone(), config).await.unwrap();
    Fixture {
        pipeline,
        store,
        tenant,
        app,
        key,
        _dir: dir,
    }
}

impl Fixture {
    fn read(&self, to: &E164) -> GuardRead {
        GuardRead {
            app: self.app.id.clone(),
            to: to.clone(),
            count_recipient: true,
            keys: CounterKeys::new(
                &self.tenant.id,
                &self.app.id,
                &self.tenant.settings,
                now_ms(),
            ),
        }
    }

    fn message(&self, to: &E164) -> AcceptRequest {
        let body = MessageBody::parse("hello", 1600).unwrap();
        let info = body.segment_info();
        let now = now_ms();
        let message = NewMessage {
            id: MessageId::new(),
            tenant_id: self.tenant.id.clone(),
            app_id: self.app.id.clone(),
            key_id: self.key.id.clone(),
            to: to.clone(),
            from: None,
            channel: Channel::Sms,
            purpose: Purpose::Notification,
            body: body.as_str().to_owned(),
            metadata: None,
            encoding: info.encoding,
            segments: info.segments,
            status: MessageStatus::Held,
            test_mode: true,
            send_at: None,
            expires_at: now + 60_000,
            created_at: now,
        };
        AcceptRequest {
            message: self.store.seal_message(message).unwrap(),
            idempotency: None,
            response: "{}".to_owned(),
            policy_events: Vec::new(),
            charge: None,
        }
    }
}

#[tokio::test]
async fn a_dropped_screening_withdraws_only_its_message() {
    let f = Arc::new(fixture().await);
    let to = E164::parse("+14155550101").unwrap();
    // Many screenings at once, so they share batches; every third goes away undecided,
    // every other one is accepted.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (f, to) = (f.clone(), to.clone());
        set.spawn(async move {
            let screening = f.pipeline.screen(f.read(&to)).await.unwrap();
            if i % 3 == 0 {
                drop(screening);
                return None;
            }
            Some(screening.accept(f.message(&to)).await.unwrap())
        });
    }
    let mut accepted = 0;
    while let Some(done) = set.join_next().await {
        match done.unwrap() {
            Some(AcceptOutcome::Accepted) => accepted += 1,
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
    assert_eq!(accepted, 20);
    // What was accepted is stored, and counted for the recipient's next read; the
    // withdrawn messages are not.
    let next = f.pipeline.screen(f.read(&to)).await.unwrap();
    assert_eq!(next.snapshot.recipient_today, 20);
    // A refusal's events are written with the batch before it returns.
    next.refuse(vec![NewPolicyEvent {
        tenant_id: f.tenant.id.clone(),
        app_id: f.app.id.clone(),
        message_id: None,
        phone: Some(to.clone()),
        kind: "refused".to_owned(),
        code: "recipient_frequency_capped".to_owned(),
        reason: "test".to_owned(),
    }])
    .await
    .unwrap();
    let events = f
        .store
        .list_policy_events(&f.app.id, &Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    f.pipeline.shutdown().await;
}
