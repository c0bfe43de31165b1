//! A tenant's Kubernetes objects (DESIGN §4): its Namespace, a ResourceQuota from its quotas, a
//! LimitRange from its instance limits, default-deny NetworkPolicies with the allows it needs,
//! Roles and RoleBindings for its members; and the cluster-wide PriorityClasses and build
//! namespace every tenant shares.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kl_core::{PriorityClass as Class, SpecLimits, TenantSpec, format_cpu, format_memory};

use crate::names::{self, COMPONENT_BUILD, COMPONENT_FUNCTION, LABEL_COMPONENT, NAMESPACE_NAME_LABEL};
use crate::{Object, RenderError};

/// Annotation on a tenant's egress NetworkPolicy listing the allow-list's host-name rules, which
/// a NetworkPolicy cannot express (it matches addresses, not names). They take effect only
/// through an FQDN-aware policy engine (Cilium's `toFQDNs`) or an egress proxy; see
/// `docs/kubernetes.md`.
pub const EGRESS_HOSTS_ANNOTATION: &str = "knative-lambda.io/egress-hosts-not-enforced";

/// The name of the PriorityClass build pods run with: below `medium`, never preempting, so a
/// build waits for capacity rather than evicting running functions.
pub const BUILD_PRIORITY_CLASS: &str = "kl-build";

/// What every tenant's objects depend on, set once for the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSettings {
    /// The platform's own per-instance limits, which a tenant's limits narrow.
    pub limits: SpecLimits,
    /// Namespaces whose pods may call functions: Knative's activator and autoscaler
    /// (`knative-serving`), the ingress gateway's (`kourier-system` for Kourier) and the
    /// platform's own (its gateway).
    pub ingress_namespaces: Vec<String>,
    /// Namespaces of the event bus: Knative Eventing's adapters (`knative-eventing`, where
    /// PingSources run) and the RabbitMQ cluster (`rabbitmq-system`). The RabbitMQ broker runs
    /// its ingress and per-trigger dispatchers in the tenant's namespace, and they must reach
    /// both.
    pub eventing_namespaces: Vec<String>,
    /// Namespace the Kaniko build Jobs run in, apart from the tenants: it holds the registry push
    /// secret once, and the tenants' LimitRanges (sized for functions) do not apply to builds.
    pub build_namespace: String,
}

impl Default for PlatformSettings {
    fn default() -> PlatformSettings {
        PlatformSettings {
            limits: SpecLimits::default(),
            ingress_namespaces: vec![
                "knative-serving".to_owned(),
                "kourier-system".to_owned(),
                "knative-lambda".to_owned(),
            ],
            eventing_namespaces: vec!["knative-eventing".to_owned(), "rabbitmq-system".to_owned()],
            build_namespace: "knative-lambda-builds".to_owned(),
        }
    }
}

/// Renders a tenant's namespace and everything in it. Fails on a tenant name `kl_core` refuses,
/// limits outside the platform's, or an egress rule that does not parse.
pub fn render_tenant(
    tenant: &str,
    spec: &TenantSpec,
    platform: &PlatformSettings,
) -> Result<Vec<Object>, RenderError> {
    let ns = names::namespace(tenant)?;
    for allowed in platform
        .ingress_namespaces
        .iter()
        .chain(&platform.eventing_namespaces)
    {
        names::check_label("platform namespace", allowed)?;
    }
    let limits = spec
        .limits
        .apply_to(&platform.limits)
        .map_err(|source| RenderError::Limits {
            tenant: tenant.to_owned(),
            source,
        })?;
    let labels = names::labels(Some(tenant), None);
    let mut objects = vec![
        Object::Namespace(namespace(&ns, labels.clone())),
        Object::ResourceQuota(resource_quota(&ns, &labels, spec)),
        Object::LimitRange(limit_range(&ns, &labels, &limits)),
    ];
    objects.extend(
        network_policies(tenant, &ns, &labels, &spec.egress, platform)?
            .into_iter()
            .map(Object::NetworkPolicy),
    );
    for role in [
        kl_core::Role::TenantAdmin,
        kl_core::Role::Developer,
        kl_core::Role::Viewer,
    ] {
        let (r, binding) = role_and_binding(tenant, &ns, &labels, role);
        objects.push(Object::Role(r));
        objects.push(Object::RoleBinding(binding));
    }
    Ok(objects)
}

