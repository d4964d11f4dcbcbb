//! The egress guard with real Chromium: the browser reaches an allowed network through it, and a
//! loopback address outside the allowed one, the cloud metadata address and a navigation to a
//! loopback IP literal are all refused where the connection is made, with the guard's reason in the
//! report; unresolvable and refusing hosts are named as such, not as proxy failures. The site
//! listens on every address, so anything that got past the guard would load. Two jobs at once
//! each get their own outcomes (every context has its own lane on the guard).

mod common;

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::{BrowserState, ChromiumConfig};
use vantage_agent::egress::{Guard, Policy};
use vantage_agent::executor::{run_job, RunContext};
use vantage_agent::page::PagePool;
use vantage_proto::wire::JobEvent;
use vantage_proto::{JobSpec, Report, Wait};

/// Serves a page whose images point at `127.0.0.2` and the metadata address, and a one-pixel
/// answer to anything else.
async fn site() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><title>egress</title>\
         <img src=\"/ok.png\">\
         <img src=\"http://127.0.0.2:{port}/other-loopback.png\">\
         <img src=\"http://169.254.169.254/latest/meta-data/x.png\">\
         <img src=\"http://localhost:{port}/by-name.png\">"
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let (mime, body) = if head.starts_with("GET / ") {
                    ("text/html", page.into_bytes())
                } else {
                    ("text/plain", b"ok".to_vec())
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: {mime}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    port
}

async fn load(cdp: &Cdp, guard: &Guard, url: &str) -> Report {
    let mut spec = JobSpec::new(url);
    spec.wait = Wait::Load;
    spec.timeout_ms = 20_000;
    let ctx = RunContext {
        region: "local".into(),
        node: "test".into(),
        browser_version: String::new(),
        guard: Some(guard.clone()),
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    run_job(cdp, &spec, &ctx, &PagePool::default(), &tx).await
}

/// A guard that allows 127.0.0.1 only.
async fn loopback_guard() -> Guard {
    Guard::start(Policy {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
    })
    .await
    .unwrap()
}

/// A ready browser whose only way out is `guard`.
async fn browser_behind(guard: &Guard) -> vantage_agent::chromium::Supervisor {
    common::ready(ChromiumConfig {
        extra_args: guard.chromium_flags(),
        ..common::chromium()
    })
    .await
}

/// A port on 127.0.0.1 that nothing listens on (free a moment ago).
fn closed_port() -> u16 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reaches_only_what_the_guard_allows() {
    let port = site().await;
    let guard = loopback_guard().await;
    let sup = browser_behind(&guard).await;
    let BrowserState::Ready { ws_url, .. } = sup.state() else {
        panic!("not ready")
    };
    let cdp = Cdp::connect(&ws_url).await.unwrap();

    let report = load(&cdp, &guard, &format!("http://127.0.0.1:{port}/")).await;
    let run = &report.runs[0];
    assert_eq!(run.error, None, "{run:?}");
    assert_eq!(run.status, 200);
    let req = |part: &str| {
        run.requests
            .iter()
            .find(|r| r.url.contains(part))
            .unwrap_or_else(|| panic!("no request for {part}: {:?}", run.requests))
    };
    assert_eq!(req("/ok.png").status, 200);
    // `localhost` is resolved by the guard, to the allowed 127.0.0.1
    assert_eq!(req("/by-name.png").status, 200);
    assert_eq!(req("/by-name.png").remote_ip.as_deref(), Some("127.0.0.1"));
    let other = req("/other-loopback.png");
    let why = other.failed.as_deref().unwrap_or_default();
    assert!(
        other.status == 0
            && why.contains("egress guard")
            && why.contains("127.0.0.2 is a loopback"),
        "{other:?}"
    );
    let meta = req("169.254.169.254");
    let why = meta.failed.as_deref().unwrap_or_default();
    assert!(why.contains("cloud metadata"), "{meta:?}");

    // a navigation to a refused address names the guard and the address, not a proxy error
    let report = load(&cdp, &guard, &format!("http://127.0.0.2:{port}/")).await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("blocked by the agent's egress guard")
            && error.contains("127.0.0.2 is a loopback address"),
        "{error}"
    );

    // the browser only sees "the proxy failed"; the report still names DNS and refusals
    let report = load(&cdp, &guard, "http://no-such-host.invalid/").await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(error.contains("cannot resolve the host"), "{error}");
    let closed_port = closed_port();
    let report = load(&cdp, &guard, &format!("http://127.0.0.1:{closed_port}/")).await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("cannot connect") && error.contains("refused"),
        "{error}"
    );
    sup.stop().await;
}

