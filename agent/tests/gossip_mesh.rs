//! Five agent processes on the real stack: vantage-mesh over loopback UDP, behind the WAN emulator
//! with the measured 20-region matrix, gossiping with the `fleet` profile. Membership converges,
//! the Vivaldi estimates track the matrix, and a SIGKILLed agent is declared failed by all.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vantage_gossip::transport::MeshTransport;
use vantage_gossip::{Config, Event, GossipHandle, Profile, Tags};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_wan::{Matrix, Wan, WanConfig};

const REGIONS: [&str; 5] = ["sin", "ams", "syd", "iad", "gru"];
const OBSERVER_REGION: &str = "fra";
const GOSSIP_PORT: u16 = 7946;
/// The observer's median relative RTT error must stay at or under this...
const RTT_ERROR_BOUND: f64 = 0.20;
/// ...for this many consecutive samples...
const WINDOW_SAMPLES: usize = 6;
/// ...taken this far apart...
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// ...starting within this long (a liveness limit: generous, for a loaded machine).
const VIVALDI_SETTLE: Duration = Duration::from_secs(150);

/// Children killed and reaped on drop, so a failing test leaves no processes behind.
struct Agents {
    children: Vec<Child>,
    lines: Arc<Mutex<HashMap<usize, Vec<String>>>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agents {
    fn lines(&self, i: usize) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .get(&i)
            .cloned()
            .unwrap_or_default()
    }

