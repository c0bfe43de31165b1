//! A CloudEvents 1.0 event: its context attributes and its data, in the shape of the JSON event
//! format so that serde gives the structured-mode body directly.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The only `specversion` this crate speaks.
pub const SPEC_VERSION: &str = "1.0";

/// A CloudEvents 1.0 event.
///
/// Serializes to the JSON event format; extensions are flattened next to the context attributes,
/// as that format requires. Deserializing checks the JSON shape (attribute types, `data` versus
/// `data_base64`, base64) but not the spec's constraints: call [`CloudEvent::validate`], or use
/// [`CloudEvent::from_json`], for input from outside.
///
/// Data lives in `data` (a JSON value: a document, or a string for text) or in `data_base64`
/// (raw bytes), never both.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339; [`CloudEvent::time`] gives it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Binary data; serialized as the base64 `data_base64` member.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_base64")]
    pub data_base64: Option<Bytes>,
    /// Extension attributes: strings, integers or booleans.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

impl CloudEvent {
    /// A new event with a fresh id, the current time and JSON data (`null` meaning no data).
    pub fn new(ty: &str, source: String, data: Value) -> CloudEvent {
        CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: uuid::Uuid::new_v4().to_string(),
            source,
            ty: ty.into(),
            subject: None,
            time: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: (!data.is_null()).then_some(data),
            data_base64: None,
            extensions: BTreeMap::new(),
        }
    }

    /// The event time, when it has a valid one.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let t = self.time.as_deref()?;
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The canonical string form of a context attribute or extension (not of `data`), as
    /// filters compare it and HTTP headers carry it. `None` when the event does not have it.
    pub fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        let value = match name {
            "specversion" => &self.specversion,
            "id" => &self.id,
            "source" => &self.source,
            "type" => &self.ty,
            "subject" => self.subject.as_ref()?,
            "time" => self.time.as_ref()?,
            "datacontenttype" => self.datacontenttype.as_ref()?,
            "dataschema" => self.dataschema.as_ref()?,
            _ => return self.extensions.get(name).and_then(extension_string),
        };
        Some(Cow::Borrowed(value))
    }
}

/// The canonical string of an extension value: the string itself, or the JSON text of an
/// integer or boolean. Other JSON values have none (validation refuses them).
pub(crate) fn extension_string(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn serialize_base64<S: Serializer>(data: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
    match data {
        Some(bytes) => s.serialize_str(&BASE64.encode(bytes)),
        None => s.serialize_none(),
    }
}

/// A lifecycle event about `tenant/function`, with the catalog's source, subject and a
/// `correlationid` extension linking the events of one deploy.
pub fn lifecycle(ty: &str, tenant: &str, function: &str, correlation_id: &str, data: Value) -> CloudEvent {
    let mut ev = CloudEvent::new(ty, format!("io.knative.lambda/{tenant}/{function}"), data);
    ev.subject = Some(format!("{tenant}/{function}"));
    ev.extensions
        .insert("correlationid".into(), Value::String(correlation_id.into()));
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[test]
    fn lifecycle_events_follow_the_catalog() {
        let ev = lifecycle(
            types::BUILD_STARTED,
            "acme",
            "hello",
            "hello-00001",
            serde_json::json!({"revision": 1}),
        );
        assert_eq!(ev.validate(), Ok(()));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "io.knative.lambda.lifecycle.build.started");
        assert_eq!(json["source"], "io.knative.lambda/acme/hello");
        assert_eq!(json["subject"], "acme/hello");
        assert_eq!(json["correlationid"], "hello-00001");
        assert!(ev.time().is_some());
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn null_data_means_no_data() {
        let ev = CloudEvent::new("t", "s".into(), Value::Null);
        assert_eq!(ev.data, None);
        assert!(
            !serde_json::to_value(&ev)
                .unwrap()
                .as_object()
                .unwrap()
                .contains_key("data")
        );
    }

    #[test]
    fn binary_data_serializes_as_data_base64() {
        let mut ev = CloudEvent::new("t", "s".into(), Value::Null);
        ev.datacontenttype = Some("application/octet-stream".into());
        ev.data_base64 = Some(Bytes::from_static(b"\x00\xffhi"));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["data_base64"], "AP9oaQ==");
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn attributes_read_in_canonical_string_form() {
        let mut ev = CloudEvent::new("com.example.x", "/src".into(), Value::Null);
        ev.extensions.insert("count".into(), serde_json::json!(-7));
        ev.extensions.insert("sampled".into(), Value::Bool(true));
        assert_eq!(ev.attribute("type").as_deref(), Some("com.example.x"));
        assert_eq!(ev.attribute("source").as_deref(), Some("/src"));
        assert_eq!(ev.attribute("count").as_deref(), Some("-7"));
        assert_eq!(ev.attribute("sampled").as_deref(), Some("true"));
        assert_eq!(ev.attribute("subject"), None);
        assert_eq!(ev.attribute("missing"), None);
    }
}
