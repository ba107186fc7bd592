//! Which webhook targets FeedbackPulse may connect to (the SSRF guard's rules).
//!
//! The policy judges a parsed URL and the addresses a name resolved to; it never resolves anything
//! itself. The delivery adapter resolves, asks this module, and connects only to addresses that passed,
//! so the same rules answer at save time, in `fpctl check-url` and at every delivery.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

/// Why a target was refused. The `Display` text is what tenants read: it names the kind of address
/// a host points to, never the address or the range, so saving a name cannot be used to map what
/// internal names resolve to. [`Blocked::operator_detail`] adds both for operators.
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
    Name {
        name: String,
        why: &'static str,
        category: Option<AddressCategory>,
    },
    #[error("the host points to {category}, which webhooks may not call")]
    Address {
        address: IpAddr,
        range: String,
        category: AddressCategory,
    },
    #[error("host `{0}` did not resolve to any address")]
    NoAddresses(String),
}

impl Blocked {
    /// The kind of target refused, for callers that word the reason themselves (the dashboard's
    /// languages); `None` for refusals of the URL's shape.
    pub fn category(&self) -> Option<AddressCategory> {
        match self {
            Blocked::Address { category, .. } => Some(*category),
            Blocked::Name { category, .. } => *category,
            _ => None,
        }
    }

    /// The reason with the refused address and the range it is in: for operators only
    /// (`fpctl check-url`), never for tenants.
    pub fn operator_detail(&self) -> String {
        match self {
            Blocked::Address { address, range, .. } => {
                format!("address {address} is not allowed: {range}")
            }
            other => other.to_string(),
        }
    }
}

/// The kinds of address the policy refuses, as tenants are told them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressCategory {
    /// Private, shared (carrier-grade NAT) and unique-local networks.
    Private,
    /// Loopback and "this host" addresses: the server itself.
    Loopback,
    LinkLocal,
    /// Cloud metadata services.
    Metadata,
    Multicast,
    /// Documentation, benchmarking, protocol-assignment and other special-purpose or reserved space.
    Reserved,
}

impl AddressCategory {
    /// Stable, for programs (the api's `reason`, the dashboard's texts).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressCategory::Private => "private",
            AddressCategory::Loopback => "loopback",
            AddressCategory::LinkLocal => "link_local",
            AddressCategory::Metadata => "metadata",
            AddressCategory::Multicast => "multicast",
            AddressCategory::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressCategory::Private => "a private or internal network address",
            AddressCategory::Loopback => "a loopback address (the server itself)",
            AddressCategory::LinkLocal => {
                "a link-local address (where cloud metadata services answer)"
            }
            AddressCategory::Metadata => "a cloud metadata service",
            AddressCategory::Multicast => "a multicast address",
            AddressCategory::Reserved => "a reserved or special-purpose address",
        })
    }
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
const BLOCKED_V4: &[(Cidr, AddressCategory, &str)] = &[
    (
        v4(0, 0, 0, 0, 8),
        AddressCategory::Loopback,
        "\"this network\" range 0.0.0.0/8",
    ),
    (
        v4(10, 0, 0, 0, 8),
        AddressCategory::Private,
        "private range 10.0.0.0/8",
    ),
    (
        v4(100, 64, 0, 0, 10),
        AddressCategory::Private,
        "shared address space 100.64.0.0/10",
    ),
    (
        v4(127, 0, 0, 0, 8),
        AddressCategory::Loopback,
        "loopback range 127.0.0.0/8",
    ),
    (
        v4(169, 254, 0, 0, 16),
        AddressCategory::LinkLocal,
        "link-local range 169.254.0.0/16 (cloud metadata)",
    ),
    (
        v4(172, 16, 0, 0, 12),
        AddressCategory::Private,
        "private range 172.16.0.0/12",
    ),
    (
        v4(192, 0, 0, 0, 24),
        AddressCategory::Reserved,
        "IETF protocol assignments 192.0.0.0/24",
    ),
    (
        v4(192, 0, 2, 0, 24),
        AddressCategory::Reserved,
        "documentation range 192.0.2.0/24",
    ),
    (
        v4(192, 31, 196, 0, 24),
        AddressCategory::Reserved,
        "AS112 range 192.31.196.0/24",
    ),
    (
        v4(192, 52, 193, 0, 24),
        AddressCategory::Reserved,
        "AMT range 192.52.193.0/24",
    ),
    (
        v4(192, 88, 99, 0, 24),
        AddressCategory::Reserved,
        "6to4 relay anycast 192.88.99.0/24",
    ),
    (
        v4(192, 168, 0, 0, 16),
        AddressCategory::Private,
        "private range 192.168.0.0/16",
    ),
    (
        v4(192, 175, 48, 0, 24),
        AddressCategory::Reserved,
        "AS112 range 192.175.48.0/24",
    ),
    (
        v4(198, 18, 0, 0, 15),
        AddressCategory::Reserved,
        "benchmarking range 198.18.0.0/15",
    ),
    (
        v4(198, 51, 100, 0, 24),
        AddressCategory::Reserved,
        "documentation range 198.51.100.0/24",
    ),
    (
        v4(203, 0, 113, 0, 24),
        AddressCategory::Reserved,
        "documentation range 203.0.113.0/24",
    ),
    (
        v4(224, 0, 0, 0, 4),
        AddressCategory::Multicast,
        "multicast range 224.0.0.0/4",
    ),
    (
        v4(240, 0, 0, 0, 4),
        AddressCategory::Reserved,
        "reserved range 240.0.0.0/4",
    ),
    (
        v4(168, 63, 129, 16, 32),
        AddressCategory::Metadata,
        "Azure WireServer 168.63.129.16",
    ),
];