    fn joined(&self, i: usize) -> HashSet<String> {
        self.lines(i)
            .iter()
            .filter_map(|l| l.strip_prefix("EventMemberJoin: "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    fn saw_failed(&self, i: usize, name: &str) -> bool {
        self.lines(i)
            .iter()
            .any(|l| l.trim() == format!("EventMemberFailed: {name}"))
    }
}

fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn name(i: usize) -> String {
    format!("{}-{i}", REGIONS[i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_converge_estimate_rtt_and_detect_a_kill() {
    let matrix = Matrix::builtin();
    let mut wan = Wan::new(matrix.clone(), WanConfig::default()).unwrap();
    let psk = PresharedKey::from_bytes([77; 32]);
    let data = std::env::temp_dir().join(format!("vantage-gossip-mesh-{}", std::process::id()));
    let mut agents = Agents {
        children: Vec::new(),
        lines: Arc::default(),
    };
    let mut advertised = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let real = free_udp_port();
        let adv = wan.attach(&name(i), region, real).unwrap();
        advertised.push(adv);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage-agent"));
        cmd.args([
            "--psk",
            &psk.to_base64(),
            "--bind",
            &real.to_string(),
            "--advertise",
            &adv.to_string(),
        ])
        .args([
            "--name",
            &name(i),
            "--region",
            region,
            "--gossip-profile",
            "fleet",
        ])
        // a membership test: no browser, and no fixed health port to collide on
        .args(["--no-browser", "--health-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.join(name(i)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if i > 0 {
            cmd.args(["--seeds", &advertised[0].to_string()]);
        }
        let mut child = cmd.spawn().expect("spawn vantage-agent");
        let out = child.stdout.take().unwrap();
        let lines = agents.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().entry(i).or_default().push(line);
            }
        });
        agents.children.push(child);
    }

    // the observer: an in-process member in fra, on the same stack
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let adv = wan
        .attach("observer", OBSERVER_REGION, socket.local_addr().unwrap())
        .unwrap();
    let mut key = [9u8; 32];
    key[0] &= 248;
    let mut mcfg = NodeConfig::new(PrivateKey::from_bytes(key), psk);
    mcfg.advertise = Some(adv);
    let node = Node::start(mcfg, socket).unwrap();
    let mut tags = Tags::new();
    tags.insert(
        vantage_fleet::tags::WG.into(),
        node.public_key().to_base64(),
    );
    tags.insert(vantage_fleet::tags::EP.into(), adv.to_string());
    tags.insert(vantage_fleet::tags::REGION.into(), OBSERVER_REGION.into());
    let transport = MeshTransport::bind(node.clone(), GOSSIP_PORT)
        .await
        .unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    let gossip = vantage_gossip::spawn(
        Config::profile(Profile::Fleet),
        "observer",
        &tags,
        transport,
        99,
        tx,
    )
    .unwrap();
    let failed = Arc::new(Mutex::new(HashSet::<String>::new()));
    {
        let (node, failed) = (node.clone(), failed.clone());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    Event::Joined(m) | Event::Updated(m) if m.name != "observer" => {
                        vantage_fleet::add_member_peer(&node, &m).await
                    }
                    Event::Failed { name } => {
                        failed.lock().unwrap().insert(name);
                    }
                    _ => {}
                }
            }
        });
    }
    let start = Instant::now();
    loop {
        match vantage_fleet::try_join(&node, &gossip, &advertised[0].to_string(), GOSSIP_PORT).await
        {
            Ok(_) => break,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                eprintln!("observer join: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("observer could not join: {e:#}"),
        }
    }

    // membership converges: every agent sees all five agents and the observer
    let everyone: HashSet<String> = (0..REGIONS.len())
        .map(name)
        .chain(["observer".to_owned()])
        .collect();
    let converged = wait(Duration::from_secs(60), || {
        (0..REGIONS.len()).all(|i| agents.joined(i) == everyone)
    })
    .await;
    let seen: Vec<usize> = (0..REGIONS.len()).map(|i| agents.joined(i).len()).collect();
    assert!(
        converged,
        "membership did not converge within 60 s; members seen per agent: {seen:?}"
    );
    println!(
        "membership converged after {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Vivaldi: the observer's estimates between agents against the matrix. Coordinates wander
    // before they settle, so one sample under the bound proves nothing: the error must stay
    // under it for a whole window of consecutive samples.
    let mut samples: Vec<f64> = Vec::new();
    let mut under = 0;
    let deadline = Instant::now() + VIVALDI_SETTLE + SAMPLE_EVERY * WINDOW_SAMPLES as u32;
    while under < WINDOW_SAMPLES && Instant::now() < deadline {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let Some(error) = median_rtt_error(&gossip, &matrix).await else {
            continue;
        };
        println!(
            "after {:.0} s: median relative RTT error {:.1}%",
            start.elapsed().as_secs_f64(),
            error * 100.0
        );
        samples.push(error);
        under = if error <= RTT_ERROR_BOUND {
            under + 1
        } else {
            0
        };
    }
    let shown: Vec<String> = samples
        .iter()
        .map(|e| format!("{:.1}%", e * 100.0))
        .collect();
    assert!(
        under >= WINDOW_SAMPLES,
        "the median relative RTT error did not stay at or under {:.0}% for {WINDOW_SAMPLES} \
         consecutive samples ({SAMPLE_EVERY:?} apart); samples: {}",
        RTT_ERROR_BOUND * 100.0,
        shown.join(", ")
    );

    // SIGKILL one agent: everyone else declares it failed
    let victim = REGIONS.len() - 1;
    agents.children[victim].kill().unwrap();
    agents.children[victim].wait().unwrap();
    let killed_at = Instant::now();
    let victim_name = name(victim);
    let all = wait(Duration::from_secs(90), || {
        (0..victim).all(|i| agents.saw_failed(i, &victim_name))
            && failed.lock().unwrap().contains(&victim_name)
    })
    .await;
    let missing: Vec<String> = (0..victim)
        .filter(|&i| !agents.saw_failed(i, &victim_name))
        .map(name)
        .collect();
    assert!(
        all,
        "{victim_name} not declared failed within 90 s by: {missing:?} (observer: {})",
        failed.lock().unwrap().contains(&victim_name)
    );
    println!(
        "{victim_name} declared failed by all after {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// The median relative error of the observer's estimates over every pair of the six members
/// (the observer included), once it has coordinates for all of them.
async fn median_rtt_error(gossip: &GossipHandle, matrix: &Matrix) -> Option<f64> {
    let members: Vec<(String, &str)> = (0..REGIONS.len())
        .map(|i| (name(i), REGIONS[i]))
        .chain([("observer".to_owned(), OBSERVER_REGION)])
        .collect();
    let mut errors = Vec::new();
    for (a, (na, ra)) in members.iter().enumerate() {
        for (nb, rb) in members.iter().skip(a + 1) {
            if let Ok(Some(est)) = gossip.estimate_rtt(na, nb).await {
                let truth = matrix.rtt(ra, rb).unwrap().as_secs_f64();
                errors.push((est.as_secs_f64() - truth).abs() / truth);
            }
        }
    }
    if errors.len() < members.len() * (members.len() - 1) / 2 {
        return None;
    }
    errors.sort_by(f64::total_cmp);
    Some(errors[errors.len() / 2])
}

async fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f()
}
