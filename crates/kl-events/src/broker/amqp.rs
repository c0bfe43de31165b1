//! The RabbitMQ backend of [`Broker`] (lapin), for platforms that already run RabbitMQ or
//! need the queue outside the server process. Deliveries are persistent messages published
//! with confirms to a quorum work queue, consumed with manual acks under a prefetch; retries
//! wait in TTL delay queues, dead letters in a queue per tenant (see `topology`). A lease is
//! the unacked message on this connection's channel: it ends when the channel closes (the
//! server dies, the connection drops) or after RabbitMQ's `consumer_timeout` (30 minutes by
//! default), and RabbitMQ then delivers the message again.
//!
//! A lost connection is re-established with backoff and the topology declared again (see
//! `link`); meanwhile publishers wait (up to `reconnect_within`) and so does `receive`, which
//! can therefore take longer than its `wait`.

mod delay;
mod dlq;
mod link;
mod message;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use self::link::{Link, OpError, Session, backend};
use self::message::{Death, Envelope, short};
use self::topology::Names;
use super::{Broker, BrokerError, DeadLetter, Delivery, NewDelivery, Receipt, due_after};

/// How to connect.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// Prefix of every exchange and queue name, so platforms (or tests) can share a vhost.
    pub prefix: String,
    /// Unacknowledged deliveries RabbitMQ pushes to this process ahead of `receive`.
    pub prefetch: u16,
    /// How long an operation waits for a lost connection to come back before failing.
    pub reconnect_within: Duration,
}

impl Default for AmqpOptions {
    fn default() -> AmqpOptions {
        AmqpOptions {
            prefix: "kl".into(),
            prefetch: 64,
            reconnect_within: Duration::from_secs(30),
        }
    }
}

/// The RabbitMQ broker: one connection, re-established when lost.
pub struct AmqpBroker {
    link: Link,
    prefetch: u16,
    /// One dead-letter scan at a time (see `dlq`).
    scans: Mutex<()>,
}

/// What a receipt holds: the delivery's acker on the session that received it.
struct Lease {
    session: Arc<Session>,
    acker: Acker,
}

impl AmqpBroker {
    /// Connects to `url` (`amqp://user:pass@host:5672/%2f`) and declares the topology,
    /// retrying for `options.reconnect_within`.
    pub async fn connect(url: &str, options: AmqpOptions) -> Result<AmqpBroker, BrokerError> {
        let link = Link::new(url, Names::new(&options.prefix)?, options.reconnect_within);
        link.session(Instant::now() + options.reconnect_within).await?;
        Ok(AmqpBroker {
            link,
            prefetch: options.prefetch,
            scans: Mutex::new(()),
        })
    }

    /// Closes the connection: deliveries received and not settled go back to the queue. (An
    /// operation after this connects again.)
    pub async fn close(&self) {
        self.link.close().await;
    }

    /// Turns a message from the work queue into a delivery, or parks it again when it came
    /// back from a delay queue before its time.
    async fn accept(
        &self,
        session: &Arc<Session>,
        message: lapin::message::Delivery,
    ) -> Result<Option<Delivery>, OpError> {
        let env = match Envelope::decode(&message.data, &message.properties) {
            Ok(env) => env,
            Err(e) => {
                // Not ours (something else published to the exchange): redelivering it
                // would fail forever, so it is dropped, loudly.
                tracing::error!(error = %e, "dropping a malformed message from the work queue");
                message
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                return Ok(None);
            }
        };
        if env.not_before.is_some_and(|t| t > Utc::now()) {
            self.park(session, &env).await?;
            message.acker.ack(BasicAckOptions::default()).await?;
            return Ok(None);
        }
        Ok(Some(Delivery {
            id: env.id,
            tenant: env.tenant,
            subscriber: env.subscriber,
            event: env.event,
            attempt: env.attempt,
            enqueued_at: env.enqueued_at,
            receipt: Receipt::new(Lease {
                session: session.clone(),
                acker: message.acker,
            }),
        }))
    }

