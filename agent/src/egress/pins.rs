//! `--connect-to HOST:PORT:TARGET_HOST:TARGET_PORT` pins: their syntax, their clear errors, and
//! which of the browser's requests each one takes (see the egress module's docs for what the guard
//! does with them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One `--connect-to HOST:PORT:TARGET_HOST:TARGET_PORT` pin: connections the browser asks for to
/// `host:port` go to `target_host:target_port`, which the address policy does not judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// Lower-case name, or an IP literal in its canonical form (no brackets).
    pub host: String,
    pub port: u16,
    /// An IP literal (canonical, no brackets) or a name the guard resolves.
    pub target_host: String,
    pub target_port: u16,
}

/// Why a `--connect-to` entry was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadConnectTo(String);

impl ConnectTo {
    /// The syntax, for messages.
    pub const SYNTAX: &'static str = "HOST:PORT:TARGET_HOST:TARGET_PORT";
    /// An example, for messages.
    pub const EXAMPLE: &'static str = "demo.test:80:[fdbc::1]:8080";

    /// Whether the browser's request for `host:port` is this pin's.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        port == self.port && canonical_host(host) == self.host
    }

    /// Parses the entries of `--connect-to` (empty ones, a trailing comma, skipped) and refuses
    /// two pins of the same HOST:PORT.
    pub fn parse_all<S: AsRef<str>>(entries: &[S]) -> Result<Vec<ConnectTo>, BadConnectTo> {
        let mut pins: Vec<ConnectTo> = Vec::new();
        for e in entries.iter().map(|e| e.as_ref().trim()) {
            if e.is_empty() {
                continue;
            }
            let pin: ConnectTo = e.parse()?;
            if let Some(first) = pins.iter().find(|p| p.matches(&pin.host, pin.port)) {
                return Err(BadConnectTo(format!(
                    "`{e}` pins {} again (already pinned to {}); give each HOST:PORT once",
                    pin.source(),
                    first.target()
                )));
            }
            pins.push(pin);
        }
        Ok(pins)
    }

    /// `HOST:PORT` as asked for, IPv6 in brackets.
    pub fn source(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// `TARGET_HOST:TARGET_PORT`, IPv6 in brackets.
    pub fn target(&self) -> String {
        join_host_port(&self.target_host, self.target_port)
    }
}

impl fmt::Display for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source(), self.target())
    }
}

impl FromStr for ConnectTo {
    type Err = BadConnectTo;
    fn from_str(s: &str) -> Result<Self, BadConnectTo> {
        let shape = || {
            BadConnectTo(format!(
                "`{s}` is not {} (for example {})",
                Self::SYNTAX,
                Self::EXAMPLE
            ))
        };
        let (host, rest) = take_host(s).ok_or_else(shape)?;
        let (port, rest) = rest.split_once(':').ok_or_else(shape)?;
        let (target_host, target_port) = take_host(rest).ok_or_else(shape)?;
        if target_port.contains(':') {
            return Err(shape());
        }
        let port_of = |what: &str, p: &str| -> Result<u16, BadConnectTo> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(BadConnectTo(format!(
                    "`{s}`: {what} `{p}` is not a port; accepted is 1 to 65535"
                ))),
            }
        };
        Ok(Self {
            port: port_of("PORT", port)?,
            target_port: port_of("TARGET_PORT", target_port)?,
            host: host_part(s, "HOST", host)?,
            target_host: host_part(s, "TARGET_HOST", target_host)?,
        })
    }
}

/// Splits `[v6]:rest` or `name:rest` into the host (brackets kept) and what follows the colon.
fn take_host(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let rest = s[end + 1..].strip_prefix(':')?;
        Some((&s[..=end], rest))
    } else {
        s.split_once(':')
    }
}

/// Checks one host of a pin: an IPv6 literal in brackets, an IPv4 literal or a name.
fn host_part(s: &str, what: &str, h: &str) -> Result<String, BadConnectTo> {
    let bad = |why: &str| Err(BadConnectTo(format!("`{s}`: {what} `{h}` {why}")));
    if let Some(inner) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => bad("is not an IPv6 address (only IPv6 goes in brackets)"),
        };
    }
    if let Ok(ip) = h.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if h.is_empty() || !h.chars().all(name_char) {
        return bad("is not a host name or an IP address");
    }
    Ok(h.to_ascii_lowercase())
}

