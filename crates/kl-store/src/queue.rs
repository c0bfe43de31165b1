//! The embedded event broker: the durable delivery queue of `kl_events::Broker` in the metadata
//! store, so one machine needs no message broker. A lease is a postponement of the row's due
//! time, so a receiver that dies (or a server SIGKILLed mid-delivery) loses nothing: the row
//! is simply due again when the lease ends, and at once after a restart. It runs on whichever
//! database the store does (the name is from its first one).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kl_events::broker::due_after;
use kl_events::{Broker, BrokerError, CloudEvent, DeadLetter, Delivery, NewDelivery, Receipt};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::dialect::Backend;
use crate::{Store, StoreError, parse_time};

/// The `kl_events::Broker` over the metadata store; cheap to clone. One per server process:
/// its wake-ups are in memory, and opening it reclaims every lease.
#[derive(Clone)]
pub struct SqliteBroker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    lease: Duration,
    /// Wakes parked receivers when a delivery becomes due earlier than they planned:
    /// an enqueue, a retry or a replay.
    wake: Notify,
}

/// What a receipt holds: the token of the receive that leased the row.
struct Lease(String);

const BACKEND: &str = "metadata store";

/// Columns of a dead-letter query; a macro so `concat!` keeps the SQL a `&'static str`.
macro_rules! dead_letter_select {
    () => {
        "SELECT id, tenant, subscriber, event, attempt, reason, enqueued_at, dead_at FROM event_dead_letters"
    };
}

impl SqliteBroker {
    /// The broker over `store`. `lease` is how long a received delivery stays with its
    /// receiver before it is due again: longer than the longest delivery attempt. Leases
    /// left by a previous run of the server are reclaimed here, since that run is gone.
    pub async fn open(store: &Store, lease: Duration) -> Result<SqliteBroker, StoreError> {
        let reclaimed = sqlx::query(
            "UPDATE event_deliveries SET lease = NULL, \
             due_at = CASE WHEN due_at < $1 THEN due_at ELSE $1 END WHERE lease IS NOT NULL",
        )
        .bind(micros(Utc::now()))
        .execute(&store.pool)
        .await?
        .rows_affected();
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                "event deliveries leased by a previous run are due again"
            );
        }
        Ok(SqliteBroker {
            inner: Arc::new(Inner {
                store: store.clone(),
                lease,
                wake: Notify::new(),
            }),
        })
    }

    /// Leases up to `max` due rows in one statement, so concurrent receivers never share one.
    /// SQLite runs one writer at a time; PostgreSQL runs them side by side, so there the rows
    /// are picked `FOR UPDATE SKIP LOCKED`: a row another receiver is leasing is skipped, not
    /// waited for and then leased a second time.
    async fn lease_due(&self, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        macro_rules! lease_due {
            ($lock:literal) => {
                concat!(
                    "UPDATE event_deliveries SET lease = $1, due_at = $2 WHERE seq IN \
                     (SELECT seq FROM event_deliveries WHERE due_at <= $3 ORDER BY due_at, seq LIMIT $4",
                    $lock,
                    ") RETURNING id, tenant, subscriber, event, attempt, enqueued_at"
                )
            };
        }
        let sql = match self.inner.store.backend {
            Backend::Sqlite => lease_due!(""),
            Backend::Postgres => lease_due!(" FOR UPDATE SKIP LOCKED"),
        };
        let now = Utc::now();
        let token = uuid::Uuid::new_v4().to_string();
        let rows = sqlx::query(sql)
            .bind(&token)
            .bind(micros(due_after(now, self.inner.lease)))
            .bind(micros(now))
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.store.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| delivery_from_row(r, &token)).collect()
    }

    /// When the next row falls due, if any: a parked receiver sleeps until then at most.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, BrokerError> {
        let due: Option<i64> = sqlx::query_scalar("SELECT MIN(due_at) FROM event_deliveries")
            .fetch_one(&self.inner.store.pool)
            .await
            .map_err(db)?;
        Ok(due.and_then(DateTime::from_timestamp_micros))
    }
}

