//! Function settings as users write them (`kl.yaml`, deploy flags) and the resolved spec a
//! revision runs with. Resolution is pure: defaults, then `kl.yaml`, then flags, then limits.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::autoscale::{AutoscaleError, AutoscalerConfig};
use crate::quantity::{
    QuantityError, format_cpu, format_duration, format_memory, parse_cpu, parse_duration, parse_memory,
};
use crate::scheduling::{PriorityClass, PriorityError};
use crate::secret::{SecretError, SecretKeyRef, SecretUse};
use crate::tenant::RateSpec;

/// A language runtime a function can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Python,
    Node,
    Go,
}

impl Runtime {
    /// Every runtime, in the order they are documented.
    pub const ALL: [Runtime; 3] = [Runtime::Python, Runtime::Node, Runtime::Go];

    /// The handler used when none is configured (DESIGN §3).
    pub fn default_handler(self) -> &'static str {
        match self {
            Runtime::Python => "main.handler",
            Runtime::Node => "index.handler",
            Runtime::Go => "Handle",
        }
    }

    /// Concurrent requests one instance takes by default. Python handlers are usually
    /// synchronous, so one at a time; Node and Go multiplex on one process.
    pub fn default_concurrency(self) -> u32 {
        match self {
            Runtime::Python => 1,
            Runtime::Node | Runtime::Go => 10,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Go => "go",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "python" | "python3" => Ok(Runtime::Python),
            "node" | "nodejs" | "javascript" => Ok(Runtime::Node),
            "go" | "golang" => Ok(Runtime::Go),
            other => Err(SpecError::UnknownRuntime(other.to_owned())),
        }
    }
}

/// Settings as a user writes them; every field optional. Used for `kl.yaml` and for deploy
/// flags, which are layered with [`FunctionSettings::overlay`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FunctionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU per instance: `250m`, `0.5`, `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    /// Invocations per second of this function, within the tenant's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateSpec>,
    /// Priority class, at most the tenant's (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityClass>,
    /// Instances kept running even without traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// The autoscaler's settings (Knative KPA names), over the platform's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalerConfig>,
    /// Secrets mounted read-only as files (`/var/run/secrets/kl/NAME/KEY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables taken from secret keys: `VAR: NAME.KEY`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretKeyRef>,
}

impl FunctionSettings {
    /// Layers `top` over `self`: fields set in `top` win; env maps merge, `top` winning.
    pub fn overlay(mut self, top: FunctionSettings) -> FunctionSettings {
        self.env.extend(top.env);
        self.secret_env.extend(top.secret_env);
        self.secrets.extend(top.secrets);
        self.secrets.sort_unstable();
        self.secrets.dedup();
        FunctionSettings {
            name: top.name.or(self.name),
            runtime: top.runtime.or(self.runtime),
            handler: top.handler.or(self.handler),
            env: self.env,
            memory: top.memory.or(self.memory),
            cpu: top.cpu.or(self.cpu),
            timeout: top.timeout.or(self.timeout),
            concurrency: top.concurrency.or(self.concurrency),
            max_scale: top.max_scale.or(self.max_scale),
            public: top.public.or(self.public),
            rate_limit: top.rate_limit.or(self.rate_limit),
            priority: top.priority.or(self.priority),
            min_scale: top.min_scale.or(self.min_scale),
            autoscaling: match (self.autoscaling, top.autoscaling) {
                (Some(base), Some(top)) => Some(base.overlay(top)),
                (base, top) => top.or(base),
            },
            secrets: self.secrets,
            secret_env: self.secret_env,
        }
    }