/// The group a tenant member's identity must carry (from the cluster's OIDC authenticator) to
/// hold `role` in `tenant`: `knative-lambda:acme:developer`.
pub fn member_group(tenant: &str, role: kl_core::Role) -> String {
    format!("knative-lambda:{tenant}:{}", role.as_str())
}

/// Our four priority classes as cluster-wide PriorityClasses, plus [`BUILD_PRIORITY_CLASS`].
/// Kubernetes preempts only strictly lower priorities, as we do; `best-effort` (and builds) are
/// `preemptionPolicy: Never`, since in our model best-effort work never preempts.
pub fn render_priority_classes() -> Vec<Object> {
    let class = |name: String, value: i32, never_preempts: bool, description: String| {
        Object::PriorityClass(PriorityClass {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(names::labels(None, None)),
                ..ObjectMeta::default()
            },
            value,
            global_default: Some(false),
            preemption_policy: Some(
                if never_preempts {
                    "Never"
                } else {
                    "PreemptLowerPriority"
                }
                .to_owned(),
            ),
            description: Some(description),
        })
    };
    let mut out: Vec<Object> = Class::ALL
        .into_iter()
        .map(|c| {
            class(
                names::priority_class(c),
                priority_value(c),
                c == Class::BestEffort,
                format!("knative-lambda functions of priority class {c}"),
            )
        })
        .collect();
    out.push(class(
        BUILD_PRIORITY_CLASS.to_owned(),
        50_000,
        true,
        "knative-lambda builds: wait for capacity, never preempt functions".to_owned(),
    ));
    out
}

/// Values far apart (room for other workloads in between) and well under the 1e9 reserved for
/// system classes. Best-effort is 0, the priority of pods with no class at all.
fn priority_value(class: Class) -> i32 {
    match class {
        Class::High => 1_000_000,
        Class::Medium => 100_000,
        Class::Low => 10_000,
        Class::BestEffort => 0,
    }
}

/// The namespace builds run in, closed like a tenant's: no ingress at all, DNS, and egress to
/// anything but link-local addresses (the cloud metadata service), since a build fetches its
/// context from the object store, dependencies from package indexes and pushes to the registry,
/// wherever those are.
pub fn render_build_namespace(platform: &PlatformSettings) -> Result<Vec<Object>, RenderError> {
    let ns = &platform.build_namespace;
    names::check_label("build namespace", ns)?;
    let labels = names::labels(None, None);
    let builds = component_selector(COMPONENT_BUILD);
    let anywhere = |cidr: &str, except: &str| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(vec![except.to_owned()]),
        }),
        ..NetworkPolicyPeer::default()
    };
    let egress = NetworkPolicy {
        metadata: names::meta("kl-allow-build-egress", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(builds),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![
                    anywhere("0.0.0.0/0", "169.254.0.0/16"),
                    anywhere("::/0", "fe80::/10"),
                ]),
                ports: None,
            }]),
            ..NetworkPolicySpec::default()
        }),
    };
    Ok(vec![
        Object::Namespace(namespace(ns, labels.clone())),
        Object::NetworkPolicy(default_deny(ns, &labels)),
        Object::NetworkPolicy(allow_dns(ns, &labels)),
        Object::NetworkPolicy(egress),
    ])
}

