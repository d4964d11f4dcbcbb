//! Orchestration overhead: the latency the controller's API client observes for a page load minus
//! the load duration the agent reports, for an agent at an emulated RTT of 0, 100 and 250 ms from
//! the controller; side by side with driving the same load from the controller's side through the
//! agent's CDP gateway with chromiumoxide (remote CDP, via `vantage connect`'s endpoint); and the
//! time from SIGKILL of an agent mid-job to the retry's dispatch.
//!
//! The fleet is the end-to-end harness's: a `vantage serve` process in region `ctl` and one
//! `vantage-agent` process (with a real Chromium) in each of `r0`, `r100` and `r250`, WireGuard
//! over loopback UDP behind the `vantage-wan` emulator with this matrix (RTT in ms):
//!
//! ```text
//!        ctl  r0  r100 r250
//! ctl      0   0   100  250
//! r0       0   0   300  300
//! r100   100 300     0  300
//! r250   250 300   300    0
//! ```
//!
//! The origin site (`vantage_tests::origin::Origin`) is on loopback next to every agent, so a
//! load's own duration carries no emulated RTT; only the control path does.
//!
//! - ours: `POST /api/loads` (`/index.html`, runs 1, `wait: load`, from the region), then
//!   `GET /api/loads/{id}/events` (SSE) until `done`, timed from just before the POST; minus the
//!   report's `runs[0].timing.load_ms` (navigation start to the load event).
//! - remote CDP: a local endpoint from `vantage::cli::connect::connect_endpoint` for the region's
//!   agent, one chromiumoxide connection kept open across loads; per load `browser.new_page(url)`
//!   then `page.wait_for_navigation()` (waiting on for the load event if it has not fired yet),
//!   minus `performance.getEntriesByType('navigation')[0].loadEventEnd`.
//! - retry after kill: a `/slow?ms=4000` load from `r100`; 800 ms after its first attempt shows
//!   up the r100 agent is SIGKILLed; the figure is the kill (wall clock) to the second attempt's
//!   `dispatched_unix_ms`.
//!
//! One warm-up load per region and method is discarded; the figures are medians.
//!
//! ```text
//! cargo run --release -p vantage --example orchestration-bench -- --loads 10
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use chromiumoxide::Browser;
use common::{Fleet, TOKEN};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use vantage_proto::api::{FromSpec, LoadEvent, LoadRequest, LoadState, LoadStatus};
use vantage_tests::origin::{Origin, SLOW_PATH};

const MATRIX: &str = "\
region,ctl,r0,r100,r250
ctl,0,0,100,250
r0,0,0,300,300
r100,100,300,0,300
r250,250,300,300,0
";

/// (region, emulated RTT from the controller in ms)
const REGIONS: [(&str, u32); 3] = [("r0", 0), ("r100", 100), ("r250", 250)];

/// How long one load may take before the bench gives up.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// Reads the only flag, `--loads N`.
fn loads_flag() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut loads = 10;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--loads" => {
                let v = args.next().context("--loads needs a number")?;
                loads = v
                    .parse()
                    .with_context(|| format!("--loads `{v}` is not a number"))?;
                if loads == 0 {
                    bail!("--loads must be at least 1");
                }
            }
            other => bail!("unknown argument `{other}`; usage: orchestration-bench [--loads N]"),
        }
    }
    Ok(loads)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, min and max of non-empty `xs`.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(xs: &[f64]) -> Stats {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let p50 = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        p50,
        min: v[0],
        max: v[n - 1],
        n,
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} (p50 of {}, min {:.1}, max {:.1})",
            self.p50, self.n, self.min, self.max
        )
    }
}

/// One measured load: what the client saw and what the page itself took.
#[derive(Debug, Clone, Copy)]
struct Sample {
    observed_ms: f64,
    load_ms: f64,
}

impl Sample {
    fn overhead(&self) -> f64 {
        self.observed_ms - self.load_ms
    }
}

fn request(url: &str, region: &str) -> LoadRequest {
    let mut r = LoadRequest::new(url);
    r.from = FromSpec::Text(region.into());
    r.wait = Some(vantage_proto::Wait::Load);
    r.runs = 1;
    r
}

