//! The CloudEvents AMQP protocol binding in binary mode, independent of any AMQP library:
//! attributes as `cloudEvents:`-prefixed application properties, `datacontenttype` as the
//! message's content type, data as the body. A broker backend maps [`AmqpMessage`] onto its
//! client's types (for RabbitMQ, lapin's `FieldTable` headers and `BasicProperties`).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::Value;

use crate::http_binding::STRUCTURED_CONTENT_TYPE;
use crate::media_type::MediaType;
use crate::validate::check_attribute_name;
use crate::{CloudEvent, EventError, payload};

/// The prefix the AMQP binding gives attribute property names.
pub const PROPERTY_PREFIX: &str = "cloudEvents:";
/// Prefixes also accepted when reading, as AMQP 0-9-1 (RabbitMQ) clients write them.
const INTEROP_PREFIXES: [&str; 2] = ["cloudEvents_", "ce_"];

/// An application property value: the AMQP types the binding maps the CloudEvents type
/// system onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpValue {
    /// String, URI, URI-reference, and any attribute in its canonical string form.
    String(String),
    /// Integer.
    Long(i64),
    /// Boolean.
    Bool(bool),
    /// Timestamp, in milliseconds since the Unix epoch (AMQP's timestamp).
    Timestamp(i64),
}

/// An event as a binary-mode AMQP message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AmqpMessage {
    /// Attributes, other than `datacontenttype`, under `cloudEvents:` names.
    pub application_properties: BTreeMap<String, AmqpValue>,
    /// The message's `content-type` property: the event's `datacontenttype`.
    pub content_type: Option<String>,
    /// The application data section: the event's data.
    pub body: Bytes,
}

/// Writes a valid event as a binary-mode message, with native AMQP types: integers as longs,
/// booleans as booleans, and `time` as a timestamp when it has no precision finer than a
/// millisecond (else as its RFC 3339 string, which loses nothing).
///
/// [`from_amqp`] reads it back as the same event, except that `time` sent as a timestamp
/// comes back in UTC (`Z`) with the shortest fraction that holds it, the same instant; JSON
/// data without a `datacontenttype` comes back as `application/json`; and the other data
/// equivalences of `http_binding::to_binary` hold here too.
pub fn to_amqp(ev: &CloudEvent) -> Result<AmqpMessage, EventError> {
    ev.validate()?;
    let mut properties = BTreeMap::new();
    let mut put = |name: &str, value: AmqpValue| {
        properties.insert(format!("{PROPERTY_PREFIX}{name}"), value);
    };
    put("specversion", AmqpValue::String(ev.specversion.clone()));
    put("id", AmqpValue::String(ev.id.clone()));
    put("source", AmqpValue::String(ev.source.clone()));
    put("type", AmqpValue::String(ev.ty.clone()));
    if let Some(subject) = &ev.subject {
        put("subject", AmqpValue::String(subject.clone()));
    }
    if let Some(time) = &ev.time {
        let native = ev
            .time()
            .filter(|t| t.nanosecond() % 1_000_000 == 0)
            .map(|t| AmqpValue::Timestamp(t.timestamp_millis()));
        put("time", native.unwrap_or_else(|| AmqpValue::String(time.clone())));
    }
    if let Some(schema) = &ev.dataschema {
        put("dataschema", AmqpValue::String(schema.clone()));
    }
    for (name, value) in &ev.extensions {
        let value = match value {
            Value::Bool(b) => AmqpValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(n) => AmqpValue::Long(n),
                None => AmqpValue::String(n.to_string()),
            },
            Value::String(s) => AmqpValue::String(s.clone()),
            _ => continue,
        };
        put(name, value);
    }
    let (content_type, body) = payload::encode(ev);
    Ok(AmqpMessage {
        application_properties: properties,
        content_type,
        body,
    })
}

