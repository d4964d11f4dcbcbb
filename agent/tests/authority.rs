//! Who may use an agent, on the real binary over the mesh. With `--controller-keys`, a job and a
//! CDP gateway connection from a member whose key is not listed are refused with the reason, and
//! both are served to the listed key. Without it, the job API (like the gateway) serves only
//! members with role=controller, so a member that is not in the agent's gossip is refused.

use std::net::SocketAddrV6;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_agent::jobs::submit;
use vantage_mesh::{Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey, PublicKey};
use vantage_proto::wire::JobEvent;
use vantage_proto::{JobSpec, Wait};
use vantage_tests::origin::Origin;

const PSK: [u8; 32] = [21; 32];

/// The agent process, stopped with SIGTERM and reaped on drop.
struct Agent {
    child: Child,
    underlay: std::net::SocketAddr,
    data: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child; no memory involved
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the agent binary with `extra` flags and waits until its browser is ready.
async fn spawn_agent(name: &str, extra: &[&str]) -> Agent {
    let underlay = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data =
        std::env::temp_dir().join(format!("vantage-authority-{name}-{}", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
        .args(["--psk", &PresharedKey::from_bytes(PSK).to_base64()])
        .args(["--bind", &underlay.to_string(), "--name", name])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        // the test origin is on loopback
        .args(["--allow-net", "127.0.0.0/8"])
        .args(extra)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("VANTAGE_CONTROLLER_KEYS")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        underlay,
        data,
    };
    let start = Instant::now();
    while vantage_agent::chromium::http_get(health, "/healthz")
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent did not become healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent
}

fn key(seed: u8) -> PrivateKey {
    let mut k = [seed; 32];
    k[0] &= 248;
    PrivateKey::from_bytes(k)
}

/// A mesh member that has made the agent its peer; returns it and the agent's overlay address.
async fn member(key: PrivateKey, agent: &Agent) -> (Node, std::net::Ipv6Addr) {
    let cfg = NodeConfig::new(key, PresharedKey::from_bytes(PSK));
    let node = Node::bind(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let agent_key: PublicKey = node
        .lookup_key(agent.underlay, Duration::from_secs(3))
        .await
        .unwrap();
    node.add_peer(PeerConfig::new(agent_key, Some(agent.underlay)))
        .await
        .unwrap();
    let addr = node.prefix().address_of(&agent_key);
    (node, addr)
}

async fn job(from: &Node, agent: std::net::Ipv6Addr, spec: &JobSpec) -> Vec<JobEvent> {
    let port = vantage_fleet::tags::ports::JOBS;
    let stream = from
        .tcp_connect(SocketAddrV6::new(agent, port, 0, 0))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), submit(stream, spec))
        .await
        .expect("the job did not end within 60 s")
        .unwrap()
}

/// `GET /json/version` through the gateway: the status line and the body.
async fn gateway(from: &Node, agent: std::net::Ipv6Addr) -> (String, String) {
    let port = vantage_fleet::tags::ports::CDP;
    let mut s = from
        .tcp_connect(SocketAddrV6::new(agent, port, 0, 0))
        .await
        .unwrap();
    s.write_all(format!("GET /json/version HTTP/1.1\r\nHost: [{agent}]:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the gateway did not answer within 30 s")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The events' kinds, for a readable failure.
fn kinds(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap()["event"].to_string())
        .collect()
}

fn rejected(events: &[JobEvent]) -> &str {
    match events {
        [JobEvent::Rejected { error }] => error,
        other => panic!("expected one Rejected frame, got {:?}", kinds(other)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_controller_keys_get_jobs_and_the_gateway() {
    let origin = Origin::start().await.unwrap();
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    let (controller_key, stranger_key) = (key(31), key(32));
    // a second listed key, so the list is parsed as a list
    let listed = format!(
        "{},{}",
        key(33).public_key().to_base64(),
        controller_key.public_key().to_base64()
    );
    let agent = spawn_agent("keyed", &["--controller-keys", &listed]).await;
    let (controller, agent_addr) = member(controller_key, &agent).await;
    let (stranger, _) = member(stranger_key, &agent).await;

    let events = job(&stranger, agent_addr, &spec).await;
    let why = rejected(&events);
    assert!(
        why.contains("is not a controller of this fleet")
            && why.contains("VANTAGE_CONTROLLER_KEYS"),
        "{why}"
    );
    assert!(
        why.contains(&stranger.overlay_addr().to_string()),
        "the refusal names who was refused: {why}"
    );
    let (status, body) = gateway(&stranger, agent_addr).await;
    assert!(status.contains("403"), "{status} {body}");
    assert!(
        body.contains("not a controller of this fleet") && body.contains("CDP gateway"),
        "{body}"
    );

    let events = job(&controller, agent_addr, &spec).await;
    match events.last() {
        Some(JobEvent::Report { report }) => {
            assert_eq!(report.runs[0].error, None, "{:?}", report.runs[0])
        }
        other => panic!("the controller's job did not complete: {other:?}"),
    }
    let (status, body) = gateway(&controller, agent_addr).await;
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("webSocketDebuggerUrl"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_controller_keys_the_job_api_serves_role_controller_only() {
    let origin = Origin::start().await.unwrap();
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.wait = Wait::Load;
    let agent = spawn_agent("unkeyed", &[]).await;
    // a PSK holder that is not in the agent's gossip, so has no role there
    let (stranger, agent_addr) = member(key(34), &agent).await;
    let events = job(&stranger, agent_addr, &spec).await;
    let why = rejected(&events);
    assert!(
        why.contains("the job API serves members with role=controller only"),
        "{why}"
    );
    let (status, body) = gateway(&stranger, agent_addr).await;
    assert!(
        status.contains("403") && body.contains("role=controller"),
        "{status} {body}"
    );
}
