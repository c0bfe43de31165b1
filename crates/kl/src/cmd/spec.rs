//! Spec documents for `kl apply` and `kl export` (`{kind, name, [tenant,] spec}` in YAML or
//! JSON), and the generic parts: defaults, field-by-field diffs and flattening, all over
//! `serde_json::Value`, so spec fields added later need no change here.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use kl_core::TenantSpec;
use kl_events::trigger::TriggerSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds `kl apply` understands.
pub const KINDS: [&str; 2] = ["Tenant", "Trigger"];

/// One document of a spec file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub kind: String,
    pub name: String,
    /// The tenant of a tenant's object (a trigger); `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default = "empty_object")]
    pub spec: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Reads a file, or stdin for `-`.
pub fn read_source(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the spec from stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// The name of a spec source in messages.
pub fn source_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// Every non-empty YAML (or JSON) document of `text`, as JSON values.
pub fn yaml_values(text: &str, source: &str) -> Result<Vec<Value>> {
    let mut values = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc)
            .with_context(|| format!("{source}: document {} is not valid YAML", i + 1))?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

/// Parses the documents of a spec file.
pub fn documents(text: &str, source: &str) -> Result<Vec<Document>> {
    let values = yaml_values(text, source)?;
    if values.is_empty() {
        bail!(
            "{source} holds no document; expected e.g. `{{kind: Tenant, name: acme, spec: {{quotas: {{functions: 10}}}}}}`"
        );
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let doc: Document = serde_json::from_value(value).with_context(|| {
                format!(
                    "{source}: document {} is not a spec document (fields: kind, name, spec)",
                    i + 1
                )
            })?;
            if !KINDS.contains(&doc.kind.as_str()) {
                bail!(
                    "{source}: document {}: kind {:?} is not supported; use one of: {}",
                    i + 1,
                    doc.kind,
                    KINDS.join(", ")
                );
            }
            if doc.kind == "Tenant" && doc.tenant.is_some() {
                bail!("{source}: document {}: a Tenant has no tenant field", i + 1);
            }
            Ok(doc)
        })
        .collect()
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// A tenant spec as written (absent fields take the platform defaults), checked against
/// [`TenantSpec`] (unknown fields are refused) and normalised to the form the server stores.
pub fn tenant_spec(written: &Value, what: &str) -> Result<Value> {
    if !written.is_object() {
        bail!("{what}: the spec must be a mapping, e.g. `{{quotas: {{functions: 10}}}}`");
    }
    let spec: TenantSpec = serde_json::from_value(written.clone())
        .with_context(|| format!("{what}: the tenant spec is invalid"))?;
    Ok(serde_json::to_value(spec).expect("a tenant spec serializes"))
}

/// A trigger spec as written (absent delivery fields take Knative's defaults), checked
/// against [`TriggerSpec`] and normalised to the form the server stores.
pub fn trigger_spec(written: &Value, what: &str) -> Result<Value> {
    let spec: TriggerSpec = serde_json::from_value(written.clone())
        .with_context(|| format!("{what}: the trigger spec is invalid"))?;
    spec.validate()
        .with_context(|| format!("{what}: the trigger spec is invalid"))?;
    Ok(serde_json::to_value(spec).expect("a trigger spec serializes"))
}

/// One changed field.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dotted path, e.g. `quotas.functions`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map(scalar).unwrap_or_else(|| "(unset)".into());
        write!(f, "{}: {} → {}", self.path, show(&self.old), show(&self.new))
    }
}

/// The leaf fields that differ between `old` and `new`, in path order.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_at("", Some(old), Some(new), &mut changes);
    changes
}