#[async_trait]
impl Broker for SqliteBroker {
    async fn enqueue(&self, batch: Vec<NewDelivery>) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let rows = batch
            .iter()
            .map(|d| serde_json::to_string(&d.event).map_err(|e| BrokerError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let now = Utc::now();
        let mut conn = self.inner.store.pool.acquire().await.map_err(db)?;
        // "Accepted means persisted". PostgreSQL commits durably as configured (by default
        // synchronous_commit=on). SQLite runs synchronous=NORMAL here, whose WAL commits
        // survive a crash of the process but not of the machine; an accepted event must
        // survive both, so this one commit syncs the WAL, and the connection goes back to the
        // store's setting afterwards (left FULL after an error: slower, never less safe).
        let sqlite_synchronous = match self.inner.store.backend {
            Backend::Sqlite => {
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                Some(synchronous)
            }
            Backend::Postgres => None,
        };
        let mut tx = conn.begin().await.map_err(db)?;
        for (d, event) in batch.iter().zip(rows) {
            sqlx::query(
                "INSERT INTO event_deliveries (id, tenant, subscriber, event, attempt, enqueued_at, due_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&d.tenant)
            .bind(&d.subscriber)
            .bind(event)
            .bind(now.to_rfc3339())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if let Some(synchronous) = sqlite_synchronous {
            // An integer SQLite itself returned: nothing to inject.
            sqlx::query(AssertSqlSafe(format!("PRAGMA synchronous = {synchronous}")))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so an enqueue between the look and the sleep wakes us.
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let leased = self.lease_due(max).await?;
            if !leased.is_empty() || max == 0 || Instant::now() >= deadline {
                return Ok(leased);
            }
            let until = match self.next_due().await? {
                Some(due) => {
                    let in_ = (due - Utc::now()).to_std().unwrap_or_default();
                    deadline.min(Instant::now() + in_)
                }
                None => deadline,
            };
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, delivery: Delivery) -> Result<(), BrokerError> {
        let Lease(token) = delivery.receipt.into_lease(&delivery.id)?;
        let done = sqlx::query("DELETE FROM event_deliveries WHERE id = $1 AND lease = $2")
            .bind(&delivery.id)
            .bind(token)
            .execute(&self.inner.store.pool)
            .await
            .map_err(db)?;
        settled(done.rows_affected(), &delivery.id)
    }

    async fn retry(&self, delivery: Delivery, after: Duration) -> Result<(), BrokerError> {
        let Lease(token) = delivery.receipt.into_lease(&delivery.id)?;
        let done = sqlx::query(
            "UPDATE event_deliveries SET attempt = attempt + 1, due_at = $1, lease = NULL \
             WHERE id = $2 AND lease = $3",
        )
        .bind(micros(due_after(Utc::now(), after)))
        .bind(&delivery.id)
        .bind(token)
        .execute(&self.inner.store.pool)
        .await
        .map_err(db)?;
        settled(done.rows_affected(), &delivery.id)?;
        // Parked receivers may be sleeping past the new due time.
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Result<(), BrokerError> {
        let Lease(token) = delivery.receipt.into_lease(&delivery.id)?;
        let mut tx = self.inner.store.begin_write().await.map_err(store_db)?;
        // Taken off the queue first, under its lease, then filed: a lease lost meanwhile
        // leaves the row with its new holder and files nothing.
        let row = sqlx::query(
            "DELETE FROM event_deliveries WHERE id = $1 AND lease = $2 \
             RETURNING tenant, subscriber, event, attempt, enqueued_at",
        )
        .bind(&delivery.id)
        .bind(&token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| BrokerError::LeaseLost {
            id: delivery.id.clone(),
        })?;
        sqlx::query(
            "INSERT INTO event_dead_letters (id, tenant, subscriber, event, attempt, reason, enqueued_at, dead_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&delivery.id)
        .bind(row.try_get::<String, _>("tenant").map_err(db)?)
        .bind(row.try_get::<String, _>("subscriber").map_err(db)?)
        .bind(row.try_get::<String, _>("event").map_err(db)?)
        .bind(row.try_get::<i64, _>("attempt").map_err(db)?)
        .bind(reason)
        .bind(row.try_get::<String, _>("enqueued_at").map_err(db)?)
        .bind(Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let rows = sqlx::query(concat!(
            dead_letter_select!(),
            " WHERE tenant = $1 ORDER BY rowid LIMIT $2"
        ))
        .bind(tenant)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.store.pool)
        .await
        .map_err(db)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn find_dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>, BrokerError> {
        let row = sqlx::query(concat!(dead_letter_select!(), " WHERE tenant = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.inner.store.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(dead_letter_from_row).transpose()
    }

    async fn replay(&self, tenant: &str, id: &str) -> Result<(), BrokerError> {
        let now = Utc::now();
        let mut tx = self.inner.store.begin_write().await.map_err(store_db)?;
        let row = sqlx::query(
            "DELETE FROM event_dead_letters WHERE tenant = $1 AND id = $2 RETURNING subscriber, event",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| BrokerError::NotFound {
            tenant: tenant.into(),
            id: id.into(),
        })?;
        sqlx::query(
            "INSERT INTO event_deliveries (id, tenant, subscriber, event, attempt, enqueued_at, due_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $6)",
        )
        .bind(id)
        .bind(tenant)
        .bind(row.try_get::<String, _>("subscriber").map_err(db)?)
        .bind(row.try_get::<String, _>("event").map_err(db)?)
        .bind(now.to_rfc3339())
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.inner.wake.notify_waiters();
        Ok(())
    }
}

fn db(e: sqlx::Error) -> BrokerError {
    BrokerError::backend(BACKEND, e)
}

fn store_db(e: StoreError) -> BrokerError {
    BrokerError::backend(BACKEND, e)
}

/// A settlement touched its row, or the lease was lost to expiry (and maybe another receiver).
fn settled(rows: u64, id: &str) -> Result<(), BrokerError> {
    if rows == 0 {
        return Err(BrokerError::LeaseLost { id: id.into() });
    }
    Ok(())
}

/// Unix microseconds: due times are compared in SQL, so they are plain integers.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn event_from_row(r: &AnyRow, id: &str) -> Result<CloudEvent, BrokerError> {
    let event: String = r.try_get("event").map_err(db)?;
    serde_json::from_str(&event).map_err(|e| BrokerError::Corrupt {
        id: id.into(),
        reason: format!("stored event: {e}"),
    })
}

fn attempt_from_row(r: &AnyRow) -> Result<u32, BrokerError> {
    let attempt: i64 = r.try_get("attempt").map_err(db)?;
    Ok(u32::try_from(attempt).unwrap_or(u32::MAX))
}

fn delivery_from_row(r: &AnyRow, token: &str) -> Result<Delivery, BrokerError> {
    let id: String = r.try_get("id").map_err(db)?;
    Ok(Delivery {
        event: event_from_row(r, &id)?,
        tenant: r.try_get("tenant").map_err(db)?,
        subscriber: r.try_get("subscriber").map_err(db)?,
        attempt: attempt_from_row(r)?,
        enqueued_at: parse_time(r.try_get("enqueued_at").map_err(db)?),
        receipt: Receipt::new(Lease(token.into())),
        id,
    })
}

fn dead_letter_from_row(r: &AnyRow) -> Result<DeadLetter, BrokerError> {
    let id: String = r.try_get("id").map_err(db)?;
    Ok(DeadLetter {
        event: event_from_row(r, &id)?,
        tenant: r.try_get("tenant").map_err(db)?,
        subscriber: r.try_get("subscriber").map_err(db)?,
        attempt: attempt_from_row(r)?,
        reason: r.try_get("reason").map_err(db)?,
        enqueued_at: parse_time(r.try_get("enqueued_at").map_err(db)?),
        dead_at: parse_time(r.try_get("dead_at").map_err(db)?),
        id,
    })
}
