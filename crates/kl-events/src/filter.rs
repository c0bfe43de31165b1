//! Trigger filters with Knative's semantics: conditions on event attributes (exact value,
//! prefix or suffix), all of which must hold. Stored and served in the JSON form of Knative's
//! `filters:` dialects; typed on the command line as `--filter ATTRIBUTE=[DIALECT:]VALUE`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use crate::CloudEvent;
use crate::validate::check_attribute_name;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    /// The attribute name breaks the CloudEvents naming rules.
    #[error("filter attribute {attribute:?} is invalid: {reason}")]
    InvalidAttribute { attribute: String, reason: String },

    /// A condition has an empty value, which would match nothing useful.
    #[error(
        "filter on {attribute:?}: the {dialect} value is empty; leave the condition out to match any value"
    )]
    EmptyValue {
        attribute: String,
        dialect: &'static str,
    },

    /// A command-line filter is not `ATTRIBUTE=[DIALECT:]VALUE`.
    #[error(
        "filter {input:?} is not ATTRIBUTE=VALUE, ATTRIBUTE=prefix:VALUE, ATTRIBUTE=suffix:VALUE \
         or ATTRIBUTE=exact:VALUE (for example type=com.example.created or subject=suffix:.png)"
    )]
    Syntax { input: String },

    /// A stored filter names a dialect other than `exact`, `prefix` or `suffix`.
    #[error("unsupported filter dialect {dialect:?}: use exact, prefix or suffix")]
    UnsupportedDialect { dialect: String },

    /// A stored filter entry has no dialect, or more than one.
    #[error("a filter entry has exactly one dialect (exact, prefix or suffix), not {found}")]
    DialectCount { found: usize },
}

/// How a condition compares an attribute's value (case-sensitive, as Knative does).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Match {
    /// The dialect's name in Knative's `filters:` and in the command-line form.
    pub fn dialect(&self) -> &'static str {
        match self {
            Match::Exact(_) => "exact",
            Match::Prefix(_) => "prefix",
            Match::Suffix(_) => "suffix",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Match::Exact(v) | Match::Prefix(v) | Match::Suffix(v) => v,
        }
    }

    fn from_dialect(dialect: &str, value: String) -> Result<Match, FilterError> {
        match dialect {
            "exact" => Ok(Match::Exact(value)),
            "prefix" => Ok(Match::Prefix(value)),
            "suffix" => Ok(Match::Suffix(value)),
            other => Err(FilterError::UnsupportedDialect {
                dialect: other.to_owned(),
            }),
        }
    }

    fn accepts(&self, value: &str) -> bool {
        match self {
            Match::Exact(v) => value == v,
            Match::Prefix(p) => value.starts_with(p.as_str()),
            Match::Suffix(s) => value.ends_with(s.as_str()),
        }
    }
}

/// One condition on one attribute: a context attribute (`type`, `source`, `subject`, `id`,
/// `datacontenttype`, …) or an extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Condition {
    attribute: String,
    matcher: Match,
}

impl Condition {
    /// A condition whose attribute follows the CloudEvents naming rules and whose value is
    /// not empty.
    pub fn new(attribute: impl Into<String>, matcher: Match) -> Result<Condition, FilterError> {
        let attribute = attribute.into();
        if let Err(reason) = check_attribute_name(&attribute) {
            return Err(FilterError::InvalidAttribute { attribute, reason });
        }
        if matcher.value().is_empty() {
            return Err(FilterError::EmptyValue {
                attribute,
                dialect: matcher.dialect(),
            });
        }
        Ok(Condition { attribute, matcher })
    }

    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    pub fn matcher(&self) -> &Match {
        &self.matcher
    }

    /// Whether the event's attribute holds; an event without the attribute never does.
    pub fn matches(&self, ev: &CloudEvent) -> bool {
        ev.attribute(&self.attribute)
            .is_some_and(|value| self.matcher.accepts(&value))
    }
}

/// The command-line form: `ATTRIBUTE=VALUE` is an exact match, `ATTRIBUTE=prefix:VALUE` and
/// `ATTRIBUTE=suffix:VALUE` match a prefix or suffix, and `ATTRIBUTE=exact:VALUE` matches a
/// value that itself starts with a dialect name. The attribute ends at the first `=`.
impl FromStr for Condition {
    type Err = FilterError;

