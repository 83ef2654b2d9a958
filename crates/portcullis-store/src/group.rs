//! Group commit across writers: on SQLite, the accept committer, the send workers, the
//! receipt recorder and the webhook relay share one write transaction and one fsync.
//!
//! SQLite has one writer. Measured under load (64 concurrent `POST /v1/messages`), the
//! accept committer spent about 80% of each commit cycle waiting for that writer while the
//! other kinds of write transaction held it, each paying its own `BEGIN`, `COMMIT` and
//! fsync. Here a writer *joins* the open transaction instead: it runs its statements inside
//! a savepoint (so a failure undoes only its own work), and a committer task commits
//! whatever joined once everyone queued behind it has had their turn. Nobody is told
//! their work is done before the transaction holding it is durable.
//!
//! On PostgreSQL, which has many writers and its own group commit, [`SharedTx`] is an
//! ordinary transaction of the caller's own.

use std::sync::{Arc, Weak};

use sqlx::sqlite::SqlitePool;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

use crate::db::Tx;
use crate::lead::{Lead, SqliteTx};
use crate::{StoreError, on_tx};

/// A write transaction's outcome, sent once to every writer that joined it.
type Outcome = Option<Result<(), Arc<str>>>;

pub(crate) struct Group {
    pool: SqlitePool,
    state: Arc<Mutex<State>>,
    /// Rung when a member leaves the transaction: the committer takes its turn.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    open: Option<Open>,
}

struct Open {
    tx: Tx,
    done: watch::Sender<Outcome>,
    /// The last member kept its work and its savepoint is still open: the next member's
    /// first statement releases it (see [`Lead`]), and `COMMIT` releases it if nobody
    /// comes. Each statement is a hand-off to sqlx's thread for the connection and back,
    /// measured at about 0.2 ms under load while the turn is held, so a turn neither
    /// begins nor ends with a statement of its own.
    kept: bool,
}

impl Open {
    /// What goes ahead of the transaction's next statement.
    fn lead(&mut self) -> &mut Lead {
        match &mut self.tx {
            Tx::Sqlite(t) => &mut t.lead,
            Tx::Postgres(_) => unreachable!("only SQLite's writers share a transaction"),
        }
    }

    /// Ends the transaction after an error that may have broken it: every member of it
    /// learns that its work is lost. Dropping the sqlx transaction rolls it back.
    fn abort(self, e: &StoreError) {
        let _ = self.done.send(Some(Err(Arc::from(e.to_string()))));
    }
}

impl State {
    fn abort(&mut self, e: &StoreError) {
        if let Some(open) = self.open.take() {
            open.abort(e);
        }
    }
}

impl Group {
    /// Starts the committer task, which ends when the group is dropped.
    pub(crate) fn start(pool: SqlitePool) -> Arc<Group> {
        let group = Arc::new(Group {
            pool,
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(commit_loop(
            Arc::downgrade(&group),
            group.state.clone(),
            group.wake.clone(),
        ));
        group
    }

    /// Joins the open write transaction, or opens one. Writers queue for their turn in
    /// arrival order (tokio's mutex is fair).
    pub(crate) async fn join(&self) -> Result<SharedTx, StoreError> {
        let mut state = self.state.clone().lock_owned().await;
        let mut open = match state.open.take() {
            Some(open) => open,
            None => Open {
                tx: Tx::Sqlite(SqliteTx::new(
                    self.pool.begin_with("BEGIN IMMEDIATE").await?,
                )),
                done: watch::channel(None).0,
                kept: false,
            },
        };
        // The member's savepoint goes with its first statement.
        *open.lead() = if open.kept {
            Lead::Pending {
                sql: "RELEASE member; SAVEPOINT member",
                statements: 2,
            }
        } else {
            Lead::Pending {
                sql: "SAVEPOINT member",
                statements: 1,
            }
        };
        let done = open.done.subscribe();
        state.open = Some(open);
        Ok(SharedTx(Inner::Member(Some(Member {
            state,
            done,
            wake: self.wake.clone(),
            left: false,
        }))))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The committer waits on `wake`; it sees the group gone and ends.
        self.wake.notify_one();
    }
}

/// Commits the shared transaction each time the members queued behind the one that
/// rang have had their turn: the lock is fair, so this task's turn comes after theirs.
async fn commit_loop(group: Weak<Group>, state: Arc<Mutex<State>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if group.strong_count() == 0 {
            return;
        }
        let mut state = state.lock().await;
        if let Some(open) = state.open.take() {
            let outcome = match open.tx.commit().await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed");
                    Err(Arc::from(e.to_string()))
                }
            };
            let _ = open.done.send(Some(outcome));
        }
    }
}

async fn savepoint(tx: &mut Tx, statements: &'static str) -> Result<(), StoreError> {
    on_tx!(tx, |c| sqlx::raw_sql(statements).execute(c).await.map(drop))?;
    Ok(())
}

/// A write transaction: on SQLite a turn in the shared one, on PostgreSQL the caller's
/// own. Dereferences to the [`Tx`] every store function takes. Dropped without
/// [`SharedTx::commit`], its work is undone (and nobody else's).
pub struct SharedTx(Inner);

enum Inner {
    Own(Option<Tx>),
    Member(Option<Member>),
}

struct Member {
    state: OwnedMutexGuard<State>,
    done: watch::Receiver<Outcome>,
    wake: Arc<Notify>,
    /// The turn ended through [`Member::leave`]. A member dropped without it (its task
    /// cancelled before the undo could run) aborts the whole transaction: nothing
    /// half-done may be committed.
    left: bool,
}

