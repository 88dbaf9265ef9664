//! What de-duplication hands the bot: an [`Admission`] for a chat message this process has
//! not seen, which the bot turns into a durable record of the message's callback id in one
//! of two ways, depending on what the message leads to.
//!
//! - Nothing with effects (a read-only command such as `/whoami`, an unknown command, a
//!   refusal, an operator's chatter): [`Admission::record_later`] queues the id for the next
//!   group commit and the bot answers without waiting for any commit. The trade-off: if the
//!   process dies after answering but before the id commits, the platform may retry and get
//!   the same read-only answer twice. That is harmless, and it is what lets the bot answer
//!   at the speed of the CPU instead of the disk's flush rate.
//! - Effects (recording an opt-out, storing feedback, a command whose `has_effects()` is
//!   true): [`Admission::begin`] opens a transaction that holds the id's row; the bot writes
//!   its effects in the same transaction and answers only after it commits. A crash before
//!   the commit leaves neither the id nor the effect, so the platform's retry does the work
//!   once; after the commit, the retry finds the id and does nothing. The database decides
//!   here, not the memory: an id this process forgot (or never saw, after a restart) is
//!   still caught.
//!
//! The in-memory claim is taken at once, so a replay that arrives while the first copy is
//! still being handled is refused; it is released again whenever the work does not happen
//! (a failed transaction, or a request cancelled before the bot decided), so the retry runs.
//! For work without effects the memory is the only check (it holds the last 50,000 ids of
//! the process and is filled from the database on the first callback after a start): a retry of a read-only command
//! older than that is answered again, harmless in the same way as above.

use std::sync::Arc;

use sqlx::{Any, AnyConnection, Transaction};

use super::runtime::InboundRuntime;
use super::store;
use crate::clock::UnixMillis;
use crate::db::Db;

/// A chat message admitted for handling. Dropping it unused (a cancelled request) records
/// nothing and releases the claim.
#[must_use = "record the callback id with `record_later` or `begin`"]
#[derive(Debug)]
pub struct Admission {
    claim: Claim,
}

/// The platform's id for one callback, claimed in this process's memory.
#[derive(Debug)]
pub(crate) struct CallbackId {
    runtime: Arc<InboundRuntime>,
    /// The memory's key, which holds the account and the event id.
    memory_key: Arc<str>,
    account_len: usize,
    received_at: UnixMillis,
}

impl CallbackId {
    fn account(&self) -> &str {
        &self.memory_key[..self.account_len]
    }

    pub(crate) fn event_id(&self) -> &str {
        // The separator is one byte.
        &self.memory_key[self.account_len + 1..]
    }
}

/// A claim that is released when dropped, unless the id was recorded ([`Claim::keep`]).
#[derive(Debug)]
struct Claim(Option<CallbackId>);

impl Claim {
    /// The id, no longer released on drop: its fate is now the caller's.
    fn keep(&mut self) -> Option<CallbackId> {
        self.0.take()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            id.runtime.release(&id.memory_key);
        }
    }
}

impl Admission {
    /// A message without a platform id to de-duplicate (the shell console).
    pub fn unrecorded() -> Self {
        Self { claim: Claim(None) }
    }

    /// Claims `event_id` of `account` in memory; `None` when it was seen recently.
    pub(crate) fn claim(
        runtime: &Arc<InboundRuntime>,
        account: &str,
        event_id: &str,
        received_at: UnixMillis,
    ) -> Option<Self> {
        let memory_key = super::runtime::memory_key(account, event_id);
        if !runtime.claim(&memory_key) {
            return None;
        }
        Some(Self {
            claim: Claim(Some(CallbackId {
                runtime: runtime.clone(),
                memory_key,
                account_len: account.len(),
                received_at,
            })),
        })
    }

    /// For a message that leads to nothing with effects: queues the id for the next group
    /// commit and returns without waiting for it (see the module's note on the trade-off).
    pub async fn record_later(mut self, db: &Db) {
        let Some(id) = self.claim.keep() else { return };
        let row = store::event_row(id.account(), id.event_id(), id.received_at);
        if let Err(error) = db.grouped().queue(row).await {
            tracing::error!(%error, inbound.account = %id.account(), "cannot queue a callback id; a retry of this message would be answered again");
        }
    }

    /// For a message that leads to nothing with effects and whose caller queues a row of its
    /// own that carries the id (the audit row of a read-only command, see
    /// `bot::store::queue_audit`): one row per message instead of two. The claim is kept, as
    /// with [`Admission::record_later`]. `None` for an unrecorded admission.
    pub(crate) fn into_recorded_in_audit(mut self) -> Option<CallbackId> {
        self.claim.keep()
    }

