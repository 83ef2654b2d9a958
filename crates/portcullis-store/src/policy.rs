//! Suppressions, consent records and policy events: the inputs and the record of the
//! responsible-messaging guard. Every function is scoped to one app.

use portcullis_domain::{
    AppId, Channel, ConsentId, E164, EventId, MessageId, SuppressionId, TenantId,
};
use std::collections::HashMap;

use portcullis_domain::policy::{Counters, Standing};
use portcullis_domain::quota::QuotaUsage;
use sqlx::QueryBuilder;

use crate::guard::{Counter, CounterKeys, CounterValues};
use crate::{
    Cursor, Page, ReadVia, Store, StoreError, Tx, found, now_ms, on_pool, on_read, on_tx, paginate,
    push_cursor,
};

const SUPPRESSION_PHONE: &str = "suppressions.phone";
const CONSENT_PHONE: &str = "consents.phone";
const CONSENT_PROOF: &str = "consents.proof";
const EVENT_PHONE: &str = "policy_events.phone";

#[derive(Debug, Clone)]
pub struct Suppression {
    pub id: SuppressionId,
    pub app_id: AppId,
    pub phone: E164,
    pub reason: Option<String>,
    /// `api`, `inbound_keyword`, …
    pub source: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewConsent {
    pub phone: E164,
    pub channel: Channel,
    /// `transactional` or `marketing`.
    pub scope: String,
    pub source: String,
    pub proof: String,
    pub ip: Option<String>,
    pub double_opt_in: bool,
}

#[derive(Debug, Clone)]
pub struct Consent {
    pub id: ConsentId,
    pub app_id: AppId,
    pub phone: E164,
    pub channel: Channel,
    pub scope: String,
    pub source: String,
    pub proof: String,
    pub ip: Option<String>,
    pub double_opt_in: bool,
    pub created_at: i64,
}

/// A decision of the guard worth recording.
#[derive(Debug, Clone)]
pub struct NewPolicyEvent {
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub message_id: Option<MessageId>,
    pub phone: Option<E164>,
    /// `refused`, `deferred`, `held`, `allowed_exempt`, `opted_out`, `opted_in`, `possible_opt_out`.
    pub kind: String,
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct PolicyEvent {
    pub id: EventId,
    pub app_id: AppId,
    pub message_id: Option<MessageId>,
    pub phone: Option<E164>,
    pub kind: String,
    pub code: String,
    pub reason: String,
    pub created_at: i64,
}

/// What the guard knows about one recipient of one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientState {
    pub suppressed: bool,
    /// Consent scopes on record, as `channel:scope` (`sms:marketing`).
    pub consent_scopes: Vec<String>,
}

impl RecipientState {
    /// The domain's view, for one channel.
    pub fn standing(&self, channel: Channel) -> Standing {
        let has = |scope: &str| {
            self.consent_scopes.iter().any(|s| {
                s.strip_prefix(channel.as_str())
                    .and_then(|r| r.strip_prefix(':'))
                    == Some(scope)
            })
        };
        Standing {
            suppressed: self.suppressed,
            transactional_consent: has("transactional"),
            marketing_consent: has("marketing"),
        }
    }
}

/// What [`Store::guard_snapshots`] read, keyed by blind index (recipients) and counter key.
#[derive(Debug, Clone, Default)]
pub struct GuardSnapshots {
    pub recipients: HashMap<String, RecipientState>,
    /// Non-essential messages today, for the recipients that were counted.
    pub today: HashMap<String, u32>,
    pub counters: CounterValues,
}

/// What the guard knows before accepting one message.
#[derive(Debug, Clone, Default)]
pub struct GuardSnapshot {
    pub recipient: RecipientState,
    /// Non-essential messages to the recipient today (0 when not counted).
    pub recipient_today: u32,
    /// The app's counters, shared by the snapshots of one read.
    pub counters: std::sync::Arc<CounterValues>,
}

impl GuardSnapshot {
    /// The counters in the domain's terms.
    pub fn counters(&self, keys: &CounterKeys) -> Counters {
        let get =
            |c: &crate::guard::Counter| self.counters.get(&c.key).copied().unwrap_or(0).max(0);
        let small = |c: &crate::guard::Counter| u32::try_from(get(c)).unwrap_or(u32::MAX);
        Counters {
            quota: QuotaUsage {
                app_day: get(&keys.app_day) as u64,
                app_month: get(&keys.app_month) as u64,
                tenant_day: get(&keys.tenant_day) as u64,
                tenant_month: get(&keys.tenant_month) as u64,
            },
            recipient_today: self.recipient_today,
            app_this_minute: small(&keys.app_minute),
            app_previous_hour: small(&keys.app_previous_hour),
            high_risk_this_hour: small(&keys.high_risk_hour),
            invalid_failures_this_hour: small(&keys.invalid_hour),
        }
    }
}

impl Store {
    /// Suppresses a recipient for an app (all its senders and channels). Suppressing an
    /// already suppressed recipient returns the existing record.
    pub async fn suppress(
        &self,
        tx: &mut Tx,
        tenant: &TenantId,
        app: &AppId,
        phone: &E164,
        reason: Option<&str>,
        source: &str,
    ) -> Result<(Suppression, bool), StoreError> {
        let id = SuppressionId::new();
        let now = now_ms();
        let index = self.phone_index(phone);
        let inserted = on_tx!(&mut *tx, |c| {
            sqlx::query(
            "INSERT INTO suppressions (id, tenant_id, app_id, phone_sealed, phone_index, reason, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (app_id, phone_index) DO NOTHING"
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(app.as_str())
        .bind(self.seal(SUPPRESSION_PHONE, id.as_str(), phone.as_str().as_bytes()))
        .bind(&index)
        .bind(reason)
        .bind(source)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })? == 1;
        let row: (String, Option<String>, String, i64) = on_tx!(&mut *tx, |c| {
            sqlx::query_as(
            "SELECT id, reason, source, created_at FROM suppressions WHERE app_id = $1 AND phone_index = $2"
        )
        .bind(app.as_str())
        .bind(&index)
        .fetch_one(c)
        .await
        })?;
        Ok((
            Suppression {
                id: SuppressionId::from_trusted(row.0),
                app_id: app.clone(),
                phone: phone.clone(),
                reason: row.1,
                source: row.2,
                created_at: row.3,
            },
            inserted,
        ))
    }

    /// Lifts a suppression by recipient (an opt-in). Returns whether one existed.
    pub async fn unsuppress_phone(
        &self,
        tx: &mut Tx,
        app: &AppId,
        phone: &E164,
    ) -> Result<bool, StoreError> {
        let index = self.phone_index(phone);
        let n = on_tx!(tx, |c| sqlx::query(
            "DELETE FROM suppressions WHERE app_id = $1 AND phone_index = $2"
        )
        .bind(app.as_str())
        .bind(&index)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Deletes a suppression by id.
    pub async fn delete_suppression(
        &self,
        app: &AppId,
        id: &SuppressionId,
    ) -> Result<(), StoreError> {
        let n = on_pool!(self.db.write(), |p| sqlx::query(
            "DELETE FROM suppressions WHERE app_id = $1 AND id = $2"
        )
        .bind(app.as_str())
        .bind(id.as_str())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn list_suppressions(
        &self,
        app: &AppId,
        phone: Option<&E164>,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<Suppression>, StoreError> {
        type Row = (String, Vec<u8>, Option<String>, String, i64);
        let index = phone.map(|p| self.phone_index(p));
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(
                "SELECT id, phone_sealed, reason, source, created_at FROM suppressions WHERE app_id = ",
            );
            qb.push_bind(app.as_str());
            if let Some(ix) = &index {
                qb.push(" AND phone_index = ").push_bind(ix.as_str());
            }
            push_cursor(&mut qb, "created_at", cursor);
            qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            qb.build_query_as().fetch_all(p).await
        })?;
        let items = rows
            .into_iter()
            .map(|(id, sealed, reason, source, created_at)| {
                Ok(Suppression {
                    phone: E164::from_trusted(self.open_string(SUPPRESSION_PHONE, &id, &sealed)?),
                    id: SuppressionId::from_trusted(id),
                    app_id: app.clone(),
                    reason,
                    source,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(paginate(items, limit, |s| Cursor {
            at: s.created_at,
            id: s.id.as_str().to_owned(),
        }))
    }

    /// Records a consent.
    pub async fn create_consent(
        &self,
        tenant: &TenantId,
        app: &AppId,
        c: &NewConsent,
    ) -> Result<Consent, StoreError> {
        let id = ConsentId::new();
        let now = now_ms();
        on_pool!(self.db.write(), |p| {
            sqlx::query(
            "INSERT INTO consents (id, tenant_id, app_id, phone_sealed, phone_index, channel, scope, source, \
             proof_sealed, ip, double_opt_in, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(app.as_str())
        .bind(self.seal(CONSENT_PHONE, id.as_str(), c.phone.as_str().as_bytes()))
        .bind(self.phone_index(&c.phone))
        .bind(c.channel.as_str())
        .bind(&c.scope)
        .bind(&c.source)
        .bind(self.seal(CONSENT_PROOF, id.as_str(), c.proof.as_bytes()))
        .bind(c.ip.as_deref())
        .bind(i64::from(c.double_opt_in))
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(Consent {
            id,
            app_id: app.clone(),
            phone: c.phone.clone(),
            channel: c.channel,
            scope: c.scope.clone(),
            source: c.source.clone(),
            proof: c.proof.clone(),
            ip: c.ip.clone(),
            double_opt_in: c.double_opt_in,
            created_at: now,
        })
    }

    /// The consents on record for a recipient of an app (revoked ones excluded).
    pub async fn consents_for(
        &self,
        app: &AppId,
        phone: &E164,
    ) -> Result<Vec<Consent>, StoreError> {
        type Row = (
            String,
            Vec<u8>,
            String,
            String,
            String,
            Vec<u8>,
            Option<String>,
            i64,
            i64,
        );
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| {
            sqlx::query_as(
            "SELECT id, phone_sealed, channel, scope, source, proof_sealed, ip, double_opt_in, created_at \
             FROM consents WHERE app_id = $1 AND phone_index = $2 AND revoked_at IS NULL ORDER BY created_at DESC, id DESC"
        )
        .bind(app.as_str())
        .bind(self.phone_index(phone))
        .fetch_all(p)
        .await
        })?;
        rows.into_iter()
            .map(
                |(id, phone_sealed, channel, scope, source, proof, ip, double, created_at)| {
                    Ok(Consent {
                        phone: E164::from_trusted(self.open_string(
                            CONSENT_PHONE,
                            &id,
                            &phone_sealed,
                        )?),
                        proof: self.open_string(CONSENT_PROOF, &id, &proof)?,
                        id: ConsentId::from_trusted(id),
                        app_id: app.clone(),
                        channel: Channel::parse(&channel).map_err(StoreError::corrupt)?,
                        scope,
                        source,
                        ip,
                        double_opt_in: double != 0,
                        created_at,
                    })
                },
            )
            .collect()
    }

    /// Revokes a consent (kept, with its proof, as evidence of what was on record when).
    pub async fn revoke_consent(&self, app: &AppId, id: &ConsentId) -> Result<(), StoreError> {
        let n = on_pool!(self.db.write(), |p| {
            sqlx::query(
            "UPDATE consents SET revoked_at = $1 WHERE app_id = $2 AND id = $3 AND revoked_at IS NULL"
        )
        .bind(now_ms())
        .bind(app.as_str())
        .bind(id.as_str())
        .execute(p)
        .await
        .map(|r| r.rows_affected())
        })?;
        found(n)
    }

    /// Everything the guard reads before accepting messages of one app, for many messages
    /// in one round trip: each recipient's suppression and consents, today's non-essential
    /// messages to those recipients that need counting (`count_since`: the scan of the
    /// batch), and the app's counters. Recipients are given, and the answer keyed, by
    /// blind index ([`Store::phone_index`]: the caller works it out once and looks its
    /// answer up with it); `recipients` must not be empty. `via`: the batched guard
    /// readers hold their connection.
    pub async fn guard_snapshots(
        &self,
        via: ReadVia<'_>,
        app: &AppId,
        recipients: &[(&str, bool)],
        count_since: i64,
        counters: &[&Counter],
    ) -> Result<GuardSnapshots, StoreError> {
        let indexes: Vec<&str> = recipients.iter().map(|(ix, _)| *ix).collect();
        let counted: Vec<&str> = recipients
            .iter()
            .filter(|(_, count)| *count)
            .map(|(ix, _)| *ix)
            .collect();
        let rows: Vec<(String, String, Option<String>, i64)> = on_read!(via, |p| {
            let mut qb = QueryBuilder::new(
                "SELECT 'suppressed', phone_index, NULL, CAST(0 AS BIGINT) FROM suppressions WHERE app_id = ",
            );
            qb.push_bind(app.as_str()).push(" AND phone_index IN (");
            let mut sep = qb.separated(", ");
            for ix in &indexes {
                sep.push_bind(*ix);
            }
            qb.push(") UNION ALL SELECT 'consent', phone_index, channel || ':' || scope, CAST(0 AS BIGINT) FROM consents WHERE app_id = ")
                .push_bind(app.as_str())
                .push(" AND revoked_at IS NULL AND phone_index IN (");
            let mut sep = qb.separated(", ");
            for ix in &indexes {
                sep.push_bind(*ix);
            }
            qb.push(")");
            if !counted.is_empty() {
                qb.push(" UNION ALL SELECT 'recipient', recipient_index, NULL, COUNT(*) FROM messages WHERE app_id = ")
                    .push_bind(app.as_str())
                    .push(" AND created_at >= ")
                    .push_bind(count_since)
                    .push(" AND purpose IN ('notification', 'support', 'marketing') AND recipient_index IN (");
                let mut sep = qb.separated(", ");
                for ix in &counted {
                    sep.push_bind(*ix);
                }
                qb.push(") GROUP BY recipient_index");
            }
            if !counters.is_empty() {
                qb.push(" UNION ALL SELECT 'usage', key, NULL, count FROM usage_counters WHERE key IN (");
                let mut sep = qb.separated(", ");
                for c in counters {
                    sep.push_bind(c.key.as_str());
                }
                qb.push(")");
            }
            qb.build_query_as().fetch_all(p).await
        })?;
        let mut snap = GuardSnapshots::default();
        for (kind, key, text, n) in rows {
            match kind.as_str() {
                "suppressed" => snap.recipients.entry(key).or_default().suppressed = true,
                "consent" => {
                    if let Some(scope) = text {
                        snap.recipients
                            .entry(key)
                            .or_default()
                            .consent_scopes
                            .push(scope);
                    }
                }
                "recipient" => {
                    snap.today.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
                }
                "usage" => {
                    snap.counters.insert(key, n);
                }
                _ => {}
            }
        }
        Ok(snap)
    }

    /// Records policy events inside the caller's transaction.
    pub async fn insert_policy_events(
        &self,
        tx: &mut Tx,
        events: &[NewPolicyEvent],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        for e in events {
            let id = EventId::new();
            on_tx!(&mut *tx, |c| {
                sqlx::query(
                "INSERT INTO policy_events (id, tenant_id, app_id, message_id, phone_sealed, phone_index, kind, code, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )
            .bind(id.as_str())
            .bind(e.tenant_id.as_str())
            .bind(e.app_id.as_str())
            .bind(e.message_id.as_ref().map(|m| m.as_str()))
            .bind(e.phone.as_ref().map(|p| self.seal(EVENT_PHONE, id.as_str(), p.as_str().as_bytes())))
            .bind(e.phone.as_ref().map(|p| self.phone_index(p)))
            .bind(&e.kind)
            .bind(&e.code)
            .bind(&e.reason)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }

    pub async fn list_policy_events(
        &self,
        app: &AppId,
        filter: &PolicyEventFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<PolicyEvent>, StoreError> {
        type Row = (
            String,
            Option<String>,
            Option<Vec<u8>>,
            String,
            String,
            String,
            i64,
        );
        let phone_index = filter.phone.as_ref().map(|p| self.phone_index(p));
        let rows: Vec<Row> = on_pool!(self.db.read(), |p| {
            let mut qb = QueryBuilder::new(
                "SELECT id, message_id, phone_sealed, kind, code, reason, created_at FROM policy_events WHERE app_id = ",
            );
            qb.push_bind(app.as_str());
            if let Some(k) = &filter.kind {
                qb.push(" AND kind = ").push_bind(k.as_str());
            }
            if let Some(c) = &filter.code {
                qb.push(" AND code = ").push_bind(c.as_str());
            }
            if let Some(m) = &filter.message_id {
                qb.push(" AND message_id = ").push_bind(m.as_str());
            }
            if let Some(ix) = &phone_index {
                qb.push(" AND phone_index = ").push_bind(ix.as_str());
            }
            if let Some(t) = filter.since {
                qb.push(" AND created_at >= ").push_bind(t);
            }
            if let Some(t) = filter.until {
                qb.push(" AND created_at < ").push_bind(t);
            }
            push_cursor(&mut qb, "created_at", cursor);
            qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit) + 1);
            qb.build_query_as().fetch_all(p).await
        })?;
        let items = rows
            .into_iter()
            .map(|(id, message_id, phone, kind, code, reason, created_at)| {
                Ok(PolicyEvent {
                    phone: match phone {
                        Some(s) => Some(E164::from_trusted(self.open_string(
                            EVENT_PHONE,
                            &id,
                            &s,
                        )?)),
                        None => None,
                    },
                    id: EventId::from_trusted(id),
                    app_id: app.clone(),
                    message_id: message_id.map(MessageId::from_trusted),
                    kind,
                    code,
                    reason,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(paginate(items, limit, |e| Cursor {
            at: e.created_at,
            id: e.id.as_str().to_owned(),
        }))
    }
}

/// Filters of [`Store::list_policy_events`].
#[derive(Debug, Default, Clone)]
pub struct PolicyEventFilter {
    pub kind: Option<String>,
    pub code: Option<String>,
    pub message_id: Option<MessageId>,
    /// Events about this recipient (matched by blind index).
    pub phone: Option<E164>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
}
