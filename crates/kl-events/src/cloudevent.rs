//! A CloudEvents 1.0 event in its JSON form.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A CloudEvents 1.0 event (structured JSON form). Extensions are flattened next to the
/// context attributes, as the JSON format requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

impl CloudEvent {
    /// A new event with a fresh id and the current time.
    pub fn new(ty: &str, source: String, data: Value) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source,
            ty: ty.into(),
            subject: None,
            time: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            datacontenttype: Some("application/json".into()),
            data: Some(data),
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
}