fn namespace(name: &str, mut labels: BTreeMap<String, String>) -> Namespace {
    // Pod Security Admission: function pods meet `restricted`; Kaniko runs as root, which
    // `baseline` allows, so enforce `baseline` and have the API server warn about the rest.
    labels.insert(
        "pod-security.kubernetes.io/enforce".to_owned(),
        "baseline".to_owned(),
    );
    labels.insert(
        "pod-security.kubernetes.io/warn".to_owned(),
        "restricted".to_owned(),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The tenant's quotas as ResourceQuota `hard` values, in Kubernetes quantity syntax. Every pod
/// in a tenant namespace is a function instance (builds run elsewhere), so `pods` is the
/// instance quota; requests and limits are both capped since functions set them equal.
/// Concurrent builds and source storage are enforced by the control plane, as on one machine:
/// builds run in the build namespace and sources live in the object store, which no
/// ResourceQuota can see.
pub fn quota_hard(spec: &TenantSpec) -> BTreeMap<String, Quantity> {
    let q = &spec.quotas;
    let cpu = Quantity(format_cpu(q.cpu.0));
    let memory = Quantity(format_memory(q.memory.0));
    BTreeMap::from([
        ("pods".to_owned(), Quantity(q.instances.to_string())),
        ("requests.cpu".to_owned(), cpu.clone()),
        ("limits.cpu".to_owned(), cpu),
        ("requests.memory".to_owned(), memory.clone()),
        ("limits.memory".to_owned(), memory),
        (
            "count/services.serving.knative.dev".to_owned(),
            Quantity(q.functions.to_string()),
        ),
    ])
}

fn resource_quota(ns: &str, labels: &BTreeMap<String, String>, spec: &TenantSpec) -> ResourceQuota {
    ResourceQuota {
        metadata: names::meta("kl-quota", ns, labels.clone()),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quota_hard(spec)),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// The tenant's effective per-instance limits (the platform's narrowed by its own) as a
/// Container LimitRange: the same defaults and bounds the local runtime applies.
fn limit_range(ns: &str, labels: &BTreeMap<String, String>, limits: &SpecLimits) -> LimitRange {
    let pair = |cpu: u64, memory: u64| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format_cpu(cpu))),
            ("memory".to_owned(), Quantity(format_memory(memory))),
        ])
    };
    let default = pair(limits.default_cpu_millis, limits.default_memory_bytes);
    LimitRange {
        metadata: names::meta("kl-limits", ns, labels.clone()),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default: Some(default.clone()),
                default_request: Some(default),
                min: Some(pair(limits.min_cpu_millis, limits.min_memory_bytes)),
                max: Some(pair(limits.max_cpu_millis, limits.max_memory_bytes)),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

fn component_selector(component: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_COMPONENT.to_owned(),
            component.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

fn default_deny(ns: &str, labels: &BTreeMap<String, String>) -> NetworkPolicy {
    NetworkPolicy {
        metadata: names::meta("kl-default-deny", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(i32::from(number))),
        end_port: None,
    }
}

/// Pods of the named namespaces (sorted and deduplicated, so the output is stable), selected by
/// the `kubernetes.io/metadata.name` label.
fn namespaces_peer(namespaces: &[String]) -> NetworkPolicyPeer {
    let mut names: Vec<String> = namespaces.to_vec();
    names.sort();
    names.dedup();
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_owned(),
                operator: "In".to_owned(),
                values: Some(names),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn allow_dns(ns: &str, labels: &BTreeMap<String, String>) -> NetworkPolicy {
    NetworkPolicy {
        metadata: names::meta("kl-allow-dns", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_owned(),
                            "kube-system".to_owned(),
                        )])),
                        ..LabelSelector::default()
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn network_policies(
    tenant: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
    egress: &[String],
    platform: &PlatformSettings,
) -> Result<Vec<NetworkPolicy>, RenderError> {
    let everything = || Some(LabelSelector::default());
    let same_namespace = || NetworkPolicyPeer {
        pod_selector: everything(),
        ..NetworkPolicyPeer::default()
    };
    let platform_ingress = NetworkPolicy {
        metadata: names::meta("kl-allow-platform-ingress", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: everything(),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespaces_peer(&platform.ingress_namespaces)]),
                ports: None,
            }]),
            ..NetworkPolicySpec::default()
        }),
    };
    // The broker's own pods (anything that is not a function instance) talk to the event bus
    // both ways, and deliver to subscribers through Knative's gateway and activator (the
    // ingress namespaces). Function pods do not: they reach the broker through its ingress in
    // their own namespace, never RabbitMQ directly.
    let eventing = NetworkPolicy {
        metadata: names::meta("kl-allow-eventing", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: LABEL_COMPONENT.to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(vec![COMPONENT_FUNCTION.to_owned()]),
                }]),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespaces_peer(&platform.eventing_namespaces)]),
                ports: None,
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![
                    namespaces_peer(&platform.eventing_namespaces),
                    namespaces_peer(&platform.ingress_namespaces),
                ]),
                ports: None,
            }]),
        }),
    };
    let same_tenant = NetworkPolicy {
        metadata: names::meta("kl-allow-same-tenant", ns, labels.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: everything(),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_namespace()]),
                ports: None,
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![same_namespace()]),
                ports: None,
            }]),
        }),
    };
    let mut policies = vec![
        default_deny(ns, labels),
        allow_dns(ns, labels),
        platform_ingress,
        eventing,
        same_tenant,
    ];
    if !egress.is_empty() {
        policies.push(egress_policy(tenant, ns, labels, egress)?);
    }
    Ok(policies)
}