/// IANA IPv6 special-purpose ranges that carry no IPv4 to judge instead.
const BLOCKED_V6: &[(Cidr, AddressCategory, &str)] = &[
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
        AddressCategory::Loopback,
        "unspecified address ::",
    ),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        AddressCategory::Loopback,
        "loopback address ::1",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        AddressCategory::Private,
        "local-use NAT64 range 64:ff9b:1::/48",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        AddressCategory::Reserved,
        "discard-only range 100::/64",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        AddressCategory::Reserved,
        "documentation range 2001:db8::/32",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        AddressCategory::Reserved,
        "Teredo range 2001::/32",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        AddressCategory::Reserved,
        "IETF protocol assignments 2001::/23",
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        AddressCategory::Reserved,
        "6to4 range 2002::/16",
    ),
    (
        v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
        AddressCategory::Reserved,
        "AS112 range 2620:4f:8000::/48",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        AddressCategory::Reserved,
        "documentation range 3fff::/20",
    ),
    (
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        AddressCategory::Reserved,
        "SRv6 SID range 5f00::/16",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        AddressCategory::Private,
        "unique local range fc00::/7",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        AddressCategory::LinkLocal,
        "link-local range fe80::/10",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        AddressCategory::Private,
        "site-local range fec0::/10",
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        AddressCategory::Multicast,
        "multicast range ff00::/8",
    ),
];

const IPV4_MAPPED: &str = "IPv4-mapped";

/// IPv6 ranges that embed an IPv4 address: judged by the IPv4 they carry, so a mapped or translated
/// form of a private address is exactly as blocked as the address itself.
const EMBEDDING_V6: &[(Cidr, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), IPV4_MAPPED),
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
    ///
    /// The allow-list matches only the address forms it names. An IPv4 entry also covers the
    /// IPv4-mapped form (`::ffff:127.0.0.1`) of its addresses, because a dual-stack socket sends
    /// packets for a mapped address to that very IPv4 address: same destination, same verdict, as
    /// the blocked ranges judge it. NAT64, IPv4-translated and IPv4-compatible forms reach other
    /// machines (a translator, an IPv6 host) and are never allowed by an IPv4 entry; an operator
    /// who wants one names that IPv6 range itself.
    pub fn check_address(&self, address: IpAddr) -> Result<(), Blocked> {
        let embedded = embedded_ipv4(address);
        let allowed = |candidate: IpAddr| self.allowed.iter().any(|cidr| cidr.contains(candidate));
        let mapped = embedded.filter(|(_, form)| *form == IPV4_MAPPED);
        if allowed(address) || mapped.is_some_and(|(v4, _)| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        match (address, embedded) {
            (IpAddr::V4(v4), _) => check_ipv4(v4),
            (IpAddr::V6(v6), Some((v4, form))) => check_ipv4(v4).map_err(|blocked| match blocked {
                Blocked::Address {
                    range, category, ..
                } => Blocked::Address {
                    address: IpAddr::V6(v6),
                    range: format!("{form} form of {v4}, which is in the {range}"),
                    category,
                },
                other => other,
            }),
            (IpAddr::V6(v6), None) => check_ipv6(v6),
        }
    }
}