/// Ours: POST the load, follow its events until `done`, read the report.
async fn ours_once(fleet: &Fleet, url: &str, region: &str) -> Result<Sample> {
    let req = request(url, region);
    let start = Instant::now();
    let (status, body) = fleet.post_load(&req).await;
    if status != 202 {
        bail!("POST /api/loads answered {status}: {body}");
    }
    let id = body["id"]
        .as_str()
        .context("no id in the answer")?
        .to_owned();
    let resp = fleet
        .http
        .get(fleet.url(&format!("/api/loads/{id}/events")))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?;
    let mut events = resp.bytes_stream().eventsource();
    let mut done = None;
    while let Some(ev) = events.next().await {
        let ev = ev.context("reading the load's events")?;
        if ev.event == "done" {
            let e: LoadEvent = serde_json::from_str(&ev.data)
                .with_context(|| format!("the done event `{}`", ev.data))?;
            done = Some((start.elapsed(), e));
            break;
        }
    }
    let Some((observed, event)) = done else {
        bail!("the events of {id} ended without `done`");
    };
    if !matches!(
        event,
        LoadEvent::Done {
            state: LoadState::Done,
            ..
        }
    ) {
        bail!("{id} did not succeed: {event:?}");
    }
    let s: LoadStatus = fleet.get(&format!("/api/loads/{id}")).await?;
    let r = s.reports.first().context("a done load without a report")?;
    if r.agent_region != region {
        bail!("{id} ran in {} rather than {region}", r.agent_region);
    }
    let load_ms = r
        .report
        .runs
        .first()
        .and_then(|run| run.timing.load_ms)
        .context("the report has no load_ms")?;
    Ok(Sample {
        observed_ms: ms(observed),
        load_ms,
    })
}

/// `loadEventEnd` of the page's navigation, 0 while the load event has not finished.
const LOAD_EVENT_END: &str =
    "(performance.getEntriesByType('navigation')[0] || {}).loadEventEnd || 0";
/// The same, once it is over.
const LOAD_EVENT_END_WAIT: &str = "new Promise(resolve => { const check = () => { \
     const n = performance.getEntriesByType('navigation')[0]; \
     if (n && n.loadEventEnd > 0) resolve(n.loadEventEnd); else setTimeout(check, 1); }; \
     check(); })";

/// Remote CDP: a new page at `url`, until its navigation (and load event) is over.
async fn remote_once(browser: &Browser, url: &str) -> Result<Sample> {
    let start = Instant::now();
    let page = browser.new_page(url).await.context("new_page")?;
    page.wait_for_navigation()
        .await
        .context("wait_for_navigation")?;
    let mut observed = start.elapsed();
    let mut load: f64 = page.evaluate(LOAD_EVENT_END).await?.into_value()?;
    if load <= 0.0 {
        load = page.evaluate(LOAD_EVENT_END_WAIT).await?.into_value()?;
        observed = start.elapsed();
    }
    page.close().await.context("closing the page")?;
    Ok(Sample {
        observed_ms: ms(observed),
        load_ms: load,
    })
}

/// A local CDP endpoint for `member` through the controller; stops when the sender drops.
async fn endpoint(
    fleet: &Fleet,
    member: &str,
) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = fleet.url("");
    let member = member.to_owned();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        vantage::cli::connect::connect_endpoint(&server, TOKEN, &member, listener, shutdown).await
    });
    // connect_endpoint checks the member before it serves: wait for /json/version to answer
    let url = format!("http://{local}");
    let probe = reqwest::Client::new();
    let begin = Instant::now();
    loop {
        if task.is_finished() {
            let e = match task.await {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(())) => "it stopped".into(),
                Err(e) => e.to_string(),
            };
            bail!("the CDP endpoint for {url} failed: {e}");
        }
        if let Ok(r) = probe.get(format!("{url}/json/version")).send().await {
            if r.status().is_success() {
                return Ok((url, stop));
            }
        }
        if begin.elapsed() > Duration::from_secs(30) {
            bail!("the CDP endpoint at {url} did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remote_region(fleet: &Fleet, url: &str, member: &str, n: usize) -> Result<Vec<Sample>> {
    let (endpoint, stop) = endpoint(fleet, member).await?;
    // told not to turn certificate checks off, which the agents' gateway refuses
    let config = chromiumoxide::handler::HandlerConfig {
        ignore_https_errors: false,
        ..chromiumoxide::handler::HandlerConfig::default()
    };
    let (browser, mut handler) = Browser::connect_with_config(endpoint.as_str(), config)
        .await
        .with_context(|| format!("chromiumoxide connecting to {endpoint}"))?;
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let mut out = Vec::new();
    for i in 0..=n {
        let s = tokio::time::timeout(LOAD_LIMIT, remote_once(&browser, url))
            .await
            .context("a remote-CDP load timed out")??;
        if i > 0 {
            out.push(s);
        }
    }
    drop(browser);
    pump.abort();
    let _ = stop.send(());
    Ok(out)
}

async fn ours_region(fleet: &Fleet, url: &str, region: &str, n: usize) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for i in 0..=n {
        let s = tokio::time::timeout(LOAD_LIMIT, ours_once(fleet, url, region))
            .await
            .context("a load timed out")??;
        if i > 0 {
            out.push(s);
        }
    }
    Ok(out)
}

