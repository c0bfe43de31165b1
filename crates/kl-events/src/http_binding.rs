//! The CloudEvents HTTP protocol binding as pure functions over headers and body: reading the
//! binary, structured and batched modes with size limits, and writing an event in binary mode
//! for delivery to a function.

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::media_type::MediaType;
use crate::validate::check_attribute_name;
use crate::{CloudEvent, EventError, header_value, payload};

/// Content type of one event in the JSON format (structured mode).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Content type of a JSON array of events (batched mode).
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Prefix of the headers that carry attributes in binary mode.
const HEADER_PREFIX: &str = "ce-";

/// Size limits on incoming events; exceeding one is an [`EventError::TooLarge`] or
/// [`EventError::TooManyEvents`] (HTTP 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event: the body in binary and structured mode; the compact JSON of each
    /// element in a batch.
    pub max_event_bytes: usize,
    /// Largest batch body.
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
}

impl Default for Limits {
    /// 1 MiB per event, 10 MiB and 1000 events per batch.
    fn default() -> Limits {
        Limits {
            max_event_bytes: 1 << 20,
            max_batch_bytes: 10 << 20,
            max_batch_events: 1000,
        }
    }
}

/// Reads the events an HTTP request carries, by its `Content-Type`:
/// `application/cloudevents+json` is one structured event, `application/cloudevents-batch+json`
/// a batch (all events valid or the whole batch refused, naming the event's index), and
/// anything else a binary-mode event whose attributes are `ce-*` headers. Every event returned
/// is valid.
pub fn parse_request(
    headers: &HeaderMap,
    body: Bytes,
    limits: &Limits,
) -> Result<Vec<CloudEvent>, EventError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| EventError::invalid("datacontenttype", "Content-Type is not visible ASCII"))
        })
        .transpose()?;
    let media_type = content_type.and_then(|ct| MediaType::parse(ct).ok());
    match media_type {
        Some(mt) if mt.essence == STRUCTURED_CONTENT_TYPE || mt.essence == BATCH_CONTENT_TYPE => {
            if !mt.is_utf8() {
                return Err(EventError::UnsupportedFormat {
                    content_type: content_type.unwrap_or_default().to_owned(),
                });
            }
            if mt.essence == STRUCTURED_CONTENT_TYPE {
                check_size("event", body.len(), limits.max_event_bytes)?;
                Ok(vec![CloudEvent::from_json_slice(&body)?])
            } else {
                parse_batch(&body, limits)
            }
        }
        Some(mt) if mt.essence.starts_with("application/cloudevents") => Err(EventError::UnsupportedFormat {
            content_type: content_type.unwrap_or_default().to_owned(),
        }),
        _ => Ok(vec![parse_binary(headers, content_type, body, limits)?]),
    }
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), EventError> {
    if size > limit {
        return Err(EventError::TooLarge { what, size, limit });
    }
    Ok(())
}

fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<CloudEvent>, EventError> {
    check_size("batch", body.len(), limits.max_batch_bytes)?;
    let malformed = |reason: String| EventError::Malformed {
        what: "event batch",
        reason,
    };
    let Value::Array(items) = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))? else {
        return Err(malformed("a batch is a JSON array of events".into()));
    };
    if items.len() > limits.max_batch_events {
        return Err(EventError::TooManyEvents {
            count: items.len(),
            limit: limits.max_batch_events,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let in_batch = |source| EventError::InBatch {
                index,
                source: Box::new(source),
            };
            check_size("event", compact_json_len(&item), limits.max_event_bytes).map_err(in_batch)?;
            CloudEvent::from_json(item).map_err(in_batch)
        })
        .collect()
}

