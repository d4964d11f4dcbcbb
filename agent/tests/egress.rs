//! The egress guard with real Chromium: the browser reaches an allowed network through it, and a
//! loopback address outside the allowed one, the cloud metadata address and a navigation to a
//! loopback IP literal are all refused where the connection is made, with the guard's reason in the
//! report; unresolvable and refusing hosts are named as such, not as proxy failures. The site
//! listens on every address, so anything that got past the guard would load.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::{BrowserState, ChromiumConfig};
use vantage_agent::egress::{Guard, Policy};
use vantage_agent::executor::{run_job, RunContext};
use vantage_agent::page::PagePool;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reaches_only_what_the_guard_allows() {
    let port = site().await;
    let guard = Guard::start(Policy {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
    })
    .await
    .unwrap();
    let sup = common::ready(ChromiumConfig {
        extra_args: guard.chromium_flags(),
        ..common::chromium()
    })
    .await;
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let report = load(&cdp, &guard, &format!("http://127.0.0.1:{closed_port}/")).await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("cannot connect") && error.contains("refused"),
        "{error}"
    );
    sup.stop().await;
}
