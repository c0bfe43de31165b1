//! A delivery as an AMQP message: the CloudEvent in the body (the binding's structured mode)
//! and the delivery's bookkeeping in `kl-*` headers, so a message carries everything needed to
//! deliver, retry, dead-letter or replay it, wherever it sits.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::CloudEvent;
use crate::broker::BrokerError;

/// `delivery_mode` of a message the broker writes to disk.
const PERSISTENT: u8 = 2;

/// The CloudEvents structured-mode content type.
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

const TENANT: &str = "kl-tenant";
const SUBSCRIBER: &str = "kl-subscriber";
const ATTEMPT: &str = "kl-attempt";
const ENQUEUED_AT: &str = "kl-enqueued-at";
const NOT_BEFORE: &str = "kl-not-before";
const REASON: &str = "kl-reason";
const DEAD_AT: &str = "kl-dead-at";

/// A delivery in transit: what `Delivery` and `DeadLetter` are made from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Envelope {
    pub id: String,
    pub tenant: String,
    pub subscriber: String,
    pub event: CloudEvent,
    pub attempt: u32,
    pub enqueued_at: DateTime<Utc>,
    /// Set on a retry: receivers park it again until then.
    pub not_before: Option<DateTime<Utc>>,
    /// Set once dead-lettered.
    pub death: Option<Death>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Death {
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl Envelope {
    /// The body and properties to publish: persistent, with the delivery id as message id.
    pub fn encode(&self) -> Result<(Vec<u8>, BasicProperties), BrokerError> {
        let (body, content_type, mut headers) = event_to_amqp(&self.event)?;
        let mut put = |k: &str, v: AMQPValue| {
            headers.insert(k.into(), v);
        };
        put(TENANT, text(&self.tenant));
        put(SUBSCRIBER, text(&self.subscriber));
        put(ATTEMPT, AMQPValue::LongLongInt(self.attempt.into()));
        put(ENQUEUED_AT, text(&timestamp(self.enqueued_at)));
        if let Some(t) = self.not_before {
            put(NOT_BEFORE, text(&timestamp(t)));
        }
        if let Some(death) = &self.death {
            put(REASON, text(&death.reason));
            put(DEAD_AT, text(&timestamp(death.at)));
        }
        let properties = BasicProperties::default()
            .with_content_type(content_type)
            .with_delivery_mode(PERSISTENT)
            .with_message_id(short(&self.id)?)
            .with_timestamp(u64::try_from(self.enqueued_at.timestamp()).unwrap_or_default())
            .with_headers(headers);
        Ok((body, properties))
    }

    pub fn decode(body: &[u8], properties: &BasicProperties) -> Result<Envelope, BrokerError> {
        let id = properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let corrupt = |reason: String| BrokerError::Corrupt {
            id: id.clone(),
            reason,
        };
        if id.is_empty() {
            return Err(corrupt("no message id".into()));
        }
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        let event = event_from_amqp(body, properties.content_type().as_ref()).map_err(&corrupt)?;
        let get_text = |k: &str| header_text(headers, k).ok_or_else(|| corrupt(format!("no {k} header")));
        let get_time = |k: &str| {
            header_text(headers, k)
                .map(|t| parse_timestamp(&t).ok_or_else(|| corrupt(format!("bad {k} header {t:?}"))))
                .transpose()
        };
        let attempt = match headers.inner().get(ATTEMPT) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
            _ => None,
        }
        .ok_or_else(|| corrupt(format!("no {ATTEMPT} header")))?;
        let death = match (header_text(headers, REASON), get_time(DEAD_AT)?) {
            (Some(reason), Some(at)) => Some(Death { reason, at }),
            _ => None,
        };
        Ok(Envelope {
            tenant: get_text(TENANT)?,
            subscriber: get_text(SUBSCRIBER)?,
            attempt,
            enqueued_at: get_time(ENQUEUED_AT)?.ok_or_else(|| corrupt(format!("no {ENQUEUED_AT} header")))?,
            not_before: get_time(NOT_BEFORE)?,
            death,
            event,
            id,
        })
    }

    /// The topic routing key: `{tenant}.{subscriber}`, so bindings can select by tenant.
    pub fn routing_key(&self) -> Result<ShortString, BrokerError> {
        short(&format!("{}.{}", self.tenant, self.subscriber))
    }
}

