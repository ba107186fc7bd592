//! The address policy against the bypass shapes in `data/ssrf-must-block.txt`, public targets that
//! must stay reachable, and range edges the unit tests in `address_policy.rs` do not cover.

use std::net::IpAddr;

use fp_domain::address_policy::{AddressPolicy, Blocked, TargetHost};
use url::Url;

/// Reference list of URLs a webhook validator must refuse (ours now; the header says where from).
const MUST_BLOCK: &str = include_str!("data/ssrf-must-block.txt");

/// The URLs of the list: a line is a comment only when it starts with `#`, since a fragment trick
/// carries a `#` inside the URL.
fn must_block_urls() -> Vec<&'static str> {
    MUST_BLOCK
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Refused by the policy itself (address, name or userinfo), not merely by the scheme or parser.
fn is_policy_reason(blocked: &Blocked) -> bool {
    matches!(
        blocked,
        Blocked::Address { .. } | Blocked::Name { .. } | Blocked::Userinfo
    )
}

/// `raw` with its scheme replaced by `https`, when `raw` names a host. `file:///etc/passwd` names
/// none: its https form would parse as host `etc`, which says nothing about the policy.
fn https_form(raw: &str) -> Option<String> {
    let url = Url::parse(raw).ok()?;
    url.host_str().filter(|host| !host.is_empty())?;
    Some(format!("https{}", &raw[url.scheme().len()..]))
}

#[test]
fn every_listed_url_is_refused_for_the_right_reason() {
    let policy = AddressPolicy::default();
    let urls = must_block_urls();
    assert!(urls.len() >= 50, "the list lost lines: {}", urls.len());
    let mut https_forms_checked = 0;
    for raw in urls {
        let blocked = policy
            .check_url(raw)
            .expect_err(&format!("{raw} must be blocked"));
        if raw.starts_with("https:") {
            assert!(
                is_policy_reason(&blocked),
                "{raw}: refused, but for `{blocked}`"
            );
            continue;
        }
        assert!(
            matches!(blocked, Blocked::NotHttps(_)),
            "{raw}: expected a scheme refusal, got `{blocked}`"
        );
        // Being http must not be the only thing standing between the URL and the target.
        if let Some(https) = https_form(raw) {
            let blocked = policy
                .check_url(&https)
                .expect_err(&format!("{https} (https form of {raw}) must be blocked"));
            assert!(
                is_policy_reason(&blocked),
                "{https}: refused, but for `{blocked}`"
            );
            https_forms_checked += 1;
        }
    }
    assert_eq!(https_forms_checked, 3, "http, gopher and ftp lines");
}

#[test]
fn public_targets_are_allowed_and_judged_by_the_host_that_is_dialled() {
    let policy = AddressPolicy::default();
    let cases = [
        ("https://8.8.8.8/", "8.8.8.8"),
        ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
        ("https://example.com/hook", "example.com"),
        ("https://hooks.slack.com/services/T/B/X", "hooks.slack.com"),
        ("https://discord.com/api/webhooks/1/token", "discord.com"),
        ("https://93.184.216.34:8443/hook?x=1", "93.184.216.34"),
        ("https://100.63.255.255/", "100.63.255.255"),
        ("https://100.128.0.0/", "100.128.0.0"),
        ("https://172.15.255.255/", "172.15.255.255"),
        ("https://172.32.0.0/", "172.32.0.0"),
        ("https://192.0.1.0/", "192.0.1.0"),
        ("https://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8"),
        // Only `localhost` and names under it are local; these merely contain the word.
        ("https://localhost.example.com/", "localhost.example.com"),
        ("https://mylocalhost/", "mylocalhost"),
        (
            "https://metadata.google.internal.example.com/",
            "metadata.google.internal.example.com",
        ),
        // The mirror images of the listed tricks: the backslash or fragment ends the authority, so
        // the host really is Slack, and that is what the HTTP client would dial too.
        ("https://hooks.slack.com\\@127.0.0.1/", "hooks.slack.com"),
        ("https://hooks.slack.com#@127.0.0.1/", "hooks.slack.com"),
    ];
    for (raw, expected_host) in cases {
        let checked = policy
            .check_url(raw)
            .unwrap_or_else(|blocked| panic!("{raw} must be allowed, got `{blocked}`"));
        let host = match checked.host {
            TargetHost::Ip(address) => address.to_string(),
            TargetHost::Name(name) => name,
        };
        assert_eq!(host, expected_host, "{raw}");
    }
}

