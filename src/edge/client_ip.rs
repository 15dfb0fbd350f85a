//! The client's address: the socket's peer, or, when that peer is one of the
//! `TRUSTED_PROXIES`, the right-most address of the forwarding header that is
//! not itself a trusted proxy.
//!
//! Why right-most: every proxy appends the address it saw to the header. Only the
//! entries appended by proxies we trust are facts; anything to their left was
//! written by the client and may be forged. Walking from the right and skipping
//! our own proxies therefore stops at the first address a trusted proxy saw
//! connecting to it, which no client can choose.
//!
//! Only one header is read, the one the proxies are configured to write
//! (`TRUSTED_PROXY_HEADER`): a proxy that appends to `X-Forwarded-For` passes a
//! client's own `Forwarded` header through untouched, and reading it would let
//! that client pick its address.
//!
//! Nothing here fails: a header that cannot be read, an `unknown` or obfuscated
//! (`_hidden`) identifier, or garbage, ends the walk at the last trusted hop,
//! which is then taken as the client (its requests are charged to that proxy).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use axum::{
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, Request, header::FORWARDED},
};

/// `X-Forwarded-For`, the de facto standard header (not in `http`'s constants).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A block of addresses, such as `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The first address of the block (host bits cleared).
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether the block is a whole address family (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(u32::from(ip), self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(u128::from(ip), self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix))) }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix))) }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{text}` is not an address or a CIDR block"))?;
        // An IPv4-mapped IPv6 address is the IPv4 host it names (peers may be
        // reported either way by a dual-stack socket).
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be a number from 0 to {max}"))?,
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(u128::from(v6), prefix).into()),
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1;proto=https`.
    Forwarded,
}

/// The proxies whose forwarding header is believed (`TRUSTED_PROXIES`), and the
/// header they write (`TRUSTED_PROXY_HEADER`). Empty: the peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>, header: ForwardedHeader) -> Self {
        Self { blocks, header }
    }

    /// A comma-separated list of addresses and CIDR blocks (blank entries ignored).
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',').filter(|entry| !entry.trim().is_empty()).map(str::parse).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.blocks
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client's address, given the socket's peer and the request's headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut last_trusted = peer;
        let mut walk = |hop: Option<IpAddr>| match hop {
            Some(ip) if self.trusts(ip) => {
                last_trusted = ip;
                None
            }
            Some(ip) => Some(Some(ip)),
            // A hop that names no address: the trail ends with the proxy that wrote it.
            None => Some(None),
        };
        let found = match self.header {
            ForwardedHeader::XForwardedFor => {
                let mut found = None;
                'headers: for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
                    let Ok(value) = value.to_str() else {
                        found = Some(None);
                        break;
                    };
                    for entry in value.rsplit(',') {
                        if entry.trim().is_empty() {
                            continue; // `a,,b` and trailing commas: list syntax, not a hop.
                        }
                        if let Some(outcome) = walk(parse_node(entry)) {
                            found = Some(outcome);
                            break 'headers;
                        }
                    }
                }
                found
            }
            ForwardedHeader::Forwarded => {
                let mut found = None;
                'headers: for value in headers.get_all(FORWARDED).iter().rev() {
                    let Ok(value) = value.to_str() else {
                        found = Some(None);
                        break;
                    };
                    for element in split_outside_quotes(value, ',').into_iter().rev() {
                        if element.trim().is_empty() {
                            continue;
                        }
                        if let Some(outcome) = walk(forwarded_for(element).and_then(parse_node)) {
                            found = Some(outcome);
                            break 'headers;
                        }
                    }
                }
                found
            }
        };
        match found {
            Some(Some(client)) => client,
            // Every hop was one of ours (the left-most is the client), or the
            // trail broke: the last trusted hop is the best address we know.
            Some(None) | None => last_trusted,
        }
    }

    /// The client's address for a request served with `ConnectInfo<SocketAddr>`;
    /// `None` without it (a router called in-process, as tests do).
    pub fn client_of<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(self.client(peer.ip(), request.headers()))
    }
}

/// A node of either header: `203.0.113.7`, `203.0.113.7:41234`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, optionally quoted. `None` for anything
/// else (`unknown`, `_obfuscated`, garbage).
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text).trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical())
}

/// The value of the `for` parameter of one `Forwarded` element
/// (`for=192.0.2.60;proto=http;by=203.0.113.43`), quotes included; `None` when
/// there is none.
fn forwarded_for(element: &str) -> Option<&str> {
    split_outside_quotes(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })
}

