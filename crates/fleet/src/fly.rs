//! Fly.io bootstrap: the seeds are the AAAA records of `<app>.internal` (every machine of the
//! app on the 6PN network) other than this machine. A small DNS client asks the resolver directly,
//! so the lookup is an AAAA query and nothing else, and tests can point it at their own server.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The first `nameserver` of `/etc/resolv.conf` (Fly: `fdaa::3`).
pub fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|l| {
        let ip = l
            .trim()
            .strip_prefix("nameserver")?
            .trim()
            .parse::<std::net::IpAddr>()
            .ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

fn query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // recursion desired, one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("`{name}` is not a valid DNS name");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 28, 0, 1]); // AAAA, IN
    Ok(q)
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(b: &[u8], mut i: usize) -> Result<usize> {
    loop {
        let len = *b.get(i).ok_or_else(|| anyhow!("truncated DNS answer"))?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xc0 == 0xc0 => return Ok(i + 2),
            l => i += 1 + usize::from(l),
        }
    }
}

fn parse(b: &[u8], id: u16) -> Result<Vec<Ipv6Addr>> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id {
        bail!("malformed DNS answer");
    }
    match b[3] & 0x0f {
        0 => {}
        3 => bail!("no such name (NXDOMAIN)"),
        rc => bail!("DNS server answered with rcode {rc}"),
    }
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let h = b
            .get(i..i + 10)
            .ok_or_else(|| anyhow!("truncated DNS answer"))?;
        let (ty, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        let data = b
            .get(i + 10..i + 10 + len)
            .ok_or_else(|| anyhow!("truncated DNS answer"))?;
        if ty == 28 && len == 16 {
            out.push(Ipv6Addr::from(
                <[u8; 16]>::try_from(data).expect("16 bytes"),
            ));
        }
        i += 10 + len;
    }
    Ok(out)
}

/// The AAAA records of `name`, asked of `server` over UDP (three tries).
pub async fn resolve_aaaa(
    name: &str,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Vec<Ipv6Addr>> {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    let id = (rand_core::RngCore::next_u32(&mut rand_core::OsRng) & 0xffff) as u16;
    let q = query(id, name)?;
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&q, server)
            .await
            .with_context(|| format!("cannot reach DNS server {server}"))?;
        if let Ok(r) = tokio::time::timeout(timeout, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from == server {
                return parse(&buf[..n], id)
                    .with_context(|| format!("looking up AAAA {name} at {server}"));
            }
        }
    }
    bail!("no answer from DNS server {server} for AAAA {name}")
}

/// Seeds on Fly: every machine of `app` except this one, at `port`.
pub async fn seeds(
    app: &str,
    me: Option<Ipv6Addr>,
    port: u16,
    server: SocketAddr,
) -> Result<Vec<SocketAddr>> {
    let name = format!("{app}.internal");
    let addrs = resolve_aaaa(&name, server, Duration::from_secs(2)).await?;
    Ok(addrs
        .into_iter()
        .filter(|a| Some(*a) != me)
        .map(|a| SocketAddr::new(a.into(), port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_queries_and_parses_compressed_answers() {
        let q = query(7, "app.internal").unwrap();
        assert_eq!(&q[12..], b"\x03app\x08internal\x00\x00\x1c\x00\x01");
        // an answer that points back at the question's name (compression)
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 16]);
        a.extend_from_slice(&"fdaa::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            parse(&a, 7).unwrap(),
            vec!["fdaa::2".parse::<Ipv6Addr>().unwrap()]
        );
        assert!(parse(&a, 8).is_err(), "a different id is not our answer");
        let mut nx = q;
        nx[3] = 0x83;
        assert!(parse(&nx, 7).unwrap_err().to_string().contains("NXDOMAIN"));
        assert!(query(1, "bad..name").is_err());
    }
}