    /// Resolves settings into a spec for `runtime`, filling defaults and checking limits.
    pub fn resolve(&self, runtime: Runtime, limits: &SpecLimits) -> Result<FunctionSpec, SpecError> {
        let handler = match &self.handler {
            Some(h) => {
                validate_handler(runtime, h)?;
                h.clone()
            }
            None => runtime.default_handler().to_owned(),
        };
        for key in self.env.keys() {
            validate_env_name(key)?;
        }
        for (var, from) in &self.secret_env {
            validate_env_name(var)?;
            if self.env.contains_key(var) {
                return Err(SpecError::EnvTwice {
                    var: var.clone(),
                    secret: from.clone(),
                });
            }
        }
        for name in &self.secrets {
            crate::name::validate_secret_name(name).map_err(SecretError::from)?;
        }
        let memory_bytes = match &self.memory {
            Some(m) => parse_memory(m)?,
            None => limits.default_memory_bytes,
        };
        if !(limits.min_memory_bytes..=limits.max_memory_bytes).contains(&memory_bytes) {
            return Err(SpecError::OutOfRange {
                field: "memory",
                value: format_memory(memory_bytes),
                min: format_memory(limits.min_memory_bytes),
                max: format_memory(limits.max_memory_bytes),
            });
        }
        let cpu_millis = match &self.cpu {
            Some(c) => parse_cpu(c)?,
            None => limits.default_cpu_millis,
        };
        if !(limits.min_cpu_millis..=limits.max_cpu_millis).contains(&cpu_millis) {
            return Err(SpecError::OutOfRange {
                field: "cpu",
                value: format_cpu(cpu_millis),
                min: format_cpu(limits.min_cpu_millis),
                max: format_cpu(limits.max_cpu_millis),
            });
        }
        if let Some(rate) = &self.rate_limit {
            check_count("rateLimit.perSecond", rate.per_second, u32::MAX)?;
        }
        let timeout_ms = match &self.timeout {
            Some(t) => parse_duration(t)?,
            None => limits.default_timeout_ms,
        };
        if !(1..=limits.max_timeout_ms).contains(&timeout_ms) {
            return Err(SpecError::OutOfRange {
                field: "timeout",
                value: format_duration(timeout_ms),
                min: "1ms".into(),
                max: format_duration(limits.max_timeout_ms),
            });
        }
        let concurrency = self.concurrency.unwrap_or_else(|| runtime.default_concurrency());
        check_count("concurrency", concurrency, limits.max_concurrency)?;
        let max_scale = self.max_scale.unwrap_or(limits.default_max_scale);
        check_count("maxScale", max_scale, limits.max_max_scale)?;
        let min_scale = self.min_scale.unwrap_or(0);
        if min_scale > max_scale {
            return Err(SpecError::OutOfRange {
                field: "minScale",
                value: min_scale.to_string(),
                min: "0".into(),
                max: format!("maxScale ({max_scale})"),
            });
        }
        let autoscaling = self.autoscaling.clone().unwrap_or_default();
        if autoscaling.container_concurrency.is_some()
            || autoscaling.min_scale.is_some()
            || autoscaling.max_scale.is_some()
        {
            return Err(SpecError::AutoscalingBounds);
        }
        autoscaling.resolve()?;
        Ok(FunctionSpec {
            runtime,
            handler,
            env: self.env.clone(),
            memory_bytes,
            timeout_ms,
            concurrency,
            max_scale,
            public: self.public.unwrap_or(false),
            cpu_millis,
            rate_limit: self.rate_limit,
            priority: PriorityClass::effective(limits.max_priority, self.priority)?,
            min_scale,
            autoscaling,
            secrets: SecretUse {
                env: self.secret_env.clone(),
                files: self.secrets.clone(),
            },
        })
    }
}

fn check_count(field: &'static str, value: u32, max: u32) -> Result<(), SpecError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(SpecError::OutOfRange {
            field,
            value: value.to_string(),
            min: "1".into(),
            max: max.to_string(),
        })
    }
}

/// Platform limits and defaults applied when resolving settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecLimits {
    pub default_memory_bytes: u64,
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub default_cpu_millis: u64,
    pub min_cpu_millis: u64,
    pub max_cpu_millis: u64,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub max_concurrency: u32,
    pub default_max_scale: u32,
    pub max_max_scale: u32,
    /// The highest priority class a function may take (its tenant's).
    pub max_priority: PriorityClass,
}

impl Default for SpecLimits {
    fn default() -> Self {
        SpecLimits {
            default_memory_bytes: 256 << 20,
            min_memory_bytes: 32 << 20,
            max_memory_bytes: 16 << 30,
            default_cpu_millis: 500,
            min_cpu_millis: 10,
            max_cpu_millis: 8000,
            default_timeout_ms: 30_000,
            max_timeout_ms: 15 * 60_000,
            max_concurrency: 1000,
            default_max_scale: 10,
            max_max_scale: 1000,
            max_priority: PriorityClass::High,
        }
    }
}

