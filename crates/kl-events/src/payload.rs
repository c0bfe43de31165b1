//! Event data as the body of a binary-mode message (HTTP, AMQP): the bytes `datacontenttype`
//! describes, and back to JSON, text or bytes by that same content type.

use bytes::Bytes;
use serde_json::Value;

use crate::CloudEvent;
use crate::media_type::MediaType;

/// What a content type says about a body.
enum Kind {
    Json,
    Text,
    Opaque,
}

fn kind(content_type: &str) -> Kind {
    match MediaType::parse(content_type) {
        Ok(mt) if mt.is_json() => Kind::Json,
        Ok(mt) if mt.is_text() => Kind::Text,
        _ => Kind::Opaque,
    }
}

/// The content type and body carrying an event's data. JSON data without a `datacontenttype`
/// goes out as `application/json`, the type the JSON format implies; a string under a non-JSON
/// type goes out as its raw text; any other JSON value goes out as JSON text.
pub(crate) fn encode(ev: &CloudEvent) -> (Option<String>, Bytes) {
    let content_type = ev.datacontenttype.clone();
    if let Some(bytes) = &ev.data_base64 {
        return (content_type, bytes.clone());
    }
    let Some(data) = &ev.data else {
        return (content_type, Bytes::new());
    };
    match (content_type, data) {
        (None, data) => (Some("application/json".into()), Bytes::from(data.to_string())),
        (Some(ct), Value::String(text)) if !matches!(kind(&ct), Kind::Json) => {
            (Some(ct), Bytes::from(text.clone()))
        }
        (ct, data) => (ct, Bytes::from(data.to_string())),
    }
}

/// The data a body carries: JSON for JSON content types when it parses, a string for UTF-8
/// text, bytes otherwise (no content type included: the sender did not say what it is).
/// An empty body, or JSON `null`, is no data, as in the JSON format.
pub(crate) fn decode(content_type: Option<&str>, body: Bytes) -> (Option<Value>, Option<Bytes>) {
    if body.is_empty() {
        return (None, None);
    }
    match content_type.map(kind) {
        Some(Kind::Json) => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Null) => (None, None),
            Ok(value) => (Some(value), None),
            Err(_) => (None, Some(body)),
        },
        Some(Kind::Text) => match std::str::from_utf8(&body) {
            Ok(text) => (Some(Value::String(text.to_owned())), None),
            Err(_) => (None, Some(body)),
        },
        Some(Kind::Opaque) | None => (None, Some(body)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(ct: Option<&str>, data: Option<Value>, bytes: Option<&'static [u8]>) -> CloudEvent {
        let mut ev = CloudEvent::new("t", "/s".into(), Value::Null);
        ev.datacontenttype = ct.map(str::to_owned);
        ev.data = data;
        ev.data_base64 = bytes.map(Bytes::from_static);
        ev
    }

    #[test]
    fn encodes_by_content_type() {
        let body = |ev: CloudEvent| encode(&ev);
        assert_eq!(
            body(event(None, Some(json!({"a": 1})), None)),
            (Some("application/json".into()), Bytes::from_static(b"{\"a\":1}"))
        );
        assert_eq!(
            body(event(Some("application/json"), Some(json!("hi")), None)).1,
            Bytes::from_static(b"\"hi\"")
        );
        assert_eq!(
            body(event(Some("text/plain"), Some(json!("hi")), None)).1,
            Bytes::from_static(b"hi")
        );
        assert_eq!(
            body(event(Some("text/plain"), Some(json!(5)), None)).1,
            Bytes::from_static(b"5")
        );
        assert_eq!(
            body(event(Some("image/png"), None, Some(b"\x89PNG"))),
            (Some("image/png".into()), Bytes::from_static(b"\x89PNG"))
        );
        assert_eq!(body(event(Some("text/plain"), None, None)).1, Bytes::new());
    }

    #[test]
    fn decodes_by_content_type() {
        let data = |ct: Option<&str>, body: &'static [u8]| decode(ct, Bytes::from_static(body));
        assert_eq!(
            data(Some("application/json"), b"{\"a\":1}"),
            (Some(json!({"a": 1})), None)
        );
        assert_eq!(
            data(Some("application/vnd.x+json"), b"[1]"),
            (Some(json!([1])), None)
        );
        assert_eq!(
            data(Some("application/json"), b"{oops"),
            (None, Some(Bytes::from_static(b"{oops")))
        );
        assert_eq!(data(Some("text/plain"), b"hi"), (Some(json!("hi")), None));
        assert_eq!(
            data(Some("text/plain"), b"\xff"),
            (None, Some(Bytes::from_static(b"\xff")))
        );
        assert_eq!(
            data(Some("text/plain; charset=latin1"), b"hi"),
            (None, Some(Bytes::from_static(b"hi")))
        );
        assert_eq!(data(None, b"{}"), (None, Some(Bytes::from_static(b"{}"))));
        assert_eq!(data(Some("application/json"), b""), (None, None));
        assert_eq!(data(Some("application/json"), b"null"), (None, None));
    }
}