    fn from_str(input: &str) -> Result<Condition, FilterError> {
        let Some((attribute, value)) = input.split_once('=') else {
            return Err(FilterError::Syntax { input: input.into() });
        };
        let matcher = if let Some(v) = value.strip_prefix("prefix:") {
            Match::Prefix(v.to_owned())
        } else if let Some(v) = value.strip_prefix("suffix:") {
            Match::Suffix(v.to_owned())
        } else {
            Match::Exact(value.strip_prefix("exact:").unwrap_or(value).to_owned())
        };
        Condition::new(attribute, matcher)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.matcher.value();
        match &self.matcher {
            Match::Exact(_) if !has_dialect_prefix(value) => write!(f, "{}={value}", self.attribute),
            m => write!(f, "{}={}:{value}", self.attribute, m.dialect()),
        }
    }
}

fn has_dialect_prefix(value: &str) -> bool {
    ["exact:", "prefix:", "suffix:"]
        .iter()
        .any(|p| value.starts_with(p))
}

/// All conditions must hold (AND); an empty filter matches every event.
///
/// JSON form: Knative's `filters:` list, one dialect per entry, each mapping attributes to
/// values, e.g. `[{"exact": {"type": "com.example.created"}}, {"suffix": {"subject": ".png"}}]`.
/// Written one condition per entry, ordered by attribute; read with any number of attributes per
/// entry, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<BTreeMap<String, BTreeMap<String, String>>>")]
pub struct Filter {
    conditions: BTreeSet<Condition>,
}

impl Filter {
    pub fn new(conditions: impl IntoIterator<Item = Condition>) -> Filter {
        Filter {
            conditions: conditions.into_iter().collect(),
        }
    }