/// The resolved, validated settings a revision runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    pub runtime: Runtime,
    pub handler: String,
    pub env: BTreeMap<String, String>,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub max_scale: u32,
    pub public: bool,
    /// CPU per instance in millicores (absent in revisions built before CPU limits).
    #[serde(default = "default_cpu_millis")]
    pub cpu_millis: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateSpec>,
    #[serde(default)]
    pub priority: PriorityClass,
    #[serde(default)]
    pub min_scale: u32,
    /// The function's own autoscaler settings; the platform's defaults fill the rest.
    #[serde(default, skip_serializing_if = "is_default")]
    pub autoscaling: AutoscalerConfig,
    /// The tenant secrets it receives when an instance starts (references, never values).
    #[serde(default, skip_serializing_if = "SecretUse::is_empty")]
    pub secrets: SecretUse,
}

fn is_default(config: &AutoscalerConfig) -> bool {
    *config == AutoscalerConfig::default()
}

fn default_cpu_millis() -> u64 {
    SpecLimits::default().default_cpu_millis
}

/// Why settings could not be resolved into a spec.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SpecError {
    /// `runtime` names no runtime we support.
    #[error("unknown runtime {0:?}: use python, node or go")]
    UnknownRuntime(String),
    /// A memory or duration did not parse.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// A value lies outside the platform's limits.
    #[error("{field} {value} is out of range: allowed {min} to {max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    /// An environment variable name is malformed or reserved.
    #[error(
        "environment variable {0:?} is invalid: use letters, digits and '_', not starting with a digit, and not the reserved KL_ prefix"
    )]
    InvalidEnvName(String),
    /// The priority class is above the tenant's.
    #[error(transparent)]
    Priority(#[from] PriorityError),
    /// An autoscaling setting is out of Knative's range.
    #[error("autoscaling: {0}")]
    Autoscaling(#[from] AutoscaleError),
    /// Instance bounds belong at the top level.
    #[error("set concurrency, minScale and maxScale at the top level of the settings, not under autoscaling")]
    AutoscalingBounds,
    /// A secret name is invalid.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// One environment variable is set both plainly and from a secret.
    #[error("environment variable {var:?} is set in env and from secret key {secret}: keep one")]
    EnvTwice { var: String, secret: SecretKeyRef },
    /// The handler does not fit the runtime's form.
    #[error("handler {handler:?} is invalid for {runtime}: {hint}")]
    InvalidHandler {
        runtime: Runtime,
        handler: String,
        hint: &'static str,
    },
}

fn validate_env_name(name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && !name.starts_with("KL_") {
        Ok(())
    } else {
        Err(SpecError::InvalidEnvName(name.to_owned()))
    }
}

fn validate_handler(runtime: Runtime, handler: &str) -> Result<(), SpecError> {
    let invalid = |hint| SpecError::InvalidHandler {
        runtime,
        handler: handler.to_owned(),
        hint,
    };
    let ident = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    match runtime {
        Runtime::Python => {
            let ok = handler.contains('.') && handler.split('.').all(ident);
            ok.then_some(())
                .ok_or_else(|| invalid("use module.function, e.g. main.handler"))
        }
        Runtime::Node => {
            let ok = handler.rsplit_once('.').is_some_and(|(file, export)| {
                ident(export)
                    && !file.is_empty()
                    && !file.starts_with('/')
                    && file.split('/').all(|part| !part.is_empty() && part != "..")
            });
            ok.then_some(())
                .ok_or_else(|| invalid("use file.export, e.g. index.handler"))
        }
        Runtime::Go => (handler == "Handle")
            .then_some(())
            .ok_or_else(|| invalid("Go functions export Handle")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> FunctionSettings {
        FunctionSettings::default()
    }

    #[test]
    fn defaults_fill_an_empty_spec() {
        let spec = settings()
            .resolve(Runtime::Python, &SpecLimits::default())
            .unwrap();
        assert_eq!(spec.handler, "main.handler");
        assert_eq!(spec.memory_bytes, 256 << 20);
        assert_eq!(spec.timeout_ms, 30_000);
        assert_eq!(spec.concurrency, 1);
        assert!(!spec.public);
        let node = settings().resolve(Runtime::Node, &SpecLimits::default()).unwrap();
        assert_eq!(node.handler, "index.handler");
        assert_eq!(node.concurrency, 10);
    }

    #[test]
    fn overlay_prefers_the_top_layer_and_merges_env() {
        let base = FunctionSettings {
            memory: Some("128Mi".into()),
            timeout: Some("10s".into()),
            env: [("A".into(), "1".into()), ("B".into(), "1".into())].into(),
            ..settings()
        };
        let top = FunctionSettings {
            memory: Some("512Mi".into()),
            env: [("B".into(), "2".into())].into(),
            ..settings()
        };
        let merged = base.overlay(top);
        assert_eq!(merged.memory.as_deref(), Some("512Mi"));
        assert_eq!(merged.timeout.as_deref(), Some("10s"));
        assert_eq!(merged.env["A"], "1");
        assert_eq!(merged.env["B"], "2");
    }

    #[test]
    fn limits_are_enforced_with_the_field_named() {
        let limits = SpecLimits::default();
        let too_big = FunctionSettings {
            memory: Some("64Gi".into()),
            ..settings()
        };
        let err = too_big.resolve(Runtime::Go, &limits).unwrap_err();
        assert!(
            err.to_string().starts_with("memory 64Gi is out of range"),
            "{err}"
        );
        let zero = FunctionSettings {
            concurrency: Some(0),
            ..settings()
        };
        assert!(matches!(
            zero.resolve(Runtime::Go, &limits),
            Err(SpecError::OutOfRange {
                field: "concurrency",
                ..
            })
        ));
        let long = FunctionSettings {
            timeout: Some("2h".into()),
            ..settings()
        };
        assert!(long.resolve(Runtime::Go, &limits).is_err());
    }

    #[test]
    fn env_names_and_handlers_are_checked() {
        for bad in ["1A", "A-B", "KL_SOCKET", ""] {
            let s = FunctionSettings {
                env: [(bad.into(), "x".into())].into(),
                ..settings()
            };
            assert!(
                matches!(
                    s.resolve(Runtime::Python, &SpecLimits::default()),
                    Err(SpecError::InvalidEnvName(_))
                ),
                "{bad}"
            );
        }
        let check = |rt, h: &str| {
            FunctionSettings {
                handler: Some(h.into()),
                ..settings()
            }
            .resolve(rt, &SpecLimits::default())
            .is_ok()
        };
        assert!(check(Runtime::Python, "app.main.handler"));
        assert!(!check(Runtime::Python, "handler"));
        assert!(!check(Runtime::Python, "../x.handler"));
        assert!(check(Runtime::Node, "src/app.handler"));
        assert!(!check(Runtime::Node, "../app.handler"));
        assert!(!check(Runtime::Node, "/etc/app.handler"));
        assert!(check(Runtime::Go, "Handle"));
        assert!(!check(Runtime::Go, "Main"));
    }

    #[test]
    fn runtime_names_parse() {
        assert_eq!("python".parse::<Runtime>(), Ok(Runtime::Python));
        assert_eq!("nodejs".parse::<Runtime>(), Ok(Runtime::Node));
        assert!("ruby".parse::<Runtime>().is_err());
    }

    proptest! {
        #[test]
        fn resolved_specs_stay_within_limits(mem in 0u64..(64u64 << 30), conc in 0u32..2000, timeout in 0u64..7_200_000) {
            let limits = SpecLimits::default();
            let s = FunctionSettings {
                memory: Some(mem.to_string()),
                concurrency: Some(conc),
                timeout: Some(format!("{timeout}ms")),
                ..FunctionSettings::default()
            };
            if let Ok(spec) = s.resolve(Runtime::Node, &limits) {
                prop_assert!(spec.memory_bytes >= limits.min_memory_bytes && spec.memory_bytes <= limits.max_memory_bytes);
                prop_assert!(spec.concurrency >= 1 && spec.concurrency <= limits.max_concurrency);
                prop_assert!(spec.timeout_ms >= 1 && spec.timeout_ms <= limits.max_timeout_ms);
            }
        }
    }
}