/// Reads an event from an AMQP message and checks it against the spec. A structured-mode
/// message (`application/cloudevents+json`) is read as the JSON format; otherwise attributes
/// come from application properties prefixed `cloudEvents:` (the binding's), `cloudEvents_` or
/// `ce_`, and properties without these prefixes are not the event's and are ignored.
pub fn from_amqp(message: &AmqpMessage) -> Result<CloudEvent, EventError> {
    let content_type = message.content_type.as_deref();
    if let Some(mt) = content_type.and_then(|ct| MediaType::parse(ct).ok()) {
        if mt.essence == STRUCTURED_CONTENT_TYPE && mt.is_utf8() {
            return CloudEvent::from_json_slice(&message.body);
        }
        if mt.essence.starts_with("application/cloudevents") {
            return Err(EventError::UnsupportedFormat {
                content_type: content_type.unwrap_or_default().to_owned(),
            });
        }
    }
    let mut attributes: BTreeMap<&str, &AmqpValue> = BTreeMap::new();
    for (key, value) in &message.application_properties {
        let Some(name) = [PROPERTY_PREFIX]
            .iter()
            .chain(&INTEROP_PREFIXES)
            .find_map(|prefix| key.strip_prefix(prefix))
        else {
            continue;
        };
        check_attribute_name(name).map_err(|r| EventError::invalid(name, r))?;
        if attributes
            .insert(name, value)
            .is_some_and(|earlier| earlier != value)
        {
            return Err(EventError::invalid(
                name,
                "is given twice, under different prefixes, with different values",
            ));
        }
    }
    if attributes.remove("datacontenttype").is_some() {
        return Err(EventError::invalid(
            "datacontenttype",
            "in binary mode the data's type is the message's content-type property",
        ));
    }
    let mut take = |name: &'static str| {
        attributes
            .remove(name)
            .map(|v| string_attribute(name, v))
            .transpose()
    };
    let required = |value: Option<String>, attribute| value.ok_or(EventError::Missing { attribute });
    let (data, data_base64) = payload::decode(content_type, message.body.clone());
    let ev = CloudEvent {
        specversion: required(take("specversion")?, "specversion")?,
        id: required(take("id")?, "id")?,
        source: required(take("source")?, "source")?,
        ty: required(take("type")?, "type")?,
        subject: take("subject")?,
        time: take("time")?,
        datacontenttype: content_type.map(str::to_owned),
        dataschema: take("dataschema")?,
        data,
        data_base64,
        extensions: attributes
            .into_iter()
            .map(|(name, value)| Ok((name.to_owned(), extension_value(name, value)?)))
            .collect::<Result<_, EventError>>()?,
    };
    ev.validate()?;
    Ok(ev)
}

/// A string-typed attribute (`time` included) from its native or canonical string form.
fn string_attribute(name: &str, value: &AmqpValue) -> Result<String, EventError> {
    match value {
        AmqpValue::String(s) => Ok(s.clone()),
        AmqpValue::Timestamp(ms) if name == "time" => timestamp_string(name, *ms),
        other => Err(EventError::invalid(
            name,
            format!(
                "must be an AMQP string{}, not {other:?}",
                if name == "time" { " or timestamp" } else { "" }
            ),
        )),
    }
}

/// An extension value in the JSON model: longs as numbers (validation checks the 32-bit
/// range), timestamps in their canonical RFC 3339 string form.
fn extension_value(name: &str, value: &AmqpValue) -> Result<Value, EventError> {
    Ok(match value {
        AmqpValue::String(s) => Value::String(s.clone()),
        AmqpValue::Long(n) => Value::from(*n),
        AmqpValue::Bool(b) => Value::Bool(*b),
        AmqpValue::Timestamp(ms) => Value::String(timestamp_string(name, *ms)?),
    })
}

