//! The address a request comes from, for log-in throttling and the session list. A peer in the
//! trusted proxies (`api.trusted_proxies`: the dashboard, a load balancer; `dashboard.trusted_proxies`:
//! the proxy in front of the dashboard) speaks for the client with `X-Forwarded-For`; anyone else's
//! header is ignored, so a caller cannot pose as a fresh address for each guess.

use std::net::IpAddr;

use crate::address_policy::Cidr;

pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address: the peer's, or, when the peer is trusted, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address it saw,
/// so only the entries after the last untrusted one were written by proxies we trust). `None`
/// without a peer.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for entry in forwarded_for.unwrap_or_default().rsplit(',') {
        // An entry that is not an address ends the chain we can follow.
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn loopback() -> Vec<Cidr> {
        vec![
            "127.0.0.0/8".parse().expect("cidr"),
            "::1/128".parse().expect("cidr"),
        ]
    }

    #[test]
    fn only_a_trusted_peer_speaks_for_the_client() {
        let trusted = loopback();
        let client =
            |peer: &str, header: Option<&str>| client_address(Some(ip(peer)), header, &trusted);
        // The dashboard on loopback forwards the browser's address.
        assert_eq!(
            client("127.0.0.1", Some("198.51.100.7")),
            Some(ip("198.51.100.7"))
        );
        // A caller from elsewhere cannot choose its address.
        assert_eq!(
            client("203.0.113.9", Some("198.51.100.7")),
            Some(ip("203.0.113.9"))
        );
        // Without the header, the peer itself.
        assert_eq!(client("127.0.0.1", None), Some(ip("127.0.0.1")));
        assert_eq!(client_address(None, Some("198.51.100.7"), &trusted), None);
    }

    #[test]
    fn the_chain_is_followed_only_through_trusted_proxies() {
        let trusted = loopback();
        let client = |header: &str| client_address(Some(ip("::1")), Some(header), &trusted);
        // What the client wrote itself (the first entry) is not believed past an untrusted hop.
        assert_eq!(client("10.9.9.9, 198.51.100.7"), Some(ip("198.51.100.7")));
        assert_eq!(client("198.51.100.7, 127.0.0.1"), Some(ip("198.51.100.7")));
        assert_eq!(client("garbage, 198.51.100.7"), Some(ip("198.51.100.7")));
        assert_eq!(client("198.51.100.7, garbage"), Some(ip("::1")));
        assert_eq!(client(""), Some(ip("::1")));
        assert_eq!(client("2001:db8::1"), Some(ip("2001:db8::1")));
    }

    #[test]
    fn with_no_trusted_proxies_the_header_is_ignored() {
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), Some("198.51.100.7"), &[]),
            Some(ip("127.0.0.1"))
        );
    }
}
