//! The agent process as Fly runs it: `/healthz` reports 503 until Chromium is ready and 200 after,
//! follows a Chromium crash through `restarting` back to `ready`, and SIGTERM stops everything with
//! no orphan or defunct processes left.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

async fn healthz(port: u16) -> Option<(u16, Value)> {
    let body = vantage_agent::chromium::http_get(port, "/healthz").await;
    match body {
        Ok(b) => Some((200, serde_json::from_str(&b).ok()?)),
        Err(e) => {
            let msg = format!("{e:#}");
            msg.contains("503").then_some((503, Value::Null))
        }
    }
}

async fn wait_for(
    port: u16,
    limit: Duration,
    mut want: impl FnMut(u16, &Value) -> bool,
) -> (u16, Value) {
    let end = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < end {
        if let Some((code, v)) = healthz(port).await {
            if want(code, &v) {
                return (code, v);
            }
            last = Some((code, v));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never reached the wanted state within {limit:?}; last: {last:?}");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started or was told about; no memory involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Starts the real agent binary alone (no seeds) with its health endpoint on a free port.
fn spawn_agent(name: &str, dir: &str) -> (std::process::Child, u16, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = std::env::temp_dir().join(format!("{dir}-{}", std::process::id()));
    let psk = vantage_mesh::PresharedKey::from_bytes([5; 32]).to_base64();
    let agent = Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
        .args([
            "--psk",
            &psk,
            "--bind",
            "127.0.0.1:0",
            "--name",
            name,
            "--region",
            "local",
        ])
        .args(["--health-addr", &format!("127.0.0.1:{port}")])
        .args(["--chromium-user", common::chromium_user()])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (agent, port, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_chromium_and_sigterm_leaves_nothing() {
    let (mut agent, port, data) = spawn_agent("solo", "vantage-health");
    let (_, v) = wait_for(port, Duration::from_secs(60), |code, _| code == 200).await;
    println!("healthy: {v}");
    assert_eq!(v["browser"], "ready");
    assert_eq!(
        v["joined"], true,
        "an agent with no seeds is alone, and that is fine"
    );
    let first = v["browser_pid"].as_u64().expect("browser pid") as u32;

    signal(first, libc::SIGKILL);
    let (code, _) = wait_for(port, Duration::from_secs(10), |code, _| code == 503).await;
    assert_eq!(code, 503);
    let (_, v) = wait_for(port, Duration::from_secs(60), |code, _| code == 200).await;
    let second = v["browser_pid"].as_u64().unwrap() as u32;
    assert_ne!(first, second, "{v}");
    assert!(!alive(first));

    assert!(
        v["sandbox"].as_str().is_some_and(|s| s.starts_with("on")),
        "chromium runs sandboxed here: {v}"
    );
    // everything the agent started, by /proc parent links: helpers that left the browser's
    // process group (crashpad) included
    let tree: Vec<(i32, String)> = vantage_agent::procs::descendants(agent.id() as i32)
        .into_iter()
        .filter_map(|p| {
            Some((
                p,
                std::fs::read_to_string(format!("/proc/{p}/cmdline")).ok()?,
            ))
        })
        .collect();
    assert!(tree.len() > 1, "the agent's tree: {tree:?}");

    signal(agent.id(), libc::SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "agent exited with {status}");
    // the browser's whole process group is gone, nothing defunct or orphaned remains
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = vantage_agent::chromium::group_members(second as i32);
    assert!(
        left.is_empty(),
        "chromium processes survived the agent: {left:?}"
    );
    // the same process (same command line), still running: a survivor
    let survivors: Vec<&(i32, String)> = tree
        .iter()
        .filter(|(p, cmd)| {
            alive(*p as u32)
                && std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| &c == cmd)
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "processes the agent started survived it: {survivors:?}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_leaves_no_browser_behind() {
    let (mut agent, port, data) = spawn_agent("doomed", "vantage-health-kill");
    let (_, v) = wait_for(port, Duration::from_secs(60), |code, _| code == 200).await;
    let browser = v["browser_pid"].as_u64().unwrap() as i32;
    agent.kill().unwrap(); // SIGKILL: no cleanup code runs in the agent
    agent.wait().unwrap();
    let running = || -> Vec<i32> {
        vantage_agent::chromium::group_members(browser)
            .into_iter()
            .filter(|&p| alive(p as u32))
            .collect()
    };
    let mut left = running();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = running();
    }
    assert!(
        left.is_empty(),
        "the browser outlived a SIGKILLed agent: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&data);
}
