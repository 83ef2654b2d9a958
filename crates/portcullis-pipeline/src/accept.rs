//! The group committer: many accepted messages per transaction, none answered before the
//! transaction holding it is durable.
//!
//! An fsync costs milliseconds, so one commit per request would cap acceptance at a few
//! hundred messages a second. Instead each request is handed to a committer task over a
//! channel with a reply slot. The task takes whatever has queued up while its previous
//! transaction committed (up to `max_commit_batch`), writes it all — messages, send jobs,
//! idempotency records — in one transaction, commits, and only then replies. Under light
//! load a batch is one request and latency is one commit; under heavy load batches grow and
//! throughput follows. On SQLite that transaction is a turn in the one the other writers
//! share (`portcullis_store::group`), so their fsyncs are shared too.
//!
//! The guard's inputs are read here too, once per batch ([`crate::reads`]): a request
//! that still needs deciding arrives as a screening, gets what the committer read for it
//! ([`Screening`]), decides on its own task and answers with the message to write or the
//! refusal to record, which the committer writes with the rest of the batch.

use std::sync::Arc;

use portcullis_domain::MessageStatus;
use portcullis_domain::policy::PolicyCode;
use portcullis_domain::quota::{QuotaLimits, QuotaUsage, exceeded};
use portcullis_queue::NewJob;
use portcullis_store::guard::{Counter, CounterKeys, add_usage, lock_counters};
use portcullis_store::idempotency::IdempotencyClaim;
use portcullis_store::messages::SealedMessage;
use portcullis_store::policy::{GuardSnapshot, NewPolicyEvent};
use portcullis_store::{Durable, HeldReader, Store, StoreError, now_ms};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::reads::{self, GuardRead, InFlight};
use crate::{PipelineConfig, PipelineError, SEND_QUEUE};

/// The `Idempotency-Key` of a request and the hash of what was asked under it.
#[derive(Debug, Clone)]
pub struct IdempotencyInput {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// One message to accept, with the response it will be answered with (stored under the
/// idempotency key so a replay answers the same).
#[derive(Debug)]
pub struct AcceptRequest {
    /// Sealed by the caller ([`portcullis_store::Store::seal_message`]). A message whose
    /// status is `held` is stored without a send job: a reviewer releases it.
    pub message: SealedMessage,
    pub idempotency: Option<IdempotencyInput>,
    pub response: String,
    /// Guard decisions about this message (a deferral, an exemption, a hold), recorded
    /// with it.
    pub policy_events: Vec<NewPolicyEvent>,
    /// What the message costs against the app's counters (`None`: nothing is counted,
    /// as for the guard-less benchmark build).
    pub charge: Option<Charge>,
}

/// What accepting a message adds to its app's and tenant's counters, and the quotas it
/// must fit in. The guard looked at the counters before; the committer checks the quotas
/// again under lock, in the transaction that charges them, so concurrent requests (on any
/// instance) cannot together overrun a quota.
#[derive(Debug, Clone)]
pub struct Charge {
    pub keys: CounterKeys,
    pub limits: QuotaLimits,
    pub segments: u64,
    /// The destination is on the high-risk prefix list.
    pub high_risk: bool,
}

impl Charge {
    fn deltas<'a>(&'a self, out: &mut Vec<(&'a Counter, i64)>) {
        let k = &self.keys;
        let segments = i64::try_from(self.segments).unwrap_or(i64::MAX);
        for c in k.quota_set() {
            out.push((c, segments));
        }
        out.push((&k.app_minute, 1));
        out.push((&k.app_hour, 1));
        if self.high_risk {
            out.push((&k.high_risk_hour, 1));
        }
    }
}

/// Work for the committer: a message to accept, or only policy events to record (a
/// refusal leaves no message, but its event rides the same batched commits).
#[derive(Debug)]
pub(crate) enum Work {
    Accept(Box<AcceptRequest>),
    Record(Vec<NewPolicyEvent>),
}

/// What became of an [`AcceptRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// Durably stored and queued.
    Accepted,
    /// The idempotency key was used before for the same request: answer this.
    Replay { status_code: u16, response: String },
    /// The idempotency key was used before for another request: nothing was stored.
    IdempotencyKeyReused,
    /// A quota would have been exceeded: nothing was stored (a policy event was).
    Refused { code: &'static str, reason: String },
}

type Reply = oneshot::Sender<Result<AcceptOutcome, PipelineError>>;

/// What reaches the committer.
pub(crate) enum Incoming {
    /// Decided work, answered once the commit holding it is durable.
    Write(Work, Reply),
    /// A message the guard has yet to decide: the committer reads its inputs with the
    /// rest of the batch's and hands them back as a [`Screening`].
    Screen(
        Box<GuardRead>,
        oneshot::Sender<Result<Screening, PipelineError>>,
    ),
}

/// What the guard needs to decide one message, read by the committer for its batch. The
/// committer writes the batch once every screening of it is answered, so answer at once,
/// without waiting on anything that goes through the committer: with [`Screening::accept`],
/// with [`Screening::refuse`], or by dropping it, which withdraws the message.
#[derive(Debug)]
pub struct Screening {
    pub snapshot: GuardSnapshot,
    verdict: oneshot::Sender<(Work, Reply)>,
}

impl Screening {
    /// Writes the message with the batch; its outcome once the commit is durable.
    pub async fn accept(self, req: AcceptRequest) -> Result<AcceptOutcome, PipelineError> {
        self.answer(Work::Accept(Box::new(req))).await
    }