fn check_ipv4(address: Ipv4Addr) -> Result<(), Blocked> {
    check_in_table(BLOCKED_V4, IpAddr::V4(address))
}

fn check_ipv6(address: Ipv6Addr) -> Result<(), Blocked> {
    check_in_table(BLOCKED_V6, IpAddr::V6(address))
}

fn check_in_table(table: &[(Cidr, AddressCategory, &str)], address: IpAddr) -> Result<(), Blocked> {
    match table.iter().find(|(cidr, _, _)| cidr.contains(address)) {
        Some((_, category, range)) => Err(Blocked::Address {
            address,
            range: (*range).to_owned(),
            category: *category,
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
    let refused = if name.is_empty() {
        Some(("empty host name", None))
    } else if name == "localhost" || name.ends_with(".localhost") {
        Some((
            "localhost names point at the server itself",
            Some(AddressCategory::Loopback),
        ))
    } else if METADATA_NAMES.contains(&name) {
        Some(("cloud metadata service", Some(AddressCategory::Metadata)))
    } else {
        None
    };
    match refused {
        Some((why, category)) => Err(Blocked::Name {
            name: name.to_owned(),
            why,
            category,
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
    fn embedded_ipv4_is_named_in_the_operators_detail() {
        let blocked = policy()
            .check_address(ip("::ffff:127.0.0.1"))
            .expect_err("mapped loopback");
        let detail = blocked.operator_detail();
        assert!(detail.contains("IPv4-mapped form of 127.0.0.1"), "{detail}");
        assert!(detail.contains("loopback range 127.0.0.0/8"), "{detail}");
        assert_eq!(blocked.category(), Some(AddressCategory::Loopback));
    }

    #[test]
    fn tenants_read_the_kind_of_address_never_the_address_or_its_range() {
        let cases = [
            ("10.0.0.5", AddressCategory::Private, "private or internal"),
            (
                "100.64.1.1",
                AddressCategory::Private,
                "private or internal",
            ),
            ("fd00::5", AddressCategory::Private, "private or internal"),
            ("127.0.0.1", AddressCategory::Loopback, "loopback"),
            ("0.0.0.0", AddressCategory::Loopback, "loopback"),
            ("::1", AddressCategory::Loopback, "loopback"),
            ("169.254.169.254", AddressCategory::LinkLocal, "link-local"),
            ("fe80::1", AddressCategory::LinkLocal, "link-local"),
            ("168.63.129.16", AddressCategory::Metadata, "metadata"),
            ("224.0.0.1", AddressCategory::Multicast, "multicast"),
            ("192.0.2.1", AddressCategory::Reserved, "reserved"),
            (
                "64:ff9b::a00:5",
                AddressCategory::Private,
                "private or internal",
            ),
        ];
        for (address, category, wording) in cases {
            let blocked = policy()
                .check_address(ip(address))
                .expect_err("blocked address");
            assert_eq!(blocked.category(), Some(category), "{address}");
            let text = blocked.to_string();
            assert!(text.contains(wording), "{address}: {text}");
            assert!(text.contains("webhooks may not call"), "{address}: {text}");
            // No address, no range: no digit of either, no prefix length.
            assert!(
                !text.chars().any(|c| c.is_ascii_digit()) && !text.contains(':'),
                "{address}: {text}"
            );
            assert!(
                blocked.operator_detail().contains(address),
                "{address}: {}",
                blocked.operator_detail()
            );
        }
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
        // Only the forms the entry names: other embeddings of 127.x reach other machines.
        for embedded in [
            "64:ff9b::7f00:1",
            "64:ff9b::127.0.0.1",
            "::127.0.0.1",
            "::7f00:1",
            "::ffff:0:127.0.0.1",
        ] {
            let blocked = p
                .check_address(ip(embedded))
                .expect_err("an IPv4 entry does not allow embedded forms");
            assert_eq!(
                blocked.category(),
                Some(AddressCategory::Loopback),
                "{embedded}"
            );
        }
        assert!(p.check_url("https://[64:ff9b::7f00:1]:8443/hook").is_err());
        assert!(p.check_url("https://[::127.0.0.1]:8443/hook").is_err());
        // An IPv6 entry naming the NAT64 form itself allows exactly that form.
        let nat64 =
            AddressPolicy::with_allow_list(vec!["64:ff9b::7f00:1/128".parse().expect("cidr")]);
        assert!(nat64.check_address(ip("64:ff9b::7f00:1")).is_ok());
        assert!(nat64.check_address(ip("127.0.0.1")).is_err());
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
