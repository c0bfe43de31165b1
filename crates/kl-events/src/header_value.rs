//! Attribute values in HTTP headers: the binding's percent-encoding (space, `"`, `%` and
//! everything outside printable ASCII) and its decoding, which also unquotes the quoted strings
//! older senders used.

/// Percent-encodes an attribute value for a `ce-*` header, as UTF-8 with upper-case hex.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '!'..='~') && c != '"' && c != '%' {
            out.push(c);
        } else {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes a `ce-*` header value: unquotes a quoted string, then performs one round of
/// percent-decoding. Malformed escapes and byte sequences that are not UTF-8 (overlong forms
/// included) are refused, as the binding requires; raw UTF-8 that a lax sender did not encode
/// is taken as it is.
pub(crate) fn decode(raw: &[u8]) -> Result<String, String> {
    let raw = raw.trim_ascii();
    let unquoted;
    let raw = match raw.strip_prefix(b"\"") {
        Some(quoted) => {
            unquoted = unquote(quoted)?;
            unquoted.as_slice()
        }
        None => raw,
    };
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a '%' not followed by two hex digits")?;
            bytes.push(byte);
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

/// The content of an RFC 9110 quoted string (after its opening quote), with backslash escapes
/// resolved; nothing may follow the closing quote.
fn unquote(quoted: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(quoted.len());
    let mut bytes = quoted.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' if bytes.as_slice().is_empty() => return Ok(out),
            b'"' => return Err("has text after its closing quote".into()),
            b'\\' => out.push(*bytes.next().ok_or("ends inside a backslash escape")?),
            _ => out.push(b),
        }
    }
    Err("has an opening quote but no closing one".into())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn encodes_the_specs_example() {
        assert_eq!(
            encode("Euro \u{20AC} \u{1F600}"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(encode("100% \"sure\""), "100%25%20%22sure%22");
        assert_eq!(encode("/a/b?c=d&e"), "/a/b?c=d&e");
    }

    #[test]
    fn decodes_lower_case_needless_escapes_and_quoted_strings() {
        assert_eq!(decode(b"Euro%20%e2%82%ac").as_deref(), Ok("Euro \u{20AC}"));
        assert_eq!(decode(b"%41bc").as_deref(), Ok("Abc"));
        assert_eq!(decode(b"\"a b \\\"c\\\"\"").as_deref(), Ok("a b \"c\""));
        assert_eq!(decode(b"\"50%25\"").as_deref(), Ok("50%"));
        assert_eq!(decode("caf\u{e9}".as_bytes()).as_deref(), Ok("caf\u{e9}"));
    }

    #[test]
    fn refuses_broken_escapes_and_invalid_utf8() {
        for bad in [
            &b"%C0%A0"[..],
            b"%FF",
            b"50%",
            b"%4",
            b"%zz",
            b"\"open",
            b"\"a\"b",
            b"\"a\\",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn decoding_inverts_encoding(s in any::<String>()) {
            let encoded = encode(&s);
            prop_assert!(encoded.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"'));
            prop_assert_eq!(decode(encoded.as_bytes()), Ok(s));
        }
    }
}