    /// Records the refusal's policy events with the batch; returns once they are durable.
    pub async fn refuse(self, events: Vec<NewPolicyEvent>) -> Result<(), PipelineError> {
        self.answer(Work::Record(events)).await.map(|_| ())
    }

    async fn answer(self, work: Work) -> Result<AcceptOutcome, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.verdict
            .send((work, reply))
            .map_err(|_| PipelineError::ShuttingDown)?;
        answer.await.map_err(|_| PipelineError::ShuttingDown)?
    }
}

pub(crate) struct CommitterHandle {
    tx: std::sync::Mutex<Option<mpsc::Sender<Incoming>>>,
}

impl CommitterHandle {
    pub(crate) fn spawn(
        store: &Store,
        config: &PipelineConfig,
        work: Arc<Notify>,
        tasks: &TaskTracker,
    ) -> CommitterHandle {
        let (tx, rx) = mpsc::channel::<Incoming>(config.max_commit_batch * 8);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..config.committers.max(1) {
            let c = Committer {
                store: store.clone(),
                max_batch: config.max_commit_batch.max(1),
                max_attempts: config.max_attempts,
                wake_within: i64::try_from(config.poll_interval.as_millis()).unwrap_or(i64::MAX),
                work: work.clone(),
            };
            tasks.spawn(c.run(rx.clone()));
        }
        CommitterHandle {
            tx: std::sync::Mutex::new(Some(tx)),
        }
    }

    pub(crate) async fn submit(&self, work: Work) -> Result<AcceptOutcome, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Incoming::Write(work, reply)).await?;
        answer.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    pub(crate) async fn screen(&self, read: GuardRead) -> Result<Screening, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Incoming::Screen(Box::new(read), reply)).await?;
        answer.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    async fn send(&self, incoming: Incoming) -> Result<(), PipelineError> {
        let sender = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(PipelineError::ShuttingDown)?;
        sender
            .send(incoming)
            .await
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// Stops taking requests; the committers finish what is queued and exit.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct Committer {
    store: Store,
    max_batch: usize,
    max_attempts: u32,
    /// Send workers are woken for a job due within this (ms); they look again for later
    /// ones after at most this long anyway. Waking them for messages scheduled further
    /// ahead would only have them look for due work and find none.
    wake_within: i64,
    work: Arc<Notify>,
}

impl Committer {
    async fn run(self, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Incoming>>>) {
        let mut incoming = Vec::with_capacity(self.max_batch);
        let mut held = HeldReader::new(&self.store.db);
        // Batches written and waiting for their commit to be durable before they are
        // answered, and what they add to the guard's reads meanwhile.
        let mut settling = JoinSet::new();
        let in_flight = Arc::new(std::sync::Mutex::new(Vec::new()));
        loop {
            {
                // Several committers share one queue; whoever holds the lock takes a batch.
                let mut rx = rx.lock().await;
                if rx.recv_many(&mut incoming, self.max_batch).await == 0 {
                    break;
                }
            }
            while settling.try_join_next().is_some() {}
            let batch = self.screen(&mut held, incoming.drain(..), &in_flight).await;
            if !batch.is_empty() {
                self.commit_batch(batch, &mut settling, &in_flight).await;
            }
        }
        while settling.join_next().await.is_some() {}
    }

