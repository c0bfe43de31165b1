//! Media types (RFC 2046 names, RFC 9110 syntax): validates `datacontenttype` and tells the
//! bindings whether a body is JSON, text or opaque bytes.

/// A parsed media type: `type/subtype` lower-cased, parameters with lower-cased names and
/// unquoted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaType {
    pub(crate) essence: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`.
    pub(crate) fn parse(s: &str) -> Result<MediaType, String> {
        let mut rest = s.trim_matches(is_ows);
        let type_len = token_len(rest);
        let (ty, after_type) = rest.split_at(type_len);
        let Some(after_slash) = after_type.strip_prefix('/') else {
            return Err(format!("{s:?} is not a media type of the form type/subtype"));
        };
        let subtype_len = token_len(after_slash);
        let (subtype, after_subtype) = after_slash.split_at(subtype_len);
        if ty.is_empty() || subtype.is_empty() {
            return Err(format!("{s:?} is not a media type of the form type/subtype"));
        }
        let essence = format!("{}/{}", ty.to_ascii_lowercase(), subtype.to_ascii_lowercase());
        rest = after_subtype;
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(is_ows);
            if rest.is_empty() {
                break;
            }
            let Some(after_semicolon) = rest.strip_prefix(';') else {
                return Err(format!("{s:?}: expected ';' before a parameter"));
            };
            rest = after_semicolon.trim_start_matches(is_ows);
            if rest.is_empty() || rest.starts_with(';') {
                continue;
            }
            let name_len = token_len(rest);
            let (name, after_name) = rest.split_at(name_len);
            let Some(after_eq) = after_name.strip_prefix('=').filter(|_| !name.is_empty()) else {
                return Err(format!("{s:?}: a parameter must be name=value"));
            };
            let (value, after_value) = parse_param_value(after_eq).ok_or_else(|| {
                format!("{s:?}: parameter {name:?} needs a token or a quoted string as its value")
            })?;
            params.push((name.to_ascii_lowercase(), value));
            rest = after_value;
        }
        Ok(MediaType { essence, params })
    }

    /// The value of a parameter, by case-insensitive name.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// JSON: `application/json`, `text/json` or any `+json` structured syntax suffix.
    pub(crate) fn is_json(&self) -> bool {
        self.essence == "application/json" || self.essence == "text/json" || self.essence.ends_with("+json")
    }

    /// Text that can travel as a JSON string: `text/*`, XML, and no charset other than UTF-8.
    pub(crate) fn is_text(&self) -> bool {
        let texty = self.essence.starts_with("text/")
            || self.essence == "application/xml"
            || self.essence.ends_with("+xml");
        texty && self.is_utf8()
    }

    /// No `charset` parameter, or one that UTF-8 text satisfies.
    pub(crate) fn is_utf8(&self) -> bool {
        self.param("charset")
            .is_none_or(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii"))
    }
}

/// RFC 9110 OWS: spaces and horizontal tabs.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Length of the RFC 2045 token at the start of `s`: ASCII without controls, space and tspecials.
fn token_len(s: &str) -> usize {
    s.bytes()
        .take_while(|&c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&c))
        .count()
}

/// A token or a quoted string, unquoted, and what follows it.
fn parse_param_value(s: &str) -> Option<(String, &str)> {
    let Some(quoted) = s.strip_prefix('"') else {
        let len = token_len(s);
        return (len > 0).then(|| (s[..len].to_owned(), &s[len..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c if c == '\t' || !c.is_ascii_control() => value.push(c),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_and_parameters() {
        let mt = MediaType::parse("Application/JSON ; charset=\"UTF-8\"; q=1").unwrap();
        assert_eq!(mt.essence, "application/json");
        assert_eq!(mt.param("Charset"), Some("UTF-8"));
        assert_eq!(mt.param("q"), Some("1"));
        assert!(mt.is_json());
        assert!(MediaType::parse("application/json;").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_media_type() {
        for bad in [
            "",
            "json",
            "application/",
            "/json",
            "application/json charset=utf-8",
            "application/json; charset",
            "application/json; =x",
            "application/json; charset=\"open",
            "text/plain; a=b c",
            "appli cation/json",
        ] {
            assert!(MediaType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classifies_json_and_text() {
        let kind = |s: &str| {
            let mt = MediaType::parse(s).unwrap();
            (mt.is_json(), mt.is_text())
        };
        assert_eq!(kind("application/cloudevents+json"), (true, false));
        assert_eq!(kind("text/plain"), (false, true));
        assert_eq!(kind("text/plain; charset=utf-8"), (false, true));
        assert_eq!(kind("text/plain; charset=latin1"), (false, false));
        assert_eq!(kind("application/atom+xml"), (false, true));
        assert_eq!(kind("application/octet-stream"), (false, false));
    }
}