    /// Publishes `env` to wait out its `not_before` in a delay queue, or straight to the work
    /// queue when it is due.
    async fn park(&self, session: &Session, env: &Envelope) -> Result<(), OpError> {
        let names = &self.link.names;
        let remaining = env
            .not_before
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or_default();
        let queue = match delay::bucket(remaining) {
            None => names.work_queue(),
            Some(ttl) => {
                session.ensure_delay(names, ttl).await?;
                names.delay_queue(ttl)
            }
        };
        let (body, properties) = env.encode()?;
        session.publish("".into(), vec![(queue, body, properties)]).await
    }
}

/// Settles a leased delivery by publishing what replaces it (`publish`, on the leasing
/// session), then acking it. If that session is gone, RabbitMQ has requeued the delivery;
/// if the publish failed otherwise, the delivery is handed back for another receive rather
/// than held (and its prefetch slot with it) until the channel closes.
async fn replace(
    lease: Lease,
    id: &str,
    publish: impl Future<Output = Result<(), OpError>>,
) -> Result<(), BrokerError> {
    let lost = || BrokerError::LeaseLost { id: id.into() };
    if !lease.acker.usable() || !lease.session.alive() {
        return Err(lost());
    }
    let failed = match publish.await {
        Ok(()) => return ack(&lease.acker, id).await,
        Err(_) if !lease.acker.usable() => return Err(lost()),
        Err(OpError::Broker(e)) => e,
        Err(OpError::Amqp(e)) => backend(e),
    };
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(e) = lease.acker.nack(requeue).await {
        tracing::debug!(id, error = %e, "handing back an unsettled delivery failed");
    }
    Err(failed)
}

