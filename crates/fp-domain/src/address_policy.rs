//! Which webhook targets FeedbackPulse may connect to (the SSRF guard's rules).
//!
//! The policy judges a parsed URL and the addresses a name resolved to; it never resolves anything
//! itself. The delivery adapter resolves, asks this module, and connects only to addresses that passed,
//! so the same rules answer at save time, in `fpctl check-url` and at every delivery.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

/// Why a target was refused. The `Display` text is what tenants and operators read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    #[error("scheme `{0}` is not allowed: only https URLs are")]
    NotHttps(String),
    #[error("URLs with a user name or password are not allowed")]
    Userinfo,
    #[error("the URL has no host")]
    NoHost,
    #[error("host `{name}` is not allowed: {why}")]
    Name { name: String, why: &'static str },
    #[error("address {address} is not allowed: {range}")]
    Address { address: IpAddr, range: String },
    #[error("host `{0}` did not resolve to any address")]
    NoAddresses(String),
}

/// A host as the URL parser understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal: judged directly, never resolved.
    Ip(IpAddr),
    /// A DNS name, lower-cased and without a trailing dot: resolved, then every answer judged.
    Name(String),
}

/// A URL whose scheme, userinfo and host passed the policy. Names still need resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    pub url: Url,
    pub host: TargetHost,
}

/// An IPv4 or IPv6 network in CIDR form, e.g. `127.0.0.0/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CIDR such as 127.0.0.0/8 or ::1/128")]
pub struct InvalidCidr(pub String);

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => prefix_matches(
                u32::from(network).into(),
                u32::from(address).into(),
                32,
                self.prefix_len,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => prefix_matches(
                u128::from(network),
                u128::from(address),
                128,
                self.prefix_len,
            ),
            _ => false,
        }
    }
}

fn prefix_matches(network: u128, address: u128, bits: u8, prefix_len: u8) -> bool {
    if prefix_len == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix_len);
    (network >> shift) == (address >> shift)
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCidr(s.to_owned());
        let (address, prefix) = match s.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => max_len,
        };
        if prefix_len > max_len {
            return Err(invalid());
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Cidr {
    Cidr {
        network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix_len,
    }
}

const fn v6(segments: [u16; 8], prefix_len: u8) -> Cidr {
    let [a, b, c, d, e, f, g, h] = segments;
    Cidr {
        network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
        prefix_len,
    }
}

/// IANA IPv4 special-purpose ranges, multicast, reserved space, and public addresses that serve
/// cloud metadata. Nothing a tenant's webhook should ever reach.
const BLOCKED_V4: &[(Cidr, &str)] = &[
    (v4(0, 0, 0, 0, 8), "\"this network\" range 0.0.0.0/8"),
    (v4(10, 0, 0, 0, 8), "private range 10.0.0.0/8"),
    (v4(100, 64, 0, 0, 10), "shared address space 100.64.0.0/10"),
    (v4(127, 0, 0, 0, 8), "loopback range 127.0.0.0/8"),
    (
        v4(169, 254, 0, 0, 16),
        "link-local range 169.254.0.0/16 (cloud metadata)",
    ),
    (v4(172, 16, 0, 0, 12), "private range 172.16.0.0/12"),
    (
        v4(192, 0, 0, 0, 24),
        "IETF protocol assignments 192.0.0.0/24",
    ),
    (v4(192, 0, 2, 0, 24), "documentation range 192.0.2.0/24"),
    (v4(192, 31, 196, 0, 24), "AS112 range 192.31.196.0/24"),
    (v4(192, 52, 193, 0, 24), "AMT range 192.52.193.0/24"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast 192.88.99.0/24"),
    (v4(192, 168, 0, 0, 16), "private range 192.168.0.0/16"),
    (v4(192, 175, 48, 0, 24), "AS112 range 192.175.48.0/24"),
    (v4(198, 18, 0, 0, 15), "benchmarking range 198.18.0.0/15"),
    (
        v4(198, 51, 100, 0, 24),
        "documentation range 198.51.100.0/24",
    ),
    (v4(203, 0, 113, 0, 24), "documentation range 203.0.113.0/24"),
    (v4(224, 0, 0, 0, 4), "multicast range 224.0.0.0/4"),
    (v4(240, 0, 0, 0, 4), "reserved range 240.0.0.0/4"),
    (v4(168, 63, 129, 16, 32), "Azure WireServer 168.63.129.16"),
];

/// IANA IPv6 special-purpose ranges that carry no IPv4 to judge instead.
const BLOCKED_V6: &[(Cidr, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified address ::"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback address ::1"),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64 range 64:ff9b:1::/48",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only range 100::/64",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation range 2001:db8::/32",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "Teredo range 2001::/32",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments 2001::/23",
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        "6to4 range 2002::/16",
    ),
    (
        v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
        "AS112 range 2620:4f:8000::/48",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "documentation range 3fff::/20",
    ),
    (
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        "SRv6 SID range 5f00::/16",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local range fc00::/7",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local range fe80::/10",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local range fec0::/10",
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        "multicast range ff00::/8",
    ),
];

/// IPv6 ranges that embed an IPv4 address: judged by the IPv4 they carry, so a mapped or translated
/// form of a private address is exactly as blocked as the address itself.
const EMBEDDING_V6: &[(Cidr, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), "IPv4-mapped"),
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), "IPv4-translated"),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "NAT64"),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible"),
];