/// Images on job B's page, each fetched on a connection of its own: more than the guard's
/// browser-wide log keeps (1024), so a log shared by jobs would lose job A's refusal before A's
/// report is written.
const FLOOD: usize = 1200;

/// The origin of the two concurrent jobs. `/a` (job A) shows an image from a port nothing
/// listens on, which the guard cannot connect to, and one held until [`release`] is sent;
/// `/b` (job B) shows [`FLOOD`] images. Every answer closes its connection.
#[derive(Clone)]
struct TwoJobs {
    refused_port: u16,
    held_asked: watch::Sender<bool>,
    release: watch::Receiver<bool>,
}

impl TwoJobs {
    /// Serves on 127.0.0.1; the port, whether `/held.png` was asked for, and its release.
    async fn start(refused_port: u16) -> (u16, watch::Receiver<bool>, watch::Sender<bool>) {
        let (held_asked, asked) = watch::channel(false);
        let (release, released) = watch::channel(false);
        let site = Self {
            refused_port,
            held_asked,
            release: released,
        };
        let app = axum::Router::new()
            .route("/a", axum::routing::get(Self::page_a))
            .route("/b", axum::routing::get(Self::page_b))
            .route("/held.png", axum::routing::get(Self::held))
            .fallback(|| async { closing("text/plain", "ok".into()) })
            .with_state(site);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, asked, release)
    }

    async fn page_a(State(s): State<Self>) -> Response {
        let refused = s.refused_port;
        closing(
            "text/html",
            format!(
                "<!doctype html><title>a</title>\
                 <img src=\"http://127.0.0.1:{refused}/refused.png\"><img src=\"/held.png\">"
            ),
        )
    }

    async fn page_b() -> Response {
        let imgs: String = (0..FLOOD)
            .map(|i| format!("<img src=\"/i/{i}.png\">"))
            .collect();
        closing(
            "text/html",
            format!("<!doctype html><title>b</title>{imgs}"),
        )
    }

    async fn held(State(mut s): State<Self>) -> Response {
        s.held_asked.send_replace(true);
        let _ = s.release.wait_for(|r| *r).await;
        closing("text/plain", "ok".into())
    }
}

fn closing(mime: &'static str, body: String) -> Response {
    (
        [(header::CONTENT_TYPE, mime), (header::CONNECTION, "close")],
        body,
    )
        .into_response()
}

/// The single report among a job's events.
fn report_of(events: Vec<JobEvent>) -> Report {
    events
        .into_iter()
        .find_map(|e| match e {
            JobEvent::Report { report } => Some(*report),
            _ => None,
        })
        .expect("the job sent a report")
}

fn job(url: String, timeout_ms: u32) -> JobSpec {
    let mut spec = JobSpec::new(&url);
    spec.wait = Wait::Load;
    spec.timeout_ms = timeout_ms;
    spec
}