    /// For a message that leads to effects: a transaction that already holds the id's row,
    /// for the caller to write its effects in and commit. `Ok(None)` when the database has
    /// the id already (a retry this process did not remember): do nothing and answer
    /// nothing. An unrecorded admission gets a plain transaction. On an error the claim is
    /// released, so the platform's retry is handled.
    pub async fn begin(mut self, db: &Db) -> Result<Option<Effects>, sqlx::Error> {
        let mut tx = db.writer().begin().await?;
        let Some(id) = &self.claim.0 else {
            return Ok(Some(Effects {
                tx,
                claim: Claim(None),
            }));
        };
        if store::insert_event(&mut tx, id.account(), id.event_id(), id.received_at).await? {
            Ok(Some(Effects {
                tx,
                claim: Claim(self.claim.keep()),
            }))
        } else {
            // Known to the database: this really is a duplicate, so the claim stays.
            self.claim.keep();
            Ok(None)
        }
    }
}

/// An open transaction holding a message's callback id, for the effects of handling it.
/// Only database writes belong inside (the SQLite writer is held until the commit): work
/// with outside effects goes through the outbox, which is itself a write here. Dropped
/// without [`Effects::commit`], everything is rolled back and the id's claim released.
#[derive(Debug)]
pub struct Effects {
    tx: Transaction<'static, Any>,
    claim: Claim,
}

impl Effects {
    /// The connection the effects are written on (a nested transaction on it is a
    /// savepoint).
    pub fn connection(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits the id and the effects together; on an error neither is kept and the
    /// claim is released.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Effects { tx, mut claim } = self;
        tx.commit().await?;
        claim.keep();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;

    async fn count(db: &Db, table: &str) -> i64 {
        db.grouped().flush().await.unwrap();
        let (rows,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(db.reader())
            .await
            .unwrap();
        rows
    }

    async fn write_feedback(effects: &mut Effects, text: &str) {
        sqlx::query(
            "INSERT INTO feedback (platform, account, chat, user_id, text, received_at) \
             VALUES ('p', 'a', 'c', 'u', $1, 1)",
        )
        .bind(text)
        .execute(effects.connection())
        .await
        .unwrap();
    }

    fn claim(runtime: &Arc<InboundRuntime>, id: &str) -> Option<Admission> {
        Admission::claim(runtime, "acct", id, 1)
    }

    async fn effects_commit_with_their_id_or_not_at_all(db: &Db) {
        let runtime = Arc::new(InboundRuntime::default());
        let admission = claim(&runtime, "m-1").unwrap();
        assert!(claim(&runtime, "m-1").is_none(), "claimed at once");
        let mut effects = admission.begin(db).await.unwrap().unwrap();
        write_feedback(&mut effects, "lost").await;
        drop(effects); // The process died before the commit.
        assert_eq!(count(db, "feedback").await, 0);
        assert_eq!(count(db, "inbound_events").await, 0);

        let retry = claim(&runtime, "m-1").expect("the claim was released");
        let mut effects = retry.begin(db).await.unwrap().unwrap();
        write_feedback(&mut effects, "kept").await;
        // A failing part of the work is undone by its savepoint, the rest stays.
        let mut savepoint = sqlx::Connection::begin(effects.connection()).await.unwrap();
        sqlx::query("DELETE FROM feedback")
            .execute(&mut *savepoint)
            .await
            .unwrap();
        savepoint.rollback().await.unwrap();
        effects.commit().await.unwrap();
        assert_eq!(count(db, "feedback").await, 1);

        // Another process (or this one after a restart) that does not remember the id.
        let other = Arc::new(InboundRuntime::default());
        let again = claim(&other, "m-1").expect("not in that memory");
        assert!(
            again.begin(db).await.unwrap().is_none(),
            "the database knows"
        );
        assert!(
            claim(&other, "m-1").is_none(),
            "and now that memory does too"
        );

        claim(&runtime, "m-2").unwrap().record_later(db).await;
        assert_eq!(count(db, "inbound_events").await, 2, "queued, then flushed");
        assert_eq!(count(db, "feedback").await, 1);
    }

    #[tokio::test]
    async fn effects_commit_with_their_id_or_not_at_all_on_sqlite() {
        let test_db = TestDb::sqlite().await.unwrap();
        effects_commit_with_their_id_or_not_at_all(&test_db.db).await;
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn effects_commit_with_their_id_or_not_at_all_on_postgres() {
        let Some(test_db) = TestDb::postgres().await.unwrap() else {
            return;
        };
        effects_commit_with_their_id_or_not_at_all(&test_db.db).await;
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn an_unrecorded_admission_still_gets_a_transaction() {
        let test_db = TestDb::sqlite().await.unwrap();
        let mut effects = Admission::unrecorded()
            .begin(&test_db.db)
            .await
            .unwrap()
            .unwrap();
        write_feedback(&mut effects, "from the shell").await;
        effects.commit().await.unwrap();
        assert_eq!(count(&test_db.db, "feedback").await, 1);
        assert_eq!(count(&test_db.db, "inbound_events").await, 0);
        test_db.cleanup().await.unwrap();
    }
}
