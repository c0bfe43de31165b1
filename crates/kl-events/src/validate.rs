//! The CloudEvents 1.0 constraints on every attribute, checked once where events enter the
//! platform so that filters, the broker and deliveries can trust what they hold.

use chrono::DateTime;
use serde_json::Value;

use crate::media_type::MediaType;
use crate::uri::{check_absolute_uri, check_uri_reference};
use crate::{CloudEvent, EventError, SPEC_VERSION};

/// Context attributes the spec defines; an extension may not reuse their names.
pub(crate) const CONTEXT_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

/// Checks an attribute name: one or more of `a-z` and `0-9`, and not the reserved `data`.
/// The spec's advice to stay within 20 characters is a SHOULD, so longer names pass.
pub fn check_attribute_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an attribute name cannot be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Err(format!(
            "attribute names use only lower-case letters a-z and digits 0-9, not {c:?}"
        ));
    }
    if name == "data" {
        return Err("\"data\" is reserved for the event payload".into());
    }
    Ok(())
}

impl CloudEvent {
    /// Checks every constraint CloudEvents 1.0 puts on the attributes and data, and names the
    /// first attribute that breaks one.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::invalid(
                "specversion",
                format!(
                    "unsupported version {:?}; only CloudEvents {SPEC_VERSION} is spoken here",
                    self.specversion
                ),
            ));
        }
        check_non_empty_string("id", &self.id)?;
        check_non_empty_string("source", &self.source)?;
        check_uri_reference(&self.source).map_err(|r| EventError::invalid("source", r))?;
        check_non_empty_string("type", &self.ty)?;
        if let Some(subject) = &self.subject {
            check_non_empty_string("subject", subject)?;
        }
        if let Some(time) = &self.time {
            DateTime::parse_from_rfc3339(time).map_err(|e| {
                EventError::invalid("time", format!("{time:?} is not an RFC 3339 timestamp: {e}"))
            })?;
        }
        if let Some(ct) = &self.datacontenttype {
            MediaType::parse(ct).map_err(|r| EventError::invalid("datacontenttype", r))?;
        }
        if let Some(schema) = &self.dataschema {
            check_non_empty_string("dataschema", schema)?;
            check_absolute_uri(schema).map_err(|r| EventError::invalid("dataschema", r))?;
        }
        if self.data.is_some() && self.data_base64.is_some() {
            return Err(EventError::invalid(
                "data_base64",
                "data and data_base64 are mutually exclusive",
            ));
        }
        for (name, value) in &self.extensions {
            check_extension(name, value)?;
        }
        Ok(())
    }
}

fn check_extension(name: &str, value: &Value) -> Result<(), EventError> {
    check_attribute_name(name).map_err(|r| EventError::invalid(name, r))?;
    if CONTEXT_ATTRIBUTES.contains(&name) {
        return Err(EventError::invalid(
            name,
            "is a context attribute and cannot also be an extension",
        ));
    }
    match value {
        Value::String(s) => check_string(name, s),
        Value::Bool(_) => Ok(()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => Ok(()),
            Some(_) => Err(EventError::invalid(
                name,
                format!("{n} is outside the 32-bit range of a CloudEvents Integer"),
            )),
            None if n.is_u64() => Err(EventError::invalid(
                name,
                format!("{n} is outside the 32-bit range of a CloudEvents Integer"),
            )),
            None => Err(EventError::invalid(
                name,
                format!("{n} is not an integer; send fractions as strings"),
            )),
        },
        Value::Null => Err(EventError::invalid(
            name,
            "is null; leave an absent extension out instead",
        )),
        Value::Array(_) | Value::Object(_) => Err(EventError::invalid(
            name,
            "extension values are strings, integers or booleans, not arrays or objects",
        )),
    }
}

fn check_non_empty_string(attribute: &str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::invalid(attribute, "must be a non-empty string"));
    }
    check_string(attribute, value)
}

