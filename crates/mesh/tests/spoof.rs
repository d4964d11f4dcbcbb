//! Inner packets whose source is not the sending peer's overlay address are dropped. The peer here
//! is a raw boringtun session in the test, so it can put any source address it likes inside.

mod common;

use std::net::{Ipv6Addr, UdpSocket};
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey as XPublic, StaticSecret};
use common::*;
use vantage_mesh::{PeerConfig, PublicKey};

/// An IPv6/UDP packet with a correct checksum.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut p = Vec::with_capacity(40 + len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(len as u32).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(&p[40..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    p[46..48].copy_from_slice(&(if ck == 0 { 0xffff } else { ck }).to_be_bytes());
    p
}

struct RawPeer {
    tunn: Tunn,
    sock: UdpSocket,
    node: std::net::SocketAddr,
}

impl RawPeer {
    fn send(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(d) = self.tunn.encapsulate(packet, &mut buf) {
            self.sock.send_to(d, self.node).unwrap();
        }
    }

    /// Feeds replies to the session until it has nothing more to say (completes the handshake).
    fn pump(&mut self) {
        let mut rx = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut rx) {
            let mut r = self.tunn.decapsulate(Some(from.ip()), &rx[..n], &mut out);
            while let TunnResult::WriteToNetwork(d) = r {
                self.sock.send_to(d, self.node).unwrap();
                r = self.tunn.decapsulate(None, &[], &mut out);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_inner_source_is_dropped() {
    let a = start(101);
    let inbox = a.udp_bind(9).await.unwrap();
    let secret = StaticSecret::from([7u8; 32]);
    let raw_pub = PublicKey::from_bytes(XPublic::from(&secret).to_bytes());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    a.add_peer(PeerConfig::new(raw_pub, Some(sock.local_addr().unwrap())))
        .await
        .unwrap();
    let mut raw = RawPeer {
        tunn: Tunn::new(
            secret,
            XPublic::from(*a.public_key().as_bytes()),
            Some(*psk().as_bytes()),
            None,
            1,
            None,
        ),
        sock,
        node: a.local_addr(),
    };
    let honest = a.prefix().address_of(&raw_pub);
    let forged = a.prefix().address_of(&PublicKey::from_bytes([1; 32]));
    let to = a.overlay_addr();

    let honest_packet = udp6(honest, to, 4000, 9, b"honest");
    let forged_packet = udp6(forged, to, 4000, 9, b"forged");
    let got = tokio::task::spawn_blocking(move || {
        raw.send(&honest_packet); // queued behind the handshake it starts
        raw.pump();
        raw.send(&forged_packet);
        raw.send(&honest_packet);
        raw
    })
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = within("honest datagram", 5, inbox.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!((&buf[..n], *from.ip()), (&b"honest"[..], honest));
    let (n, _) = within("second honest datagram", 5, inbox.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        &buf[..n],
        b"honest",
        "the forged datagram must never be delivered"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), inbox.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(a.counters().await.unwrap().spoofed, 1);
    drop(got);
}