async fn ack(acker: &Acker, id: &str) -> Result<(), BrokerError> {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(BrokerError::LeaseLost { id: id.into() }),
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn enqueue(&self, batch: Vec<NewDelivery>) -> Result<(), BrokerError> {
        let now = Utc::now();
        let messages = batch
            .into_iter()
            .map(|d| {
                let env = Envelope {
                    id: uuid::Uuid::new_v4().to_string(),
                    tenant: d.tenant,
                    subscriber: d.subscriber,
                    event: d.event,
                    attempt: 0,
                    enqueued_at: now,
                    not_before: None,
                    death: None,
                };
                let (body, properties) = env.encode()?;
                Ok((env.routing_key()?, body, properties))
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
        if messages.is_empty() {
            return Ok(());
        }
        // A publish cut off by a lost connection is not known to be stored: the whole batch
        // goes again on the new connection (a duplicate is at-least-once; a loss is not).
        self.link
            .run(|session| {
                let messages = messages.clone();
                async move { session.publish(self.link.names.exchange(), messages).await }
            })
            .await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let session = self.link.session(Instant::now() + self.link.within).await?;
            let Ok(mut consumer) = timeout_at(deadline, session.consumer.lock()).await else {
                break;
            };
            if consumer.is_none() {
                match session.consume(&self.link.names, self.prefetch).await {
                    Ok(started) => *consumer = Some(started),
                    Err(e) => {
                        tracing::warn!(error = %e, "starting the RabbitMQ consumer failed; reconnecting");
                        drop(consumer);
                        self.link.discard(&session).await;
                        continue;
                    }
                }
            }
            let Some(stream) = consumer.as_mut() else {
                continue;
            };
            // Wait for the first delivery; after that take only what has already arrived.
            let next = if out.is_empty() {
                match timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            } else {
                match stream.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            let failure = match next {
                Some(Ok(message)) => match self.accept(&session, message).await {
                    Ok(delivery) => {
                        out.extend(delivery);
                        continue;
                    }
                    Err(OpError::Broker(e)) => e.to_string(),
                    Err(OpError::Amqp(e)) => e.to_string(),
                },
                Some(Err(e)) => e.to_string(),
                None => "the consumer was cancelled".into(),
            };
            // What this session delivered goes back to the queue with it: the deliveries
            // taken so far are void, and handing them out would only invoke them twice.
            tracing::warn!(error = failure, "RabbitMQ consumer failed; reconnecting");
            drop(consumer);
            self.link.discard(&session).await;
            out.clear();
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(out)
    }

    async fn ack(&self, delivery: Delivery) -> Result<(), BrokerError> {
        let lease: Lease = delivery.receipt.into_lease(&delivery.id)?;
        ack(&lease.acker, &delivery.id).await
    }

    async fn retry(&self, delivery: Delivery, after: Duration) -> Result<(), BrokerError> {
        let lease: Lease = delivery.receipt.into_lease(&delivery.id)?;
        let env = Envelope {
            id: delivery.id,
            tenant: delivery.tenant,
            subscriber: delivery.subscriber,
            event: delivery.event,
            attempt: delivery.attempt.saturating_add(1),
            enqueued_at: delivery.enqueued_at,
            not_before: Some(due_after(Utc::now(), after)),
            death: None,
        };
        let session = lease.session.clone();
        replace(lease, &env.id, self.park(&session, &env)).await
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Result<(), BrokerError> {
        let lease: Lease = delivery.receipt.into_lease(&delivery.id)?;
        let env = Envelope {
            id: delivery.id,
            tenant: delivery.tenant,
            subscriber: delivery.subscriber,
            event: delivery.event,
            attempt: delivery.attempt,
            enqueued_at: delivery.enqueued_at,
            not_before: None,
            death: Some(Death {
                reason: reason.into(),
                at: Utc::now(),
            }),
        };
        let session = lease.session.clone();
        let names = &self.link.names;
        let publish = async {
            session.ensure_dead(names, &env.tenant).await?;
            let (body, properties) = env.encode()?;
            let tenant = short(&env.tenant)?;
            session
                .publish(names.dead_exchange(), vec![(tenant, body, properties)])
                .await
        };
        replace(lease, &env.id, publish).await
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let _one_scan = self.scans.lock().await;
        self.link
            .run(|session| async move {
                let scan = dlq::scan(&session, &self.link.names, tenant, limit, |_| false).await?;
                let letters = scan.letters.iter().map(|(_, l)| l.clone()).collect();
                scan.release().await?;
                Ok(letters)
            })
            .await
    }

    async fn find_dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>, BrokerError> {
        let _one_scan = self.scans.lock().await;
        self.link
            .run(|session| async move {
                let scan = dlq::scan(&session, &self.link.names, tenant, usize::MAX, |l| l.id == id).await?;
                let found = scan
                    .letters
                    .iter()
                    .find(|(_, l)| l.id == id)
                    .map(|(_, l)| l.clone());
                scan.release().await?;
                Ok(found)
            })
            .await
    }

    /// Publishes the dead letter to the work queue, then removes it from the tenant's queue:
    /// once, on one session and not retried, since a retry after the publish would replay it
    /// twice. Should the connection drop between the two, it is both replayed and still a
    /// dead letter (at-least-once).
    async fn replay(&self, tenant: &str, id: &str) -> Result<(), BrokerError> {
        let _one_scan = self.scans.lock().await;
        let session = self.link.session(Instant::now() + self.link.within).await?;
        let names = &self.link.names;
        let replayed: Result<(), OpError> = async {
            let mut scan = dlq::scan(&session, names, tenant, usize::MAX, |l| l.id == id).await?;
            let Some((tag, letter)) = scan.letters.iter().find(|(_, l)| l.id == id).cloned() else {
                scan.release().await?;
                return Err(BrokerError::NotFound {
                    tenant: tenant.into(),
                    id: id.into(),
                }
                .into());
            };
            let env = Envelope {
                id: letter.id.clone(),
                tenant: letter.tenant.clone(),
                subscriber: letter.subscriber.clone(),
                event: letter.event.clone(),
                attempt: 0,
                enqueued_at: Utc::now(),
                not_before: None,
                death: None,
            };
            let (body, properties) = env.encode()?;
            session
                .publish(names.exchange(), vec![(env.routing_key()?, body, properties)])
                .await?;
            scan.take(tag).await?;
            scan.release().await?;
            Ok(())
        }
        .await;
        match replayed {
            Ok(()) => Ok(()),
            Err(OpError::Broker(e)) => Err(e),
            Err(OpError::Amqp(e)) => {
                if !session.alive() {
                    self.link.discard(&session).await;
                }
                Err(backend(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