    /// Reads the guard's inputs for the batch's screenings, hands them out and waits for
    /// the decisions: the batch to write.
    async fn screen(
        &self,
        held: &mut HeldReader,
        incoming: impl Iterator<Item = Incoming>,
        in_flight: &InFlightList,
    ) -> Vec<(Work, Reply)> {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut reads = Vec::new();
        let mut slots = Vec::new();
        for item in incoming {
            match item {
                Incoming::Write(work, reply) => batch.push((work, reply)),
                Incoming::Screen(read, slot) => {
                    reads.push(*read);
                    slots.push(slot);
                }
            }
        }
        if reads.is_empty() {
            return batch;
        }
        let refs: Vec<&GuardRead> = reads.iter().collect();
        let unsettled = in_flight.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match reads::snapshots(&self.store, held, &refs, &unsettled).await {
            Ok(snapshots) => {
                let mut decisions = Vec::with_capacity(slots.len());
                for (slot, snapshot) in slots.into_iter().zip(snapshots) {
                    let (verdict, decided) = oneshot::channel();
                    // A request gone meanwhile (its client hung up) drops its screening.
                    if slot.send(Ok(Screening { snapshot, verdict })).is_ok() {
                        decisions.push(decided);
                    }
                }
                for decided in decisions {
                    // A dropped screening is a withdrawn message: nothing to write.
                    if let Ok(work) = decided.await {
                        batch.push(work);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "guard read failed");
                let detail = e.to_string();
                for slot in slots {
                    let _ = slot.send(Err(PipelineError::Read(detail.clone())));
                }
            }
        }
        batch
    }

    /// Writes a batch and leaves answering it, once its commit is durable, to a task in
    /// `settling`: the committer screens the next batch meanwhile instead of waiting out
    /// the fsync.
    async fn commit_batch(
        &self,
        batch: Vec<(Work, Reply)>,
        settling: &mut JoinSet<()>,
        in_flight: &InFlightList,
    ) {
        let started = std::time::Instant::now();
        let size = batch.len();
        let (reqs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match self.write(&reqs).await {
            Ok(written) => {
                let adds = written.adds.clone();
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(adds.clone());
                let in_flight = in_flight.clone();
                let work = self.work.clone();
                settling.spawn(async move {
                    let durable = written.durable().await;
                    // Committed, readers see it; failed, it is gone.
                    in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|b| !Arc::ptr_eq(b, &adds));
                    match durable {
                        Ok((outcomes, due_soon)) => {
                            metrics::histogram!("portcullis_accept_commit_seconds")
                                .record(started.elapsed());
                            metrics::histogram!("portcullis_accept_batch_size").record(size as f64);
                            if due_soon {
                                work.notify_waiters();
                            }
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        // The commit failed: none of the batch was stored. (Retrying one by
                        // one is for a statement that one request broke, during the turn.)
                        Err(e) => fail_all(replies, &e),
                    }
                });
            }
            Err(e) if size > 1 => {
                // One bad request must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %e, size, "batch commit failed; retrying requests one by one");
                for (req, reply) in reqs.into_iter().zip(replies) {
                    let outcome = match self.write(std::slice::from_ref(&req)).await {
                        Ok(written) => written.durable().await,
                        Err(e) => Err(e),
                    };
                    if matches!(outcome, Ok((_, true))) {
                        self.work.notify_waiters();
                    }
                    let _ = reply.send(
                        outcome
                            .map(|(mut o, _)| o.remove(0))
                            .map_err(PipelineError::from),
                    );
                }
            }
            Err(e) => fail_all(replies, &e),
        }
    }

    /// Writes a batch in the shared transaction: what became of each request once it is
    /// durable ([`Written::durable`]).
    async fn write(&self, reqs: &[Work]) -> Result<Written, StoreError> {
        let now = now_ms();
        let mut tx = self.store.db.begin_shared().await?;
        let mut outcomes = Vec::with_capacity(reqs.len());
        let mut accepted = Vec::with_capacity(reqs.len());
        let mut fresh: Vec<(usize, &AcceptRequest)> = Vec::with_capacity(reqs.len());
        let mut events = Vec::new();
        for work in reqs {
            let req = match work {
                Work::Record(e) => {
                    events.extend(e.iter().cloned());
                    outcomes.push(AcceptOutcome::Accepted);
                    continue;
                }
                Work::Accept(req) => req,
            };
            let outcome = match &req.idempotency {
                None => AcceptOutcome::Accepted,
                Some(idem) => match self
                    .store
                    .claim_idempotency_key(
                        &mut tx,
                        &req.message.message.app_id,
                        &idem.key,
                        &idem.request_hash,
                        202,
                        &req.response,
                        now,
                    )
                    .await?
                {
                    IdempotencyClaim::Fresh => AcceptOutcome::Accepted,
                    IdempotencyClaim::Replay {
                        status_code,
                        response,
                    } => AcceptOutcome::Replay {
                        status_code,
                        response,
                    },
                    IdempotencyClaim::Mismatch => AcceptOutcome::IdempotencyKeyReused,
                },
            };
            if outcome == AcceptOutcome::Accepted {
                fresh.push((outcomes.len(), req));
            }
            outcomes.push(outcome);
        }
        let mut quota_counters: Vec<&Counter> = fresh
            .iter()
            .filter_map(|(_, r)| r.charge.as_ref())
            .filter(|c| c.limits.any())
            .flat_map(|c| c.keys.quota_set())
            .collect();
        // A batch's messages mostly share their counters: each is read once.
        quota_counters.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        quota_counters.dedup_by(|a, b| a.key == b.key);
        let mut used = lock_counters(&mut tx, self.store.db.backend(), &quota_counters).await?;
        let mut deltas = Vec::with_capacity(fresh.len() * 6);
        let mut adds = InFlight::default();
        for (at, req) in fresh {
            if let Some(charge) = &req.charge
                && charge.limits.any()
            {
                let value = |c: &Counter| used.get(&c.key).copied().unwrap_or(0).max(0) as u64;
                let k = &charge.keys;
                let usage = QuotaUsage {
                    app_day: value(&k.app_day),
                    app_month: value(&k.app_month),
                    tenant_day: value(&k.tenant_day),
                    tenant_month: value(&k.tenant_month),
                };
                if let Some(reason) = exceeded(&charge.limits, &usage, charge.segments) {
                    if let Some(idem) = &req.idempotency {
                        self.store
                            .release_idempotency_key(
                                &mut tx,
                                &req.message.message.app_id,
                                &idem.key,
                            )
                            .await?;
                    }
                    let m = &req.message.message;
                    events.push(NewPolicyEvent {
                        tenant_id: m.tenant_id.clone(),
                        app_id: m.app_id.clone(),
                        message_id: None,
                        phone: Some(m.to.clone()),
                        kind: "refused".to_owned(),
                        code: PolicyCode::QuotaExceeded.as_str().to_owned(),
                        reason: reason.clone(),
                    });
                    outcomes[at] = AcceptOutcome::Refused {
                        code: PolicyCode::QuotaExceeded.as_str(),
                        reason,
                    };
                    continue;
                }
                for c in k.quota_set() {
                    *used.entry(c.key.clone()).or_insert(0) += charge.segments as i64;
                }
            }
            if let Some(charge) = &req.charge {
                charge.deltas(&mut deltas);
            }
            if !req.message.message.purpose.is_essential() {
                adds.count_message(&req.message.message.app_id, req.message.recipient_index());
            }
            accepted.push(&req.message);
            events.extend(req.policy_events.iter().cloned());
        }
        self.store.insert_messages(&mut tx, &accepted).await?;
        let jobs: Vec<NewJob> = accepted
            .iter()
            .filter(|s| s.message.status != MessageStatus::Held)
            .map(|s| NewJob {
                queue: SEND_QUEUE,
                payload: s.message.id.as_str().to_owned(),
                run_at: s.message.send_at.unwrap_or(s.message.created_at),
                max_attempts: self.max_attempts,
            })
            .collect();
        portcullis_queue::enqueue(&mut tx, &jobs).await?;
        let due_soon = jobs
            .iter()
            .any(|j| j.run_at <= now.saturating_add(self.wake_within));
        add_usage(&mut tx, &deltas).await?;
        for (counter, delta) in &deltas {
            adds.count(counter, *delta);
        }
        self.store.insert_policy_events(&mut tx, &events).await?;
        let accepted = accepted.len();
        Ok(Written {
            durable: tx.keep().await?,
            outcomes,
            due_soon,
            accepted,
            events,
            adds: Arc::new(adds),
        })
    }
}

/// The batches of a committer written and not yet committed.
type InFlightList = Arc<std::sync::Mutex<Vec<Arc<InFlight>>>>;

/// A batch written and kept in the shared transaction.
struct Written {
    durable: Durable,
    outcomes: Vec<AcceptOutcome>,
    /// A send job due soon was queued.
    due_soon: bool,
    accepted: usize,
    events: Vec<NewPolicyEvent>,
    /// What the batch adds to the guard's reads once committed.
    adds: Arc<InFlight>,
}

/// Answers every request of a batch that was not stored with the error that lost it.
fn fail_all(replies: Vec<Reply>, e: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(PipelineError::Store(StoreError::Conflict(
            e.to_string(),
        ))));
    }
}

impl Written {
    /// Waits for the commit: what became of each request, and whether a send job due
    /// soon was queued.
    async fn durable(self) -> Result<(Vec<AcceptOutcome>, bool), StoreError> {
        self.durable.wait().await?;
        metrics::counter!("portcullis_messages_accepted_total").increment(self.accepted as u64);
        crate::count_policy_events(&self.events);
        Ok((self.outcomes, self.due_soon))
    }
}