/// Kill the r100 agent mid-job; seconds from the kill to the second attempt's dispatch.
async fn retry_after_kill(fleet: &mut Fleet, origin: &Origin) -> Result<f64> {
    let url = origin.url(&format!("{SLOW_PATH}?ms=4000"));
    let id = fleet.submit(&request(&url, "r100")).await;
    let begin = Instant::now();
    loop {
        let s: LoadStatus = fleet.get(&format!("/api/loads/{id}")).await?;
        if s.targets.iter().any(|t| !t.attempts.is_empty()) {
            break;
        }
        if begin.elapsed() > Duration::from_secs(30) {
            bail!("{id} was never dispatched");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = unix_ms();
    fleet.agent("r100").kill();
    let begin = Instant::now();
    let second = loop {
        let s: LoadStatus = fleet.get(&format!("/api/loads/{id}")).await?;
        if let Some(a) = s.targets.first().and_then(|t| t.attempts.get(1)) {
            break a.dispatched_unix_ms;
        }
        if s.state.is_terminal() {
            bail!("{id} ended without a second attempt: {s:#?}");
        }
        if begin.elapsed() > Duration::from_secs(60) {
            bail!("{id} had no second attempt within 60 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let s = fleet.wait_load(&id, Duration::from_secs(120)).await;
    println!("retry: load {id} {}", s.state.as_str());
    for t in &s.targets {
        for a in &t.attempts {
            println!(
                "retry:   attempt {} on {} ({}) at +{} ms from the kill: {:?}{}",
                a.number,
                a.agent,
                a.region,
                a.dispatched_unix_ms as i64 - killed as i64,
                a.outcome,
                a.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
        if let Some(note) = &t.note {
            println!("retry:   note: {note}");
        }
    }
    Ok((second as f64 - killed as f64) / 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = loads_flag()?;
    let matrix = vantage_wan::Matrix::parse(MATRIX)?;
    let origin = Origin::start().await?;
    let page = origin.url("/index.html");
    let regions: Vec<&str> = REGIONS.iter().map(|(r, _)| *r).collect();
    let mut fleet =
        Fleet::start_with_matrix("orchestration-bench", matrix, "ctl", &regions, &[]).await;
    println!(
        "fleet up: controller in ctl, agents in {}; logs in {}",
        regions.join(", "),
        fleet.log_dir().display()
    );

    let mut rows = Vec::new();
    for (region, rtt) in REGIONS {
        let ours = ours_region(&fleet, &page, region, n).await?;
        let remote = remote_region(&fleet, &page, &format!("{region}-1"), n).await?;
        let o = stats(&ours.iter().map(Sample::overhead).collect::<Vec<_>>());
        let r = stats(&remote.iter().map(Sample::overhead).collect::<Vec<_>>());
        let o_obs = stats(&ours.iter().map(|s| s.observed_ms).collect::<Vec<_>>());
        let o_load = stats(&ours.iter().map(|s| s.load_ms).collect::<Vec<_>>());
        let r_obs = stats(&remote.iter().map(|s| s.observed_ms).collect::<Vec<_>>());
        let r_load = stats(&remote.iter().map(|s| s.load_ms).collect::<Vec<_>>());
        println!(
            "rtt_ms={rtt} ours_overhead_ms={o} remote_cdp_overhead_ms={r} aim<={} \
             [ours observed p50 {:.1} load p50 {:.1}; remote observed p50 {:.1} load p50 {:.1}]",
            rtt + 30,
            o_obs.p50,
            o_load.p50,
            r_obs.p50,
            r_load.p50
        );
        rows.push((rtt, o.p50, r.p50));
    }

    let retry_s = retry_after_kill(&mut fleet, &origin).await?;
    println!("retry_after_kill_s={retry_s:.2} aim<=5");

    let (rtt, ours, remote) = rows[rows.len() - 1];
    println!(
        "orchestration-bench rtt_ms={rtt} ours_overhead_ms={ours:.1} \
         remote_cdp_overhead_ms={remote:.1} ratio={:.2} retry_after_kill_s={retry_s:.2}",
        ours / remote
    );
    Ok(())
}
