//! The JSON event format (structured mode) read strictly: members of the wrong JSON type, and
//! `data` next to `data_base64`, are refused with the member's name rather than a serde message.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::{CloudEvent, EventError};

impl CloudEvent {
    /// Reads an event in the JSON format and checks it against the spec.
    pub fn from_json(value: Value) -> Result<CloudEvent, EventError> {
        let ev = decode(value)?;
        ev.validate()?;
        Ok(ev)
    }

    /// Reads an event from JSON text and checks it against the spec.
    pub fn from_json_slice(json: &[u8]) -> Result<CloudEvent, EventError> {
        let value = serde_json::from_slice(json).map_err(|e| EventError::Malformed {
            what: "JSON event",
            reason: e.to_string(),
        })?;
        CloudEvent::from_json(value)
    }
}

impl TryFrom<Value> for CloudEvent {
    type Error = EventError;

    /// Reads the JSON shape only; see [`CloudEvent::from_json`] for the full check.
    fn try_from(value: Value) -> Result<CloudEvent, EventError> {
        decode(value)
    }
}

/// Maps JSON members onto attributes. A `null` member is an absent attribute, as the JSON
/// format says.
fn decode(value: Value) -> Result<CloudEvent, EventError> {
    let Value::Object(mut members) = value else {
        return Err(EventError::Malformed {
            what: "JSON event",
            reason: "a CloudEvent in JSON is an object".into(),
        });
    };
    members.retain(|_, v| !v.is_null());
    let data = members.remove("data");
    let data_base64 =
        match members.remove("data_base64") {
            None => None,
            Some(Value::String(text)) => Some(Bytes::from(BASE64.decode(text.as_bytes()).map_err(|e| {
                EventError::invalid("data_base64", format!("not valid base64 (RFC 4648): {e}"))
            })?)),
            Some(_) => return Err(EventError::invalid("data_base64", "must be a base64 string")),
        };
    if data.is_some() && data_base64.is_some() {
        return Err(EventError::invalid(
            "data_base64",
            "data and data_base64 are mutually exclusive",
        ));
    }
    Ok(CloudEvent {
        specversion: required(&mut members, "specversion")?,
        id: required(&mut members, "id")?,
        source: required(&mut members, "source")?,
        ty: required(&mut members, "type")?,
        subject: optional(&mut members, "subject")?,
        time: optional(&mut members, "time")?,
        datacontenttype: optional(&mut members, "datacontenttype")?,
        dataschema: optional(&mut members, "dataschema")?,
        data,
        data_base64,
        extensions: members.into_iter().collect(),
    })
}

fn required(members: &mut Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    optional(members, name)?.ok_or(EventError::Missing { attribute: name })
}

fn optional(members: &mut Map<String, Value>, name: &'static str) -> Result<Option<String>, EventError> {
    match members.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::invalid(
            name,
            format!("must be a JSON string, not {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal() -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
    }

    fn with(member: &str, value: Value) -> Value {
        let mut v = minimal();
        v[member] = value;
        v
    }

    #[test]
    fn reads_the_specs_example() {
        let ev = CloudEvent::from_json(json!({
            "specversion": "1.0",
            "type": "com.github.pull_request.opened",
            "source": "https://github.com/cloudevents/spec/pull",
            "subject": "123",
            "id": "A234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "text/xml",
            "data": "<much wow=\"xml\"/>"
        }))
        .unwrap();
        assert_eq!(ev.subject.as_deref(), Some("123"));
        assert_eq!(ev.extensions["comexampleothervalue"], 5);
        assert_eq!(ev.data, Some(json!("<much wow=\"xml\"/>")));
    }

    #[test]
    fn nulls_are_absent_attributes() {
        let mut v = minimal();
        v["subject"] = Value::Null;
        v["data"] = Value::Null;
        v["myext"] = Value::Null;
        let ev = CloudEvent::from_json(v).unwrap();
        assert_eq!((ev.subject, ev.data), (None, None));
        assert!(ev.extensions.is_empty());
    }

    #[test]
    fn refuses_shapes_the_format_does_not_allow() {
        let attribute_of = |v: Value| {
            CloudEvent::from_json(v)
                .unwrap_err()
                .attribute()
                .map(str::to_owned)
        };
        let mut no_id = minimal();
        no_id.as_object_mut().unwrap().remove("id");
        assert_eq!(attribute_of(no_id), Some("id".into()));
        assert_eq!(attribute_of(with("id", json!(5))), Some("id".into()));
        assert_eq!(attribute_of(with("time", json!(0))), Some("time".into()));
        assert_eq!(
            attribute_of(with("data_base64", json!("%%%"))),
            Some("data_base64".into())
        );
        assert_eq!(
            attribute_of(with("data_base64", json!(1))),
            Some("data_base64".into())
        );
        let mut both = with("data", json!(1));
        both["data_base64"] = json!("AA==");
        assert_eq!(attribute_of(both), Some("data_base64".into()));
        assert_eq!(attribute_of(with("ext", json!({"a": 1}))), Some("ext".into()));
        assert!(matches!(
            CloudEvent::from_json(json!([1])),
            Err(EventError::Malformed { .. })
        ));
        assert!(matches!(
            CloudEvent::from_json_slice(b"{"),
            Err(EventError::Malformed { .. })
        ));
    }

    #[test]
    fn deserialize_checks_shape_but_not_constraints() {
        let relaxed: CloudEvent = serde_json::from_value(with("time", json!("later"))).unwrap();
        assert!(relaxed.validate().is_err());
        assert!(serde_json::from_value::<CloudEvent>(with("id", json!(1))).is_err());
    }
}