fn diff_at(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff_at(&join(path, key), a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Object(a)), None) => {
            for (key, v) in a {
                diff_at(&join(path, key), Some(v), None, out);
            }
        }
        (None, Some(Value::Object(b))) => {
            for (key, v) in b {
                diff_at(&join(path, key), None, Some(v), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: path.to_owned(),
            old: a.cloned(),
            new: b.cloned(),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Every leaf of `value` as `(dotted path, value)`, in path order.
pub fn leaves(value: &Value) -> Vec<(String, Value)> {
    diff(&empty_object(), value)
        .into_iter()
        .filter_map(|c| c.new.map(|v| (c.path, v)))
        .collect()
}

/// A value on one line: strings bare, the rest as compact JSON.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `OBJECT created` (`tenant/acme`) and every field of `spec` that differs from
/// `defaults`.
pub fn print_created(object: &str, spec: &Value, defaults: &Value) {
    println!("{object} created");
    let defaults: std::collections::BTreeMap<_, _> = leaves(defaults).into_iter().collect();
    for (path, value) in leaves(spec) {
        if defaults.get(&path) != Some(&value) {
            println!("  {path}: {}", scalar(&value));
        }
    }
}

/// Prints `OBJECT {verb}` and each change, or `OBJECT unchanged`.
pub fn print_changes(object: &str, verb: &str, changes: &[Change]) {
    if changes.is_empty() {
        println!("{object} unchanged");
        return;
    }
    println!("{object} {verb}");
    for change in changes {
        println!("  {change}");
    }
}

/// The document as YAML, as `kl export` prints it.
pub fn to_yaml(doc: &Document) -> Result<String> {
    Ok(serde_yaml::to_string(doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_name_every_changed_leaf() {
        let old = json!({"quotas": {"functions": 50, "concurrentBuilds": 2}, "gone": true});
        let new = json!({"quotas": {"functions": 10, "concurrentBuilds": 2}, "added": {"x": "y"}});
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "added.x: (unset) → y",
                "gone: true → (unset)",
                "quotas.functions: 50 → 10"
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn tenant_specs_take_defaults_and_refuse_unknown_fields() {
        let spec = tenant_spec(&json!({"quotas": {"functions": 10}}), "t").unwrap();
        let mut expected = serde_json::to_value(TenantSpec::default()).unwrap();
        expected["quotas"]["functions"] = json!(10);
        assert_eq!(spec, expected);
        assert_eq!(
            tenant_spec(&json!({}), "t").unwrap(),
            serde_json::to_value(TenantSpec::default()).unwrap()
        );
        let err = tenant_spec(&json!({"quota": {"functions": 1}}), "t").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `quota`"), "{err:#}");
        assert!(tenant_spec(&json!({"quotas": {"functions": -1}}), "t").is_err());
        assert!(tenant_spec(&json!([1]), "t").is_err());
    }

    #[test]
    fn trigger_specs_take_defaults_and_are_checked() {
        let spec = trigger_spec(
            &json!({"function": "f", "filters": [{"exact": {"type": "t"}}]}),
            "t",
        )
        .unwrap();
        assert_eq!(spec["delivery"]["retry"], 10);
        assert!(trigger_spec(&json!({"function": "f", "filter": []}), "t").is_err());
        let both = json!({"function": "f", "schedule": "@hourly", "filters": [{"exact": {"type": "t"}}]});
        assert!(format!("{:#}", trigger_spec(&both, "t").unwrap_err()).contains("not both"));
    }

    #[test]
    fn documents_parse_from_yaml_and_json_and_round_trip() {
        let docs = documents(
            "kind: Tenant\nname: acme\nspec:\n  quotas:\n    functions: 10\n---\n{\"kind\": \"Tenant\", \"name\": \"b\"}\n",
            "f",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].spec, json!({"quotas": {"functions": 10}}));
        assert_eq!(docs[1].spec, json!({}));
        let again = documents(&to_yaml(&docs[0]).unwrap(), "f").unwrap();
        assert_eq!(again[0].spec, docs[0].spec);
        assert!(documents("kind: Function\nname: x\n", "f").is_err());
        assert!(documents("kind: Tenant\nname: x\ntenant: y\n", "f").is_err());
        let trigger = documents("kind: Trigger\nname: t\ntenant: acme\nspec: {function: f}\n", "f").unwrap();
        assert_eq!(trigger[0].tenant.as_deref(), Some("acme"));
        assert!(documents("kind: Tenant\nname: x\nspce: {}\n", "f").is_err());
        assert!(documents("", "f").is_err());
    }
}