/// The CloudEvents AMQP binding, structured mode: the event as JSON in the body with content
/// type `application/cloudevents+json`, and its main attributes also as `cloudEvents:*`
/// headers so routing and tooling need not parse the body. The one place to swap for the
/// binding module (binary mode) when it lands.
fn event_to_amqp(event: &CloudEvent) -> Result<(Vec<u8>, ShortString, FieldTable), BrokerError> {
    let body =
        serde_json::to_vec(event).map_err(|e| BrokerError::Invalid(format!("event {}: {e}", event.id)))?;
    let mut headers = FieldTable::default();
    let mut put = |k: &str, v: &str| {
        headers.insert(format!("cloudEvents:{k}").into(), text(v));
    };
    put("specversion", &event.specversion);
    put("id", &event.id);
    put("source", &event.source);
    put("type", &event.ty);
    if let Some(subject) = &event.subject {
        put("subject", subject);
    }
    if let Some(time) = &event.time {
        put("time", time);
    }
    Ok((body, CLOUDEVENTS_JSON.into(), headers))
}

/// The inverse of [`event_to_amqp`]: in structured mode the body is the whole event.
fn event_from_amqp(body: &[u8], content_type: Option<&ShortString>) -> Result<CloudEvent, String> {
    match content_type.map(ShortString::as_str) {
        Some(CLOUDEVENTS_JSON) => serde_json::from_slice(body).map_err(|e| format!("event body: {e}")),
        other => Err(format!("content type {other:?} is not {CLOUDEVENTS_JSON}")),
    }
}

/// An AMQP short string (names, routing keys, message ids): at most 255 bytes.
pub(super) fn short(s: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(s).map_err(|e| BrokerError::Invalid(format!("{s:?} is too long for RabbitMQ: {e}")))
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let mut event = crate::lifecycle(
            crate::types::BUILD_STARTED,
            "acme",
            "hello",
            "hello-00001",
            serde_json::json!({"revision": 1}),
        );
        event
            .extensions
            .insert("traceparent".into(), "00-abc-def-01".into());
        Envelope {
            id: "d-1".into(),
            tenant: "acme".into(),
            subscriber: "on-build".into(),
            event,
            attempt: 3,
            enqueued_at: parse_timestamp("2026-01-02T03:04:05.123456Z").expect("time"),
            not_before: parse_timestamp("2026-01-02T03:05:00Z"),
            death: Some(Death {
                reason: "function answered 500".into(),
                at: parse_timestamp("2026-01-02T03:06:00Z").expect("time"),
            }),
        }
    }

    #[test]
    fn envelopes_round_trip_through_messages() {
        let env = envelope();
        let (body, props) = env.encode().expect("encode");
        assert_eq!(Envelope::decode(&body, &props).expect("decode"), env);
        let plain = Envelope {
            not_before: None,
            death: None,
            ..envelope()
        };
        let (body, props) = plain.encode().expect("encode");
        assert_eq!(Envelope::decode(&body, &props).expect("decode"), plain);
    }

    #[test]
    fn messages_follow_the_cloudevents_amqp_binding() {
        let env = envelope();
        let (body, props) = env.encode().expect("encode");
        assert_eq!(
            props.content_type().as_ref().map(ShortString::as_str),
            Some(CLOUDEVENTS_JSON)
        );
        assert_eq!(*props.delivery_mode(), Some(PERSISTENT), "persistent");
        assert_eq!(props.message_id().as_ref().map(ShortString::as_str), Some("d-1"));
        let headers = props.headers().as_ref().expect("headers");
        for (k, v) in [
            ("cloudEvents:specversion", "1.0"),
            ("cloudEvents:type", "io.knative.lambda.lifecycle.build.started"),
            ("cloudEvents:source", "io.knative.lambda/acme/hello"),
            ("cloudEvents:subject", "acme/hello"),
            ("cloudEvents:id", env.event.id.as_str()),
        ] {
            assert_eq!(header_text(headers, k).as_deref(), Some(v), "{k}");
        }
        let json: serde_json::Value = serde_json::from_slice(&body).expect("body is JSON");
        assert_eq!(
            json["traceparent"], "00-abc-def-01",
            "extensions stay in the structured body"
        );
        assert_eq!(env.routing_key().expect("key").as_str(), "acme.on-build");
    }

    #[test]
    fn foreign_messages_are_reported_not_guessed() {
        let (body, props) = envelope().encode().expect("encode");
        let err = Envelope::decode(&body, &props.clone().with_content_type("text/plain".into()))
            .expect_err("wrong content type");
        assert!(
            matches!(err, BrokerError::Corrupt { ref id, .. } if id == "d-1"),
            "{err}"
        );
        let err = Envelope::decode(b"{}", &props).expect_err("not an event");
        assert!(matches!(err, BrokerError::Corrupt { .. }), "{err}");
        let err = Envelope::decode(&body, &BasicProperties::default()).expect_err("no id");
        assert!(matches!(err, BrokerError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn names_over_255_bytes_are_refused() {
        let long = Envelope {
            subscriber: "s".repeat(300),
            ..envelope()
        };
        assert!(matches!(long.routing_key(), Err(BrokerError::Invalid(_))));
    }
}