/// The allow-list as one policy on function pods: address rules become `ipBlock` peers on their
/// ports; host-name rules cannot be expressed and are listed in [`EGRESS_HOSTS_ANNOTATION`].
fn egress_policy(
    tenant: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
    egress: &[String],
) -> Result<NetworkPolicy, RenderError> {
    let mut rules = Vec::new();
    let mut hosts = Vec::new();
    for entry in egress {
        let rule = EgressRule::parse(entry).map_err(|reason| RenderError::EgressRule {
            tenant: tenant.to_owned(),
            rule: entry.clone(),
            reason,
        })?;
        match rule.target {
            EgressTarget::Host(_) => hosts.push(entry.trim().to_owned()),
            EgressTarget::Network(addr, prefix) => rules.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(ip_block(addr, prefix)),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(rule.ports.iter().map(|&p| port("TCP", p)).collect()),
            }),
        }
    }
    let mut metadata = names::meta("kl-allow-egress", ns, labels.clone());
    if !hosts.is_empty() {
        metadata.annotations = Some(BTreeMap::from([(
            EGRESS_HOSTS_ANNOTATION.to_owned(),
            hosts.join(","),
        )]));
    }
    Ok(NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(component_selector(COMPONENT_FUNCTION)),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// An IPv4 network wide enough to contain the link-local range (and so the cloud metadata service
/// at 169.254.169.254) keeps it excluded, as the local egress proxy refuses link-local addresses
/// reached through a network rule. Only a rule naming the address itself opens it.
fn ip_block(addr: IpAddr, prefix: u8) -> IPBlock {
    let except = match addr {
        IpAddr::V4(v4) if prefix <= 16 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let link_local = u32::from(std::net::Ipv4Addr::new(169, 254, 0, 0));
            (u32::from(v4) & mask == link_local & mask).then(|| vec!["169.254.0.0/16".to_owned()])
        }
        _ => None,
    };
    IPBlock {
        cidr: format!("{addr}/{prefix}"),
        except,
    }
}

/// One egress allow-list entry, in the syntax of the local egress proxy (kl-gateway):
/// `host[:port]`, `a.b.c.d[/len][:port]`, `[ipv6[/len]][:port]`; no port means 80 and 443.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EgressRule {
    target: EgressTarget,
    ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EgressTarget {
    /// A DNS name or `*.` wildcard: NetworkPolicy cannot match it.
    Host(String),
    /// An address range (a full-length prefix for a single address).
    Network(IpAddr, u8),
}