const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
];

/// The rules, plus the operator's allow-list: the only way to reach an otherwise blocked address.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<Cidr>,
}

impl AddressPolicy {
    /// A policy whose only exceptions are `allowed` (empty in production by default).
    pub fn with_allow_list(allowed: Vec<Cidr>) -> Self {
        AddressPolicy { allowed }
    }

    pub fn allow_list(&self) -> &[Cidr] {
        &self.allowed
    }

    /// Checks everything that can be known without DNS: syntax, scheme, userinfo, host.
    pub fn check_url(&self, raw: &str) -> Result<CheckedUrl, Blocked> {
        let url = Url::parse(raw.trim()).map_err(|err| Blocked::InvalidUrl(err.to_string()))?;
        if url.scheme() != "https" {
            return Err(Blocked::NotHttps(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Blocked::Userinfo);
        }
        let host = match url.host() {
            None => return Err(Blocked::NoHost),
            Some(Host::Ipv4(address)) => TargetHost::Ip(IpAddr::V4(address)),
            Some(Host::Ipv6(address)) => TargetHost::Ip(IpAddr::V6(address)),
            Some(Host::Domain(name)) => TargetHost::Name(normalise_name(name)),
        };
        match &host {
            TargetHost::Ip(address) => self.check_address(*address)?,
            TargetHost::Name(name) => check_name(name)?,
        }
        Ok(CheckedUrl { url, host })
    }

    /// Judges every address a name resolved to: one blocked answer blocks the name, since a later
    /// connection could pick it.
    pub fn check_resolved(&self, name: &str, addresses: &[IpAddr]) -> Result<(), Blocked> {
        if addresses.is_empty() {
            return Err(Blocked::NoAddresses(name.to_owned()));
        }
        addresses
            .iter()
            .try_for_each(|address| self.check_address(*address))
    }

    /// Judges one address.
    pub fn check_address(&self, address: IpAddr) -> Result<(), Blocked> {
        let embedded = embedded_ipv4(address);
        let allowed = |candidate: IpAddr| self.allowed.iter().any(|cidr| cidr.contains(candidate));
        if allowed(address) || embedded.is_some_and(|(v4, _)| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        match (address, embedded) {
            (IpAddr::V4(v4), _) => check_ipv4(v4),
            (IpAddr::V6(v6), Some((v4, form))) => check_ipv4(v4).map_err(|blocked| match blocked {
                Blocked::Address { range, .. } => Blocked::Address {
                    address: IpAddr::V6(v6),
                    range: format!("{form} form of {v4}, which is in the {range}"),
                },
                other => other,
            }),
            (IpAddr::V6(v6), None) => check_ipv6(v6),
        }
    }
}

fn check_ipv4(address: Ipv4Addr) -> Result<(), Blocked> {
    match BLOCKED_V4
        .iter()
        .find(|(cidr, _)| cidr.contains(IpAddr::V4(address)))
    {
        Some((_, range)) => Err(Blocked::Address {
            address: IpAddr::V4(address),
            range: (*range).to_owned(),
        }),
        None => Ok(()),
    }
}

fn check_ipv6(address: Ipv6Addr) -> Result<(), Blocked> {
    match BLOCKED_V6
        .iter()
        .find(|(cidr, _)| cidr.contains(IpAddr::V6(address)))
    {
        Some((_, range)) => Err(Blocked::Address {
            address: IpAddr::V6(address),
            range: (*range).to_owned(),
        }),
        None => Ok(()),
    }
}

/// The IPv4 address inside a mapped, translated, NAT64 or compatible IPv6 address. `::` and `::1`
/// are left to the IPv6 table: they are not IPv4 addresses in disguise.
fn embedded_ipv4(address: IpAddr) -> Option<(Ipv4Addr, &'static str)> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    if v6 == Ipv6Addr::UNSPECIFIED || v6 == Ipv6Addr::LOCALHOST {
        return None;
    }
    EMBEDDING_V6
        .iter()
        .find(|(cidr, _)| cidr.contains(address))
        .map(|(_, form)| (Ipv4Addr::from(u128::from(v6) as u32), *form))
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn check_name(name: &str) -> Result<(), Blocked> {
    let why = if name.is_empty() {
        Some("empty host name")
    } else if name == "localhost" || name.ends_with(".localhost") {
        Some("localhost names point at the server itself")
    } else if METADATA_NAMES.contains(&name) {
        Some("cloud metadata service")
    } else {
        None
    };
    match why {
        Some(why) => Err(Blocked::Name {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AddressPolicy {
        AddressPolicy::default()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn range_boundaries() {
        let cases = [
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("11.0.0.0", true),
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.169.0.0", true),
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("255.255.255.255", false),
            ("168.63.129.16", false),
            ("168.63.129.17", true),
            ("8.8.8.8", true),
            ("2606:4700:4700::1111", true),
            ("::1", false),
            ("::", false),
            ("fbff:ffff::1", true),
            ("fc00::", false),
            ("fdff:ffff::1", false),
            ("fe00::", true),
            ("fe80::1", false),
            ("2001:db8::1", false),
            ("2001:200::1", true),
            ("2001:1ff::1", false),
            ("::ffff:8.8.8.8", true),
            ("::ffff:10.1.2.3", false),
            ("64:ff9b::808:808", true),
            ("64:ff9b::a9fe:a9fe", false),
            ("2002:808:808::", false),
        ];
        for (address, allowed) in cases {
            assert_eq!(
                policy().check_address(ip(address)).is_ok(),
                allowed,
                "{address} should be {}",
                if allowed { "allowed" } else { "blocked" }
            );
        }
    }

    #[test]
    fn embedded_ipv4_is_named_in_the_reason() {
        let reason = policy()
            .check_address(ip("::ffff:127.0.0.1"))
            .expect_err("mapped loopback")
            .to_string();
        assert!(reason.contains("IPv4-mapped form of 127.0.0.1"), "{reason}");
        assert!(reason.contains("loopback"), "{reason}");
    }

    #[test]
    fn url_shapes() {
        let p = policy();
        assert!(matches!(
            p.check_url("http://example.com/"),
            Err(Blocked::NotHttps(_))
        ));
        assert_eq!(
            p.check_url("https://hooks.slack.com@10.0.0.1/"),
            Err(Blocked::Userinfo)
        );
        assert!(matches!(
            p.check_url("https://0x7f.1/"),
            Err(Blocked::Address { .. })
        ));
        assert!(matches!(
            p.check_url("https://LOCALHOST./"),
            Err(Blocked::Name { .. })
        ));
        assert!(matches!(
            p.check_url("https://a.b.localhost/"),
            Err(Blocked::Name { .. })
        ));
        assert!(matches!(
            p.check_url("https://Metadata.Google.Internal./x"),
            Err(Blocked::Name { .. })
        ));
        assert!(matches!(
            p.check_url("not a url"),
            Err(Blocked::InvalidUrl(_))
        ));
        let checked = p
            .check_url("https://Example.COM./hook")
            .expect("public name");
        assert_eq!(checked.host, TargetHost::Name("example.com".into()));
    }

    #[test]
    fn resolved_answers_block_when_any_is_blocked() {
        let p = policy();
        assert!(
            p.check_resolved("a.example", &[ip("93.184.216.34")])
                .is_ok()
        );
        assert!(
            p.check_resolved("a.example", &[ip("93.184.216.34"), ip("10.0.0.1")])
                .is_err()
        );
        assert_eq!(
            p.check_resolved("a.example", &[]),
            Err(Blocked::NoAddresses("a.example".into()))
        );
    }

    #[test]
    fn allow_list_is_the_only_exception() {
        let p = AddressPolicy::with_allow_list(vec!["127.0.0.0/8".parse().expect("cidr")]);
        assert!(p.check_address(ip("127.0.0.1")).is_ok());
        assert!(p.check_address(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check_address(ip("10.0.0.1")).is_err());
        assert!(p.check_url("https://127.0.0.1:8443/hook").is_ok());
        // Names are judged by name first: the allow-list is for addresses.
        assert!(p.check_url("https://localhost:8443/hook").is_err());
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            "::1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("::1/128".into())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana/8".parse::<Cidr>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
    }
}