fn timestamp_string(name: &str, ms: i64) -> Result<String, EventError> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .ok_or_else(|| EventError::invalid(name, format!("timestamp {ms} ms is out of range")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::test_events::events;

    fn message(props: &[(&str, AmqpValue)]) -> AmqpMessage {
        AmqpMessage {
            application_properties: props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            content_type: Some("application/json; charset=utf-8".into()),
            body: Bytes::from_static(b"{\"n\":1}"),
        }
    }

    fn s(v: &str) -> AmqpValue {
        AmqpValue::String(v.into())
    }

    #[test]
    fn reads_the_specs_example_and_interop_prefixes() {
        let msg = message(&[
            ("cloudEvents:specversion", s("1.0")),
            ("cloudEvents_type", s("com.example.someevent")),
            ("ce_time", AmqpValue::Timestamp(1_522_900_584_000)),
            ("cloudEvents:id", s("1234-1234-1234")),
            ("cloudEvents:source", s("/mycontext/subcontext")),
            ("ce_count", AmqpValue::Long(7)),
            ("ce_sampled", AmqpValue::Bool(true)),
            ("x-death", s("not ours")),
        ]);
        let ev = from_amqp(&msg).unwrap();
        assert_eq!(ev.ty, "com.example.someevent");
        assert_eq!(ev.time.as_deref(), Some("2018-04-05T03:56:24Z"));
        assert_eq!(ev.extensions["count"], 7);
        assert_eq!(ev.extensions["sampled"], true);
        assert_eq!(ev.data, Some(json!({"n": 1})));
        assert_eq!(ev.extensions.len(), 2);
    }

    #[test]
    fn names_the_attribute_at_fault() {
        let base = [
            ("cloudEvents:specversion", s("1.0")),
            ("cloudEvents:id", s("1")),
            ("cloudEvents:source", s("/s")),
            ("cloudEvents:type", s("t")),
        ];
        let refused = |extra: (&str, AmqpValue)| {
            let mut props = base.to_vec();
            props.push(extra);
            from_amqp(&message(&props)).unwrap_err()
        };
        assert_eq!(
            refused(("cloudEvents:id", AmqpValue::Long(1))).attribute(),
            Some("id")
        );
        assert_eq!(refused(("ce_id", s("2"))).attribute(), Some("id"));
        assert_eq!(
            refused(("ce_big", AmqpValue::Long(1 << 40))).attribute(),
            Some("big")
        );
        assert_eq!(refused(("ce_Bad", s("x"))).attribute(), Some("Bad"));
        assert_eq!(
            refused(("cloudEvents:datacontenttype", s("text/plain"))).attribute(),
            Some("datacontenttype")
        );
        assert_eq!(
            from_amqp(&message(&base[1..])).unwrap_err(),
            EventError::Missing {
                attribute: "specversion"
            }
        );
        let mut same_twice = base.to_vec();
        same_twice.push(("ce_id", s("1")));
        assert_eq!(from_amqp(&message(&same_twice)).unwrap().id, "1");
    }

    #[test]
    fn reads_structured_messages_and_refuses_other_formats() {
        let structured = AmqpMessage {
            application_properties: BTreeMap::new(),
            content_type: Some("application/cloudevents+json; charset=utf-8".into()),
            body: Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#),
        };
        assert_eq!(from_amqp(&structured).unwrap().id, "1");
        let avro = AmqpMessage {
            content_type: Some("application/cloudevents+avro".into()),
            ..structured
        };
        assert!(matches!(
            from_amqp(&avro),
            Err(EventError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn writes_native_types() {
        let mut ev = CloudEvent::new("t", "/s".into(), json!(1));
        ev.time = Some("2018-04-05T05:56:24.5+02:00".into());
        ev.extensions.insert("count".into(), json!(3));
        ev.extensions.insert("flag".into(), json!(false));
        let msg = to_amqp(&ev).unwrap();
        let props = &msg.application_properties;
        assert_eq!(props["cloudEvents:time"], AmqpValue::Timestamp(1_522_900_584_500));
        assert_eq!(props["cloudEvents:count"], AmqpValue::Long(3));
        assert_eq!(props["cloudEvents:flag"], AmqpValue::Bool(false));
        assert_eq!(props["cloudEvents:specversion"], s("1.0"));
        assert!(!props.contains_key("cloudEvents:datacontenttype"));
        assert_eq!(msg.content_type.as_deref(), Some("application/json"));
        ev.time = Some("2018-04-05T03:56:24.000001Z".into());
        let props = to_amqp(&ev).unwrap().application_properties;
        assert_eq!(props["cloudEvents:time"], s("2018-04-05T03:56:24.000001Z"));
    }

    proptest! {
        #[test]
        fn binary_mode_round_trips(ev in events()) {
            let mut back = from_amqp(&to_amqp(&ev).unwrap()).unwrap();
            prop_assert_eq!(back.time(), ev.time());
            back.time.clone_from(&ev.time);
            let mut expected = ev;
            if expected.data.is_some() && expected.datacontenttype.is_none() {
                expected.datacontenttype = Some("application/json".into());
            }
            prop_assert_eq!(back, expected);
        }
    }
}
