//! The connection to RabbitMQ and its recovery. A [`Session`] is one connection with its
//! publishing channel and (once something receives) its consuming channel; when it breaks
//! (the broker restarts, the network drops) the next operation opens a new one with backoff,
//! declares the topology again, and the consumer starts over. Deliveries received on the old
//! session are then void: RabbitMQ requeued them when their channel closed.
//!
//! Recovery is ours rather than lapin's automatic one so that a lease can never be settled on
//! a connection other than the one that leased it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use super::topology::{self, Names};
use crate::broker::BrokerError;

pub(super) const BACKEND: &str = "rabbitmq";

/// First pause between reconnection attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a graceful close of a connection being replaced.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// An operation's failure: on the wire (retried on a new session while the connection is
/// broken) or decided (returned as is).
pub(super) enum OpError {
    Amqp(lapin::Error),
    Broker(BrokerError),
}

impl From<lapin::Error> for OpError {
    fn from(e: lapin::Error) -> OpError {
        OpError::Amqp(e)
    }
}

impl From<BrokerError> for OpError {
    fn from(e: BrokerError) -> OpError {
        OpError::Broker(e)
    }
}

pub(super) fn backend(e: lapin::Error) -> BrokerError {
    BrokerError::backend(BACKEND, e)
}

/// One connection and what was set up on it.
pub(super) struct Session {
    generation: u64,
    connection: Connection,
    /// Publishes with confirms, shared by every publisher.
    publisher: Channel,
    /// The work-queue consumer, started by the first receive; one receiver drains it at a time.
    pub consumer: Mutex<Option<Consumer>>,
    /// Delay queues (by TTL) and tenants' dead-letter queues declared on this session.
    declared_delays: SyncMutex<HashSet<u64>>,
    declared_dead: SyncMutex<HashSet<String>>,
}

impl Session {
    async fn open(url: &str, names: &Names, generation: u64) -> lapin::Result<Session> {
        let properties =
            ConnectionProperties::default().with_connection_name(format!("kl {}", names.prefix()).into());
        let connection = Connection::connect(url, properties).await?;
        let publisher = connection.create_channel().await?;
        topology::declare(&publisher, names).await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Session {
            generation,
            connection,
            publisher,
            consumer: Mutex::new(None),
            declared_delays: SyncMutex::default(),
            declared_dead: SyncMutex::default(),
        })
    }

    /// Whether the connection and the publishing channel still work.
    pub fn alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// A consumer of the work queue with at most `prefetch` unacknowledged deliveries.
    pub async fn consume(&self, names: &Names, prefetch: u16) -> lapin::Result<Consumer> {
        let channel = self.connection.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let tag = format!("kl-{}", uuid::Uuid::new_v4());
        channel
            .basic_consume(
                names.work_queue(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// A channel for a one-off job (scanning a dead-letter queue), whose failure must not
    /// break the session.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
    }

    /// Publishes the messages and waits for every confirm (they are pipelined, not one
    /// round trip each). `mandatory`, so a message no queue takes is an error, not dropped.
    pub async fn publish(
        &self,
        exchange: ShortString,
        messages: Vec<(ShortString, Vec<u8>, BasicProperties)>,
    ) -> Result<(), OpError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for (routing_key, body, properties) in messages {
            let confirm = self
                .publisher
                .basic_publish(
                    exchange.clone(),
                    routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    properties,
                )
                .await?;
            confirms.push((routing_key, confirm));
        }
        for (routing_key, confirm) in confirms {
            confirmed(confirm.await?, &exchange, &routing_key)?;
        }
        Ok(())
    }

    /// Declares the delay queue of `ttl_ms` unless this session already did.
    pub async fn ensure_delay(&self, names: &Names, ttl_ms: u64) -> lapin::Result<()> {
        if lock(&self.declared_delays).contains(&ttl_ms) {
            return Ok(());
        }
        topology::declare_delay(&self.publisher, names, ttl_ms).await?;
        lock(&self.declared_delays).insert(ttl_ms);
        Ok(())
    }

    /// Declares the tenant's dead-letter queue unless this session already did.
    pub async fn ensure_dead(&self, names: &Names, tenant: &str) -> Result<(), OpError> {
        if lock(&self.declared_dead).contains(tenant) {
            return Ok(());
        }
        let queue = names.dead_queue(tenant)?;
        topology::declare_dead(&self.publisher, names, queue, tenant).await?;
        lock(&self.declared_dead).insert(tenant.into());
        Ok(())
    }
}

