//! Who is asking: the client address that failed authentications are counted against.
//!
//! The address is the TCP peer's (which the server loop puts in every request as
//! `ConnectInfo<SocketAddr>`), unless the peer is one of `TRUSTED_PROXIES`: a reverse proxy in
//! front of this one, whose `X-Forwarded-For` is then believed. Without that setting, everyone
//! behind a reverse proxy is one address (the proxy's), and one client's failures count for all.
//!
//! Addresses are grouped as ISPs hand them out: an IPv4 address alone, an IPv6 address by its
//! /64 (one host usually has a whole /64 and can pick a new address in it for every request).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// A list of addresses and ranges: the reverse proxies whose `X-Forwarded-For` is believed
/// (`TRUSTED_PROXIES`), or the clients that may read `/metrics` (`METRICS_ALLOWED_IPS`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

impl TrustedProxies {
    /// Addresses (`10.0.0.1`, `::1`) or ranges (`10.0.0.0/8`, `fd00::/8`); an entry that is
    /// neither is an error (what was expected, and the entry's position).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let ranges = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_range(entry).ok_or_else(|| {
                    format!(
                        "IP addresses or ranges such as 10.0.0.1, 10.0.0.0/8 or fd00::/8 (entry #{} is not one)",
                        i + 1
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { ranges })
    }

    /// `true` when no address or range is listed.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// `true` when `addr` is one of the addresses or in one of the ranges (an IPv4 address
    /// written as IPv6 is the IPv4 address).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.trusts(canonical(addr))
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(&addr))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
    /// address of `X-Forwarded-For` that is not a trusted proxy (the ones left of it were written
    /// by the client or proxies nobody vouches for). An entry that is not an address ends the
    /// walk at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.ranges.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Split as bytes: one entry the client wrote in non-ASCII must not hide the entries
        // the trusted proxies appended after it.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .collect::<Vec<_>>();
        for hop in forwarded.into_iter().rev() {
            let Some(addr) = std::str::from_utf8(hop.trim_ascii())
                .ok()
                .and_then(parse_hop)
            else {
                break;
            };
            client = addr;
            if !self.trusts(addr) {
                break;
            }
        }
        client
    }
}

/// One `TRUSTED_PROXIES` entry.
fn parse_range(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`, as a dual-stack listener sees it) is the
/// IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The TCP peer of the request, as the server loop recorded it.
pub fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// What failed authentications are counted against: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(addr: IpAddr) -> ClientKey {
        match canonical(addr) {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => ClientKey(v4),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted =
            TrustedProxies::parse(&["127.0.0.1".to_owned(), " 10.0.0.0/8 ".to_owned()]).unwrap();
        let h = forwarded(&["6.6.6.6, 1.2.3.4", "10.1.1.1"]);
        // From a trusted proxy: the right-most hop that is not trusted.
        assert_eq!(trusted.client(ip("127.0.0.1"), &h), ip("1.2.3.4"));
        assert_eq!(trusted.client(ip("::ffff:127.0.0.1"), &h), ip("1.2.3.4"));
        // From anyone else the header is the client's own word: ignored.
        assert_eq!(trusted.client(ip("5.5.5.5"), &h), ip("5.5.5.5"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &h),
            ip("127.0.0.1")
        );
        // Ports, IPv6, a header that is only proxies, garbage, and no header.
        let h = forwarded(&["[2001:db8::1]:443, 9.9.9.9:80"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &h), ip("9.9.9.9"));
        let h = forwarded(&["10.2.2.2, 10.3.3.3"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &h), ip("10.2.2.2"));
        let h = forwarded(&["1.2.3.4, unknown, 10.3.3.3"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &h), ip("10.3.3.3"));
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bad_entries_are_named_by_position() {
        let err = TrustedProxies::parse(&["::1".to_owned(), "localhost".to_owned()]).unwrap_err();
        assert!(err.ends_with("(entry #2 is not one)"), "{err}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(TrustedProxies::parse(&["fd00::/8".to_owned()]).is_ok());
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::of(ip("2001:db8:1:2:bbbb::2"));
        let c = ClientKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of(ip("::ffff:1.2.3.4")).to_string(), "1.2.3.4");
        assert_eq!(ClientKey::of(ip("1.2.3.4")).to_string(), "1.2.3.4");
    }

    #[test]
    fn a_non_ascii_entry_does_not_hide_the_hops_after_it() {
        let trusted = TrustedProxies::parse(&["127.0.0.1".to_owned()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff, 9.9.9.9").unwrap(),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            trusted.client(peer, &headers),
            "9.9.9.9".parse::<IpAddr>().unwrap()
        );
    }
}
