//! The emulator over plain UDP sockets: delay from the matrix, sender addressing, loss, jitter,
//! cuts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use vantage_wan::{Matrix, Wan, WanConfig};

async fn sock() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

/// Median RTT of `n` ping-pongs from `a` to `b` through the emulator.
async fn ping(
    a: &UdpSocket,
    b: &UdpSocket,
    b_adv: SocketAddr,
    a_adv: SocketAddr,
    n: usize,
) -> Duration {
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n {
        let t = Instant::now();
        a.send_to(&[i as u8], b_adv).await.unwrap();
        let (_, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            from, a_adv,
            "must arrive from the sender's advertised endpoint"
        );
        b.send_to(&buf[..1], from).await.unwrap();
        let (_, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, b_adv);
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[n / 2]
}

#[tokio::test]
async fn delay_follows_the_matrix() {
    let m = Matrix::builtin();
    let mut wan = Wan::new(m.clone(), WanConfig::default()).unwrap();
    let (sa, ra) = sock().await;
    let (sb, rb) = sock().await;
    let a_adv = wan.attach("a", "sin", ra).unwrap();
    let b_adv = wan.attach("b", "ams", rb).unwrap();
    let want = m.rtt("sin", "ams").unwrap();
    let got = ping(&sa, &sb, b_adv, a_adv, 5).await;
    println!("sin-ams through the emulator: {got:?} (matrix {want:?})");
    assert!(got >= want, "{got:?} < {want:?}");
    assert!(
        got <= want.mul_f64(1.1) + Duration::from_millis(1),
        "{got:?} vs {want:?}"
    );
}

#[tokio::test]
async fn cut_and_heal_and_unknown_sources() {
    let mut wan = Wan::new(Matrix::builtin(), WanConfig::default()).unwrap();
    let (sa, ra) = sock().await;
    let (sb, rb) = sock().await;
    let a_adv = wan.attach("a", "iad", ra).unwrap();
    let b_adv = wan.attach("b", "ord", rb).unwrap();
    assert!(
        wan.attach("a", "iad", ra).is_err(),
        "duplicate names are refused"
    );
    let err = wan.attach("c", "mars", ra).unwrap_err();
    assert!(err.to_string().contains("unknown region `mars`"), "{err}");
    wan.cut("a", "b").unwrap();
    sa.send_to(b"x", b_adv).await.unwrap();
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sb.recv_from(&mut buf))
            .await
            .is_err()
    );
    wan.heal("a", "b").unwrap();
    ping(&sa, &sb, b_adv, a_adv, 1).await;
    let (stranger, _) = sock().await;
    stranger.send_to(b"?", b_adv).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sb.recv_from(&mut buf))
            .await
            .is_err()
    );
    let stats = wan.stats();
    assert_eq!((stats.cut, stats.unknown_source), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn loss_is_seeded_and_near_the_rate() {
    assert!(Wan::new(
        Matrix::builtin(),
        WanConfig {
            loss: 1.5,
            ..WanConfig::default()
        }
    )
    .is_err());
    let cfg = WanConfig {
        loss: 0.3,
        seed: 7,
        ..WanConfig::default()
    };
    let mut wan = Wan::new(Matrix::builtin(), cfg).unwrap();
    let (sa, ra) = sock().await;
    let (sb, rb) = sock().await;
    wan.attach("a", "fra", ra).unwrap();
    let b_adv = wan.attach("b", "ams", rb).unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while tokio::time::timeout(Duration::from_millis(300), sb.recv_from(&mut buf))
            .await
            .is_ok()
        {
            got += 1;
        }
        got
    });
    for i in 0..1000 {
        sa.send_to(b"x", b_adv).await.unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let got = reader.await.unwrap();
    let stats = wan.stats();
    println!("loss 0.3 (seed 7): {got} of 1000 arrived, {stats:?}");
    assert_eq!(stats.lost + stats.delivered, 1000);
    assert!((250..=350).contains(&stats.lost), "{stats:?}");
    assert_eq!(got as u64, stats.delivered);
}

#[tokio::test]
async fn jitter_adds_up_to_its_bound() {
    let cfg = WanConfig {
        jitter: Duration::from_millis(20),
        seed: 3,
        ..WanConfig::default()
    };
    let mut wan = Wan::new(Matrix::builtin(), cfg).unwrap();
    let (sa, ra) = sock().await;
    let (sb, rb) = sock().await;
    let a_adv = wan.attach("a", "lhr", ra).unwrap();
    let b_adv = wan.attach("b", "cdg", rb).unwrap();
    let base = Matrix::builtin().rtt("lhr", "cdg").unwrap();
    let mut samples = Vec::new();
    for _ in 0..15 {
        samples.push(ping(&sa, &sb, b_adv, a_adv, 1).await);
    }
    samples.sort();
    println!(
        "lhr-cdg with 20 ms jitter each way (seed 3): min {:?} max {:?} (matrix {base:?})",
        samples[0], samples[14]
    );
    assert!(samples[0] >= base);
    assert!(samples[14] <= base + Duration::from_millis(40 + 2));
    assert!(
        samples[14] - samples[0] > Duration::from_millis(5),
        "jitter had no visible effect"
    );
}