/// `text` split at each `separator` that is not inside a quoted string (where a
/// backslash escapes the next character), as RFC 7239's grammar requires.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn proxies(list: &str, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(TrustedProxies::parse_list(list).expect("valid list"), header)
    }

    /// The client seen behind `peer`, with `values` as the header (one field per value).
    #[track_caller]
    fn client(trusted: &TrustedProxies, peer: &str, name: HeaderName, values: &[&[u8]]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name.clone(), HeaderValue::from_bytes(value).expect("a header value"));
        }
        trusted.client(ip(peer), &headers)
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let block: Cidr = "10.1.2.3/8".parse().expect("valid");
        assert_eq!(block.to_string(), "10.0.0.0/8");
        assert!(block.contains(ip("10.255.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.0.0.1")), "an IPv4-mapped address is its IPv4 host");
        let v6: Cidr = "2001:db8::/32".parse().expect("valid");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let host: Cidr = "::1".parse().expect("valid");
        assert_eq!(host.to_string(), "::1/128");
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/-1", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let spoofed: &[&[u8]] = &[b"198.51.100.1"];
        assert_eq!(client(&trusted, "203.0.113.5", X_FORWARDED_FOR, spoofed), ip("203.0.113.5"));
        let nobody = TrustedProxies::default();
        assert_eq!(client(&nobody, "203.0.113.5", X_FORWARDED_FOR, spoofed), ip("203.0.113.5"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_address_is_the_client() {
        let trusted = proxies("10.0.0.0/8, 192.168.0.1", ForwardedHeader::XForwardedFor);
        // The client forged the first entry; our proxies appended the rest.
        let chain: &[&[u8]] = &[b"1.2.3.4, 203.0.113.7, 192.168.0.1"];
        assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, chain), ip("203.0.113.7"));
        // Split over several fields: they are one list, in order.
        let fields: &[&[u8]] = &[b"1.2.3.4", b"203.0.113.7", b"192.168.0.1"];
        assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, fields), ip("203.0.113.7"));
        // No header: the proxy itself is the client.
        assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, &[]), ip("10.0.0.2"));
        // Only our own proxies: the left-most of them.
        let ours: &[&[u8]] = &[b"10.9.9.9, 192.168.0.1"];
        assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, ours), ip("10.9.9.9"));
    }

    #[test]
    fn ports_brackets_ipv6_and_mapped_addresses_are_understood() {
        let trusted = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        for (value, expected) in [
            (&b"203.0.113.7:41234"[..], "203.0.113.7"),
            (b"2001:db8::7", "2001:db8::7"),
            (b"[2001:db8::7]", "2001:db8::7"),
            (b"[2001:db8::7]:443", "2001:db8::7"),
            (b"::ffff:203.0.113.7", "203.0.113.7"),
            (b" 203.0.113.7 ,, ", "203.0.113.7"),
        ] {
            assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, &[value]), ip(expected), "{value:?}");
        }
        assert_eq!(
            client(&trusted, "::ffff:10.0.0.2", X_FORWARDED_FOR, &[b"203.0.113.7"]),
            ip("203.0.113.7"),
            "a mapped peer is trusted as its IPv4 host"
        );
    }

    #[test]
    fn garbage_ends_the_trail_at_the_last_trusted_hop() {
        let trusted = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        for value in [
            &b"garbage"[..],
            b"unknown",
            b"203.0.113.7, not-an-ip",
            b"999.1.1.1",
            b"[::1",
            b"\xff\xfe",
            b"",
            b",,,",
            &[b'1'; 4000][..],
        ] {
            assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, &[value]), ip("10.0.0.2"), "{value:?}");
        }
        // Garbage written behind another of our proxies: that proxy is the client.
        let behind: &[&[u8]] = &[b"evil, 10.3.3.3"];
        assert_eq!(client(&trusted, "10.0.0.2", X_FORWARDED_FOR, behind), ip("10.3.3.3"));
    }

    #[test]
    fn forwarded_elements_are_read_with_quotes_ports_and_parameters() {
        let trusted = proxies("10.0.0.0/8", ForwardedHeader::Forwarded);
        for (value, expected) in [
            (&b"for=203.0.113.7"[..], "203.0.113.7"),
            (b"For=\"203.0.113.7:4711\";proto=https", "203.0.113.7"),
            (b"for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (b"for=\"[2001:db8:cafe::17]\";by=10.0.0.2", "2001:db8:cafe::17"),
            (b"proto=http;for=192.0.2.43, for=198.51.100.17;by=\"10.0.0.2\"", "198.51.100.17"),
            (b"for=1.2.3.4, for=203.0.113.7, for=10.1.1.1", "203.0.113.7"),
            (b"for=\"a,b;c\";proto=http, for=203.0.113.7", "203.0.113.7"),
        ] {
            assert_eq!(client(&trusted, "10.0.0.2", FORWARDED, &[value]), ip(expected), "{value:?}");
        }
        for value in [
            &b"for=unknown"[..],
            b"for=_hidden",
            b"for=\"_gazonk\"",
            b"proto=https",
            b"for=\"unterminated",
            b"for=\"\\\"",
            b"for=",
            b";;;=,=,",
        ] {
            assert_eq!(client(&trusted, "10.0.0.2", FORWARDED, &[value]), ip("10.0.0.2"), "{value:?}");
        }
    }

    #[test]
    fn the_header_the_proxies_do_not_write_is_ignored() {
        let xff = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        assert_eq!(client(&xff, "10.0.0.2", FORWARDED, &[b"for=203.0.113.7"]), ip("10.0.0.2"));
        let forwarded = proxies("10.0.0.0/8", ForwardedHeader::Forwarded);
        assert_eq!(client(&forwarded, "10.0.0.2", X_FORWARDED_FOR, &[b"203.0.113.7"]), ip("10.0.0.2"));
    }
}