/// Two jobs at once on the real job API, through one guard: A (on the context opened ahead) is
/// refused a connection, then waits while B makes more connections than the guard's browser-wide
/// log holds. A's report still names the guard's reason for its refusal, B's has only its own
/// allowed connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_each_see_only_their_own_guard_outcomes() {
    let refused_port = closed_port();
    let (port, mut held_asked, release) = TwoJobs::start(refused_port).await;
    let guard = loopback_guard().await;
    let sup = browser_behind(&guard).await;
    let server = common::job_server_with(&sup, Some(guard.clone()), 2, 0, Box::new(|| {}));
    // A runs on the context opened ahead of it, which must have its lane too
    server.keep_warm();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.has_spare() {
        assert!(Instant::now() < deadline, "no context opened ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let since = Instant::now();
    let a = {
        let (server, spec) = (
            server.clone(),
            job(format!("http://127.0.0.1:{port}/a"), 120_000),
        );
        tokio::spawn(async move { report_of(common::run_job(&server, &spec).await) })
    };
    // A has been refused and is held on its last image
    tokio::time::timeout(Duration::from_secs(60), held_asked.wait_for(|a| *a))
        .await
        .expect("job A asks for /held.png within 60 s")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !guard
        .outcomes_since(since)
        .iter()
        .any(|o| o.port == refused_port && o.result.is_err())
    {
        assert!(Instant::now() < deadline, "job A was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let b = report_of(
        common::run_job(&server, &job(format!("http://127.0.0.1:{port}/b"), 60_000)).await,
    );
    let run = &b.runs[0];
    assert_eq!(run.error, None, "{run:?}");
    let images = run
        .requests
        .iter()
        .filter(|r| r.url.contains("/i/"))
        .count();
    assert_eq!(images, FLOOD, "job B's images");
    for r in &run.requests {
        assert!(
            r.failed.is_none() && r.status == 200,
            "job B has only its own allowed connections: {r:?}"
        );
        assert_eq!(r.remote_ip.as_deref(), Some("127.0.0.1"), "{r:?}");
    }

    release.send_replace(true);
    let a = a.await.unwrap();
    let run = &a.runs[0];
    assert_eq!(run.error, None, "{run:?}");
    assert_eq!(run.requests.len(), 3, "{:?}", run.requests);
    let refused = run
        .requests
        .iter()
        .find(|r| r.url.contains("/refused.png"))
        .unwrap_or_else(|| panic!("no refused request: {:?}", run.requests));
    let why = refused.failed.as_deref().unwrap_or_default();
    assert!(
        why.contains("cannot connect")
            && why.contains(&format!("127.0.0.1:{refused_port}"))
            && why.contains("refused"),
        "job A's refusal is named by the guard: {refused:?}"
    );
    for r in run
        .requests
        .iter()
        .filter(|r| !r.url.contains("/refused.png"))
    {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.remote_ip.as_deref(), Some("127.0.0.1"), "{r:?}");
    }
    assert_eq!(
        server.spares_taken(),
        1,
        "job A ran on the context opened ahead"
    );
    sup.stop().await;
}

/// Asks the SOCKS5 proxy on `proxy` to connect to 127.0.0.1:`port`; the reply code.
async fn socks_connect(proxy: u16, port: u16) -> u8 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy))
        .await
        .unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut chosen = [0u8; 2];
    s.read_exact(&mut chosen).await.unwrap();
    assert_eq!(chosen, [5, 0]);
    let [hi, lo] = port.to_be_bytes();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    reply[1]
}

/// A lane keeps its own outcomes (the guard sees them all), and stops accepting once dropped.
#[tokio::test]
async fn a_lane_logs_only_its_own_connections_and_closes_when_dropped() {
    let guard = loopback_guard().await;
    let (one, two) = (guard.lane().await.unwrap(), guard.lane().await.unwrap());
    assert_ne!(one.port(), two.port());
    assert_eq!(
        one.proxy_server(),
        format!("socks5://127.0.0.1:{}", one.port())
    );
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = closed_port();
    let since = Instant::now();
    assert_eq!(socks_connect(one.port(), open_port).await, 0, "allowed");
    assert_eq!(socks_connect(two.port(), closed_port).await, 5, "refused");
    let ports = |o: Vec<vantage_agent::egress::Outcome>| -> Vec<(u16, bool)> {
        o.iter().map(|o| (o.port, o.result.is_ok())).collect()
    };
    assert_eq!(ports(one.outcomes()), [(open_port, true)]);
    assert_eq!(ports(two.outcomes()), [(closed_port, false)]);
    let mut all = ports(guard.outcomes_since(since));
    all.sort();
    let mut want = vec![(open_port, true), (closed_port, false)];
    want.sort();
    assert_eq!(all, want);

    let port = one.port();
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "a dropped lane still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        socks_connect(two.port(), open_port).await,
        0,
        "the other lane serves on"
    );
}
