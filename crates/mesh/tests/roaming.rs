//! A peer that moves to a new UDP port mid-stream keeps its stream.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_a_port_change() {
    let a = start(81);
    let b = start(82);
    full_mesh(&[&a, &b]).await;
    let echo = tcp_echo(&a, 7).await;
    let s = within("connect", 10, b.tcp_connect(echo)).await.unwrap();
    let data = payload(4 << 20, 3);
    let (mut rd, mut wr) = tokio::io::split(s);
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 4 << 20];
        rd.read_exact(&mut got).await.map(|_| got)
    });
    let old = b.local_addr();
    let half = data.len() / 2;
    within("first half", 30, wr.write_all(&data[..half]))
        .await
        .unwrap();
    within("flush", 30, wr.flush()).await.unwrap();
    let new_addr = b
        .rebind(std::net::UdpSocket::bind(loopback()).unwrap())
        .await
        .unwrap();
    assert_ne!(old.port(), new_addr.port());
    within("second half", 30, wr.write_all(&data[half..]))
        .await
        .unwrap();
    let got = within("echo back", 60, reader).await.unwrap().unwrap();
    assert!(got == data, "echoed bytes differ after roaming");
    let seen = a
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.key == b.public_key())
        .unwrap();
    assert_eq!(
        seen.endpoint,
        Some(new_addr),
        "a must have followed b to its new port"
    );
}