/// The CloudEvents String type: no control characters and no Unicode noncharacters.
fn check_string(attribute: &str, value: &str) -> Result<(), EventError> {
    match value.chars().find(|&c| is_control(c) || is_noncharacter(c)) {
        Some(c) => Err(EventError::invalid(
            attribute,
            format!(
                "contains U+{:04X}, which a CloudEvents string cannot hold",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn event() -> CloudEvent {
        let mut ev = CloudEvent::new("com.example.created", "/orders".into(), json!({"n": 1}));
        ev.subject = Some("order-1".into());
        ev.dataschema = Some("https://example.com/order.json".into());
        ev.extensions.insert("traceparent".into(), json!("00-abc"));
        ev
    }

    fn refused_attribute(ev: &CloudEvent) -> String {
        match ev.validate() {
            Err(EventError::Invalid { attribute, .. }) => attribute,
            other => panic!("expected an invalid attribute, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(event().validate(), Ok(()));
    }

    #[test]
    fn names_the_attribute_that_breaks_a_rule() {
        type BreakIt = fn(&mut CloudEvent);
        let cases: Vec<(&str, BreakIt)> = vec![
            ("specversion", |e| e.specversion = "0.3".into()),
            ("id", |e| e.id = String::new()),
            ("id", |e| e.id = "a\nb".into()),
            ("source", |e| e.source = String::new()),
            ("source", |e| e.source = "not a uri".into()),
            ("type", |e| e.ty = String::new()),
            ("type", |e| e.ty = "x\u{FFFE}".into()),
            ("subject", |e| e.subject = Some(String::new())),
            ("time", |e| e.time = Some("yesterday".into())),
            ("time", |e| e.time = Some("2024-01-01T00:00:00".into())),
            ("datacontenttype", |e| e.datacontenttype = Some("json".into())),
            ("dataschema", |e| e.dataschema = Some("/relative".into())),
            ("dataschema", |e| e.dataschema = Some(String::new())),
            ("data_base64", |e| e.data_base64 = Some(Bytes::from_static(b"x"))),
            ("Upper", |e| {
                e.extensions.insert("Upper".into(), json!("x"));
            }),
            ("with_underscore", |e| {
                e.extensions.insert("with_underscore".into(), json!("x"));
            }),
            ("data", |e| {
                e.extensions.insert("data".into(), json!("x"));
            }),
            ("subject", |e| {
                e.extensions.insert("subject".into(), json!("x"));
            }),
            ("obj", |e| {
                e.extensions.insert("obj".into(), json!({"a": 1}));
            }),
            ("list", |e| {
                e.extensions.insert("list".into(), json!([1]));
            }),
            ("nil", |e| {
                e.extensions.insert("nil".into(), Value::Null);
            }),
            ("ratio", |e| {
                e.extensions.insert("ratio".into(), json!(0.5));
            }),
            ("big", |e| {
                e.extensions.insert("big".into(), json!(1_i64 << 31));
            }),
            ("huge", |e| {
                e.extensions.insert("huge".into(), json!(u64::MAX));
            }),
            ("ctl", |e| {
                e.extensions.insert("ctl".into(), json!("\u{85}"));
            }),
        ];
        for (attribute, break_it) in cases {
            let mut ev = event();
            break_it(&mut ev);
            assert_eq!(refused_attribute(&ev), attribute);
        }
    }

    #[test]
    fn accepts_what_the_spec_allows() {
        let mut ev = event();
        ev.extensions
            .insert("averylongextensionnamebeyondtwenty".into(), json!("x"));
        ev.extensions.insert("min".into(), json!(i32::MIN));
        ev.extensions.insert("max".into(), json!(i32::MAX));
        ev.extensions.insert("flag".into(), json!(false));
        ev.extensions.insert("empty".into(), json!(""));
        ev.time = Some("2018-04-05T17:31:00.123456+02:00".into());
        ev.datacontenttype = Some("text/plain; charset=utf-8".into());
        ev.source = "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66".into();
        ev.id = "caf\u{e9} \u{1F600}".into();
        assert_eq!(ev.validate(), Ok(()));
    }
}