#[test]
fn range_edges_not_covered_by_the_unit_tests() {
    // None: allowed. Some(text): blocked, with `text` in the reason (the range that caught it).
    let cases: &[(&str, Option<&str>)] = &[
        ("0.255.255.255", Some("0.0.0.0/8")),
        ("1.0.0.0", None),
        ("126.255.255.255", None),
        ("127.255.255.255", Some("127.0.0.0/8")),
        ("128.0.0.0", None),
        ("169.253.255.255", None),
        ("169.254.255.255", Some("169.254.0.0/16")),
        ("169.255.0.0", None),
        ("168.63.129.15", None),
        ("191.255.255.255", None),
        ("192.0.0.0", Some("192.0.0.0/24")),
        ("192.0.0.255", Some("192.0.0.0/24")),
        ("192.0.1.0", None),
        ("192.0.2.255", Some("192.0.2.0/24")),
        ("192.0.3.0", None),
        ("192.31.195.255", None),
        ("192.31.196.0", Some("192.31.196.0/24")),
        ("192.31.197.0", None),
        ("192.52.193.255", Some("192.52.193.0/24")),
        ("192.52.194.0", None),
        ("192.88.98.255", None),
        ("192.88.99.0", Some("192.88.99.0/24")),
        ("192.88.100.0", None),
        ("192.175.48.0", Some("192.175.48.0/24")),
        ("192.175.49.0", None),
        ("198.51.99.255", None),
        ("198.51.100.0", Some("198.51.100.0/24")),
        ("198.51.101.0", None),
        ("203.0.112.255", None),
        ("203.0.113.255", Some("203.0.113.0/24")),
        ("203.0.114.0", None),
        ("239.255.255.255", Some("multicast range 224.0.0.0/4")),
        ("240.0.0.0", Some("reserved range 240.0.0.0/4")),
        // IPv6 forms that embed an IPv4 are judged by that IPv4, whichever form it is.
        ("::2", Some("IPv4-compatible form of 0.0.0.2")),
        ("::a00:1", Some("IPv4-compatible form of 10.0.0.1")),
        ("::808:808", None),
        ("::ffff:0:a00:1", Some("IPv4-translated form of 10.0.0.1")),
        ("::ffff:0:808:808", None),
        ("::ffff:ffff:ffff", Some("240.0.0.0/4")),
        ("::ffff:a83f:8110", Some("Azure WireServer")),
        ("64:ff9b::a00:1", Some("NAT64 form of 10.0.0.1")),
        ("64:ff9b:1::", Some("64:ff9b:1::/48")),
        ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some("64:ff9b:1::/48")),
        ("64:ff9b:2::", None),
        ("100::", Some("100::/64")),
        ("100::ffff:ffff:ffff:ffff", Some("100::/64")),
        ("100:0:0:1::", None),
        ("2001::1", Some("Teredo range 2001::/32")),
        ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001::/23")),
        // 2001:db8::/32 lies outside 2001::/23 (which ends at 2001:1ff:…): its own entry.
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:db8::", Some("2001:db8::/32")),
        (
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2001:db8::/32"),
        ),
        ("2001:db9::", None),
        ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2002::", Some("2002::/16")),
        ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("2002::/16")),
        ("2003::", None),
        ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", None),
        ("2620:4f:8000::", Some("2620:4f:8000::/48")),
        (
            "2620:4f:8000:ffff:ffff:ffff:ffff:ffff",
            Some("2620:4f:8000::/48"),
        ),
        ("2620:4f:8001::", None),
        ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("3fff::", Some("3fff::/20")),
        ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some("3fff::/20")),
        ("3fff:1000::", None),
        ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("5f00::", Some("5f00::/16")),
        ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("5f00::/16")),
        ("5f01::", None),
        ("fd00:ec2::254", Some("fc00::/7")),
        ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("fe80::", Some("fe80::/10")),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fe80::/10")),
        ("fec0::", Some("fec0::/10")),
        ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fec0::/10")),
        ("ff00::", Some("ff00::/8")),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("ff00::/8")),
    ];
    let policy = AddressPolicy::default();
    for (text, expected) in cases {
        let address: IpAddr = text.parse().expect("test address");
        match (policy.check_address(address), expected) {
            (Ok(()), None) => {}
            (Err(blocked), Some(range)) => {
                let reason = blocked.operator_detail();
                assert!(
                    reason.contains(range),
                    "{text}: `{reason}` should name {range}"
                );
            }
            (verdict, expected) => {
                let expected =
                    expected.map_or("allowed".to_owned(), |range| format!("blocked by {range}"));
                panic!("{text}: got {verdict:?}, expected {expected}")
            }
        }
    }
}