/// The broker took the message; `mandatory` publishes that no queue took come back as returns.
fn confirmed(
    confirmation: Confirmation,
    exchange: &ShortString,
    routing_key: &ShortString,
) -> Result<(), OpError> {
    let refused = |what: &str| {
        OpError::Broker(BrokerError::backend(
            BACKEND,
            format!("{what} a message to exchange {exchange:?} with routing key {routing_key:?}"),
        ))
    };
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(refused("no queue is bound to take")),
        Confirmation::Nack(_) => Err(refused("the broker refused to store")),
        Confirmation::NotRequested => Err(refused("publisher confirms are off for")),
    }
}

fn lock<T>(m: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these sets cannot leave them inconsistent: one insert at a time.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current session, replaced when it breaks.
pub(super) struct Link {
    url: String,
    pub names: Names,
    /// How long an operation waits for a broken connection to come back.
    pub within: Duration,
    current: Mutex<Option<Arc<Session>>>,
    generations: AtomicU64,
}

impl Link {
    pub fn new(url: &str, names: Names, within: Duration) -> Link {
        Link {
            url: url.into(),
            names,
            within,
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    /// The live session, connecting (with backoff, until `deadline`) when there is none.
    pub async fn session(&self, deadline: Instant) -> Result<Arc<Session>, BrokerError> {
        let started = Instant::now();
        let unavailable = |last: String| BrokerError::Unavailable {
            backend: BACKEND,
            waited: started.elapsed(),
            last,
        };
        let mut current = timeout_at(deadline, self.current.lock())
            .await
            .map_err(|_| unavailable("another task is still reconnecting".into()))?;
        if let Some(s) = current.as_ref().filter(|s| s.alive()) {
            return Ok(s.clone());
        }
        if let Some(old) = current.take() {
            close(&old).await;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            let error = match timeout_at(deadline, Session::open(&self.url, &self.names, generation)).await {
                Ok(Ok(session)) => {
                    tracing::info!(prefix = self.names.prefix(), generation, "connected to RabbitMQ");
                    let session = Arc::new(session);
                    *current = Some(session.clone());
                    return Ok(session);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connecting timed out".into(),
            };
            if Instant::now() + backoff >= deadline {
                return Err(unavailable(error));
            }
            tracing::warn!(error, retry_in = ?backoff, "RabbitMQ unreachable; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs `op` on the live session; while it fails because the connection broke, again on
    /// a new one, until [`Link::within`] has passed. Only for operations safe to repeat.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, BrokerError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        let deadline = Instant::now() + self.within;
        loop {
            let session = self.session(deadline).await?;
            match op(session.clone()).await {
                Ok(v) => return Ok(v),
                Err(OpError::Broker(e)) => return Err(e),
                Err(OpError::Amqp(e)) if session.alive() => return Err(backend(e)),
                Err(OpError::Amqp(e)) => {
                    self.discard(&session).await;
                    if Instant::now() >= deadline {
                        return Err(BrokerError::Unavailable {
                            backend: BACKEND,
                            waited: self.within,
                            last: e.to_string(),
                        });
                    }
                    tracing::warn!(error = %e, "RabbitMQ connection lost mid-operation; retrying");
                }
            }
        }
    }

    /// Drops `session` if it is still the current one (its consumer ended, say), so the next
    /// operation reconnects.
    pub async fn discard(&self, session: &Session) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|s| s.generation == session.generation)
            && let Some(old) = current.take()
        {
            close(&old).await;
        }
    }

    /// Closes the connection; deliveries not yet settled go back to the queue.
    pub async fn close(&self) {
        if let Some(old) = self.current.lock().await.take() {
            close(&old).await;
        }
    }
}

async fn close(session: &Session) {
    let closing = session.connection.close(200, "kl: closing".into());
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        tracing::debug!(error = %e, "closing a broken RabbitMQ connection");
    }
}