/// Bytes of a value's compact JSON text, counted without building it.
fn compact_json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn parse_binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: Bytes,
    limits: &Limits,
) -> Result<CloudEvent, EventError> {
    check_size("event", body.len(), limits.max_event_bytes)?;
    let mut attributes = BTreeMap::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        check_attribute_name(attribute).map_err(|r| EventError::invalid(attribute, r))?;
        let value = header_value::decode(value.as_bytes())
            .map_err(|r| EventError::invalid(attribute, format!("header {name} {r}")))?;
        if attributes.insert(attribute.to_owned(), value).is_some() {
            return Err(EventError::invalid(
                attribute,
                format!("header {name} is sent more than once"),
            ));
        }
    }
    if attributes.is_empty() {
        return Err(EventError::NotACloudEvent);
    }
    if attributes.contains_key("datacontenttype") {
        return Err(EventError::invalid(
            "datacontenttype",
            "in binary mode the data's type is the Content-Type header; ce-datacontenttype must not be sent",
        ));
    }
    let mut take = |name| attributes.remove(name);
    let required = |value: Option<String>, attribute| value.ok_or(EventError::Missing { attribute });
    let (data, data_base64) = payload::decode(content_type, body);
    let ev = CloudEvent {
        specversion: required(take("specversion"), "specversion")?,
        id: required(take("id"), "id")?,
        source: required(take("source"), "source")?,
        ty: required(take("type"), "type")?,
        subject: take("subject"),
        time: take("time"),
        datacontenttype: content_type.map(str::to_owned),
        dataschema: take("dataschema"),
        data,
        data_base64,
        extensions: attributes
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    };
    ev.validate()?;
    Ok(ev)
}

/// Writes a valid event in binary mode, as deliveries to functions use: each attribute in a
/// percent-encoded `ce-*` header, `datacontenttype` as `Content-Type`, the data as the body
/// (`data_base64` as its raw bytes).
///
/// [`parse_request`] reads the result back as the same event, except for what HTTP headers
/// cannot say: extension values come back as strings (`5` as `"5"`), JSON data without a
/// `datacontenttype` comes back as `application/json` (the type the JSON format implies), an
/// empty string or byte string, or JSON `null`, comes back as no data, and data whose JSON
/// type does not fit its content type comes back as what the content type says (see
/// `payload::decode`).
pub fn to_binary(ev: &CloudEvent) -> Result<(HeaderMap, Bytes), EventError> {
    ev.validate()?;
    let mut headers = HeaderMap::new();
    let standard = [
        ("specversion", Some(&ev.specversion)),
        ("id", Some(&ev.id)),
        ("source", Some(&ev.source)),
        ("type", Some(&ev.ty)),
        ("subject", ev.subject.as_ref()),
        ("time", ev.time.as_ref()),
        ("dataschema", ev.dataschema.as_ref()),
    ];
    for (name, value) in standard {
        if let Some(value) = value {
            headers.insert(ce_header(name)?, header(name, &header_value::encode(value))?);
        }
    }
    for (name, value) in &ev.extensions {
        if let Some(value) = crate::cloudevent::extension_string(value) {
            headers.insert(ce_header(name)?, header(name, &header_value::encode(&value))?);
        }
    }
    let (content_type, body) = payload::encode(ev);
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE, header("datacontenttype", &ct)?);
    }
    Ok((headers, body))
}

