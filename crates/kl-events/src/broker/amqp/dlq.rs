//! Reading a tenant's dead-letter queue without consuming it: `basic.get` without auto-ack on
//! a channel of its own, then one `basic.nack` with requeue puts back everything read and not
//! taken (a classic queue puts messages back in place). While a scan holds messages another
//! scan cannot see them, so the broker runs one scan at a time; scans from other processes
//! sharing the queue may briefly miss messages.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{DeliveryTag, FieldTable};

use super::link::{OpError, Session};
use super::message::Envelope;
use super::topology::Names;
use crate::broker::{BrokerError, DeadLetter};

/// Dead letters read from the head of a tenant's queue, held until [`Scan::release`].
pub(super) struct Scan {
    channel: Channel,
    pub letters: Vec<(DeliveryTag, DeadLetter)>,
    /// Tags of the messages read and not taken, ascending (as the channel numbers them).
    held: Vec<DeliveryTag>,
}

/// Reads up to `limit` of the tenant's dead letters, oldest first, stopping after the first
/// that `stop` picks. A tenant that never had a dead letter has no queue: nothing to read.
pub(super) async fn scan(
    session: &Session,
    names: &Names,
    tenant: &str,
    limit: usize,
    stop: impl Fn(&DeadLetter) -> bool,
) -> Result<Scan, OpError> {
    let queue = names.dead_queue(tenant)?;
    let mut scan = Scan {
        channel: session.channel().await?,
        letters: Vec::new(),
        held: Vec::new(),
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let count = match scan
        .channel
        .queue_declare(queue.clone(), passive, FieldTable::default())
        .await
    {
        Ok(q) => q.message_count(),
        Err(e) if not_found(&e) => return Ok(scan),
        Err(e) => return Err(e.into()),
    };
    // Only what was there at the start: held messages are not handed out again, so this also
    // bounds the scan while others add dead letters.
    for _ in 0..limit.min(usize::try_from(count).unwrap_or(usize::MAX)) {
        let get = BasicGetOptions { no_ack: false };
        let Some(got) = scan.channel.basic_get(queue.clone(), get).await? else {
            break;
        };
        let message = got.delivery;
        scan.held.push(message.delivery_tag);
        match Envelope::decode(&message.data, &message.properties).and_then(dead_letter) {
            Ok(letter) => {
                let done = stop(&letter);
                scan.letters.push((message.delivery_tag, letter));
                if done {
                    break;
                }
            }
            Err(e) => tracing::warn!(tenant, error = %e, "skipping a malformed dead letter"),
        }
    }
    Ok(scan)
}

impl Scan {
    /// Removes one dead letter read by this scan (it was replayed).
    pub async fn take(&mut self, tag: DeliveryTag) -> lapin::Result<()> {
        self.channel.basic_ack(tag, BasicAckOptions::default()).await?;
        self.held.retain(|held| *held != tag);
        Ok(())
    }

    /// Puts back everything read and not taken, and closes the channel.
    pub async fn release(self) -> lapin::Result<()> {
        if !self.channel.status().connected() {
            return Ok(());
        }
        if let Some(&last) = self.held.last() {
            let requeue = BasicNackOptions {
                multiple: true,
                requeue: true,
            };
            self.channel.basic_nack(last, requeue).await?;
        }
        self.channel.close(200, "kl: scan done".into()).await
    }
}

fn dead_letter(env: Envelope) -> Result<DeadLetter, BrokerError> {
    let Some(death) = env.death else {
        return Err(BrokerError::Corrupt {
            id: env.id,
            reason: "a dead letter without kl-reason and kl-dead-at".into(),
        });
    };
    Ok(DeadLetter {
        id: env.id,
        tenant: env.tenant,
        subscriber: env.subscriber,
        event: env.event,
        attempt: env.attempt,
        reason: death.reason,
        enqueued_at: env.enqueued_at,
        dead_at: death.at,
    })
}

/// A passive declare of a queue that does not exist (the channel is closed by it).
fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}