/// The form pins keep a host in: IP literals canonical, names in lower case.
fn canonical_host(h: &str) -> String {
    let bare = h.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match bare.unwrap_or(h).parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(s: &str) -> ConnectTo {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<ConnectTo>() {
            Ok(p) => panic!("{s} was accepted as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn connect_to_accepts_names_ipv4_and_bracketed_ipv6() {
        let p = pin("Demo.Test:80:[FDBC::0001]:8080");
        assert_eq!(
            p,
            ConnectTo {
                host: "demo.test".into(),
                port: 80,
                target_host: "fdbc::1".into(),
                target_port: 8080,
            }
        );
        assert_eq!(p.to_string(), "demo.test:80:[fdbc::1]:8080");
        let p = pin("pinned.test:443:127.0.0.1:8443");
        assert_eq!((p.target_host.as_str(), p.target_port), ("127.0.0.1", 8443));
        let p = pin("[2001:db8::1]:443:origin.internal:443");
        assert_eq!(p.host, "2001:db8::1");
        assert_eq!(p.target_host, "origin.internal");
        assert_eq!(p.source(), "[2001:db8::1]:443");
    }

    #[test]
    fn connect_to_matches_host_case_insensitively_and_the_port_exactly() {
        let p = pin("pinned.test:80:127.0.0.1:1");
        assert!(p.matches("pinned.test", 80));
        assert!(p.matches("PINNED.Test", 80));
        assert!(!p.matches("pinned.test", 81));
        assert!(!p.matches("other.test", 80));
        assert!(!p.matches("127.0.0.1", 80));
        let p = pin("[2001:db8::1]:80:127.0.0.1:1");
        assert!(p.matches("2001:db8:0::1", 80));
        assert!(p.matches("[2001:db8::1]", 80));
    }

    #[test]
    fn connect_to_refuses_bad_forms_with_the_syntax() {
        let shape = "`x` is not HOST:PORT:TARGET_HOST:TARGET_PORT (for example demo.test:80:[fdbc::1]:8080)";
        assert_eq!(err("x"), shape);
        for bad in [
            "a:80",
            "a:80:b",
            "a:80:b:1:2",
            // IPv6 targets go in brackets
            "a:80:fdbc::1:8080",
            "a:80:[fdbc::1:8080",
            "a:80:[fdbc::1]8080",
        ] {
            assert!(
                err(bad).contains("is not HOST:PORT:TARGET_HOST:TARGET_PORT"),
                "{bad}: {}",
                err(bad)
            );
        }
        assert_eq!(
            err("a:0:b:1"),
            "`a:0:b:1`: PORT `0` is not a port; accepted is 1 to 65535"
        );
        assert!(err("a:http:b:1").contains("PORT `http` is not a port"));
        assert!(err("a:80:b:65536").contains("TARGET_PORT `65536` is not a port"));
        assert!(err("a:80:b:").contains("TARGET_PORT `` is not a port"));
        assert!(err("a:80:[1.2.3.4]:1").contains("TARGET_HOST `[1.2.3.4]` is not an IPv6 address"));
        assert!(err(":80:b:1").contains("HOST `` is not a host name"));
        assert!(err("a:80:b/c:1").contains("TARGET_HOST `b/c` is not a host name"));
    }

    #[test]
    fn connect_to_refuses_the_same_host_and_port_twice() {
        let all =
            ConnectTo::parse_all(&["a.test:80:127.0.0.1:1", "", "a.test:81:127.0.0.1:2"]).unwrap();
        assert_eq!(all.len(), 2);
        let e = ConnectTo::parse_all(&["a.test:80:127.0.0.1:1", "A.TEST:80:[::1]:2"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`A.TEST:80:[::1]:2` pins a.test:80 again (already pinned to 127.0.0.1:1); give each HOST:PORT once"
        );
        assert!(ConnectTo::parse_all(&["a.test:80:127.0.0.1:1", "x"]).is_err());
    }
}