/// Writes a valid event in structured mode: the JSON format, `application/cloudevents+json`.
pub fn to_structured(ev: &CloudEvent) -> Result<(HeaderMap, Bytes), EventError> {
    ev.validate()?;
    let body = serde_json::to_vec(ev).map_err(|e| EventError::Malformed {
        what: "JSON event",
        reason: e.to_string(),
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
    );
    Ok((headers, Bytes::from(body)))
}

fn ce_header(attribute: &str) -> Result<HeaderName, EventError> {
    HeaderName::try_from(format!("{HEADER_PREFIX}{attribute}"))
        .map_err(|e| EventError::invalid(attribute, format!("cannot be an HTTP header name: {e}")))
}

fn header(attribute: &str, value: &str) -> Result<HeaderValue, EventError> {
    HeaderValue::from_str(value)
        .map_err(|e| EventError::invalid(attribute, format!("cannot be an HTTP header value: {e}")))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::test_events::{events, string_extensions};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                )
            })
            .collect()
    }

    fn binary_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "1234-1234-1234"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-type", "com.example.someevent"),
            ("ce-time", "2018-04-05T03:56:24Z"),
        ]
    }

    fn parse(pairs: &[(&str, &str)], body: &'static [u8]) -> Result<Vec<CloudEvent>, EventError> {
        parse_request(&headers(pairs), Bytes::from_static(body), &Limits::default())
    }

    #[test]
    fn reads_a_binary_mode_event() {
        let mut pairs = binary_headers();
        pairs.push(("content-type", "application/json; charset=utf-8"));
        pairs.push(("ce-subject", "Euro%20%E2%82%AC"));
        pairs.push(("ce-comexampleextension", "\"quoted value\""));
        pairs.push(("x-other", "ignored"));
        let ev = parse(&pairs, b"{\"a\": [1, 2]}").unwrap().remove(0);
        assert_eq!(ev.id, "1234-1234-1234");
        assert_eq!(ev.subject.as_deref(), Some("Euro \u{20AC}"));
        assert_eq!(
            ev.datacontenttype.as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(ev.data, Some(json!({"a": [1, 2]})));
        assert_eq!(ev.extensions["comexampleextension"], "quoted value");
        assert_eq!(ev.extensions.len(), 1);
    }

    #[test]
    fn binary_mode_keeps_opaque_bodies_as_bytes() {
        let mut pairs = binary_headers();
        pairs.push(("content-type", "image/png"));
        let ev = parse(&pairs, b"\x89PNG\r\n").unwrap().remove(0);
        assert_eq!(ev.data, None);
        assert_eq!(ev.data_base64.as_deref(), Some(&b"\x89PNG\r\n"[..]));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["data_base64"], "iVBORw0K");
    }

    #[test]
    fn binary_mode_names_the_attribute_at_fault() {
        let refused = |extra: (&str, &str), drop: &str| {
            let mut pairs = binary_headers();
            pairs.retain(|(k, _)| *k != drop);
            pairs.push(extra);
            parse(&pairs, b"").unwrap_err()
        };
        assert_eq!(
            refused(("x", "y"), "ce-id"),
            EventError::Missing { attribute: "id" }
        );
        assert_eq!(refused(("ce-time", "soon"), "ce-time").attribute(), Some("time"));
        assert_eq!(refused(("ce-subject", "%C0%A0"), "").attribute(), Some("subject"));
        assert_eq!(refused(("ce-subject", "50%"), "").attribute(), Some("subject"));
        assert_eq!(
            refused(("ce-datacontenttype", "text/plain"), "").attribute(),
            Some("datacontenttype")
        );
        assert_eq!(refused(("ce-data", "x"), "").attribute(), Some("data"));
        assert_eq!(refused(("ce-my_ext", "x"), "").attribute(), Some("my_ext"));
        assert_eq!(
            refused(("content-type", "json"), "").attribute(),
            Some("datacontenttype")
        );
        assert_eq!(
            refused(("ce-specversion", "1.0"), "").attribute(),
            Some("specversion")
        );
    }

    #[test]
    fn a_request_without_cloudevents_headers_is_not_an_event() {
        let err = parse(&[("content-type", "application/json")], b"{}").unwrap_err();
        assert_eq!(err, EventError::NotACloudEvent);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn reads_a_structured_event() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t",
                        "datacontenttype":"text/plain","data":"hi"}"#;
        let ev = parse(
            &[("content-type", "application/cloudevents+json; charset=UTF-8")],
            body,
        )
        .unwrap()
        .remove(0);
        assert_eq!(ev.data, Some(json!("hi")));
        assert_eq!(ev.datacontenttype.as_deref(), Some("text/plain"));
    }

    #[test]
    fn refuses_formats_other_than_json() {
        for ct in [
            "application/cloudevents+avro",
            "application/cloudevents",
            "application/cloudevents+json; charset=utf-16",
        ] {
            let err = parse(&[("content-type", ct)], b"{}").unwrap_err();
            assert!(matches!(err, EventError::UnsupportedFormat { .. }), "{ct}: {err}");
            assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let err = parse(&[("content-type", STRUCTURED_CONTENT_TYPE)], b"not json").unwrap_err();
        assert!(matches!(err, EventError::Malformed { .. }));
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let ct = [("content-type", BATCH_CONTENT_TYPE)];
        let good = br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},
                        {"specversion":"1.0","id":"2","source":"/s","type":"t"}]"#;
        assert_eq!(parse(&ct, good).unwrap().len(), 2);
        assert_eq!(parse(&ct, b"[]").unwrap(), vec![]);
        let bad = br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},
                       {"specversion":"1.0","id":"2","source":"/s","type":"t","time":"now"}]"#;
        let err = parse(&ct, bad).unwrap_err();
        assert!(matches!(err, EventError::InBatch { index: 1, .. }), "{err}");
        assert_eq!(err.attribute(), Some("time"));
        assert!(matches!(
            parse(&ct, b"{}").unwrap_err(),
            EventError::Malformed { .. }
        ));
    }

    #[test]
    fn size_limits_are_enforced_per_mode() {
        let limits = Limits {
            max_event_bytes: 80,
            max_batch_bytes: 200,
            max_batch_events: 2,
        };
        let event = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        let run = |ct: &str, body: String| {
            parse_request(&headers(&[("content-type", ct)]), Bytes::from(body), &limits)
        };
        assert!(run(STRUCTURED_CONTENT_TYPE, event.into()).is_ok());
        let big = format!(
            r#"{{"specversion":"1.0","id":"{}","source":"/s","type":"t"}}"#,
            "x".repeat(40)
        );
        let err = run(STRUCTURED_CONTENT_TYPE, big.clone()).unwrap_err();
        assert!(matches!(err, EventError::TooLarge { what: "event", .. }));
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let err = run(BATCH_CONTENT_TYPE, format!("[{big}]")).unwrap_err();
        assert!(matches!(err, EventError::InBatch { index: 0, .. }));
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let err = run(BATCH_CONTENT_TYPE, format!("[{event},{event},{event}]")).unwrap_err();
        assert_eq!(err, EventError::TooManyEvents { count: 3, limit: 2 });
        let padded = format!("[{event}{}]", " ".repeat(200));
        assert!(matches!(
            run(BATCH_CONTENT_TYPE, padded).unwrap_err(),
            EventError::TooLarge { what: "batch", .. }
        ));
        let mut pairs = binary_headers();
        pairs.push(("content-type", "text/plain"));
        let err = parse_request(&headers(&pairs), Bytes::from(vec![b'a'; 81]), &limits).unwrap_err();
        assert!(matches!(err, EventError::TooLarge { what: "event", .. }));
    }

    #[test]
    fn writes_binary_mode_for_delivery() {
        let mut ev = CloudEvent::new("com.example.x", "/s".into(), json!({"k": "v"}));
        ev.subject = Some("caf\u{e9} \"x\"".into());
        ev.extensions.insert("count".into(), json!(3));
        let (headers, body) = to_binary(&ev).unwrap();
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-subject"], "caf%C3%A9%20%22x%22");
        assert_eq!(headers["ce-count"], "3");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body, Bytes::from_static(b"{\"k\":\"v\"}"));
        assert!(!headers.contains_key("ce-datacontenttype"));
        ev.id = String::new();
        assert_eq!(to_binary(&ev).unwrap_err().attribute(), Some("id"));
    }

    proptest! {
        #[test]
        fn binary_mode_round_trips(ev in events()) {
            let (headers, body) = to_binary(&ev).unwrap();
            let back = parse_request(&headers, body, &Limits::default()).unwrap();
            let mut expected = string_extensions(ev);
            if expected.data.is_some() && expected.datacontenttype.is_none() {
                expected.datacontenttype = Some("application/json".into());
            }
            prop_assert_eq!(back, vec![expected]);
        }

        #[test]
        fn structured_mode_round_trips(ev in events()) {
            let (headers, body) = to_structured(&ev).unwrap();
            let back = parse_request(&headers, body, &Limits::default()).unwrap();
            prop_assert_eq!(back, vec![ev]);
        }

        #[test]
        fn batches_round_trip(batch in proptest::collection::vec(events(), 0..4)) {
            let body = serde_json::to_vec(&batch).unwrap();
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
            let back = parse_request(&headers, Bytes::from(body), &Limits::default()).unwrap();
            prop_assert_eq!(back, batch);
        }
    }
}
