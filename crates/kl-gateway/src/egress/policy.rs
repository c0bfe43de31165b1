//! Which destinations a tenant's functions may reach: an allow-list of host and port rules, deny
//! by default, and address ranges that lead back into the node, refused whatever name led there
//! unless a rule names the address itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A tenant's egress allow-list. Empty, it denies everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    #[serde(default)]
    pub allow: Vec<EgressRule>,
}

/// One allowed destination, written `host[:port]`: `api.example.com`, `*.example.com` (any
/// subdomain, not the apex), `example.com:8443`, `203.0.113.7`, `10.0.0.0/8:443`,
/// `[2001:db8::1]:443`. Without a port it allows 80 and 443.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EgressRule {
    host: HostPattern,
    /// `None`: the web ports, 80 and 443.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name below this one, not the name itself.
    Subdomains(String),
    /// Addresses in this network; a full-length prefix is a single address.
    Network(IpAddr, u8),
}

/// Why an egress rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The rule is blank.
    #[error("an egress rule must not be empty; write a host such as api.example.com")]
    Empty,
    /// The port is not a number from 1 to 65535.
    #[error("egress rule {rule:?} has an invalid port {port:?}; use a number from 1 to 65535")]
    Port { rule: String, port: String },
    /// The host is neither a DNS name nor an IP address.
    #[error(
        "egress rule {rule:?}: {host:?} is not a host name or IP address; names use letters, digits, '-' and '.'"
    )]
    Host { rule: String, host: String },
    /// A `*` appears other than as the whole first label.
    #[error("egress rule {rule:?}: a wildcard must be the whole first label, as in *.example.com")]
    Wildcard { rule: String },
    /// A network's prefix length is not a number within the address size, or leaves host bits
    /// set (`10.0.0.1/8`).
    #[error("egress rule {rule:?}: invalid network; {hint}")]
    Network { rule: String, hint: String },
}

/// Address ranges that reach the node itself or its cloud's metadata service rather than the
/// outside world: letting a name resolve there would open the control plane to tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// 127.0.0.0/8 and ::1.
    Loopback,
    /// 169.254.0.0/16 (with the metadata service at 169.254.169.254) and fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8 and ::, which Linux connects to the local host.
    Unspecified,
}

impl Reserved {
    /// The reserved range `ip` falls in, if any. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn of(ip: IpAddr) -> Option<Reserved> {
        match ip.to_canonical() {
            IpAddr::V4(v4) if v4.is_loopback() => Some(Reserved::Loopback),
            IpAddr::V4(v4) if v4.is_link_local() => Some(Reserved::LinkLocal),
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Some(Reserved::Unspecified),
            IpAddr::V6(v6) if v6.is_loopback() => Some(Reserved::Loopback),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(Reserved::LinkLocal),
            IpAddr::V6(v6) if v6.is_unspecified() => Some(Reserved::Unspecified),
            _ => None,
        }
    }
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reserved::Loopback => "a loopback address",
            Reserved::LinkLocal => "a link-local address",
            Reserved::Unspecified => "an unspecified address",
        })
    }
}

impl EgressPolicy {
    /// Whether some rule allows `host` (a name, an IP address, or a bracketed IPv6 address) on
    /// `port`. Names compare case-insensitively, ignoring one trailing dot. This checks the
    /// name only: every address it resolves to must then pass [`EgressPolicy::check_address`].
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let Some(destination) = Destination::parse(host) else {
            return false;
        };
        self.allow.iter().any(|rule| rule.matches(&destination, port))
    }

    /// Whether a connection to `ip` may be made once its name was allowed: anything but a
    /// [`Reserved`] address, which only a rule naming that very address (not a network around
    /// it) opens. Checked on the resolved address, so DNS rebinding gains nothing.
    pub fn check_address(&self, ip: IpAddr, port: u16) -> Result<(), Reserved> {
        let Some(reserved) = Reserved::of(ip) else {
            return Ok(());
        };
        let ip = ip.to_canonical();
        let named = self.allow.iter().any(|rule| {
            rule.port_matches(port)
                && matches!(rule.host, HostPattern::Network(addr, prefix) if addr == ip && prefix == full_prefix(ip))
        });
        if named { Ok(()) } else { Err(reserved) }
    }
}

/// A host a connection asks for, normalised.
enum Destination {
    Name(String),
    Ip(IpAddr),
}

impl Destination {
    /// `None` for text that is neither a valid name nor an address: it matches no rule.
    fn parse(host: &str) -> Option<Destination> {
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Some(Destination::Ip(ip.to_canonical()));
        }
        let name = normalize_name(host);
        valid_name(&name).then_some(Destination::Name(name))
    }
}

fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A DNS name of letters, digits and hyphens. The last label may not be all digits, so a
/// mistyped address (`10.0.0`) is refused rather than taken for a name.
fn valid_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253
        && name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address with every bit past `prefix` cleared.
fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl EgressRule {
    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            Some(allowed) => allowed == port,
            None => port == 80 || port == 443,
        }
    }

    fn matches(&self, destination: &Destination, port: u16) -> bool {
        self.port_matches(port)
            && match (&self.host, destination) {
                (HostPattern::Name(name), Destination::Name(host)) => name == host,
                (HostPattern::Subdomains(apex), Destination::Name(host)) => host
                    .strip_suffix(apex.as_str())
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                (HostPattern::Network(net, prefix), Destination::Ip(ip)) => {
                    full_prefix(*net) == full_prefix(*ip) && network_of(*ip, *prefix) == *net
                }
                _ => false,
            }
    }
}

impl FromStr for EgressRule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let text = rule.trim();
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        if text.contains("://") {
            // A URL: without this, its scheme would be taken for the host and the rest for a port.
            return Err(RuleError::Host {
                rule: rule.to_owned(),
                host: text.to_owned(),
            });
        }
        let (host, port, bracketed) = split_port(text);
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(RuleError::Port {
                    rule: rule.to_owned(),
                    port: p.to_owned(),
                }),
            })
            .transpose()?;
        let host = parse_host(rule, host, bracketed)?;
        Ok(EgressRule { host, port })
    }
}

/// Splits `host[:port]`, where an IPv6 host is bracketed when a port follows (`[::1]:80`) and
/// may be bare otherwise (`fd00::/8`). Returns whether the host was bracketed.
fn split_port(text: &str) -> (&str, Option<&str>, bool) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return match after.strip_prefix(':') {
            Some(port) => (host, Some(port), true),
            // Anything else after the bracket spoils the host, which then fails to parse.
            None if after.is_empty() => (host, None, true),
            None => (text, None, false),
        };
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port), false),
        _ => (text, None, false),
    }
}

