//! Which addresses count as a host's own networks (loopback, private, link-local, unique-local,
//! Fly 6PN, cloud metadata…) rather than the public web, and the allowlist that lets some through.
//! The agent's egress guard enforces it where the browser connects; the controller uses it to
//! give an early, clear error for a URL whose host resolves there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network, `10.1.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a network: expected an address and a prefix length, like 10.1.0.0/16 or fd00::/8"
)]
pub struct BadNet(String);

impl FromStr for Net {
    type Err = BadNet;
    fn from_str(s: &str) -> Result<Self, BadNet> {
        let bad = || BadNet(s.to_owned());
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix.into())
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix.into())
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: usize) -> bool {
    let (whole, rest) = (bits / 8, bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
}

/// The IPv4 address an IPv6 address stands for (mapped, IPv4-compatible, NAT64 or 6to4), so it
/// is judged and allowed as what it reaches.
pub fn unwrap_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    match s {
        // IPv4-compatible (deprecated, but still routed by some stacks); not :: and ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => low(hi, lo),
        // NAT64, well-known and local-use prefixes
        [0x64, 0xff9b, 0, 0, 0, 0, ..] | [0x64, 0xff9b, 1, ..] => low(s[6], s[7]),
        // 6to4 carries the IPv4 address right after the prefix
        [0x2002, hi, lo, ..] => low(hi, lo),
        _ => ip,
    }
}

/// Why `ip` belongs to the agent's own networks rather than the public web, if it does.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match unwrap_v4(ip) {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "a cloud metadata address",
        (0, _) => "an unspecified address",
        (127, _) => "a loopback address",
        (10, _) | (192, 168) => "a private address",
        (172, 16..=31) => "a private address",
        (100, 64..=127) => "a carrier-grade NAT address",
        (192, 0) if ip.octets()[2] == 0 => "an IETF protocol address",
        (198, 18..=19) => "a benchmarking address",
        (169, 254) => "a link-local address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved address",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "a cloud metadata address",
        0xfdaa => "a Fly private network (6PN) address",
        x if x & 0xffc0 == 0xfec0 => "a site-local address",
        x if x & 0xfe00 == 0xfc00 => "a unique local address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Which addresses the browser may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Networks reachable even though they are the agent's own (a staging site on 6PN, the local
    /// demo's sites on loopback).
    pub allow: Vec<Net>,
}

impl Policy {
    /// Why the browser may not connect to `ip`, if it may not.
    pub fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        let ip4 = unwrap_v4(ip);
        if self.allow.iter().any(|n| n.contains(ip) || n.contains(ip4)) {
            return None;
        }
        forbidden(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_agents_own_networks_are_forbidden_and_the_public_web_is_not() {
        for (a, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fdaa:0:1::3", "6PN"),
            ("fd12::1", "unique local"),
            ("100.64.0.1", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("::7f00:1", "loopback"),
            ("2002:a00:1::1", "private"),
            ("64:ff9b:1::a9fe:a9fe", "metadata"),
            ("fec0::1", "site-local"),
            ("192.0.0.8", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("ff02::1", "multicast"),
        ] {
            let got = forbidden(ip(a)).unwrap_or_else(|| panic!("{a} was allowed"));
            assert!(got.contains(why), "{a}: {got}");
        }
        for a in [
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "192.0.2.1",
        ] {
            assert_eq!(forbidden(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn allowed_networks_override_and_bad_ones_are_named() {
        let p = Policy {
            allow: vec![
                "127.0.0.1/32".parse().unwrap(),
                "fdaa::/16".parse().unwrap(),
            ],
        };
        assert_eq!(p.refuse(ip("127.0.0.1")), None);
        assert_eq!(p.refuse(ip("::ffff:127.0.0.1")), None);
        assert!(p.refuse(ip("127.0.0.2")).is_some());
        assert_eq!(p.refuse(ip("fdaa:0:1::3")), None);
        assert!(p.refuse(ip("10.0.0.1")).is_some());
        let n: Net = "10.0.0.0/9".parse().unwrap();
        assert!(n.contains(ip("10.127.0.1")) && !n.contains(ip("10.128.0.1")));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Net>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("like 10.1.0.0/16"), "{e}");
        }
    }
}