impl EgressRule {
    fn parse(entry: &str) -> Result<EgressRule, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("it is empty".to_owned());
        }
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| "a '[' without its ']'".to_owned())?;
            match after {
                "" => (inner, None),
                _ => (
                    inner,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| "text after ']'".to_owned())?,
                    ),
                ),
            }
        } else if entry.matches(':').count() > 1 {
            (entry, None) // a bare IPv6 address, without a port
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (entry, None),
            }
        };
        let ports = match port {
            None => vec![80, 443],
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => vec![n],
                _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
            },
        };
        let target = match host.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{addr:?} is not an IP address"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix = len
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or_else(|| format!("prefix length {len:?} is not 0 to {max}"))?;
                if network_of(addr, prefix) != addr {
                    return Err(format!("{addr}/{prefix} has host bits set"));
                }
                EgressTarget::Network(addr, prefix)
            }
            None => match host.parse::<IpAddr>() {
                Ok(addr) => EgressTarget::Network(addr, if addr.is_ipv4() { 32 } else { 128 }),
                Err(_) if is_host_name(host) => EgressTarget::Host(host.to_ascii_lowercase()),
                Err(_) => return Err(format!("{host:?} is not a host name or IP address")),
            },
        };
        Ok(EgressRule { target, ports })
    }
}

fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

