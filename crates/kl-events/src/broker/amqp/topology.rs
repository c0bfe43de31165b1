//! The exchanges and queues of one platform on RabbitMQ, every name under one prefix:
//!
//! - `{p}.events`: topic exchange deliveries are published to, routing key `{tenant}.{trigger}`;
//! - `{p}.deliveries`: the work queue, quorum (replicated, fsynced before confirming), bound `#`;
//! - `{p}.delay.{ttl}ms`: delay queues, quorum, whose TTL dead-letters back to the work queue
//!   (see `delay`), declared on first use;
//! - `{p}.dead`: direct exchange of dead letters, routing key the tenant, into
//!   `{p}.dead.{tenant}`: one classic queue per tenant, declared on first use. Classic, not
//!   quorum, because listing reads and requeues messages: classic queues put them back in
//!   place and count no deliveries, where quorum queues may move them and (RabbitMQ 4) drop
//!   them after a delivery limit.
//!
//! Declarations are idempotent, so every (re)connection declares the fixed part again: a
//! broker restarted without its data gets its topology back.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use super::message::short;
use crate::broker::BrokerError;

/// The names of one platform's exchanges and queues.
#[derive(Debug, Clone)]
pub(super) struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`; refused when the longest fixed name would not fit AMQP's limit
    /// (the name methods below rely on it).
    pub fn new(prefix: &str) -> Result<Names, BrokerError> {
        short(&format!("{prefix}.delay.{}ms", super::delay::LONGEST))?;
        Ok(Names {
            prefix: prefix.into(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn exchange(&self) -> ShortString {
        format!("{}.events", self.prefix).into()
    }

    pub fn work_queue(&self) -> ShortString {
        format!("{}.deliveries", self.prefix).into()
    }

    pub fn delay_queue(&self, ttl_ms: u64) -> ShortString {
        format!("{}.delay.{ttl_ms}ms", self.prefix).into()
    }

    pub fn dead_exchange(&self) -> ShortString {
        format!("{}.dead", self.prefix).into()
    }

    pub fn dead_queue(&self, tenant: &str) -> Result<ShortString, BrokerError> {
        short(&format!("{}.dead.{tenant}", self.prefix))
    }
}

/// Declares the fixed part: both exchanges and the work queue.
pub(super) async fn declare(channel: &Channel, names: &Names) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            names.exchange(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.dead_exchange(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(names.work_queue(), QueueDeclareOptions::durable(), quorum())
        .await?;
    channel
        .queue_bind(
            names.work_queue(),
            names.exchange(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares the delay queue of one TTL. Its expired messages go to the work queue through the
/// default exchange, dead-lettered at-least-once: RabbitMQ keeps a message until the work
/// queue confirms it (which needs `reject-publish` overflow), so a crash mid-hop loses nothing.
pub(super) async fn declare_delay(channel: &Channel, names: &Names, ttl_ms: u64) -> lapin::Result<()> {
    let mut args = quorum();
    let mut put = |k: &str, v: AMQPValue| {
        args.insert(k.into(), v);
    };
    put(
        "x-message-ttl",
        AMQPValue::LongLongInt(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
    );
    put("x-dead-letter-exchange", AMQPValue::LongString("".into()));
    put(
        "x-dead-letter-routing-key",
        AMQPValue::LongString(names.work_queue().as_str().into()),
    );
    put(
        "x-dead-letter-strategy",
        AMQPValue::LongString("at-least-once".into()),
    );
    put("x-overflow", AMQPValue::LongString("reject-publish".into()));
    channel
        .queue_declare(names.delay_queue(ttl_ms), QueueDeclareOptions::durable(), args)
        .await
        .map(drop)
}

/// Declares a tenant's dead-letter queue and binds it to the dead-letter exchange.
pub(super) async fn declare_dead(
    channel: &Channel,
    names: &Names,
    queue: ShortString,
    tenant: &str,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.clone(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue,
            names.dead_exchange(),
            tenant.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}
