//! Fly bootstrap against a DNS server this test starts: the seeds are the AAAA records of
//! `<app>.internal` other than this machine, and every Fly variable is honoured by the agent.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vantage_fleet::fly;

/// Answers AAAA for `app.internal` with `records`, NXDOMAIN for anything else.
async fn dns_server(records: Vec<Ipv6Addr>) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            // the question starts at 12; read its labels
            let mut i = 12;
            let mut labels = Vec::new();
            while q[i] != 0 {
                let l = usize::from(q[i]);
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).into_owned());
                i += 1 + l;
            }
            let end = i + 5;
            let mut a = q[..end].to_vec();
            a[2] = 0x81;
            let known = labels.join(".") == "app.internal";
            a[3] = if known { 0x80 } else { 0x83 };
            let count = if known { records.len() as u16 } else { 0 };
            a[6..8].copy_from_slice(&count.to_be_bytes());
            for r in records.iter().take(count as usize) {
                a.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 16]);
                a.extend_from_slice(&r.octets());
            }
            let _ = sock.send_to(&a, from).await;
        }
    });
    addr
}

#[tokio::test]
async fn seeds_are_the_other_machines_of_the_app() {
    let me: Ipv6Addr = "fdaa::5".parse().unwrap();
    let dns = dns_server(vec!["::1".parse().unwrap(), me, "fdaa::9".parse().unwrap()]).await;
    let seeds = fly::seeds("app", Some(me), 51820, dns).await.unwrap();
    assert_eq!(
        seeds,
        vec![
            "[::1]:51820".parse().unwrap(),
            "[fdaa::9]:51820".parse().unwrap()
        ]
    );
    let err = fly::seeds("other", Some(me), 51820, dns).await.unwrap_err();
    assert!(format!("{err:#}").contains("NXDOMAIN"), "{err:#}");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = fly::resolve_aaaa(
        "app.internal",
        silent.local_addr().unwrap(),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent(envs: &[(&str, String)], data: &std::path::Path) -> std::process::Child {
    let psk = vantage_mesh::PresharedKey::from_bytes([6; 32]).to_base64();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage-agent"));
    cmd.args(["--psk", &psk, "--no-browser"])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

struct Kill(Vec<std::process::Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_fly_finds_its_peers_through_dns_and_honours_the_fly_env() {
    let dir = std::env::temp_dir().join(format!("vantage-fly-{}", std::process::id()));
    let me: Ipv6Addr = "fdaa::5".parse().unwrap();
    let dns = dns_server(vec!["::1".parse().unwrap(), me]).await;
    let seed_port = free_port();
    let seed_health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let seed = agent(
        &[
            ("VANTAGE_BIND", format!("[::1]:{seed_port}")),
            ("VANTAGE_NAME", "seed".into()),
            ("VANTAGE_HEALTH_ADDR", seed_health.to_string()),
        ],
        &dir.join("seed"),
    );
    let mut procs = Kill(vec![seed]);
    let port = free_port();
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    procs.0.push(agent(
        &[
            ("FLY_APP_NAME", "app".into()),
            ("FLY_REGION", "sin".into()),
            ("FLY_MACHINE_ID", "m-123".into()),
            ("FLY_PRIVATE_IP", me.to_string()),
            ("VANTAGE_DNS_SERVER", dns.to_string()),
            ("VANTAGE_SEED_PORT", seed_port.to_string()),
            // fly-local-6pn and FLY_PRIVATE_IP do not exist on this machine
            ("VANTAGE_BIND", format!("[::1]:{port}")),
            ("VANTAGE_ADVERTISE", format!("[::1]:{port}")),
            ("VANTAGE_HEALTH_ADDR", health.to_string()),
        ],
        &dir.join("joiner"),
    ));
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(body) = vantage_agent::chromium::http_get(health.port(), "/healthz").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["members"] == 2 {
                assert_eq!(v["name"], "m-123", "FLY_MACHINE_ID names the member");
                assert_eq!(v["region"], "sin", "FLY_REGION is the region");
                assert_eq!(v["joined"], true);
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the fly agent never joined the seed it found in DNS; last health: {last}");
}

#[test]
fn on_fly_the_default_bind_is_the_6pn_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
        .args([
            "--psk",
            &vantage_mesh::PresharedKey::from_bytes([6; 32]).to_base64(),
            "--no-browser",
        ])
        .env("FLY_APP_NAME", "app")
        .env("VANTAGE_DNS_SERVER", "127.0.0.1:53")
        .env_remove("VANTAGE_BIND")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("fly-local-6pn"), "{err}");
}