fn is_host_name(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// What each tenant role may do with the tenant's objects. Tenant admins manage members, which
/// in the cluster are RoleBindings; developers manage functions, triggers and schedules;
/// viewers read, logs included (as `kl logs` allows them).
fn rules(role: kl_core::Role) -> Vec<PolicyRule> {
    let read = ["get", "list", "watch"];
    let write = ["get", "list", "watch", "create", "update", "patch", "delete"];
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let writes_functions = !matches!(role, kl_core::Role::Viewer);
    let fn_verbs: &[&str] = if writes_functions { &write } else { &read };
    let mut rules = vec![
        rule("serving.knative.dev", &["services"], fn_verbs),
        rule(
            "serving.knative.dev",
            &["configurations", "revisions", "routes"],
            &read,
        ),
        rule("eventing.knative.dev", &["triggers"], fn_verbs),
        rule("eventing.knative.dev", &["brokers"], &read),
        rule("sources.knative.dev", &["pingsources"], fn_verbs),
        rule("", &["pods", "pods/log", "events"], &read),
    ];
    if role == kl_core::Role::TenantAdmin {
        rules.push(rule("rbac.authorization.k8s.io", &["rolebindings"], &write));
    }
    rules
}

fn role_and_binding(
    tenant: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
    role: kl_core::Role,
) -> (Role, RoleBinding) {
    let name = format!("kl-{}", role.as_str());
    let r = Role {
        metadata: names::meta(&name, ns, labels.clone()),
        rules: Some(rules(role)),
    };
    let binding = RoleBinding {
        metadata: names::meta(&name, ns, labels.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name,
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Group".to_owned(),
            name: member_group(tenant, role),
            namespace: None,
        }]),
    };
    (r, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_core::{ByteQuantity, CpuQuantity, Quotas};

    #[test]
    fn quotas_become_hard_values_in_quantity_syntax() {
        let spec = TenantSpec {
            quotas: Quotas {
                functions: 7,
                instances: 12,
                cpu: CpuQuantity(2500),
                memory: ByteQuantity(6 << 30),
                ..Quotas::default()
            },
            ..TenantSpec::default()
        };
        let hard = quota_hard(&spec);
        let get = |k: &str| hard[k].0.as_str();
        assert_eq!(get("pods"), "12");
        assert_eq!(get("requests.cpu"), "2500m");
        assert_eq!(get("limits.cpu"), "2500m");
        assert_eq!(get("requests.memory"), "6Gi");
        assert_eq!(get("count/services.serving.knative.dev"), "7");
        let whole = TenantSpec {
            quotas: Quotas {
                cpu: CpuQuantity(4000),
                memory: ByteQuantity(1_500_000_000),
                ..Quotas::default()
            },
            ..TenantSpec::default()
        };
        let hard = quota_hard(&whole);
        assert_eq!(hard["limits.cpu"].0, "4");
        assert_eq!(
            hard["limits.memory"].0, "1500000000",
            "not a binary multiple: plain bytes"
        );
    }

    #[test]
    fn egress_rules_parse_like_the_local_proxy() {
        let parse = |s| EgressRule::parse(s).unwrap();
        assert_eq!(
            parse("api.example.com"),
            EgressRule {
                target: EgressTarget::Host("api.example.com".into()),
                ports: vec![80, 443]
            }
        );
        assert_eq!(parse("*.example.com:8443").ports, vec![8443]);
        assert_eq!(
            parse("10.0.0.0/8:5432"),
            EgressRule {
                target: EgressTarget::Network("10.0.0.0".parse().unwrap(), 8),
                ports: vec![5432]
            }
        );
        assert_eq!(
            parse("203.0.113.7").target,
            EgressTarget::Network("203.0.113.7".parse().unwrap(), 32)
        );
        assert_eq!(
            parse("[2001:db8::/32]:443").target,
            EgressTarget::Network("2001:db8::".parse().unwrap(), 32)
        );
        assert_eq!(
            parse("2001:db8::1").target,
            EgressTarget::Network("2001:db8::1".parse().unwrap(), 128)
        );
        for bad in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "host:0",
            "host:http",
            "bad_host",
            "[::1",
        ] {
            assert!(EgressRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wide_ipv4_blocks_keep_the_metadata_service_out() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ip_block(v4("0.0.0.0"), 0).except,
            Some(vec!["169.254.0.0/16".to_owned()])
        );
        assert_eq!(ip_block(v4("10.0.0.0"), 8).except, None, "does not contain it");
        assert_eq!(ip_block(v4("169.254.169.254"), 32).except, None, "named exactly");
    }

    #[test]
    fn host_rules_are_annotated_not_silently_dropped() {
        let labels = names::labels(Some("t"), None);
        let policy = egress_policy(
            "t",
            "kl-t",
            &labels,
            &["api.example.com".into(), "10.1.0.0/16:443".into()],
        )
        .unwrap();
        let annotations = policy.metadata.annotations.unwrap();
        assert_eq!(annotations[EGRESS_HOSTS_ANNOTATION], "api.example.com");
        assert_eq!(
            policy.spec.unwrap().egress.unwrap().len(),
            1,
            "only the CIDR rule"
        );
    }

    #[test]
    fn bad_egress_rules_name_the_tenant_and_rule() {
        let spec = TenantSpec {
            egress: vec!["10.0.0.1/8".into()],
            ..TenantSpec::default()
        };
        let err = render_tenant("acme", &spec, &PlatformSettings::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("tenant acme: egress rule \"10.0.0.1/8\""),
            "{err}"
        );
    }

    #[test]
    fn viewers_only_read_and_only_admins_manage_members() {
        let writes = |role| {
            rules(role)
                .iter()
                .filter(|r| r.verbs.iter().any(|v| v == "create"))
                .flat_map(|r| r.resources.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert!(writes(kl_core::Role::Viewer).is_empty());
        assert!(!writes(kl_core::Role::Developer).contains(&"rolebindings".to_owned()));
        assert!(writes(kl_core::Role::TenantAdmin).contains(&"rolebindings".to_owned()));
    }

    #[test]
    fn priority_classes_keep_our_order_and_best_effort_never_preempts() {
        let classes: Vec<PriorityClass> = render_priority_classes()
            .into_iter()
            .filter_map(|o| match o {
                Object::PriorityClass(p) => Some(p),
                _ => None,
            })
            .collect();
        let value = |name: &str| {
            classes
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .map(|p| p.value)
        };
        assert!(value("kl-high") > value("kl-medium"));
        assert!(value("kl-medium") > value("kl-build") && value("kl-build") > value("kl-low"));
        assert!(value("kl-low") > value("kl-best-effort"));
        let never: Vec<_> = classes
            .iter()
            .filter(|p| p.preemption_policy.as_deref() == Some("Never"))
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(never, ["kl-best-effort", "kl-build"]);
    }
}