impl Member {
    fn open(&mut self) -> &mut Open {
        match self.state.open.as_mut() {
            Some(open) => open,
            // `join` leaves the transaction open for as long as the member holds its turn.
            None => unreachable!("a member's transaction is open during its turn"),
        }
    }

    /// Ends the member's turn: keeps its work (its savepoint is released by whatever
    /// statement comes next, see [`Open::kept`]) or undoes it (`ROLLBACK TO`).
    async fn leave(mut self, keep: bool) -> Result<(), StoreError> {
        let open = self.open();
        let result = match std::mem::replace(open.lead(), Lead::None) {
            // No statement ran, so neither did the savepoint: there is nothing to keep or
            // undo, and a savepoint kept before is still open.
            Lead::Pending { .. } | Lead::None => Ok(()),
            Lead::Ran if keep => {
                open.kept = true;
                Ok(())
            }
            Lead::Ran => {
                open.kept = false;
                savepoint(&mut open.tx, "ROLLBACK TO member; RELEASE member").await
            }
            // The savepoint may not be there, and `ROLLBACK TO` would then reach the
            // savepoint kept before it: another member's work.
            Lead::Failed => Err(StoreError::Internal("opening a writer's savepoint failed")),
        };
        if let Err(e) = &result {
            self.state.abort(e);
        }
        self.left = true;
        result
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.left {
            self.state.abort(&StoreError::Internal(
                "a writer's turn ended without finishing",
            ));
        }
        // The lock is released right after this; the committer queues for it.
        self.wake.notify_one();
    }
}

impl SharedTx {
    pub(crate) fn own(tx: Tx) -> SharedTx {
        SharedTx(Inner::Own(Some(tx)))
    }

    /// Keeps this writer's work and returns once the transaction holding it is durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.keep().await?.wait().await
    }

    /// Keeps this writer's work and ends its turn without waiting for the commit: the
    /// writer can prepare its next work meanwhile. Nothing may be reported done before
    /// [`Durable::wait`] returns.
    pub async fn keep(mut self) -> Result<Durable, StoreError> {
        match &mut self.0 {
            Inner::Own(tx) => match tx.take() {
                Some(tx) => Ok(Durable(Pending::Own(Some(tx)))),
                None => Ok(Durable(Pending::Own(None))),
            },
            Inner::Member(member) => {
                let Some(member) = member.take() else {
                    return Ok(Durable(Pending::Own(None)));
                };
                let done = member.done.clone();
                member.leave(true).await?;
                Ok(Durable(Pending::Member(done)))
            }
        }
    }

    /// Ends the turn of a writer whose statements changed nothing (a claim that found no
    /// work): on SQLite there is nothing to undo, so no `ROLLBACK TO` round trip while the
    /// shared transaction waits, and nothing to wait for.
    pub async fn unchanged(self) -> Result<(), StoreError> {
        self.end(true).await
    }

    /// Undoes this writer's work.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.end(false).await
    }

    /// Ends the turn without waiting for a commit: on SQLite the member's savepoint is
    /// kept (`keep_savepoint`) or rolled back to; a transaction of its own is rolled back.
    async fn end(mut self, keep_savepoint: bool) -> Result<(), StoreError> {
        match &mut self.0 {
            Inner::Own(tx) => match tx.take() {
                Some(tx) => tx.rollback().await,
                None => Ok(()),
            },
            Inner::Member(member) => match member.take() {
                Some(member) => member.leave(keep_savepoint).await,
                None => Ok(()),
            },
        }
    }
}

impl Drop for SharedTx {
    fn drop(&mut self) {
        // An error (`?`) left the turn unfinished. Undoing it needs the database, so it
        // happens on a task that inherits the turn; nobody else can use the transaction
        // in between. Should that task never run (the runtime shutting down), dropping
        // the member aborts the whole transaction instead.
        if let Inner::Member(member) = &mut self.0
            && let Some(member) = member.take()
        {
            tokio::spawn(async move {
                if let Err(e) = member.leave(false).await {
                    tracing::error!(error = %e, "undoing an abandoned write failed");
                }
            });
        }
    }
}

/// Work kept in a write transaction, durable once [`Durable::wait`] returns. On
/// PostgreSQL the writer's own transaction, committed by `wait`.
pub struct Durable(Pending);

enum Pending {
    Own(Option<Tx>),
    Member(watch::Receiver<Outcome>),
}

impl Durable {
    /// Returns once the work is durable, or with the error that lost it.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            Pending::Own(tx) => match tx {
                Some(tx) => tx.commit().await,
                None => Ok(()),
            },
            Pending::Member(mut done) => {
                let outcome = done
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| StoreError::Internal("the group committer stopped"))?
                    .clone();
                match outcome {
                    Some(Err(e)) => Err(StoreError::Conflict(format!(
                        "the shared write transaction failed: {e}"
                    ))),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::ops::Deref for SharedTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        match &self.0 {
            Inner::Own(Some(tx)) => tx,
            Inner::Member(Some(m)) => match m.state.open.as_ref() {
                Some(open) => &open.tx,
                None => unreachable!("a member's transaction is open during its turn"),
            },
            _ => unreachable!("a finished SharedTx is consumed"),
        }
    }
}

impl std::ops::DerefMut for SharedTx {
    fn deref_mut(&mut self) -> &mut Tx {
        match &mut self.0 {
            Inner::Own(Some(tx)) => tx,
            Inner::Member(Some(m)) => &mut m.open().tx,
            _ => unreachable!("a finished SharedTx is consumed"),
        }
    }
}
