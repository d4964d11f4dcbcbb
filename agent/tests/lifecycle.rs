//! Shutdown of the real agent binary while a recycle waits for a running job: SIGTERM must not
//! wait out the recycle's drain (up to 600 s). The agent exits within its own drain deadline,
//! and the job that was still running gets a report marked cancelled.

mod common;

use std::net::SocketAddrV6;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vantage_agent::jobs::{submit, CANCELLED};
use vantage_mesh::{Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey, PublicKey};
use vantage_proto::wire::JobEvent;
use vantage_proto::{JobSpec, Wait};
use vantage_tests::origin::{Origin, NEVER_PATH};

const PSK: [u8; 32] = [41; 32];

async fn healthz(port: u16) -> serde_json::Value {
    // 503 while recycling: the body is in the error then
    let body = match vantage_agent::chromium::http_get(port, "/healthz").await {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("{e:#}");
            msg.split_once(": {")
                .map(|(_, rest)| format!("{{{rest}"))
                .unwrap_or_default()
        }
    };
    serde_json::from_str(&body).unwrap_or_default()
}

async fn wait_health(port: u16, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    while Instant::now() < end {
        last = healthz(port).await;
        if want(&last) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within 60 s; last /healthz: {last}");
}

/// The agent process, killed if the test ends before it exits.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_recycles_drain_exits_in_time_with_a_cancelled_report() {
    let origin = Origin::start().await.unwrap();
    let mut k = [42u8; 32];
    k[0] &= 248;
    let controller_key = PrivateKey::from_bytes(k);
    let underlay = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_udp_port()));
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = std::env::temp_dir().join(format!("vantage-lifecycle-{}", std::process::id()));
    let mut agent = Reaped(
        Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
            .args(["--psk", &PresharedKey::from_bytes(PSK).to_base64()])
            .args(["--bind", &underlay.to_string(), "--name", "draining"])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--allow-net", "127.0.0.0/8"])
            .args([
                "--controller-keys",
                &controller_key.public_key().to_base64(),
            ])
            .args(["--chromium-user", common::chromium_user()])
            // the first job to finish sends the browser off to be recycled
            .args(["--recycle-after", "1", "--capacity", "2"])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent = &mut agent.0;
    wait_health(health, "the browser ready", |h| h["browser"] == "ready").await;

    let node = Node::bind(
        NodeConfig::new(controller_key, PresharedKey::from_bytes(PSK)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let agent_key: PublicKey = node
        .lookup_key(underlay, Duration::from_secs(3))
        .await
        .unwrap();
    node.add_peer(PeerConfig::new(agent_key, Some(underlay)))
        .await
        .unwrap();
    let jobs = SocketAddrV6::new(
        node.prefix().address_of(&agent_key),
        vantage_fleet::tags::ports::JOBS,
        0,
        0,
    );

    // a job that never loads, running while the recycle waits for it
    let mut stuck = JobSpec::new(&origin.url(NEVER_PATH));
    stuck.wait = Wait::Load;
    stuck.timeout_ms = 120_000;
    let stream = node.tcp_connect(jobs).await.unwrap();
    let running = tokio::spawn(async move { submit(stream, &stuck).await });
    let end = Instant::now() + Duration::from_secs(60);
    while !origin
        .hits()
        .iter()
        .any(|(path, _)| path.starts_with(NEVER_PATH))
    {
        assert!(
            Instant::now() < end,
            "the stuck job's page was not requested within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut quick = JobSpec::new(&origin.url("/index.html"));
    quick.wait = Wait::Load;
    let stream = node.tcp_connect(jobs).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(60), submit(stream, &quick))
        .await
        .expect("the quick job ends within 60 s")
        .unwrap();
    assert!(
        matches!(events.last(), Some(JobEvent::Report { .. })),
        "the quick job reports"
    );
    wait_health(health, "the recycle waiting for the stuck job", |h| {
        h["browser"] == "restarting" && h["jobs"] == "1/2"
    })
    .await;

    #[allow(unsafe_code)]
    // SAFETY: kill(2) on our own child; no memory involved
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGTERM);
    }
    let signalled = Instant::now();
    // the agent drains for 20 s, then cancels; a recycle must not hold it for its 600 s
    let limit = Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > limit {
            let _ = agent.kill();
            panic!("the agent did not exit within {limit:?} of SIGTERM during a recycle's drain");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("exited {:?} after SIGTERM: {status}", signalled.elapsed());
    assert!(status.success(), "{status}");
    let events = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the stuck job's client returns")
        .unwrap()
        .expect("the stuck job ends with frames, not a cut connection");
    match events.last() {
        Some(JobEvent::Report { report }) => {
            assert_eq!(
                report.runs[0].error.as_deref(),
                Some(CANCELLED),
                "{report:?}"
            )
        }
        other => panic!("the running job got no report: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&data);
}
