//! Agent-side cost per page-load job, and the agent's memory.
//!
//! Starts a real `vantage-agent` process (with its Chromium), joins it over the mesh as a
//! controller would, and submits jobs for the test origin site one after another. The job overhead
//! is the time a job takes at the client minus the page's own load time (context creation, capture,
//! teardown and the job API), median over the jobs. The headline is jobs sent back to back; jobs
//! 1 s apart, as from a controller across the WAN, are shown too: between jobs the agent opens
//! the next browser context ahead of need. RSS is the agent process alone, without
//! Chromium: idle once the browser is ready, and the peak while jobs run.
//!
//! `cargo build --release -p vantage-agent && cargo run --release -p vantage-agent --example agent-bench -- [--jobs 30]`

use std::net::SocketAddrV6;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vantage_agent::jobs::submit;
use vantage_mesh::{Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey};
use vantage_proto::wire::JobEvent;
use vantage_proto::{JobSpec, Viewport, Wait};
use vantage_tests::origin::Origin;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

fn agent_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("no target dir")?;
    let bin = dir.join("vantage-agent");
    if !bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p vantage-agent`",
            bin.display()
        );
    }
    Ok(bin)
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: SIGTERM to our own child; the agent then stops Chromium and exits
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Per-job overheads in ms, sorted, over `jobs` jobs (after two to warm up) with `pause` before
/// each.
async fn overheads(
    me: &Node,
    job_api: SocketAddrV6,
    spec: &JobSpec,
    jobs: usize,
    pause: Duration,
) -> Result<Vec<f64>> {
    let mut overheads = Vec::new();
    for i in 0..jobs + 2 {
        tokio::time::sleep(pause).await;
        let t = Instant::now();
        let stream = me.tcp_connect(job_api).await?;
        let events = submit(stream, spec).await?;
        let wall = t.elapsed().as_secs_f64() * 1000.0;
        let Some(JobEvent::Report { report }) = events.last() else {
            bail!("job {i} ended with {:?}", events.last())
        };
        let run = &report.runs[0];
        let load = run
            .timing
            .load_ms
            .with_context(|| format!("job {i} has no load time: {:?}", run.error))?;
        if i >= 2 {
            // the first two warm up the browser's caches of code and fonts
            overheads.push(wall - load);
        }
    }
    overheads.sort_by(f64::total_cmp);
    Ok(overheads)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut jobs = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jobs" => {
                jobs = args
                    .next()
                    .context("--jobs needs a value")?
                    .parse()
                    .context("--jobs takes a number")?
            }
            other => bail!("unknown argument `{other}`; accepted: --jobs N"),
        }
    }
    let origin = Origin::start().await?;
    let psk = PresharedKey::from_bytes([11; 32]);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let data = std::env::temp_dir().join(format!("vantage-agent-bench-{}", std::process::id()));
    let mut k = [12u8; 32];
    k[0] &= 248;
    let key = PrivateKey::from_bytes(k);
    let child = Command::new(agent_binary()?)
        .args([
            "--psk",
            &psk.to_base64(),
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--name",
            "bench",
            "--region",
            "local",
        ])
        .args(["--health-addr", &health.to_string(), "--capacity", "1"])
        // this process submits the jobs, as a controller would
        .args(["--controller-keys", &key.public_key().to_base64()])
        // the test site is on loopback: allow it through the egress guard, which stays on, so the
        // figures include the guard as a fleet agent runs it
        .args(["--allow-net", "127.0.0.0/8"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _guard = Kill(child);
    let start = Instant::now();
    loop {
        if vantage_agent::chromium::http_get(health.port(), "/healthz")
            .await
            .is_ok()
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not become healthy within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);

    let me = Node::bind(NodeConfig::new(key, psk), "127.0.0.1:0".parse()?)?;
    let agent_addr = format!("127.0.0.1:{port}").parse()?;
    let key = me.lookup_key(agent_addr, Duration::from_secs(3)).await?;
    me.add_peer(PeerConfig::new(key, Some(agent_addr))).await?;
    let job_api = SocketAddrV6::new(me.prefix().address_of(&key), 7947, 0, 0);

    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.viewport = Viewport {
        width: 1280,
        height: 800,
    };
    spec.wait = Wait::Load;
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = sampling.clone();
    let sampler = tokio::spawn(async move {
        loop {
            s.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // back to back: the next job arrives as the last report leaves, so the context the agent
    // opens between jobs is still opening when it is needed (the worst case, and the headline)
    let back_to_back = overheads(&me, job_api, &spec, jobs, Duration::ZERO).await?;
    // a pause between jobs long enough for the next context to be ready (opening one takes
    // about 350 ms here), as jobs from a controller across the WAN mostly are
    let pause = Duration::from_secs(1);
    let paused = overheads(&me, job_api, &spec, jobs, pause).await?;
    sampler.abort();
    let busy = sampling.load(std::sync::atomic::Ordering::Relaxed);
    let median = back_to_back[back_to_back.len() / 2];
    for (what, o) in [("back to back", &back_to_back), ("1 s apart", &paused)] {
        println!(
            "{jobs} jobs {what}: overhead per job min {:.1} ms, median {:.1} ms, p90 {:.1} ms",
            o[0],
            o[o.len() / 2],
            o[o.len() * 9 / 10]
        );
    }
    println!("agent RSS idle {idle} KiB, busy peak {busy} KiB");
    println!("agent-bench job_overhead_ms={median:.1} agent_rss_idle_kib={idle} agent_rss_busy_kib={busy}");
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