fn parse_host(rule: &str, host: &str, bracketed: bool) -> Result<HostPattern, RuleError> {
    let host_error = || RuleError::Host {
        rule: rule.to_owned(),
        host: host.to_owned(),
    };
    if let Some((addr, prefix)) = host.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| host_error())?;
        let network_error = |hint: String| RuleError::Network {
            rule: rule.to_owned(),
            hint,
        };
        let max = full_prefix(addr);
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && !prefix.starts_with('+'))
            .ok_or_else(|| network_error(format!("the prefix length must be a number from 0 to {max}")))?;
        let network = network_of(addr, prefix);
        if network != addr {
            return Err(network_error(format!(
                "{addr}/{prefix} has host bits set; did you mean {network}/{prefix}?"
            )));
        }
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            // Destinations count IPv4-mapped addresses as IPv4; so must the rule.
            return Ok(HostPattern::Network(IpAddr::V4(v4), prefix - 96));
        }
        return Ok(HostPattern::Network(addr, prefix));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Network(
            ip.to_canonical(),
            full_prefix(ip.to_canonical()),
        ));
    }
    if bracketed {
        return Err(host_error());
    }
    let name = normalize_name(host);
    let (pattern, apex): (fn(String) -> HostPattern, &str) = match name.strip_prefix("*.") {
        Some(apex) => (HostPattern::Subdomains, apex),
        None => (HostPattern::Name, &name),
    };
    if apex.contains('*') {
        return Err(RuleError::Wildcard {
            rule: rule.to_owned(),
        });
    }
    if !valid_name(apex) {
        return Err(host_error());
    }
    Ok(pattern(apex.to_owned()))
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = matches!(self.host, HostPattern::Network(IpAddr::V6(_), _)) && self.port.is_some();
        if bracket {
            f.write_str("[")?;
        }
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Subdomains(apex) => write!(f, "*.{apex}")?,
            HostPattern::Network(ip, prefix) if *prefix == full_prefix(*ip) => write!(f, "{ip}")?,
            HostPattern::Network(ip, prefix) => write!(f, "{ip}/{prefix}")?,
        }
        if bracket {
            f.write_str("]")?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl TryFrom<String> for EgressRule {
    type Error = RuleError;

    fn try_from(rule: String) -> Result<Self, Self::Error> {
        rule.parse()
    }
}

impl From<EgressRule> for String {
    fn from(rule: EgressRule) -> String {
        rule.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(rules: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow: rules.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let deny = EgressPolicy::default();
        assert!(!deny.allows("example.com", 443));
        assert!(!deny.allows("1.1.1.1", 80));
        assert_eq!(
            serde_json::from_str::<EgressPolicy>("{}").unwrap(),
            deny,
            "an absent list is empty"
        );
    }

    #[test]
    fn a_name_without_port_allows_the_web_ports_only() {
        let p = policy(&["api.example.com"]);
        assert!(p.allows("api.example.com", 443) && p.allows("api.example.com", 80));
        assert!(!p.allows("api.example.com", 8443));
        assert!(!p.allows("example.com", 443) && !p.allows("x.api.example.com", 443));
    }

    #[test]
    fn names_compare_case_insensitively_and_ignore_a_trailing_dot() {
        let p = policy(&["API.Example.com."]);
        assert!(p.allows("api.example.com", 443));
        assert!(p.allows("Api.EXAMPLE.com.", 443));
        assert!(!p.allows("api.example.com..", 443));
    }

    #[test]
    fn a_wildcard_covers_every_subdomain_but_not_the_apex() {
        let p = policy(&["*.example.com"]);
        assert!(p.allows("a.example.com", 443) && p.allows("a.b.example.com", 80));
        assert!(!p.allows("example.com", 443));
        assert!(!p.allows("badexample.com", 443));
        assert!(!p.allows(".example.com", 443));
    }

    #[test]
    fn an_explicit_port_allows_that_port_only() {
        let p = policy(&["example.com:8443"]);
        assert!(p.allows("example.com", 8443));
        assert!(!p.allows("example.com", 443));
    }

    #[test]
    fn addresses_match_address_and_network_rules_only() {
        let p = policy(&["10.0.0.0/8:443", "203.0.113.7", "[2001:db8::1]:8080", "fd00::/8"]);
        assert!(p.allows("10.1.2.3", 443) && !p.allows("10.1.2.3", 80));
        assert!(!p.allows("11.0.0.1", 443));
        assert!(p.allows("203.0.113.7", 80) && !p.allows("203.0.113.8", 80));
        assert!(p.allows("[2001:db8::1]", 8080) && p.allows("2001:db8::1", 8080));
        assert!(p.allows("fd12::1", 443) && !p.allows("fe00::1", 443));
        assert!(
            p.allows("::ffff:10.9.9.9", 443),
            "IPv4-mapped addresses count as IPv4"
        );
        assert!(!policy(&["example.com"]).allows("93.184.216.34", 443));
        assert!(!policy(&["0.0.0.0/0"]).allows("example.com", 443));
    }

    #[test]
    fn reserved_addresses_need_a_rule_naming_them() {
        let names_only = policy(&["localhost", "*.internal", "169.254.0.0/16:80", "0.0.0.0/0"]);
        for (addr, why) in [
            ("127.0.0.1", Reserved::Loopback),
            ("127.9.9.9", Reserved::Loopback),
            ("::1", Reserved::Loopback),
            ("::ffff:127.0.0.1", Reserved::Loopback),
            ("169.254.169.254", Reserved::LinkLocal),
            ("fe80::1", Reserved::LinkLocal),
            ("0.0.0.0", Reserved::Unspecified),
            ("::", Reserved::Unspecified),
        ] {
            assert_eq!(names_only.check_address(ip(addr), 80), Err(why), "{addr}");
        }
        assert_eq!(names_only.check_address(ip("93.184.216.34"), 443), Ok(()));
        assert_eq!(names_only.check_address(ip("10.0.0.1"), 443), Ok(()));
        let literal = policy(&["127.0.0.1:8080"]);
        assert_eq!(literal.check_address(ip("127.0.0.1"), 8080), Ok(()));
        assert_eq!(
            literal.check_address(ip("127.0.0.1"), 8081),
            Err(Reserved::Loopback),
            "the rule names the address on another port"
        );
        assert_eq!(
            literal.check_address(ip("127.0.0.2"), 8080),
            Err(Reserved::Loopback)
        );
    }

    #[test]
    fn invalid_rules_are_refused_with_the_reason() {
        let err = |rule: &str| rule.parse::<EgressRule>().unwrap_err();
        assert_eq!(err("  "), RuleError::Empty);
        assert!(matches!(err("example.com:0"), RuleError::Port { .. }));
        assert!(matches!(err("example.com:65536"), RuleError::Port { .. }));
        assert!(matches!(err("example.com:+80"), RuleError::Port { .. }));
        assert!(matches!(err("example.com:"), RuleError::Port { .. }));
        assert!(matches!(err("a.*.example.com"), RuleError::Wildcard { .. }));
        assert!(matches!(err("*.*.example.com"), RuleError::Wildcard { .. }));
        assert!(matches!(err("*"), RuleError::Wildcard { .. }));
        assert!(matches!(err("exa_mple.com"), RuleError::Host { .. }));
        assert!(matches!(err("-a.com"), RuleError::Host { .. }));
        assert!(matches!(err("10.0.0"), RuleError::Host { .. }));
        assert!(matches!(err("http://example.com"), RuleError::Host { .. }));
        assert!(matches!(err("[example.com]:80"), RuleError::Host { .. }));
        assert!(matches!(err("10.0.0.0/33"), RuleError::Network { .. }));
        assert!(matches!(err("10.0.0.0/x"), RuleError::Network { .. }));
        assert_eq!(
            err("10.0.0.1/8").to_string(),
            "egress rule \"10.0.0.1/8\": invalid network; 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("bad name").to_string(),
            "egress rule \"bad name\": \"bad name\" is not a host name or IP address; names use letters, digits, '-' and '.'"
        );
    }

    #[test]
    fn rules_deserialize_from_a_list_of_strings_and_print_canonically() {
        let p: EgressPolicy = serde_json::from_str(
            r#"{"allow": ["API.example.com.", "*.b.com:8443", "[::1]:80", "10.0.0.0/8"]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"allow":["api.example.com","*.b.com:8443","[::1]:80","10.0.0.0/8"]}"#
        );
        let err = serde_json::from_str::<EgressPolicy>(r#"{"allow": ["a.com:0"]}"#).unwrap_err();
        assert!(err.to_string().contains("invalid port"), "{err}");
        assert!(serde_json::from_str::<EgressPolicy>(r#"{"allowed": []}"#).is_err());
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
    }

    fn name() -> impl Strategy<Value = String> {
        (prop::collection::vec(label(), 0..3), "[a-z]{1,6}").prop_map(|(mut labels, tld)| {
            labels.push(tld);
            labels.join(".")
        })
    }

    fn rule_text() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            name(),
            name().prop_map(|n| format!("*.{n}")),
            any::<Ipv4Addr>().prop_map(|a| a.to_string()),
            (any::<Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| format!("{}/{p}", network_of(IpAddr::V6(a), p))),
            (any::<Ipv4Addr>(), 80u8..=128)
                .prop_map(|(a, p)| format!("{}/{p}", network_of(IpAddr::V6(a.to_ipv6_mapped()), p))),
        ];
        (host, prop::option::of(1u16..)).prop_map(|(host, port)| match port {
            Some(port) if host.contains(':') => format!("[{host}]:{port}"),
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    proptest! {
        #[test]
        fn a_wildcard_never_matches_its_apex_or_a_lookalike(apex in name(), prefix in label(), port in 1u16..) {
            let p = policy(&[&format!("*.{apex}:{port}")]);
            let (lookalike, sub) = (format!("{prefix}{apex}"), format!("{prefix}.{apex}"));
            let shouted = format!("{}.", sub.to_uppercase());
            prop_assert!(!p.allows(&apex, port));
            prop_assert!(!p.allows(&lookalike, port));
            prop_assert!(p.allows(&sub, port));
            prop_assert!(p.allows(&shouted, port));
        }

        #[test]
        fn valid_rules_print_and_parse_back_unchanged(text in rule_text()) {
            let rule: EgressRule = text.parse().unwrap();
            prop_assert_eq!(rule.to_string().parse::<EgressRule>(), Ok(rule));
        }

        #[test]
        fn parsing_any_text_is_total_and_canonical(text in "\\PC{0,40}") {
            if let Ok(rule) = text.parse::<EgressRule>() {
                prop_assert_eq!(rule.to_string().parse::<EgressRule>(), Ok(rule));
            }
        }

        #[test]
        fn a_name_rule_matches_only_its_name_in_any_case(rule in name(), host in name(), port in 1u16..) {
            let p = policy(&[&format!("{rule}:{port}")]);
            prop_assert_eq!(p.allows(&host, port), host == rule);
            let shouted = format!("{}.", rule.to_uppercase());
            let other_port = if port == 1 { 2 } else { port - 1 };
            prop_assert!(p.allows(&shouted, port));
            prop_assert!(!p.allows(&rule, other_port));
        }

        #[test]
        fn a_network_rule_matches_exactly_its_addresses(net in any::<u32>(), prefix in 0u8..=32, addr in any::<u32>()) {
            let net = network_of(IpAddr::V4(Ipv4Addr::from(net)), prefix);
            let p = policy(&[&format!("{net}/{prefix}:443")]);
            let IpAddr::V4(net_v4) = net else { unreachable!("an IPv4 network") };
            let inside = u64::from(addr ^ u32::from(net_v4)) >> (32 - prefix) == 0;
            prop_assert_eq!(p.allows(&Ipv4Addr::from(addr).to_string(), 443), inside);
        }

        #[test]
        fn no_name_or_network_rule_opens_a_reserved_address(text in rule_text(), last in any::<u8>()) {
            let p = policy(&[&text]);
            let loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let literal = matches!(p.allow[0].host, HostPattern::Network(a, n) if a == loopback && n == 32);
            prop_assert_eq!(p.check_address(loopback, 80).is_ok(), literal && p.allow[0].port_matches(80));
            prop_assert!(p.check_address(ip("169.254.169.254"), 80).is_err() || text.starts_with("169.254.169.254"));
        }
    }
}
