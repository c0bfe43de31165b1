//! RFC 3986 syntax checks for the attributes typed `URI-reference` (`source`) and `URI`
//! (`dataschema`). They check characters, percent-encoding, the scheme and where a fragment may
//! stand; they do not resolve anything or judge whether a host exists.

/// Checks a URI-reference (RFC 3986 §4.1): an absolute URI or a relative reference.
pub(crate) fn check_uri_reference(s: &str) -> Result<(), String> {
    let rest = match split_scheme(s)? {
        Some((_, rest)) => rest,
        None => s,
    };
    check_hierarchy(rest)
}

/// Checks an absolute URI (RFC 3986 §4.3): a scheme, and no fragment.
pub(crate) fn check_absolute_uri(s: &str) -> Result<(), String> {
    let Some((_, rest)) = split_scheme(s)? else {
        return Err("must be an absolute URI with a scheme, such as https://example.com/schema".into());
    };
    if rest.contains('#') {
        return Err("an absolute URI has no #fragment (RFC 3986 section 4.3)".into());
    }
    check_hierarchy(rest)
}

/// Splits `scheme:rest` when the reference has a scheme. A colon in the first segment of a
/// relative reference is a syntax error, so a colon before any `/`, `?` or `#` must end a scheme.
fn split_scheme(s: &str) -> Result<Option<(&str, &str)>, String> {
    let first_delim = s.find(['/', '?', '#']).unwrap_or(s.len());
    let Some(colon) = s[..first_delim].find(':') else {
        return Ok(None);
    };
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        return Err(format!(
            "{scheme:?} is not a URI scheme, and a relative reference cannot have ':' in its first \
             segment (write ./ before it)"
        ));
    }
    Ok(Some((scheme, &s[colon + 1..])))
}

/// Checks `[//authority] path [?query] [#fragment]`.
fn check_hierarchy(s: &str) -> Result<(), String> {
    let (before_fragment, fragment) = match s.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (s, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let path = match before_query.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            check_chars(&after[..end], "authority", |c| {
                is_pchar(c) || matches!(c, b'[' | b']')
            })?;
            &after[end..]
        }
        None => before_query,
    };
    check_chars(path, "path", |c| is_pchar(c) || c == b'/')?;
    if let Some(query) = query {
        check_chars(query, "query", |c| is_pchar(c) || matches!(c, b'/' | b'?'))?;
    }
    if let Some(fragment) = fragment {
        check_chars(fragment, "fragment", |c| is_pchar(c) || matches!(c, b'/' | b'?'))?;
    }
    Ok(())
}

/// Checks that every byte is allowed in this part, or is a well-formed `%XX` escape.
fn check_chars(part: &str, name: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!("the {name} has a '%' not followed by two hex digits"));
            }
            i += 3;
            continue;
        }
        if !allowed(c) {
            let shown = part[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(format!(
                "the {name} contains {shown:?}, which must be percent-encoded"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// `pchar` without `pct-encoded`: unreserved, sub-delims, `:` and `@`.
fn is_pchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_specs_source_examples() {
        for ok in [
            "https://github.com/cloudevents",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "/cloudevents/spec/pull/123",
            "/sensors/tn-1234567/alerts",
            "1-555-123-4567",
            "io.knative.lambda/acme/hello",
            "http://[::1]:8080/a?b=c#d",
            "./a:b",
            "%41bc",
        ] {
            assert_eq!(check_uri_reference(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "has space",
            "a:b:c/ but space",
            "1a:b",
            ":nothing",
            "50%",
            "%zz",
            "caf\u{e9}",
            "a#b#c",
            "/path[0]",
            "x\"y",
        ] {
            assert!(check_uri_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_uris_need_a_scheme_and_no_fragment() {
        assert_eq!(check_absolute_uri("https://example.com/schema.json"), Ok(()));
        assert_eq!(check_absolute_uri("urn:example:schema"), Ok(()));
        assert!(check_absolute_uri("/relative/schema").is_err());
        assert!(check_absolute_uri("https://example.com/s.json#/defs/a").is_err());
    }
}
