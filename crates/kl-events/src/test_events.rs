//! Proptest strategies for arbitrary valid events, shared by the format and binding tests.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::CloudEvent;
use crate::validate::CONTEXT_ATTRIBUTES;

/// A CloudEvents string: printable Unicode, spaces, quotes and percent signs included.
fn text(min: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ -~\u{a0}-\u{17f}\u{20ac}\u{1f600}]{{{min},12}}"))
        .expect("valid regex")
}

fn source() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z0-9._~-]{1,10}(/[a-z0-9]{1,5}){0,2}",
        "https://[a-z]{1,8}\\.example(/[a-z0-9]{1,6}){0,2}(\\?[a-z]=[0-9])?",
        "urn:uuid:[0-9a-f]{8}",
        "io\\.knative\\.lambda/[a-z]{1,6}/[a-z]{1,6}",
    ]
}

/// RFC 3339 times in UTC or at an offset, with 0 to 9 fractional digits.
fn time() -> impl Strategy<Value = String> {
    (
        0i64..4_102_444_800,
        0u32..1_000_000_000,
        -720i32..=720,
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, offset_minutes, millis_only)| {
            let nanos = if millis_only {
                nanos / 1_000_000 * 1_000_000
            } else {
                nanos
            };
            let utc = DateTime::from_timestamp(secs, nanos).expect("in range");
            match FixedOffset::east_opt(offset_minutes * 60) {
                Some(offset) if offset_minutes % 2 == 0 => utc
                    .with_timezone(&offset)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
                _ => utc.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            }
        })
}

/// JSON without floats, whose text does not round-trip exactly.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        text(0).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

type Payload = (Option<String>, Option<Value>, Option<Bytes>);

/// Content type and data that agree: JSON under JSON types (or none), text under text types,
/// bytes under opaque types (or none), or a content type without data.
fn payload() -> impl Strategy<Value = Payload> {
    let json_type = prop_oneof![
        Just("application/json"),
        Just("application/json; charset=utf-8"),
        Just("application/vnd.kl+json"),
    ];
    let text_type = prop_oneof![
        Just("text/plain"),
        Just("text/csv; charset=utf-8"),
        Just("application/xml")
    ];
    let opaque_type = prop_oneof![Just("application/octet-stream"), Just("image/png")];
    let json_data = json_value().prop_filter("null is no data", |v| !v.is_null());
    let bytes = proptest::collection::vec(any::<u8>(), 1..32).prop_map(Bytes::from);
    prop_oneof![
        Just((None, None, None)),
        (json_type.clone(), json_data.clone()).prop_map(|(ct, v)| (Some(ct.to_owned()), Some(v), None)),
        json_data.prop_map(|v| (None, Some(v), None)),
        (text_type, text(1)).prop_map(|(ct, t)| (Some(ct.to_owned()), Some(Value::String(t)), None)),
        (opaque_type.clone(), bytes.clone()).prop_map(|(ct, b)| (Some(ct.to_owned()), None, Some(b))),
        bytes.prop_map(|b| (None, None, Some(b))),
        prop_oneof![json_type, opaque_type].prop_map(|ct| (Some(ct.to_owned()), None, None)),
    ]
}

fn extensions() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let name = "[a-z0-9]{1,12}".prop_filter("not a context attribute", |n: &String| {
        n != "data" && !CONTEXT_ATTRIBUTES.contains(&n.as_str())
    });
    let value = prop_oneof![
        text(0).prop_map(Value::String),
        any::<i32>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
    ];
    proptest::collection::btree_map(name, value, 0..4)
}

/// Arbitrary valid events.
pub(crate) fn events() -> impl Strategy<Value = CloudEvent> {
    let attributes = (
        text(1),
        source(),
        "[a-z]{1,5}(\\.[a-z]{1,5}){0,3}",
        proptest::option::of(text(1)),
        proptest::option::of(time()),
        proptest::option::of("https://schemas\\.example/[a-z]{1,8}\\.json"),
    );
    (attributes, payload(), extensions()).prop_map(
        |((id, source, ty, subject, time, dataschema), (datacontenttype, data, data_base64), extensions)| {
            CloudEvent {
                specversion: "1.0".into(),
                id,
                source,
                ty,
                subject,
                time,
                datacontenttype,
                dataschema,
                data,
                data_base64,
                extensions,
            }
        },
    )
}

/// The event with its extension values as strings, as protocol headers carry them.
pub(crate) fn string_extensions(mut ev: CloudEvent) -> CloudEvent {
    for value in ev.extensions.values_mut() {
        if let Some(s) = crate::cloudevent::extension_string(value) {
            *value = Value::String(s.into_owned());
        }
    }
    ev
}

proptest! {
    #[test]
    fn generated_events_are_valid(ev in events()) {
        prop_assert_eq!(ev.validate(), Ok(()));
    }

    #[test]
    fn the_json_format_round_trips(ev in events()) {
        let json = serde_json::to_vec(&ev).unwrap();
        prop_assert_eq!(CloudEvent::from_json_slice(&json), Ok(ev));
    }
}