    /// A filter from the values of repeated `--filter` options.
    pub fn parse_cli<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Result<Filter, FilterError> {
        let conditions = args
            .into_iter()
            .map(|arg| arg.as_ref().parse())
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Filter { conditions })
    }

    /// Whether every condition holds for the event.
    pub fn matches(&self, ev: &CloudEvent) -> bool {
        self.conditions.iter().all(|c| c.matches(ev))
    }

    pub fn conditions(&self) -> impl Iterator<Item = &Condition> {
        self.conditions.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

impl TryFrom<Vec<BTreeMap<String, BTreeMap<String, String>>>> for Filter {
    type Error = FilterError;

    fn try_from(entries: Vec<BTreeMap<String, BTreeMap<String, String>>>) -> Result<Filter, FilterError> {
        let mut conditions = BTreeSet::new();
        for mut entry in entries {
            let found = entry.len();
            let (Some((dialect, attributes)), true) = (entry.pop_first(), entry.is_empty()) else {
                return Err(FilterError::DialectCount { found });
            };
            for (attribute, value) in attributes {
                conditions.insert(Condition::new(attribute, Match::from_dialect(&dialect, value)?)?);
            }
        }
        Ok(Filter { conditions })
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.conditions.iter().map(|c| {
            BTreeMap::from([(
                c.matcher.dialect(),
                BTreeMap::from([(c.attribute.as_str(), c.matcher.value())]),
            )])
        });
        s.collect_seq(entries)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn event() -> CloudEvent {
        let mut ev = CloudEvent::new(
            "com.example.object.created",
            "io.knative/storage".into(),
            json!({}),
        );
        ev.subject = Some("photos/cat.png".into());
        ev.extensions.insert("region".into(), json!("eu-west-1"));
        ev.extensions.insert("priority".into(), json!(3));
        ev
    }

    fn filter(args: &[&str]) -> Filter {
        Filter::parse_cli(args).unwrap()
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        assert!(Filter::default().matches(&event()));
        assert!(filter(&[]).is_empty());
    }

    #[test]
    fn all_conditions_must_hold() {
        let ev = event();
        assert!(filter(&["type=com.example.object.created"]).matches(&ev));
        assert!(filter(&["source=prefix:io.knative", "subject=suffix:.png"]).matches(&ev));
        assert!(filter(&["region=eu-west-1", "priority=3", "specversion=1.0"]).matches(&ev));
        assert!(filter(&["datacontenttype=exact:application/json"]).matches(&ev));
        assert!(!filter(&["source=prefix:io.knative", "subject=suffix:.jpg"]).matches(&ev));
        assert!(!filter(&["type=com.example.object"]).matches(&ev));
        assert!(!filter(&["type=COM.example.object.created"]).matches(&ev));
    }

    #[test]
    fn a_missing_attribute_never_matches() {
        let ev = event();
        assert!(!filter(&["dataschema=prefix:h"]).matches(&ev));
        assert!(!filter(&["tenant=suffix:a"]).matches(&ev));
    }

    #[test]
    fn cli_syntax() {
        let only = |arg: &str| arg.parse::<Condition>().unwrap().matcher;
        assert_eq!(only("type=a=b"), Match::Exact("a=b".into()));
        assert_eq!(only("type=prefix:a"), Match::Prefix("a".into()));
        assert_eq!(only("type=suffix::x"), Match::Suffix(":x".into()));
        assert_eq!(only("type=exact:prefix:a"), Match::Exact("prefix:a".into()));
        assert_eq!(only("type=other:a"), Match::Exact("other:a".into()));
        let err = |arg: &str| arg.parse::<Condition>().unwrap_err();
        assert!(matches!(err("type"), FilterError::Syntax { .. }));
        assert!(matches!(err("Type=x"), FilterError::InvalidAttribute { .. }));
        assert!(matches!(err("=x"), FilterError::InvalidAttribute { .. }));
        assert!(matches!(
            err("type=prefix:"),
            FilterError::EmptyValue {
                dialect: "prefix",
                ..
            }
        ));
        assert!(matches!(
            err("type="),
            FilterError::EmptyValue { dialect: "exact", .. }
        ));
    }

    #[test]
    fn json_mirrors_knative_filters() {
        let f = filter(&["type=com.x", "subject=suffix:.png"]);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            json!([{"suffix": {"subject": ".png"}}, {"exact": {"type": "com.x"}}])
        );
        let grouped: Filter = serde_json::from_value(json!([
            {"exact": {"type": "com.x"}},
            {"suffix": {"subject": ".png"}},
        ]))
        .unwrap();
        assert_eq!(grouped, f);
        let many: Filter = serde_json::from_value(json!([{"exact": {"type": "a", "id": "b"}}])).unwrap();
        assert_eq!(many.conditions().count(), 2);
    }

    #[test]
    fn json_refuses_what_it_cannot_match() {
        let refused = |v: serde_json::Value| serde_json::from_value::<Filter>(v).unwrap_err().to_string();
        assert!(refused(json!([{"cesql": {"type": "x"}}])).contains("unsupported filter dialect"));
        assert!(refused(json!([{}])).contains("exactly one dialect"));
        assert!(refused(json!([{"exact": {"type": "a"}, "prefix": {"id": "b"}}])).contains("exactly one"));
        assert!(refused(json!([{"prefix": {"type": ""}}])).contains("empty"));
        assert!(refused(json!([{"exact": {"Bad": "x"}}])).contains("Bad"));
    }

    fn conditions() -> impl Strategy<Value = Condition> {
        let value = "[ -~]{1,12}";
        ("[a-z0-9]{1,8}", 0..3usize, value).prop_filter_map("data is reserved", |(attr, d, v)| {
            let m = match d {
                0 => Match::Exact(v),
                1 => Match::Prefix(v),
                _ => Match::Suffix(v),
            };
            Condition::new(attr, m).ok()
        })
    }

    proptest! {
        #[test]
        fn cli_form_round_trips(c in conditions()) {
            prop_assert_eq!(c.to_string().parse::<Condition>(), Ok(c));
        }

        #[test]
        fn json_form_round_trips(cs in proptest::collection::vec(conditions(), 0..5)) {
            let f = Filter::new(cs);
            let back: Filter = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
            prop_assert_eq!(back, f);
        }

        #[test]
        fn conditions_derived_from_an_event_match_it(value in "[a-z./]{1,10}", cut in 0usize..10) {
            let mut ev = event();
            ev.subject = Some(value.clone());
            let cut = cut.min(value.len() - 1);
            let f = Filter::new([
                Condition::new("subject", Match::Exact(value.clone())).unwrap(),
                Condition::new("subject", Match::Prefix(value[..=cut].to_owned())).unwrap(),
                Condition::new("subject", Match::Suffix(value[cut..].to_owned())).unwrap(),
            ]);
            prop_assert!(f.matches(&ev));
        }
    }
}
