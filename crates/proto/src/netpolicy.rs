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

/// The addresses a connection to `ip` actually reaches: `ip` itself, or the IPv4 address an IPv6
/// translation or tunnel form carries, so each is judged and allowed as what it reaches. Where the
/// layout is ambiguous there are several candidates, and every one must pass.
pub fn reaches(ip: IpAddr) -> Vec<IpAddr> {
    let IpAddr::V6(v6) = ip else {
        return vec![ip];
    };
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return vec![IpAddr::V4(v4)];
    }
    match s {
        // IPv4-compatible (deprecated, but still routed by some stacks); not :: and ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => vec![v4(hi, lo)],
        // SIIT's IPv4-translated form, ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => vec![v4(hi, lo)],
        // NAT64, well-known prefix: always the /96 layout
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        // NAT64, local-use prefix 64:ff9b:1::/48: the operator picks the prefix length (RFC 6052
        // allows /48, /56, /64 and /96), so the IPv4 address may sit in any of those places
        [0x64, 0xff9b, 1, ..] => nat64_layouts(v6.octets()),
        // Teredo: the client's public IPv4 address, stored inverted in the last 32 bits
        [0x2001, 0, _, _, _, _, hi, lo] => vec![v4(!hi, !lo)],
        // 6to4 carries the IPv4 address right after the prefix
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        _ => vec![ip],
    }
}

/// The IPv4 address under each RFC 6052 prefix length a /48 NAT64 prefix may be extended to
/// (bits 64..72 are always skipped). A reading in 0.0.0.0/8 is dropped for the shorter layouts:
/// no translator sends there, and it is what `64:ff9b:1::a.b.c.d` (the /96 layout) reads as.
fn nat64_layouts(o: [u8; 16]) -> Vec<IpAddr> {
    let v4 = |[a, b, c, d]: [u8; 4]| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let shorter = [
        [o[6], o[7], o[9], o[10]],
        [o[7], o[9], o[10], o[11]],
        [o[9], o[10], o[11], o[12]],
    ];
    shorter
        .into_iter()
        .filter(|a| a[0] != 0)
        .chain([[o[12], o[13], o[14], o[15]]])
        .map(v4)
        .collect()
}

/// Why `ip` belongs to the agent's own networks rather than the public web, if it does.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    reaches(ip).into_iter().find_map(forbidden_direct)
}

fn forbidden_direct(ip: IpAddr) -> Option<&'static str> {
    match ip {
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
        let allowed = |a: IpAddr| self.allow.iter().any(|n| n.contains(a));
        if allowed(ip) {
            return None;
        }
        reaches(ip)
            .into_iter()
            .filter(|&a| !allowed(a))
            .find_map(forbidden_direct)
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
    fn teredo_siit_and_local_nat64_are_judged_by_the_ipv4_they_reach() {
        for (a, why) in [
            // Teredo, client 10.0.0.1 (inverted in the last 32 bits)
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
            // Teredo, client 127.0.0.1
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
            // SIIT, ::ffff:0:a.b.c.d
            ("::ffff:0:a00:1", "private"),
            ("::ffff:0:a9fe:a9fe", "metadata"),
            // local-use NAT64 with a /48 prefix: 10.0.0.1 in bits 48..88, a public-looking tail
            ("64:ff9b:1:a00:0:100:808:808", "private"),
            // … with a /64 prefix: 127.0.0.1 in bits 72..104
            ("64:ff9b:1:1:7f:0:100:0", "loopback"),
        ] {
            let got = forbidden(ip(a)).unwrap_or_else(|| panic!("{a} was allowed"));
            assert!(got.contains(why), "{a}: {got}");
        }
        for a in [
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
            "::ffff:0:808:808",
            "64:ff9b:1::808:808",
        ] {
            assert_eq!(forbidden(ip(a)), None, "{a}");
        }
        let p = Policy {
            allow: vec!["10.0.0.1/32".parse().unwrap()],
        };
        assert_eq!(p.refuse(ip("2001:0:4136:e378:8000:63bf:f5ff:fffe")), None);
        assert_eq!(p.refuse(ip("64:ff9b:1:a00:0:100:808:808")), None);
        assert!(p.refuse(ip("64:ff9b:1:a00:0:100:a00:2")).is_some());
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
